/* bench/bench_linpath.c: forward + backward tokens/s of the linear path's ops
 * (linear attention with the normaliser, retention, Performer's FAVOR+ with
 * m = 2 head_dim features) next to full softmax attention, for T = 256 ...
 * 16384 at a fixed number of tokens per step (B = tokens / T): the linear
 * ops stay flat in T, attention falls as 1/T.
 *
 *   build/bench/bench_linpath [--heads 2] [--head-dim 64] [--tokens 16384]
 *                             [--tmin 256] [--tmax 16384] [--chunk 64] [--threads N]
 *
 * Prints the CPU (from /proc/cpuinfo) and the vector ISA the build targets
 * and the CPU supports. Each point repeats until it has run for 0.5 s (at
 * least twice) and reports the best time.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/threads.h"
#include "ops/attention/attention.h"
#include "ops/attention/favor.h"

enum { OP_LINEAR, OP_RETENTION, OP_PERFORMER, OP_FULL, N_OPS };
static const char *const op_names[N_OPS] = {"linear_attn", "retention", "performer", "full attn"};

typedef struct run {
  int op;
  at_tensor *q, *k, *v, *W;
  int64_t chunk;
} run;

static at_tensor *forward(at_ctx *c, run *r) {
  at_la_opts o = {0, r->chunk, AT_LA_CHUNK, r->op == OP_LINEAR, 0};
  at_attn_opts ao = {0, 0};
  switch (r->op) {
  case OP_LINEAR: return at_linear_attn(c, r->q, r->k, r->v, NULL, NULL, NULL, NULL, &o);
  case OP_RETENTION: return at_retention(c, r->q, r->k, r->v, NULL, NULL, &o);
  case OP_PERFORMER: return at_performer(c, r->q, r->k, r->v, r->W, NULL, NULL, NULL, NULL, NULL, NULL, &o);
  default: return at_attention(c, r->q, r->k, r->v, &ao);
  }
}

static double time_fwd_bwd(run *r) {
  at_ctx *c = at_ctx_new(0);
  double best = 1e30, total = 0;
  for (int reps = 0; total < 0.5 || reps < 2; reps++) {
    at_ctx_reset(c);
    r->q->grad = r->k->grad = r->v->grad = NULL;
    double t0 = at_now();
    at_tensor *y = forward(c, r);
    real *d = y ? at_grad(c, y) : NULL;
    if (!d) {
      fprintf(stderr, "bench_linpath: %s: %s\n", op_names[r->op], at_errmsg());
      exit(1);
    }
    for (int64_t i = 0; i < y->size; i++) d[i] = (real)1e-3;
    if (at_backward_from_seeded(c) != AT_OK) exit(1);
    double dt = at_now() - t0;
    total += dt;
    if (dt < best) best = dt;
  }
  at_ctx_free(c);
  return best;
}

static void print_machine(void) {
  char cpu[256] = "unknown";
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[512];
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
      snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
      cpu[strcspn(cpu, "\n")] = 0;
      break;
    }
  if (f) fclose(f);
  const char *built =
#if defined(__AVX512F__)
      "AVX-512F";
#elif defined(__AVX2__)
      "AVX2";
#else
      "SSE2";
#endif
  __builtin_cpu_init();
  printf("# CPU: %s; vector ISA: built for %s, CPU has%s%s%s; BLIS kernels %s; %d threads; %s\n", cpu, built,
         __builtin_cpu_supports("avx512f") ? " AVX-512F" : "", __builtin_cpu_supports("avx2") ? " AVX2" : "",
         __builtin_cpu_supports("fma") ? " FMA" : "", at_blis_arch(), at_threads(), AT_REAL_NAME);
}

int main(int argc, char **argv) {
  int64_t H = 2, K = 64, tokens = 16384, tmin = 256, tmax = 16384, chunk = 64;
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *a = argv[i];
    int64_t v = atoll(argv[i + 1]);
    if (!strcmp(a, "--heads")) H = v;
    else if (!strcmp(a, "--head-dim")) K = v;
    else if (!strcmp(a, "--tokens")) tokens = v;
    else if (!strcmp(a, "--tmin")) tmin = v;
    else if (!strcmp(a, "--tmax")) tmax = v;
    else if (!strcmp(a, "--chunk")) chunk = v;
    else if (!strcmp(a, "--threads")) threads = (int)v;
    else {
      fprintf(stderr, "bench_linpath: unknown option %s\n", a);
      return 2;
    }
  }
  if (H < 1 || K < 1 || tokens < 1 || tmin < 1 || chunk < 1) {
    fprintf(stderr, "bench_linpath: sizes must be positive\n");
    return 2;
  }
  at_set_threads(threads);
  print_machine();
  printf("# forward + backward tokens/s; %lld heads of %lld, %lld tokens per step, chunk %lld, performer m = %lld\n",
         (long long)H, (long long)K, (long long)tokens, (long long)chunk, (long long)(2 * K));
  printf("%7s %5s", "T", "B");
  for (int op = 0; op < N_OPS; op++) printf(" %12s", op_names[op]);
  printf("\n");
  for (int64_t T = tmin; T <= tmax; T *= 2) {
    int64_t B = AT_MAX(1, tokens / T);
    at_arena *a = at_arena_new((size_t)(3 * B * T * H * K + 2 * K * K) * sizeof(real) + (1 << 16));
    run r = {0, at_tensor_alloc(a, AT_SHAPE(B, T, H, K)), at_tensor_alloc(a, AT_SHAPE(B, T, H, K)),
             at_tensor_alloc(a, AT_SHAPE(B, T, H, K)), at_tensor_alloc(a, AT_SHAPE(2 * K, K)), chunk};
    at_fill_normal(r.q->data, r.q->size, 1, 1, 0, 0.5);
    at_fill_normal(r.k->data, r.k->size, 2, 1, 0, 0.5);
    at_fill_normal(r.v->data, r.v->size, 3, 1, 0, 1);
    at_favor_draw(r.W->data, 2 * K, K, 1, 4, 1, 0);
    r.q->requires_grad = r.k->requires_grad = r.v->requires_grad = 1;
    printf("%7lld %5lld", (long long)T, (long long)B);
    for (int op = 0; op < N_OPS; op++) {
      r.op = op;
      if (op == OP_LINEAR) /* positive features for the normaliser */
        for (int64_t i = 0; i < r.q->size; i++) r.q->data[i] = (real)fabs((double)r.q->data[i]), r.k->data[i] = (real)fabs((double)r.k->data[i]);
      printf(" %12.0f", (double)(B * T) / time_fwd_bwd(&r));
      fflush(stdout);
    }
    printf("\n");
    at_arena_free(a);
  }
  return 0;
}
