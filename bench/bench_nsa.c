/* bench/bench_nsa.c: Native Sparse Attention's three branches against full
 * causal attention as the sequence grows (issue 12's bench).
 *
 *   bench_nsa [--batch B] [--heads HQ] [--kv-heads H] [--dim D] [--cmp-block l]
 *             [--cmp-stride d] [--sel-block l'] [--n-select n] [--window w]
 *             [--tmin T] [--tmax T] [--reps N] [--threads N]
 *
 * Defaults: B = 1, HQ = 8 query heads over H = 2 KV heads (GQA groups of 4),
 * D = 64, and the paper's block sizes (l 32, d 16, l' 64, n 16, w 512; its
 * §3.3 / research note sparse_path §2.4), T = 1024 .. 16384 doubling, best
 * of N = 3 after one warm-up (N = 1 from T = 8192 on), all processors.
 *
 * Per T, milliseconds of forward + backward (every input requires gradients):
 *   cmp      compressing keys and values (the MLP of at_nsa_compress, hidden
 *            2 D), the fused compressed attention, O(T^2 / d), and the
 *            selection it ranks in the same pass (integer: no backward)
 *   naive    the same branch materialised: the compressed attention from
 *            autograd ops ([T, T / d] probabilities) and at_nsa_select over
 *            them (what the fused kernel replaced; not part of nsa)
 *   slc      attention over the n selected blocks of l' keys, O(T n l')
 *   swa      sliding-window attention over w keys, O(T w)
 *   nsa      cmp + slc + swa (the gates and projections are the same as a
 *            full layer's up to the gate's 3 HQ outputs, left out)
 *   full     fused full causal attention on the same q, k, v, O(T^2)
 * `nsa/full` below 1 is where NSA's step beats full attention. A benchmark
 * measures; nothing here asserts a time.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "bench/bench_util.h"
#include "core/threads.h"
#include "ops/attention/full.h"
#include "ops/attention/layout.h"
#include "ops/attention/nsa.h"

typedef struct sizes {
  int64_t B, T, HQ, H, D, window;
  at_nsa_blocks blk;
} sizes;

enum { M_CMP, M_NAIVE, M_SLC, M_SWA, M_FULL, M_COUNT };
static const char *const m_names[M_COUNT] = {"cmp_ms", "naive_ms", "slc_ms", "swa_ms", "full_ms"};

static at_tensor *randn(at_ctx *c, uint64_t seed, int ndim, const int64_t *shape, double std) {
  at_tensor *t = at_new(c, ndim, shape);
  if (!t) return NULL;
  at_fill_normal(t->data, t->size, seed, 1, 0, std);
  t->requires_grad = 1;
  return t;
}
#define RANDN(c, seed, std, ...) randn((c), (seed), AT_SHAPE(__VA_ARGS__), (std))

/* The compressed branch: compression of k and v, attention over the blocks
 * and the selection, fused (or materialised, naive). */
static at_tensor *cmp_branch(at_ctx *c, const sizes *z, at_tensor *q, at_tensor *k, at_tensor *v,
                             int naive, at_itensor **sel) {
  int64_t l = z->blk.cmp_block, F = 2 * z->D;
  double s1 = 1 / sqrt((double)(l * z->D)), s2 = 1 / sqrt((double)F);
  at_tensor *pe = RANDN(c, 7, 0.02, l, z->D), *w1 = RANDN(c, 8, s1, F, l * z->D), *w2 = RANDN(c, 9, s2, z->D, F);
  at_tensor *kc = at_nsa_compress(c, k, pe, w1, w2, &z->blk);
  at_tensor *vc = at_nsa_compress(c, v, pe, w1, w2, &z->blk), *p = NULL, *o;
  if (!kc || !vc) return NULL;
  if (!naive) return at_nsa_cmp_attention(c, q, kc, vc, &z->blk, 0, 0, sel);
  o = at_nsa_cmp_attention_naive(c, q, kc, vc, &z->blk, 0, 0, &p);
  *sel = p ? at_nsa_select(c, p, z->B, z->H, z->HQ / z->H, z->T, 0, &z->blk) : NULL;
  return *sel ? o : NULL;
}

/* One timed run of measurement m in c (reset first: the arena's pages stay
 * mapped from the warm-up, as in training); seconds, or -1 on failure. */
static double run_once(at_ctx *c, const sizes *z, int m) {
  at_ctx_reset(c);
  at_tensor *q = RANDN(c, 1, 1.0, z->B, z->T, z->HQ, z->D);
  at_tensor *k = RANDN(c, 2, 1.0, z->B, z->T, z->H, z->D);
  at_tensor *v = RANDN(c, 3, 1.0, z->B, z->T, z->H, z->D);
  double t0 = 0, t1 = -1;
  at_tensor *o = NULL;
  if (q && k && v) {
    at_itensor *sel = NULL;
    if (m == M_SLC) cmp_branch(c, z, q, k, v, 0, &sel); /* the selection (untimed) */
    t0 = at_now();
    if (m == M_CMP || m == M_NAIVE) {
      o = cmp_branch(c, z, q, k, v, m == M_NAIVE, &sel);
    } else if (m == M_SLC) {
      at_attn_opts so = {.layout = sel ? at_attn_layout_selected(c, z->T, 1, z->blk.sel_block, sel, z->HQ / z->H) : NULL};
      o = so.layout ? at_attention(c, q, k, v, &so) : NULL;
    } else {
      at_attn_opts wo = {.window = m == M_SWA ? z->window : 0};
      o = at_attention(c, q, k, v, &wo);
    }
    if (o && bench_backward_ones(c, o)) t1 = at_now();
  }
  if (t1 < 0) fprintf(stderr, "bench_nsa: %s failed: %s\n", m_names[m], at_errmsg());
  return t1 < 0 ? -1 : t1 - t0;
}

static double best_of(const sizes *z, int m, int reps) {
  at_ctx *c = at_ctx_new(0);
  double best = c && run_once(c, z, m) >= 0 ? 1e300 : -1; /* warm-up */
  for (int r = 0; r < reps && best > 0; r++) {
    double s = run_once(c, z, m);
    best = s < 0 ? -1 : s < best ? s : best;
  }
  at_ctx_free(c);
  return best;
}

static void cell(double v, int width, int prec) {
  if (v < 0) printf(" %*s", width, "-");
  else printf(" %*.*f", width, prec, v);
}

static int parse(int argc, char **argv, sizes *z, int64_t *tmin, int64_t *tmax, int *reps) {
  z->B = bench_arg_int(argc, argv, "--batch", 1), z->HQ = bench_arg_int(argc, argv, "--heads", 8);
  z->H = bench_arg_int(argc, argv, "--kv-heads", 2), z->D = bench_arg_int(argc, argv, "--dim", 64);
  z->blk = (at_nsa_blocks){.cmp_block = bench_arg_int(argc, argv, "--cmp-block", 32),
                           .cmp_stride = bench_arg_int(argc, argv, "--cmp-stride", 16),
                           .sel_block = bench_arg_int(argc, argv, "--sel-block", 64),
                           .n_select = bench_arg_int(argc, argv, "--n-select", 16),
                           .n_local = 2};
  z->window = bench_arg_int(argc, argv, "--window", 512);
  *tmin = bench_arg_int(argc, argv, "--tmin", 1024), *tmax = bench_arg_int(argc, argv, "--tmax", 16384);
  *reps = (int)bench_arg_int(argc, argv, "--reps", 3);
  at_set_threads((int)bench_arg_int(argc, argv, "--threads", 0));
  return z->B >= 1 && z->HQ >= 1 && z->H >= 1 && z->HQ % z->H == 0 && z->D >= 1 && z->window >= 1 &&
         z->blk.cmp_stride >= 1 && z->blk.cmp_stride <= z->blk.cmp_block && z->blk.sel_block >= 1 &&
         z->blk.n_select >= 1 && *tmin >= z->blk.cmp_block && *reps >= 1;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: bench_nsa [--batch B] [--heads HQ] [--kv-heads H] [--dim D] [--cmp-block l]\n"
             "                 [--cmp-stride d] [--sel-block l'] [--n-select n] [--window w]\n"
             "                 [--tmin T] [--tmax T] [--reps N] [--threads N]\n");
      return 0;
    }
  sizes z;
  int64_t tmin, tmax;
  int reps;
  if (!parse(argc, argv, &z, &tmin, &tmax, &reps)) {
    fprintf(stderr, "bench_nsa: invalid sizes (need HQ %% H == 0, 1 <= d <= l <= tmin, all positive)\n");
    return 2;
  }
  printf("# NSA vs full attention: B=%lld HQ=%lld H=%lld D=%lld l=%lld d=%lld l'=%lld n=%lld w=%lld "
         "threads=%d (%s)\n",
         (long long)z.B, (long long)z.HQ, (long long)z.H, (long long)z.D, (long long)z.blk.cmp_block,
         (long long)z.blk.cmp_stride, (long long)z.blk.sel_block, (long long)z.blk.n_select,
         (long long)z.window, at_threads(), AT_REAL_NAME);
  printf("%7s", "T");
  for (int m = 0; m < M_COUNT; m++) printf(" %9s", m_names[m]);
  printf(" %9s %8s\n", "nsa_ms", "nsa/full");
  int64_t crossover = -1;
  for (int64_t T = tmin; T <= tmax; T *= 2) {
    z.T = T;
    double tm[M_COUNT], nsa = 0;
    for (int m = 0; m < M_COUNT; m++) {
      tm[m] = best_of(&z, m, T >= 8192 ? 1 : reps);
      if (m != M_FULL && m != M_NAIVE) nsa = tm[m] < 0 || nsa < 0 ? -1 : nsa + tm[m];
    }
    printf("%7lld", (long long)T);
    for (int m = 0; m < M_COUNT; m++) cell(tm[m] < 0 ? -1 : 1e3 * tm[m], 9, 1);
    cell(nsa < 0 ? -1 : 1e3 * nsa, 9, 1);
    cell(nsa >= 0 && tm[M_FULL] > 0 ? nsa / tm[M_FULL] : -1, 8, 3);
    printf("\n");
    fflush(stdout);
    if (crossover < 0 && nsa >= 0 && tm[M_FULL] > 0 && nsa < tm[M_FULL]) crossover = T;
  }
  if (crossover > 0) printf("# NSA's step (its three branches) beats full attention from T = %lld\n", (long long)crossover);
  else printf("# no crossover in this range\n");
  return 0;
}
