/* ops/attention/delta.h: the gated delta-rule family and simple GLA
 * (DeltaNet, Gated DeltaNet, Kimi Delta Attention, Mamba-2/SSD core), with
 * flash-linear-attention's conventions.
 *
 * Per batch entry and head, a state S in R^{K x V} runs over the tokens t;
 * the read-out comes AFTER the update:
 *
 *   delta_rule:        S <- S + beta_t k_t (v_t - S^T k_t)^T
 *   gated_delta_rule:  S <- exp(g_t) S,           then the delta_rule update
 *   kda:               S <- diag(exp(g_t)) S,     then the delta_rule update
 *   simple_gla:        S <- exp(g_t) S + k_t v_t^T
 *   every one:         o_t = S^T (scale q_t)
 *
 * Shapes ([B, T, H, D] layout, one head per H):
 *   q, k [B,T,H,K]   v [B,T,H,V]   beta [B,T,H]
 *   g [B,T,H] (gated_delta_rule, simple_gla; one log-decay per head and token)
 *   g [B,T,H,K] (kda; one log-decay per key channel)
 *   initial_state h0 and final state ht [B,H,K,V]; o [B,T,H,V].
 * Gates are log-decays: g <= 0 (decay exp(g) in (0, 1]); g = -1e4 (or
 * -INFINITY) erases the state. Positive g is computed as given but outside
 * the numerical guarantees below. The ops do not normalise anything: the
 * layers L2-normalise q and k and pass beta = sigmoid(...) in (0, 1) (or
 * (0, 2) with negative eigenvalues).
 *
 * Forms (at_lin_opts.form), which agree to rounding:
 *   AT_LIN_CHUNK (default), the training form. The sequence is cut into
 *     chunks of chunk_size tokens (the last one may be shorter). Inside a
 *     chunk the delta rules use the UT/WY transform (forward substitution on
 *     the strictly lower C x C matrix I + diag(beta) tril(K K^T ⊙ decay))
 *     and GEMMs; between chunks only the K x V state is carried. Decays are
 *     products of per-token factors exp(g) <= 1 (never exp(b_i) exp(-b_j)),
 *     so no exponent is ever positive and masked entries are never computed.
 *     The backward recomputes each chunk from the state saved at its start
 *     (T/C states per head; nothing per token) and carries dS backwards.
 *   AT_LIN_RECURRENT, token by token: the definition, with its own
 *     hand-written backward (the reference). It saves the state every
 *     chunk_size tokens and recomputes in between.
 * Both are one tape node whose outputs are o and (when asked for) ht, with
 * gradients for every input, h0 included. OpenMP runs over B x H; results do
 * not depend on the thread count.
 *
 * Numerical range (tested): gates 0, near 0, -20 per token, -1e4 and -inf
 * give finite outputs and gradients in both forms, and the forms agree.
 * While beta |k|^2 <= 2 (unit keys with beta in (0, 2), or |k| = 3 with
 * beta <= 0.2) the delta recurrence is bounded and the chunk form matches it
 * to float rounding at chunk_size 64 (relative error ~1e-6; T = 150 in the
 * tests, T = 1000 checked by hand). Beyond that the definition itself grows
 * without bound (eigenvalue 1 - beta |k|^2 < -1) and both forms overflow
 * alike: keep keys L2-normalised as the layers do.
 *
 * From files (tools/probe, golden tests): every input is a plain tensor
 * under flash-linear-attention's name (q k v g beta initial_state); pick the
 * kind with at_lin_kind_from_name, call at_lin_attn with ht, put `do` in
 * o->grad and `dht` in ht->grad (at_grad), run at_backward_from_seeded and
 * read each input's grad (the gradient of sum(o do) + sum(ht dht)).
 *
 * The step form (at_*_step) is for generation: it advances a state
 * [B,H,K,V] IN PLACE over the given tokens ([B,T,H,*], typically T = 1) and
 * returns their outputs. It is not differentiable and records nothing.
 */
#ifndef AT_ATTENTION_DELTA_H
#define AT_ATTENTION_DELTA_H

#include "ops/ops.h"

/* 1 when q, k, v are [B,T,H,K], [B,T,H,K], [B,T,H,V]; else records the
 * error (named op) and returns 0. Shared by the linear-recurrence ops. */
int at_check_qkv(at_ctx *c, const char *op, const at_tensor *q, const at_tensor *k,
                 const at_tensor *v);

typedef enum at_lin_form { AT_LIN_CHUNK = 0, AT_LIN_RECURRENT = 1 } at_lin_form;

typedef struct at_lin_opts {
  double scale;        /* multiplies q; 0 means K^-1/2 (Mamba-2 uses 1) */
  int64_t chunk_size;  /* 0 means 64; also the checkpoint spacing of the recurrent form */
  at_lin_form form;
} at_lin_opts;
/* NULL options mean {0, 0, AT_LIN_CHUNK}. */

typedef enum at_lin_kind {
  AT_LIN_DELTA_RULE = 0,   /* inputs q k v beta */
  AT_LIN_GATED_DELTA_RULE, /* inputs q k v g[B,T,H] beta */
  AT_LIN_KDA,              /* inputs q k v g[B,T,H,K] beta */
  AT_LIN_SIMPLE_GLA,       /* inputs q k v g[B,T,H] */
  AT_LIN_KIND_COUNT
} at_lin_kind;

/* "delta_rule", "gated_delta_rule", "kda", "simple_gla" (flash-linear-
 * attention's op names). at_lin_kind_from_name returns -1 for other names. */
const char *at_lin_kind_name(at_lin_kind kind);
int at_lin_kind_from_name(const char *name);

/* Every kind through one entry: g and beta must be given exactly when the
 * kind uses them (else AT_E_ARG); h0 may be NULL (zero state). When ht is
 * not NULL it receives the final state [B,H,K,V], a second output of the
 * same tape node (its gradient flows back like o's). Returns o. */
at_tensor *at_lin_attn(at_ctx *c, at_lin_kind kind, at_tensor *q, at_tensor *k, at_tensor *v,
                       at_tensor *g, at_tensor *beta, at_tensor *h0, at_tensor **ht,
                       const at_lin_opts *opts);

at_tensor *at_delta_rule(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *beta,
                         at_tensor *h0, at_tensor **ht, const at_lin_opts *opts);
at_tensor *at_gated_delta_rule(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                               at_tensor *g, at_tensor *beta, at_tensor *h0, at_tensor **ht,
                               const at_lin_opts *opts);
at_tensor *at_kda(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                  at_tensor *beta, at_tensor *h0, at_tensor **ht, const at_lin_opts *opts);
/* In ops/attention/simple_gla.c. */
at_tensor *at_simple_gla(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                         at_tensor *h0, at_tensor **ht, const at_lin_opts *opts);

/* Step forms: `state` [B,H,K,V] is advanced in place over the T tokens;
 * returns o [B,T,H,V]. Only opts->scale is used. */
at_tensor *at_lin_attn_step(at_ctx *c, at_lin_kind kind, at_tensor *q, at_tensor *k,
                            at_tensor *v, at_tensor *g, at_tensor *beta, at_tensor *state,
                            const at_lin_opts *opts);
at_tensor *at_delta_rule_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                              at_tensor *beta, at_tensor *state, const at_lin_opts *opts);
at_tensor *at_gated_delta_rule_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                                    at_tensor *g, at_tensor *beta, at_tensor *state,
                                    const at_lin_opts *opts);
at_tensor *at_kda_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                       at_tensor *beta, at_tensor *state, const at_lin_opts *opts);
at_tensor *at_simple_gla_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                              at_tensor *state, const at_lin_opts *opts);

#endif
