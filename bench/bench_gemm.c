/* bench/bench_gemm.c: GFLOP/s of the at_gemm wrapper (core/gemm.h) on
 * transformer-shaped problems, next to BLIS called directly with the same
 * thread count (the machine's practical peak for that shape).
 *
 *   bench_gemm [min_seconds_per_point (0.2)] [max_threads (2)] [--quick]
 *
 * Problems, for d in 64..512 and B*T (rows) in 256..8192:
 *   qkv    [rows, d] x [d, 3d]    (as linear: x W^T, W [3d, d])
 *   mlp    [rows, d] x [d, 4d]
 *   down   [rows, 4d] x [4d, d]
 *   scores [T, 64] x [64, T] per head (Q K^T), batched over heads
 *          (T = min(rows, 1024), batch = min(rows / T * d / 64, 16)); the
 *          direct BLIS run loops over the batch with all threads.
 * A benchmark only measures: nothing here is run by the tests.
 */
#include <blis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/gemm.h"
#include "core/rng.h"
#include "core/threads.h"

#ifdef AT_DOUBLE
#define BLI_GEMM bli_dgemm
#else
#define BLI_GEMM bli_sgemm
#endif

typedef struct problem {
  const char *name;
  int64_t batch, m, n, k;
  at_trans tb; /* A is never transposed; B is [n, k] (AT_T) or [k, n] (AT_N) */
} problem;

static void run_wrapper(const problem *p, const real *a, const real *b, real *c) {
  int64_t ldb = p->tb == AT_T ? p->k : p->n;
  if (p->batch == 1)
    at_gemm(AT_N, p->tb, p->m, p->n, p->k, 1, a, p->k, b, ldb, 0, c, p->n);
  else
    at_gemm_batched(p->batch, AT_N, p->tb, p->m, p->n, p->k, 1, a, p->k, p->m * p->k, b, ldb,
                    p->n * p->k, 0, c, p->n, p->m * p->n);
}

static void run_direct(const problem *p, const real *a, const real *b, real *c) {
  real one = 1, zero = 0;
  /* row-major strides: A (m x k) rs = k, cs = 1; B as stored */
  inc_t rsb = p->tb == AT_T ? p->k : p->n, csb = 1;
  for (int64_t i = 0; i < p->batch; i++)
    BLI_GEMM(BLIS_NO_TRANSPOSE, p->tb == AT_T ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, (dim_t)p->m,
             (dim_t)p->n, (dim_t)p->k, &one, (real *)a + i * p->m * p->k, (inc_t)p->k, 1,
             (real *)b + i * p->n * p->k, rsb, csb, &zero, c + i * p->m * p->n, (inc_t)p->n, 1);
}

/* GFLOP/s of f over at least min_s seconds (after one warm-up call). */
static double measure(void (*f)(const problem *, const real *, const real *, real *),
                      const problem *p, const real *a, const real *b, real *c, double min_s) {
  f(p, a, b, c);
  int64_t reps = 0;
  double t0 = at_now(), t;
  do {
    f(p, a, b, c);
    reps++;
    t = at_now() - t0;
  } while (t < min_s);
  return 2.0 * (double)p->batch * (double)p->m * (double)p->n * (double)p->k * (double)reps /
         t * 1e-9;
}

static real *buffer(int64_t n, uint64_t seed) {
  real *x = malloc((size_t)n * sizeof(real));
  if (!x) {
    fprintf(stderr, "bench_gemm: out of memory (%lld elements)\n", (long long)n);
    exit(1);
  }
  at_fill_uniform(x, n, seed, 1, -1, 1);
  return x;
}

int main(int argc, char **argv) {
  double min_s = 0.2;
  int max_threads = 2, quick = 0, pos = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (pos++ == 0) min_s = atof(argv[i]);
    else max_threads = atoi(argv[i]);
  }
  if (!(min_s > 0) || max_threads < 1) {
    fprintf(stderr, "usage: %s [min_seconds_per_point] [max_threads] [--quick]\n", argv[0]);
    return 2;
  }
  const int64_t ds[] = {64, 128, 256, 512}, rows_list[] = {256, 1024, 4096, 8192};
  int nd = quick ? 2 : 4, nr = quick ? 2 : 4;
  printf("# at_gemm wrapper vs BLIS direct (%s), GFLOP/s; min %.2f s per point\n", AT_REAL_NAME,
         min_s);
  printf("%-7s %5s %5s %5s %5s %5s %3s %10s %10s %6s\n", "problem", "d", "batch", "m", "n", "k",
         "thr", "wrapper", "blis", "ratio");
  double peak[8] = {0};
  for (int di = 0; di < nd; di++)
    for (int ri = 0; ri < nr; ri++) {
      int64_t d = ds[di], rows = rows_list[ri];
      int64_t t = AT_MIN(rows, 1024), heads = AT_MIN(rows / t * (d / 64), 16);
      const problem ps[] = {
        {"qkv", 1, rows, 3 * d, d, AT_T},
        {"mlp", 1, rows, 4 * d, d, AT_T},
        {"down", 1, rows, d, 4 * d, AT_T},
        {"scores", heads, t, t, 64, AT_T},
      };
      for (int pi = 0; pi < AT_ARRAY_LEN(ps); pi++) {
        const problem *p = &ps[pi];
        real *a = buffer(p->batch * p->m * p->k, 1), *b = buffer(p->batch * p->n * p->k, 2);
        real *c = buffer(p->batch * p->m * p->n, 3);
        for (int nt = 1; nt <= max_threads; nt *= 2) {
          at_set_threads(nt); /* OpenMP and BLIS's global setting */
          double gw = measure(run_wrapper, p, a, b, c, min_s);
          double gb = measure(run_direct, p, a, b, c, min_s);
          if (nt < 8 && gb > peak[nt]) peak[nt] = gb;
          printf("%-7s %5lld %5lld %5lld %5lld %5lld %3d %10.2f %10.2f %6.3f\n", p->name,
                 (long long)d, (long long)p->batch, (long long)p->m, (long long)p->n,
                 (long long)p->k, nt, gw, gb, gw / gb);
          fflush(stdout);
        }
        free(a), free(b), free(c);
      }
    }
  for (int nt = 1; nt <= max_threads && nt < 8; nt *= 2)
    printf("# best BLIS direct with %d thread%s: %.2f GFLOP/s\n", nt, nt > 1 ? "s" : "", peak[nt]);
  return 0;
}
