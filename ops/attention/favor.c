/* ops/attention/favor.c: FAVOR+ (favor.h): the random features, the
 * stabilised feature map with its hand-written backward, and the Performer
 * op on the linear-attention op.
 *
 * Feature map, per row x [K] of x [B,T,H,K] (c the row's stabiliser, a
 * constant):
 *
 *   x^ = s x,  s = K^-1/4;    l = Omega x^ - |x^|^2 / 2;    phi = exp(l - c)
 *
 * Backward: dl = dphi ⊙ phi;  dx = s (Omega^T dl - x^ sum_i dl_i).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/gemm.h"
#include "core/rng.h"
#include "core/threads.h"
#include "ops/attention/favor.h"

/* ---- the random features ------------------------------------------------------- */

static double norm2(const double *x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
  return sqrt(s);
}

static void gaussian(at_rng *r, double *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] = at_rng_normal(r);
}

/* One orthogonal block: rows of `block` (K x K) orthonormalised by modified
 * Gram-Schmidt (a row that comes out numerically dependent is redrawn), then
 * row i scaled by the length of a fresh Gaussian vector. */
static void ortho_block(at_rng *r, double *block, double *tmp, int64_t K) {
  for (int64_t i = 0; i < K; i++) {
    double *row = block + i * K, n = 0;
    do {
      gaussian(r, row, K);
      for (int64_t j = 0; j < i; j++) {
        const double *qj = block + j * K;
        double d = 0;
        for (int64_t e = 0; e < K; e++) d += row[e] * qj[e];
        for (int64_t e = 0; e < K; e++) row[e] -= d * qj[e];
      }
      n = norm2(row, K);
    } while (!(n > 1e-6));
    for (int64_t e = 0; e < K; e++) row[e] /= n;
  }
  for (int64_t i = 0; i < K; i++) {
    gaussian(r, tmp, K);
    double len = norm2(tmp, K);
    for (int64_t e = 0; e < K; e++) block[i * K + e] *= len;
  }
}

void at_favor_draw(real *omega, int64_t m, int64_t K, int orthogonal, uint64_t seed,
                   uint64_t stream, uint64_t draw) {
  at_rng r = at_rng_make(seed, stream);
  r.position = draw << 40; /* each draw its own stretch of the stream */
  double *block = malloc((size_t)(K * K + K) * sizeof *block);
  AT_ASSERT(block != NULL);
  for (int64_t i0 = 0; i0 < m; i0 += K) {
    int64_t rows = AT_MIN(K, m - i0);
    if (orthogonal)
      ortho_block(&r, block, block + K * K, K);
    else
      gaussian(&r, block, rows * K);
    for (int64_t i = 0; i < rows * K; i++) omega[i0 * K + i] = (real)block[i];
  }
  free(block);
}

/* ---- the feature map --------------------------------------------------------------- */

typedef struct feat_saved {
  at_tensor *x, *phi;
  const real *omega;
  int64_t rows, K, m;
} feat_saved;

/* logits l = s x Omega^T - s^2 |x|^2 / 2 into phi, rows x m */
static void logits(const real *x, const real *omega, real *l, int64_t rows, int64_t K, int64_t m) {
  const double s = pow((double)K, -0.25);
  at_gemm(AT_N, AT_T, rows, m, K, (real)s, x, K, omega, K, 0, l, m);
#pragma omp parallel for num_threads(at_threads_here()) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    double x2 = 0;
    for (int64_t d = 0; d < K; d++) x2 += (double)x[r * K + d] * x[r * K + d];
    real h = (real)(0.5 * s * s * x2);
    for (int64_t i = 0; i < m; i++) l[r * m + i] -= h;
  }
}

static real row_max(const real *l, int64_t m) {
  real mx = -INFINITY;
  for (int64_t i = 0; i < m; i++) mx = l[i] > mx ? l[i] : mx;
  return mx;
}

static void expm(real *l, int64_t m, real c) {
  for (int64_t i = 0; i < m; i++) l[i] = (real)exp((double)(l[i] - c));
}

static void feat_backward(at_ctx *c, at_node *nd) {
  const feat_saved *s = nd->saved;
  real *dx = at_grad(c, s->x);
  const real *dphi = s->phi->grad;
  if (!dx || !dphi) return;
  const int64_t rows = s->rows, K = s->K, m = s->m;
  const double sc = pow((double)K, -0.25);
  at_arena_mark mk = at_arena_get_mark(c->arena);
  real *dl = at_scratch(c, (size_t)(rows * m) * sizeof(real));
  real *sum = at_scratch(c, (size_t)rows * sizeof(real));
  if (!dl || !sum) return;
#pragma omp parallel for num_threads(at_threads_here()) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    double t = 0;
    for (int64_t i = 0; i < m; i++) {
      dl[r * m + i] = dphi[r * m + i] * s->phi->data[r * m + i];
      t += dl[r * m + i];
    }
    sum[r] = (real)t;
  }
  at_gemm(AT_N, AT_N, rows, K, m, (real)sc, dl, m, s->omega, K, 1, dx, K);
  const real *x = s->x->data;
#pragma omp parallel for num_threads(at_threads_here()) schedule(static)
  for (int64_t r = 0; r < rows; r++) {
    real f = (real)(sc * sc) * sum[r];
    for (int64_t d = 0; d < K; d++) dx[r * K + d] -= f * x[r * K + d];
  }
  at_arena_rewind(c->arena, mk);
}

at_tensor *at_favor_features(at_ctx *c, at_tensor *x, const at_tensor *omega, int key,
                             const at_tensor *M0, at_tensor **g, at_tensor **MT) {
  if (g) *g = NULL;
  if (MT) *MT = NULL;
  if (!x || !omega) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "favor_features: x and omega are required");
    return NULL;
  }
  char s1[96], s2[96];
  if (x->ndim != 4 || omega->ndim != 2 || omega->shape[1] != x->shape[3] || omega->shape[0] < 1) {
    at_fail(c, AT_E_SHAPE, "favor_features: x %s must be [B,T,H,K] and omega %s [m,K]",
            AT_SHAPE_STR(x, s1), AT_SHAPE_STR(omega, s2));
    return NULL;
  }
  const int64_t B = x->shape[0], T = x->shape[1], H = x->shape[2], K = x->shape[3];
  const int64_t m = omega->shape[0], rows = B * T * H;
  if (key && (!g || (M0 && (M0->ndim != 2 || M0->shape[0] != B || M0->shape[1] != H)))) {
    at_fail(c, AT_E_ARG, "favor_features: keys need g, and M0 [B,H] = [%lld,%lld] when given", (long long)B,
            (long long)H);
    return NULL;
  }
  at_tensor *phi = AT_NEW(c, B, T, H, m);
  at_tensor *gt = key ? AT_NEW(c, B, T, H) : NULL, *mt = key && MT ? AT_NEW(c, B, H) : NULL;
  if (!phi || (key && !gt) || (key && MT && !mt)) return NULL;
  logits(x->data, omega->data, phi->data, rows, K, m);
  if (!key) {
#pragma omp parallel for num_threads(at_threads_here()) schedule(static)
    for (int64_t r = 0; r < rows; r++) expm(phi->data + r * m, m, row_max(phi->data + r * m, m));
  } else {
#pragma omp parallel for num_threads(at_threads_here()) schedule(static)
    for (int64_t bh = 0; bh < B * H; bh++) {
      const int64_t b = bh / H, h = bh % H;
      real M = M0 ? M0->data[bh] : -INFINITY;
      for (int64_t t = 0; t < T; t++) {
        const int64_t r = (b * T + t) * H + h;
        real *l = phi->data + r * m, Mt = row_max(l, m);
        Mt = Mt > M ? Mt : M;
        gt->data[r] = t == 0 && !M0 ? 0 : M - Mt;
        M = Mt;
        expm(l, m, M);
      }
      if (mt) mt->data[bh] = M;
    }
  }
  at_tensor *ins[] = {x}, *outs[] = {phi};
  if (at_needs_grad(c, 1, ins)) {
    feat_saved *s = at_scratch(c, sizeof *s);
    at_node *nd = s ? AT_RECORD(c, "favor_features", feat_backward, ins, outs) : NULL;
    if (!nd) return NULL;
    *s = (feat_saved){x, phi, omega->data, rows, K, m};
    nd->saved = s;
  }
  if (g) *g = gt;
  if (MT) *MT = mt;
  return phi;
}

/* ---- the Performer op ------------------------------------------------------------- */

static at_la_opts performer_opts(const at_la_opts *opts) {
  at_la_opts o = opts ? *opts : (at_la_opts){0};
  o.scale = 1;
  o.normalize = 1;
  return o;
}

at_tensor *at_performer(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                        const at_tensor *omega, at_tensor *h0, at_tensor *z0,
                        const at_tensor *M0, at_tensor **ht, at_tensor **zt, at_tensor **MT,
                        const at_la_opts *opts) {
  if (ht) *ht = NULL;
  if (zt) *zt = NULL;
  if (MT) *MT = NULL;
  if (opts && opts->form == AT_LA_PARALLEL)
    return at_fail(c, AT_E_ARG, "performer: no parallel form (its decay is data-dependent)");
  at_tensor *g = NULL;
  at_tensor *fq = at_favor_features(c, q, omega, 0, NULL, NULL, NULL);
  at_tensor *fk = at_favor_features(c, k, omega, 1, M0, &g, MT);
  at_la_opts o = performer_opts(opts);
  return at_la_attn(c, AT_LA_DECAY_GATE, fq, fk, v, g, h0, z0, ht, zt, &o);
}

at_tensor *at_performer_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                             const at_tensor *omega, at_tensor *S, at_tensor *z, at_tensor *M,
                             const at_la_opts *opts) {
  if (!M) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "performer_step: the state (S, z, M) is required");
    return NULL;
  }
  at_no_grad_begin(c);
  at_tensor *g = NULL, *MT = NULL;
  at_tensor *fq = at_favor_features(c, q, omega, 0, NULL, NULL, NULL);
  at_tensor *fk = at_favor_features(c, k, omega, 1, M, &g, &MT);
  at_la_opts o = performer_opts(opts);
  at_tensor *out = at_la_step(c, AT_LA_DECAY_GATE, fq, fk, v, g, S, z, &o);
  at_no_grad_end(c);
  if (out) memcpy(M->data, MT->data, (size_t)M->size * sizeof(real));
  return out;
}
