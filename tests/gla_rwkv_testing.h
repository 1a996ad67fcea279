/* tests/gla_rwkv_testing.h: one gla or rwkv7 layer on its own (parameters in
 * a private store), for the layer suites test_gla_rwkv_layers_d.c and
 * test_gla_rwkv_golden.c. An rwkv7 layer built as layer 1 of two rwkv7
 * layers has the value residual and takes v_first through the mixer io. */
#ifndef AT_GLA_RWKV_TESTING_H
#define AT_GLA_RWKV_TESTING_H

#include <stdlib.h>
#include <string.h>

#include "mixer_testing.h"
#include "models/linear_mixers.h"
#include "models/model.h"
#include "testing.h"

typedef struct gr_layer {
  at_model_cfg cfg;
  const at_mixer_impl *impl;
  at_params *p;
  void *layer;
  at_tensor *v_first; /* rwkv7 layer 1: the value residual's input */
} gr_layer;

/* A model config of n_layers layers of mixer `kind`: d_model d, n_heads H. */
static inline at_model_cfg gr_cfg(at_mixer_kind kind, int64_t d, int64_t H, int n_layers) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = d;
  cfg.n_heads = cfg.n_kv_heads = H;
  cfg.n_layers = n_layers;
  for (int i = 0; i < n_layers; i++) cfg.layers[i] = kind;
  return cfg;
}

/* Builds layer `index` of cfg (its options set by the caller) and
 * initialises it. */
static inline void gr_build(gr_layer *L, const at_model_cfg *cfg, int index, uint64_t seed) {
  memset(L, 0, sizeof *L);
  L->cfg = *cfg;
  L->impl = at_mixer_impl_of(cfg->layers[index]);
  L->p = at_params_new();
  cr_assert(L->impl && L->p);
  at_mixer_kind bad_mixer;
  const char *bad_key;
  cr_assert(at_model_cfg_resolve(&L->cfg, &bad_mixer, &bad_key) == AT_OK, "%s", at_errmsg());
  at_status st = L->impl->create(&L->cfg, index, L->p, "mix.", &L->layer);
  cr_assert(st == AT_OK, "create %s: %s", L->impl->name, at_errmsg());
  cr_assert(at_params_finalize(L->p) == AT_OK);
  L->impl->init(L->layer, &L->cfg, seed);
}

static inline void gr_free(gr_layer *L) {
  if (L->layer) L->impl->destroy(L->layer);
  at_params_free(L->p);
  memset(L, 0, sizeof *L);
}

/* Every parameter N(0, std) plus `base` (the initialisation leaves paths at
 * zero: o_proj, LoRA down-projections), so that every path carries a
 * gradient well above rounding. */
static inline void gr_randomize(gr_layer *L, uint64_t seed, double std) {
  for (int i = 0; i < L->p->n; i++) {
    at_tensor *t = L->p->list[i].t;
    real *noise = malloc((size_t)t->size * sizeof(real));
    at_fill_normal(noise, t->size, seed, (uint64_t)i + 1, 0, 1);
    for (int64_t j = 0; j < t->size; j++) t->data[j] = (real)(std * noise[j]);
    free(noise);
  }
}

static inline at_tensor *gr_forward(at_ctx *c, gr_layer *L, at_tensor *x) {
  at_mixer_io io = {0};
  io.v_first = L->v_first;
  return L->impl->forward(c, L->layer, x, &io);
}

#endif
