/* tests/lin_testing.h: inputs, runs and comparisons shared by the float
 * suites of the linear-attention ops (test_delta.c, test_delta_golden.c). */
#ifndef AT_LIN_TESTING_H
#define AT_LIN_TESTING_H

#include <stdlib.h>
#include <string.h>

#include "ops/attention/delta.h"
#include "testing.h"

/* One problem: inputs and output gradients in plain malloc'ed arrays. */
typedef struct lin_data {
  at_lin_kind kind;
  int64_t B, T, H, K, V;
  real *x[6];       /* q k v g beta h0 (NULL when absent) */
  real *d_o, *d_ht; /* gradients seeded into o and the final state */
} lin_data;

enum { LQ, LK, LV, LG, LBETA, LH0, LN_IN };
static const char *const lin_in_names[LN_IN] = {"q", "k", "v", "g", "beta", "initial_state"};

/* Results: o, final state, then d<input> for each input (NULL when absent). */
typedef struct lin_result {
  real *o, *ht, *dx[LN_IN];
} lin_result;

static inline int64_t lin_in_size(const lin_data *d, int i) {
  int64_t btH = d->B * d->T * d->H;
  switch (i) {
  case LQ: case LK: return btH * d->K;
  case LV: return btH * d->V;
  case LG: return d->kind == AT_LIN_KDA ? btH * d->K : btH;
  case LBETA: return btH;
  default: return d->B * d->H * d->K * d->V;
  }
}

static inline int lin_in_shape(const lin_data *d, int i, int64_t *shape) {
  int64_t s[6][4] = {{d->B, d->T, d->H, d->K}, {d->B, d->T, d->H, d->K},
                     {d->B, d->T, d->H, d->V}, {d->B, d->T, d->H, d->K},
                     {d->B, d->T, d->H, 0},    {d->B, d->H, d->K, d->V}};
  int nd = (i == LBETA || (i == LG && d->kind != AT_LIN_KDA)) ? 3 : 4;
  memcpy(shape, s[i], sizeof s[i]);
  return nd;
}

static inline real *lin_randn(int64_t n, uint64_t seed, double std) {
  real *x = malloc((size_t)n * sizeof(real));
  at_fill_normal(x, n, seed, 7, 0, std);
  return x;
}

static inline void lin_l2norm_rows(real *x, int64_t rows, int64_t D) {
  for (int64_t r = 0; r < rows; r++) {
    double s = 0;
    for (int64_t d = 0; d < D; d++) s += (double)x[r * D + d] * x[r * D + d];
    for (int64_t d = 0; d < D; d++) x[r * D + d] = (real)(x[r * D + d] / sqrt(s + 1e-6));
  }
}

/* Random inputs as the layers produce them: q, k L2-normalised rows, v
 * normal, g uniform in [g_lo, g_hi], beta uniform in (0.05, 0.95), h0 normal
 * (when use_h0), d_o and d_ht normal. */
static inline lin_data lin_make(at_lin_kind kind, int64_t B, int64_t T, int64_t H, int64_t K,
                                int64_t V, double g_lo, double g_hi, int use_h0, uint64_t seed) {
  lin_data d = {kind, B, T, H, K, V, {0}, 0, 0};
  d.x[LQ] = lin_randn(lin_in_size(&d, LQ), seed + 1, 1);
  d.x[LK] = lin_randn(lin_in_size(&d, LK), seed + 2, 1);
  lin_l2norm_rows(d.x[LQ], B * T * H, K);
  lin_l2norm_rows(d.x[LK], B * T * H, K);
  d.x[LV] = lin_randn(lin_in_size(&d, LV), seed + 3, 1);
  if (kind != AT_LIN_DELTA_RULE) {
    int64_t n = lin_in_size(&d, LG);
    d.x[LG] = malloc((size_t)n * sizeof(real));
    at_fill_uniform(d.x[LG], n, seed + 4, 7, g_lo, g_hi);
  }
  if (kind != AT_LIN_SIMPLE_GLA) {
    int64_t n = lin_in_size(&d, LBETA);
    d.x[LBETA] = malloc((size_t)n * sizeof(real));
    at_fill_uniform(d.x[LBETA], n, seed + 5, 7, 0.05, 0.95);
  }
  if (use_h0) d.x[LH0] = lin_randn(lin_in_size(&d, LH0), seed + 6, 1);
  d.d_o = lin_randn(B * T * H * V, seed + 7, 1);
  d.d_ht = lin_randn(B * H * K * V, seed + 8, 1);
  return d;
}

static inline void lin_data_free(lin_data *d) {
  for (int i = 0; i < LN_IN; i++) free(d->x[i]);
  free(d->d_o);
  free(d->d_ht);
}

static inline void lin_result_free(lin_result *r) {
  free(r->o);
  free(r->ht);
  for (int i = 0; i < LN_IN; i++) free(r->dx[i]);
}

static inline real *lin_copy(const real *x, int64_t n) {
  real *y = malloc((size_t)n * sizeof(real));
  memcpy(y, x, (size_t)n * sizeof(real));
  return y;
}

/* Forward and backward (gradients of sum(o d_o) + sum(ht d_ht)). */
static inline lin_result lin_run(const lin_data *d, at_lin_form form, int64_t chunk) {
  at_ctx *c = at_ctx_new(1 << 20);
  at_tensor *in[LN_IN] = {0};
  for (int i = 0; i < LN_IN; i++)
    if (d->x[i]) {
      int64_t shape[4];
      int nd = lin_in_shape(d, i, shape);
      in[i] = at_leaf(c, d->x[i], nd, shape);
    }
  at_lin_opts opts = {0, chunk, form};
  at_tensor *ht = NULL;
  at_tensor *o = at_lin_attn(c, d->kind, in[LQ], in[LK], in[LV], in[LG], in[LBETA], in[LH0], &ht,
                             &opts);
  cr_assert(o && ht, "%s forward failed: %s", at_lin_kind_name(d->kind), at_errmsg());
  lin_result r = {lin_copy(o->data, o->size), lin_copy(ht->data, ht->size), {0}};
  memcpy(at_grad(c, o), d->d_o, (size_t)o->size * sizeof(real));
  memcpy(at_grad(c, ht), d->d_ht, (size_t)ht->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "backward: %s", at_errmsg());
  for (int i = 0; i < LN_IN; i++)
    if (in[i]) {
      cr_assert(in[i]->grad != NULL, "no gradient for %s", lin_in_names[i]);
      r.dx[i] = lin_copy(in[i]->grad, in[i]->size);
    }
  at_ctx_free(c);
  return r;
}

/* The step form token by token: o and the final state (no gradients). */
static inline lin_result lin_run_steps(const lin_data *d) {
  at_ctx *c = at_ctx_new(1 << 20);
  const int64_t B = d->B, T = d->T, H = d->H;
  at_tensor *state = AT_ZEROS(c, B, H, d->K, d->V);
  if (d->x[LH0]) memcpy(state->data, d->x[LH0], (size_t)state->size * sizeof(real));
  lin_result r = {malloc((size_t)(B * T * H * d->V) * sizeof(real)), NULL, {0}};
  for (int64_t t = 0; t < T; t++) {
    at_ctx_mark m = at_ctx_get_mark(c);
    at_tensor *tok[LBETA + 1] = {0};
    for (int i = 0; i <= LBETA; i++) {
      if (!d->x[i]) continue;
      int64_t shape[4];
      int nd = lin_in_shape(d, i, shape);
      int64_t row = nd == 4 ? H * shape[3] : H; /* elements per (b, t) */
      shape[1] = 1;
      tok[i] = at_new(c, nd, shape);
      for (int64_t b = 0; b < B; b++)
        memcpy(tok[i]->data + b * row, d->x[i] + (b * T + t) * row, (size_t)row * sizeof(real));
    }
    at_tensor *o = at_lin_attn_step(c, d->kind, tok[LQ], tok[LK], tok[LV], tok[LG], tok[LBETA],
                                    state, NULL);
    cr_assert(o, "step: %s", at_errmsg());
    for (int64_t b = 0; b < B; b++)
      memcpy(r.o + (b * T + t) * H * d->V, o->data + b * H * d->V,
             (size_t)(H * d->V) * sizeof(real));
    at_ctx_rewind(c, m);
  }
  r.ht = lin_copy(state->data, state->size);
  at_ctx_free(c);
  return r;
}

static inline int lin_all_finite(const lin_data *d, const lin_result *r) {
  int ok = at_all_finite(r->o, d->B * d->T * d->H * d->V) &&
           at_all_finite(r->ht, d->B * d->H * d->K * d->V);
  for (int i = 0; i < LN_IN; i++)
    if (r->dx[i]) ok &= at_all_finite(r->dx[i], lin_in_size(d, i));
  return ok;
}

/* Expects a ≈ b: outputs within tol_out, gradients within tol_grad. */
static inline void lin_expect_close(const lin_data *d, const lin_result *a, const lin_result *b,
                                    double tol_out, double tol_grad, const char *what) {
  char w[256];
  snprintf(w, sizeof w, "%s: o", what);
  AT_EXPECT_CLOSE(a->o, b->o, d->B * d->T * d->H * d->V, tol_out, w);
  snprintf(w, sizeof w, "%s: final state", what);
  AT_EXPECT_CLOSE(a->ht, b->ht, d->B * d->H * d->K * d->V, tol_out, w);
  for (int i = 0; i < LN_IN; i++)
    if (a->dx[i] && b->dx[i]) {
      snprintf(w, sizeof w, "%s: d%s", what, lin_in_names[i]);
      AT_EXPECT_CLOSE(a->dx[i], b->dx[i], lin_in_size(d, i), tol_grad, w);
    }
}

#endif
