/* ops/softmax.c: softmax and log-softmax over the last dim with an additive
 * constant mask.
 *
 *   z = x + mask,  mx = max_j z_j,  S = sum_j e^(z_j - mx)
 *   softmax:      y_j = e^(z_j - mx) / S          dx_j = y_j (g_j - sum_k g_k y_k)
 *   log_softmax:  y_j = z_j - mx - log S          dx_j = g_j - e^(y_j) sum_k g_k
 *
 * The mask broadcasts to x (right-aligned, size-1 dims stretch), normally 0
 * or -inf (any constant works, e.g. a position bias). Entries with z = -inf
 * are constants: softmax gives them 0, log_softmax -inf, and neither passes
 * them a gradient (the sum over k in log_softmax's backward skips them too,
 * so finite upstream gradients there are not mixed into the others). A row
 * whose every z is -inf gives zeros and a zero gradient in both ops.
 */
#include <tgmath.h>

#include "core/fastmath.h"
#include "ops/util.h"

typedef struct mask_map {
  const real *m;     /* NULL: no mask */
  int64_t st[4];     /* strides of the mask over x's padded dims (0 = stretched) */
  int64_t xs[4];     /* x's padded shape */
} mask_map;

static int mask_setup(at_ctx *c, const char *name, const at_tensor *x, const at_tensor *mask,
                      mask_map *mm) {
  mm->m = NULL;
  at_ops_pad4(x->ndim, x->shape, mm->xs);
  if (!mask) return 1;
  int ok = mask->ndim <= x->ndim;
  for (int i = 0; ok && i < mask->ndim; i++) {
    int64_t md = mask->shape[mask->ndim - 1 - i], xd = x->shape[x->ndim - 1 - i];
    ok = md == xd || md == 1;
  }
  if (!ok) {
    char sx[96], sm[96];
    at_fail(c, AT_E_SHAPE, "%s: mask %s does not broadcast to %s", name, AT_SHAPE_STR(mask, sm),
            AT_SHAPE_STR(x, sx));
    return 0;
  }
  int64_t ms[4];
  at_ops_pad4(mask->ndim, mask->shape, ms);
  at_ops_bstrides(ms, mm->st);
  mm->m = mask->data;
  return 1;
}

/* The mask row of x's row r (x seen as [rows, n]). */
static inline const real *mask_row(const mask_map *mm, int64_t r) {
  const int64_t *s = mm->xs;
  int64_t i0 = r / (s[1] * s[2]), i1 = r / s[2] % s[1], i2 = r % s[2];
  return mm->m + i0 * mm->st[0] + i1 * mm->st[1] + i2 * mm->st[2];
}

/* One row: y = softmax or log_softmax of x + m (m may be NULL; mstep 0
 * repeats its first entry). Returns 0 for a fully masked row. */
static int row_forward(const real *x, const real *m, int64_t mstep, int64_t n, int log_out,
                       real *y) {
  real mx = -INFINITY;
  if (m) /* (two loops: `m ? m[j] : 0` would be a masked load of NULL) */
    for (int64_t j = 0; j < n; j++) y[j] = x[j] + m[j * mstep];
  else
    memcpy(y, x, (size_t)n * sizeof(real));
  for (int64_t j = 0; j < n; j++) mx = y[j] > mx ? y[j] : mx;
  if (mx == -INFINITY) {
    for (int64_t j = 0; j < n; j++) y[j] = 0;
    return 0;
  }
  double s = 0;
  for (int64_t j = 0; j < n; j++) {
    real e = at_expr(y[j] - mx);
    s += e;
    if (!log_out) y[j] = e;
  }
  if (log_out) { /* (z - mx) - log S: mx + log S would lose log S next to a huge mx */
    real ls = (real)log(s);
    for (int64_t j = 0; j < n; j++) y[j] = (y[j] - mx) - ls; /* -inf stays -inf */
  } else {
    real inv = (real)(1 / s);
    for (int64_t j = 0; j < n; j++) y[j] *= inv;
  }
  return 1;
}

/* node->i[0]: 1 for log_softmax; saved (log_softmax): 1 byte per row, 1 if live. */
static void softmax_backward(at_ctx *c, at_node *nd) {
  real *dx = at_grad(c, nd->in[0]);
  if (!dx) return;
  at_tensor *y = nd->out[0];
  int64_t n = y->shape[y->ndim - 1], rows = n ? y->size / n : 0;
  int log_out = (int)nd->i[0];
  const unsigned char *live = nd->saved;
  const real *yd = y->data, *g = y->grad;
#pragma omp parallel for schedule(static) if (y->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const real *yr = yd + r * n, *gr = g + r * n;
    real *dr = dx + r * n;
    double s = 0;
    if (!log_out) {
      for (int64_t j = 0; j < n; j++) s += (double)gr[j] * yr[j];
      for (int64_t j = 0; j < n; j++) dr[j] += yr[j] * (gr[j] - (real)s);
    } else if (live[r]) {
      for (int64_t j = 0; j < n; j++)
        if (yr[j] != -INFINITY) s += gr[j];
      for (int64_t j = 0; j < n; j++)
        if (yr[j] != -INFINITY) dr[j] += gr[j] - at_expr(yr[j]) * (real)s;
    }
  }
}

static at_tensor *softmax_run(at_ctx *c, at_tensor *x, const at_tensor *mask, int log_out) {
  if (!x) return NULL;
  const char *name = log_out ? "log_softmax" : "softmax";
  if (x->ndim < 1) {
    char sx[96];
    return at_fail(c, AT_E_SHAPE, "%s: input %s has no last dim", name, AT_SHAPE_STR(x, sx));
  }
  mask_map mm;
  if (!mask_setup(c, name, x, mask, &mm)) return NULL;
  int64_t n = x->shape[x->ndim - 1], rows = n ? x->size / n : 0;
  int64_t mstep = mm.m ? mm.st[3] : 0;
  at_tensor *y = at_new(c, x->ndim, x->shape);
  unsigned char *live = at_scratch(c, (size_t)AT_MAX(rows, 1));
  if (!y || !live) return NULL;
#pragma omp parallel for schedule(static) if (x->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++)
    live[r] = (unsigned char)row_forward(x->data + r * n, mm.m ? mask_row(&mm, r) : NULL, mstep,
                                         n, log_out, y->data + r * n);
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, name, softmax_backward, ins, outs);
  if (nd) nd->i[0] = log_out, nd->saved = live;
  return y;
}

at_tensor *at_softmax(at_ctx *c, at_tensor *x, const at_tensor *mask) {
  return softmax_run(c, x, mask, 0);
}
at_tensor *at_log_softmax(at_ctx *c, at_tensor *x, const at_tensor *mask) {
  return softmax_run(c, x, mask, 1);
}
