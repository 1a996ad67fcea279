/* models/dsa.c in double: gradchecks of the DSA layer's output in the dense
 * and the sparse stage (the input and every main parameter), of the
 * indexer's KL in both stages (every indexer parameter), the decode form
 * against the layer forward in both modes, and option refusals. */
#include "mla_testing.h"

typedef struct {
  test_layer *L;
  unsigned mode; /* AT_STAGE_* */
  int want_kl; /* 1: return the aux loss (the indexer KL) instead of the output */
  at_tensor *x;  /* the input when it is not a gradcheck input */
} dsa_user;

static at_tensor *dsa_fn(at_ctx *c, at_tensor **in, void *u) {
  dsa_user *f = u;
  at_mixer_io io;
  memset(&io, 0, sizeof io);
  io.stage = f->mode;
  at_tensor *y = f->L->impl->forward(c, f->L->state, f->x ? f->x : in[0], &io);
  if (!f->want_kl) return y;
  cr_assert(y != NULL, "%s", at_errmsg());
  cr_assert_eq(stat_n(&io, "indexer_kl"), 1);
  return io.aux_loss;
}

/* {dr, dq, topk}: sizes of the variants. T = 7: topk 3 selects 3 of 4..7
 * keys in rows 3..6. */
static const int64_t variants[3][3] = {{2, 5, 3}, {2, 0, 3}, {0, 0, 2}};

static mla_sizes sizes_of(int v) {
  mla_sizes z = {.d = 8, .h = 2, .hd = 3, .dr = variants[v][0], .dc = 5, .dq = variants[v][1],
                 .hi = 2, .di = 4, .topk = variants[v][2]};
  return z;
}

Test(dsa_layer, gradcheck_output_dense_and_sparse) {
  at_ctx *c = at_ctx_new(0);
  for (int v = 0; v < 3; v++)
    for (int sparse = 0; sparse <= 1; sparse++) {
      mla_sizes z = sizes_of(v);
      at_model_cfg cfg = mla_cfg(&z);
      test_layer L = test_layer_new(&cfg, MIXER(dsa), 1);
      randomize_params(L.p, 50 + (uint64_t)v);
      at_tensor *in[16];
      in[0] = AT_RANDN(c, 60 + (uint64_t)v, 1.0, 2, 7, 8);
      int n = 1 + params_of_group(L.p, AT_GROUP_MAIN, in + 1, 15);
      /* the indexer_loss flag too: the output must not change with it */
      dsa_user u = {&L, stage_of(sparse, v == 0), 0, NULL};
      char what[64];
      snprintf(what, sizeof what, "dsa output dr=%lld dq=%lld sparse=%d", (long long)z.dr,
               (long long)z.dq, sparse);
      AT_GRADCHECK(c, dsa_fn, in, n, &u, what);
      test_layer_free(&L);
      at_ctx_reset(c);
    }
  at_ctx_free(c);
}

Test(dsa_layer, gradcheck_indexer_kl_both_stages) {
  at_ctx *c = at_ctx_new(0);
  for (int v = 0; v < 3; v++)
    for (int sparse = 0; sparse <= 1; sparse++) {
      mla_sizes z = sizes_of(v);
      at_model_cfg cfg = mla_cfg(&z);
      test_layer L = test_layer_new(&cfg, MIXER(dsa), 2);
      randomize_params(L.p, 70 + (uint64_t)v);
      at_tensor *x = AT_RANDN(c, 80 + (uint64_t)v, 1.0, 2, 7, 8);
      at_tensor *in[8];
      int n = params_of_group(L.p, AT_GROUP_INDEXER, in, 8);
      cr_assert_eq(n, 5);
      dsa_user u = {&L, stage_of(sparse, 1), 1, x};
      char what[64];
      snprintf(what, sizeof what, "dsa indexer KL dr=%lld dq=%lld sparse=%d", (long long)z.dr,
               (long long)z.dq, sparse);
      AT_GRADCHECK(c, dsa_fn, in, n, &u, what);
      test_layer_free(&L);
      at_ctx_reset(c);
    }
  at_ctx_free(c);
}

/* Decode steps against rows of the layer forward, in the given mode. */
Test(dsa_layer, decode_equals_forward_rows) {
  at_ctx *c = at_ctx_new(0);
  for (int v = 0; v < 3; v++)
    for (int sparse = 0; sparse <= 1; sparse++) {
      mla_sizes z = sizes_of(v);
      z.topk = 4;
      at_model_cfg cfg = mla_cfg(&z);
      test_layer L = test_layer_new(&cfg, MIXER(dsa), 3);
      randomize_params(L.p, 90 + (uint64_t)v);
      int64_t B = 2, T = 12;
      at_tensor *x = AT_RANDN(c, 95 + (uint64_t)v, 1.0, B, T, 8);
      x->requires_grad = 0;
      at_mixer_io io;
      memset(&io, 0, sizeof io);
      io.stage = (sparse) ? AT_STAGE_SPARSE : 0;
      at_tensor *y = L.impl->forward(c, L.state, x, &io);
      cr_assert(y != NULL, "%s", at_errmsg());
      const at_dsa_layer *D = L.state;
      cr_assert_eq(L.impl->cache_per_token(L.state), z.dc + z.dr + z.di);
      at_tensor *cache = AT_ZEROS(c, B, T, at_mla_cache_dim(&D->mla));
      at_tensor *icache = AT_ZEROS(c, B, T, at_dsa_layer_index_dim(D));
      for (int64_t t = 0; t < T; t++) {
        at_tensor *yt = at_dsa_layer_decode(c, D, row_of(c, x, t), cache, icache, t, sparse);
        cr_assert(yt != NULL, "%s", at_errmsg());
        at_tensor *want = row_of(c, y, t);
        double e = at_test_rel_err(yt->data, want->data, want->size);
        cr_expect(e < 1e-12, "variant %d sparse %d position %lld: decode vs forward %.3g", v, sparse,
                  (long long)t, e);
      }
      /* The sparse output differs from the dense one once rows have more keys than topk. */
      if (sparse) {
        io.stage = (0) ? AT_STAGE_SPARSE : 0;
        at_tensor *yd = L.impl->forward(c, L.state, x, &io);
        cr_expect(at_test_rel_err(y->data, yd->data, y->size) > 1e-3, "variant %d: the selection changes nothing", v);
      }
      test_layer_free(&L);
      at_ctx_reset(c);
    }
  at_ctx_free(c);
}

Test(dsa_layer, refuses_bad_options) {
  mla_sizes z = {.d = 8, .h = 2, .hd = 4, .dr = 4, .dc = 6, .hi = 2, .di = 2, .topk = 4};
  at_model_cfg cfg = mla_cfg(&z);
  const at_mixer_impl *impl = at_mixer_impl_of(MIXER(dsa));
  void *st = NULL;
  at_params *p = at_params_new();
  cr_expect_eq(impl->create(&cfg, 0, p, "l.", &st), AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "index_dim") != NULL, "%s", at_errmsg());
  impl->destroy(st);
  at_params_free(p);
}
