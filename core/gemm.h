/* core/gemm.h: the one place that calls BLIS.
 *
 *   C = alpha * op(A) * op(B) + beta * C,   op(X) = X or X^T
 *
 * Row-major with leading dimensions (lda = row stride of A as stored), or
 * with general row/column strides. beta = 1 accumulates (backward passes),
 * beta = 0 never reads C. The thread count is chosen per call: `nthreads`
 * <= 0 means at_threads_here() (1 inside OpenMP regions).
 */
#ifndef AT_GEMM_H
#define AT_GEMM_H

#include "core/base.h"

typedef enum at_trans { AT_N = 0, AT_T = 1 } at_trans;

void at_gemm(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
             const real *a, int64_t lda, const real *b, int64_t ldb, real beta, real *c,
             int64_t ldc);

/* op(A) is m x k, op(B) is k x n, C is m x n; (rs, cs) are the strides of
 * each matrix as stored (before op). */
void at_gemm_strided(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
                     const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                     int64_t csb, real beta, real *c, int64_t rsc, int64_t csc, int nthreads);

/* `batch` independent GEMMs whose operands are `stride_*` elements apart
 * (e.g. one per head). Runs the batch in parallel with single-threaded GEMMs
 * when there is enough of it, else one after another with all threads. */
void at_gemm_batched(int64_t batch, at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k,
                     real alpha, const real *a, int64_t lda, int64_t stride_a, const real *b,
                     int64_t ldb, int64_t stride_b, real beta, real *c, int64_t ldc,
                     int64_t stride_c);

#endif
