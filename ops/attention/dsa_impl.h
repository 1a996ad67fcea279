/* ops/attention/dsa_impl.h: helpers shared by the DSA files (not public API).
 *
 * dsa.c         sparse attention over selected keys, at_dsa, attention decode
 * dsa_indexer.c lightning indexer scores and top-k selection, its decode form
 * dsa_loss.c    the indexer's KL loss (dense and sparse stage)
 */
#ifndef AT_ATTENTION_DSA_IMPL_H
#define AT_ATTENTION_DSA_IMPL_H

#include <math.h>
#include <omp.h>

#include "core/gemm.h"
#include "core/threads.h"
#include "ops/attention/dsa.h"

/* a . b. `omp simd` lets the compiler split the sum into vector lanes: a fixed
 * order for a given build, independent of threads. */
static inline real dsa_dot(const real *a, const real *b, int64_t n) {
  real s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
  return s;
}

/* y += alpha x (y in double, for long sums over rows). */
static inline void dsa_axpy_d(double *y, double alpha, const real *x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] += alpha * (double)x[i];
}

static inline void dsa_axpy(real *y, real alpha, const real *x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

/* Thread count of the op's parallel regions (1 inside someone else's region). */
static inline int dsa_threads(void) { return at_threads_here(); }

/* Checks a selection: rows r = 0..rows-1 of each of the `batch` entries sit at
 * position pos0 + r; every entry must be -1 or a key 0 <= s <= pos0 + r, with
 * no key twice in a row. On failure records AT_E_ARG on c (message names
 * `op`, the row and the entry) and returns 0. */
int at_dsa_check_indices(at_ctx *c, const char *op, const int32_t *idx, int64_t batch,
                         int64_t rows, int64_t k, int64_t pos0);

/* The selection transposed, per batch entry: for key s of entry b the rows
 * that selected it are row[off[b*T+s] .. off[b*T+s+1]-1], in increasing t.
 * off has B*T+1 entries. Valid (checked) indices only. NULL on NOMEM. */
typedef struct at_dsa_csr {
  int64_t *off;
  int32_t *row;
} at_dsa_csr;
int at_dsa_transpose(at_ctx *c, const int32_t *idx, int64_t B, int64_t T, int64_t k,
                     at_dsa_csr *out);

/* The positions of the valid entries of one selection row, compacted into
 * `out`; returns how many. */
static inline int64_t dsa_row_keys(const int32_t *row, int64_t k, int32_t *out) {
  int64_t n = 0;
  for (int64_t i = 0; i < k; i++)
    if (row[i] >= 0) out[n++] = row[i];
  return n;
}

/* I[t,s] for the keys `keys[0..n-1]` of one query row (plain dot products,
 * the form the loss differentiates): a[j*n + i] = scale q_idx[t,j] . k_idx[keys[i]]
 * (kept for the ReLU mask), I[i] = sum_j w_j ReLU(a). */
static inline void dsa_index_scores_row(const real *qi, const real *ki_base, const real *w,
                                        int64_t HI, int64_t DI, double scale,
                                        const int32_t *keys, int64_t n, real *a, double *I) {
  for (int64_t i = 0; i < n; i++) {
    const real *kk = ki_base + (int64_t)keys[i] * DI;
    double sum = 0;
    for (int64_t j = 0; j < HI; j++) {
      real x = (real)scale * dsa_dot(qi + j * DI, kk, DI);
      a[j * n + i] = x;
      if (x > 0) sum += (w ? (double)w[j] : 1.0) * (double)x;
    }
    I[i] = sum;
  }
}

/* log sum_i exp(x[i]) over n > 0 values, and its maximum. */
static inline double dsa_logsumexp(const double *x, int64_t n) {
  double m = -INFINITY;
  for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
  if (m == -INFINITY) return -INFINITY;
  double s = 0;
  for (int64_t i = 0; i < n; i++) s += exp(x[i] - m);
  return m + log(s);
}

#endif
