/* ops/index.c: embedding lookup, gather / scatter-add by index, top-k.
 *
 *   embedding:    y[p, :] = W[id_p, :]                dW[id_p, :] += g[p, :]
 *   gather:       y[o,j,i] = x[o, idx[o,j,i], i]      dx[o, idx[o,j,i], i] += g[o,j,i]
 *   scatter_add:  y = x;  y[o, idx[o,j,i], i] += s[o,j,i]
 *                 dx = g;  ds[o,j,i] = g[o, idx[o,j,i], i]
 *   topk:         indices of the k largest per row (no gradient)
 *
 * (x seen as [outer, n, inner] around dim; idx as [outer, k, inner].)
 * Index tensors are not tape inputs; ops that need them in backward keep a
 * copy, so the caller may reuse its buffer. Accumulations where indices may
 * repeat run over disjoint columns in parallel, each in index order, so the
 * sums do not depend on the thread count.
 */
#include <math.h>
#include <string.h>

#include "ops/util.h"

#define COLS 16 /* columns per work item in accumulations */

static int32_t *copy_ids(at_ctx *c, const at_itensor *ids) {
  int32_t *p = at_scratch(c, (size_t)AT_MAX(ids->size, 1) * sizeof(int32_t));
  if (p) memcpy(p, ids->data, (size_t)ids->size * sizeof(int32_t));
  return p;
}

/* ---- embedding ---------------------------------------------------------------- */

/* node->i: [0] number of ids, [1] D; saved: the ids. */
static void embedding_backward(at_ctx *c, at_node *nd) {
  real *dw = at_grad(c, nd->in[0]);
  if (!dw) return;
  const int32_t *ids = nd->saved;
  int64_t n = nd->i[0], d = nd->i[1], nb = (d + COLS - 1) / COLS;
  const real *g = nd->out[0]->grad;
#pragma omp parallel for schedule(static) if (n * d >= AT_PAR_MIN)
  for (int64_t b = 0; b < nb; b++) {
    int64_t j0 = b * COLS, j1 = AT_MIN(d, j0 + COLS);
    for (int64_t p = 0; p < n; p++) {
      real *dr = dw + (int64_t)ids[p] * d;
      const real *gr = g + p * d;
      for (int64_t j = j0; j < j1; j++) dr[j] += gr[j];
    }
  }
}

at_tensor *at_embedding(at_ctx *c, at_tensor *table, const at_itensor *ids) {
  if (!table || !ids) return NULL;
  char st[96], si[96];
  if (table->ndim != 2 || ids->ndim < 1 || ids->ndim > AT_MAX_DIMS - 1)
    return at_fail(c, AT_E_SHAPE, "embedding: table %s (want [V, D]) and ids %s (want 1-3 dims)",
                   AT_SHAPE_STR(table, st), at_shape_str(ids->ndim, ids->shape, si));
  int64_t v = table->shape[0], d = table->shape[1], n = ids->size;
  for (int64_t p = 0; p < n; p++)
    if (ids->data[p] < 0 || ids->data[p] >= v)
      return at_fail(c, AT_E_ARG, "embedding: id %d at position %lld outside the table %s",
                     (int)ids->data[p], (long long)p, AT_SHAPE_STR(table, st));
  int64_t shape[AT_MAX_DIMS];
  memcpy(shape, ids->shape, (size_t)ids->ndim * sizeof(int64_t));
  shape[ids->ndim] = d;
  at_tensor *y = at_new(c, ids->ndim + 1, shape);
  if (!y) return NULL;
  const real *w = table->data;
  const int32_t *id = ids->data;
#pragma omp parallel for schedule(static) if (n * d >= AT_PAR_MIN)
  for (int64_t p = 0; p < n; p++)
    memcpy(y->data + p * d, w + (int64_t)id[p] * d, (size_t)d * sizeof(real));
  at_tensor *ins[] = {table}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "embedding", embedding_backward, ins, outs);
  if (nd) {
    nd->i[0] = n, nd->i[1] = d;
    if (!(nd->saved = copy_ids(c, ids))) return NULL;
  }
  return y;
}

/* ---- gather and scatter_add ------------------------------------------------------ */

/* Checks idx against x (same rank, same shape except along dim d, values in
 * [0, x.shape[d])) and, for scatter_add, src against idx (same shape). */
static int check_index(at_ctx *c, const char *name, const at_tensor *x, int dim, int *d,
                       const at_itensor *idx, const at_tensor *src) {
  char sx[96], si[96], ss[96];
  *d = at_ops_dim(dim, x->ndim);
  int ok = *d >= 0 && idx->ndim == x->ndim;
  for (int i = 0; ok && i < x->ndim; i++) ok = i == *d || idx->shape[i] == x->shape[i];
  if (ok && src) ok = src->ndim == idx->ndim;
  for (int i = 0; ok && src && i < idx->ndim; i++) ok = src->shape[i] == idx->shape[i];
  if (!ok) {
    at_fail(c, AT_E_SHAPE, "%s: index %s%s%s does not fit %s along dim %d", name,
            at_shape_str(idx->ndim, idx->shape, si), src ? " and source " : "",
            src ? AT_SHAPE_STR(src, ss) : "", AT_SHAPE_STR(x, sx), dim);
    return 0;
  }
  int64_t n = x->shape[*d];
  for (int64_t p = 0; p < idx->size; p++)
    if (idx->data[p] < 0 || idx->data[p] >= n) {
      at_fail(c, AT_E_ARG, "%s: index %d at position %lld outside 0..%lld (dim %d of %s)", name,
              (int)idx->data[p], (long long)p, (long long)n - 1, dim, AT_SHAPE_STR(x, sx));
      return 0;
    }
  return 1;
}

/* acc[o, idx[o,j,i], i] += src[o,j,i] over [outer, k, inner] (acc is [outer, n, inner]).
 * Work items are (o, column block); each walks j in order. */
static void scatter_acc(int64_t outer, int64_t n, int64_t k, int64_t inner, const int32_t *idx,
                        const real *src, real *acc) {
  int64_t nb = (inner + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if (outer * k * inner >= AT_PAR_MIN)
  for (int64_t w = 0; w < outer * nb; w++) {
    int64_t o = w / nb, i0 = (w % nb) * COLS, i1 = AT_MIN(inner, i0 + COLS);
    for (int64_t j = 0; j < k; j++) {
      int64_t r = (o * k + j) * inner;
      for (int64_t i = i0; i < i1; i++) acc[(o * n + idx[r + i]) * inner + i] += src[r + i];
    }
  }
}

/* out[o,j,i] (+)= x[o, idx[o,j,i], i]. */
static void gather_rows(int64_t outer, int64_t n, int64_t k, int64_t inner, const int32_t *idx,
                        const real *x, real *out, int accumulate) {
  int64_t m = outer * k;
#pragma omp parallel for schedule(static) if (m * inner >= AT_PAR_MIN)
  for (int64_t r = 0; r < m; r++) {
    int64_t o = r / k;
    const int32_t *ir = idx + r * inner;
    real *yr = out + r * inner;
    for (int64_t i = 0; i < inner; i++) {
      real v = x[(o * n + ir[i]) * inner + i];
      yr[i] = accumulate ? yr[i] + v : v;
    }
  }
}

/* node->i: [0] outer, [1] n, [2] k, [3] inner; saved: idx. */
static void gather_backward(at_ctx *c, at_node *nd) {
  real *dx = at_grad(c, nd->in[0]);
  if (dx)
    scatter_acc(nd->i[0], nd->i[1], nd->i[2], nd->i[3], nd->saved, nd->out[0]->grad, dx);
}

at_tensor *at_gather(at_ctx *c, at_tensor *x, int dim, const at_itensor *idx) {
  if (!x || !idx) return NULL;
  int d;
  if (!check_index(c, "gather", x, dim, &d, idx, NULL)) return NULL;
  int64_t outer, n, inner, k = idx->shape[d];
  at_ops_split(x, d, &outer, &n, &inner);
  at_tensor *y = at_new(c, idx->ndim, idx->shape);
  if (!y) return NULL;
  gather_rows(outer, n, k, inner, idx->data, x->data, y->data, 0);
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "gather", gather_backward, ins, outs);
  if (nd) {
    nd->i[0] = outer, nd->i[1] = n, nd->i[2] = k, nd->i[3] = inner;
    if (!(nd->saved = copy_ids(c, idx))) return NULL;
  }
  return y;
}

/* node->i as gather's; in: x, src. */
static void scatter_add_backward(at_ctx *c, at_node *nd) {
  real *dx = at_grad(c, nd->in[0]), *ds = at_grad(c, nd->in[1]);
  const real *g = nd->out[0]->grad;
  if (dx) {
    int64_t n = nd->out[0]->size;
#pragma omp parallel for schedule(static) if (n >= AT_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += g[i];
  }
  if (ds) gather_rows(nd->i[0], nd->i[1], nd->i[2], nd->i[3], nd->saved, g, ds, 1);
}

at_tensor *at_scatter_add(at_ctx *c, at_tensor *x, int dim, const at_itensor *idx,
                          at_tensor *src) {
  if (!x || !idx || !src) return NULL;
  int d;
  if (!check_index(c, "scatter_add", x, dim, &d, idx, src)) return NULL;
  int64_t outer, n, inner, k = idx->shape[d];
  at_ops_split(x, d, &outer, &n, &inner);
  at_tensor *y = at_from(c, x->data, x->ndim, x->shape);
  if (!y) return NULL;
  scatter_acc(outer, n, k, inner, idx->data, src->data, y->data);
  at_tensor *ins[] = {x, src}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "scatter_add", scatter_add_backward, ins, outs);
  if (nd) {
    nd->i[0] = outer, nd->i[1] = n, nd->i[2] = k, nd->i[3] = inner;
    if (!(nd->saved = copy_ids(c, idx))) return NULL;
  }
  return y;
}

/* ---- top-k ------------------------------------------------------------------------ */

/* Entry a ranks above entry b: larger value, or equal value and lower index. */
static inline int above(const real *v, int32_t a, int32_t b) {
  return v[a] > v[b] || (v[a] == v[b] && a < b);
}

/* Restores the heap (lowest-ranked entry at the root) below position i. */
static void sift_down(const real *v, int32_t *h, int64_t m, int64_t i) {
  for (;;) {
    int64_t l = 2 * i + 1, r = l + 1, w = i;
    if (l < m && above(v, h[w], h[l])) w = l;
    if (r < m && above(v, h[w], h[r])) w = r;
    if (w == i) return;
    int32_t t = h[i];
    h[i] = h[w], h[w] = t;
    i = w;
  }
}

/* The k best of one row into out[0..k) (best first; -1 for missing). The
 * heap lives in out itself: O(n log k). NaN and -inf are never selected. */
static void topk_row(const real *v, int64_t n, int64_t k, int32_t *out) {
  int64_t m = 0;
  for (int64_t j = 0; j < n; j++) {
    if (!(v[j] > -INFINITY)) continue;
    int32_t e = (int32_t)j;
    if (m < k) { /* sift up */
      int64_t i = m++;
      while (i > 0 && above(v, out[(i - 1) / 2], e)) out[i] = out[(i - 1) / 2], i = (i - 1) / 2;
      out[i] = e;
    } else if (above(v, e, out[0])) {
      out[0] = e;
      sift_down(v, out, m, 0);
    }
  }
  /* Heap sort: the lowest-ranked entry goes to the end each time. */
  for (int64_t s = m - 1; s > 0; s--) {
    int32_t t = out[0];
    out[0] = out[s], out[s] = t;
    sift_down(v, out, s, 0);
  }
  for (int64_t s = m; s < k; s++) out[s] = -1;
}

at_itensor *at_topk(at_ctx *c, const at_tensor *x, int64_t k) {
  if (!x) return NULL;
  char sx[96];
  if (x->ndim < 1 || k < 1 || k > x->shape[x->ndim - 1] || x->shape[x->ndim - 1] > INT32_MAX)
    return at_fail(c, AT_E_ARG, "topk: k = %lld does not fit the last dim of %s", (long long)k,
                   AT_SHAPE_STR(x, sx));
  int64_t n = x->shape[x->ndim - 1], rows = x->size / n, shape[AT_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = k;
  at_itensor *out = at_inew(c, x->ndim, shape);
  if (!out) return NULL;
  const real *xd = x->data;
#pragma omp parallel for schedule(static) if (rows * n >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) topk_row(xd + r * n, n, k, out->data + r * k);
  return out;
}
