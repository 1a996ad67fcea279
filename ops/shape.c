/* ops/shape.c: reshape, transpose/permute, slice, concat.
 *
 *   reshape:  y = x viewed with a new shape (same data)   dx += g
 *   permute:  y[i_0..i_r] = x[i at perm^-1]                dx = g permuted back
 *   slice:    y = x[.., start : start+len, ..]             dx[.., start : start+len, ..] += g
 *   concat:   y = [x_0 | x_1 | ...] along dim              dx_k += its block of g
 *
 * Every output is a new tensor with its own gradient buffer; reshape's
 * output shares the input's data (ops never write their inputs, so sharing
 * is safe). Dims may be negative (counted from the end).
 */
#include <string.h>

#include "ops/util.h"

/* ---- reshape ------------------------------------------------------------------ */

static void reshape_backward(at_ctx *c, at_node *nd) {
  int fresh;
  real *dx = at_grad_into(c, nd->in[0], &fresh);
  if (!dx) return;
  const real *g = nd->out[0]->grad;
  int64_t n = nd->out[0]->size;
  const int64_t blk = 4096, nb = (n + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (n >= AT_PAR_MIN)
  for (int64_t k = 0; k < nb; k++) {
    int64_t i0 = k * blk, i1 = AT_MIN(n, i0 + blk);
    if (fresh) memcpy(dx + i0, g + i0, (size_t)(i1 - i0) * sizeof(real));
    else
      for (int64_t i = i0; i < i1; i++) dx[i] += g[i];
  }
}

at_tensor *at_reshape(at_ctx *c, at_tensor *x, int ndim, const int64_t *shape) {
  if (!x) return NULL;
  char sx[96], sn[96];
  int64_t s[AT_MAX_DIMS], known = 1;
  int free_dim = -1, ok = ndim >= 1 && ndim <= AT_MAX_DIMS;
  for (int i = 0; ok && i < ndim; i++) {
    s[i] = shape[i];
    if (shape[i] == -1 && free_dim < 0) free_dim = i;
    else if (shape[i] < 0) ok = 0;
    else known *= shape[i];
  }
  if (ok && free_dim >= 0) {
    ok = known > 0 && x->size % known == 0;
    if (ok) s[free_dim] = x->size / known;
  } else if (ok) {
    ok = known == x->size;
  }
  if (!ok)
    return at_fail(c, AT_E_SHAPE, "reshape: cannot view %s as %s", AT_SHAPE_STR(x, sx),
                   ndim >= 1 && ndim <= AT_MAX_DIMS ? at_shape_str(ndim, shape, sn) : "(bad rank)");
  at_tensor *y = at_tensor_over(c->arena, x->data, ndim, s);
  if (!y) return at_fail(c, AT_E_NOMEM, "reshape: out of memory");
  at_tensor *ins[] = {x}, *outs[] = {y};
  AT_RECORD(c, "reshape", reshape_backward, ins, outs);
  return y;
}

/* ---- permute and transpose ------------------------------------------------------ */

/* Over 4 padded dims: y[i] = x[sum_d i_d xst[d]] where xst are x's strides
 * taken in output order. Backward runs the other way: dx[..] += g[i], or
 * dx[..] = g[i] when dx is fresh (a bijection, so rows can run in parallel). */
enum { PERM_FORWARD, PERM_ADD, PERM_STORE };
static void permute_copy(const int64_t os[4], const int64_t xst[4], real *x, real *y, int mode) {
  int64_t outer = os[0] * os[1] * os[2], n3 = os[3];
#pragma omp parallel for schedule(static) if (outer * n3 >= AT_PAR_MIN)
  for (int64_t r = 0; r < outer; r++) {
    int64_t i0 = r / (os[1] * os[2]), i1 = r / os[2] % os[1], i2 = r % os[2];
    real *xr = x + i0 * xst[0] + i1 * xst[1] + i2 * xst[2], *yr = y + r * n3;
    if (mode == PERM_ADD)
      for (int64_t j = 0; j < n3; j++) xr[j * xst[3]] += yr[j];
    else if (mode == PERM_STORE)
      for (int64_t j = 0; j < n3; j++) xr[j * xst[3]] = yr[j];
    else
      for (int64_t j = 0; j < n3; j++) yr[j] = xr[j * xst[3]];
  }
}

/* node->i[0..3]: output shape padded, i[4..7]: x strides in output order. */
static void permute_backward(at_ctx *c, at_node *nd) {
  int fresh;
  real *dx = at_grad_into(c, nd->in[0], &fresh);
  if (dx) permute_copy(nd->i, nd->i + 4, dx, nd->out[0]->grad, fresh ? PERM_STORE : PERM_ADD);
}

static at_tensor *permute_run(at_ctx *c, const char *name, at_tensor *x, const int *perm) {
  int r = x->ndim, pad = AT_MAX_DIMS - r;
  int64_t shape[AT_MAX_DIMS], xs[4], xstride[4], os[4], xst[4];
  for (int i = 0; i < r; i++) shape[i] = x->shape[perm[i]];
  at_tensor *y = at_new(c, r, shape);
  if (!y) return NULL;
  at_ops_pad4(r, x->shape, xs);
  at_ops_pad4(r, shape, os);
  int64_t s = 1;
  for (int d = 3; d >= 0; d--) xstride[d] = s, s *= xs[d];
  for (int d = 0; d < 4; d++) xst[d] = d < pad ? 0 : xstride[pad + perm[d - pad]];
  permute_copy(os, xst, x->data, y->data, PERM_FORWARD);
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, name, permute_backward, ins, outs);
  if (nd)
    for (int d = 0; d < 4; d++) nd->i[d] = os[d], nd->i[4 + d] = xst[d];
  return y;
}

at_tensor *at_permute(at_ctx *c, at_tensor *x, const int *perm) {
  if (!x) return NULL;
  int seen[AT_MAX_DIMS] = {0}, ok = perm != NULL;
  for (int i = 0; ok && i < x->ndim; i++) {
    ok = perm[i] >= 0 && perm[i] < x->ndim && !seen[perm[i]];
    if (ok) seen[perm[i]] = 1;
  }
  if (!ok) {
    char sx[96];
    return at_fail(c, AT_E_ARG, "permute: not a permutation of the %d dims of %s", x->ndim,
                   AT_SHAPE_STR(x, sx));
  }
  return permute_run(c, "permute", x, perm);
}

at_tensor *at_transpose(at_ctx *c, at_tensor *x, int d0, int d1) {
  if (!x) return NULL;
  int a = at_ops_dim(d0, x->ndim), b = at_ops_dim(d1, x->ndim);
  if (a < 0 || b < 0) {
    char sx[96];
    return at_fail(c, AT_E_ARG, "transpose: dims %d, %d outside the rank of %s", d0, d1,
                   AT_SHAPE_STR(x, sx));
  }
  int perm[AT_MAX_DIMS];
  for (int i = 0; i < x->ndim; i++) perm[i] = i;
  perm[a] = b, perm[b] = a;
  return permute_run(c, "transpose", x, perm);
}

/* ---- slice ---------------------------------------------------------------------- */

/* node->i: [0] outer, [1] n (x's size along dim), [2] inner, [3] start, [4] len. */
static void slice_backward(at_ctx *c, at_node *nd) {
  real *dx = at_grad(c, nd->in[0]);
  if (!dx) return;
  int64_t outer = nd->i[0], n = nd->i[1], inner = nd->i[2], start = nd->i[3], len = nd->i[4];
  const real *g = nd->out[0]->grad;
  int64_t m = len * inner;
#pragma omp parallel for schedule(static) if (outer * m >= AT_PAR_MIN)
  for (int64_t o = 0; o < outer; o++) {
    real *d = dx + (o * n + start) * inner;
    const real *go = g + o * m;
    for (int64_t i = 0; i < m; i++) d[i] += go[i];
  }
}

at_tensor *at_slice(at_ctx *c, at_tensor *x, int dim, int64_t start, int64_t len) {
  if (!x) return NULL;
  int d = at_ops_dim(dim, x->ndim);
  if (d < 0 || start < 0 || len < 0 || start + len > x->shape[d]) {
    char sx[96];
    return at_fail(c, AT_E_SHAPE, "slice: elements %lld..%lld along dim %d do not fit in %s",
                   (long long)start, (long long)(start + len - 1), dim, AT_SHAPE_STR(x, sx));
  }
  int64_t outer, n, inner, shape[AT_MAX_DIMS];
  at_ops_split(x, d, &outer, &n, &inner);
  memcpy(shape, x->shape, sizeof shape);
  shape[d] = len;
  at_tensor *y = at_new(c, x->ndim, shape);
  if (!y) return NULL;
  int64_t m = len * inner;
  const real *xd = x->data;
  if (m > 0) {
#pragma omp parallel for schedule(static) if (outer * m >= AT_PAR_MIN)
    for (int64_t o = 0; o < outer; o++)
      memcpy(y->data + o * m, xd + (o * n + start) * inner, (size_t)m * sizeof(real));
  }
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "slice", slice_backward, ins, outs);
  if (nd) nd->i[0] = outer, nd->i[1] = n, nd->i[2] = inner, nd->i[3] = start, nd->i[4] = len;
  return y;
}

/* ---- concat ---------------------------------------------------------------------- */

/* node->i: [0] outer, [1] inner, [2] output size along dim, [3] dim. */
static void concat_backward(at_ctx *c, at_node *nd) {
  int64_t outer = nd->i[0], inner = nd->i[1], total = nd->i[2], off = 0;
  int d = (int)nd->i[3];
  const real *g = nd->out[0]->grad;
  for (int k = 0; k < nd->n_in; k++) {
    at_tensor *x = nd->in[k];
    int64_t m = x->shape[d] * inner;
    real *dx = at_grad(c, x);
    if (dx) {
#pragma omp parallel for schedule(static) if (outer * m >= AT_PAR_MIN)
      for (int64_t o = 0; o < outer; o++) {
        const real *go = g + o * total * inner + off;
        real *dxo = dx + o * m;
        for (int64_t i = 0; i < m; i++) dxo[i] += go[i];
      }
    }
    off += m;
  }
}

at_tensor *at_concat(at_ctx *c, at_tensor *const *xs, int n, int dim) {
  if (!xs || n < 1) return at_fail(c, AT_E_ARG, "concat: needs at least one tensor (got %d)", n);
  for (int k = 0; k < n; k++)
    if (!xs[k]) return NULL;
  if (n > AT_NODE_MAX_IN) { /* more inputs than a node holds: concat in halves */
    at_tensor *h[2] = {at_concat(c, xs, n / 2, dim), at_concat(c, xs + n / 2, n - n / 2, dim)};
    return h[0] && h[1] ? at_concat(c, h, 2, dim) : NULL;
  }
  const at_tensor *x0 = xs[0];
  int d = at_ops_dim(dim, x0->ndim);
  if (d < 0) {
    char s0[96];
    return at_fail(c, AT_E_ARG, "concat: dim %d outside the rank of %s", dim,
                   AT_SHAPE_STR(x0, s0));
  }
  int64_t total = 0;
  for (int k = 0; k < n; k++) {
    int ok = xs[k]->ndim == x0->ndim;
    for (int i = 0; ok && i < x0->ndim; i++) ok = i == d || xs[k]->shape[i] == x0->shape[i];
    if (!ok) {
      char s0[96], sk[96];
      return at_fail(c, AT_E_SHAPE, "concat: %s (input %d) does not fit %s along dim %d",
                     AT_SHAPE_STR(xs[k], sk), k, AT_SHAPE_STR(x0, s0), dim);
    }
    total += xs[k]->shape[d];
  }
  int64_t outer, nn, inner, shape[AT_MAX_DIMS];
  at_ops_split(x0, d, &outer, &nn, &inner);
  memcpy(shape, x0->shape, sizeof shape);
  shape[d] = total;
  at_tensor *y = at_new(c, x0->ndim, shape);
  if (!y) return NULL;
  int64_t off = 0;
  for (int k = 0; k < n; k++) {
    int64_t m = xs[k]->shape[d] * inner;
    const real *xd = xs[k]->data;
    if (m > 0) {
#pragma omp parallel for schedule(static) if (outer * m >= AT_PAR_MIN)
      for (int64_t o = 0; o < outer; o++)
        memcpy(y->data + o * total * inner + off, xd + o * m, (size_t)m * sizeof(real));
    }
    off += m;
  }
  at_node *nd = at_record(c, "concat", concat_backward, n, (at_tensor *const *)xs, 1, &y);
  if (nd) nd->i[0] = outer, nd->i[1] = inner, nd->i[2] = total, nd->i[3] = d;
  return y;
}
