/* tests/dplr_testing.h: inputs, runs and comparisons shared by the float
 * suites of the gla / dplr ops (test_dplr.c, test_dplr_golden.c). */
#ifndef AT_DPLR_TESTING_H
#define AT_DPLR_TESTING_H

#include <stdlib.h>
#include <string.h>

#include "ops/attention/dplr.h"
#include "testing.h"

/* One problem: inputs and output gradients in plain malloc'ed arrays. */
typedef struct dp_data {
  int lowrank; /* 1: dplr, 0: gla */
  int64_t B, T, H, K, V;
  double scale;     /* 0: K^-1/2 */
  real *x[7];       /* q k v a b gk h0 (NULL when absent) */
  real *d_o, *d_ht; /* gradients seeded into o and the final state */
} dp_data;

enum { DQ, DK, DV, DA, DB, DG, DH0, DN_IN };
static const char *const dp_in_names[DN_IN] = {"q", "k", "v", "a", "b", "gk", "initial_state"};

typedef struct dp_result {
  real *o, *ht, *dx[DN_IN];
} dp_result;

static inline const char *dp_name(const dp_data *d) { return d->lowrank ? "dplr" : "gla"; }

static inline int dp_in_shape(const dp_data *d, int i, int64_t *shape) {
  int64_t s[4] = {d->B, d->T, d->H, i == DV ? d->V : d->K};
  if (i == DH0) s[1] = d->H, s[2] = d->K, s[3] = d->V;
  memcpy(shape, s, sizeof s);
  return 4;
}

static inline int64_t dp_in_size(const dp_data *d, int i) {
  int64_t s[4];
  dp_in_shape(d, i, s);
  return s[0] * s[1] * s[2] * s[3];
}

static inline int64_t dp_o_size(const dp_data *d) { return d->B * d->T * d->H * d->V; }
static inline int64_t dp_h_size(const dp_data *d) { return d->B * d->H * d->K * d->V; }

static inline real *dp_randn(int64_t n, uint64_t seed, double std) {
  real *x = malloc((size_t)n * sizeof(real));
  at_fill_normal(x, n, seed, 11, 0, std);
  return x;
}

static inline void dp_l2norm_rows(real *x, int64_t rows, int64_t D) {
  for (int64_t r = 0; r < rows; r++) {
    double s = 0;
    for (int64_t d = 0; d < D; d++) s += (double)x[r * D + d] * x[r * D + d];
    for (int64_t d = 0; d < D; d++) x[r * D + d] = (real)(x[r * D + d] / sqrt(s + 1e-12));
  }
}

/* Random inputs as the layers produce them: q, k normal rows of norm ~1, v
 * normal, gk uniform in [g_lo, g_hi]; dplr as RWKV-7: a = -kappa with kappa
 * a unit row, b = kappa ⊙ alpha with alpha uniform in (0.05, 0.95); h0
 * normal (when use_h0); d_o and d_ht normal. */
static inline dp_data dp_make(int lowrank, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V,
                              double g_lo, double g_hi, int use_h0, uint64_t seed) {
  dp_data d = {lowrank, B, T, H, K, V, 0, {0}, 0, 0};
  int64_t nk = dp_in_size(&d, DQ), rows = B * T * H;
  d.x[DQ] = dp_randn(nk, seed + 1, 1);
  d.x[DK] = dp_randn(nk, seed + 2, 1);
  dp_l2norm_rows(d.x[DQ], rows, K);
  dp_l2norm_rows(d.x[DK], rows, K);
  d.x[DV] = dp_randn(dp_in_size(&d, DV), seed + 3, 1);
  d.x[DG] = malloc((size_t)nk * sizeof(real));
  at_fill_uniform(d.x[DG], nk, seed + 4, 11, g_lo, g_hi);
  if (lowrank) {
    real *kappa = dp_randn(nk, seed + 5, 1), *alpha = malloc((size_t)nk * sizeof(real));
    dp_l2norm_rows(kappa, rows, K);
    at_fill_uniform(alpha, nk, seed + 6, 11, 0.05, 0.95);
    d.x[DA] = malloc((size_t)nk * sizeof(real));
    d.x[DB] = malloc((size_t)nk * sizeof(real));
    for (int64_t i = 0; i < nk; i++) d.x[DA][i] = -kappa[i], d.x[DB][i] = kappa[i] * alpha[i];
    free(kappa), free(alpha);
  }
  if (use_h0) d.x[DH0] = dp_randn(dp_h_size(&d), seed + 7, 1);
  d.d_o = dp_randn(dp_o_size(&d), seed + 8, 1);
  d.d_ht = dp_randn(dp_h_size(&d), seed + 9, 1);
  return d;
}

static inline void dp_data_free(dp_data *d) {
  for (int i = 0; i < DN_IN; i++) free(d->x[i]);
  free(d->d_o);
  free(d->d_ht);
}

static inline void dp_result_free(dp_result *r) {
  free(r->o);
  free(r->ht);
  for (int i = 0; i < DN_IN; i++) free(r->dx[i]);
}

static inline real *dp_copy(const real *x, int64_t n) {
  real *y = malloc((size_t)n * sizeof(real));
  memcpy(y, x, (size_t)n * sizeof(real));
  return y;
}

static inline at_tensor *dp_call(at_ctx *c, const dp_data *d, at_tensor **in, at_tensor **ht,
                                 const at_lin_opts *o) {
  if (d->lowrank) return at_dplr(c, in[DQ], in[DK], in[DV], in[DA], in[DB], in[DG], in[DH0], ht, o);
  return at_gla(c, in[DQ], in[DK], in[DV], in[DG], in[DH0], ht, o);
}

/* Forward and backward (gradients of sum(o d_o) + sum(ht d_ht)). */
static inline dp_result dp_run(const dp_data *d, at_lin_form form, int64_t chunk) {
  at_ctx *c = at_ctx_new(1 << 20);
  at_tensor *in[DN_IN] = {0};
  for (int i = 0; i < DN_IN; i++)
    if (d->x[i]) {
      int64_t shape[4];
      int nd = dp_in_shape(d, i, shape);
      in[i] = at_leaf(c, d->x[i], nd, shape);
    }
  at_lin_opts opts = {d->scale, chunk, form};
  at_tensor *ht = NULL;
  at_tensor *o = dp_call(c, d, in, &ht, &opts);
  cr_assert(o && ht, "%s forward failed: %s", dp_name(d), at_errmsg());
  dp_result r = {dp_copy(o->data, o->size), dp_copy(ht->data, ht->size), {0}};
  memcpy(at_grad(c, o), d->d_o, (size_t)o->size * sizeof(real));
  memcpy(at_grad(c, ht), d->d_ht, (size_t)ht->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "backward: %s", at_errmsg());
  for (int i = 0; i < DN_IN; i++)
    if (in[i]) {
      cr_assert(in[i]->grad != NULL, "no gradient for %s", dp_in_names[i]);
      r.dx[i] = dp_copy(in[i]->grad, in[i]->size);
    }
  at_ctx_free(c);
  return r;
}

/* The step form token by token: o and the final state (no gradients). */
static inline dp_result dp_run_steps(const dp_data *d) {
  at_ctx *c = at_ctx_new(1 << 20);
  const int64_t B = d->B, T = d->T, H = d->H;
  at_tensor *state = AT_ZEROS(c, B, H, d->K, d->V);
  if (d->x[DH0]) memcpy(state->data, d->x[DH0], (size_t)state->size * sizeof(real));
  dp_result r = {malloc((size_t)dp_o_size(d) * sizeof(real)), NULL, {0}};
  at_lin_opts opts = {d->scale, 0, AT_LIN_CHUNK};
  for (int64_t t = 0; t < T; t++) {
    at_ctx_mark m = at_ctx_get_mark(c);
    at_tensor *tok[DG + 1] = {0};
    for (int i = 0; i <= DG; i++) {
      if (!d->x[i]) continue;
      int64_t row = H * (i == DV ? d->V : d->K); /* elements per (b, t) */
      tok[i] = AT_NEW(c, B, 1, H, row / H);
      for (int64_t b = 0; b < B; b++)
        memcpy(tok[i]->data + b * row, d->x[i] + (b * T + t) * row, (size_t)row * sizeof(real));
    }
    at_tensor *o = d->lowrank
                       ? at_dplr_step(c, tok[DQ], tok[DK], tok[DV], tok[DA], tok[DB], tok[DG], state, &opts)
                       : at_gla_step(c, tok[DQ], tok[DK], tok[DV], tok[DG], state, &opts);
    cr_assert(o, "step: %s", at_errmsg());
    for (int64_t b = 0; b < B; b++)
      memcpy(r.o + (b * T + t) * H * d->V, o->data + b * H * d->V, (size_t)(H * d->V) * sizeof(real));
    at_ctx_rewind(c, m);
  }
  r.ht = dp_copy(state->data, state->size);
  at_ctx_free(c);
  return r;
}

static inline int dp_all_finite(const dp_data *d, const dp_result *r) {
  int ok = at_all_finite(r->o, dp_o_size(d)) && at_all_finite(r->ht, dp_h_size(d));
  for (int i = 0; i < DN_IN; i++)
    if (r->dx[i]) ok &= at_all_finite(r->dx[i], dp_in_size(d, i));
  return ok;
}

/* Expects a ≈ b: outputs within tol_out, gradients within tol_grad. */
static inline void dp_expect_close(const dp_data *d, const dp_result *a, const dp_result *b,
                                   double tol_out, double tol_grad, const char *what) {
  char w[256];
  snprintf(w, sizeof w, "%s: o", what);
  AT_EXPECT_CLOSE(a->o, b->o, dp_o_size(d), tol_out, w);
  snprintf(w, sizeof w, "%s: final state", what);
  AT_EXPECT_CLOSE(a->ht, b->ht, dp_h_size(d), tol_out, w);
  for (int i = 0; i < DN_IN; i++)
    if (a->dx[i] && b->dx[i]) {
      snprintf(w, sizeof w, "%s: d%s", what, dp_in_names[i]);
      AT_EXPECT_CLOSE(a->dx[i], b->dx[i], dp_in_size(d, i), tol_grad, w);
    }
}

#endif
