/* models/mla.c in double: gradchecks of the MLA layer with and without the
 * decoupled RoPE part and with and without query compression (the input and
 * every parameter); the absorbed generation form equals the explicit form at
 * every position to rounding; option refusals. */
#include "mla_testing.h"

typedef struct {
  test_layer *L;
} fwd_user;

static at_tensor *layer_fn(at_ctx *c, at_tensor **in, void *u) {
  fwd_user *f = u;
  at_mixer_io io;
  memset(&io, 0, sizeof io);
  return f->L->impl->forward(c, f->L->state, in[0], &io);
}

/* {dr, dq}: RoPE part on/off, query compression on/off. */
static const int64_t variants[4][2] = {{2, 0}, {2, 5}, {0, 0}, {0, 5}};

Test(mla_layer, gradcheck_input_and_every_parameter) {
  at_ctx *c = at_ctx_new(0);
  for (int v = 0; v < 4; v++) {
    mla_sizes z = {.d = 8, .h = 2, .hd = 3, .dr = variants[v][0], .dc = 6, .dq = variants[v][1]};
    at_model_cfg cfg = mla_cfg(&z);
    test_layer L = test_layer_new(&cfg, MIXER(mla), 1);
    randomize_params(L.p, 10 + (uint64_t)v);
    at_tensor *in[16];
    in[0] = AT_RANDN(c, 20 + (uint64_t)v, 1.0, 2, 5, 8);
    int n = 1 + params_of_group(L.p, -1, in + 1, 15);
    cr_assert_eq(n, 1 + (z.dq ? 3 : 1) + 2 + (z.dr ? 1 : 0) + 3, "parameter count of variant %d", v);
    fwd_user u = {&L};
    char what[64];
    snprintf(what, sizeof what, "mla dr=%lld dq=%lld", (long long)z.dr, (long long)z.dq);
    AT_GRADCHECK(c, layer_fn, in, n, &u, what);
    test_layer_free(&L);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

/* Explicit forward over T positions against T absorbed decode steps. */
static double absorbed_vs_explicit(at_ctx *c, const mla_sizes *z, int64_t B, int64_t T, uint64_t seed) {
  at_model_cfg cfg = mla_cfg(z);
  test_layer L = test_layer_new(&cfg, MIXER(mla), seed);
  randomize_params(L.p, seed);
  at_mixer_io io;
  memset(&io, 0, sizeof io);
  at_tensor *x = AT_RANDN(c, seed + 1, 1.0, B, T, z->d);
  x->requires_grad = 0;
  at_tensor *y = L.impl->forward(c, L.state, x, &io);
  cr_assert(y != NULL, "%s", at_errmsg());
  const at_mla *M = L.state;
  cr_assert_eq(at_mla_cache_dim(M), z->dr + z->dc);
  at_tensor *cache = AT_ZEROS(c, B, T + 3, at_mla_cache_dim(M)); /* spare slots are never read */
  double worst = 0;
  for (int64_t t = 0; t < T; t++) {
    at_tensor *yt = at_mla_decode(c, M, row_of(c, x, t), cache, t);
    cr_assert(yt != NULL, "%s", at_errmsg());
    cr_assert(!yt->requires_grad);
    at_tensor *want = row_of(c, y, t);
    double e = at_test_rel_err(yt->data, want->data, want->size);
    if (e > worst) worst = e;
  }
  test_layer_free(&L);
  return worst;
}

Test(mla_layer, absorbed_equals_explicit_double) {
  at_ctx *c = at_ctx_new(0);
  const mla_sizes zs[] = {{.d = 12, .h = 3, .hd = 4, .dr = 4, .dc = 10, .dq = 7},
                          {.d = 12, .h = 2, .hd = 6, .dr = 2, .dc = 8, .dq = 0},
                          {.d = 8, .h = 2, .hd = 4, .dr = 0, .dc = 6, .dq = 0}};
  for (int i = 0; i < 3; i++) {
    double e = absorbed_vs_explicit(c, &zs[i], 2, 11, 40 + (uint64_t)i);
    cr_expect(e < 1e-12, "case %d: absorbed vs explicit relative error %.3g", i, e);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

Test(mla_layer, refuses_bad_options) {
  mla_sizes z = {.d = 8, .h = 2, .hd = 4, .dr = 3, .dc = 6};
  at_model_cfg cfg = mla_cfg(&z);
  const at_mixer_impl *impl = at_mixer_impl_of(MIXER(mla));
  void *st = NULL;
  at_params *p = at_params_new();
  cr_expect_eq(impl->create(&cfg, 0, p, "l.", &st), AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "even") != NULL, "%s", at_errmsg());
  impl->destroy(st);
  at_params_free(p);
  /* rope_dim with NoPE, and RoPE without a rope part */
  z.dr = 2;
  cfg = mla_cfg(&z);
  MLA_OPTS(&cfg, MIXER(mla))->common.position = AT_POS_NOPE;
  p = at_params_new();
  cr_expect_eq(impl->create(&cfg, 0, p, "l.", &st), AT_E_ARG);
  impl->destroy(st);
  at_params_free(p);
  z.dr = 0;
  cfg = mla_cfg(&z);
  MLA_OPTS(&cfg, MIXER(mla))->common.position = AT_POS_ROPE;
  p = at_params_new();
  cr_expect_eq(impl->create(&cfg, 0, p, "l.", &st), AT_E_ARG);
  impl->destroy(st);
  at_params_free(p);
}

Test(mla_layer, unresolved_defaults_follow_deepseek_v2) {
  /* kv_rank 0 -> 4 head_dim, rope_dim -1 -> head_dim / 2 (even), as the loader does. */
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = 24, cfg.n_heads = 2, cfg.n_kv_heads = 2;
  test_layer L = test_layer_new(&cfg, MIXER(mla), 1);
  const at_mla *M = L.state;
  cr_expect_eq(M->hd, 12);
  cr_expect_eq(M->dc, 48);
  cr_expect_eq(M->dr, 6);
  cr_expect_eq(M->dq, 0);
  cr_expect_eq(L.impl->cache_per_token(L.state), 54);
  test_layer_free(&L);
  cfg.position = AT_POS_NOPE;
  L = test_layer_new(&cfg, MIXER(mla), 1);
  cr_expect_eq(((const at_mla *)L.state)->dr, 0);
  cr_expect(at_params_find(L.p, "l.w_kr") == NULL, "NoPE declares no rotary key projection");
  test_layer_free(&L);
}
