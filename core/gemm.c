/* core/gemm.c: BLIS wrapper (bli_sgemm_ex / bli_dgemm_ex with a per-call rntm_t). */
#include "core/gemm.h"

#include <blis.h>

#include "core/threads.h"

#ifdef AT_DOUBLE
#define BLI_GEMM_EX bli_dgemm_ex
#else
#define BLI_GEMM_EX bli_sgemm_ex
#endif

void at_gemm_strided(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
                     const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                     int64_t csb, real beta, real *c, int64_t rsc, int64_t csc, int nthreads) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) { /* nothing to multiply: C = beta * C */
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) {
        real *x = &c[i * rsc + j * csc];
        *x = beta == 0 ? 0 : beta * *x;
      }
    return;
  }
  rntm_t rntm = BLIS_RNTM_INITIALIZER;
  bli_rntm_set_num_threads(nthreads > 0 ? nthreads : at_threads_here(), &rntm);
  BLI_GEMM_EX(ta == AT_T ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              tb == AT_T ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, (dim_t)m, (dim_t)n, (dim_t)k,
              &alpha, (real *)a, (inc_t)rsa, (inc_t)csa, (real *)b, (inc_t)rsb, (inc_t)csb, &beta,
              c, (inc_t)rsc, (inc_t)csc, NULL, &rntm);
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
