/* ops/loss.c: cross-entropy of logits against integer labels, fused with the
 * log-softmax.
 *
 *   per labelled row r (label l_r != ignore), z = logits[r, :]:
 *     ls_r = log sum_j e^(z_j - mx_r),   loss_r = ls_r - (z_{l_r} - mx_r)
 *   L = (1/N) sum_r loss_r,   N = number of labelled rows (L = 0 when N = 0)
 *   dz_rj = (g / N) (e^((z_j - mx_r) - ls_r) - [j = l_r])   (ignored rows: 0)
 *
 * Subtracting the row max keeps e^ finite for any logits, and keeping mx and
 * ls apart keeps ls when |mx| is huge; sums are in double.
 * The per-row losses are added in row order, so L does not depend on the
 * thread count.
 */
#include <tgmath.h>
#include <string.h>

#include "core/fastmath.h"
#include "ops/util.h"

typedef struct ce_saved {
  int32_t *labels; /* a copy of the labels */
  real *mx, *ls;   /* per row (row max, log of the sum); unset for ignored rows */
} ce_saved;

/* node->i: [0] rows, [1] V, [2] ignore, [3] number of labelled rows. */
static void ce_backward(at_ctx *c, at_node *nd) {
  at_tensor *z = nd->in[0];
  int fresh;
  real *dz = at_grad_into(c, z, &fresh);
  int64_t rows = nd->i[0], v = nd->i[1], count = nd->i[3];
  int ignore = (int)nd->i[2];
  if (!dz) return;
  const ce_saved *sv = nd->saved;
  real scale = (real)((double)nd->out[0]->grad[0] / (double)AT_MAX(count, 1));
#pragma omp parallel for schedule(static) if (z->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    int32_t l = sv->labels[r];
    real *dr = dz + r * v;
    if (l == ignore) {
      if (fresh) memset(dr, 0, (size_t)v * sizeof(real));
      continue;
    }
    const real *zr = z->data + r * v;
    real mx = sv->mx[r], ls = sv->ls[r];
    if (fresh)
      for (int64_t j = 0; j < v; j++) dr[j] = scale * at_expr((zr[j] - mx) - ls);
    else
      for (int64_t j = 0; j < v; j++) dr[j] += scale * at_expr((zr[j] - mx) - ls);
    dr[l] -= scale;
  }
}

at_tensor *at_cross_entropy(at_ctx *c, at_tensor *logits, const at_itensor *labels, int ignore,
                            int64_t *n_counted, int64_t *n_correct) {
  if (n_counted) *n_counted = 0;
  if (n_correct) *n_correct = 0;
  if (!logits || !labels) return NULL;
  char sz[96], sl[96];
  int ok = logits->ndim >= 2 && labels->ndim == logits->ndim - 1 &&
           logits->shape[logits->ndim - 1] > 0;
  for (int i = 0; ok && i < labels->ndim; i++) ok = labels->shape[i] == logits->shape[i];
  if (!ok)
    return at_fail(c, AT_E_SHAPE,
                   "cross_entropy: labels %s do not fit logits %s (want [...] and [..., V])",
                   at_shape_str(labels->ndim, labels->shape, sl), AT_SHAPE_STR(logits, sz));
  int64_t v = logits->shape[logits->ndim - 1], rows = labels->size;
  const int32_t *lab = labels->data;
  for (int64_t r = 0; r < rows; r++)
    if (lab[r] != ignore && (lab[r] < 0 || lab[r] >= v))
      return at_fail(c, AT_E_ARG,
                     "cross_entropy: label %d at position %lld outside 0..%lld (ignore = %d)",
                     (int)lab[r], (long long)r, (long long)v - 1, ignore);
  at_tensor *y = AT_NEW(c, 1);
  real *mxs = at_scratch(c, (size_t)AT_MAX(2 * rows, 1) * sizeof(real)), *lss = mxs + rows;
  double *loss = at_scratch(c, (size_t)AT_MAX(rows, 1) * sizeof(double));
  unsigned char *hit = at_scratch(c, (size_t)AT_MAX(rows, 1));
  if (!y || !mxs || !loss || !hit) return NULL;
  const real *zd = logits->data;
#pragma omp parallel for schedule(static) if (logits->size >= AT_PAR_MIN)
  for (int64_t r = 0; r < rows; r++) {
    loss[r] = 0, hit[r] = 0;
    if (lab[r] == ignore) continue;
    const real *zr = zd + r * v;
    /* vector max, then the first position holding it (the argmax); the sum
     * in double in vector lanes (the order moves it by ~1e-16, under float rounding) */
    real mx = zr[0];
#pragma omp simd reduction(max : mx)
    for (int64_t j = 1; j < v; j++) mx = zr[j] > mx ? zr[j] : mx;
    int64_t arg = 0;
    while (arg < v - 1 && zr[arg] != mx) arg++;
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < v; j++) s += at_expr(zr[j] - mx);
    double ls = log(s);
    mxs[r] = mx, lss[r] = (real)ls;
    loss[r] = ls - (double)(zr[lab[r]] - mx);
    hit[r] = arg == lab[r];
  }
  double total = 0;
  int64_t count = 0, correct = 0;
  for (int64_t r = 0; r < rows; r++)
    if (lab[r] != ignore) total += loss[r], count++, correct += hit[r];
  y->data[0] = count ? (real)(total / (double)count) : 0;
  if (n_counted) *n_counted = count;
  if (n_correct) *n_correct = correct;
  at_tensor *ins[] = {logits}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "cross_entropy", ce_backward, ins, outs);
  if (nd) {
    ce_saved *sv = at_scratch(c, sizeof *sv);
    int32_t *lc = at_scratch(c, (size_t)AT_MAX(rows, 1) * sizeof(int32_t));
    if (!sv || !lc) return NULL;
    memcpy(lc, lab, (size_t)rows * sizeof(int32_t));
    sv->labels = lc, sv->mx = mxs, sv->ls = lss;
    nd->saved = sv;
    nd->i[0] = rows, nd->i[1] = v, nd->i[2] = ignore, nd->i[3] = count;
  }
  return y;
}
