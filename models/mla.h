/* models/mla.h: multi-head latent attention (DeepSeek-V2) and the DeepSeek
 * sparse attention layer built on it (DeepSeek-V3.2), beyond the mixer
 * interface of models/model.h: the layers' structure (for the DSA layer,
 * which embeds an MLA, and for tests) and the single-token generation forms.
 *
 * MLA, per token x [d] (d = d_model, H heads, hd = head_dim, dr = rope_dim,
 * dc = kv_rank, dq = q_rank):
 *
 *   c_Q  = RMSNorm(W_DQ x)                       [dq]   (q_rank > 0; else c_Q = x)
 *   q_i  = [RoPE(q^R_i); q^C_i] = split(W_UQ c_Q)  per head i, [dr + hd]
 *   c_KV = RMSNorm(W_DKV x)                      [dc]   the latent (cached)
 *   k_R  = RoPE(W_KR x)                          [dr]   ONE rotary key shared by all heads (cached)
 *   k_i  = [k_R; W_UK,i c_KV],  v_i = W_UV,i c_KV       [dr + hd], [hd]
 *   o_i  = sum_s softmax_s(q_i . k_{s,i} / sqrt(hd + dr)) v_{s,i}   (causal)
 *   y    = W_O [o_1; ...; o_H]
 *
 * The rotary part comes FIRST in each query/key head ([rope | nope]; the
 * paper writes [nope; rope]: a dot product does not depend on the order, and
 * this way at_rope rotates exactly the first dr dims). RoPE is rotate-half
 * (non-interleaved). rope_dim 0 is NoPE (Kimi Linear's MLA): no W_KR, no
 * rotary query part, the scale is hd^-1/2.
 *
 * Training uses this explicit form on top of the fused full-attention kernel
 * (at_attention with D = dr + hd, Dv = hd). Generation uses the absorbed form:
 * W_UK,i is folded into the query (q^lat_i = W_UK,i^T q^C_i, [dc]) and W_UV,i
 * after the attention, so the attention runs in MQA mode over the cache
 * [k_R; c_KV] (dr + dc per token) with value c_KV:
 *
 *   score_{s,i} = ([q^R_i; q^lat_i] . [k_R,s; c_KV,s]) / sqrt(hd + dr)
 *   o_i = W_UV,i sum_s softmax_s(score_{s,i}) c_KV,s
 *
 * which equals the explicit form exactly in exact arithmetic.
 *
 * Parameters (under the mixer prefix, e.g. "layers.0.mla."): w_dq [dq, d],
 * q_norm [dq], w_uq [H (dr+hd), d or dq] (named w_q without compression),
 * w_dkv [dc, d], kv_norm [dc], w_kr [dr, d] (dr > 0), w_uk [H hd, dc],
 * w_uv [H hd, dc], w_o [d, H hd]. A DSA layer adds its lightning indexer in
 * the parameter group AT_GROUP_INDEXER: w_qi [HI DI, dq or d], w_ki [DI, d],
 * k_norm_w, k_norm_b [DI] (LayerNorm, eps 1e-6), w_wi [HI, d].
 */
#ifndef AT_MODELS_MLA_H
#define AT_MODELS_MLA_H

#include "models/mixer.h"

/* The options of mla and dsa (dsa also reads the index_* and topk fields). */
typedef struct at_mla_opts {
  at_mixer_common common;
  int64_t kv_rank;    /* latent dim dc; 0: 4 head_dim (resolved by the check) */
  int64_t q_rank;     /* query latent dim; 0: no query compression */
  int64_t rope_dim;   /* decoupled RoPE dim; -1: head_dim / 2 rounded down to even with
                         RoPE, 0 with NoPE (resolved by the check) */
  int64_t index_heads, index_dim, topk; /* dsa's lightning indexer and selection */
} at_mla_opts;

/* The option rows mla and dsa share, and their check (derived values). */
#define AT_MLA_OPTS                                                                       \
  AT_OPT_POSITION(at_mla_opts), AT_OPT_HEAD_DIM(at_mla_opts),                            \
  AT_OPT_I("kv_rank", at_mla_opts, kv_rank, 0, 65536, 0, "latent c_KV dim; 0 = 4 head_dim"), \
  AT_OPT_I("q_rank", at_mla_opts, q_rank, 0, 65536, 0, "query latent dim; 0 = no query compression"), \
  AT_OPT_I("rope_dim", at_mla_opts, rope_dim, -1, 4096, -1,                               \
           "decoupled RoPE dim; -1 = head_dim / 2 (even) with rope, 0 with nope")
at_status at_mla_check(const at_model_cfg *cfg, void *opts, const char **bad_key);

typedef struct at_mla {
  int64_t d, h, hd, dr, dc, dq;  /* d_model, heads, head_dim, rope_dim, kv_rank, q_rank */
  double rope_theta, norm_eps;
  at_tensor *w_dq, *q_norm, *w_uq; /* w_uq is w_q when dq == 0 (then w_dq = q_norm = NULL) */
  at_tensor *w_dkv, *kv_norm, *w_kr, *w_uk, *w_uv, *w_o;
} at_mla;

/* The DSA layer: MLA main attention plus a lightning indexer with HI heads
 * of dim DI (RoPE on its first dr dims when the layer uses RoPE). */
typedef struct at_dsa_layer {
  at_mla mla;                    /* first member: an at_dsa_layer* is an at_mla* */
  int64_t hi, di, topk;
  at_tensor *w_qi, *w_ki, *k_norm_w, *k_norm_b, *w_wi;
} at_dsa_layer;

/* Declares an MLA's parameters under `prefix` from the (resolved) options of
 * mixer `impl` (mla, or dsa for the DSA layer's main attention); AT_E_ARG
 * with a message on bad options. at_mla_init initialises them (after the
 * store is finalized). */
at_status at_mla_declare(at_mla *L, const at_model_cfg *cfg, const at_mixer_impl *impl, at_params *p,
                         const char *prefix);
void at_mla_init(at_mla *L, const at_model_cfg *cfg, uint64_t seed);

/* The explicit projections of one forward: x [B, T, d] at positions
 * pos0 .. pos0+T-1 -> q, k [B, T, H, dr+hd] (rotated), v [B, T, H, hd], the
 * query latent c_Q [B, T, dq] (NULL without query compression), and what the
 * absorbed form caches: c_KV [B, T, dc] and the rotated k_R [B, T, 1, dr]
 * (NULL with dr = 0). */
typedef struct at_mla_qkv {
  at_tensor *q, *k, *v, *cq, *ckv, *kr;
} at_mla_qkv;

/* Writes rows of p (positions pos0 ..) into slots pos0 .. of the latent
 * cache [B, S, dr+dc] (the layout of at_mla_decode). */
void at_mla_cache_put(const at_mla *L, const at_mla_qkv *p, at_tensor *cache, int64_t pos0);
void at_mla_project(at_ctx *c, const at_mla *L, at_tensor *x, int64_t pos0, at_mla_qkv *out);
/* o [B, T, H, hd] -> y = W_O o [B, T, d]. */
at_tensor *at_mla_output(at_ctx *c, const at_mla *L, at_tensor *o);
/* The softmax scale (hd + dr)^-1/2. */
double at_mla_scale(const at_mla *L);

/* Elements per token of the latent cache: dr + dc (layout [k_R | c_KV]). */
int64_t at_mla_cache_dim(const at_mla *L);

/* One generation step in the absorbed form. x [B, 1, d] is the layer's input
 * (after the block's norm) for the token at position pos; its cache entry
 * [k_R | c_KV] is written into slot pos of `cache` [B, S, dr+dc] (0 <= pos <
 * S; slots 0 .. pos-1 must hold the earlier tokens' entries), then the token
 * attends to slots 0 .. pos. Returns y [B, 1, d], equal to row pos of the
 * explicit layer forward over positions 0 .. pos. Inference only: nothing is
 * recorded, and `cache` is the one thing written. */
at_tensor *at_mla_decode(at_ctx *c, const at_mla *L, at_tensor *x, at_tensor *cache, int64_t pos);

/* The same step attending only to the cache slots in `indices` [B, 1, K]
 * (entries -1, ignored, or 0 .. pos, none twice in a row; the DSA layer's
 * selection); AT_E_ARG otherwise. */
at_tensor *at_mla_decode_selected(at_ctx *c, const at_mla *L, at_tensor *x, at_tensor *cache,
                                  int64_t pos, const at_itensor *indices);

/* Index-key elements per token of a DSA layer's cache (DI). */
int64_t at_dsa_layer_index_dim(const at_dsa_layer *L);

/* One generation step of a DSA layer: as at_mla_decode, plus the token's
 * index key written into slot pos of `index_cache` [B, S, DI]; with `sparse`
 * the token attends only to the indexer's top-k slots (at_dsa_topk_decode),
 * otherwise to all of 0 .. pos. Equal to row pos of the layer forward in the
 * same mode (sparse selections computed in float may swap two keys whose
 * index scores differ by a rounding error; see at_dsa_topk_decode). */
at_tensor *at_dsa_layer_decode(at_ctx *c, const at_dsa_layer *L, at_tensor *x, at_tensor *cache,
                               at_tensor *index_cache, int64_t pos, int sparse);

#endif
