/* The MLA and DSA layers against independent PyTorch layers written from the
 * DeepSeek-V2 and V3.2 papers (tests/ref/gen_mla_layers.py ->
 * tests/golden/mla_layers.h5): outputs and the gradient of every parameter
 * and of the input, at B 16, T 41, d 64, 4 heads of 16, in float on two
 * threads. MLA with query compression and decoupled RoPE, and NoPE without
 * it; DSA dense with the indexer's KL, sparse (top-k) with the KL, and
 * sparse NoPE without it: main parameters get the gradient of sum(y * dy),
 * indexer parameters that of the KL, whose value is checked too. */
#include "core/h5io.h"
#include "golden_testing.h"
#include "core/threads.h"
#include "mla_testing.h"

static int64_t attr(at_h5 *h, const char *grp, const char *name) {
  int64_t v;
  cr_assert(at_h5_get_attr_int(h, grp, name, &v) == AT_OK, "%s/%s: %s", grp, name, at_errmsg());
  return v;
}

static void check_case(at_h5 *h, const char *grp) {
  char *mixer = NULL, path[256], what[200];
  cr_assert(at_h5_get_attr_str(h, grp, "mixer", &mixer) == AT_OK);
  mla_sizes z = {.d = attr(h, grp, "d_model"), .h = attr(h, grp, "n_heads"), .hd = attr(h, grp, "head_dim"),
                 .dr = attr(h, grp, "rope_dim"), .dc = attr(h, grp, "kv_rank"), .dq = attr(h, grp, "q_rank"),
                 .hi = attr(h, grp, "index_heads"), .di = attr(h, grp, "index_dim"), .topk = attr(h, grp, "topk")};
  if (!z.hi) z.hi = 4, z.di = 16, z.topk = 32; /* mla: unused */
  at_model_cfg cfg = mla_cfg(&z);
  test_layer L = test_layer_new(&cfg, mixer_id(mixer), 1);
  for (int i = 0; i < L.p->n; i++) {
    at_tensor *t = L.p->list[i].t;
    snprintf(path, sizeof path, "%s/params/%s", grp, L.p->list[i].name + 2);
    cr_assert(at_h5_exists(h, path), "%s: no %s in the file", grp, path);
    real *v = read_exact(h, path, t->size);
    memcpy(t->data, v, (size_t)t->size * sizeof(real));
    free(v);
  }
  at_set_threads(2);
  at_ctx *c = at_ctx_new(0);
  int64_t xs[3] = {16, 41, z.d};
  snprintf(path, sizeof path, "%s/x", grp);
  real *xv = read_exact(h, path, xs[0] * xs[1] * xs[2]);
  at_tensor *x = at_from(c, xv, 3, xs);
  x->requires_grad = 1;
  at_params_zero_grad(L.p);
  int want_kl = (int)attr(h, grp, "indexer_loss");
  at_mixer_io io = {.stage = stage_of((int)attr(h, grp, "sparse"), want_kl)};
  at_tensor *y = L.impl->forward(c, L.state, x, &io);
  cr_assert(y != NULL, "%s: %s", grp, at_errmsg());
  snprintf(path, sizeof path, "%s/y", grp);
  real *yref = read_exact(h, path, y->size);
  snprintf(what, sizeof what, "%s output", grp);
  AT_EXPECT_CLOSE(y->data, yref, y->size, 1e-5, what);
  snprintf(path, sizeof path, "%s/dy", grp);
  real *dy = read_exact(h, path, y->size);
  memcpy(at_grad(c, y), dy, (size_t)y->size * sizeof(real));
  cr_assert((io.aux_loss != NULL) == want_kl, "%s: an indexer loss %s", grp, want_kl ? "missing" : "without asking");
  if (want_kl) {
    double kl;
    cr_assert(at_h5_get_attr_double(h, grp, "kl", &kl) == AT_OK);
    cr_expect(fabs(io.aux_loss->data[0] - kl) <= 1e-5 * kl, "%s: kl %.9g vs %.9g", grp,
              (double)io.aux_loss->data[0], kl);
    at_grad(c, io.aux_loss)[0] = 1;
  }
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  snprintf(path, sizeof path, "%s/dx", grp);
  real *dx = read_exact(h, path, x->size);
  snprintf(what, sizeof what, "%s dx", grp);
  AT_EXPECT_CLOSE(x->grad, dx, x->size, 1e-5, what);
  for (int i = 0; i < L.p->n; i++) {
    at_tensor *t = L.p->list[i].t;
    snprintf(path, sizeof path, "%s/grads/%s", grp, L.p->list[i].name + 2);
    real *g = read_exact(h, path, t->size);
    snprintf(what, sizeof what, "%s d%s", grp, L.p->list[i].name);
    AT_EXPECT_CLOSE(t->grad, g, t->size, 2e-5, what);
    free(g);
  }
  free(xv), free(yref), free(dy), free(dx), free(mixer);
  at_ctx_free(c);
  test_layer_free(&L);
}

Test(mla_golden, layers_match_pytorch) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/mla_layers.h5", AT_SOURCE_DIR);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  char **cases;
  int n;
  cr_assert(at_h5_list(h, "/", &cases, &n) == AT_OK, "%s", at_errmsg());
  cr_expect_eq(n, 5, "%d cases", n);
  for (int i = 0; i < n; i++) check_case(h, cases[i]);
  at_h5_free_list(cases, n);
  at_h5_close(h);
}
