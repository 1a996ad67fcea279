/* ops/attention/dplr.h: gated linear attention with per-channel decay (GLA,
 * flash-linear-attention's `gla`) and its diagonal-plus-low-rank extension
 * (the generalised delta rule, fla's `dplr`, the core of RWKV-7), with fla's
 * conventions.
 *
 * Per batch entry and head, a state S in R^{K x V} runs over the tokens t,
 * with the per-channel decay D_t = diag(exp(gk_t)):
 *
 *   gla:   S_t = D_t S_{t-1} + k_t v_t^T
 *   dplr:  S_t = D_t S_{t-1} + k_t v_t^T + b_t (a_t^T S_{t-1})
 *          (the low-rank term reads the state BEFORE this token's decay;
 *           RWKV-7: a = -kappa_hat, b = kappa_hat * alpha, i.e. the
 *           transition diag(w) - (alpha kappa_hat) kappa_hat^T)
 *   both:  o_t = S_t^T (scale q_t)           (read out after the update)
 *
 * gla is dplr with a = b = 0; it runs on the same kernels without the
 * low-rank terms.
 *
 * Shapes ([B, T, H, D] layout): q, k, a, b, gk [B,T,H,K], v [B,T,H,V];
 * initial state h0 and final state ht [B,H,K,V]; o [B,T,H,V]. gk are
 * log-decays, gk <= 0 (decay in (0, 1]); -1e4 or -INFINITY erase a channel.
 * Positive gk is computed as given but outside the numerical guarantees.
 * The ops normalise nothing: the layers bring q, k, a, b into range (RWKV-7
 * keeps |a| = 1 and |b| < 1, so the low-rank transition is a contraction).
 *
 * Forms (at_lin_opts.form of delta.h), which agree to rounding:
 *   AT_LIN_CHUNK (default), the training form: chunks of chunk_size tokens
 *     (the last may be shorter); inside a chunk the pair matrices q.k, q.b,
 *     a.k, a.b under the pairwise decays, a forward substitution for the
 *     low-rank reads, GEMMs for the rest; between chunks only the K x V
 *     state. Decays are products of per-token factors exp(gk) <= 1 (never
 *     exp(b_i) exp(-b_j)). Hand-written backward that recomputes each chunk
 *     from the state saved at its start (ops/attention/dplr_chunk.c).
 *   AT_LIN_RECURRENT, token by token: the definition, with its own
 *     hand-written backward (ops/attention/dplr_recurrent.c), the reference.
 * Both are one tape node with outputs o and (when asked for) ht, and
 * gradients for every input, h0 included. OpenMP over B x H; results do not
 * depend on the thread count.
 *
 * From files (tools/probe, golden tests): inputs under fla's names (q k v gk
 * for gla; q k v a b gk for dplr; initial_state), `do` and `dht` seeded
 * into o->grad and ht->grad, gradients of sum(o do) + sum(ht dht).
 *
 * The step forms (generation) advance `state` [B,H,K,V] IN PLACE over the
 * given tokens ([B,T,H,*], typically T = 1) and return their outputs; not
 * differentiable, nothing recorded. Only opts->scale is used.
 */
#ifndef AT_ATTENTION_DPLR_H
#define AT_ATTENTION_DPLR_H

#include "ops/attention/delta.h" /* at_lin_opts, at_lin_form */

/* scale 0 means K^-1/2 (RWKV-7 passes 1). In ops/attention/gla.c. */
at_tensor *at_gla(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *gk,
                  at_tensor *h0, at_tensor **ht, const at_lin_opts *opts);
at_tensor *at_gla_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *gk,
                       at_tensor *state, const at_lin_opts *opts);

/* In ops/attention/dplr.c. */
at_tensor *at_dplr(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *a,
                   at_tensor *b, at_tensor *gk, at_tensor *h0, at_tensor **ht,
                   const at_lin_opts *opts);
at_tensor *at_dplr_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *a,
                        at_tensor *b, at_tensor *gk, at_tensor *state, const at_lin_opts *opts);

#endif
