/* ops/arith.c: elementwise arithmetic with NumPy broadcasting, and affine.
 *
 *   add:  y = a + b      da = g          db = g
 *   sub:  y = a - b      da = g          db = -g
 *   mul:  y = a * b      da = g b        db = g a
 *   div:  y = a / b      da = g / b      db = -g a / b^2
 *   affine: y = s x + t  dx = s g
 *
 * Shapes align on the right; a size-1 or missing dim stretches. The gradient
 * of a stretched operand is the sum of the terms above over the positions it
 * was stretched to. Three kernels, chosen by the shapes:
 *   same     - equal shapes;
 *   suffix   - one operand's shape (less leading 1s) is the trailing part of
 *              the other's, which is the output's (x[B,T,D] * w[D]): the
 *              small one repeats every m elements;
 *   general  - any broadcast, as a strided loop over 4 padded dims.
 * Sums over stretched positions run in a fixed order (fixed row chunks
 * reduced in sequence), so results do not depend on the thread count.
 */
#include <string.h>

#include "ops/util.h"

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV };
enum { K_SAME, K_SUFFIX_A, K_SUFFIX_B, K_GENERAL }; /* SUFFIX_A: a is the small one */

static const char *const op_names[] = {"add", "sub", "mul", "div"};

#define BLOCK 4096      /* elements per parallel work item */
#define ROW_CHUNK 256   /* rows per partial sum of a suffix operand's gradient */

/* The term of d(loss)/da (wrt_b = 0) or d(loss)/db (wrt_b = 1) at one output. */
static inline double term(int op, int wrt_b, double g, double a, double b) {
  switch (op) {
  case OP_ADD: return g;
  case OP_SUB: return wrt_b ? -g : g;
  case OP_MUL: return wrt_b ? g * a : g * b;
  default: return wrt_b ? -g * a / (b * b) : g / b;
  }
}

/* ---- same shapes ---------------------------------------------------------- */

static void same_forward(int op, int64_t n, const real *a, const real *b, real *y) {
  int64_t nb = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= AT_PAR_MIN)
  for (int64_t k = 0; k < nb; k++) {
    int64_t i0 = k * BLOCK, i1 = AT_MIN(n, i0 + BLOCK);
    switch (op) {
    case OP_ADD: for (int64_t i = i0; i < i1; i++) y[i] = a[i] + b[i]; break;
    case OP_SUB: for (int64_t i = i0; i < i1; i++) y[i] = a[i] - b[i]; break;
    case OP_MUL: for (int64_t i = i0; i < i1; i++) y[i] = a[i] * b[i]; break;
    default: for (int64_t i = i0; i < i1; i++) y[i] = a[i] / b[i]; break;
    }
  }
}

/* da and db may be the same buffer (a and b the same tensor), so each is
 * updated in its own pass; fa, fb: the buffer is fresh, stored instead of
 * added to (at_grad_into; with one buffer only da can be fresh). */
static void same_backward(int op, int64_t n, const real *g, const real *a, const real *b,
                          real *da, int fa, real *db, int fb) {
  int64_t nb = (n + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (n >= AT_PAR_MIN)
  for (int64_t k = 0; k < nb; k++) {
    int64_t i0 = k * BLOCK, i1 = AT_MIN(n, i0 + BLOCK);
    if (da && fa) switch (op) {
      case OP_ADD: case OP_SUB: memcpy(da + i0, g + i0, (size_t)(i1 - i0) * sizeof(real)); break;
      case OP_MUL: for (int64_t i = i0; i < i1; i++) da[i] = g[i] * b[i]; break;
      default: for (int64_t i = i0; i < i1; i++) da[i] = g[i] / b[i]; break;
      }
    else if (da) switch (op) {
      case OP_ADD: case OP_SUB: for (int64_t i = i0; i < i1; i++) da[i] += g[i]; break;
      case OP_MUL: for (int64_t i = i0; i < i1; i++) da[i] += g[i] * b[i]; break;
      default: for (int64_t i = i0; i < i1; i++) da[i] += g[i] / b[i]; break;
      }
    if (db && fb) switch (op) {
      case OP_ADD: memcpy(db + i0, g + i0, (size_t)(i1 - i0) * sizeof(real)); break;
      case OP_SUB: for (int64_t i = i0; i < i1; i++) db[i] = -g[i]; break;
      case OP_MUL: for (int64_t i = i0; i < i1; i++) db[i] = g[i] * a[i]; break;
      default: for (int64_t i = i0; i < i1; i++) db[i] = -g[i] * a[i] / (b[i] * b[i]); break;
      }
    else if (db) switch (op) {
      case OP_ADD: for (int64_t i = i0; i < i1; i++) db[i] += g[i]; break;
      case OP_SUB: for (int64_t i = i0; i < i1; i++) db[i] -= g[i]; break;
      case OP_MUL: for (int64_t i = i0; i < i1; i++) db[i] += g[i] * a[i]; break;
      default: for (int64_t i = i0; i < i1; i++) db[i] -= g[i] * a[i] / (b[i] * b[i]); break;
      }
  }
}

/* ---- suffix: big [rows, m], small [m] --------------------------------------- */

static void suffix_forward(int op, int small_is_a, int64_t rows, int64_t m, const real *big,
                           const real *small, real *y) {
  int64_t rb = AT_MAX(1, BLOCK / AT_MAX(m, 1)), nb = (rows + rb - 1) / rb;
#pragma omp parallel for schedule(static) if (rows * m >= AT_PAR_MIN)
  for (int64_t k = 0; k < nb; k++)
    for (int64_t r = k * rb; r < AT_MIN(rows, (k + 1) * rb); r++) {
      const real *x = big + r * m;
      real *o = y + r * m;
      if (small_is_a) switch (op) {
        case OP_ADD: for (int64_t j = 0; j < m; j++) o[j] = small[j] + x[j]; break;
        case OP_SUB: for (int64_t j = 0; j < m; j++) o[j] = small[j] - x[j]; break;
        case OP_MUL: for (int64_t j = 0; j < m; j++) o[j] = small[j] * x[j]; break;
        default: for (int64_t j = 0; j < m; j++) o[j] = small[j] / x[j]; break;
        }
      else switch (op) {
        case OP_ADD: for (int64_t j = 0; j < m; j++) o[j] = x[j] + small[j]; break;
        case OP_SUB: for (int64_t j = 0; j < m; j++) o[j] = x[j] - small[j]; break;
        case OP_MUL: for (int64_t j = 0; j < m; j++) o[j] = x[j] * small[j]; break;
        default: for (int64_t j = 0; j < m; j++) o[j] = x[j] / small[j]; break;
        }
    }
}

/* Gradient of the big operand: one term per element. */
static void suffix_backward_big(int op, int small_is_a, int64_t rows, int64_t m, const real *g,
                                const real *big, const real *small, real *dbig) {
  int64_t rb = AT_MAX(1, BLOCK / AT_MAX(m, 1)), nb = (rows + rb - 1) / rb;
  int wrt_b = small_is_a;
#pragma omp parallel for schedule(static) if (rows * m >= AT_PAR_MIN)
  for (int64_t k = 0; k < nb; k++)
    for (int64_t r = k * rb; r < AT_MIN(rows, (k + 1) * rb); r++) {
      const real *gr = g + r * m, *x = big + r * m;
      real *d = dbig + r * m;
      if (op == OP_ADD || (op == OP_SUB && !wrt_b))
        for (int64_t j = 0; j < m; j++) d[j] += gr[j];
      else if (op == OP_SUB)
        for (int64_t j = 0; j < m; j++) d[j] -= gr[j];
      else if (op == OP_MUL)
        for (int64_t j = 0; j < m; j++) d[j] += gr[j] * small[j];
      else if (!wrt_b) /* big is a: da = g / b */
        for (int64_t j = 0; j < m; j++) d[j] += gr[j] / small[j];
      else /* big is b: db = -g a / b^2 */
        for (int64_t j = 0; j < m; j++) d[j] -= gr[j] * small[j] / (x[j] * x[j]);
    }
}

/* Gradient of the small operand: column sums over rows, in chunks of
 * ROW_CHUNK rows whose partial sums are then added in order. */
static void suffix_backward_small(at_ctx *c, int op, int small_is_a, int64_t rows, int64_t m,
                                  const real *g, const real *big, const real *small,
                                  real *dsmall) {
  int64_t nch = (rows + ROW_CHUNK - 1) / ROW_CHUNK;
  double *part = at_scratch(c, (size_t)(nch * m) * sizeof(double));
  if (!part) return;
  int wrt_b = !small_is_a;
#pragma omp parallel for schedule(static) if (rows * m >= AT_PAR_MIN)
  for (int64_t ch = 0; ch < nch; ch++) {
    double *p = part + ch * m;
    for (int64_t j = 0; j < m; j++) p[j] = 0;
    for (int64_t r = ch * ROW_CHUNK; r < AT_MIN(rows, (ch + 1) * ROW_CHUNK); r++) {
      const real *gr = g + r * m, *x = big + r * m;
      if (op == OP_ADD || (op == OP_SUB && !wrt_b))
        for (int64_t j = 0; j < m; j++) p[j] += gr[j];
      else if (op == OP_SUB)
        for (int64_t j = 0; j < m; j++) p[j] -= gr[j];
      else if (op == OP_MUL)
        for (int64_t j = 0; j < m; j++) p[j] += (double)gr[j] * x[j];
      else if (!wrt_b) /* small is a, big is b: da = g / b */
        for (int64_t j = 0; j < m; j++) p[j] += (double)gr[j] / x[j];
      else /* small is b: db = -g a / b^2 */
        for (int64_t j = 0; j < m; j++)
          p[j] -= (double)gr[j] * x[j] / ((double)small[j] * small[j]);
    }
  }
#pragma omp parallel for schedule(static) if (nch * m >= AT_PAR_MIN)
  for (int64_t j = 0; j < m; j++) {
    double s = 0;
    for (int64_t ch = 0; ch < nch; ch++) s += part[ch * m + j];
    dsmall[j] += (real)s;
  }
}

/* ---- general broadcast over 4 padded dims --------------------------------------- */

typedef struct bshape {
  int64_t out[4], sa[4], sb[4]; /* output shape; strides of a and b (0 = stretched) */
  int64_t as[4], bs[4];         /* padded shapes of a and b */
} bshape;

/* Output row r (of the last padded dim): where it starts in a and in b. */
static void row_starts(const bshape *s, int64_t r, const real *a, const real *b, const real **ar,
                       const real **br) {
  const int64_t *o = s->out;
  int64_t i0 = r / (o[1] * o[2]), i1 = r / o[2] % o[1], i2 = r % o[2];
  *ar = a + i0 * s->sa[0] + i1 * s->sa[1] + i2 * s->sa[2];
  *br = b + i0 * s->sb[0] + i1 * s->sb[1] + i2 * s->sb[2];
}

static void general_forward(int op, const bshape *s, const real *a, const real *b, real *y) {
  const int64_t *o = s->out, *sa = s->sa, *sb = s->sb;
  int64_t outer = o[0] * o[1] * o[2], n3 = o[3];
#pragma omp parallel for schedule(static) if (outer * n3 >= AT_PAR_MIN)
  for (int64_t r = 0; r < outer; r++) {
    const real *ar, *br;
    row_starts(s, r, a, b, &ar, &br);
    real *yr = y + r * n3;
    switch (op) {
    case OP_ADD: for (int64_t j = 0; j < n3; j++) yr[j] = ar[j * sa[3]] + br[j * sb[3]]; break;
    case OP_SUB: for (int64_t j = 0; j < n3; j++) yr[j] = ar[j * sa[3]] - br[j * sb[3]]; break;
    case OP_MUL: for (int64_t j = 0; j < n3; j++) yr[j] = ar[j * sa[3]] * br[j * sb[3]]; break;
    default: for (int64_t j = 0; j < n3; j++) yr[j] = ar[j * sa[3]] / br[j * sb[3]]; break;
    }
  }
}

/* x[j] += g[j] f[j * sf]; sf, a last-dim stride, is 0 (f[0] for all) or 1. */
static inline void mul_add_row(int64_t n, const real *restrict g, const real *restrict f, int64_t sf,
                               real *restrict x) {
  if (sf == 0) {
    real v = f[0];
    for (int64_t j = 0; j < n; j++) x[j] += g[j] * v;
  } else {
    for (int64_t j = 0; j < n; j++) x[j] += g[j] * f[j];
  }
}

/* Gradient of an operand with the output's shape (one term per element),
 * row by row as the forward runs: the general walk's index arithmetic per
 * element cost a KDA step 7%. */
static void general_backward_full(int op, int wrt_b, const bshape *s, const real *g, const real *a,
                                  const real *b, real *dx) {
  const int64_t *o = s->out, *sa = s->sa, *sb = s->sb;
  int64_t outer = o[0] * o[1] * o[2], n3 = o[3];
#pragma omp parallel for schedule(static) if (outer * n3 >= AT_PAR_MIN)
  for (int64_t r = 0; r < outer; r++) {
    const real *ar, *br;
    row_starts(s, r, a, b, &ar, &br);
    const real *gr = g + r * n3;
    real *xr = dx + r * n3;
    if (op == OP_MUL) { /* d(a b) = g times the other operand: a vector loop */
      const real *f = wrt_b ? ar : br;
      int64_t sf = wrt_b ? sa[3] : sb[3];
      mul_add_row(n3, gr, f, sf, xr);
      continue;
    }
    for (int64_t j = 0; j < n3; j++) xr[j] += (real)term(op, wrt_b, gr[j], ar[j * sa[3]], br[j * sb[3]]);
  }
}

/* sum over j of g[j] f[j] in double (products of floats are exact in double;
 * the lanes change the order of the sum by ~1e-16 of it). */
static inline double mul_sum_row(int64_t n, const real *g, const real *f) {
  double acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; j++) acc += (double)g[j] * f[j];
  return acc;
}

/* Gradient of one operand: for each of its elements, the sum of its terms
 * over every output position it reaches (dims where it is 1 and the output
 * is not are walked; the others are fixed). */
static void general_backward(int op, int wrt_b, const bshape *s, const real *g, const real *a,
                             const real *b, real *dx) {
  const int64_t *o = s->out, *xs = wrt_b ? s->bs : s->as;
  if (xs[0] == o[0] && xs[1] == o[1] && xs[2] == o[2] && xs[3] == o[3]) {
    general_backward_full(op, wrt_b, s, g, a, b, dx);
    return;
  }
  int64_t ostr[4] = {o[1] * o[2] * o[3], o[2] * o[3], o[3], 1};
  int64_t n = xs[0] * xs[1] * xs[2] * xs[3];
  int64_t len[4], step[4], oa[4], ob[4];
  for (int d = 0; d < 4; d++) {
    int walk = xs[d] == 1 && o[d] > 1;
    len[d] = walk ? o[d] : 1;
    /* per step along a walked dim: output moves ostr, a and b by their strides */
    step[d] = ostr[d];
    oa[d] = s->sa[d];
    ob[d] = s->sb[d];
  }
#pragma omp parallel for schedule(static) if (n * (len[0] * len[1] * len[2] * len[3]) >= AT_PAR_MIN)
  for (int64_t e = 0; e < n; e++) {
    int64_t t[4] = {e / (xs[1] * xs[2] * xs[3]), e / (xs[2] * xs[3]) % xs[1], e / xs[3] % xs[2],
                    e % xs[3]};
    int64_t go = 0, pa = 0, pb = 0;
    for (int d = 0; d < 4; d++)
      if (len[d] == 1) go += t[d] * step[d], pa += t[d] * oa[d], pb += t[d] * ob[d];
    double acc = 0;
    for (int64_t j0 = 0; j0 < len[0]; j0++)
      for (int64_t j1 = 0; j1 < len[1]; j1++)
        for (int64_t j2 = 0; j2 < len[2]; j2++) {
          int64_t g2 = go, a2 = pa, b2 = pb;
          if (len[0] > 1) g2 += j0 * step[0], a2 += j0 * oa[0], b2 += j0 * ob[0];
          if (len[1] > 1) g2 += j1 * step[1], a2 += j1 * oa[1], b2 += j1 * ob[1];
          if (len[2] > 1) g2 += j2 * step[2], a2 += j2 * oa[2], b2 += j2 * ob[2];
          if (op == OP_MUL) /* along a walked last dim the other operand is contiguous */
            acc += mul_sum_row(len[3], g + g2, wrt_b ? a + a2 : b + b2);
          else
            for (int64_t j3 = 0; j3 < len[3]; j3++)
              acc += term(op, wrt_b, g[g2 + j3 * step[3]], a[a2 + j3 * oa[3]], b[b2 + j3 * ob[3]]);
        }
    dx[e] += (real)acc;
  }
}

/* ---- the four ops ------------------------------------------------------------- */

/* node->i: [0] op, [1] kernel, [2] rows, [3] m (suffix). saved: bshape (general). */
static void binary_backward(at_ctx *c, at_node *nd) {
  at_tensor *a = nd->in[0], *b = nd->in[1], *y = nd->out[0];
  int op = (int)nd->i[0], kernel = (int)nd->i[1];
  int64_t rows = nd->i[2], m = nd->i[3];
  const real *g = y->grad;
  if (kernel == K_SAME) {
    int fa, fb;
    real *da = at_grad_into(c, a, &fa), *db = at_grad_into(c, b, &fb);
    same_backward(op, y->size, g, a->data, b->data, da, fa, db, fb);
    return;
  }
  real *da = at_grad(c, a), *db = at_grad(c, b);
  switch (kernel) {
  case K_SUFFIX_A:
  case K_SUFFIX_B: {
    int small_is_a = kernel == K_SUFFIX_A;
    at_tensor *big = small_is_a ? b : a, *small = small_is_a ? a : b;
    real *dbig = small_is_a ? db : da, *dsmall = small_is_a ? da : db;
    if (dbig) suffix_backward_big(op, small_is_a, rows, m, g, big->data, small->data, dbig);
    if (dsmall)
      suffix_backward_small(c, op, small_is_a, rows, m, g, big->data, small->data, dsmall);
    break;
  }
  default:
    if (da) general_backward(op, 0, nd->saved, g, a->data, b->data, da);
    if (db) general_backward(op, 1, nd->saved, g, a->data, b->data, db);
  }
}

/* 1 if `small` (less its leading 1s) is the trailing part of `big`. */
static int is_suffix(const at_tensor *small, const at_tensor *big) {
  int lead = 0;
  while (lead < small->ndim && small->shape[lead] == 1) lead++;
  int k = small->ndim - lead;
  if (k > big->ndim) return 0;
  for (int i = 0; i < k; i++)
    if (small->shape[lead + i] != big->shape[big->ndim - k + i]) return 0;
  return 1;
}

static at_tensor *binary(at_ctx *c, int op, at_tensor *a, at_tensor *b) {
  if (!a || !b) return NULL;
  int nd = AT_MAX(a->ndim, b->ndim);
  int64_t shape[AT_MAX_DIMS];
  for (int i = 0; i < nd; i++) { /* i counts from the right */
    int64_t da = i < a->ndim ? a->shape[a->ndim - 1 - i] : 1;
    int64_t db = i < b->ndim ? b->shape[b->ndim - 1 - i] : 1;
    if (da != db && da != 1 && db != 1) {
      char sa[96], sb[96];
      return at_fail(c, AT_E_SHAPE, "%s: shapes %s and %s do not broadcast", op_names[op],
                     AT_SHAPE_STR(a, sa), AT_SHAPE_STR(b, sb));
    }
    shape[nd - 1 - i] = da == 1 ? db : da;
  }
  at_tensor *y = at_new(c, nd, shape);
  if (!y) return NULL;
  int kernel;
  int64_t rows = 0, m = 0;
  bshape *bs = NULL, bs_local;
  if (at_same_shape(a, b)) {
    kernel = K_SAME;
    same_forward(op, y->size, a->data, b->data, y->data);
  } else if ((a->size == y->size && b->size > 0 && is_suffix(b, a)) ||
             (b->size == y->size && a->size > 0 && is_suffix(a, b))) {
    int small_is_a = !(a->size == y->size && is_suffix(b, a));
    at_tensor *big = small_is_a ? b : a, *small = small_is_a ? a : b;
    kernel = small_is_a ? K_SUFFIX_A : K_SUFFIX_B;
    m = small->size;
    rows = big->size / m;
    suffix_forward(op, small_is_a, rows, m, big->data, small->data, y->data);
  } else {
    kernel = K_GENERAL;
    bs = &bs_local;
    at_ops_pad4(nd, shape, bs->out);
    at_ops_pad4(a->ndim, a->shape, bs->as);
    at_ops_pad4(b->ndim, b->shape, bs->bs);
    at_ops_bstrides(bs->as, bs->sa);
    at_ops_bstrides(bs->bs, bs->sb);
    general_forward(op, bs, a->data, b->data, y->data);
  }
  at_tensor *ins[] = {a, b}, *outs[] = {y};
  at_node *n = AT_RECORD(c, op_names[op], binary_backward, ins, outs);
  if (n) {
    n->i[0] = op, n->i[1] = kernel, n->i[2] = rows, n->i[3] = m;
    if (bs) {
      if (!(n->saved = at_scratch(c, sizeof *bs))) return NULL;
      memcpy(n->saved, bs, sizeof *bs);
    }
  }
  return y;
}

at_tensor *at_add(at_ctx *c, at_tensor *a, at_tensor *b) { return binary(c, OP_ADD, a, b); }
at_tensor *at_sub(at_ctx *c, at_tensor *a, at_tensor *b) { return binary(c, OP_SUB, a, b); }
at_tensor *at_mul(at_ctx *c, at_tensor *a, at_tensor *b) { return binary(c, OP_MUL, a, b); }
at_tensor *at_div(at_ctx *c, at_tensor *a, at_tensor *b) { return binary(c, OP_DIV, a, b); }

/* ---- affine ---------------------------------------------------------------------- */

static void affine_backward(at_ctx *c, at_node *nd) {
  real *dx = at_grad(c, nd->in[0]);
  const real *g = nd->out[0]->grad;
  real s = (real)nd->f[0];
  int64_t n = nd->out[0]->size;
  if (!dx) return;
#pragma omp parallel for schedule(static) if (n >= AT_PAR_MIN)
  for (int64_t i = 0; i < n; i++) dx[i] += s * g[i];
}

at_tensor *at_affine(at_ctx *c, at_tensor *x, double s, double b) {
  if (!x) return NULL;
  at_tensor *y = at_new(c, x->ndim, x->shape);
  if (!y) return NULL;
  real rs = (real)s, rb = (real)b;
  const real *xd = x->data;
  real *yd = y->data;
  int64_t n = x->size;
#pragma omp parallel for schedule(static) if (n >= AT_PAR_MIN)
  for (int64_t i = 0; i < n; i++) yd[i] = rs * xd[i] + rb;
  at_tensor *ins[] = {x}, *outs[] = {y};
  at_node *nd = AT_RECORD(c, "affine", affine_backward, ins, outs);
  if (nd) nd->f[0] = s;
  return y;
}
