/* bench/bench_dsa.c: DeepSeek Sparse Attention against full causal attention
 * as the sequence grows (issue 5's bench).
 *
 *   bench_dsa [--batch B] [--heads HQ] [--kv-heads H] [--dim D] [--vdim Dv]
 *             [--idx-heads HI] [--idx-dim DI] [--topk K] [--tmin T] [--tmax T]
 *             [--reps N] [--threads N]
 *
 * Defaults: B = 1, HQ = 8 query heads over H = 1 KV head (DSA runs on MLA's
 * MQA mode), D = Dv = 64, indexer HI = 4 heads of DI = 32, K = 256,
 * T = 1024 .. 16384 doubling, best of N = 3 repetitions after one warm-up
 * (N = 1 from T = 8192 on), all processors.
 *
 * Per T it times, in milliseconds:
 *   topk     the lightning indexer and top-k selection (no backward: the
 *            selection is integer), O(T^2 HI DI)
 *   kl       the sparse-stage indexer loss, forward + backward, O(T K)
 *   sparse   the sparse attention over the selected keys, forward + backward, O(T K)
 *   full     fused full causal attention, forward + backward, O(T^2)
 * and the cost per (query, key) pair in nanoseconds: topk and full over the
 * T (T+1) / 2 causal pairs, sparse over the sum_t min(t+1, K) selected pairs.
 * `full/idx` is full attention's per-pair cost over the indexer's (DeepSeek's
 * count: the indexer at ~1/17 of MLA's multiply-adds per pair); `dsa/full`
 * is DSA's step (topk + kl + sparse) over full attention's: DSA wins from the
 * first T where it drops below 1. Both grow: sparse as T K, topk as T^2.
 * A benchmark measures; nothing here asserts a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "bench/bench_util.h"
#include "core/threads.h"
#include "ops/attention/dsa.h"

/* ---- FULL ATTENTION ---------------------------------------------------------
 * The fused full attention op (at_attention, ops/attention/full.h, branch
 * `attn`) is timed when that header is in the tree; otherwise its columns
 * print "-". */
#if defined(__has_include)
#if __has_include("ops/attention/full.h")
#include "ops/attention/full.h"
#define BENCH_HAVE_FULL 1
#endif
#endif

static at_tensor *randn(at_ctx *c, uint64_t seed, int ndim, const int64_t *shape, int grad) {
  at_tensor *t = at_new(c, ndim, shape);
  if (!t) return NULL;
  at_fill_normal(t->data, t->size, seed, 1, 0, 1);
  t->requires_grad = grad;
  return t;
}
#define RANDN(c, seed, grad, ...) randn((c), (seed), AT_SHAPE(__VA_ARGS__), (grad))

typedef struct sizes {
  int64_t B, T, HQ, H, D, Dv, HI, DI, K;
} sizes;

enum { M_TOPK, M_KL, M_SPARSE, M_FULL, M_COUNT };

/* One timed run of measurement m; returns seconds, or -1 on failure. */
static double run_once(const sizes *z, int m) {
  at_ctx *c = at_ctx_new((size_t)256 << 20);
  if (!c) return -1;
  at_tensor *q = RANDN(c, 1, m != M_KL, z->B, z->T, z->HQ, z->D);
  at_tensor *k = RANDN(c, 2, m != M_KL, z->B, z->T, z->H, z->D);
  at_tensor *v = RANDN(c, 3, 1, z->B, z->T, z->H, z->Dv);
  at_tensor *qi = RANDN(c, 4, 1, z->B, z->T, z->HI, z->DI);
  at_tensor *ki = RANDN(c, 5, 1, z->B, z->T, z->DI);
  at_tensor *w = RANDN(c, 6, 1, z->B, z->T, z->HI);
  double t0 = 0, t1 = -1;
  if (q && k && v && qi && ki && w) {
    at_itensor *sel = m == M_TOPK ? NULL : at_dsa_topk(c, qi, ki, w, z->K, 0);
    t0 = at_now();
    if (m == M_TOPK) {
      if (at_dsa_topk(c, qi, ki, w, z->K, 0)) t1 = at_now();
    } else if (m == M_KL) {
      at_dsa_loss_opts o = {0, 0, 1};
      at_tensor *L = at_dsa_indexer_loss(c, qi, ki, w, q, k, sel, &o, NULL);
      if (L && bench_backward_ones(c, L)) t1 = at_now();
    } else if (m == M_SPARSE) {
      at_tensor *o = at_dsa_attention(c, q, k, v, sel, 0);
      if (o && bench_backward_ones(c, o)) t1 = at_now();
    } else {
#ifdef BENCH_HAVE_FULL
      at_tensor *o = at_attention(c, q, k, v, NULL);
      if (o && bench_backward_ones(c, o)) t1 = at_now();
#endif
    }
  }
  if (t1 < 0 && at_ctx_status(c) != AT_OK) fprintf(stderr, "bench_dsa: %s\n", at_errmsg());
  at_ctx_free(c);
  return t1 < 0 ? -1 : t1 - t0;
}

static double best_of(const sizes *z, int m, int reps) {
  if (run_once(z, m) < 0) return -1; /* warm-up (and availability) */
  double best = 1e300;
  for (int r = 0; r < reps; r++) {
    double s = run_once(z, m);
    if (s < 0) return -1;
    if (s < best) best = s;
  }
  return best;
}

static void cell(double v, int width, int prec) {
  if (v < 0)
    printf(" %*s", width, "-");
  else
    printf(" %*.*f", width, prec, v);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("usage: bench_dsa [--batch B] [--heads HQ] [--kv-heads H] [--dim D] [--vdim Dv]\n"
             "                 [--idx-heads HI] [--idx-dim DI] [--topk K] [--tmin T] [--tmax T]\n"
             "                 [--reps N] [--threads N]\n");
      return 0;
    }
  sizes z;
  z.B = bench_arg_int(argc, argv, "--batch", 1), z.HQ = bench_arg_int(argc, argv, "--heads", 8);
  z.H = bench_arg_int(argc, argv, "--kv-heads", 1), z.D = bench_arg_int(argc, argv, "--dim", 64);
  z.Dv = bench_arg_int(argc, argv, "--vdim", z.D), z.HI = bench_arg_int(argc, argv, "--idx-heads", 4);
  z.DI = bench_arg_int(argc, argv, "--idx-dim", 32), z.K = bench_arg_int(argc, argv, "--topk", 256);
  int64_t tmin = bench_arg_int(argc, argv, "--tmin", 1024), tmax = bench_arg_int(argc, argv, "--tmax", 16384);
  int reps = (int)bench_arg_int(argc, argv, "--reps", 3);
  at_set_threads((int)bench_arg_int(argc, argv, "--threads", 0));
  if (z.B < 1 || z.HQ < 1 || z.H < 1 || z.HQ % z.H || z.D < 1 || z.Dv < 1 || z.HI < 1 ||
      z.DI < 1 || z.K < 1 || tmin < 1 || reps < 1) {
    fprintf(stderr, "bench_dsa: invalid sizes (need HQ %% H == 0, all positive)\n");
    return 2;
  }
  printf("# DSA vs full attention: B=%lld HQ=%lld H=%lld D=%lld Dv=%lld indexer HI=%lld DI=%lld "
         "topk=%lld threads=%d (%s)\n",
         (long long)z.B, (long long)z.HQ, (long long)z.H, (long long)z.D, (long long)z.Dv,
         (long long)z.HI, (long long)z.DI, (long long)z.K, at_threads(), AT_REAL_NAME);
  printf("# multiply-adds per pair: indexer %lld, attention forward %lld (ratio %.1f)%s\n",
         (long long)(z.HI * z.DI), (long long)(z.HQ * (z.D + z.Dv)),
         (double)(z.HQ * (z.D + z.Dv)) / (double)(z.HI * z.DI),
#ifdef BENCH_HAVE_FULL
         ""
#else
         "; full attention: not in this tree (ops/attention/full.h), its columns print -"
#endif
  );
  printf("%7s %9s %9s %9s %9s %9s %9s %9s %9s %8s %8s\n", "T", "topk_ms", "kl_ms", "sparse_ms",
         "full_ms", "topk_ns", "sparse_ns", "full_ns", "dsa_ms", "full/idx", "dsa/full");
  int64_t crossover = -1;
  for (int64_t T = tmin; T <= tmax; T *= 2) {
    z.T = T;
    int r = T >= 8192 ? 1 : reps;
    double tm[M_COUNT];
    for (int m = 0; m < M_COUNT; m++) tm[m] = best_of(&z, m, r);
    double causal = (double)z.B * (double)T * (double)(T + 1) / 2, selected = 0;
    for (int64_t t = 0; t < T; t++) selected += (double)(t + 1 < z.K ? t + 1 : z.K);
    selected *= (double)z.B;
    double dsa = tm[M_TOPK] < 0 || tm[M_KL] < 0 || tm[M_SPARSE] < 0
                     ? -1 : tm[M_TOPK] + tm[M_KL] + tm[M_SPARSE];
    double ns_idx = tm[M_TOPK] < 0 ? -1 : 1e9 * tm[M_TOPK] / causal;
    double ns_full = tm[M_FULL] < 0 ? -1 : 1e9 * tm[M_FULL] / causal;
    printf("%7lld", (long long)T);
    for (int m = 0; m < M_COUNT; m++) cell(tm[m] < 0 ? -1 : 1e3 * tm[m], 9, 1);
    cell(ns_idx, 9, 3);
    cell(tm[M_SPARSE] < 0 ? -1 : 1e9 * tm[M_SPARSE] / selected, 9, 3);
    cell(ns_full, 9, 3);
    cell(dsa < 0 ? -1 : 1e3 * dsa, 9, 1);
    cell(ns_idx > 0 && ns_full >= 0 ? ns_full / ns_idx : -1, 8, 2);
    cell(dsa >= 0 && tm[M_FULL] > 0 ? dsa / tm[M_FULL] : -1, 8, 3);
    printf("\n");
    fflush(stdout);
    if (crossover < 0 && dsa >= 0 && tm[M_FULL] > 0 && dsa < tm[M_FULL]) crossover = T;
  }
  if (crossover > 0)
    printf("# DSA's step (indexer + loss + sparse attention) beats full attention from T = %lld\n",
           (long long)crossover);
  else
    printf("# no crossover in this range%s\n",
#ifdef BENCH_HAVE_FULL
           ""
#else
           " (full attention not built)"
#endif
    );
  return 0;
}
