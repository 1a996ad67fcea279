/* models/full.c: softmax attention mixer (MHA / GQA / MQA, optional sliding
 * window, RoPE or NoPE).
 *
 *   q = x Wq^T [B,T,HQ,hd], k = x Wk^T, v = x Wv^T [B,T,H,hd]
 *   q, k = RoPE(q), RoPE(k)                    (position: rope)
 *   o = FlashAttention(q, k, v; causal, window)
 *   y = o Wo^T
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mixer.h"
#include "ops/attention/attention.h"
#include "ops/ops.h"

typedef struct full_opts {
  at_mixer_common common;
  int64_t window;
} full_opts;

static const at_mixer_opt full_options[] = {
  AT_OPT_POSITION(full_opts),
  AT_OPT_HEAD_DIM(full_opts),
  AT_OPT_I("window", full_opts, window, 0, 1 << 24, 0,
           "sliding window: query i sees keys i-W+1 .. i; 0 = none"),
};

extern const at_mixer_impl at_mixer_full;

static at_status full_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  const full_opts *o = opts;
  if (o->common.position == AT_POS_ROPE && o->common.head_dim % 2) {
    *bad = "head_dim";
    return at_error(AT_E_CONFIG, "RoPE needs an even head_dim, got %lld%s", (long long)o->common.head_dim,
                    o->common.head_dim == cfg->d_model / cfg->n_heads ? " (d_model / n_heads)" : "");
  }
  return AT_OK;
}

typedef struct full_layer {
  at_tensor *wq, *wk, *wv, *wo;
  int64_t hq, h, hd, window;
  at_position position;
  double rope_theta;
} full_layer;

static at_status full_create(const at_model_cfg *cfg, int layer_index, at_params *p,
                             const char *prefix, void **out) {
  (void)layer_index;
  const full_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_full, full_opts);
  full_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  L->hq = cfg->n_heads;
  L->h = cfg->n_kv_heads;
  L->hd = at_layer_head_dim(cfg, &at_mixer_full);
  L->window = o->window;
  L->position = at_layer_position(cfg, &at_mixer_full);
  L->rope_theta = cfg->rope_theta;
  *out = L;
  if (L->hq % L->h != 0)
    return at_error(AT_E_ARG, "n_heads %lld is not a multiple of n_kv_heads %lld", (long long)L->hq,
                    (long long)L->h);
  if (L->position == AT_POS_ROPE && L->hd % 2 != 0)
    return at_error(AT_E_ARG, "RoPE needs an even head dim, got %lld", (long long)L->hd);
  int64_t d = cfg->d_model;
  if (!(L->wq = at_layer_weight(p, prefix, "wq", L->hq * L->hd, d)) ||
      !(L->wk = at_layer_weight(p, prefix, "wk", L->h * L->hd, d)) ||
      !(L->wv = at_layer_weight(p, prefix, "wv", L->h * L->hd, d)) ||
      !(L->wo = at_layer_weight(p, prefix, "wo", d, L->hq * L->hd)))
    return AT_E_ARG;
  return AT_OK;
}

static void full_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  full_layer *L = layer;
  double std = cfg->init_std;
  at_layer_init_normal(L->wq, seed, std);
  at_layer_init_normal(L->wk, seed, std);
  at_layer_init_normal(L->wv, seed, std);
  at_layer_init_out(L->wo, cfg, seed);
}

/* q [B,T,HQ,hd], k, v [B,T,H,hd] of x at positions pos0 .. pos0+T-1. */
static void full_qkv(at_ctx *c, const full_layer *L, at_tensor *x, int64_t pos0, at_tensor **q,
                     at_tensor **k, at_tensor **v) {
  int64_t B = x->shape[0], T = x->shape[1];
  *q = AT_RESHAPE(c, at_linear(c, x, L->wq, NULL), B, T, L->hq, L->hd);
  *k = AT_RESHAPE(c, at_linear(c, x, L->wk, NULL), B, T, L->h, L->hd);
  *v = AT_RESHAPE(c, at_linear(c, x, L->wv, NULL), B, T, L->h, L->hd);
  if (L->position == AT_POS_ROPE) {
    *q = at_rope(c, *q, L->hd, L->rope_theta, pos0);
    *k = at_rope(c, *k, L->hd, L->rope_theta, pos0);
  }
}

static at_tensor *full_output(at_ctx *c, const full_layer *L, at_tensor *o) {
  if (!o) return NULL;
  return at_linear(c, AT_RESHAPE(c, o, o->shape[0], o->shape[1], L->hq * L->hd), L->wo, NULL);
}

static at_tensor *full_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  full_layer *L = layer;
  if (!x) return NULL;
  at_tensor *q, *k, *v;
  full_qkv(c, L, x, io->pos0, &q, &k, &v);
  at_attn_opts ao = {.scale = 0, .window = L->window};
  return full_output(c, L, at_attention(c, q, k, v, &ao));
}

/* ---- decoding: a key/value cache ------------------------------------------------
 * k_cache, v_cache [B, S, H, hd]. Without a window S = max_len and position p
 * lives in slot p; with a window W the cache is a rolling buffer of
 * S = min(W, max_len) slots, position p in slot p mod S, so it holds exactly
 * the keys the window lets the newest query see (the softmax does not depend
 * on their order). */

static int64_t full_slots(const full_layer *L, int64_t max_len) {
  return L->window > 0 ? AT_MIN(L->window, max_len) : max_len;
}

static at_status full_state_new(const void *layer, at_mixer_state *s) {
  const full_layer *L = layer;
  int64_t S = full_slots(L, s->max_len);
  if (!at_mixer_state_add(s, AT_SHAPE(s->batch, S, L->h, L->hd)) ||
      !at_mixer_state_add(s, AT_SHAPE(s->batch, S, L->h, L->hd)))
    return at_error_prefix(AT_E_NOMEM, "full: key/value cache");
  return AT_OK;
}

/* Rows t of k, v [B,T,H,hd] (positions pos0 + t) into their cache slots. */
static void full_cache_put(const full_layer *L, at_mixer_state *s, const at_tensor *k, const at_tensor *v,
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

static at_tensor *full_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  full_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_full, x, L->wq->shape[1], s, io, 0)) return NULL;
  at_tensor *q, *k, *v;
  full_qkv(c, L, x, 0, &q, &k, &v);
  if (!q || !k || !v) return NULL;
  full_cache_put(L, s, k, v, 0);
  at_attn_opts ao = {.scale = 0, .window = L->window};
  return full_output(c, L, at_attention(c, q, k, v, &ao));
}

static at_tensor *full_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  full_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_full, x, L->wq->shape[1], s, io, 1)) return NULL;
  int64_t pos = io->pos0, S = s->t[0]->shape[1];
  at_tensor *q, *k, *v;
  full_qkv(c, L, x, pos, &q, &k, &v);
  if (!q || !k || !v) return NULL;
  full_cache_put(L, s, k, v, pos);
  at_attn_opts ao = {.scale = 0, .window = 0}; /* the slots hold exactly the visible keys */
  return full_output(c, L, at_attention_decode(c, q, s->t[0], s->t[1], AT_MIN(pos + 1, S), &ao));
}

/* Keys and values of every kv head per token (a window caps the cache, but
 * per token of context it is the same). */
static int64_t full_cache_per_token(const void *layer) {
  const full_layer *L = layer;
  return 2 * L->h * L->hd;
}

const at_mixer_impl at_mixer_full = {
  .name = "full",
  .family = "softmax",
  .summary = "causal softmax attention (MHA / GQA / MQA by n_kv_heads, optional sliding window), "
             "FlashAttention-2 tiling in O(T) memory",
  .opts = full_options,
  .n_opts = AT_ARRAY_LEN(full_options),
  .opts_size = sizeof(full_opts),
  .check = full_check,
  .create = full_create,
  .init = full_init,
  .forward = full_forward,
  .cache_per_token = full_cache_per_token,
  .destroy = free,
  .state_new = full_state_new,
  .prefill = full_prefill,
  .step = full_step,
};
