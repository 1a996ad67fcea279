/* models/longformer.c: Longformer attention for causal LMs (Beltagy et al.
 * 2020, arXiv 2004.05150), the mixer `longformer`.
 *
 *   window of layer l (of n):  W_l = W + round((W_top - W) l / (n - 1))   (W_top 0: W_l = W)
 *   dilation of query head h:  d_h = dilation if h < dilated_heads, else 1
 *   global positions:          G = {0 .. n_global - 1}
 *   visible(i, j) = j <= i and ( (i - j) = m d_h for some 0 <= m < W_l   causal (left) window
 *                                or i in G  or  j in G )                  global attention
 *   projections by position:   q_t, k_t, v_t = x_t (Wq_g, Wk_g, Wv_g)^T   if t in G
 *                                            = x_t (Wq,   Wk,   Wv  )^T   otherwise
 *   then RoPE, o_i = sum_{j visible} softmax_j(q_i . k_j / sqrt(hd)) v_j, y = o Wo^T
 *   (GQA by n_kv_heads; the _g projections are initialised as copies of the local ones)
 *
 * How the global projections enter under causality: a global token's q, k and v
 * come from the _g projections for all of its attention. Its query (from Wq_g)
 * attends to every earlier key, which are all global tokens (G is a prefix), so
 * with their Wk_g / Wv_g keys and values; a later, local query (Wq) attends to
 * its window and to every global token's Wk_g key and Wv_g value. The paper's
 * symmetric rule "the global token attends to all, all attend to it" is thus cut
 * to j <= i: a global token cannot see later tokens (that would leak the future),
 * and with G a prefix, "attends to every earlier key" is plain causal attention
 * among the first n_global tokens. One projection per position keeps a single
 * key/value cache (positions in G cache their _g keys and values).
 *
 * Decoding reads row pos of the layout for T = max_len (the window's keys are
 * all kept: the globals need the cache of every position).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/softmax_layer.h"
#include "ops/ops.h"

typedef struct lf_opts {
  at_mixer_common common;
  int64_t window, window_top, dilation, dilated_heads, n_global;
} lf_opts;

static const at_mixer_opt lf_options[] = {
  AT_OPT_POSITION(lf_opts),
  AT_OPT_HEAD_DIM(lf_opts),
  AT_OPT_I("window", lf_opts, window, 1, 1 << 24, 64,
           "W: query i sees keys i - (W-1) d .. i (layer 0's window with window_top)"),
  AT_OPT_I("window_top", lf_opts, window_top, 0, 1 << 24, 0,
           "the last layer's window, linear in depth from window at layer 0; 0 = window in every layer"),
  AT_OPT_I("dilation", lf_opts, dilation, 1, 1 << 20, 1, "d: gap of the dilated heads' windows"),
  AT_OPT_I("dilated_heads", lf_opts, dilated_heads, 0, 1 << 20, 2,
           "query heads 0 .. dilated_heads-1 use the dilation (the paper: 2)"),
  AT_OPT_I("n_global", lf_opts, n_global, 0, 1 << 24, 0,
           "the first n_global positions are global (own q/k/v projections); 0 = none"),
};

extern const at_mixer_impl at_mixer_longformer;

typedef struct lf_layer {
  at_softmax_layer base;
  int64_t window, n_global;
  int64_t *dil; /* per query head */
  at_tensor *wq_g, *wk_g, *wv_g;
} lf_layer;

static at_attn_layout *lf_layout(at_ctx *c, const void *layer, int64_t T) {
  const lf_layer *L = layer;
  unsigned char *g = NULL;
  if (L->n_global > 0) {
    if (!(g = at_scratch_zero(c, (size_t)T))) return NULL;
    memset(g, 1, (size_t)AT_MIN(T, L->n_global));
  }
  return at_attn_layout_longformer(c, T, L->window, L->base.hq, L->dil, 1, g);
}

/* Positions pos0 + t < n_global take the global projections. */
static void lf_qkv(at_ctx *c, const void *layer, at_tensor *x, int64_t pos0, at_tensor **q, at_tensor **k,
                   at_tensor **v) {
  const lf_layer *L = layer;
  const at_softmax_layer *S = &L->base;
  int64_t T = x ? x->shape[1] : 0, ng = AT_MAX(0, AT_MIN(L->n_global - pos0, T));
  if (ng == 0) at_softmax_project(c, S, S->wq, S->wk, S->wv, x, q, k, v);
  else if (ng == T) at_softmax_project(c, S, L->wq_g, L->wk_g, L->wv_g, x, q, k, v);
  else {
    at_tensor *g[3], *l[3];
    at_softmax_project(c, S, L->wq_g, L->wk_g, L->wv_g, at_slice(c, x, 1, 0, ng), &g[0], &g[1], &g[2]);
    at_softmax_project(c, S, S->wq, S->wk, S->wv, at_slice(c, x, 1, ng, T - ng), &l[0], &l[1], &l[2]);
    at_tensor **out[3] = {q, k, v};
    for (int i = 0; i < 3; i++) *out[i] = g[i] && l[i] ? at_concat(c, (at_tensor *[]){g[i], l[i]}, 2, 1) : NULL;
  }
  at_softmax_rope(c, S, q, k, pos0);
}

static void lf_destroy(void *layer) {
  lf_layer *L = layer;
  if (L) free(L->dil);
  free(L);
}

/* Layer li's window: linear from window (layer 0) to window_top (the last). */
static int64_t lf_window(const lf_opts *o, int li, int n_layers) {
  if (o->window_top <= 0 || n_layers < 2) return o->window;
  return o->window + llround((double)(o->window_top - o->window) * li / (n_layers - 1));
}

static at_status lf_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                           void **out) {
  const lf_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_longformer, lf_opts);
  lf_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base.layout = lf_layout;
  L->window = lf_window(o, layer_index, cfg->n_layers);
  L->n_global = o->n_global;
  at_status st = at_softmax_declare(&L->base, &at_mixer_longformer, cfg, p, prefix);
  if (st != AT_OK) return st;
  if (L->window < 1 || o->dilation < 1)
    return at_error(AT_E_ARG, "longformer: window %lld and dilation %lld must be positive",
                    (long long)L->window, (long long)o->dilation);
  if (!(L->dil = calloc((size_t)L->base.hq, sizeof *L->dil))) return at_error(AT_E_NOMEM, "out of memory");
  for (int64_t h = 0; h < L->base.hq; h++) L->dil[h] = h < o->dilated_heads ? o->dilation : 1;
  if (L->n_global > 0) {
    L->base.qkv = lf_qkv;
    st = at_softmax_declare_qkv(&L->base, p, prefix, "wq_g", "wk_g", "wv_g", &L->wq_g, &L->wk_g, &L->wv_g);
  }
  return st;
}

static void copy_param(at_tensor *dst, const at_tensor *src) {
  memcpy(dst->data, src->data, (size_t)src->size * sizeof(real));
}

static void lf_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  lf_layer *L = layer;
  at_softmax_init(&L->base, cfg, seed);
  if (L->n_global > 0) { /* the paper initialises the global projections from the local ones */
    copy_param(L->wq_g, L->base.wq);
    copy_param(L->wk_g, L->base.wk);
    copy_param(L->wv_g, L->base.wv);
  }
}

const at_mixer_impl at_mixer_longformer = {
  .name = "longformer",
  .family = "sparse",
  .summary = "Longformer attention, causal (Beltagy et al. 2020): sliding window growing with depth, "
             "dilated heads, global first tokens with their own q/k/v projections",
  .opts = lf_options,
  .n_opts = AT_ARRAY_LEN(lf_options),
  .opts_size = sizeof(lf_opts),
  .check = at_softmax_check,
  .create = lf_create,
  .init = lf_init,
  .forward = at_softmax_forward,
  .cache_per_token = at_softmax_cache_per_token,
  .destroy = lf_destroy,
  .state_new = at_softmax_state_new,
  .prefill = at_softmax_prefill,
  .step = at_softmax_step,
};
