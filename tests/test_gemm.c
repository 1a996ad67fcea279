/* GEMM wrapper against a naive triple loop: every transpose pair, row- and
 * column-major strides with padding, beta 0 / 1 / 0.5, several thread counts,
 * batched, degenerate sizes. */
#include <stdlib.h>
#include <string.h>

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

/* One case with matrices stored row-major (col_major = 0) or column-major
 * (1), each with 3 elements of padding per line. */
typedef struct gcase {
  at_trans ta, tb;
  int64_t m, n, k;
  double beta;
  int col_major;
  int64_t rsa, csa, rsb, csb, rsc, csc, na, nb, nc;
  real *a, *b, *c0; /* c0: C before the product */
} gcase;

static gcase make_case(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, double beta,
                       int col_major) {
  gcase g = {.ta = ta, .tb = tb, .m = m, .n = n, .k = k, .beta = beta, .col_major = col_major};
  int64_t ar = ta == AT_N ? m : k, ac = ta == AT_N ? k : m; /* A as stored */
  int64_t br = tb == AT_N ? k : n, bc = tb == AT_N ? n : k;
  int64_t pad = 3;
  int64_t lda = (col_major ? ar : ac) + pad, ldb = (col_major ? br : bc) + pad,
          ldc = (col_major ? m : n) + pad;
  g.rsa = col_major ? 1 : lda, g.csa = col_major ? lda : 1;
  g.rsb = col_major ? 1 : ldb, g.csb = col_major ? ldb : 1;
  g.rsc = col_major ? 1 : ldc, g.csc = col_major ? ldc : 1;
  g.na = (col_major ? ac : ar) * lda, g.nb = (col_major ? bc : br) * ldb;
  g.nc = (col_major ? n : m) * ldc;
  g.a = randbuf(g.na, 1), g.b = randbuf(g.nb, 2), g.c0 = randbuf(g.nc, 3);
  if (beta == 0) /* beta = 0 must not read C: poison it */
    for (int64_t i = 0; i < g.nc; i++) g.c0[i] = NAN;
  return g;
}

static void free_case(gcase *g) { free(g->a), free(g->b), free(g->c0); }

/* C after the wrapper's product with `threads` threads (caller frees). */
static real *wrapper_c(const gcase *g, int threads) {
  real *c = malloc((size_t)g->nc * sizeof *c);
  memcpy(c, g->c0, (size_t)g->nc * sizeof *c);
  at_gemm_strided(g->ta, g->tb, g->m, g->n, g->k, (real)1.5, g->a, g->rsa, g->csa, g->b, g->rsb,
                  g->csb, (real)g->beta, c, g->rsc, g->csc, threads);
  return c;
}

static void run_case(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, double beta,
                     int col_major, int threads) {
  gcase g = make_case(ta, tb, m, n, k, beta, col_major);
  real *c1 = wrapper_c(&g, threads), *c2 = malloc((size_t)g.nc * sizeof *c2);
  memcpy(c2, g.c0, (size_t)g.nc * sizeof *c2);
  naive(ta, tb, m, n, k, 1.5, g.a, g.rsa, g.csa, g.b, g.rsb, g.csb, beta, c2, g.rsc, g.csc);
  /* compare only the matrix, not the padding */
  double d = 0, r = 0;
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < n; j++) {
      double x = c1[i * g.rsc + j * g.csc], y = c2[i * g.rsc + j * g.csc];
      d += (x - y) * (x - y);
      r += y * y;
    }
  double e = sqrt(d) / fmax(sqrt(r), 1e-30);
  cr_expect(e < 1e-5, "gemm ta=%d tb=%d m=%lld n=%lld k=%lld beta=%g col=%d thr=%d: rel err %g",
            ta, tb, (long long)m, (long long)n, (long long)k, beta, col_major, threads, e);
  free(c1), free(c2);
  free_case(&g);
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

/* Shapes through every path of core/gemm.c and of BLIS (m, n, k): the small
 * kernel cut into row slabs; BLIS's small-matrix ("sup") sizes of haswell /
 * zen3 (a dimension under 201) cut into slabs that end inside a 6-row
 * micro-tile; k cut into slices with partial sums; BLIS's packed path (all
 * dimensions >= 201) cut by rows and by columns. */
static const int64_t path_shapes[][3] = {
  {1000, 96, 96}, {3001, 33, 65}, /* small kernel */
  {1000, 150, 100}, {130, 1001, 90}, {200, 150, 300}, /* sup sizes */
  {150, 100, 5000}, {64, 48, 20000}, /* k slices */
  {600, 500, 400}, {257, 900, 333}, /* packed */
};

/* Bit-identical C with 1, 2, 3 and 4 threads, and close to the naive loop. */
Test(gemm, thread_counts_agree) {
  for (int s = 0; s < AT_ARRAY_LEN(path_shapes); s++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        double beta = (ta + tb) % 2 ? 0.5 : 0;
        int col_major = s % 2 && ta == tb;
        const int64_t *z = path_shapes[s];
        gcase g = make_case((at_trans)ta, (at_trans)tb, z[0], z[1], z[2], beta, col_major);
        real *c1 = wrapper_c(&g, 1);
        for (int thr = 2; thr <= 4; thr++) {
          real *ct = wrapper_c(&g, thr);
          cr_expect(memcmp(c1, ct, (size_t)g.nc * sizeof *c1) == 0,
                    "%lld x %lld x %lld, ta %d tb %d, beta %g: 1 and %d threads differ (BLIS %s)",
                    (long long)z[0], (long long)z[1], (long long)z[2], ta, tb, beta, thr,
                    at_blis_arch());
          free(ct);
        }
        free(c1);
        free_case(&g);
        if (ta == tb) run_case((at_trans)ta, (at_trans)tb, z[0], z[1], z[2], beta, col_major, 3);
      }
}

/* The same for a batch (per-head products), inside and outside OpenMP. */
Test(gemm, batched_thread_counts_agree) {
  const int64_t shapes[][4] = {{3, 1000, 64, 64}, {5, 200, 150, 300}, {2, 100, 80, 3000}};
  for (int s = 0; s < AT_ARRAY_LEN(shapes); s++) {
    int64_t batch = shapes[s][0], m = shapes[s][1], n = shapes[s][2], k = shapes[s][3];
    real *a = randbuf(batch * m * k, 11), *b = randbuf(batch * k * n, 12);
    real *c[4];
    for (int thr = 1; thr <= 4; thr++) {
      at_set_threads(thr);
      c[thr - 1] = randbuf(batch * m * n, 13);
      at_gemm_batched(batch, AT_N, AT_T, m, n, k, 1, a, k, m * k, b, k, k * n, 1, c[thr - 1], n,
                      m * n);
    }
    for (int thr = 2; thr <= 4; thr++)
      cr_expect(memcmp(c[0], c[thr - 1], (size_t)(batch * m * n) * sizeof(real)) == 0,
                "batch %lld of %lld x %lld x %lld: 1 and %d threads differ", (long long)batch,
                (long long)m, (long long)n, (long long)k, thr);
    for (int thr = 0; thr < 4; thr++) free(c[thr]);
    free(a), free(b);
  }
  at_set_threads(1);
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
