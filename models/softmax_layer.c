/* models/softmax_layer.c: the projections, RoPE, output projection and
 * key/value cache of the softmax-attention mixers (models/softmax_layer.h). */
#include <string.h>

#include "models/softmax_layer.h"
#include "ops/ops.h"

at_status at_softmax_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  const at_mixer_common *o = opts;
  if (o->position == AT_POS_ROPE && o->head_dim % 2) {
    *bad = "head_dim";
    return at_error(AT_E_CONFIG, "RoPE needs an even head_dim, got %lld%s", (long long)o->head_dim,
                    o->head_dim == cfg->d_model / cfg->n_heads ? " (d_model / n_heads)" : "");
  }
  return AT_OK;
}

at_status at_softmax_declare(at_softmax_layer *L, const at_mixer_impl *impl, const at_model_cfg *cfg,
                             at_params *p, const char *prefix) {
  L->impl = impl;
  L->d = cfg->d_model;
  L->hq = cfg->n_heads;
  L->h = cfg->n_kv_heads;
  L->hd = at_layer_head_dim(cfg, impl);
  L->position = at_layer_position(cfg, impl);
  L->rope_theta = cfg->rope_theta;
  if (L->h < 1 || L->hq % L->h != 0)
    return at_error(AT_E_ARG, "%s: n_heads %lld is not a multiple of n_kv_heads %lld", impl->name,
                    (long long)L->hq, (long long)L->h);
  if (L->position == AT_POS_ROPE && L->hd % 2 != 0)
    return at_error(AT_E_ARG, "%s: RoPE needs an even head dim, got %lld", impl->name, (long long)L->hd);
  at_status st = at_softmax_declare_qkv(L, p, prefix, "wq", "wk", "wv", &L->wq, &L->wk, &L->wv);
  if (st == AT_OK && !(L->wo = at_layer_weight(p, prefix, "wo", L->d, L->hq * L->hd))) st = AT_E_ARG;
  return st;
}

at_status at_softmax_declare_qkv(const at_softmax_layer *L, at_params *p, const char *prefix,
                                 const char *nq, const char *nk, const char *nv, at_tensor **wq,
                                 at_tensor **wk, at_tensor **wv) {
  if (!(*wq = at_layer_weight(p, prefix, nq, L->hq * L->hd, L->d)) ||
      !(*wk = at_layer_weight(p, prefix, nk, L->h * L->hd, L->d)) ||
      !(*wv = at_layer_weight(p, prefix, nv, L->h * L->hd, L->d)))
    return AT_E_ARG;
  return AT_OK;
}

void at_softmax_init(at_softmax_layer *L, const at_model_cfg *cfg, uint64_t seed) {
  at_layer_init_normal(L->wq, seed, cfg->init_std);
  at_layer_init_normal(L->wk, seed, cfg->init_std);
  at_layer_init_normal(L->wv, seed, cfg->init_std);
  at_layer_init_out(L->wo, cfg, seed);
}

void at_softmax_project(at_ctx *c, const at_softmax_layer *L, at_tensor *wq, at_tensor *wk, at_tensor *wv,
                        at_tensor *x, at_tensor **q, at_tensor **k, at_tensor **v) {
  int64_t B = x ? x->shape[0] : 0, T = x ? x->shape[1] : 0;
  *q = AT_RESHAPE(c, at_linear(c, x, wq, NULL), B, T, L->hq, L->hd);
  *k = AT_RESHAPE(c, at_linear(c, x, wk, NULL), B, T, L->h, L->hd);
  *v = AT_RESHAPE(c, at_linear(c, x, wv, NULL), B, T, L->h, L->hd);
}

void at_softmax_rope(at_ctx *c, const at_softmax_layer *L, at_tensor **q, at_tensor **k, int64_t pos0) {
  if (L->position != AT_POS_ROPE) return;
  *q = at_rope(c, *q, L->hd, L->rope_theta, pos0);
  *k = at_rope(c, *k, L->hd, L->rope_theta, pos0);
}

void at_softmax_qkv(at_ctx *c, const at_softmax_layer *L, at_tensor *x, int64_t pos0, at_tensor **q,
                    at_tensor **k, at_tensor **v) {
  if (L->qkv) {
    L->qkv(c, L, x, pos0, q, k, v);
    return;
  }
  at_softmax_project(c, L, L->wq, L->wk, L->wv, x, q, k, v);
  at_softmax_rope(c, L, q, k, pos0);
}

static at_tensor *attend(at_ctx *c, const at_softmax_layer *L, at_tensor *q, at_tensor *k, at_tensor *v,
                         const at_attn_layout *layout) {
  at_attn_opts ao = {.scale = 0, .window = layout ? 0 : L->window, .layout = layout, .stats = L->stats};
  return L->naive ? at_attention_naive(c, q, k, v, &ao) : at_attention(c, q, k, v, &ao);
}

at_tensor *at_softmax_attend(at_ctx *c, const at_softmax_layer *L, at_tensor *q, at_tensor *k, at_tensor *v) {
  if (!q || !k || !v) return NULL;
  const at_attn_layout *layout = NULL;
  if (L->layout && !(layout = L->layout(c, L, q->shape[1]))) return NULL;
  return attend(c, L, q, k, v, layout);
}

at_tensor *at_softmax_output(at_ctx *c, const at_softmax_layer *L, at_tensor *o) {
  if (!o) return NULL;
  return at_linear(c, AT_RESHAPE(c, o, o->shape[0], o->shape[1], L->hq * L->hd), L->wo, NULL);
}

at_tensor *at_softmax_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  const at_softmax_layer *L = layer;
  if (!x) return NULL;
  at_tensor *q, *k, *v;
  at_softmax_qkv(c, L, x, io->pos0, &q, &k, &v);
  return at_softmax_output(c, L, at_softmax_attend(c, L, q, k, v));
}

/* ---- decoding ----------------------------------------------------------------- */

static int64_t slots(const at_softmax_layer *L, int64_t max_len) {
  return !L->layout && L->window > 0 ? AT_MIN(L->window, max_len) : max_len;
}

at_status at_softmax_state_new(const void *layer, at_mixer_state *s) {
  const at_softmax_layer *L = layer;
  int64_t S = slots(L, s->max_len);
  if (!at_mixer_state_add(s, AT_SHAPE(s->batch, S, L->h, L->hd)) ||
      !at_mixer_state_add(s, AT_SHAPE(s->batch, S, L->h, L->hd)))
    return at_error_prefix(AT_E_NOMEM, "%s: key/value cache", L->impl->name);
  return AT_OK;
}

/* Rows t of k, v [B,T,H,hd] (positions pos0 + t) into their cache slots. */
static void cache_put(const at_softmax_layer *L, at_mixer_state *s, const at_tensor *k, const at_tensor *v,
                      int64_t pos0) {
  at_tensor *kc = s->t[0], *vc = s->t[1];
  int64_t B = k->shape[0], T = k->shape[1], S = kc->shape[1], row = L->h * L->hd;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = AT_MAX(0, T - S); t < T; t++) {
      int64_t slot = (pos0 + t) % S;
      memcpy(kc->data + (b * S + slot) * row, k->data + (b * T + t) * row, (size_t)row * sizeof(real));
      memcpy(vc->data + (b * S + slot) * row, v->data + (b * T + t) * row, (size_t)row * sizeof(real));
    }
}

at_tensor *at_softmax_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  const at_softmax_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->impl, x, L->d, s, io, 0)) return NULL;
  at_tensor *q, *k, *v;
  at_softmax_qkv(c, L, x, 0, &q, &k, &v);
  if (!q || !k || !v) return NULL;
  cache_put(L, s, k, v, 0);
  return at_softmax_output(c, L, at_softmax_attend(c, L, q, k, v));
}

at_tensor *at_softmax_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  const at_softmax_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->impl, x, L->d, s, io, 1)) return NULL;
  int64_t pos = io->pos0, S = s->t[0]->shape[1];
  at_tensor *q, *k, *v;
  at_softmax_qkv(c, L, x, pos, &q, &k, &v);
  if (!q || !k || !v) return NULL;
  cache_put(L, s, k, v, pos);
  /* a rolling cache holds exactly the visible keys (window 0); a layout is
   * built for the S = max_len slots and read at row pos */
  const at_attn_layout *layout = NULL;
  if (L->layout && !(layout = L->layout(c, L, S))) return NULL;
  at_attn_opts ao = {.scale = 0, .window = 0, .layout = layout};
  return at_softmax_output(c, L, at_attention_decode(c, q, s->t[0], s->t[1], AT_MIN(pos + 1, S), &ao));
}

/* Keys and values of every kv head per token (a window caps the cache, but
 * per token of context it is the same). */
int64_t at_softmax_cache_per_token(const void *layer) {
  const at_softmax_layer *L = layer;
  return 2 * L->h * L->hd;
}

at_attn_layout *at_softmax_mixer_layout(at_ctx *c, const at_mixer_impl *impl, const void *layer, int64_t T) {
  if (impl->forward != at_softmax_forward)
    return at_fail(c, AT_E_ARG, "mixer %s has no fixed attention pattern (not a softmax-layer mixer)", impl->name);
  const at_softmax_layer *L = layer;
  if (L->layout) return L->layout(c, L, T);
  return L->window > 0 ? at_attn_layout_window(c, T, L->window) : at_attn_layout_causal(c, T);
}
