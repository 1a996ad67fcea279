/* ops/linear.c: matrix products on BLIS.
 *
 *   matmul:  C = op(A) op(B)          dA' = dC op(B)^T,   dB' = op(A)^T dC
 *   linear:  y = x W^T + b            dx = dy W,  dW = dy^T x,  db = sum_rows dy
 *
 * (A' = op(A); when A is stored transposed its gradient is (dA')^T.)
 */
#include <string.h>

#include "ops/ops.h"

/* ---- matmul ---------------------------------------------------------------- */

typedef struct mm_dims {
  int64_t batch, m, n, k;
  int b_shared; /* b is 2-D: one matrix for every batch entry */
} mm_dims;

static void mm_forward(const mm_dims *d, at_trans ta, at_trans tb, const real *a, const real *b,
                       real beta, real *out) {
  int64_t lda = ta == AT_N ? d->k : d->m, ldb = tb == AT_N ? d->n : d->k;
  if (d->b_shared && ta == AT_N) /* the batch folds into the rows of one GEMM */
    at_gemm(AT_N, tb, d->batch * d->m, d->n, d->k, 1, a, lda, b, ldb, beta, out, d->n);
  else
    at_gemm_batched(d->batch, ta, tb, d->m, d->n, d->k, 1, a, lda, d->m * d->k, b, ldb,
                    d->b_shared ? 0 : d->k * d->n, beta, out, d->n, d->m * d->n);
}

static void matmul_backward(at_ctx *c, at_node *nd) {
  at_tensor *a = nd->in[0], *b = nd->in[1], *out = nd->out[0];
  mm_dims d = {nd->i[0], nd->i[1], nd->i[2], nd->i[3], (int)nd->i[4]};
  at_trans ta = (at_trans)nd->i[5], tb = (at_trans)nd->i[6];
  const real *dc = out->grad;
  int64_t lda = ta == AT_N ? d.k : d.m, ldb = tb == AT_N ? d.n : d.k;
  int fresh; /* da is written before db is read: a and b may be one tensor */
  real *da = at_grad_into(c, a, &fresh), beta = fresh ? 0 : 1;
  if (da) {
    if (ta == AT_N) { /* dA = dC op(B)^T, [m,n] x [n,k] */
      at_trans t = tb == AT_N ? AT_T : AT_N;
      if (d.b_shared)
        at_gemm(AT_N, t, d.batch * d.m, d.k, d.n, 1, dc, d.n, b->data, ldb, beta, da, lda);
      else
        at_gemm_batched(d.batch, AT_N, t, d.m, d.k, d.n, 1, dc, d.n, d.m * d.n, b->data, ldb,
                        d.k * d.n, beta, da, lda, d.m * d.k);
    } else { /* a stored [k,m]: dA = op(B) dC^T, [k,n] x [n,m] */
      at_gemm_batched(d.batch, tb, AT_T, d.k, d.m, d.n, 1, b->data, ldb,
                      d.b_shared ? 0 : d.k * d.n, dc, d.n, d.m * d.n, beta, da, lda, d.m * d.k);
    }
  }
  real *db = at_grad(c, b);
  if (db) {
    if (d.b_shared && ta == AT_N) { /* one GEMM over all rows of every batch entry */
      if (tb == AT_N)
        at_gemm(AT_T, AT_N, d.k, d.n, d.batch * d.m, 1, a->data, lda, dc, d.n, 1, db, ldb);
      else
        at_gemm(AT_T, AT_N, d.n, d.k, d.batch * d.m, 1, dc, d.n, a->data, lda, 1, db, ldb);
    } else if (d.b_shared) { /* ta = T, shared b: accumulate batch entries in turn */
      for (int64_t i = 0; i < d.batch; i++) {
        const real *ai = a->data + i * d.m * d.k, *dci = dc + i * d.m * d.n;
        if (tb == AT_N) /* dB = op(A)^T dC = a dC */
          at_gemm(AT_N, AT_N, d.k, d.n, d.m, 1, ai, lda, dci, d.n, 1, db, ldb);
        else /* dB = dC^T op(A) = dC^T a^T */
          at_gemm(AT_T, AT_T, d.n, d.k, d.m, 1, dci, d.n, ai, lda, 1, db, ldb);
      }
    } else {
      if (tb == AT_N) /* dB = op(A)^T dC, [k,m] x [m,n] */
        at_gemm_batched(d.batch, ta == AT_N ? AT_T : AT_N, AT_N, d.k, d.n, d.m, 1, a->data, lda,
                        d.m * d.k, dc, d.n, d.m * d.n, 1, db, ldb, d.k * d.n);
      else /* b stored [n,k]: dB = dC^T op(A), [n,m] x [m,k] */
        at_gemm_batched(d.batch, AT_T, ta, d.n, d.k, d.m, 1, dc, d.n, d.m * d.n, a->data, lda,
                        d.m * d.k, 1, db, ldb, d.k * d.n);
    }
  }
}

at_tensor *at_matmul(at_ctx *c, at_tensor *a, at_tensor *b, at_trans ta, at_trans tb) {
  if (!a || !b) return NULL;
  char sa[96], sb[96];
  if (a->ndim < 2 || b->ndim < 2 || (b->ndim != 2 && b->ndim != a->ndim))
    return at_fail(c, AT_E_SHAPE, "matmul: ranks of %s and %s do not fit", AT_SHAPE_STR(a, sa),
                   AT_SHAPE_STR(b, sb));
  mm_dims d;
  int r = a->ndim;
  d.m = a->shape[r - (ta == AT_N ? 2 : 1)];
  d.k = a->shape[r - (ta == AT_N ? 1 : 2)];
  int64_t kb = b->shape[b->ndim - (tb == AT_N ? 2 : 1)];
  d.n = b->shape[b->ndim - (tb == AT_N ? 1 : 2)];
  d.batch = at_shape_size(r - 2, a->shape);
  d.b_shared = b->ndim == 2;
  int batch_ok = d.b_shared || at_shape_size(r - 2, b->shape) == d.batch;
  for (int i = 0; !d.b_shared && i < r - 2; i++) batch_ok &= a->shape[i] == b->shape[i];
  if (kb != d.k || !batch_ok)
    return at_fail(c, AT_E_SHAPE, "matmul: %s%s times %s%s do not fit", AT_SHAPE_STR(a, sa),
                   ta == AT_T ? "^T" : "", AT_SHAPE_STR(b, sb), tb == AT_T ? "^T" : "");
  int64_t shape[AT_MAX_DIMS];
  memcpy(shape, a->shape, sizeof shape);
  shape[r - 2] = d.m;
  shape[r - 1] = d.n;
  at_tensor *out = at_new(c, r, shape);
  if (!out) return NULL;
  mm_forward(&d, ta, tb, a->data, b->data, 0, out->data);
  at_tensor *ins[] = {a, b}, *outs[] = {out};
  at_node *nd = AT_RECORD(c, "matmul", matmul_backward, ins, outs);
  if (nd) {
    nd->i[0] = d.batch, nd->i[1] = d.m, nd->i[2] = d.n, nd->i[3] = d.k, nd->i[4] = d.b_shared;
    nd->i[5] = ta, nd->i[6] = tb;
  }
  return out;
}

/* ---- linear ------------------------------------------------------------------ */

static void linear_backward(at_ctx *c, at_node *nd) {
  at_tensor *x = nd->in[0], *w = nd->in[1], *bias = nd->in[2], *y = nd->out[0];
  int64_t in = w->shape[1], out = w->shape[0], rows = x->size / in;
  const real *dy = y->grad;
  int fresh;
  real *dx = at_grad_into(c, x, &fresh), *dw = at_grad(c, w), *db = at_grad(c, bias);
  if (dx) at_gemm(AT_N, AT_N, rows, in, out, 1, dy, out, w->data, in, fresh ? 0 : 1, dx, in);
  if (dw) at_gemm(AT_T, AT_N, out, in, rows, 1, dy, out, x->data, in, 1, dw, in);
  if (db)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < out; j++) db[j] += dy[r * out + j];
}

at_tensor *at_linear(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *bias) {
  if (!x || !w) return NULL;
  char sx[96], sw[96];
  if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1] ||
      (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0])))
    return at_fail(c, AT_E_SHAPE, "linear: input %s does not fit weight %s%s",
                   AT_SHAPE_STR(x, sx), AT_SHAPE_STR(w, sw), bias ? " and bias" : "");
  int64_t in = w->shape[1], out = w->shape[0], rows = x->size / in;
  int64_t shape[AT_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = out;
  at_tensor *y = at_new(c, x->ndim, shape);
  if (!y) return NULL;
  at_gemm(AT_N, AT_T, rows, out, in, 1, x->data, in, w->data, in, 0, y->data, out);
  if (bias)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < out; j++) y->data[r * out + j] += bias->data[j];
  at_tensor *ins[] = {x, w, bias}, *outs[] = {y};
  AT_RECORD(c, "linear", linear_backward, ins, outs);
  return y;
}
