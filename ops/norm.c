/* ops/norm.c: normalisations over the last dim (D), row by row.
 *
 *   rmsnorm:   r = (mean(x^2) + eps)^-1/2,  h = x r,  y = h w
 *              dx = r (g' - h mean(g' h)),  g' = g w;   dw += sum_rows g h
 *   layernorm: mu = mean(x), r = (mean((x - mu)^2) + eps)^-1/2,  h = (x - mu) r,  y = h w + b
 *              dx = r (g' - mean(g') - h mean(g' h)),  g' = g w;  dw += sum g h,  db += sum g
 *   l2norm:    r = (sum(x^2) + eps)^-1/2,  y = x r     (fla's l2norm)
 *              dx = r (g - y sum(g y))
 *
 * Without w (b) the factor is 1 (0). Row statistics accumulate in double, in
 * vector lanes (the order moves a sum by ~1e-16 of itself, under float rounding).
 * Weight gradients are column sums over rows, taken as partial sums over
 * fixed chunks of rows added in order, so they do not depend on the thread
 * count.
 */
#include <math.h>

#include "ops/util.h"

#define ROW_CHUNK 256

static int check_norm(at_ctx *c, const char *name, const at_tensor *x, const at_tensor *w,
                      const at_tensor *b, double eps) {
  char sx[96], sw[96];
  if (x->ndim < 1) {
    at_fail(c, AT_E_SHAPE, "%s: input %s has no last dim", name, AT_SHAPE_STR(x, sx));
    return 0;
  }
  int64_t d = x->shape[x->ndim - 1];
  const at_tensor *bad = w && (w->ndim != 1 || w->shape[0] != d) ? w
                         : b && (b->ndim != 1 || b->shape[0] != d) ? b : NULL;
  if (bad) {
    at_fail(c, AT_E_SHAPE, "%s: %s %s does not fit input %s (want [%lld])", name,
            bad == w ? "weight" : "bias", AT_SHAPE_STR(bad, sw), AT_SHAPE_STR(x, sx),
            (long long)d);
    return 0;
  }
  if (!(eps >= 0)) {
    at_fail(c, AT_E_ARG, "%s: eps %g must be >= 0", name, eps);
    return 0;
  }
  return 1;
}

/* dw[j] += sum_r g[r,j] (x[r,j] - mu[r]) rstd[r];  db[j] += sum_r g[r,j].
 * mu may be NULL (0); dw or db may be NULL (skipped). */
static void weight_grads(at_ctx *c, int64_t rows, int64_t d, const real *g, const real *x,
                         const real *mu, const real *rstd, real *dw, real *db) {
  int64_t nch = (rows + ROW_CHUNK - 1) / ROW_CHUNK;
  double *pw = at_scratch(c, (size_t)(2 * nch * d) * sizeof(double)), *pb = pw + nch * d;
  if (!pw) return;
#pragma omp parallel for schedule(static) if (rows * d >= AT_PAR_MIN)
  for (int64_t ch = 0; ch < nch; ch++) {
    double *sw = pw + ch * d, *sb = pb + ch * d;
    for (int64_t j = 0; j < d; j++) sw[j] = 0, sb[j] = 0;
    for (int64_t r = ch * ROW_CHUNK; r < AT_MIN(rows, (ch + 1) * ROW_CHUNK); r++) {
      const real *gr = g + r * d, *xr = x + r * d;
      double m = mu ? mu[r] : 0, s = rstd[r];
      if (dw)
        for (int64_t j = 0; j < d; j++) sw[j] += (double)gr[j] * ((xr[j] - m) * s);
      if (db)
        for (int64_t j = 0; j < d; j++) sb[j] += gr[j];
    }
  }
#pragma omp parallel for schedule(static) if (nch * d >= AT_PAR_MIN)
  for (int64_t j = 0; j < d; j++) {
    double a = 0, b = 0;
    for (int64_t ch = 0; ch < nch; ch++) a += pw[ch * d + j], b += pb[ch * d + j];
    if (dw) dw[j] += (real)a;
    if (db) db[j] += (real)b;
  }
}

/* ---- rmsnorm ------------------------------------------------------------------ */

/* The data of an optional weight or bias t, or d copies of v when t is absent,
 * so that the row loops read plain vectors (a `t ? t[j] : v` there becomes a
 * masked load of NULL, which costs a fault-suppression assist per vector).
 * NULL only when out of memory. */
static const real *or_const(at_ctx *c, const at_tensor *t, int64_t d, real v) {
  if (t) return t->data;
  real *r = at_scratch(c, (size_t)AT_MAX(d, 1) * sizeof(real));
  if (r)
    for (int64_t j = 0; j < d; j++) r[j] = v;
  return r;
}

/* saved: rstd per row. */
static void rmsnorm_backward(at_ctx *c, at_node *nd) {
  at_tensor *x = nd->in[0], *w = nd->in[1];
  int64_t d = x->shape[x->ndim - 1], rows = x->size / d;
  const real *g = nd->out[0]->grad, *rstd = nd->saved, *wd = or_const(c, w, d, 1);
  int fresh;
  real *dx = at_grad_into(c, x, &fresh), *dw = at_grad(c, w);
  if (dx && wd) {
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
      const real *xr = x->data + r * d, *gr = g + r * d;
      double s = rstd[r], dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < d; j++) dot += (double)gr[j] * wd[j] * xr[j];
      real k = (real)(s * s * s * dot / (double)d), rs = (real)s;
      real *dr = dx + r * d;
      if (fresh)
        for (int64_t j = 0; j < d; j++) dr[j] = rs * gr[j] * wd[j] - k * xr[j];
      else
        for (int64_t j = 0; j < d; j++) dr[j] += rs * gr[j] * wd[j] - k * xr[j];
    }
  }
  if (dw) weight_grads(c, rows, d, g, x->data, NULL, rstd, dw, NULL);
}

at_tensor *at_rmsnorm(at_ctx *c, at_tensor *x, at_tensor *w, double eps) {
  if (!x) return NULL;
  if (!check_norm(c, "rmsnorm", x, w, NULL, eps)) return NULL;
  int64_t d = x->shape[x->ndim - 1], rows = d ? x->size / d : 0;
  at_tensor *y = at_new(c, x->ndim, x->shape);
  real *rstd = at_scratch(c, (size_t)AT_MAX(rows, 1) * sizeof(real));
  const real *wd = or_const(c, w, d, 1);
  if (!y || !rstd || !wd) return NULL;
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const real *xr = x->data + r * d;
    real *yr = y->data + r * d;
    double ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
    real s = (real)(1 / sqrt(ss / (double)d + eps));
    rstd[r] = s;
    for (int64_t j = 0; j < d; j++) yr[j] = xr[j] * s * wd[j];
  }
  at_tensor *ins[] = {x, w}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "rmsnorm", rmsnorm_backward, ins, outs);
  if (nd) nd->saved = rstd;
  return y;
}

/* ---- layernorm ------------------------------------------------------------------- */

/* saved: mean per row, then rstd per row. */
static void layernorm_backward(at_ctx *c, at_node *nd) {
  at_tensor *x = nd->in[0], *w = nd->in[1], *b = nd->in[2];
  int64_t d = x->shape[x->ndim - 1], rows = x->size / d;
  const real *g = nd->out[0]->grad, *mu = nd->saved, *rstd = mu + rows;
  const real *wd = or_const(c, w, d, 1);
  real *dx = at_grad(c, x), *dw = at_grad(c, w), *db = at_grad(c, b);
  if (dx && wd) {
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
      const real *xr = x->data + r * d, *gr = g + r * d;
      double m = mu[r], s = rstd[r], sg = 0, sgh = 0;
      for (int64_t j = 0; j < d; j++) {
        double gw = (double)gr[j] * wd[j];
        sg += gw;
        sgh += gw * ((xr[j] - m) * s);
      }
      sg /= (double)d, sgh /= (double)d;
      real *dr = dx + r * d;
      for (int64_t j = 0; j < d; j++) {
        double h = (xr[j] - m) * s;
        dr[j] += (real)(s * ((double)gr[j] * wd[j] - sg - h * sgh));
      }
    }
  }
  if (dw || db) weight_grads(c, rows, d, g, x->data, mu, rstd, dw, db);
}

at_tensor *at_layernorm(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *b, double eps) {
  if (!x) return NULL;
  if (!check_norm(c, "layernorm", x, w, b, eps)) return NULL;
  int64_t d = x->shape[x->ndim - 1], rows = d ? x->size / d : 0;
  at_tensor *y = at_new(c, x->ndim, x->shape);
  real *stats = at_scratch(c, (size_t)AT_MAX(2 * rows, 1) * sizeof(real));
  const real *wd = or_const(c, w, d, 1), *bd = or_const(c, b, d, 0);
  if (!y || !stats || !wd || !bd) return NULL;
  real *mu = stats, *rstd = stats + rows;
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const real *xr = x->data + r * d;
    real *yr = y->data + r * d;
    double m = 0, v = 0;
    for (int64_t j = 0; j < d; j++) m += xr[j];
    m /= (double)d;
    for (int64_t j = 0; j < d; j++) v += (xr[j] - m) * (xr[j] - m);
    double s = 1 / sqrt(v / (double)d + eps);
    mu[r] = (real)m, rstd[r] = (real)s;
    for (int64_t j = 0; j < d; j++)
      yr[j] = (real)((xr[j] - m) * s) * wd[j] + bd[j];
  }
  at_tensor *ins[] = {x, w, b}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "layernorm", layernorm_backward, ins, outs);
  if (nd) nd->saved = stats;
  return y;
}

/* ---- l2norm ------------------------------------------------------------------------- */

/* saved: rstd per row. */
static void l2norm_backward(at_ctx *c, at_node *nd) {
  at_tensor *x = nd->in[0], *y = nd->out[0];
  real *dx = at_grad(c, x);
  if (!dx) return;
  int64_t d = x->shape[x->ndim - 1], rows = x->size / d;
  const real *g = y->grad, *rstd = nd->saved;
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const real *yr = y->data + r * d, *gr = g + r * d;
    double dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < d; j++) dot += (double)gr[j] * yr[j];
    real s = rstd[r], k = (real)dot;
    real *dr = dx + r * d;
    for (int64_t j = 0; j < d; j++) dr[j] += s * (gr[j] - yr[j] * k);
  }
}

at_tensor *at_l2norm(at_ctx *c, at_tensor *x, double eps) {
  if (!x) return NULL;
  if (!check_norm(c, "l2norm", x, NULL, NULL, eps)) return NULL;
  int64_t d = x->shape[x->ndim - 1], rows = d ? x->size / d : 0;
  at_tensor *y = at_new(c, x->ndim, x->shape);
  real *rstd = at_scratch(c, (size_t)AT_MAX(rows, 1) * sizeof(real));
  if (!y || !rstd) return NULL;
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const real *xr = x->data + r * d;
    real *yr = y->data + r * d;
    double ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < d; j++) ss += (double)xr[j] * xr[j];
    real s = (real)(1 / sqrt(ss + eps));
    rstd[r] = s;
    for (int64_t j = 0; j < d; j++) yr[j] = xr[j] * s;
  }
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "l2norm", l2norm_backward, ins, outs);
  if (nd) nd->saved = rstd;
  return y;
}
