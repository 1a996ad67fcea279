/* ops/ in the float library: results (forward values and every gradient) are
 * bit-identical with 1 and 2 threads on sizes large enough to run in
 * parallel, the functions built on e^x stay finite for huge |x| in float,
 * and the vectorisable exp (core/fastmath.h) is accurate over its range,
 * 0 at -inf and NaN at NaN. */
#include <stdlib.h>
#include <string.h>

#include "core/fastmath.h"
#include "core/threads.h"
#include "ops/ops.h"
#include "testing.h"

typedef struct run_out {
  real *buf;
  int64_t n;
} run_out;

/* Appends a tensor's values (or zeros when NULL) to the collected output. */
static void collect(run_out *o, const real *x, int64_t n) {
  o->buf = realloc(o->buf, (size_t)(o->n + n) * sizeof(real));
  cr_assert(o->buf);
  if (x) memcpy(o->buf + o->n, x, (size_t)n * sizeof(real));
  else memset(o->buf + o->n, 0, (size_t)n * sizeof(real));
  o->n += n;
}

typedef at_tensor *(*case_fn)(at_ctx *c, at_tensor **leaves, int *n_leaves);

/* Builds the case, seeds the output gradient, runs backward, collects the
 * output and every leaf gradient. */
static run_out run_case(case_fn f, int threads) {
  at_set_threads(threads);
  at_ctx *c = at_ctx_new(4 << 20);
  at_tensor *leaves[8];
  int nl = 0;
  at_tensor *y = f(c, leaves, &nl);
  cr_assert(y, "%s", at_errmsg());
  real *g = at_grad(c, y);
  at_fill_uniform(g, y->size, 77, 1, -1, 1);
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  run_out o = {NULL, 0};
  collect(&o, y->data, y->size);
  for (int i = 0; i < nl; i++) collect(&o, leaves[i]->grad, leaves[i]->size);
  at_ctx_free(c);
  at_set_threads(1);
  return o;
}

static at_tensor *keep(at_tensor **leaves, int *nl, at_tensor *t) {
  leaves[(*nl)++] = t;
  return t;
}
#define LEAF(seed, ...) keep(leaves, nl, AT_RANDN(c, (seed), 1, __VA_ARGS__))

static at_tensor *c_suffix(at_ctx *c, at_tensor **leaves, int *nl) {
  return at_mul(c, LEAF(1, 16, 64, 48), LEAF(2, 48));
}
static at_tensor *c_general(at_ctx *c, at_tensor **leaves, int *nl) {
  return at_div(c, LEAF(3, 8, 1, 64, 80), at_exp(c, LEAF(4, 8, 9, 1, 80)));
}
static at_tensor *c_same(at_ctx *c, at_tensor **leaves, int *nl) {
  return at_gelu(c, at_sub(c, LEAF(5, 300, 130), LEAF(6, 300, 130)));
}
static at_tensor *c_reduce(at_ctx *c, at_tensor **leaves, int *nl) {
  at_tensor *x = LEAF(7, 40, 50, 30);
  return at_add(c, at_sum(c, x, 0, 1), at_mean(c, x, 1, 1));
}
static at_tensor *c_sum_all(at_ctx *c, at_tensor **leaves, int *nl) {
  return at_sum_all(c, at_permute(c, LEAF(8, 10, 20, 30, 40), (const int[]){3, 1, 0, 2}));
}
static at_tensor *c_embedding(at_ctx *c, at_tensor **leaves, int *nl) {
  at_itensor *ids = at_inew(c, AT_SHAPE(4, 500));
  for (int i = 0; i < 2000; i++) ids->data[i] = (i * 7) % 13; /* many repeats */
  return at_embedding(c, LEAF(9, 13, 64), ids);
}
static at_tensor *c_gather_scatter(at_ctx *c, at_tensor **leaves, int *nl) {
  at_itensor *idx = at_inew(c, AT_SHAPE(8, 300, 40));
  for (int64_t i = 0; i < idx->size; i++) idx->data[i] = (int32_t)((i * 31) % 17);
  at_tensor *g = at_gather(c, LEAF(10, 8, 17, 40), 1, idx);
  return at_scatter_add(c, LEAF(11, 8, 17, 40), 1, idx, g);
}
static at_tensor *c_norms(at_ctx *c, at_tensor **leaves, int *nl) {
  at_tensor *x = LEAF(12, 700, 96);
  at_tensor *a = at_rmsnorm(c, x, LEAF(13, 96), 1e-6);
  at_tensor *b = at_layernorm(c, x, LEAF(14, 96), LEAF(15, 96), 1e-5);
  return at_add(c, at_l2norm(c, a, 1e-6), b);
}
static at_tensor *c_softmax(at_ctx *c, at_tensor **leaves, int *nl) {
  at_tensor *m = AT_ZEROS(c, 64, 64);
  for (int i = 0; i < 64; i++)
    for (int j = i + 1; j < 64; j++) m->data[i * 64 + j] = -INFINITY;
  at_tensor *x = LEAF(16, 2, 4, 64, 64);
  return at_add(c, at_softmax(c, x, m), at_log_softmax(c, x, NULL));
}
static at_tensor *c_sequence(at_ctx *c, at_tensor **leaves, int *nl) {
  at_tensor *x = at_rope(c, LEAF(17, 4, 128, 4, 32), 32, 1e4, 0);
  at_tensor *y = at_conv1d_causal(c, AT_RESHAPE(c, x, 4, 128, 128), LEAF(18, 128, 4),
                                  LEAF(19, 128));
  return at_cumsum(c, y, 1);
}
static at_tensor *c_loss(at_ctx *c, at_tensor **leaves, int *nl) {
  at_itensor *l = at_inew(c, AT_SHAPE(512));
  for (int i = 0; i < 512; i++) l->data[i] = i % 9 == 0 ? -1 : (i * 13) % 100;
  return at_cross_entropy(c, at_scale(c, LEAF(20, 512, 100), 3), l, -1, NULL, NULL);
}

Test(ops_float, same_bits_with_one_and_two_threads) {
  const struct { const char *name; case_fn f; } cases[] = {
    {"mul suffix", c_suffix}, {"div general", c_general}, {"sub+gelu", c_same},
    {"sum/mean dim", c_reduce}, {"permute+sum_all", c_sum_all}, {"embedding", c_embedding},
    {"gather+scatter_add", c_gather_scatter}, {"norms", c_norms}, {"softmax", c_softmax},
    {"rope+conv+cumsum", c_sequence}, {"cross_entropy", c_loss},
  };
  for (int k = 0; k < AT_ARRAY_LEN(cases); k++) {
    run_out a = run_case(cases[k].f, 1), b = run_case(cases[k].f, 2);
    cr_expect(a.n == b.n && memcmp(a.buf, b.buf, (size_t)a.n * sizeof(real)) == 0,
              "%s: results differ between 1 and 2 threads", cases[k].name);
    free(a.buf), free(b.buf);
  }
}

Test(ops_float, huge_inputs_stay_finite) {
  at_ctx *c = at_ctx_new(0);
  real xv[] = {-3e38f, -1e30f, -1e13f, -200, -90, 90, 200, 1e13f, 1e30f, 3e38f};
  const int n = AT_ARRAY_LEN(xv);
  at_tensor *(*fs[])(at_ctx *, at_tensor *) = {at_sigmoid, at_logsigmoid, at_softplus,
                                               at_silu, at_gelu, at_tanh};
  const char *names[] = {"sigmoid", "logsigmoid", "softplus", "silu", "gelu", "tanh"};
  for (int k = 0; k < AT_ARRAY_LEN(fs); k++) {
    at_tensor *x = at_leaf(c, xv, AT_SHAPE(n));
    at_tensor *y = fs[k](c, x);
    for (int i = 0; i < n; i++) at_grad(c, y)[i] = 1;
    cr_assert(at_backward_from_seeded(c) == AT_OK);
    for (int i = 0; i < n; i++) {
      cr_expect(isfinite(y->data[i]), "%s(%g) = %g", names[k], xv[i], y->data[i]);
      cr_expect(isfinite(x->grad[i]), "%s'(%g) = %g", names[k], xv[i], x->grad[i]);
    }
    at_ctx_reset(c);
  }
  at_tensor *x = at_leaf(c, xv, AT_SHAPE(n));
  at_tensor *e = at_elu(c, x, 1.0);
  cr_expect(e->data[0] == -1 && e->data[n - 1] == xv[n - 1]);
  /* softmax and cross-entropy on logits far beyond exp's range */
  real zv[] = {1e30f, 1e30f, -1e30f, 3e4f, 0, -3e4f};
  at_tensor *z = at_leaf(c, zv, AT_SHAPE(2, 3));
  at_tensor *s = at_softmax(c, z, NULL);
  cr_expect(s->data[0] == 0.5f && s->data[1] == 0.5f && s->data[2] == 0 && s->data[3] == 1);
  at_itensor *l = at_inew(c, AT_SHAPE(2));
  l->data[0] = 0, l->data[1] = 1;
  at_tensor *ce = at_cross_entropy(c, z, l, -1, NULL, NULL);
  cr_expect(fabsf(ce->data[0] - (logf(2) + 3e4f) / 2) < 1e-3f, "ce = %g", ce->data[0]);
  cr_assert(at_backward(c, ce) == AT_OK);
  cr_expect(at_all_finite(z->grad, 6));
  /* row 0: (1/2)(p - onehot) with p = (1/2, 1/2, 0) */
  cr_expect(z->grad[0] == -0.25f && z->grad[1] == 0.25f && z->grad[2] == 0, "%g %g %g",
            z->grad[0], z->grad[1], z->grad[2]);
  at_tensor *ls = at_log_softmax(c, z, NULL);
  cr_expect(fabsf(ls->data[0] + logf(2)) < 1e-6f && fabsf(ls->data[1] + logf(2)) < 1e-6f,
            "log_softmax keeps log 2 next to 1e30: %g", ls->data[0]);
  cr_expect(ls->data[2] == -2e30f && ls->data[3] == 0);
  at_ctx_free(c);
}

Test(ops_float, fast_exp_accuracy_and_edges) {
  double worst = 0;
  for (int i = 0; i <= 200000; i++) {
    float x = -87.0f + 175.0f * (float)i / 200000; /* [-87, 88] */
    double ref = exp((double)x), rel = fabs((double)at_expr(x) - ref) / ref;
    if (rel > worst) worst = rel;
  }
  cr_expect(worst < 5e-7, "worst relative error %g", worst);
  cr_expect(at_expr(-INFINITY) == 0 && at_expr(-1e30f) == 0 && at_expr(-88) == 0);
  cr_expect(isfinite(at_expr(INFINITY)) && isfinite(at_expr(1e30f)) && at_expr(89) > 1e38f);
  cr_expect(isnan(at_expr(NAN)) && isnan(at_expr(-NAN)));
  cr_expect(at_expr(0) == 1);
}

/* log1p on [0, 1] (what softplus and log-sigmoid give it) within a few ulp of
 * the double log1p, relative, down to subnormal u; NaN propagates. */
Test(ops_float, fast_log1p_accuracy_and_edges) {
  double worst = 0;
  for (int i = 0; i <= 200000; i++) {
    float u = (float)i / 200000;
    double ref = log1p((double)u), rel = u ? fabs((double)at_log1p_unit(u) - ref) / ref : 0;
    if (rel > worst) worst = rel;
  }
  for (float u = 1e-30f; u < 1e-3f; u *= 1.7f) {
    double rel = fabs((double)at_log1p_unit(u) - log1p((double)u)) / log1p((double)u);
    if (rel > worst) worst = rel;
  }
  cr_expect(worst < 4e-7, "worst relative error %g", worst);
  cr_expect(at_log1p_unit(0) == 0 && fabsf(at_log1p_unit(1) - logf(2)) < 1e-7f);
  cr_expect(isnan(at_log1p_unit(NAN)));
}
