/* tests/linlayer_testing.h: one linear-attention mixer layer on its own
 * (parameters in a private store), shared by test_linear_layers*.c. */
#ifndef AT_LINLAYER_TESTING_H
#define AT_LINLAYER_TESTING_H

#include <stdlib.h>
#include <string.h>

#include "mixer_testing.h"
#include "models/linear_mixers.h"
#include "models/model.h"
#include "testing.h"

/* The linear mixers' options in a config. */
#define LIN_OPTS(cfg, k) ((at_lin_mixer_opts *)(void *)(cfg)->mixer[k].bytes)

typedef struct one_layer {
  at_model_cfg cfg;
  at_mixer_kind kind;
  const at_mixer_impl *impl;
  at_params *p;
  void *layer;
} one_layer;

/* A model config for one layer of `kind`: d_model d, 2 heads (mamba2: 2
 * heads of head_dim d), chunk 4, conv 3; the caller adjusts cfg.mixer[kind]
 * before layer_build. */
static inline at_model_cfg layer_cfg(at_mixer_kind kind, int64_t d) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = d;
  cfg.n_heads = cfg.n_kv_heads = 2;
  cfg.n_layers = 1;
  cfg.layers[0] = kind;
  at_lin_mixer_opts *o = LIN_OPTS(&cfg, kind);
  o->chunk_size = 4;
  o->conv_size = 3;
  if (kind == MIXER(mamba2)) o->common.head_dim = d; /* expand 2: 2 heads */
  return cfg;
}

static inline void layer_build(one_layer *L, const at_model_cfg *cfg, at_mixer_kind kind,
                               uint64_t seed) {
  memset(L, 0, sizeof *L);
  L->cfg = *cfg;
  L->kind = kind;
  L->impl = at_mixer_impl_of(kind);
  cr_assert(L->impl != NULL, "no implementation of %s", at_mixer_name(kind));
  L->p = at_params_new();
  cr_assert(L->p != NULL);
  at_mixer_kind bad_mixer;
  const char *bad_key;
  cr_assert(at_model_cfg_resolve(&L->cfg, &bad_mixer, &bad_key) == AT_OK, "%s", at_errmsg());
  at_status st = L->impl->create(&L->cfg, 0, L->p, "mix.", &L->layer);
  cr_assert(st == AT_OK, "create %s: %s", at_mixer_name(kind), at_errmsg());
  cr_assert(at_params_finalize(L->p) == AT_OK);
  L->impl->init(L->layer, &L->cfg, seed);
}

static inline void layer_free(one_layer *L) {
  if (L->layer) L->impl->destroy(L->layer);
  at_params_free(L->p);
  memset(L, 0, sizeof *L);
}

static inline int name_ends(const char *name, const char *suffix) {
  size_t n = strlen(name), s = strlen(suffix);
  return n >= s && strcmp(name + n - s, suffix) == 0;
}

/* Replaces the (small) initial weights by N(0, std) values, so every path
 * of the layer carries a gradient well above rounding; A_log and dt_bias keep
 * their initialisation (a decay gate in a realistic range) plus N(0, 0.3)
 * noise, norm weights and D are 1 + N(0, 0.2). */
static inline void layer_randomize(one_layer *L, uint64_t seed, double std) {
  for (int i = 0; i < L->p->n; i++) {
    at_tensor *t = L->p->list[i].t;
    const char *nm = L->p->list[i].name;
    real *noise = malloc((size_t)t->size * sizeof(real));
    at_fill_normal(noise, t->size, seed, (uint64_t)i + 1, 0, 1);
    int keep = name_ends(nm, "A_log") || name_ends(nm, "dt_bias");
    int one = name_ends(nm, "norm") || name_ends(nm, ".D");
    for (int64_t j = 0; j < t->size; j++)
      t->data[j] = keep ? t->data[j] + (real)(0.3 * noise[j])
                        : one ? (real)(1 + 0.2 * noise[j]) : (real)(std * noise[j]);
    free(noise);
  }
}

static inline at_tensor *layer_forward(at_ctx *c, one_layer *L, at_tensor *x) {
  at_mixer_io io = {0};
  return L->impl->forward(c, L->layer, x, &io);
}

#endif
