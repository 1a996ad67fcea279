/* ops/: shapes large enough to cross the kernels' internal blocks (row
 * chunks of 256 for column sums, column blocks of 16/64/256), where the
 * gradchecks' small shapes use one block only: forward values and gradients
 * against naive loops written here. */
#include <stdlib.h>

#include "ops/ops.h"
#include "testing.h"

/* Seeds d(out) with fixed values in [-1, 1) and runs backward. */
static const real *seed_and_backward(at_ctx *c, at_tensor *y) {
  real *g = at_grad(c, y);
  cr_assert(g);
  at_fill_uniform(g, y->size, 5, 5, -1, 1);
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  return g;
}

static void expect_close(const real *got, const double *want, int64_t n, const char *what) {
  real *w = malloc((size_t)n * sizeof(real));
  for (int64_t i = 0; i < n; i++) w[i] = (real)want[i];
  AT_EXPECT_CLOSE(got, w, n, 1e-12, what);
  free(w);
}

Test(blocks, suffix_operand_gradients_over_many_rows) {
  at_ctx *c = at_ctx_new(0);
  const int64_t rows = 600, m = 5;
  for (int op = 0; op < 3; op++) { /* mul (small b), div (small b), sub (small a) */
    at_tensor *big = AT_RANDN(c, 1, 1, rows, m), *small = AT_RAND(c, 2, 0.5, 1.5, m);
    at_tensor *y = op == 0 ? at_mul(c, big, small) : op == 1 ? at_div(c, big, small)
                                                              : at_sub(c, small, big);
    const real *g = seed_and_backward(c, y);
    double ds[5] = {0};
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < m; j++) {
        double gv = g[r * m + j], a = big->data[r * m + j], b = small->data[j];
        ds[j] += op == 0 ? gv * a : op == 1 ? -gv * a / (b * b) : gv;
      }
    expect_close(small->grad, ds, m, "suffix operand gradient");
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

Test(blocks, norm_weight_gradients_over_many_rows) {
  at_ctx *c = at_ctx_new(0);
  const int64_t rows = 600, d = 7;
  for (int kind = 0; kind < 2; kind++) {
    at_tensor *x = AT_RANDN(c, 3, 1, 3, rows / 3, d), *w = AT_RAND(c, 4, 0.5, 1.5, d);
    at_tensor *b = AT_RANDN(c, 5, 1, d);
    at_tensor *h = kind ? at_layernorm(c, x, NULL, NULL, 1e-5) : at_rmsnorm(c, x, NULL, 1e-6);
    at_tensor *y = kind ? at_layernorm(c, x, w, b, 1e-5) : at_rmsnorm(c, x, w, 1e-6);
    const real *g = seed_and_backward(c, y);
    double dw[7] = {0}, db[7] = {0};
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < d; j++) {
        dw[j] += (double)g[r * d + j] * h->data[r * d + j];
        db[j] += g[r * d + j];
      }
    expect_close(w->grad, dw, d, kind ? "layernorm dw" : "rmsnorm dw");
    if (kind) expect_close(b->grad, db, d, "layernorm db");
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

Test(blocks, conv1d_over_many_rows) {
  at_ctx *c = at_ctx_new(0);
  const int64_t nb = 3, t_len = 200, ch = 5, k = 4;
  at_tensor *x = AT_RANDN(c, 6, 1, nb, t_len, ch), *w = AT_RANDN(c, 7, 1, ch, k);
  at_tensor *bias = AT_RANDN(c, 8, 1, ch);
  at_tensor *y = at_conv1d_causal(c, x, w, bias);
  const real *g = seed_and_backward(c, y);
  double *yw = calloc((size_t)x->size, sizeof(double)), *dx = calloc((size_t)x->size, sizeof(double));
  double dw[20] = {0}, db[5] = {0};
  for (int64_t b = 0; b < nb; b++)
    for (int64_t t = 0; t < t_len; t++)
      for (int64_t i = 0; i < ch; i++) {
        int64_t o = (b * t_len + t) * ch + i;
        yw[o] = bias->data[i];
        db[i] += g[o];
        for (int64_t j = 0; j < k; j++) {
          int64_t s = t - k + 1 + j;
          if (s < 0) continue;
          int64_t xi = (b * t_len + s) * ch + i;
          yw[o] += w->data[i * k + j] * x->data[xi];
          dw[i * k + j] += (double)g[o] * x->data[xi];
          dx[xi] += (double)g[o] * w->data[i * k + j];
        }
      }
  expect_close(y->data, yw, x->size, "conv y");
  expect_close(x->grad, dx, x->size, "conv dx");
  expect_close(w->grad, dw, ch * k, "conv dw");
  expect_close(bias->grad, db, ch, "conv dbias");
  free(yw), free(dx);
  at_ctx_free(c);
}

Test(blocks, embedding_gather_scatter_wide_rows) {
  at_ctx *c = at_ctx_new(0);
  /* embedding: D = 40 spans three column blocks */
  const int64_t v = 7, d = 40, n = 300;
  at_tensor *table = AT_RANDN(c, 9, 1, v, d);
  at_itensor *ids = at_inew(c, AT_SHAPE(n));
  for (int64_t p = 0; p < n; p++) ids->data[p] = (int32_t)((p * p + 3) % v);
  const real *g = seed_and_backward(c, at_embedding(c, table, ids));
  double dt[7 * 40] = {0};
  for (int64_t p = 0; p < n; p++)
    for (int64_t j = 0; j < d; j++) dt[ids->data[p] * d + j] += g[p * d + j];
  expect_close(table->grad, dt, v * d, "embedding dtable");
  at_ctx_reset(c);
  /* gather / scatter_add along dim 1 of [2, 9, 40] with 30 indices per column */
  at_tensor *x = AT_RANDN(c, 10, 1, 2, 9, 40), *src = AT_RANDN(c, 11, 1, 2, 30, 40);
  at_itensor *idx = at_inew(c, AT_SHAPE(2, 30, 40));
  for (int64_t i = 0; i < idx->size; i++) idx->data[i] = (int32_t)((i * 7 + i / 40) % 9);
  at_tensor *gt = at_gather(c, x, 1, idx);
  at_tensor *sc = at_scatter_add(c, x, 1, idx, src);
  at_tensor *y = at_add(c, at_sum_all(c, at_mul(c, gt, src)), at_sum_all(c, at_square(c, sc)));
  cr_assert(at_backward(c, y) == AT_OK);
  /* naive: y = sum gt*src + sum sc^2 */
  double *scw = malloc(720 * sizeof(double)), *dx = calloc(720, sizeof(double));
  double *dsrc = calloc(2400, sizeof(double));
  for (int i = 0; i < 720; i++) scw[i] = x->data[i];
  for (int64_t o = 0; o < 2; o++)
    for (int64_t j = 0; j < 30; j++)
      for (int64_t i = 0; i < 40; i++) {
        int64_t e = (o * 30 + j) * 40 + i, xi = (o * 9 + idx->data[e]) * 40 + i;
        scw[xi] += src->data[e];
        cr_expect(gt->data[e] == x->data[xi]);
      }
  for (int i = 0; i < 720; i++) dx[i] = 2 * scw[i];
  for (int64_t o = 0; o < 2; o++)
    for (int64_t j = 0; j < 30; j++)
      for (int64_t i = 0; i < 40; i++) {
        int64_t e = (o * 30 + j) * 40 + i, xi = (o * 9 + idx->data[e]) * 40 + i;
        dx[xi] += src->data[e];                    /* from gather */
        dsrc[e] = x->data[xi] + 2 * scw[xi];       /* from the product and the scatter */
      }
  expect_close(sc->data, scw, 720, "scatter_add values");
  expect_close(x->grad, dx, 720, "gather/scatter dx");
  expect_close(src->grad, dsrc, 2400, "scatter dsrc");
  free(scw), free(dx), free(dsrc);
  at_ctx_free(c);
}

Test(blocks, sum_and_cumsum_wide_inner) {
  at_ctx *c = at_ctx_new(0);
  /* sum over dim 0 of [5, 300]: inner 300 spans two blocks */
  at_tensor *x = AT_RANDN(c, 12, 1, 5, 300);
  at_tensor *s = at_sum(c, x, 0, 0);
  double sw[300] = {0};
  for (int r = 0; r < 5; r++)
    for (int i = 0; i < 300; i++) sw[i] += x->data[r * 300 + i];
  expect_close(s->data, sw, 300, "sum dim 0");
  /* cumsum over dim 0 of [50, 70]: inner 70 spans two blocks */
  at_tensor *z = AT_RANDN(c, 13, 1, 50, 70);
  at_tensor *cs = at_cumsum(c, z, 0);
  const real *g = seed_and_backward(c, cs);
  double *cw = malloc(3500 * sizeof(double)), *dz = malloc(3500 * sizeof(double));
  for (int i = 0; i < 70; i++) {
    double a = 0, b = 0;
    for (int r = 0; r < 50; r++) a += z->data[r * 70 + i], cw[r * 70 + i] = a;
    for (int r = 49; r >= 0; r--) b += g[r * 70 + i], dz[r * 70 + i] = b;
  }
  expect_close(cs->data, cw, 3500, "cumsum");
  expect_close(z->grad, dz, 3500, "cumsum dz");
  free(cw), free(dz);
  at_ctx_free(c);
}
