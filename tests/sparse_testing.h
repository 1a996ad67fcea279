/* tests/sparse_testing.h: the fixed-pattern sparse mixers (sparse_transformer,
 * longformer, bigbird) in the layer suites: named option sets, a layer built
 * alone at a given layer index, its layout. */
#ifndef AT_TESTS_SPARSE_TESTING_H
#define AT_TESTS_SPARSE_TESTING_H

#include <string.h>

#include "mixer_testing.h"
#include "models/softmax_layer.h"
#include "testing.h"

typedef struct sp_opt {
  const char *key;
  double value;
} sp_opt;

/* One configuration: mixer, options, and the layer's index among n_layers. */
typedef struct sp_case {
  const char *name, *mixer;
  int layer_index, n_layers;
  sp_opt opts[6];
} sp_case;

/* Patterns non-trivial at T ~ 100 with the default 64 x 64 tiles (bigbird's
 * tiles are its blocks). */
static const sp_case sp_cases[] = {
  {"st_strided_heads", "sparse_transformer", 0, 1, {{"pattern", 0}, {"stride", 8}, {"combine", 0}}},
  {"st_strided_merged", "sparse_transformer", 0, 1, {{"pattern", 0}, {"stride", 7}, {"combine", 2}}},
  {"st_strided_layers_odd", "sparse_transformer", 1, 2, {{"pattern", 0}, {"stride", 8}, {"combine", 1}}},
  {"st_fixed_heads", "sparse_transformer", 0, 1, {{"pattern", 1}, {"stride", 16}, {"summary", 4}, {"combine", 0}}},
  {"st_fixed_merged", "sparse_transformer", 0, 1, {{"pattern", 1}, {"stride", 12}, {"summary", 3}, {"combine", 2}}},
  {"st_fixed_merged_same", "sparse_transformer", 0, 1,
   {{"pattern", 1}, {"stride", 12}, {"summary", 3}, {"combine", 2}, {"distinct", 0}}},
  {"st_fixed_layers_even", "sparse_transformer", 0, 2, {{"pattern", 1}, {"stride", 16}, {"summary", 4}, {"combine", 1}}},
  {"st_fixed_layers_odd", "sparse_transformer", 1, 2, {{"pattern", 1}, {"stride", 16}, {"summary", 4}, {"combine", 1}}},
  {"lf_dilated_global", "longformer", 0, 1, {{"window", 12}, {"dilation", 3}, {"dilated_heads", 2}, {"n_global", 5}}},
  {"lf_growing_window", "longformer", 1, 3, {{"window", 8}, {"window_top", 40}, {"dilated_heads", 0}}},
  {"bb_small_blocks", "bigbird", 0, 1, {{"block", 8}, {"window_blocks", 1}, {"global_blocks", 1}, {"random_blocks", 2}}},
  {"bb_wide", "bigbird", 0, 1, {{"block", 16}, {"window_blocks", 2}, {"global_blocks", 2}, {"random_blocks", 1}}},
};

/* d_model d, hq query heads of hd, h kv heads, RoPE. */
static inline at_model_cfg sp_cfg(const sp_case *k, int64_t d, int64_t hq, int64_t h, int64_t hd) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = d, cfg.n_heads = hq, cfg.n_kv_heads = h;
  cfg.n_layers = k->n_layers;
  cfg.mlp = AT_MLP_NONE;
  cfg.position = AT_POS_ROPE;
  at_mixer_kind id = mixer_id(k->mixer);
  for (int l = 0; l < k->n_layers; l++) cfg.layers[l] = id;
  set_opt(&cfg, id, "head_dim", (double)hd);
  for (int i = 0; i < 6 && k->opts[i].key; i++) set_opt(&cfg, id, k->opts[i].key, k->opts[i].value);
  at_mixer_kind bad;
  const char *key;
  cr_assert(at_model_cfg_resolve(&cfg, &bad, &key) == AT_OK, "%s: %s", k->name, at_errmsg());
  return cfg;
}

typedef struct sp_layer {
  at_params *p;
  const at_mixer_impl *impl;
  void *state;
} sp_layer;

/* Layer `layer_index` of cfg (prefix "l."), initialised with `seed`. */
static inline sp_layer sp_layer_new(const at_model_cfg *cfg, int layer_index, uint64_t seed) {
  sp_layer t = {at_params_new(), at_mixer_impl_of(cfg->layers[layer_index]), NULL};
  cr_assert(t.p && t.impl);
  at_status st = t.impl->create(cfg, layer_index, t.p, "l.", &t.state);
  cr_assert(st == AT_OK, "create %s: %s", t.impl->name, at_errmsg());
  cr_assert(at_params_finalize(t.p) == AT_OK);
  t.impl->init(t.state, cfg, seed);
  return t;
}

static inline void sp_layer_free(sp_layer *t) {
  t->impl->destroy(t->state);
  at_params_free(t->p);
}

static inline at_softmax_layer *sp_base(sp_layer *t) { return t->state; }

/* The layer's layout for T positions (in c's step arena). */
static inline at_attn_layout *sp_layout(at_ctx *c, sp_layer *t, int64_t T) {
  at_softmax_layer *b = sp_base(t);
  cr_assert(b->layout != NULL);
  at_attn_layout *L = b->layout(c, b, T);
  cr_assert(L != NULL, "%s", at_errmsg());
  return L;
}

/* Weights N(0, std) (large enough that the softmax is far from uniform). */
static inline void sp_randomize(at_params *p, uint64_t seed, double std) {
  for (int i = 0; i < p->n; i++) at_fill_normal(p->list[i].t->data, p->list[i].t->size, seed, 1000 + (uint64_t)i, 0, std);
}

#endif
