/* models/softmax_layer.h: what the softmax-attention mixers share (full,
 * sparse_transformer, longformer, bigbird): the q/k/v projections, RoPE, the
 * output projection and a key/value cache for decoding.
 *
 *   q = x Wq^T [B,T,HQ,hd], k = x Wk^T, v = x Wv^T [B,T,H,hd]   (GQA by n_kv_heads)
 *   q, k = RoPE(q), RoPE(k)                                      (position: rope)
 *   o = attention(q, k, v; the mixer's layout for T, or causal with a window)
 *   y = o Wo^T
 *
 * A mixer's layer struct starts with an at_softmax_layer and sets its hooks:
 *   layout(c, layer, T)  the visibility pattern for T positions (NULL hook:
 *                        causal with `window`); a layout's visible(i, j)
 *                        must not depend on T, so the one built for a
 *                        decoder's max_len serves every step;
 *   qkv(c, layer, x, pos0, q, k, v)  its own projections (NULL hook: the
 *                        ones above; longformer's global projections).
 * The mixer's impl then points forward, state_new, prefill, step and
 * cache_per_token at the functions below (destroy: free, or its own for
 * what it allocated beyond the struct).
 *
 * Decoding: k_cache, v_cache [B, S, H, hd]. Without a window S = max_len and
 * position p lives in slot p (the step reads row pos of the layout built for
 * T = max_len: at_attention_decode's query at len-1 sees what row len-1 of
 * the layout sees); with a window W (full) the cache is a rolling buffer of
 * S = min(W, max_len) slots, position p in slot p mod S, holding exactly
 * the keys the window lets the newest query see (the softmax does not
 * depend on their order).
 */
#ifndef AT_MODELS_SOFTMAX_LAYER_H
#define AT_MODELS_SOFTMAX_LAYER_H

#include "models/mixer.h"
#include "ops/attention/attention.h"

typedef struct at_softmax_layer at_softmax_layer;

struct at_softmax_layer {
  const at_mixer_impl *impl;
  at_tensor *wq, *wk, *wv, *wo;
  int64_t d, hq, h, hd;
  int64_t window; /* without a layout hook: keys i-W+1 .. i (0: none) */
  at_position position;
  double rope_theta;
  at_attn_layout *(*layout)(at_ctx *c, const void *layer, int64_t T);
  void (*qkv)(at_ctx *c, const void *layer, at_tensor *x, int64_t pos0, at_tensor **q, at_tensor **k,
              at_tensor **v);
  /* Test hooks: stats != NULL adds the tiles the fused kernel visits; naive
   * computes the same attention with at_attention_naive (dense mask). */
  at_attn_stats *stats;
  int naive;
};

/* The RoPE head-dim check of options that start with at_mixer_common: a
 * mixer's check as it is, or called from one. */
at_status at_softmax_check(const at_model_cfg *cfg, void *opts, const char **bad);
/* Sets the sizes and declares wq, wk, wv, wo under prefix. */
at_status at_softmax_declare(at_softmax_layer *L, const at_mixer_impl *impl, const at_model_cfg *cfg,
                             at_params *p, const char *prefix);
/* Declares one more set of q/k/v projections (names nq, nk, nv). */
at_status at_softmax_declare_qkv(const at_softmax_layer *L, at_params *p, const char *prefix,
                                 const char *nq, const char *nk, const char *nv, at_tensor **wq,
                                 at_tensor **wk, at_tensor **wv);
void at_softmax_init(at_softmax_layer *L, const at_model_cfg *cfg, uint64_t seed);

/* q [B,T,HQ,hd], k, v [B,T,H,hd] = x's projections by wq, wk, wv (no RoPE). */
void at_softmax_project(at_ctx *c, const at_softmax_layer *L, at_tensor *wq, at_tensor *wk, at_tensor *wv,
                        at_tensor *x, at_tensor **q, at_tensor **k, at_tensor **v);
/* RoPE on q and k at positions pos0 .. (position: rope; else nothing). */
void at_softmax_rope(at_ctx *c, const at_softmax_layer *L, at_tensor **q, at_tensor **k, int64_t pos0);
/* The layer's q, k, v (its qkv hook, or project + RoPE). */
void at_softmax_qkv(at_ctx *c, const at_softmax_layer *L, at_tensor *x, int64_t pos0, at_tensor **q,
                    at_tensor **k, at_tensor **v);
/* The attention output of the layer's pattern over T = q's length. */
at_tensor *at_softmax_attend(at_ctx *c, const at_softmax_layer *L, at_tensor *q, at_tensor *k, at_tensor *v);
/* o [B,T,HQ,hd] -> y = o Wo^T [B,T,d]. */
at_tensor *at_softmax_output(at_ctx *c, const at_softmax_layer *L, at_tensor *o);

/* The mixer functions (layer = a struct starting with at_softmax_layer). */
at_tensor *at_softmax_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io);
at_status at_softmax_state_new(const void *layer, at_mixer_state *s);
at_tensor *at_softmax_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io);
at_tensor *at_softmax_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io);
int64_t at_softmax_cache_per_token(const void *layer);

/* The visibility pattern of a layer of `impl` for T positions, if impl is a
 * mixer built on this header (its forward is at_softmax_forward): its layout
 * hook's, or causal with its window. NULL with AT_E_ARG for other mixers. */
at_attn_layout *at_softmax_mixer_layout(at_ctx *c, const at_mixer_impl *impl, const void *layer, int64_t T);

#endif
