/* ops/reduce.c: sums and means over one dim or over everything.
 *
 *   x seen as [outer, n, inner] around dim:
 *   y[o, i] = s * sum_j x[o, j, i]        dx[o, j, i] = s g[o, i]
 *   (s = 1 for sum, 1/n for mean; over everything n = size, y has shape [1])
 *
 * Sums accumulate in double in a fixed order (j ascending; for sum_all fixed
 * chunks added in sequence), so the result does not depend on the thread
 * count.
 */
#include "ops/util.h"

#define IBLOCK 256   /* inner positions per work item */
#define CHUNK 4096   /* elements per partial sum of sum_all */

/* node->i: [0] outer, [1] n, [2] inner; f[0]: scale. sum_all: outer = 1, inner = 1. */
static void reduce_backward(at_ctx *c, at_node *nd) {
  real *dx = at_grad(c, nd->in[0]);
  if (!dx) return;
  int64_t outer = nd->i[0], n = nd->i[1], inner = nd->i[2];
  const real *g = nd->out[0]->grad;
  real s = (real)nd->f[0];
  int64_t rows = outer * n;
#pragma omp parallel for schedule(static) if (rows * inner >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const real *gr = g + (r / n) * inner;
    real *d = dx + r * inner;
    for (int64_t i = 0; i < inner; i++) d[i] += s * gr[i];
  }
}

static at_tensor *reduce_dim(at_ctx *c, at_tensor *x, int dim, int keepdim, int mean) {
  if (!x) return NULL;
  const char *name = mean ? "mean" : "sum";
  int d = at_ops_dim(dim, x->ndim);
  if (d < 0) {
    char sx[96];
    return at_fail(c, AT_E_ARG, "%s: dim %d outside the rank of %s", name, dim,
                   AT_SHAPE_STR(x, sx));
  }
  int64_t outer, n, inner;
  at_ops_split(x, d, &outer, &n, &inner);
  int64_t shape[AT_MAX_DIMS];
  int nd = 0;
  for (int i = 0; i < x->ndim; i++)
    if (i != d) shape[nd++] = x->shape[i];
    else if (keepdim) shape[nd++] = 1;
  if (nd == 0) shape[nd++] = 1; /* no 0-dim tensors: a scalar is [1] */
  at_tensor *y = at_new(c, nd, shape);
  double *acc = at_scratch(c, (size_t)(outer * inner) * sizeof(double));
  if (!y || !acc) return NULL;
  double s = mean ? 1.0 / (double)n : 1.0;
  const real *xd = x->data;
  int64_t nib = (inner + IBLOCK - 1) / IBLOCK;
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
  for (int64_t w = 0; w < outer * nib; w++) {
    int64_t o = w / nib, i0 = (w % nib) * IBLOCK, i1 = AT_MIN(inner, i0 + IBLOCK);
    double *a = acc + o * inner;
    for (int64_t i = i0; i < i1; i++) a[i] = 0;
    for (int64_t j = 0; j < n; j++) {
      const real *xr = xd + (o * n + j) * inner;
      for (int64_t i = i0; i < i1; i++) a[i] += xr[i];
    }
    for (int64_t i = i0; i < i1; i++) y->data[o * inner + i] = (real)(a[i] * s);
  }
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *r = AT_RECORD(c, name, reduce_backward, ins, outs);
  if (r) r->i[0] = outer, r->i[1] = n, r->i[2] = inner, r->f[0] = s;
  return y;
}

at_tensor *at_sum(at_ctx *c, at_tensor *x, int dim, int keepdim) {
  return reduce_dim(c, x, dim, keepdim, 0);
}
at_tensor *at_mean(at_ctx *c, at_tensor *x, int dim, int keepdim) {
  return reduce_dim(c, x, dim, keepdim, 1);
}

static at_tensor *reduce_all(at_ctx *c, at_tensor *x, int mean) {
  if (!x) return NULL;
  int64_t n = x->size, nch = (n + CHUNK - 1) / CHUNK;
  at_tensor *y = AT_NEW(c, 1);
  double *part = at_scratch(c, (size_t)AT_MAX(nch, 1) * sizeof(double));
  if (!y || !part) return NULL;
  const real *xd = x->data;
#pragma omp parallel for schedule(static) if (n >= AT_PAR_MIN)
  for (int64_t k = 0; k < nch; k++) {
    double s = 0;
    for (int64_t i = k * CHUNK; i < AT_MIN(n, (k + 1) * CHUNK); i++) s += xd[i];
    part[k] = s;
  }
  double s = 0;
  for (int64_t k = 0; k < nch; k++) s += part[k];
  double scale = mean ? 1.0 / (double)n : 1.0;
  y->data[0] = (real)(s * scale);
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *r = AT_RECORD(c, mean ? "mean_all" : "sum_all", reduce_backward, ins, outs);
  if (r) r->i[0] = 1, r->i[1] = n, r->i[2] = 1, r->f[0] = scale;
  return y;
}

at_tensor *at_sum_all(at_ctx *c, at_tensor *x) { return reduce_all(c, x, 0); }
at_tensor *at_mean_all(at_ctx *c, at_tensor *x) { return reduce_all(c, x, 1); }
