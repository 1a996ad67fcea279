/* tests/testing.h: helpers shared by the Criterion suites. */
#ifndef AT_TESTING_H
#define AT_TESTING_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "core/rng.h"

/* Removes a test's mkdtemp directory (only one under /tmp/attnlab_, with
 * nothing in its name a shell would read; "" does nothing). */
static inline void at_test_rmdir(const char *dir) {
  if (!dir[0]) return;
  const char *safe = "/_-.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  cr_assert(strncmp(dir, "/tmp/attnlab_", 13) == 0 && strspn(dir, safe) == strlen(dir), "not a test directory: %s",
            dir);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_expect(system(cmd) == 0, "%s", cmd);
}

/* Relative error ||a - b|| / max(||b||, floor) of two arrays. */
static inline double at_test_rel_err(const real *a, const real *b, int64_t n) {
  double d = 0, r = 0;
  for (int64_t i = 0; i < n; i++) {
    double x = (double)a[i] - (double)b[i];
    d += x * x;
    r += (double)b[i] * (double)b[i];
  }
  double e = sqrt(d) / fmax(sqrt(r), 1e-30);
  return isfinite(e) ? e : INFINITY;
}

/* Index of the largest |a - b|. */
static inline int64_t at_test_worst(const real *a, const real *b, int64_t n) {
  int64_t w = 0;
  double m = -1;
  for (int64_t i = 0; i < n; i++) {
    double x = fabs((double)a[i] - (double)b[i]);
    if (!(x <= m)) m = x, w = i; /* NaN counts as worst */
  }
  return w;
}

/* Fails once, naming the worst element, if rel_err(a, b) > tol. */
#define AT_EXPECT_CLOSE(a, b, n, tol, what)                                                  \
  do {                                                                                       \
    double e_ = at_test_rel_err((a), (b), (n));                                              \
    int64_t w_ = at_test_worst((a), (b), (n));                                               \
    cr_expect(e_ <= (tol), "%s: relative error %.3g > %.3g (worst at %lld: %.9g vs %.9g)",  \
              (what), e_, (double)(tol), (long long)w_, (double)(a)[w_], (double)(b)[w_]); \
  } while (0)

/* Gradient check with the project's bar (relative error < 1e-6). */
#define AT_GRADCHECK(c, fn, inputs, n, user, what)                                           \
  do {                                                                                       \
    at_gc_result r_;                                                                         \
    at_status s_ = at_gradcheck((c), (fn), (inputs), (n), (user), 1e-6, &r_);               \
    cr_assert(s_ == AT_OK, "%s: gradcheck failed to run: %s", (what), at_errmsg());          \
    cr_expect(r_.max_rel_err < 1e-6,                                                         \
              "%s: gradient relative error %.3g on input %d (|analytic| %.6g, |numeric| %.6g)", \
              (what), r_.max_rel_err, r_.worst_input, r_.analytic_norm, r_.numeric_norm);   \
    cr_expect(r_.n_checked > 0, "%s: nothing was checked", (what));                          \
  } while (0)

/* A leaf tensor (requires grad) of normal(0, std) values. */
static inline at_tensor *at_test_randn(at_ctx *c, uint64_t seed, double std, int ndim,
                                       const int64_t *shape) {
  at_tensor *t = at_new(c, ndim, shape);
  cr_assert(t != NULL);
  at_fill_normal(t->data, t->size, seed, 99, 0.0, std);
  t->requires_grad = 1;
  return t;
}
#define AT_RANDN(c, seed, std, ...) at_test_randn((c), (seed), (std), AT_SHAPE(__VA_ARGS__))

/* A leaf tensor of uniform(lo, hi) values. */
static inline at_tensor *at_test_rand(at_ctx *c, uint64_t seed, double lo, double hi, int ndim,
                                      const int64_t *shape) {
  at_tensor *t = at_new(c, ndim, shape);
  cr_assert(t != NULL);
  at_fill_uniform(t->data, t->size, seed, 98, lo, hi);
  t->requires_grad = 1;
  return t;
}
#define AT_RAND(c, seed, lo, hi, ...) at_test_rand((c), (seed), (lo), (hi), AT_SHAPE(__VA_ARGS__))

/* Causality checks over [B, T, row] arrays (a sequence op's inputs and
 * outputs). Outputs a (before) and p (after changing the inputs at tp): the
 * rows before tp equal bit for bit, and some value at tp differs. */
static inline void at_test_causal_outputs(const real *a, const real *p, int64_t B, int64_t T, int64_t row,
                                          int64_t tp, int *same_before, int *differs_at) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t <= tp; t++)
      for (int64_t j = 0; j < row; j++) {
        int64_t i = (b * T + t) * row + j;
        if (t < tp) *same_before &= a[i] == p[i];
        else *differs_at |= a[i] != p[i];
      }
}

/* A gradient g with the output gradient zero from t0 on: exactly zero from
 * t0 on, and not all zero before (flags accumulate over calls). */
static inline void at_test_causal_grad(const real *g, int64_t B, int64_t T, int64_t row, int64_t t0,
                                       int *zero_after, int *nonzero_before) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t j = 0; j < row; j++) {
        real x = g[(b * T + t) * row + j];
        if (t >= t0) *zero_after &= x == 0;
        else *nonzero_before |= x != 0;
      }
}

/* Zeroes the rows t >= t0 of a [B, T, row] array. */
static inline void at_test_zero_from(real *x, int64_t B, int64_t T, int64_t row, int64_t t0) {
  for (int64_t b = 0; b < B; b++) memset(x + (b * T + t0) * row, 0, (size_t)((T - t0) * row) * sizeof(real));
}

#endif
