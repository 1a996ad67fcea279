/* bench/bench_attention.c: forward + backward time and peak step-arena bytes
 * of the fused causal attention (at_attention) against sequence length.
 *
 *   bench_attention [--batch B] [--heads HQ] [--kv-heads H] [--dim D] [--vdim Dv]
 *                   [--window W] [--tmin T] [--tmax T] [--reps N] [--threads N]
 *
 * Defaults: B = 2, HQ = 4, H = 2, D = Dv = 64, no window, T = 256 .. 8192
 * doubling, best of 3 repetitions after one warm-up, all processors.
 *
 * For each T it prints the forward and backward times (best repetition),
 * the attention FLOP rate (multiply-adds of the GEMMs over the visible
 * (query, key) pairs: forward 2 (D + Dv), backward 2 (3 D + 2 Dv) flops per
 * pair and query head), and the step arena's peak bytes over one forward +
 * backward (inputs excluded), with the bytes per token: with no T x T
 * buffer the bytes per token stay flat as T grows (a T x T float buffer per
 * head would add 4 T bytes per token per head).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/threads.h"
#include "ops/attention/attention.h"

static int64_t arg_int(int argc, char **argv, const char *name, int64_t dflt) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return strtoll(argv[i + 1], NULL, 10);
  return dflt;
}

/* Number of (query, key) pairs a causal (windowed) attention computes. */
static double visible_pairs(int64_t T, int64_t W) {
  double n = 0;
  for (int64_t i = 0; i < T; i++) n += (double)(W && W < i + 1 ? W : i + 1);
  return n;
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("usage: bench_attention [--batch B] [--heads HQ] [--kv-heads H] [--dim D] "
             "[--vdim Dv] [--window W] [--tmin T] [--tmax T] [--reps N] [--threads N]\n");
      return 0;
    }
  int64_t B = arg_int(argc, argv, "--batch", 2), HQ = arg_int(argc, argv, "--heads", 4);
  int64_t H = arg_int(argc, argv, "--kv-heads", 2), D = arg_int(argc, argv, "--dim", 64);
  int64_t Dv = arg_int(argc, argv, "--vdim", D), W = arg_int(argc, argv, "--window", 0);
  int64_t tmin = arg_int(argc, argv, "--tmin", 256), tmax = arg_int(argc, argv, "--tmax", 8192);
  int reps = (int)arg_int(argc, argv, "--reps", 3);
  at_set_threads((int)arg_int(argc, argv, "--threads", 0));
  if (B < 1 || HQ < 1 || H < 1 || HQ % H || D < 1 || Dv < 1 || W < 0 || tmin < 1 || reps < 1) {
    fprintf(stderr, "bench_attention: invalid sizes (need HQ %% H == 0, all positive)\n");
    return 2;
  }
  printf("# fused causal attention: B=%lld HQ=%lld H=%lld D=%lld Dv=%lld window=%lld "
         "threads=%d tiles=%dx%d (%s)\n",
         (long long)B, (long long)HQ, (long long)H, (long long)D, (long long)Dv, (long long)W,
         at_threads(), AT_ATTN_TILE_Q, AT_ATTN_TILE_K, AT_REAL_NAME);
  printf("%8s %10s %10s %10s %10s %14s %12s\n", "T", "fwd_ms", "bwd_ms", "fwd_GF/s",
         "bwd_GF/s", "peak_bytes", "bytes/token");
  for (int64_t T = tmin; T <= tmax; T *= 2) {
    at_ctx *c = at_ctx_new((size_t)64 << 20);
    if (!c) return 1;
    at_tensor *q = at_new(c, AT_SHAPE(B, T, HQ, D)), *k = at_new(c, AT_SHAPE(B, T, H, D));
    at_tensor *v = at_new(c, AT_SHAPE(B, T, H, Dv));
    if (!q || !k || !v) {
      fprintf(stderr, "bench_attention: %s\n", at_errmsg());
      return 1;
    }
    at_fill_normal(q->data, q->size, 1, 1, 0, 1);
    at_fill_normal(k->data, k->size, 2, 1, 0, 1);
    at_fill_normal(v->data, v->size, 3, 1, 0, 1);
    q->requires_grad = k->requires_grad = v->requires_grad = 1;
    at_attn_opts o = {.scale = 0, .window = W};
    at_ctx_mark mark = at_ctx_get_mark(c);
    size_t base = at_arena_used(c->arena), peak = 0;
    double best_f = 1e30, best_b = 1e30;
    for (int r = 0; r <= reps; r++) { /* r = 0 warms up */
      q->grad = k->grad = v->grad = NULL;
      double t0 = at_now();
      at_tensor *out = at_attention(c, q, k, v, &o);
      double t1 = at_now();
      real *g = out ? at_grad(c, out) : NULL;
      if (!g) {
        fprintf(stderr, "bench_attention: %s\n", at_errmsg());
        return 1;
      }
      at_fill(g, out->size, 1);
      double t2 = at_now();
      if (at_backward_from_seeded(c) != AT_OK) {
        fprintf(stderr, "bench_attention: %s\n", at_errmsg());
        return 1;
      }
      double t3 = at_now();
      if (r > 0) {
        best_f = t1 - t0 < best_f ? t1 - t0 : best_f;
        best_b = t3 - t2 < best_b ? t3 - t2 : best_b;
      }
      size_t hw = at_arena_high_water(c->arena) - base;
      peak = hw > peak ? hw : peak;
      at_ctx_rewind(c, mark);
    }
    double pairs = visible_pairs(T, W) * (double)(B * HQ);
    double ff = 2 * pairs * (double)(D + Dv), fb = 2 * pairs * (double)(3 * D + 2 * Dv);
    printf("%8lld %10.2f %10.2f %10.2f %10.2f %14zu %12.1f\n", (long long)T, 1e3 * best_f,
           1e3 * best_b, ff / best_f * 1e-9, fb / best_b * 1e-9, peak,
           (double)peak / (double)(B * T));
    fflush(stdout);
    at_ctx_free(c);
  }
  return 0;
}
