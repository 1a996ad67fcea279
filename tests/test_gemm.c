/* GEMM wrapper against a naive triple loop: every transpose pair, row- and
 * column-major strides with padding, beta 0 / 1 / 0.5, several thread counts,
 * batched, degenerate sizes. */
#include <stdlib.h>

#include "core/gemm.h"
#include "core/threads.h"
#include "testing.h"

/* C = alpha op(A) op(B) + beta C in double, same strides as the wrapper. */
static void naive(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, double alpha,
                  const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                  int64_t csb, double beta, real *c, int64_t rsc, int64_t csc) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double s = 0;
      for (int64_t p = 0; p < k; p++) {
        double x = ta == AT_N ? a[i * rsa + p * csa] : a[p * rsa + i * csa];
        double y = tb == AT_N ? b[p * rsb + j * csb] : b[j * rsb + p * csb];
        s += x * y;
      }
      real *z = &c[i * rsc + j * csc];
      *z = (real)(alpha * s + (beta == 0 ? 0 : beta * *z));
    }
}

static real *randbuf(int64_t n, uint64_t seed) {
  real *x = malloc((size_t)n * sizeof *x);
  at_fill_normal(x, n, seed, 1, 0, 1);
  return x;
}

/* Runs one case with matrices stored row-major (col_major = 0) or
 * column-major (1), each with 3 elements of padding per line. */
static void run_case(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, double beta,
                     int col_major, int threads) {
  int64_t ar = ta == AT_N ? m : k, ac = ta == AT_N ? k : m; /* A as stored */
  int64_t br = tb == AT_N ? k : n, bc = tb == AT_N ? n : k;
  int64_t pad = 3;
  int64_t lda = (col_major ? ar : ac) + pad, ldb = (col_major ? br : bc) + pad,
          ldc = (col_major ? m : n) + pad;
  int64_t rsa = col_major ? 1 : lda, csa = col_major ? lda : 1;
  int64_t rsb = col_major ? 1 : ldb, csb = col_major ? ldb : 1;
  int64_t rsc = col_major ? 1 : ldc, csc = col_major ? ldc : 1;
  int64_t na = (col_major ? ac : ar) * lda, nb = (col_major ? bc : br) * ldb,
          nc = (col_major ? n : m) * ldc;
  real *a = randbuf(na, 1), *b = randbuf(nb, 2), *c1 = randbuf(nc, 3), *c2 = randbuf(nc, 3);
  if (beta == 0) /* beta = 0 must not read C: poison it */
    for (int64_t i = 0; i < nc; i++) c1[i] = NAN;
  at_gemm_strided(ta, tb, m, n, k, (real)1.5, a, rsa, csa, b, rsb, csb, (real)beta, c1, rsc, csc,
                  threads);
  naive(ta, tb, m, n, k, 1.5, a, rsa, csa, b, rsb, csb, beta, c2, rsc, csc);
  /* compare only the matrix, not the padding */
  double d = 0, r = 0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double x = c1[i * rsc + j * csc], y = c2[i * rsc + j * csc];
      d += (x - y) * (x - y);
      r += y * y;
    }
  double e = sqrt(d) / fmax(sqrt(r), 1e-30);
  cr_expect(e < 1e-5, "gemm ta=%d tb=%d m=%lld n=%lld k=%lld beta=%g col=%d thr=%d: rel err %g",
            ta, tb, (long long)m, (long long)n, (long long)k, beta, col_major, threads, e);
  free(a), free(b), free(c1), free(c2);
}

Test(gemm, all_transposes_strides_betas) {
  const int64_t sizes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 65}, {64, 64, 64}, {1, 40, 9}, {50, 1, 13}};
  const double betas[] = {0, 1, 0.5};
  for (int s = 0; s < AT_ARRAY_LEN(sizes); s++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++)
        for (int bi = 0; bi < 3; bi++)
          for (int cm = 0; cm < 2; cm++)
            run_case((at_trans)ta, (at_trans)tb, sizes[s][0], sizes[s][1], sizes[s][2], betas[bi],
                     cm, 1);
}

Test(gemm, thread_counts_agree) {
  for (int thr = 1; thr <= 4; thr++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) run_case((at_trans)ta, (at_trans)tb, 129, 97, 150, 1, 0, thr);
  /* The same product with 1 and 3 threads: BLIS never splits the k loop, so
   * each element is summed in the same order. */
  int64_t m = 200, n = 150, k = 300;
  real *a = randbuf(m * k, 4), *b = randbuf(k * n, 5);
  real *c1 = calloc((size_t)(m * n), sizeof *c1), *c3 = calloc((size_t)(m * n), sizeof *c3);
  at_gemm_strided(AT_N, AT_N, m, n, k, 1, a, k, 1, b, n, 1, 0, c1, n, 1, 1);
  at_gemm_strided(AT_N, AT_N, m, n, k, 1, a, k, 1, b, n, 1, 0, c3, n, 1, 3);
  cr_expect(at_test_rel_err(c1, c3, m * n) == 0, "1 vs 3 threads differ");
  free(a), free(b), free(c1), free(c3);
}

Test(gemm, inside_openmp_region_uses_one_thread) {
  at_set_threads(2);
  int64_t m = 31, n = 29, k = 37, batch = 6;
  real *a = randbuf(batch * m * k, 6), *b = randbuf(batch * k * n, 7);
  real *c = calloc((size_t)(batch * m * n), sizeof *c), *r = calloc((size_t)(batch * m * n), sizeof *r);
#pragma omp parallel for
  for (int64_t i = 0; i < batch; i++)
    at_gemm(AT_N, AT_T, m, n, k, 1, a + i * m * k, k, b + i * k * n, k, 0, c + i * m * n, n);
  for (int64_t i = 0; i < batch; i++)
    naive(AT_N, AT_T, m, n, k, 1, a + i * m * k, k, 1, b + i * k * n, k, 1, 0, r + i * m * n, n, 1);
  AT_EXPECT_CLOSE(c, r, batch * m * n, 1e-5, "gemm in omp region");
  free(a), free(b), free(c), free(r);
}

Test(gemm, batched) {
  at_set_threads(2);
  int64_t m = 9, n = 11, k = 13;
  for (int64_t batch = 1; batch <= 5; batch += 2)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        int64_t lda = ta == AT_N ? k : m, ldb = tb == AT_N ? n : k;
        real *a = randbuf(batch * m * k, 8), *b = randbuf(batch * k * n, 9);
        real *c = randbuf(batch * m * n, 10), *r = randbuf(batch * m * n, 10);
        at_gemm_batched(batch, (at_trans)ta, (at_trans)tb, m, n, k, 2, a, lda, m * k, b, ldb, k * n,
                        1, c, n, m * n);
        for (int64_t i = 0; i < batch; i++)
          naive((at_trans)ta, (at_trans)tb, m, n, k, 2, a + i * m * k, lda, 1, b + i * k * n, ldb, 1,
                1, r + i * m * n, n, 1);
        AT_EXPECT_CLOSE(c, r, batch * m * n, 1e-5, "batched gemm");
        free(a), free(b), free(c), free(r);
      }
}

Test(gemm, empty_k_scales_c) {
  real c[6] = {1, 2, 3, 4, 5, 6}, a[1] = {0}, b[1] = {0};
  at_gemm(AT_N, AT_N, 2, 3, 0, 1, a, 1, b, 3, (real)0.5, c, 3);
  for (int i = 0; i < 6; i++) cr_expect_float_eq(c[i], 0.5f * (i + 1), 1e-6);
  at_gemm(AT_N, AT_N, 2, 3, 0, 1, a, 1, b, 3, 0, c, 3);
  for (int i = 0; i < 6; i++) cr_expect_float_eq(c[i], 0, 0);
}
