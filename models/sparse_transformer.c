/* models/sparse_transformer.c: the Sparse Transformer's factorised attention
 * (Child et al. 2019, arXiv 1904.10509), the mixer `sparse_transformer`.
 *
 *   q, k, v, RoPE, y = o Wo^T as `full` (models/softmax_layer.h; GQA by n_kv_heads)
 *   o_i = sum_{j in A_i} softmax_j(q_i . k_j / sqrt(hd)) v_j,   A_i within j <= i
 *   strided (stride l):   A1_i = {max(0, i - l) .. i}          A2_i = {j : (i - j) mod l = 0}
 *   fixed (l, summary c): A1_i = {j : floor(j/l) = floor(i/l)}
 *                         A2_i = {j : l - c - s <= j mod l < l - s}   (the block's "summary" cells)
 *   combine: heads   query head h uses A1 if h is even, A2 if h is odd
 *            layers  layer index even: A1 for every head; odd: A2
 *            merged  every head uses A1 u A2
 *   s, the shift of the summary cells (fixed, distinct: true): the k-th head that uses
 *   A2 (k = h / 2 under heads, h otherwise) takes s = (k mod floor(l / c)) c, so heads
 *   attend to distinct c-sized sub-blocks of each block ("it is better for different
 *   heads to attend to distinct sub-blocks of length c", §4.3), cycling when there are
 *   more heads than sub-blocks; distinct: false gives every head s = 0 (the last c cells).
 *
 * The pattern is rules per query head (ops/attention/layout.h), run by the fused
 * block-sparse kernel; decoding reads row pos of the layout for T = max_len.
 */
#include <stdlib.h>

#include "models/softmax_layer.h"

enum { ST_STRIDED = 0, ST_FIXED = 1 };
enum { ST_HEADS = 0, ST_LAYERS = 1, ST_MERGED = 2 };

typedef struct st_opts {
  at_mixer_common common;
  int pattern, combine, distinct;
  int64_t stride, summary;
} st_opts;

static const char *const st_patterns[] = {"strided", "fixed", NULL};
static const char *const st_combines[] = {"heads", "layers", "merged", NULL};

static const at_mixer_opt st_options[] = {
  AT_OPT_POSITION(st_opts),
  AT_OPT_HEAD_DIM(st_opts),
  AT_OPT_E("pattern", st_opts, pattern, st_patterns, NULL, ST_FIXED,
           "strided (A1 the last l+1 keys, A2 every l-th key) or fixed (A1 the own block of l, "
           "A2 the last c cells of every block)"),
  AT_OPT_I("stride", st_opts, stride, 1, 1 << 24, 32, "l: the stride (strided) or block length (fixed)"),
  AT_OPT_I("summary", st_opts, summary, 1, 1 << 24, 4, "c: summary cells per block (fixed; <= stride)"),
  AT_OPT_E("combine", st_opts, combine, st_combines, NULL, ST_HEADS,
           "heads: even heads A1, odd heads A2; layers: by layer parity; merged: A1 u A2 in every head"),
  AT_OPT_B("distinct", st_opts, distinct, 1,
           "fixed: heads using A2 read distinct c-sized sub-blocks (shift (k mod l/c) c)"),
};

extern const at_mixer_impl at_mixer_sparse_transformer;

static at_status st_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  const st_opts *o = opts;
  if (o->pattern == ST_FIXED && o->summary > o->stride) {
    *bad = "summary";
    return at_error(AT_E_CONFIG, "summary %lld exceeds the block length stride %lld", (long long)o->summary,
                    (long long)o->stride);
  }
  return at_softmax_check(cfg, opts, bad);
}

typedef struct st_layer {
  at_softmax_layer base;
  at_attn_rule *rules; /* one per query head */
} st_layer;

static at_attn_layout *st_layout(at_ctx *c, const void *layer, int64_t T) {
  const st_layer *L = layer;
  return at_attn_layout_rules(c, T, L->base.hq, L->rules);
}

/* The parts (AT_ST_*) query head h of layer `li` uses, and its index among
 * the heads that use A2. */
static int st_parts(const st_opts *o, int li, int64_t h, int64_t *k) {
  switch (o->combine) {
    case ST_HEADS: *k = h / 2; return h % 2 ? AT_ST_SECOND : AT_ST_LOCAL;
    case ST_LAYERS: *k = h; return li % 2 ? AT_ST_SECOND : AT_ST_LOCAL;
    default: *k = h; return AT_ST_BOTH;
  }
}

static at_attn_rule st_rule(const st_opts *o, int li, int64_t h) {
  int64_t k;
  int parts = st_parts(o, li, h, &k);
  if (o->pattern == ST_STRIDED) return at_attn_rule_strided(o->stride, parts);
  int64_t shift = o->distinct ? k % (o->stride / o->summary) * o->summary : 0;
  return at_attn_rule_fixed(o->stride, o->summary, parts, shift);
}

static void st_destroy(void *layer) {
  st_layer *L = layer;
  if (L) free(L->rules);
  free(L);
}

static at_status st_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                           void **out) {
  const st_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_sparse_transformer, st_opts);
  st_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base.layout = st_layout;
  at_status st = at_softmax_declare(&L->base, &at_mixer_sparse_transformer, cfg, p, prefix);
  if (st != AT_OK) return st;
  if (o->pattern == ST_FIXED && (o->summary < 1 || o->summary > o->stride))
    return at_error(AT_E_ARG, "sparse_transformer: summary %lld must be in 1 .. stride %lld",
                    (long long)o->summary, (long long)o->stride);
  if (!(L->rules = calloc((size_t)L->base.hq, sizeof *L->rules))) return at_error(AT_E_NOMEM, "out of memory");
  for (int64_t h = 0; h < L->base.hq; h++) L->rules[h] = st_rule(o, layer_index, h);
  return AT_OK;
}

static void st_init(void *layer, const at_model_cfg *cfg, uint64_t seed) { at_softmax_init(layer, cfg, seed); }

const at_mixer_impl at_mixer_sparse_transformer = {
  .name = "sparse_transformer",
  .family = "sparse",
  .summary = "Sparse Transformer factorised attention (Child et al. 2019): strided or fixed patterns, "
             "combined across heads, layers or merged; block-sparse fused kernel",
  .opts = st_options,
  .n_opts = AT_ARRAY_LEN(st_options),
  .opts_size = sizeof(st_opts),
  .check = st_check,
  .create = st_create,
  .init = st_init,
  .forward = at_softmax_forward,
  .cache_per_token = at_softmax_cache_per_token,
  .destroy = st_destroy,
  .state_new = at_softmax_state_new,
  .prefill = at_softmax_prefill,
  .step = at_softmax_step,
};
