/* ops/attention/linear_attn.h: linear attention with a scalar per-head decay
 * and an optional normaliser — the ops under the linear_attn, retnet and
 * performer mixers (flash-linear-attention's `linear_attn` and `retention`;
 * FAVOR+ is in favor.h and runs on this op).
 *
 * Per batch entry and head, a state S in R^{K x V} and a normaliser z in R^K
 * run over the tokens t; the read-out comes AFTER the update:
 *
 *   S_t = a_t S_{t-1} + k_t v_t^T,          a_t = exp(g_t) in [0, 1]
 *   z_t = a_t z_{t-1} + k_t                 (normalize only)
 *   o_t = S_t^T qs_t / (qs_t . z_t + eps)   (normalize)
 *   o_t = S_t^T qs_t                        (otherwise),        qs_t = scale q_t
 *
 * The decay is one of
 *   none       a_t = 1: Katharopoulos et al.'s linear attention (fla's
 *              linear_attn: scale K^-1/2, normalize as fla's `normalize`,
 *              eps = 1e-10 as fla's);
 *   retention  a = gamma_h = 1 - 2^(-5-h) for head h, fixed (RetNet, fla's
 *              retention; log gamma_h is computed in double as
 *              log1p(-2^(-5-h)), so it stays < 0 for any number of heads);
 *   g [B,T,H]  a log-decay per head and token, g <= 0 (any g <= 0, -inf
 *              included; the performer mixer's running-max stabiliser).
 *
 * Shapes ([B, T, H, D], one head per H): q, k [B,T,H,K], v [B,T,H,V],
 * g [B,T,H]; initial_state h0 and final state ht [B,H,K,V]; with normalize
 * the normaliser's initial z0 and final zt [B,H,K] (fla's z_state without its
 * singleton axis); o [B,T,H,V].
 *
 * Forms (at_la_opts.form), which agree to rounding:
 *   AT_LA_CHUNK (default), the training form: chunks of chunk_size tokens
 *     (the last may be shorter); inside a chunk O = diag(P)(Qs S0) + A V with
 *     A = (Qs K^T) ⊙ E, the denominators diag(P)(Qs z0) + A 1, between chunks
 *     only (S, z) is carried. Decays are products of factors a <= 1 built
 *     token by token: no exponent is ever positive and masked entries are
 *     never formed. The hand-written backward recomputes each chunk from the
 *     state saved at its start (T/C states per head, nothing per token).
 *   AT_LA_RECURRENT, token by token: the definition, with its own
 *     hand-written backward (checkpoints every chunk_size tokens).
 *   AT_LA_PARALLEL, the masked decay matrix, ((Qs K^T) ⊙ D) V with D[r,j] =
 *     a^(r-j) for j <= r (RetNet's parallel form), composed of primitive ops
 *     and differentiated by the tape: O(T^2) memory, a reference. Constant
 *     decays only (none or retention).
 * Chunk and recurrent are one tape node with outputs o, ht, zt and
 * gradients for every input (h0, z0, g included). OpenMP runs over B x H;
 * results do not depend on the thread count.
 *
 * With normalize the features must keep qs . z_t away from 0 (positive
 * features: elu + 1, FAVOR+; relu keeps it >= 0): identity features give
 * denominators of either sign, as in fla.
 *
 * The step form (at_la_step, at_retention_step) is for generation: it
 * advances the state (S [B,H,K,V], and z [B,H,K] with normalize) IN PLACE
 * over the given tokens (typically T = 1) and returns their outputs; it
 * records nothing.
 */
#ifndef AT_ATTENTION_LINEAR_ATTN_H
#define AT_ATTENTION_LINEAR_ATTN_H

#include "ops/ops.h"

typedef enum at_la_form { AT_LA_CHUNK = 0, AT_LA_RECURRENT = 1, AT_LA_PARALLEL = 2 } at_la_form;

typedef enum at_la_decay {
  AT_LA_DECAY_NONE = 0,  /* a = 1 */
  AT_LA_DECAY_RETENTION, /* a = 1 - 2^(-5-h) */
  AT_LA_DECAY_GATE,      /* a = exp(g), g [B,T,H] an input */
} at_la_decay;

typedef struct at_la_opts {
  double scale;       /* multiplies q; 0 means K^-1/2 */
  int64_t chunk_size; /* 0 means 64; also the checkpoint spacing of the recurrent form */
  at_la_form form;
  int normalize;      /* divide by qs . z_t + eps */
  double eps;         /* the normaliser's guard; 0 means 1e-10 (fla's) */
} at_la_opts;
/* NULL options mean all zero: K^-1/2, chunk 64, chunk form, no normaliser. */

/* The log-decay log(1 - 2^(-5-h)) of RetNet's head h. */
double at_retention_log_decay(int64_t h);

/* The general entry: g must be given exactly for AT_LA_DECAY_GATE; h0, z0
 * may be NULL (zero state; z0 only with normalize). ht / zt (may be NULL)
 * receive the final state and normaliser (zt only with normalize), further
 * outputs of the same tape node. Returns o, or NULL with a message. */
at_tensor *at_la_attn(at_ctx *c, at_la_decay decay, at_tensor *q, at_tensor *k, at_tensor *v,
                      at_tensor *g, at_tensor *h0, at_tensor *z0, at_tensor **ht,
                      at_tensor **zt, const at_la_opts *opts);

/* fla's linear_attn (no decay). */
at_tensor *at_linear_attn(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *h0,
                          at_tensor *z0, at_tensor **ht, at_tensor **zt, const at_la_opts *opts);
/* fla's retention (decay gamma_h; normalize must be off). */
at_tensor *at_retention(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *h0,
                        at_tensor **ht, const at_la_opts *opts);

/* Step form: S [B,H,K,V] (and z [B,H,K] with normalize, else NULL) advanced
 * in place over the T tokens; returns o [B,T,H,V]. opts->form and chunk_size
 * are not used. */
at_tensor *at_la_step(at_ctx *c, at_la_decay decay, at_tensor *q, at_tensor *k, at_tensor *v,
                      at_tensor *g, at_tensor *S, at_tensor *z, const at_la_opts *opts);
at_tensor *at_retention_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *S,
                             const at_la_opts *opts);

#endif
