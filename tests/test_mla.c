/* models/mla.c in float: the absorbed generation form equals the explicit
 * training form at every position (RoPE part and query compression on, and
 * NoPE); the KV-cache elements per token of MHA, GQA, MQA, MLA and DSA
 * models (DeepSeek-V2 Table 1's formulas). */
#include "mla_testing.h"

static double absorbed_vs_explicit(at_ctx *c, const mla_sizes *z, int64_t B, int64_t T, uint64_t seed) {
  at_model_cfg cfg = mla_cfg(z);
  test_layer L = test_layer_new(&cfg, MIXER(mla), seed);
  randomize_params(L.p, seed);
  at_mixer_io io;
  memset(&io, 0, sizeof io);
  at_tensor *x = AT_RANDN(c, seed + 1, 1.0, B, T, z->d);
  at_tensor *y = L.impl->forward(c, L.state, x, &io);
  cr_assert(y != NULL, "%s", at_errmsg());
  const at_mla *M = L.state;
  at_tensor *cache = AT_ZEROS(c, B, T, at_mla_cache_dim(M));
  double worst = 0;
  for (int64_t t = 0; t < T; t++) {
    at_tensor *yt = at_mla_decode(c, M, row_of(c, x, t), cache, t);
    cr_assert(yt != NULL, "%s", at_errmsg());
    at_tensor *want = row_of(c, y, t);
    double e = at_test_rel_err(yt->data, want->data, want->size);
    cr_expect(e < 2e-5, "position %lld: absorbed vs explicit %.3g", (long long)t, e);
    if (e > worst) worst = e;
  }
  /* The cache holds [k_R | c_KV] of every position; spot-check the last
   * latent's RMS (RMSNorm output times a weight near 1, so not 0). */
  double ss = 0;
  const real *last = cache->data + ((B - 1) * T + T - 1) * at_mla_cache_dim(M) + z->dr;
  for (int64_t i = 0; i < z->dc; i++) ss += (double)last[i] * last[i];
  cr_expect(ss > 0.1 * (double)z->dc, "the last latent was written (sum of squares %g)", ss);
  test_layer_free(&L);
  return worst;
}

Test(mla_layer, absorbed_equals_explicit_float) {
  at_ctx *c = at_ctx_new(0);
  /* DeepSeek-V2 proportions (dc = 4 hd, dr = hd / 2) with q compression; a NoPE case. */
  const mla_sizes zs[] = {{.d = 32, .h = 4, .hd = 8, .dr = 4, .dc = 32, .dq = 24},
                          {.d = 32, .h = 2, .hd = 16, .dr = 0, .dc = 24, .dq = 0}};
  for (int i = 0; i < 2; i++) {
    absorbed_vs_explicit(c, &zs[i], 2, 37, 7 + (uint64_t)i);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

Test(mla_layer, decode_refusals) {
  at_ctx *c = at_ctx_new(0);
  mla_sizes z = {.d = 8, .h = 2, .hd = 4, .dr = 2, .dc = 6};
  at_model_cfg cfg = mla_cfg(&z);
  test_layer L = test_layer_new(&cfg, MIXER(mla), 1);
  at_tensor *x = AT_RANDN(c, 1, 1.0, 1, 1, 8), *cache = AT_ZEROS(c, 1, 4, 8);
  cr_expect(at_mla_decode(c, L.state, x, cache, 4) == NULL, "position past the cache");
  cr_expect(strstr(at_errmsg(), "mla_decode") != NULL, "%s", at_errmsg());
  at_ctx_reset(c);
  x = AT_RANDN(c, 1, 1.0, 1, 1, 8), cache = AT_ZEROS(c, 1, 4, 7);
  cr_expect(at_mla_decode(c, L.state, x, cache, 0) == NULL, "cache of the wrong width");
  at_ctx_reset(c);
  x = AT_RANDN(c, 1, 1.0, 1, 1, 8), cache = AT_ZEROS(c, 1, 4, 8);
  at_itensor *sel = at_inew(c, AT_SHAPE(1, 1, 2));
  sel->data[0] = 0, sel->data[1] = 2; /* slot 2 is after position 1 */
  cr_expect(at_mla_decode_selected(c, L.state, x, cache, 1, sel) == NULL, "a future slot");
  at_ctx_reset(c);
  x = AT_RANDN(c, 1, 1.0, 1, 1, 8), cache = AT_ZEROS(c, 1, 4, 8);
  sel = at_inew(c, AT_SHAPE(1, 1, 3));
  sel->data[0] = 1, sel->data[1] = -1, sel->data[2] = 1;
  cr_expect(at_mla_decode_selected(c, L.state, x, cache, 2, sel) == NULL, "a repeated slot");
  cr_expect(strstr(at_errmsg(), "twice") != NULL, "%s", at_errmsg());
  at_ctx_reset(c);
  /* a selection of every slot equals the full step */
  x = AT_RANDN(c, 1, 1.0, 1, 1, 8), cache = AT_ZEROS(c, 1, 4, 8);
  at_fill_normal(cache->data, cache->size, 3, 3, 0, 1);
  sel = at_inew(c, AT_SHAPE(1, 1, 5));
  const int32_t all[5] = {2, -1, 0, 3, 1};
  memcpy(sel->data, all, sizeof all);
  at_tensor *ys = at_mla_decode_selected(c, L.state, x, cache, 3, sel);
  at_tensor *yf = at_mla_decode(c, L.state, x, cache, 3);
  cr_assert(ys && yf, "%s", at_errmsg());
  AT_EXPECT_CLOSE(ys->data, yf->data, yf->size, 1e-6, "every slot selected vs all slots");
  at_ctx_reset(c);
  test_layer_free(&L);
  at_ctx_free(c);
}

static int64_t model_cache(at_model_cfg *cfg) {
  at_model *m = NULL;
  at_status st = at_model_new(cfg, 1, &m);
  cr_assert(st == AT_OK, "%s", at_errmsg());
  int64_t n = at_model_cache_per_token(m);
  cr_expect_eq(at_model_state_elems(m), 0);
  at_model_free(m);
  return n;
}

/* sparse_path §7 E5: d 128, 4 heads of 32, 4 layers; MLA d_c = 128, d_R = 16;
 * DSA adds its 16-dim index key. */
Test(mla_layer, cache_per_token_of_each_mixer) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.vocab_size = 256, cfg.max_seq_len = 64;
  cfg.d_model = 128, cfg.n_heads = 4, cfg.n_layers = 4;
  const int64_t kv[3] = {4, 2, 1}, want[3] = {1024, 512, 256};
  for (int i = 0; i < 3; i++) {
    cfg.n_kv_heads = kv[i];
    cr_expect_eq(model_cache(&cfg), want[i], "full attention with %lld kv heads", (long long)kv[i]);
  }
  cfg.n_kv_heads = 4;
  for (int l = 0; l < 4; l++) cfg.layers[l] = MIXER(mla);
  MLA_OPTS(&cfg, MIXER(mla))->kv_rank = 128;
  MLA_OPTS(&cfg, MIXER(mla))->rope_dim = 16;
  cr_expect_eq(model_cache(&cfg), 4 * (128 + 16), "mla");
  MLA_OPTS(&cfg, MIXER(mla))->common.position = AT_POS_NOPE;
  MLA_OPTS(&cfg, MIXER(mla))->rope_dim = 0;
  cr_expect_eq(model_cache(&cfg), 4 * 128, "mla NoPE");
  for (int l = 0; l < 4; l++) cfg.layers[l] = MIXER(dsa);
  MLA_OPTS(&cfg, MIXER(dsa))->kv_rank = 128;
  MLA_OPTS(&cfg, MIXER(dsa))->rope_dim = 16;
  MLA_OPTS(&cfg, MIXER(dsa))->index_dim = 16;
  cr_expect_eq(model_cache(&cfg), 4 * (128 + 16 + 16), "dsa");
  /* unresolved defaults: kv_rank 4 hd = 128, rope_dim hd / 2 = 16 */
  at_model_cfg_defaults(&cfg);
  cfg.vocab_size = 256, cfg.max_seq_len = 64;
  cfg.d_model = 128, cfg.n_heads = 4, cfg.n_kv_heads = 4, cfg.n_layers = 1;
  cfg.layers[0] = MIXER(mla);
  cr_expect_eq(model_cache(&cfg), 144, "mla defaults");
}
