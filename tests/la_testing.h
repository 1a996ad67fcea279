/* tests/la_testing.h: inputs, runs and comparisons shared by the float suites
 * of the linear path's ops (ops/attention/linear_attn.h, favor.h):
 * linear attention (with or without the normaliser), retention, linear
 * attention with a per-token gate, and Performer's FAVOR+. */
#ifndef AT_LA_TESTING_H
#define AT_LA_TESTING_H

#include <stdlib.h>
#include <string.h>

#include "ops/attention/favor.h"
#include "testing.h"

typedef enum la_kind { LA_LINEAR, LA_RETENTION, LA_GATED, LA_PERFORMER, LA_KINDS } la_kind;
static const char *const la_kind_names[LA_KINDS] = {"linear_attn", "retention", "gated", "performer"};

/* inputs: q k v g h0 z0 M0 omega (NULL when absent) */
enum { LXQ, LXK, LXV, LXG, LXH0, LXZ0, LXM0, LXW, LX_N };
static const char *const la_in_names[LX_N] = {"q", "k", "v", "g", "h0", "z0", "M0", "omega"};

typedef struct la_data {
  la_kind kind;
  int normalize;
  int64_t B, T, H, K, V, m; /* m: performer's features (the state's key dim) */
  real *x[LX_N];
  real *d_o, *d_ht, *d_zt;
} la_data;

typedef struct la_result {
  real *o, *ht, *zt, *mt, *dx[LX_N];
} la_result;

/* The state's key dimension: K, or m for the performer. */
static inline int64_t la_sk(const la_data *d) { return d->kind == LA_PERFORMER ? d->m : d->K; }
static inline int la_normalized(const la_data *d) { return d->kind == LA_PERFORMER || d->normalize; }

static inline int la_in_shape(const la_data *d, int i, int64_t *s) {
  const int64_t B = d->B, T = d->T, H = d->H, K = d->K, V = d->V, SK = la_sk(d);
  switch (i) {
  case LXQ: case LXK: s[0] = B, s[1] = T, s[2] = H, s[3] = K; return 4;
  case LXV: s[0] = B, s[1] = T, s[2] = H, s[3] = V; return 4;
  case LXG: s[0] = B, s[1] = T, s[2] = H; return 3;
  case LXH0: s[0] = B, s[1] = H, s[2] = SK, s[3] = V; return 4;
  case LXZ0: s[0] = B, s[1] = H, s[2] = SK; return 3;
  case LXM0: s[0] = B, s[1] = H; return 2;
  default: s[0] = d->m, s[1] = K; return 2;
  }
}

static inline int64_t la_in_size(const la_data *d, int i) {
  int64_t s[4];
  return at_shape_size(la_in_shape(d, i, s), s);
}

static inline real *la_alloc(int64_t n) { return malloc((size_t)n * sizeof(real)); }

/* Random inputs: q, k normal (positive elu + 1 values with the normaliser,
 * N(0, 0.7) for the performer), v normal, g uniform in [g_lo, g_hi], h0
 * normal, z0 uniform (0.5, 2), M0 uniform (0, 1); omega orthogonal FAVOR+
 * features; d_o, d_ht, d_zt normal. */
static inline la_data la_make(la_kind kind, int normalize, int64_t B, int64_t T, int64_t H, int64_t K,
                              int64_t V, int64_t m, double g_lo, double g_hi, int use_h0, uint64_t seed) {
  la_data d = {kind, normalize || kind == LA_PERFORMER, B, T, H, K, V, m, {0}, 0, 0, 0};
  for (int i = LXQ; i <= LXV; i++) {
    int64_t n = la_in_size(&d, i);
    d.x[i] = la_alloc(n);
    at_fill_normal(d.x[i], n, seed + (uint64_t)i, 7, 0, kind == LA_PERFORMER && i < LXV ? 0.7 : 1);
    if (d.normalize && kind != LA_PERFORMER && i < LXV)
      for (int64_t j = 0; j < n; j++) d.x[i][j] = d.x[i][j] > 0 ? d.x[i][j] + 1 : (real)exp((double)d.x[i][j]);
  }
  if (kind == LA_GATED) {
    d.x[LXG] = la_alloc(la_in_size(&d, LXG));
    at_fill_uniform(d.x[LXG], la_in_size(&d, LXG), seed + 4, 7, g_lo, g_hi);
  }
  if (use_h0) {
    d.x[LXH0] = la_alloc(la_in_size(&d, LXH0));
    at_fill_normal(d.x[LXH0], la_in_size(&d, LXH0), seed + 5, 7, 0, 1);
    if (d.normalize) {
      d.x[LXZ0] = la_alloc(la_in_size(&d, LXZ0));
      at_fill_uniform(d.x[LXZ0], la_in_size(&d, LXZ0), seed + 6, 7, 0.5, 2);
    }
    if (kind == LA_PERFORMER) {
      d.x[LXM0] = la_alloc(la_in_size(&d, LXM0));
      at_fill_uniform(d.x[LXM0], la_in_size(&d, LXM0), seed + 7, 7, 0, 1);
    }
  }
  if (kind == LA_PERFORMER) {
    d.x[LXW] = la_alloc(la_in_size(&d, LXW));
    at_favor_draw(d.x[LXW], m, K, 1, seed, 3, 0);
  }
  d.d_o = la_alloc(B * T * H * V);
  at_fill_normal(d.d_o, B * T * H * V, seed + 8, 7, 0, 1);
  d.d_ht = la_alloc(la_in_size(&d, LXH0));
  at_fill_normal(d.d_ht, la_in_size(&d, LXH0), seed + 9, 7, 0, 1);
  d.d_zt = la_alloc(la_in_size(&d, LXZ0));
  at_fill_normal(d.d_zt, la_in_size(&d, LXZ0), seed + 10, 7, 0, 1);
  return d;
}

static inline void la_data_free(la_data *d) {
  for (int i = 0; i < LX_N; i++) free(d->x[i]);
  free(d->d_o), free(d->d_ht), free(d->d_zt);
}

static inline void la_result_free(la_result *r) {
  free(r->o), free(r->ht), free(r->zt), free(r->mt);
  for (int i = 0; i < LX_N; i++) free(r->dx[i]);
}

static inline real *la_copy(const real *x, int64_t n) {
  if (!x) return NULL;
  real *y = la_alloc(n);
  memcpy(y, x, (size_t)n * sizeof(real));
  return y;
}

static inline at_la_opts la_opts_of(const la_data *d, at_la_form form, int64_t chunk) {
  return (at_la_opts){0, chunk, form, d->normalize, 0};
}

/* The op on the leaves in[] (NULL entries absent): o, and the final state. */
static inline at_tensor *la_call(at_ctx *c, const la_data *d, at_tensor **in, const at_la_opts *o,
                                 at_tensor **ht, at_tensor **zt, at_tensor **mt) {
  switch (d->kind) {
  case LA_LINEAR: return at_linear_attn(c, in[LXQ], in[LXK], in[LXV], in[LXH0], in[LXZ0], ht, zt, o);
  case LA_RETENTION: return at_retention(c, in[LXQ], in[LXK], in[LXV], in[LXH0], ht, o);
  case LA_GATED:
    return at_la_attn(c, AT_LA_DECAY_GATE, in[LXQ], in[LXK], in[LXV], in[LXG], in[LXH0], in[LXZ0], ht, zt, o);
  default:
    return at_performer(c, in[LXQ], in[LXK], in[LXV], in[LXW], in[LXH0], in[LXZ0], in[LXM0], ht, zt, mt, o);
  }
}

/* Forward and backward (gradients of sum(o d_o) + sum(ht d_ht) + sum(zt d_zt)). */
static inline la_result la_run(const la_data *d, at_la_form form, int64_t chunk) {
  at_ctx *c = at_ctx_new(1 << 20);
  at_tensor *in[LX_N] = {0};
  for (int i = 0; i < LX_N; i++)
    if (d->x[i]) {
      int64_t s[4];
      int nd = la_in_shape(d, i, s);
      in[i] = i >= LXM0 ? at_from(c, d->x[i], nd, s) : at_leaf(c, d->x[i], nd, s); /* M0, omega: constants */
    }
  at_la_opts o = la_opts_of(d, form, chunk);
  at_tensor *ht = NULL, *zt = NULL, *mt = NULL;
  at_tensor *y = la_call(c, d, in, &o, &ht, la_normalized(d) ? &zt : NULL, &mt);
  cr_assert(y && ht && (zt || !la_normalized(d)), "%s forward failed: %s", la_kind_names[d->kind], at_errmsg());
  la_result r = {la_copy(y->data, y->size), la_copy(ht->data, ht->size), zt ? la_copy(zt->data, zt->size) : NULL,
                 mt ? la_copy(mt->data, mt->size) : NULL, {0}};
  memcpy(at_grad(c, y), d->d_o, (size_t)y->size * sizeof(real));
  memcpy(at_grad(c, ht), d->d_ht, (size_t)ht->size * sizeof(real));
  if (zt) memcpy(at_grad(c, zt), d->d_zt, (size_t)zt->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "backward: %s", at_errmsg());
  for (int i = 0; i < LX_N; i++)
    if (in[i] && in[i]->requires_grad) {
      cr_assert(in[i]->grad != NULL, "no gradient for %s", la_in_names[i]);
      r.dx[i] = la_copy(in[i]->grad, in[i]->size);
    }
  at_ctx_free(c);
  return r;
}

/* Token t of input i as a [B,1,...] tensor. */
static inline at_tensor *la_token(at_ctx *c, const la_data *d, int i, int64_t t) {
  int64_t s[4];
  int nd = la_in_shape(d, i, s);
  int64_t row = at_shape_size(nd, s) / (d->B * d->T);
  s[1] = 1;
  at_tensor *x = at_new(c, nd, s);
  for (int64_t b = 0; b < d->B; b++)
    memcpy(x->data + b * row, d->x[i] + (b * d->T + t) * row, (size_t)row * sizeof(real));
  return x;
}

/* The step form token by token: o and the final state (no gradients). */
static inline la_result la_run_steps(const la_data *d) {
  at_ctx *c = at_ctx_new(1 << 20);
  const int64_t B = d->B, T = d->T, H = d->H, V = d->V, SK = la_sk(d);
  at_tensor *S = AT_ZEROS(c, B, H, SK, V), *z = la_normalized(d) ? AT_ZEROS(c, B, H, SK) : NULL;
  at_tensor *M = d->kind == LA_PERFORMER ? AT_NEW(c, B, H) : NULL, *W = NULL;
  if (d->x[LXH0]) memcpy(S->data, d->x[LXH0], (size_t)S->size * sizeof(real));
  if (z && d->x[LXZ0]) memcpy(z->data, d->x[LXZ0], (size_t)z->size * sizeof(real));
  if (M) {
    for (int64_t i = 0; i < M->size; i++) M->data[i] = d->x[LXM0] ? d->x[LXM0][i] : -INFINITY;
    W = at_from(c, d->x[LXW], AT_SHAPE(d->m, d->K));
  }
  la_result r = {la_alloc(B * T * H * V), NULL, NULL, NULL, {0}};
  at_la_opts o = la_opts_of(d, AT_LA_RECURRENT, 0);
  for (int64_t t = 0; t < T; t++) {
    at_ctx_mark mk = at_ctx_get_mark(c);
    at_tensor *q = la_token(c, d, LXQ, t), *k = la_token(c, d, LXK, t), *v = la_token(c, d, LXV, t);
    at_tensor *y = d->kind == LA_PERFORMER ? at_performer_step(c, q, k, v, W, S, z, M, &o)
                   : d->kind == LA_RETENTION ? at_retention_step(c, q, k, v, S, &o)
                   : at_la_step(c, d->kind == LA_GATED ? AT_LA_DECAY_GATE : AT_LA_DECAY_NONE, q, k, v,
                                d->kind == LA_GATED ? la_token(c, d, LXG, t) : NULL, S, z, &o);
    cr_assert(y, "step: %s", at_errmsg());
    for (int64_t b = 0; b < B; b++)
      memcpy(r.o + (b * T + t) * H * V, y->data + b * H * V, (size_t)(H * V) * sizeof(real));
    at_ctx_rewind(c, mk);
  }
  r.ht = la_copy(S->data, S->size);
  r.zt = z ? la_copy(z->data, z->size) : NULL;
  r.mt = M ? la_copy(M->data, M->size) : NULL;
  at_ctx_free(c);
  return r;
}

static inline int la_all_finite(const la_data *d, const la_result *r) {
  int ok = at_all_finite(r->o, d->B * d->T * d->H * d->V) && at_all_finite(r->ht, la_in_size(d, LXH0));
  if (r->zt) ok &= at_all_finite(r->zt, la_in_size(d, LXZ0));
  for (int i = 0; i < LX_N; i++)
    if (r->dx[i]) ok &= at_all_finite(r->dx[i], la_in_size(d, i));
  return ok;
}

/* ||a - b|| / max(||b||, floor) <= tol. */
static inline void la_expect_floor(const real *a, const real *b, int64_t n, double tol, double floor,
                                   const char *what) {
  double e = 0, r = 0;
  for (int64_t i = 0; i < n; i++) e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), r += (double)b[i] * b[i];
  e = sqrt(e) / fmax(sqrt(r), floor);
  cr_expect(e <= tol, "%s: relative error %.3g > %.3g", what, isfinite(e) ? e : INFINITY, tol);
}

/* Expects a ≈ b: outputs and states within tol_out, gradients within
 * tol_grad relative to max(their norm, grad_floor). A floor is for
 * gradients that are analytically ~0 and so only rounding (dq of the
 * normalised op when every gate erases the state: o_t = v_t up to eps). */
static inline void la_expect_close_floor(const la_data *d, const la_result *a, const la_result *b,
                                         double tol_out, double tol_grad, double grad_floor, const char *what) {
  char w[256];
  snprintf(w, sizeof w, "%s: o", what);
  AT_EXPECT_CLOSE(a->o, b->o, d->B * d->T * d->H * d->V, tol_out, w);
  snprintf(w, sizeof w, "%s: final state", what);
  AT_EXPECT_CLOSE(a->ht, b->ht, la_in_size(d, LXH0), tol_out, w);
  if (a->zt && b->zt) {
    snprintf(w, sizeof w, "%s: final normaliser", what);
    AT_EXPECT_CLOSE(a->zt, b->zt, la_in_size(d, LXZ0), tol_out, w);
  }
  if (a->mt && b->mt) {
    snprintf(w, sizeof w, "%s: final max", what);
    AT_EXPECT_CLOSE(a->mt, b->mt, la_in_size(d, LXM0), tol_out, w);
  }
  for (int i = 0; i < LX_N; i++)
    if (a->dx[i] && b->dx[i]) {
      snprintf(w, sizeof w, "%s: d%s", what, la_in_names[i]);
      if (grad_floor > 0) la_expect_floor(a->dx[i], b->dx[i], la_in_size(d, i), tol_grad, grad_floor, w);
      else AT_EXPECT_CLOSE(a->dx[i], b->dx[i], la_in_size(d, i), tol_grad, w);
    }
}

static inline void la_expect_close(const la_data *d, const la_result *a, const la_result *b, double tol_out,
                                   double tol_grad, const char *what) {
  la_expect_close_floor(d, a, b, tol_out, tol_grad, 0, what);
}

#endif
