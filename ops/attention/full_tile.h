/* ops/attention/full_tile.h: the register-blocked products and row
 * operations of the fused attention's tiles (full.c only).
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
#define TV_ACC 16 /* accumulators a block may hold (of 32 registers) */
#elif defined(__AVX__)
#define TV_BYTES 32
#define TV_ACC 8 /* of 16 */
#else
#define TV_BYTES 16
#define TV_ACC 8
#endif
typedef real tvec __attribute__((vector_size(TV_BYTES)));
#define TVL ((int64_t)(TV_BYTES / sizeof(real))) /* reals per vector */
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

static void tile_dispatch(int rr, int cv, int64_t k, real alpha, const real *A, int64_t ar,
                          int64_t ap, const real *B, int64_t ldb, int acc, real *C, int64_t ldc) {
  switch (rr * 8 + cv) {
    TILE_CASES(1) TILE_CASES(2) TILE_CASES(3) TILE_CASES(4)
    TILE_CASES(5) TILE_CASES(6) TILE_CASES(7) TILE_CASES(8)
    default: AT_ASSERT(0);
  }
}

/* C[m x n] (+)= alpha * A B as above (acc: add to C, else overwrite). */
static void tile_mm(int64_t m, int64_t n, int64_t k, real alpha, const real *A, int64_t ar,
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

static inline real row_max(const real *s, int64_t n) {
  tvec m;
  memcpy(&m, s, sizeof m);
  for (int64_t j = TVL; j < n; j += TVL) {
    tvec x;
    memcpy(&x, s + j, sizeof x);
    tmask gt = x > m;
    m = (tvec)(((tmask)x & gt) | ((tmask)m & ~gt));
  }
  real mx = m[0];
  for (int64_t e = 1; e < TVL; e++) mx = m[e] > mx ? m[e] : mx;
  return mx;
}

/* s = exp(s - sub) in place; returns the sum (lanes summed in a fixed order). */
static inline real row_exp_sum(real *s, int64_t n, real sub) {
  real acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; j++) {
    real e = at_expr(s[j] - sub);
    s[j] = e;
    acc += e;
  }
  return acc;
}

/* s = exp(s - sub) in place. */
static inline void row_exp(real *s, int64_t n, real sub) {
#pragma omp simd
  for (int64_t j = 0; j < n; j++) s[j] = at_expr(s[j] - sub);
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

#endif
