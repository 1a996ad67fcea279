/* tests/mla_testing.h: building single MLA / DSA layers and small models for
 * the suites test_mla*.c and test_dsa_layer*.c. */
#ifndef AT_MLA_TESTING_H
#define AT_MLA_TESTING_H

#include <stdlib.h>
#include <string.h>

#include "mixer_testing.h"
#include "models/mla.h"
#include "models/model.h"
#include "testing.h"

/* The MLA / DSA options of mixer k in cfg. */
#define MLA_OPTS(cfg, k) ((at_mla_opts *)(void *)(cfg)->mixer[k].bytes)

/* Sizes of a test layer. */
typedef struct mla_sizes {
  int64_t d, h, hd, dr, dc, dq; /* d_model, heads, head_dim, rope_dim (0: NoPE), kv_rank, q_rank */
  int64_t hi, di, topk;         /* DSA indexer */
} mla_sizes;

/* A model config whose MLA and DSA options are `z` (both mixers get them). */
static inline at_model_cfg mla_cfg(const mla_sizes *z) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = z->d;
  cfg.n_heads = z->h;
  cfg.n_kv_heads = z->h;
  cfg.position = z->dr > 0 ? AT_POS_ROPE : AT_POS_NOPE;
  for (int k = MIXER(mla); k <= MIXER(dsa); k++) {
    at_mla_opts *o = MLA_OPTS(&cfg, k);
    o->common.position = cfg.position;
    o->common.head_dim = z->hd;
    o->kv_rank = z->dc;
    o->q_rank = z->dq;
    o->rope_dim = z->dr;
    o->index_heads = z->hi;
    o->index_dim = z->di;
    o->topk = z->topk;
  }
  return cfg;
}

/* Stage flags of the DSA recipe's stages. */
static inline unsigned stage_of(int sparse, int indexer_loss) {
  return (sparse ? AT_STAGE_SPARSE : 0u) | (indexer_loss ? AT_STAGE_AUX_LOSS : 0u);
}

/* A statistic of one forward by name: the sum over layers and how many
 * layers reported it (0 and 0 when none did). */
static inline double stat_sum(const at_mixer_io *io, const char *name) {
  for (int i = 0; i < io->n_stats; i++)
    if (!strcmp(io->stats[i].name, name)) return io->stats[i].sum;
  return 0;
}
static inline int stat_n(const at_mixer_io *io, const char *name) {
  for (int i = 0; i < io->n_stats; i++)
    if (!strcmp(io->stats[i].name, name)) return io->stats[i].n;
  return 0;
}

/* One layer of `kind` in its own parameter store (prefix "l."). */
typedef struct test_layer {
  at_params *p;
  const at_mixer_impl *impl;
  void *state;
} test_layer;

static inline test_layer test_layer_new(const at_model_cfg *cfg0, at_mixer_kind kind, uint64_t seed) {
  test_layer t = {at_params_new(), at_mixer_impl_of(kind), NULL};
  cr_assert(t.p && t.impl);
  /* the options resolved as a model using this mixer would have them */
  at_model_cfg res = *cfg0, c1 = *cfg0, *cfg = &c1;
  res.layers[0] = kind;
  at_mixer_kind bad;
  const char *key;
  cr_assert(at_model_cfg_resolve(&res, &bad, &key) == AT_OK, "%s", at_errmsg());
  c1.mixer[kind] = res.mixer[kind];
  at_status st = t.impl->create(cfg, 0, t.p, "l.", &t.state);
  cr_assert(st == AT_OK, "create %s: %s", at_mixer_name(kind), at_errmsg());
  cr_assert(at_params_finalize(t.p) == AT_OK);
  t.impl->init(t.state, cfg, seed);
  return t;
}

static inline void test_layer_free(test_layer *t) {
  t->impl->destroy(t->state);
  at_params_free(t->p);
}

/* Random values of test size for every parameter (the init's 0.02 would make
 * the attention nearly uniform): weights N(0, 0.5), norm weights 1 + N(0, 0.2),
 * norm biases N(0, 0.2). */
static inline void randomize_params(at_params *p, uint64_t seed) {
  for (int i = 0; i < p->n; i++) {
    at_param *e = &p->list[i];
    const char *n = e->name;
    size_t len = strlen(n);
    int is_bias = len >= 6 && !strcmp(n + len - 6, "norm_b");
    int is_norm = !is_bias && (strstr(n, "norm") != NULL);
    at_fill_normal(e->t->data, e->t->size, seed, 1000 + (uint64_t)i, is_norm ? 1.0 : 0.0,
                   is_norm || is_bias ? 0.2 : 0.5);
  }
}

/* The parameters of a group (-1: all) as a list (at most `cap`). */
static inline int params_of_group(at_params *p, int group, at_tensor **out, int cap) {
  int n = 0;
  for (int i = 0; i < p->n && n < cap; i++)
    if (group < 0 || p->list[i].group == group) out[n++] = p->list[i].t;
  return n;
}

/* Row t of x [B, T, D] as a new tensor [B, 1, D]. */
static inline at_tensor *row_of(at_ctx *c, const at_tensor *x, int64_t t) {
  int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2];
  at_tensor *r = at_new(c, AT_SHAPE(B, 1, D));
  cr_assert(r != NULL);
  for (int64_t b = 0; b < B; b++) memcpy(r->data + b * D, x->data + (b * T + t) * D, (size_t)D * sizeof(real));
  return r;
}

#endif
