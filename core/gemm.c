/* core/gemm.c: BLIS wrapper (bli_sgemm_ex / bli_dgemm_ex with a per-call rntm_t). */
#include "core/gemm.h"

#include <blis.h>
#include <string.h>

#include "core/threads.h"

#ifdef AT_DOUBLE
#define BLI_GEMM_EX bli_dgemm_ex
#else
#define BLI_GEMM_EX bli_sgemm_ex
#endif

/* ---- small products --------------------------------------------------------
 *
 * BLIS spends several microseconds per call before it multiplies anything
 * (about 6.5 us for a 4x4x4 product here), which dominates chunked linear
 * attention and small heads. Products up to AT_GEMM_SMALL in every dimension
 * go to this kernel instead: op(A) and op(B) are packed into contiguous
 * buffers (rows of op(B) padded to whole vectors), then blocks of 4 rows x 2
 * vectors of C are accumulated in registers over k. Each element is summed
 * over k in order, so results do not depend on the thread count. */
#define AT_GEMM_SMALL 96
#define VL ((int64_t)(64 / sizeof(real))) /* reals per 64-byte vector */
typedef real vreal __attribute__((vector_size(64), aligned(64)));

/* An unaligned vector load; a macro, not a function, because returning a
 * 64-byte vector from a function is an ABI question without AVX-512. */
#define VLOAD(v, p) memcpy(&(v), (p), sizeof(vreal))

static void small_gemm(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
                       const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                       int64_t csb, real beta, real *c, int64_t rsc, int64_t csc) {
  vreal bbuf[AT_GEMM_SMALL * (AT_GEMM_SMALL / VL + 2)];
  real abuf[AT_GEMM_SMALL * AT_GEMM_SMALL], zeros[AT_GEMM_SMALL];
  if (ta == AT_T) { int64_t t = rsa; rsa = csa; csa = t; } /* op(A)[i,p] = a[i*rsa + p*csa] */
  if (tb == AT_T) { int64_t t = rsb; rsb = csb; csb = t; } /* op(B)[p,j] = b[p*rsb + j*csb] */
  /* op(A): rows used in place when contiguous, else packed */
  const real *arows = a;
  int64_t lda = rsa;
  if (csa != 1) {
    for (int64_t i = 0; i < m; i++)
      for (int64_t p = 0; p < k; p++) abuf[i * k + p] = a[i * rsa + p * csa];
    arows = abuf, lda = k;
  }
  memset(zeros, 0, (size_t)k * sizeof(real));
  /* op(B): rows read in place when contiguous and whole vector pairs, else
   * packed into rows of np (zero-padded) */
  int64_t np = (n + 2 * VL - 1) / (2 * VL) * (2 * VL), ldb;
  const real *brows;
  if (csb == 1 && np == n) {
    brows = b, ldb = rsb;
  } else {
    real *bp = (real *)bbuf;
    if (csb == 1) {
      for (int64_t p = 0; p < k; p++) {
        memcpy(bp + p * np, b + p * rsb, (size_t)n * sizeof(real));
        memset(bp + p * np + n, 0, (size_t)(np - n) * sizeof(real));
      }
    } else {
      for (int64_t p = 0; p < k; p++) memset(bp + p * np + n, 0, (size_t)(np - n) * sizeof(real));
      for (int64_t j = 0; j < n; j++) /* read along the stored rows (rsb is usually 1 here) */
        for (int64_t p = 0; p < k; p++) bp[p * np + j] = b[p * rsb + j * csb];
    }
    brows = bp, ldb = np;
  }
  for (int64_t i = 0; i < m; i += 4) {
    int64_t rows = AT_MIN(4, m - i);
    const real *a0 = arows + i * lda, *a1 = rows > 1 ? a0 + lda : zeros, *a2 = rows > 2 ? a0 + 2 * lda : zeros,
               *a3 = rows > 3 ? a0 + 3 * lda : zeros;
    for (int64_t j = 0; j < np; j += 2 * VL) {
      vreal c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
      const real *bv = brows + j;
      for (int64_t p = 0; p < k; p++, bv += ldb) {
        vreal b0, b1;
        VLOAD(b0, bv);
        VLOAD(b1, bv + VL);
        c00 += a0[p] * b0, c01 += a0[p] * b1;
        c10 += a1[p] * b0, c11 += a1[p] * b1;
        c20 += a2[p] * b0, c21 += a2[p] * b1;
        c30 += a3[p] * b0, c31 += a3[p] * b1;
      }
      vreal acc[4][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
      int64_t cols = AT_MIN(2 * VL, n - j);
      for (int64_t r = 0; r < rows; r++) {
        real *crow = c + (i + r) * rsc + j * csc;
        if (csc == 1 && cols == 2 * VL) { /* whole vectors */
          for (int h = 0; h < 2; h++) {
            vreal v = alpha * acc[r][h];
            if (beta != 0) {
              vreal old;
              VLOAD(old, crow + h * VL);
              v += beta * old;
            }
            memcpy(crow + h * VL, &v, sizeof v);
          }
          continue;
        }
        const real *v = (const real *)acc[r];
        if (beta == 0)
          for (int64_t q = 0; q < cols; q++) crow[q * csc] = alpha * v[q];
        else
          for (int64_t q = 0; q < cols; q++) crow[q * csc] = alpha * v[q] + beta * crow[q * csc];
      }
    }
  }
}

/* One single-threaded BLIS call. */
static void blis_gemm(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
                      const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                      int64_t csb, real beta, real *c, int64_t rsc, int64_t csc) {
  rntm_t rntm = BLIS_RNTM_INITIALIZER;
  bli_rntm_set_num_threads(1, &rntm);
  BLI_GEMM_EX(ta == AT_T ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              tb == AT_T ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, (dim_t)m, (dim_t)n, (dim_t)k,
              &alpha, (real *)a, (inc_t)rsa, (inc_t)csa, (real *)b, (inc_t)rsb, (inc_t)csb, &beta,
              c, (inc_t)rsc, (inc_t)csc, NULL, &rntm);
}

/* Below this many multiply-adds one thread does the whole product. */
#define AT_GEMM_PARALLEL_WORK (64.0 * 64.0 * 64.0)

void at_gemm_strided(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
                     const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                     int64_t csb, real beta, real *c, int64_t rsc, int64_t csc, int nthreads) {
  if (m <= 0 || n <= 0) return;
  if (k > 0 && m <= AT_GEMM_SMALL && n <= AT_GEMM_SMALL && k <= AT_GEMM_SMALL) {
    small_gemm(ta, tb, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
    return;
  }
  if (k <= 0) { /* nothing to multiply: C = beta * C */
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        real *x = &c[i * rsc + j * csc];
        *x = beta == 0 ? 0 : beta * *x;
      }
    return;
  }
  int nt = nthreads > 0 ? nthreads : at_threads_here();
  double work = (double)m * (double)n * (double)k;
  if (nt > 1 && work >= AT_GEMM_PARALLEL_WORK) {
    /* Split C into slabs of rows (or columns), one single-threaded BLIS call
     * each: OpenMP's barrier sleeps when the machine is busy, where BLIS's own
     * threads spin (we measured 8x slowdowns with other processes running).
     * Each element is still summed over k in BLIS's one order. */
    int split_rows = m >= n;
    int64_t len = split_rows ? m : n, parts = AT_MIN((int64_t)nt, (len + 15) / 16);
    int64_t per = (len + parts - 1) / parts;
    per = (per + 15) / 16 * 16;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t t = 0; t < parts; t++) {
      int64_t lo = t * per, cnt = AT_MIN(per, len - lo);
      if (cnt <= 0) continue;
      if (split_rows) /* rows lo.. of op(A) and C */
        blis_gemm(ta, tb, cnt, n, k, alpha, a + lo * (ta == AT_N ? rsa : csa), rsa, csa, b, rsb, csb, beta,
                  c + lo * rsc, rsc, csc);
      else /* columns lo.. of op(B) and C */
        blis_gemm(ta, tb, m, cnt, k, alpha, a, rsa, csa, b + lo * (tb == AT_N ? csb : rsb), rsb, csb, beta,
                  c + lo * csc, rsc, csc);
    }
    return;
  }
  blis_gemm(ta, tb, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc);
}

void at_gemm(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
             const real *a, int64_t lda, const real *b, int64_t ldb, real beta, real *c,
             int64_t ldc) {
  at_gemm_strided(ta, tb, m, n, k, alpha, a, lda, 1, b, ldb, 1, beta, c, ldc, 1, 0);
}

void at_gemm_batched(int64_t batch, at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k,
                     real alpha, const real *a, int64_t lda, int64_t stride_a, const real *b,
                     int64_t ldb, int64_t stride_b, real beta, real *c, int64_t ldc,
                     int64_t stride_c) {
  int nt = at_threads_here();
  if (nt > 1 && batch >= nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t i = 0; i < batch; i++)
      at_gemm_strided(ta, tb, m, n, k, alpha, a + i * stride_a, lda, 1, b + i * stride_b, ldb, 1,
                      beta, c + i * stride_c, ldc, 1, 1);
  } else {
    for (int64_t i = 0; i < batch; i++)
      at_gemm_strided(ta, tb, m, n, k, alpha, a + i * stride_a, lda, 1, b + i * stride_b, ldb, 1,
                      beta, c + i * stride_c, ldc, 1, nt);
  }
}
