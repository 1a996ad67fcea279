/* ops/attention/full_tile.h: the register-blocked products and row
 * operations of the fused attention's tiles (full.c, and nsa.c's compressed
 * attention).
 *
 * Every product of a tile has the form
 *   C[r, 0..n) (+)= alpha * sum_p A(r, p) * B[p, 0..n)      r < m, p < k
 * with A read one element at a time (broadcast) through two strides, so A
 * may be a matrix or its transpose in place (P or P^T, dS or dS^T, Q rows),
 * and B read along contiguous rows (K^T and V^T are packed once per head so
 * that the score products read them that way; K, V, Q, dO rows already are).
 * Nothing is packed per tile. Blocks of R rows x CV vectors of C stay in
 * registers over the whole reduction; the vector width follows the ISA the
 * file is compiled for (AVX-512: 16 floats, AVX: 8, else 4). Each C element
 * is summed over p in order, so results depend on neither the thread count
 * nor the blocking.
 */
#ifndef AT_ATTENTION_FULL_TILE_H
#define AT_ATTENTION_FULL_TILE_H

#include <math.h>
#include <string.h>

#include "core/base.h"
#include "core/fastmath.h"

#if defined(__AVX512F__)
#define TV_BYTES 64
#ifndef TV_ACC
#define TV_ACC 16 /* accumulators a block may hold (of 32 registers) */
#endif
#elif defined(__AVX__)
#define TV_BYTES 32
#define TV_ACC 8 /* of 16 */
#else
#define TV_BYTES 16
#define TV_ACC 8
#endif
#ifdef AT_DOUBLE
#define TV_LANES (TV_BYTES / 8)
#else
#define TV_LANES (TV_BYTES / 4)
#endif
typedef real tvec __attribute__((vector_size(TV_BYTES)));
#define TVL ((int64_t)TV_LANES) /* reals per vector */
#define TV_CV 4                                  /* most vectors per block row */
#define TV_R 8                                   /* most rows per block */

static inline int64_t tv_round(int64_t n) { return (n + TVL - 1) / TVL * TVL; }

/* One R x CV block over the whole reduction; R, CV are constants at every
 * call site, so the block lives in registers. */
static inline __attribute__((always_inline)) void tile_block(
    const int R, const int CV, int64_t k, real alpha, const real *A, int64_t ar, int64_t ap,
    const real *B, int64_t ldb, int acc, real *C, int64_t ldc) {
  tvec c[TV_R][TV_CV];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < CV; v++) c[r][v] = (tvec){0};
  for (int64_t p = 0; p < k; p++) {
    tvec b[TV_CV];
#pragma GCC unroll 4
    for (int v = 0; v < CV; v++) memcpy(&b[v], B + p * ldb + v * TVL, sizeof(tvec));
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      real a = A[r * ar + p * ap];
#pragma GCC unroll 4
      for (int v = 0; v < CV; v++) c[r][v] += a * b[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 4
    for (int v = 0; v < CV; v++) {
      real *cp = C + r * ldc + v * TVL;
      tvec x = alpha * c[r][v];
      if (acc) {
        tvec old;
        memcpy(&old, cp, sizeof old);
        x += old;
      }
      memcpy(cp, &x, sizeof x);
    }
}

#define TILE_CASE(R, CV) \
  case (R) * 8 + (CV): tile_block((R), (CV), k, alpha, A, ar, ap, B, ldb, acc, C, ldc); break;
#define TILE_CASES(R) TILE_CASE(R, 1) TILE_CASE(R, 2) TILE_CASE(R, 3) TILE_CASE(R, 4)

static inline void tile_dispatch(int rr, int cv, int64_t k, real alpha, const real *A, int64_t ar,
                          int64_t ap, const real *B, int64_t ldb, int acc, real *C, int64_t ldc) {
  switch (rr * 8 + cv) {
    TILE_CASES(1) TILE_CASES(2) TILE_CASES(3) TILE_CASES(4)
    TILE_CASES(5) TILE_CASES(6) TILE_CASES(7) TILE_CASES(8)
    default: AT_ASSERT(0);
  }
}

/* C[m x n] (+)= alpha * A B as above (acc: add to C, else overwrite). */
static inline void tile_mm(int64_t m, int64_t n, int64_t k, real alpha, const real *A, int64_t ar,
                    int64_t ap, const real *B, int64_t ldb, int acc, real *C, int64_t ldc) {
  int64_t nv = n / TVL;
  int cvmax = TV_ACC / TV_CV >= 2 ? TV_CV : 2; /* 4 vectors with 32 registers, else 2 */
  for (int64_t v0 = 0; v0 < nv; v0 += cvmax) {
    int cv = (int)AT_MIN(cvmax, nv - v0);
    int rows = AT_MIN(TV_R, TV_ACC / cv);
    for (int64_t r0 = 0; r0 < m; r0 += rows) {
      int rr = (int)AT_MIN(rows, m - r0);
      tile_dispatch(rr, cv, k, alpha, A + r0 * ar, ar, ap, B + v0 * TVL, ldb, acc,
                    C + r0 * ldc + v0 * TVL, ldc);
    }
  }
  for (int64_t x = nv * TVL; x < n; x++) /* columns past the last whole vector */
    for (int64_t r = 0; r < m; r++) {
      real s = 0;
      for (int64_t p = 0; p < k; p++) s += A[r * ar + p * ap] * B[p * ldb + x];
      C[r * ldc + x] = alpha * s + (acc ? C[r * ldc + x] : 0);
    }
}

/* ---- rows (n a multiple of TVL) ------------------------------------------------------ */

#ifdef AT_DOUBLE
typedef int64_t tmask __attribute__((vector_size(TV_BYTES)));
#else
typedef int32_t tmask __attribute__((vector_size(TV_BYTES)));
#endif

static inline tvec tv_load(const real *p) {
  tvec v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline tvec tv_max(tvec a, tvec b) {
  tmask gt = a > b;
  return (tvec)(((tmask)a & gt) | ((tmask)b & ~gt));
}

/* The lanes rotated by w (constant masks: one permute each). */
#define TV_R2(w) (w) % 2, (1 + (w)) % 2
#define TV_R4(w) (w) % 4, (1 + (w)) % 4, (2 + (w)) % 4, (3 + (w)) % 4
#define TV_R8(w)                                                                          \
  (w) % 8, (1 + (w)) % 8, (2 + (w)) % 8, (3 + (w)) % 8, (4 + (w)) % 8, (5 + (w)) % 8,     \
      (6 + (w)) % 8, (7 + (w)) % 8
#define TV_R16(w)                                                                            \
  (w) % 16, (1 + (w)) % 16, (2 + (w)) % 16, (3 + (w)) % 16, (4 + (w)) % 16, (5 + (w)) % 16,  \
      (6 + (w)) % 16, (7 + (w)) % 16, (8 + (w)) % 16, (9 + (w)) % 16, (10 + (w)) % 16,      \
      (11 + (w)) % 16, (12 + (w)) % 16, (13 + (w)) % 16, (14 + (w)) % 16, (15 + (w)) % 16
#ifdef __clang__ /* clang has no __builtin_shuffle; its shufflevector takes the lanes as constants */
#define TV_ROT(v, R, w) __builtin_shufflevector((v), (v), R(w))
#else
#define TV_ROT(v, R, w) __builtin_shuffle((v), (tmask){R(w)})
#endif

/* Lanes summed (or maxed) pairwise in log2(TVL) steps: a fixed order. */
#if TV_LANES == 16
#define TV_FOLD(v, op) \
  (v = op(v, TV_ROT(v, TV_R16, 8)), v = op(v, TV_ROT(v, TV_R16, 4)), \
   v = op(v, TV_ROT(v, TV_R16, 2)), v = op(v, TV_ROT(v, TV_R16, 1)))
#elif TV_LANES == 8
#define TV_FOLD(v, op) \
  (v = op(v, TV_ROT(v, TV_R8, 4)), v = op(v, TV_ROT(v, TV_R8, 2)), v = op(v, TV_ROT(v, TV_R8, 1)))
#elif TV_LANES == 4
#define TV_FOLD(v, op) (v = op(v, TV_ROT(v, TV_R4, 2)), v = op(v, TV_ROT(v, TV_R4, 1)))
#else
#define TV_FOLD(v, op) (v = op(v, TV_ROT(v, TV_R2, 1)))
#endif

static inline tvec tv_add(tvec a, tvec b) { return a + b; }

static inline real tv_hsum(tvec v) {
  TV_FOLD(v, tv_add);
  return v[0];
}

static inline real tv_hmax(tvec v) {
  TV_FOLD(v, tv_max);
  return v[0];
}

static inline real row_max(const real *s, int64_t n) {
  tvec m = tv_load(s);
  for (int64_t j = TVL; j < n; j += TVL) m = tv_max(m, tv_load(s + j));
  return tv_hmax(m);
}

#ifndef AT_DOUBLE
/* at_expr (core/fastmath.h) on a whole vector: the same operations in the
 * same order, with its branches as lane selects, so that it vectorises on
 * every ISA (GCC does not if-convert at_expr's clamps without AVX-512's
 * masks) and gives at_expr's bits. */
static inline tvec tv_select(tmask m, tvec a, tvec b) {
  return (tvec)(((tmask)a & m) | ((tmask)b & ~m));
}

static inline tvec tv_exp(tvec x) {
  const tvec lo = (tvec){0} - 87.3f, hi = (tvec){0} + 88.0f;
  tvec xc = tv_select(x >= lo, tv_select(x <= hi, x, hi), lo); /* NaN takes lo */
  tvec n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  tvec r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  tvec p = (tvec){0} + 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  tmask e = (__builtin_convertvector(n, tmask) + 127) << 23;
  tvec sc = (tvec)e;
  return tv_select(x < lo, (tvec){0}, tv_select(x == x, p * sc, x));
}

/* s = exp(s - sub) in place. */
static inline void row_exp(real *s, int64_t n, real sub) {
  for (int64_t j = 0; j < n; j += TVL) {
    tvec e = tv_exp(tv_load(s + j) - sub);
    memcpy(s + j, &e, sizeof e);
  }
}
#else
/* In double, libm's exp, lane by lane. */
static inline void row_exp(real *s, int64_t n, real sub) {
  for (int64_t j = 0; j < n; j++) s[j] = at_expr(s[j] - sub);
}
#endif

/* The lane sums of s's vectors. */
static inline tvec row_vsum(const real *s, int64_t n) {
  tvec a = tv_load(s);
  for (int64_t j = TVL; j < n; j += TVL) a += tv_load(s + j);
  return a;
}

static inline void row_scale(real *x, int64_t n, real f) {
#pragma omp simd
  for (int64_t j = 0; j < n; j++) x[j] *= f;
}

/* Scores at x >= lim become -inf (keys after the query or past the tile). */
static inline void row_cut(real *s, int64_t n, int64_t lim) {
#pragma omp simd
  for (int64_t j = 0; j < n; j++) s[j] = j < lim ? s[j] : -INFINITY;
}

/* Scores where vis is 0 become -inf (vis: n bytes). */
static inline void row_mask(real *s, int64_t n, const unsigned char *vis) {
#pragma omp simd
  for (int64_t j = 0; j < n; j++) s[j] = vis[j] ? s[j] : -INFINITY;
}

/* dS = P o (dP - Dr) in place in dp, row by row. */
static inline void tile_ds(int64_t nr, int64_t ncp, const real *p, real *dp, const real *dr) {
  for (int64_t x = 0; x < nr; x++) {
    const real *pr = p + x * ncp;
    real *g = dp + x * ncp, D = dr[x];
#pragma omp simd
    for (int64_t y = 0; y < ncp; y++) g[y] = pr[y] * (g[y] - D);
  }
}

#endif
