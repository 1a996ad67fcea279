/* ops/attention/gla.c: gated linear attention with a per-channel,
 * data-dependent decay (Yang et al., arXiv 2312.06635; flash-linear-
 * attention's `gla`, fla/ops/gla/naive.py):
 *
 *   S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T,      o_t = S_t^T (scale q_t)
 *
 * scale defaults to K^-1/2 like fla's op. It is the dplr recurrence
 * (dplr.h) without the low-rank term, so it runs on the same kernels
 * (ops/attention/dplr_recurrent.c, dplr_chunk.c) with that term switched
 * off: the chunk form is then O = (Q ⊙ P) S0 + Aqk V and
 * S1 = diag(Lam) S0 + (K ⊙ F)^T V, with the pairwise decays of Aqk built as
 * products of per-token factors exp(gk) <= 1 (see dplr_chunk.c).
 */
#include "ops/attention/dplr_kernels.h"

at_tensor *at_gla(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *gk,
                  at_tensor *h0, at_tensor **ht, const at_lin_opts *opts) {
  return at_dplr_attn(c, "gla", q, k, v, NULL, NULL, gk, h0, ht, opts);
}

at_tensor *at_gla_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *gk,
                       at_tensor *state, const at_lin_opts *opts) {
  return at_dplr_attn_step(c, "gla", q, k, v, NULL, NULL, gk, state, opts);
}
