/* ops/attention/simple_gla.c: simple GLA, the core of Mamba-2 / SSD
 * (flash-linear-attention's `simple_gla`), one scalar log-decay per head and
 * token:
 *
 *   S_t = exp(g_t) S_{t-1} + k_t v_t^T,      o_t = S_t^T (scale q_t)
 *
 * In Mamba-2 terms q = C, k = B, v = dt x, g = dt A and scale = 1 (the layer
 * passes it; the default here is K^-1/2 like fla's op).
 *
 * It is the gated delta rule without the delta correction, so it runs on the
 * same kernels (ops/attention/delta_recurrent.c, delta_chunk.c) with the
 * delta write switched off: the chunk form is then O = (Q ⊙ P) S0 +
 * ((Q K^T) ⊙ E) V and S1 = Lam S0 + (K ⊙ F)^T V, with no triangular solve.
 */
#include "ops/attention/delta.h"

at_tensor *at_simple_gla(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                         at_tensor *h0, at_tensor **ht, const at_lin_opts *opts) {
  return at_lin_attn(c, AT_LIN_SIMPLE_GLA, q, k, v, g, NULL, h0, ht, opts);
}

at_tensor *at_simple_gla_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                              at_tensor *state, const at_lin_opts *opts) {
  return at_lin_attn_step(c, AT_LIN_SIMPLE_GLA, q, k, v, g, NULL, state, opts);
}
