/* tests/ssm_testing.h: inputs and runs of the state-space ops
 * (ops/attention/ssm.h) shared by test_ssm.c (float) and test_ssm_d.c
 * (double gradient checks). */
#ifndef AT_SSM_TESTING_H
#define AT_SSM_TESTING_H

#include <stdlib.h>
#include <string.h>

#include "ops/attention/ssm.h"
#include "testing.h"

/* ---- selective scan -------------------------------------------------------------- */

enum { SU, SDELTA, SA, SB, SC, SD, SZ, SBIAS, SH0, SN_IN };
static const char *const scan_in_names[SN_IN] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias",
                                                 "initial_state"};

typedef struct scan_data {
  int64_t B, T, D, N;
  int softplus;
  real *x[SN_IN];      /* NULL when absent (D, z, delta_bias, h0 are optional) */
  real *dout, *dht;
} scan_data;

static inline int64_t scan_in_size(const scan_data *d, int i) {
  switch (i) {
  case SU: case SDELTA: case SZ: return d->B * d->T * d->D;
  case SA: return d->D * d->N;
  case SB: case SC: return d->B * d->T * d->N;
  case SD: case SBIAS: return d->D;
  default: return d->B * d->D * d->N;
  }
}

static inline int scan_in_shape(const scan_data *d, int i, int64_t *s) {
  switch (i) {
  case SU: case SDELTA: case SZ: s[0] = d->B, s[1] = d->T, s[2] = d->D; return 3;
  case SA: s[0] = d->D, s[1] = d->N; return 2;
  case SB: case SC: s[0] = d->B, s[1] = d->T, s[2] = d->N; return 3;
  case SD: case SBIAS: s[0] = d->D; return 1;
  default: s[0] = d->B, s[1] = d->D, s[2] = d->N; return 3;
  }
}

static inline real *ssm_fill(int64_t n, uint64_t seed, double lo, double hi, int normal) {
  real *x = malloc((size_t)n * sizeof(real));
  if (normal) at_fill_normal(x, n, seed, 11, lo, hi);
  else at_fill_uniform(x, n, seed, 11, lo, hi);
  return x;
}

/* Inputs as the Mamba layer produces them: u, B, C normal; delta uniform in
 * [d_lo, d_hi] (before the softplus); A = -(1..N) scaled by a_scale with
 * noise; D, z, delta_bias, h0 present as flagged. */
typedef struct scan_make {
  int64_t B, T, D, N;
  int softplus, with_D, with_z, with_bias, with_h0;
  double d_lo, d_hi, a_scale;
} scan_make;

static inline scan_data scan_new(const scan_make *m, uint64_t seed) {
  scan_data d = {m->B, m->T, m->D, m->N, m->softplus, {0}, 0, 0};
  d.x[SU] = ssm_fill(scan_in_size(&d, SU), seed + 1, 0, 1, 1);
  d.x[SDELTA] = ssm_fill(scan_in_size(&d, SDELTA), seed + 2, m->d_lo, m->d_hi, 0);
  d.x[SA] = ssm_fill(scan_in_size(&d, SA), seed + 3, 0.8, 1.2, 0);
  for (int64_t i = 0; i < d.D * d.N; i++) d.x[SA][i] *= (real)(-m->a_scale * (double)(i % d.N + 1));
  d.x[SB] = ssm_fill(scan_in_size(&d, SB), seed + 4, 0, 1, 1);
  d.x[SC] = ssm_fill(scan_in_size(&d, SC), seed + 5, 0, 1, 1);
  if (m->with_D) d.x[SD] = ssm_fill(d.D, seed + 6, 0.5, 1.5, 0);
  if (m->with_z) d.x[SZ] = ssm_fill(scan_in_size(&d, SZ), seed + 7, 0, 1, 1);
  if (m->with_bias) d.x[SBIAS] = ssm_fill(d.D, seed + 8, -0.5, 0.5, 0);
  if (m->with_h0) d.x[SH0] = ssm_fill(scan_in_size(&d, SH0), seed + 9, 0, 1, 1);
  d.dout = ssm_fill(d.B * d.T * d.D, seed + 10, 0, 1, 1);
  d.dht = ssm_fill(d.B * d.D * d.N, seed + 11, 0, 1, 1);
  return d;
}

static inline void scan_free(scan_data *d) {
  for (int i = 0; i < SN_IN; i++) free(d->x[i]);
  free(d->dout);
  free(d->dht);
}

/* Leaves of c for the present inputs (in[i] NULL when absent). */
static inline void scan_leaves(at_ctx *c, const scan_data *d, at_tensor **in) {
  for (int i = 0; i < SN_IN; i++) {
    in[i] = NULL;
    if (!d->x[i]) continue;
    int64_t s[4];
    int nd = scan_in_shape(d, i, s);
    in[i] = at_leaf(c, d->x[i], nd, s);
  }
}

static inline at_tensor *scan_call(at_ctx *c, at_tensor **in, int softplus, at_scan_form form, int64_t C,
                                   at_tensor **ht) {
  at_scan_opts o = {softplus, C, form};
  return at_selective_scan(c, in[SU], in[SDELTA], in[SA], in[SB], in[SC], in[SD], in[SZ], in[SBIAS], in[SH0],
                           ht, &o);
}

typedef struct ssm_result {
  int n_out;
  int64_t out_n[2];
  real *out[2];     /* outputs (the op's order) */
  int n_in;
  int64_t in_n[SN_IN];
  real *din[SN_IN]; /* input gradients (NULL when absent) */
} ssm_result;

static inline real *ssm_copy(const real *x, int64_t n) {
  real *y = malloc((size_t)n * sizeof(real));
  memcpy(y, x, (size_t)n * sizeof(real));
  return y;
}

static inline void ssm_result_free(ssm_result *r) {
  for (int i = 0; i < r->n_out; i++) free(r->out[i]);
  for (int i = 0; i < r->n_in; i++) free(r->din[i]);
}

/* Seeds the outputs' gradients, runs backward, collects everything. */
static inline ssm_result ssm_collect(at_ctx *c, at_tensor **outs, const real *const *seeds, int n_out,
                                     at_tensor **in, int n_in) {
  ssm_result r = {n_out, {0}, {0}, n_in, {0}, {0}};
  for (int j = 0; j < n_out; j++) {
    cr_assert(outs[j] != NULL, "forward failed: %s", at_errmsg());
    r.out[j] = ssm_copy(outs[j]->data, r.out_n[j] = outs[j]->size);
    memcpy(at_grad(c, outs[j]), seeds[j], (size_t)outs[j]->size * sizeof(real));
  }
  cr_assert(at_backward_from_seeded(c) == AT_OK, "backward: %s", at_errmsg());
  for (int i = 0; i < n_in; i++)
    if (in[i]) {
      cr_assert(in[i]->grad != NULL, "input %d got no gradient", i);
      r.din[i] = ssm_copy(in[i]->grad, r.in_n[i] = in[i]->size);
    }
  return r;
}

/* Forward and backward of the scan (gradient of sum(out dout) + sum(ht dht)). */
static inline ssm_result scan_run(const scan_data *d, at_scan_form form, int64_t C) {
  at_ctx *c = at_ctx_new(1 << 22);
  at_tensor *in[SN_IN], *ht = NULL;
  scan_leaves(c, d, in);
  at_tensor *out = scan_call(c, in, d->softplus, form, C, &ht);
  at_tensor *outs[] = {out, ht};
  const real *seeds[] = {d->dout, d->dht};
  ssm_result r = ssm_collect(c, outs, seeds, 2, in, SN_IN);
  at_ctx_free(c);
  return r;
}

/* Expects a ≈ b on every output and gradient. */
static inline void ssm_expect_close(const ssm_result *a, const ssm_result *b, double tol_out, double tol_grad,
                                    const char *const *in_names, const char *what) {
  char w[256];
  for (int j = 0; j < a->n_out && j < b->n_out; j++) {
    snprintf(w, sizeof w, "%s: output %d", what, j);
    cr_assert(a->out_n[j] == b->out_n[j]);
    AT_EXPECT_CLOSE(a->out[j], b->out[j], a->out_n[j], tol_out, w);
  }
  for (int i = 0; i < a->n_in; i++)
    if (a->din[i] && b->din[i]) {
      snprintf(w, sizeof w, "%s: d%s", what, in_names[i]);
      AT_EXPECT_CLOSE(a->din[i], b->din[i], a->in_n[i], tol_grad, w);
    }
}

static inline int ssm_all_finite(const ssm_result *r) {
  int ok = 1;
  for (int j = 0; j < r->n_out; j++) ok &= at_all_finite(r->out[j], r->out_n[j]);
  for (int i = 0; i < r->n_in; i++)
    if (r->din[i]) ok &= at_all_finite(r->din[i], r->in_n[i]);
  return ok;
}

/* ---- S4D ------------------------------------------------------------------------------ */

enum { QLOGDT, QLAR, QAIM, QB, QC, QU, QX0, QN_IN };
static const char *const s4d_in_names[QN_IN] = {"log_dt", "log_A_real", "A_imag", "B", "C", "u",
                                                "initial_state"};

typedef struct s4d_data {
  int64_t B, T, H, M;
  real *x[QN_IN];
  real *dy, *dxT;
} s4d_data;

static inline int s4d_in_shape(const s4d_data *d, int i, int64_t *s) {
  switch (i) {
  case QLOGDT: s[0] = d->H; return 1;
  case QLAR: case QAIM: s[0] = d->H, s[1] = d->M; return 2;
  case QB: case QC: s[0] = d->H, s[1] = d->M, s[2] = 2; return 3;
  case QU: s[0] = d->B, s[1] = d->T, s[2] = d->H; return 3;
  default: s[0] = d->B, s[1] = d->H, s[2] = d->M, s[3] = 2; return 4;
  }
}

/* S4D-Lin-like parameters with noise: log_dt in [log dt_lo, log dt_hi],
 * A = -(0.5 +- noise) + i pi m (+ noise), B = 1 + noise, C complex normal. */
static inline s4d_data s4d_new(int64_t B, int64_t T, int64_t H, int64_t M, double dt_lo, double dt_hi,
                               int with_x0, uint64_t seed) {
  s4d_data d = {B, T, H, M, {0}, 0, 0};
  d.x[QLOGDT] = ssm_fill(H, seed + 1, log(dt_lo), log(dt_hi), 0);
  d.x[QLAR] = ssm_fill(H * M, seed + 2, log(0.3), log(0.8), 0);
  d.x[QAIM] = ssm_fill(H * M, seed + 3, -0.3, 0.3, 0);
  for (int64_t i = 0; i < H * M; i++) d.x[QAIM][i] += (real)(M_PI * (double)(i % M));
  d.x[QB] = ssm_fill(H * M * 2, seed + 4, 0, 0.3, 1);
  for (int64_t i = 0; i < H * M; i++) d.x[QB][2 * i] += 1;
  d.x[QC] = ssm_fill(H * M * 2, seed + 5, 0, sqrt(0.5), 1);
  d.x[QU] = ssm_fill(B * T * H, seed + 6, 0, 1, 1);
  if (with_x0) d.x[QX0] = ssm_fill(B * H * M * 2, seed + 7, 0, 1, 1);
  d.dy = ssm_fill(B * T * H, seed + 8, 0, 1, 1);
  d.dxT = ssm_fill(B * H * M * 2, seed + 9, 0, 1, 1);
  return d;
}

static inline void s4d_free(s4d_data *d) {
  for (int i = 0; i < QN_IN; i++) free(d->x[i]);
  free(d->dy);
  free(d->dxT);
}

static inline void s4d_leaves(at_ctx *c, const s4d_data *d, at_tensor **in) {
  for (int i = 0; i < QN_IN; i++) {
    in[i] = NULL;
    if (!d->x[i]) continue;
    int64_t s[4];
    int nd = s4d_in_shape(d, i, s);
    in[i] = at_leaf(c, d->x[i], nd, s);
  }
}

/* The SSM part of the S4D layer from its parameters: conv form (kernel +
 * convolution) or the recurrence (which alone takes x0 and gives xT). */
static inline at_tensor *s4d_call(at_ctx *c, at_tensor **in, int recurrent, at_tensor **xT) {
  at_tensor *Bbar = NULL;
  at_tensor *Abar = at_s4d_discretize(c, in[QLOGDT], in[QLAR], in[QAIM], in[QB], &Bbar);
  if (recurrent) return at_s4d_recurrence(c, in[QU], Abar, Bbar, in[QC], in[QX0], xT);
  return at_s4d_conv(c, in[QU], at_s4d_kernel(c, Abar, Bbar, in[QC], in[QU]->shape[1]));
}

/* Forward and backward of y (and of the final state when want_state: the
 * recurrence only), gradient of sum(y dy) [+ sum(xT dxT)]. */
static inline ssm_result s4d_run(const s4d_data *d, int recurrent, int want_state) {
  at_ctx *c = at_ctx_new(1 << 22);
  at_tensor *in[QN_IN], *xT = NULL;
  s4d_leaves(c, d, in);
  at_tensor *y = s4d_call(c, in, recurrent, want_state ? &xT : NULL);
  at_tensor *outs[] = {y, xT};
  const real *seeds[] = {d->dy, d->dxT};
  ssm_result r = ssm_collect(c, outs, seeds, want_state ? 2 : 1, in, QN_IN);
  at_ctx_free(c);
  return r;
}

#endif
