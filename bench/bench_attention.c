/* bench/bench_attention.c: speed of the fused attention (at_attention)
 * against sequence length and head dim, next to the machine's sgemm peak.
 *
 *   bench_attention [--dims 32,64,128] [--dim D] [--vdim Dv] [--tmin T] [--tmax T]
 *                   [--tokens N] [--batch B] [--heads HQ] [--kv-heads H]
 *                   [--layout causal|window|strided|fixed|bigbird] [--window W] [--block l]
 *                   [--reps N] [--threads N] [--no-peak]
 *
 * Defaults: head dims 32, 64, 128 (Dv = D), HQ = H = 2, T = 1024 .. 16384
 * doubling, batch = max(1, tokens / T) with tokens = 16384, so every call
 * holds about the same number of tokens (work then grows like T); causal;
 * best of 3 repetitions after a warm-up; all processors.
 *
 * It prints the CPU, the vector ISA the CPU has and the one the kernel was
 * compiled for, the BLIS kernels, and the sgemm peak measured here (a 1536^3
 * product through at_gemm, 1 thread and the benchmark's threads). For each
 * (D, T): the forward alone (as in training: it saves L) and forward +
 * backward, in ms and in GFLOP/s: the multiply-adds of the tile products
 * over the visible (query, key) pairs (forward 2 (D + Dv) flops per pair
 * and query head, backward 2 (3 D + 2 Dv): the recomputed scores, dV, dP,
 * dQ, dK), as a fraction of the sgemm peak with the same threads; the tiles
 * visited; and the step arena's peak bytes per token (flat in T: no T x T
 * buffer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/gemm.h"
#include "core/rng.h"
#include "core/threads.h"
#include "ops/attention/attention.h"

static const char *arg_str(int argc, char **argv, const char *name, const char *dflt) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return dflt;
}

static int64_t arg_int(int argc, char **argv, const char *name, int64_t dflt) {
  const char *s = arg_str(argc, argv, name, NULL);
  return s ? strtoll(s, NULL, 10) : dflt;
}

static int has_flag(int argc, char **argv, const char *name) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

static void cpu_model(char *buf, size_t n) {
  snprintf(buf, n, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "model name", 10) == 0) {
      char *v = strchr(line, ':');
      if (v) {
        snprintf(buf, n, "%s", v + 2);
        buf[strcspn(buf, "\n")] = 0;
      }
      break;
    }
  fclose(f);
}

static const char *cpu_isa(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "AVX-512F";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "AVX2+FMA";
  if (__builtin_cpu_supports("avx")) return "AVX";
  return "SSE";
}

/* A 1536^3 product through at_gemm with `threads` threads: GFLOP/s. */
static double sgemm_peak(int threads) {
  const int64_t n = 1536;
  real *a = malloc((size_t)(n * n) * sizeof *a), *b = malloc((size_t)(n * n) * sizeof *b),
       *c = malloc((size_t)(n * n) * sizeof *c);
  at_fill_uniform(a, n * n, 1, 1, -1, 1);
  at_fill_uniform(b, n * n, 1, 2, -1, 1);
  double best = 0;
  for (int rep = 0; rep < 5; rep++) {
    double t0 = at_now();
    at_gemm_strided(AT_N, AT_N, n, n, n, 1, a, n, 1, b, n, 1, 0, c, n, 1, threads);
    double dt = at_now() - t0;
    if (rep) best = AT_MAX(best, 2.0 * (double)(n * n * n) / dt / 1e9);
  }
  free(a), free(b), free(c);
  return best;
}

/* The layout a run uses (NULL: causal, or the window through the options). */
static const at_attn_layout *make_layout(at_ctx *c, const char *name, int64_t T, int64_t HQ,
                                         int64_t block) {
  if (strcmp(name, "strided") == 0) return at_attn_layout_strided(c, T, block);
  if (strcmp(name, "fixed") == 0) return at_attn_layout_fixed(c, T, block, AT_MAX(1, block / 8));
  if (strcmp(name, "bigbird") == 0) return at_attn_layout_bigbird(c, T, block, 1, 1, 3, HQ, 1);
  return NULL;
}

/* Visible pairs of one call: per listed tile, all pairs (FULL), j <= i
 * (CAUSAL) or the row masks (MASKED). */
static double visible_pairs(const at_attn_layout *L, int64_t B, int64_t HQ) {
  double n = 0;
  unsigned char *vis = malloc((size_t)L->bk);
  for (int64_t b = 0; b < B; b++)
    for (int64_t hq = 0; hq < HQ; hq++) {
      int64_t s = at_attn_layout_set(L, b, hq);
      for (int64_t r = 0; r < L->nqb; r++)
        for (int64_t e = L->row[s * L->nqb + r]; e < L->row[s * L->nqb + r + 1]; e++) {
          int64_t i0 = r * L->bq, nr = AT_MIN(L->bq, L->T - i0), j0 = L->col[e] * L->bk;
          int64_t nc = AT_MIN(L->bk, L->T - j0);
          for (int64_t x = 0; x < nr; x++) {
            if (L->kind[e] == AT_TILE_FULL) n += (double)nc;
            else if (L->kind[e] == AT_TILE_CAUSAL) n += (double)AT_MAX(0, AT_MIN(nc, i0 + x - j0 + 1));
            else {
              at_attn_layout_row(L, b, hq, i0 + x, j0, nc, vis);
              for (int64_t y = 0; y < nc; y++) n += vis[y];
            }
          }
        }
    }
  free(vis);
  return n;
}

typedef struct point {
  double fwd, both, pairs;
  int64_t tiles;
  size_t peak;
} point;

static int run_point(int64_t B, int64_t T, int64_t HQ, int64_t H, int64_t D, int64_t Dv,
                     const char *layout, int64_t W, int64_t block, int reps, point *pt) {
  at_ctx *c = at_ctx_new((size_t)64 << 20);
  if (!c) return 0;
  at_tensor *q = at_new(c, AT_SHAPE(B, T, HQ, D)), *k = at_new(c, AT_SHAPE(B, T, H, D));
  at_tensor *v = at_new(c, AT_SHAPE(B, T, H, Dv));
  if (!q || !k || !v) return 0;
  at_fill_normal(q->data, q->size, 1, 1, 0, 1);
  at_fill_normal(k->data, k->size, 2, 1, 0, 1);
  at_fill_normal(v->data, v->size, 3, 1, 0, 1);
  q->requires_grad = k->requires_grad = v->requires_grad = 1;
  const at_attn_layout *L = make_layout(c, layout, T, HQ, block);
  const at_attn_layout *Lc = L ? L : W ? at_attn_layout_window(c, T, W) : at_attn_layout_causal(c, T);
  if (!Lc) return 0;
  pt->pairs = visible_pairs(Lc, B, HQ);
  at_attn_stats st = {0};
  at_attn_opts o = {.window = L ? 0 : W, .layout = L, .stats = &st};
  at_ctx_mark mark = at_ctx_get_mark(c);
  size_t base = at_arena_used(c->arena);
  pt->fwd = pt->both = 1e30, pt->peak = 0;
  for (int r = 0; r <= reps; r++) { /* r = 0 warms up */
    q->grad = k->grad = v->grad = NULL;
    double t0 = at_now();
    at_tensor *out = at_attention(c, q, k, v, &o);
    double t1 = at_now();
    real *g = out ? at_grad(c, out) : NULL;
    if (!g) return 0;
    at_fill(g, out->size, 1);
    double t2 = at_now();
    if (at_backward_from_seeded(c) != AT_OK) return 0;
    double t3 = at_now();
    if (r > 0) pt->fwd = AT_MIN(pt->fwd, t1 - t0), pt->both = AT_MIN(pt->both, (t1 - t0) + (t3 - t2));
    pt->peak = AT_MAX(pt->peak, at_arena_high_water(c->arena) - base);
    at_ctx_rewind(c, mark);
  }
  pt->tiles = st.forward_tiles / (reps + 1);
  at_ctx_free(c);
  return 1;
}

int main(int argc, char **argv) {
  if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
    printf("usage: bench_attention [--dims 32,64,128] [--dim D] [--vdim Dv] [--tmin T] [--tmax T]\n"
           "       [--tokens N] [--batch B] [--heads HQ] [--kv-heads H]\n"
           "       [--layout causal|window|strided|fixed|bigbird] [--window W] [--block l]\n"
           "       [--reps N] [--threads N] [--no-peak]\n");
    return 0;
  }
  int64_t HQ = arg_int(argc, argv, "--heads", 2), H = arg_int(argc, argv, "--kv-heads", HQ);
  int64_t tmin = arg_int(argc, argv, "--tmin", 1024), tmax = arg_int(argc, argv, "--tmax", 16384);
  int64_t tokens = arg_int(argc, argv, "--tokens", 16384), batch = arg_int(argc, argv, "--batch", 0);
  int64_t W = arg_int(argc, argv, "--window", 0), block = arg_int(argc, argv, "--block", 64);
  int64_t dim = arg_int(argc, argv, "--dim", 0), vdim = arg_int(argc, argv, "--vdim", 0);
  const char *layout = arg_str(argc, argv, "--layout", W ? "window" : "causal");
  int reps = (int)arg_int(argc, argv, "--reps", 3);
  at_set_threads((int)arg_int(argc, argv, "--threads", 0));
  int64_t dims[8], nd = 0;
  if (dim) {
    dims[nd++] = dim;
  } else {
    for (const char *s = arg_str(argc, argv, "--dims", "32,64,128"); *s && nd < 8;) {
      dims[nd++] = strtoll(s, NULL, 10);
      s += strcspn(s, ",");
      s += *s == ',';
    }
  }
  int known = !strcmp(layout, "causal") || !strcmp(layout, "window") || !strcmp(layout, "strided") ||
              !strcmp(layout, "fixed") || !strcmp(layout, "bigbird");
  int bad = !known || HQ < 1 || H < 1 || HQ % H || tmin < 1 || tmax < tmin || reps < 1 ||
            batch < 0 || tokens < 1 || W < 0 || block < 1 || nd == 0 || vdim < 0 ||
            (!strcmp(layout, "window")) != (W > 0);
  for (int64_t x = 0; x < nd; x++) bad |= dims[x] < 1;
  if (bad) {
    fprintf(stderr, "bench_attention: invalid options (see --help)\n");
    return 2;
  }
  char cpu[256];
  cpu_model(cpu, sizeof cpu);
  int nt = at_threads();
  printf("# CPU: %s; CPU ISA: %s; attention kernel: %s; BLIS: %s; threads: %d; %s\n", cpu,
         cpu_isa(), at_attention_isa(), at_blis_arch(), nt, AT_REAL_NAME);
  double peak1 = 0, peakn = 0;
  if (!has_flag(argc, argv, "--no-peak")) {
    peak1 = sgemm_peak(1), peakn = nt > 1 ? sgemm_peak(nt) : peak1;
    printf("# sgemm peak (1536^3 through at_gemm): %.1f GFLOP/s on 1 thread, %.1f on %d\n", peak1,
           peakn, nt);
  }
  printf("# layout %s (window %lld, block %lld), HQ=%lld H=%lld, %lld tokens per call%s\n", layout,
         (long long)W, (long long)block, (long long)HQ, (long long)H,
         (long long)tokens, batch ? " (batch fixed)" : "");
  printf("%5s %6s %3s %10s %10s %9s %9s %7s %7s %9s %12s\n", "D", "T", "B", "fwd_ms",
         "fwdbwd_ms", "fwd_GF/s", "fb_GF/s", "fwd_pk", "fb_pk", "tiles", "bytes/token");
  for (int64_t x = 0; x < nd; x++)
    for (int64_t T = tmin; T <= tmax; T *= 2) {
      int64_t D = dims[x], Dv = vdim ? vdim : D, B = batch ? batch : AT_MAX(1, tokens / T);
      point pt;
      if (!run_point(B, T, HQ, H, D, Dv, layout, W, block, reps, &pt)) {
        fprintf(stderr, "bench_attention: %s\n", at_errmsg());
        return 1;
      }
      double ff = 2 * pt.pairs * (double)(D + Dv), fb = ff + 2 * pt.pairs * (double)(3 * D + 2 * Dv);
      double gf = ff / pt.fwd * 1e-9, gb = fb / pt.both * 1e-9;
      printf("%5lld %6lld %3lld %10.2f %10.2f %9.1f %9.1f %6.0f%% %6.0f%% %9lld %12.1f\n",
             (long long)D, (long long)T, (long long)B, 1e3 * pt.fwd, 1e3 * pt.both, gf, gb,
             peakn > 0 ? 100 * gf / peakn : 0, peakn > 0 ? 100 * gb / peakn : 0,
             (long long)pt.tiles, (double)pt.peak / (double)(B * T));
      fflush(stdout);
    }
  return 0;
}
