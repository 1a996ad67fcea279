/* bench/bench_gemm.c: GFLOP/s of the at_gemm wrapper (core/gemm.h) on
 * transformer-shaped problems, next to BLIS called directly with the same
 * thread count (the machine's practical peak for that shape).
 *
 *   bench_gemm [min_seconds_per_point (0.2)] [max_threads (2)] [--quick]
 *   bench_gemm --small [min_seconds_per_point]
 *
 * Problems, for d in 64..512 and B*T (rows) in 256..8192:
 *   qkv    [rows, d] x [d, 3d]    (as linear: x W^T, W [3d, d])
 *   mlp    [rows, d] x [d, 4d]
 *   down   [rows, 4d] x [4d, d]
 *   scores [T, 64] x [64, T] per head (Q K^T), batched over heads
 *          (T = min(rows, 1024), batch = min(rows / T * d / 64, 16)); the
 *          direct BLIS run loops over the batch with all threads.
 * "BLIS direct" is one BLIS call with BLIS's own threads (the wrapper never
 * uses them: see core/gemm.c).
 * --small: one thread, the products of the chunked linear-attention kernels
 * and of attention tiles (chunk 64, head dims 32 / 64 / 128), which go to
 * the wrapper's register-blocked kernel: CPU ns per call and GFLOP/s.
 * A benchmark only measures: nothing here is run by the tests.
 */
#include <blis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/gemm.h"
#include "core/rng.h"
#include "core/threads.h"

#ifdef AT_DOUBLE
#define BLI_GEMM_EX bli_dgemm_ex
#else
#define BLI_GEMM_EX bli_sgemm_ex
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

static int direct_threads = 1; /* BLIS's own threads for the direct calls */

static void run_direct(const problem *p, const real *a, const real *b, real *c) {
  real one = 1, zero = 0;
  rntm_t rntm = BLIS_RNTM_INITIALIZER;
  bli_rntm_set_num_threads(direct_threads, &rntm);
  /* row-major strides: A (m x k) rs = k, cs = 1; B as stored */
  inc_t rsb = p->tb == AT_T ? p->k : p->n, csb = 1;
  for (int64_t i = 0; i < p->batch; i++)
    BLI_GEMM_EX(BLIS_NO_TRANSPOSE, p->tb == AT_T ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
                (dim_t)p->m, (dim_t)p->n, (dim_t)p->k, &one, (real *)a + i * p->m * p->k,
                (inc_t)p->k, 1, (real *)b + i * p->n * p->k, rsb, csb, &zero,
                c + i * p->m * p->n, (inc_t)p->n, 1, NULL, &rntm);
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

/* ---- --small -------------------------------------------------------------- */

typedef struct small_problem {
  int64_t m, n, k;
  at_trans ta, tb;
  real beta;
} small_problem;

static const small_problem *sp_cur;
static real *sp_a, *sp_b, *sp_c;

static void small_wrapper(void) {
  const small_problem *p = sp_cur;
  at_gemm(p->ta, p->tb, p->m, p->n, p->k, 1, sp_a, p->ta == AT_N ? p->k : p->m, sp_b,
          p->tb == AT_N ? p->n : p->k, p->beta, sp_c, p->n);
}

static void small_direct(void) {
  const small_problem *p = sp_cur;
  real one = 1, beta = p->beta;
  rntm_t rntm = BLIS_RNTM_INITIALIZER;
  bli_rntm_set_num_threads(1, &rntm);
  BLI_GEMM_EX(p->ta == AT_T ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE,
              p->tb == AT_T ? BLIS_TRANSPOSE : BLIS_NO_TRANSPOSE, (dim_t)p->m, (dim_t)p->n,
              (dim_t)p->k, &one, sp_a, p->ta == AT_N ? (inc_t)p->k : (inc_t)p->m, 1, sp_b,
              p->tb == AT_N ? (inc_t)p->n : (inc_t)p->k, 1, &beta, sp_c, (inc_t)p->n, 1, NULL,
              &rntm);
}

/* This thread's CPU seconds: with one thread, time the machine gave to other
 * processes does not count. */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds per call of f, best of 5 runs of at least min_s / 5 each. */
static double per_call(void (*f)(void), double min_s) {
  double best = 1e30;
  for (int run = 0; run < 5; run++) {
    int64_t reps = 0;
    double t0 = cpu_now(), t;
    do {
      for (int i = 0; i < 16; i++) f();
      reps += 16;
      t = cpu_now() - t0;
    } while (t < min_s / 5);
    best = AT_MIN(best, t / (double)reps);
  }
  return best;
}

static int run_small(double min_s) {
  const small_problem ps[] = {
    {64, 64, 32, AT_N, AT_T, 0},  {64, 32, 64, AT_N, AT_N, 1},  {32, 32, 64, AT_T, AT_N, 1},
    {64, 32, 32, AT_N, AT_N, 0},  {64, 64, 64, AT_N, AT_T, 0},  {64, 64, 64, AT_N, AT_N, 1},
    {64, 64, 64, AT_T, AT_N, 1},  {64, 128, 64, AT_N, AT_N, 1}, {64, 64, 128, AT_N, AT_T, 0},
    {96, 96, 96, AT_N, AT_N, 1},  {16, 16, 16, AT_N, AT_N, 0},  {1024, 64, 64, AT_N, AT_T, 0},
  };
  at_set_threads(1);
  sp_a = buffer(128 * 1024, 1), sp_b = buffer(128 * 1024, 2), sp_c = buffer(128 * 1024, 3);
  printf("# small products, 1 thread (%s, vector ISA %s, -march=%s, BLIS %s)\n", AT_REAL_NAME,
         at_isa(), at_march(), at_blis_arch());
  printf("%5s %5s %5s %2s %2s %4s %10s %10s %9s %9s %6s\n", "m", "n", "k", "ta", "tb", "beta",
         "wrap ns", "blis ns", "wrap GF/s", "blis GF/s", "ratio");
  double logsum = 0;
  for (int i = 0; i < AT_ARRAY_LEN(ps); i++) {
    sp_cur = &ps[i];
    double tw = per_call(small_wrapper, min_s), tb = per_call(small_direct, min_s);
    double fl = 2.0 * (double)(ps[i].m * ps[i].n * ps[i].k);
    printf("%5lld %5lld %5lld %2s %2s %4g %10.0f %10.0f %9.1f %9.1f %6.2f\n", (long long)ps[i].m,
           (long long)ps[i].n, (long long)ps[i].k, ps[i].ta == AT_T ? "T" : "N",
           ps[i].tb == AT_T ? "T" : "N", (double)ps[i].beta, tw * 1e9, tb * 1e9, fl / tw * 1e-9,
           fl / tb * 1e-9, tb / tw);
    logsum += log(tb / tw);
  }
  printf("# geometric-mean speed-up of the wrapper over BLIS: %.2f\n",
         exp(logsum / AT_ARRAY_LEN(ps)));
  free(sp_a), free(sp_b), free(sp_c);
  return 0;
}

int main(int argc, char **argv) {
  double min_s = 0.2;
  if (argc > 1 && !strcmp(argv[1], "--small")) return run_small(argc > 2 ? atof(argv[2]) : 0.5);
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
          at_set_threads(nt);
          direct_threads = nt;
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
