/* ops/sequence.c: ops along the time axis.
 *
 *   rope (rotate-half, h = d_rot / 2, i < h, t = pos0 + time index):
 *     a = t theta^(-2i/d_rot)
 *     y_i     = x_i cos a - x_{i+h} sin a        dx_i     =  g_i cos a + g_{i+h} sin a
 *     y_{i+h} = x_{i+h} cos a + x_i sin a        dx_{i+h} = -g_i sin a + g_{i+h} cos a
 *     (dims >= d_rot pass through)
 *   conv1d_causal (x [B,T,C], w [C,K]):
 *     y[b,t,c] = bias[c] + sum_j w[c,j] x[b, t-K+1+j, c]       (x = 0 before t = 0)
 *     dx[b,s,c] += sum_j w[c,j] g[b, s+K-1-j, c]               (g = 0 from T on)
 *     dw[c,j] += sum_{b,t} g[b,t,c] x[b, t-K+1+j, c],   dbias[c] += sum_{b,t} g[b,t,c]
 *   cumsum along dim:
 *     y[.., j, ..] = sum_{l <= j} x[.., l, ..]    dx[.., j, ..] = sum_{l >= j} g[.., l, ..]
 *
 * Angles are computed in double (positions can be large); running sums
 * accumulate in double. Parameter gradients of the conv are partial sums over
 * fixed chunks of rows added in order, so nothing depends on the thread count.
 */
#include <math.h>
#include <string.h>

#include "ops/util.h"

#define ROW_CHUNK 256
#define IBLOCK 64

/* ---- rope --------------------------------------------------------------------- */

/* node->i: [0] T, [1] d_rot, [2] H (1 for [B, T, D]); saved: cos [T, h] then sin [T, h]. */
static void rope_backward(at_ctx *c, at_node *nd) {
  at_tensor *x = nd->in[0];
  int fresh;
  real *dx = at_grad_into(c, x, &fresh);
  if (!dx) return;
  int64_t t_len = nd->i[0], half = nd->i[1] / 2, d = x->shape[x->ndim - 1];
  int64_t inner = nd->i[2], rows = x->size / d;
  const real *cs = nd->saved, *sn = cs + t_len * half, *g = nd->out[0]->grad;
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    int64_t t = r / inner % t_len;
    const real *gr = g + r * d, *cr = cs + t * half, *sr = sn + t * half;
    real *dr = dx + r * d;
    if (fresh) memset(dr, 0, (size_t)d * sizeof(real)); /* a row in cache, not a pass */
    for (int64_t i = 0; i < half; i++) {
      real g1 = gr[i], g2 = gr[i + half];
      dr[i] += g1 * cr[i] + g2 * sr[i];
      dr[i + half] += g2 * cr[i] - g1 * sr[i];
    }
    for (int64_t i = 2 * half; i < d; i++) dr[i] += gr[i];
  }
}

at_tensor *at_rope(at_ctx *c, at_tensor *x, int64_t d_rot, double theta, int64_t pos0) {
  if (!x) return NULL;
  char sx[96];
  if (x->ndim != 3 && x->ndim != 4)
    return at_fail(c, AT_E_SHAPE, "rope: input %s is not [B, T, H, D] or [B, T, D]",
                   AT_SHAPE_STR(x, sx));
  int64_t d = x->shape[x->ndim - 1];
  if (d_rot < 2 || d_rot % 2 || d_rot > d || !(theta > 0))
    return at_fail(c, AT_E_ARG, "rope: d_rot %lld (even, 2..%lld) or theta %g (> 0) invalid for %s",
                   (long long)d_rot, (long long)d, theta, AT_SHAPE_STR(x, sx));
  int64_t t_len = x->shape[1], half = d_rot / 2, rows = x->size / d;
  int64_t inner = x->ndim == 4 ? x->shape[2] : 1;
  at_tensor *y = at_new(c, x->ndim, x->shape);
  real *cs = at_scratch(c, (size_t)AT_MAX(2 * t_len * half, 1) * sizeof(real));
  if (!y || !cs) return NULL;
  real *sn = cs + t_len * half;
  for (int64_t i = 0; i < half; i++) {
    double f = pow(theta, -2.0 * (double)i / (double)d_rot);
    for (int64_t t = 0; t < t_len; t++) {
      double a = (double)(pos0 + t) * f;
      cs[t * half + i] = (real)cos(a);
      sn[t * half + i] = (real)sin(a);
    }
  }
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    int64_t t = r / inner % t_len;
    const real *xr = x->data + r * d, *cr = cs + t * half, *sr = sn + t * half;
    real *yr = y->data + r * d;
    for (int64_t i = 0; i < half; i++) {
      real x1 = xr[i], x2 = xr[i + half];
      yr[i] = x1 * cr[i] - x2 * sr[i];
      yr[i + half] = x2 * cr[i] + x1 * sr[i];
    }
    for (int64_t i = 2 * half; i < d; i++) yr[i] = xr[i];
  }
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "rope", rope_backward, ins, outs);
  if (nd) nd->i[0] = t_len, nd->i[1] = d_rot, nd->i[2] = inner, nd->saved = cs;
  return y;
}

/* ---- conv1d_causal ------------------------------------------------------------- */

/* w [C, K] as [K, C], so the inner loops over channels are contiguous. */
static real *weights_by_tap(at_ctx *c, const at_tensor *w) {
  int64_t ch = w->shape[0], k = w->shape[1];
  real *wt = at_scratch(c, (size_t)AT_MAX(w->size, 1) * sizeof(real));
  if (wt)
    for (int64_t i = 0; i < ch; i++)
      for (int64_t j = 0; j < k; j++) wt[j * ch + i] = w->data[i * k + j];
  return wt;
}

static void conv_backward(at_ctx *c, at_node *nd) {
  at_tensor *x = nd->in[0], *w = nd->in[1], *bias = nd->in[2];
  int64_t b_len = x->shape[0], t_len = x->shape[1], ch = x->shape[2], k = w->shape[1];
  int64_t rows = b_len * t_len;
  const real *g = nd->out[0]->grad, *xd = x->data;
  real *dx = at_grad(c, x), *dw = at_grad(c, w), *db = at_grad(c, bias);
  if (dx) {
    const real *wt = weights_by_tap(c, w);
    if (!wt) return;
#pragma omp parallel for schedule(static) if (x->size * k >= AT_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
      int64_t s = r % t_len;
      real *dr = dx + r * ch;
      for (int64_t j = 0; j < k; j++) {
        int64_t t = s + k - 1 - j;
        if (t >= t_len) continue;
        const real *gr = g + (r + (t - s)) * ch, *wj = wt + j * ch;
        for (int64_t i = 0; i < ch; i++) dr[i] += wj[i] * gr[i];
      }
    }
  }
  if (dw || db) {
    /* partial sums per chunk of rows: [nch, K + 1, C] (the last slot: bias) */
    int64_t nch = (rows + ROW_CHUNK - 1) / ROW_CHUNK, per = (k + 1) * ch;
    double *part = at_scratch(c, (size_t)AT_MAX(nch * per, 1) * sizeof(double));
    if (!part) return;
#pragma omp parallel for schedule(static) if (x->size * k >= AT_PAR_MIN)
    for (int64_t q = 0; q < nch; q++) {
      double *p = part + q * per;
      for (int64_t i = 0; i < per; i++) p[i] = 0;
      for (int64_t r = q * ROW_CHUNK; r < AT_MIN(rows, (q + 1) * ROW_CHUNK); r++) {
        int64_t t = r % t_len;
        const real *gr = g + r * ch;
        for (int64_t j = 0; j < k; j++) {
          int64_t s = t - k + 1 + j;
          if (s < 0) continue;
          const real *xr = xd + (r + (s - t)) * ch;
          double *pj = p + j * ch;
          for (int64_t i = 0; i < ch; i++) pj[i] += (double)gr[i] * xr[i];
        }
        double *pb = p + k * ch;
        for (int64_t i = 0; i < ch; i++) pb[i] += gr[i];
      }
    }
#pragma omp parallel for schedule(static) if (nch * per >= AT_PAR_MIN)
    for (int64_t e = 0; e < per; e++) {
      double s = 0;
      for (int64_t q = 0; q < nch; q++) s += part[q * per + e];
      int64_t j = e / ch, i = e % ch;
      if (j < k && dw) dw[i * k + j] += (real)s;
      if (j == k && db) db[i] += (real)s;
    }
  }
}

at_tensor *at_conv1d_causal(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *bias) {
  if (!x || !w) return NULL;
  char sx[96], sw[96], sb[96];
  if (x->ndim != 3 || w->ndim != 2 || w->shape[0] != x->shape[2] || w->shape[1] < 1 ||
      (bias && (bias->ndim != 1 || bias->shape[0] != x->shape[2])))
    return at_fail(c, AT_E_SHAPE,
                   "conv1d_causal: input %s, weight %s, bias %s do not fit (want [B, T, C], "
                   "[C, K], [C] or none)",
                   AT_SHAPE_STR(x, sx), AT_SHAPE_STR(w, sw),
                   bias ? AT_SHAPE_STR(bias, sb) : "none");
  int64_t t_len = x->shape[1], ch = x->shape[2], k = w->shape[1];
  int64_t rows = x->shape[0] * t_len;
  at_tensor *y = at_new(c, 3, x->shape);
  const real *wt = weights_by_tap(c, w);
  if (!y || !wt) return NULL;
  const real *xd = x->data, *bd = bias ? bias->data : NULL;
#pragma omp parallel for schedule(static) if (x->size * k >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    int64_t t = r % t_len;
    real *yr = y->data + r * ch;
    if (bd) /* (not `bd ? bd[i] : 0`: a masked load of NULL, an assist per vector) */
      memcpy(yr, bd, (size_t)ch * sizeof(real));
    else
      memset(yr, 0, (size_t)ch * sizeof(real));
    for (int64_t j = 0; j < k; j++) {
      int64_t s = t - k + 1 + j;
      if (s < 0) continue;
      const real *xr = xd + (r + (s - t)) * ch, *wj = wt + j * ch;
      for (int64_t i = 0; i < ch; i++) yr[i] += wj[i] * xr[i];
    }
  }
  at_tensor *ins[] = {x, w, bias}, *outs[] = {y};
  AT_RECORD(c, "conv1d_causal", conv_backward, ins, outs);
  return y;
}

/* ---- cumsum ------------------------------------------------------------------------ */

/* Running sums along n of [outer, n, inner]: forward (y = cumsum x) or
 * reverse accumulating (dst += reverse cumsum src). */
static void running_sum(int64_t outer, int64_t n, int64_t inner, const real *src, real *dst,
                        int reverse) {
  int64_t nb = (inner + IBLOCK - 1) / IBLOCK;
#pragma omp parallel for schedule(static) if (outer * n * inner >= AT_PAR_MIN)
  for (int64_t w = 0; w < outer * nb; w++) {
    int64_t o = w / nb, i0 = (w % nb) * IBLOCK, i1 = AT_MIN(inner, i0 + IBLOCK);
    double acc[IBLOCK] = {0};
    for (int64_t l = 0; l < n; l++) {
      int64_t j = reverse ? n - 1 - l : l, base = (o * n + j) * inner;
      for (int64_t i = i0; i < i1; i++) {
        acc[i - i0] += src[base + i];
        if (reverse) dst[base + i] += (real)acc[i - i0];
        else dst[base + i] = (real)acc[i - i0];
      }
    }
  }
}

/* node->i: [0] outer, [1] n, [2] inner. */
static void cumsum_backward(at_ctx *c, at_node *nd) {
  real *dx = at_grad(c, nd->in[0]);
  if (dx) running_sum(nd->i[0], nd->i[1], nd->i[2], nd->out[0]->grad, dx, 1);
}

at_tensor *at_cumsum(at_ctx *c, at_tensor *x, int dim) {
  if (!x) return NULL;
  int d = at_ops_dim(dim, x->ndim);
  if (d < 0) {
    char sx[96];
    return at_fail(c, AT_E_ARG, "cumsum: dim %d outside the rank of %s", dim, AT_SHAPE_STR(x, sx));
  }
  int64_t outer, n, inner;
  at_ops_split(x, d, &outer, &n, &inner);
  at_tensor *y = at_new(c, x->ndim, x->shape);
  if (!y) return NULL;
  running_sum(outer, n, inner, x->data, y->data, 0);
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "cumsum", cumsum_backward, ins, outs);
  if (nd) nd->i[0] = outer, nd->i[1] = n, nd->i[2] = inner;
  return y;
}
