/* bench/bench_ssm.c: training throughput of the state-space mixers (mamba,
 * s4d) next to full attention, for T = 256 ... 16384 at a fixed number of
 * tokens per step (B = tokens / T): one layer forward + backward (every
 * parameter and the input requiring gradients), and the core op alone at the
 * layer's shapes (the chunked selective scan over I = expand d_model
 * channels; the S4D kernel + direct causal convolution over d_model
 * channels; fused attention).
 *
 *   build/bench/bench_ssm [--mixers mamba,s4d,full] [--d-model 256] [--tokens 16384]
 *                         [--tmin 256] [--tmax 16384] [--threads N]
 *
 * Mixer options at their defaults (mamba: expand 2, d_state 16, chunk 64;
 * s4d: d_state 64; full: 2 heads of 128). Each point repeats until it has
 * run for at least 0.5 s (at least twice) and reports the best time. Prints
 * the CPU, the vector ISA the build targets and the one the CPU has.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/threads.h"
#include "models/mixer.h"
#include "ops/attention/attention.h"
#include "ops/attention/ssm.h"

static void die(const char *what) {
  fprintf(stderr, "bench_ssm: %s: %s\n", what, at_errmsg());
  exit(1);
}

static void print_machine(void) {
  char model[256] = "unknown", line[4096];
  int avx512 = 0, avx2 = 0;
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof line, f)) {
    if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
      snprintf(model, sizeof model, "%s", strchr(line, ':') + 2);
      model[strcspn(model, "\n")] = 0;
    }
    if (!strncmp(line, "flags", 5)) avx512 |= strstr(line, " avx512f") != NULL, avx2 |= strstr(line, " avx2") != NULL;
  }
  if (f) fclose(f);
  const char *built =
#if defined(__AVX512F__)
      "AVX-512";
#elif defined(__AVX2__)
      "AVX2";
#else
      "SSE2 or less";
#endif
  printf("# CPU: %s; CPU ISA: %s; build vector ISA: %s; threads %d; BLIS %s; %s\n", model,
         avx512 ? "AVX-512" : avx2 ? "AVX2" : "other", built, at_threads(), at_blis_arch(), AT_REAL_NAME);
}

typedef at_tensor *(*fwd_fn)(at_ctx *c, void *user);

/* Best seconds of forward + backward (seed dy = 1e-3). */
static double time_fwd_bwd(fwd_fn f, void *user, at_params *p) {
  at_ctx *c = at_ctx_new(0);
  if (!c) die("context");
  double best = 1e30, total = 0;
  for (int reps = 0; total < 0.5 || reps < 2; reps++) {
    at_ctx_reset(c);
    if (p) at_params_zero_grad(p);
    double t0 = at_now();
    at_tensor *y = f(c, user);
    if (!y) die("forward");
    real *d = at_grad(c, y);
    for (int64_t i = 0; i < y->size; i++) d[i] = (real)1e-3;
    if (at_backward_from_seeded(c) != AT_OK) die("backward");
    double dt = at_now() - t0;
    total += dt;
    if (dt < best) best = dt;
  }
  at_ctx_free(c);
  return best;
}

/* ---- layers ------------------------------------------------------------------------- */

typedef struct layer_run {
  const at_mixer_impl *impl;
  void *layer;
  at_tensor *x;
} layer_run;

static at_tensor *layer_fwd(at_ctx *c, void *user) {
  layer_run *r = user;
  at_mixer_io io = {0};
  r->x->grad = NULL;
  return r->impl->forward(c, r->layer, r->x, &io);
}

static double time_layer(const at_model_cfg *base, at_mixer_kind kind, int64_t B, int64_t T) {
  at_model_cfg mc = *base;
  mc.n_layers = 1, mc.layers[0] = kind;
  layer_run r = {at_mixer_impl_of(kind), NULL, NULL};
  at_mixer_kind bad;
  const char *key;
  at_params *p = at_params_new();
  if (!p || at_model_cfg_resolve(&mc, &bad, &key) != AT_OK || r.impl->create(&mc, 0, p, "l.", &r.layer) != AT_OK ||
      at_params_finalize(p) != AT_OK)
    die("layer");
  r.impl->init(r.layer, &mc, 1);
  at_arena *xa = at_arena_new((size_t)(B * T * mc.d_model) * sizeof(real) + 4096);
  r.x = at_tensor_alloc(xa, AT_SHAPE(B, T, mc.d_model));
  if (!r.x) die("input");
  at_fill_normal(r.x->data, r.x->size, 2, 1, 0, 1);
  r.x->requires_grad = 1;
  double t = time_fwd_bwd(layer_fwd, &r, p);
  r.impl->destroy(r.layer);
  at_params_free(p);
  at_arena_free(xa);
  return t;
}

/* ---- ops -------------------------------------------------------------------------------- */

typedef struct op_run {
  const char *mixer;
  at_tensor *in[8];
} op_run;

static at_tensor *op_fwd(at_ctx *c, void *user) {
  op_run *r = user;
  at_tensor **x = r->in;
  for (int i = 0; i < 8; i++)
    if (x[i]) x[i]->grad = NULL;
  if (!strcmp(r->mixer, "mamba")) {
    at_scan_opts o = {1, 64, AT_SCAN_CHUNKED};
    return at_selective_scan(c, x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], NULL, NULL, &o);
  }
  if (!strcmp(r->mixer, "s4d")) /* x: u, Abar, Bbar, C */
    return at_s4d_conv(c, x[0], at_s4d_kernel(c, x[1], x[2], x[3], x[0]->shape[1]));
  at_attn_opts o = {.scale = 0, .window = 0};
  return at_attention(c, x[0], x[1], x[2], &o);
}

static at_tensor *leaf(at_arena *a, int ndim, const int64_t *shape, uint64_t seed, double lo, double hi) {
  at_tensor *t = at_tensor_alloc(a, ndim, shape);
  if (!t) die("op input");
  at_fill_uniform(t->data, t->size, seed, 1, lo, hi);
  t->requires_grad = 1;
  return t;
}

static double time_op(const char *mixer, int64_t d, int64_t B, int64_t T) {
  at_arena *a = at_arena_new((size_t)(B * T * 2 * d * 8) * sizeof(real) + (1 << 20));
  op_run r = {mixer, {NULL}};
  if (!strcmp(mixer, "mamba")) { /* I = 2d channels, N = 16 */
    const int64_t I = 2 * d, N = 16;
    r.in[0] = leaf(a, AT_SHAPE(B, T, I), 1, -1, 1);
    r.in[1] = leaf(a, AT_SHAPE(B, T, I), 2, -4, 0);
    r.in[2] = leaf(a, AT_SHAPE(I, N), 3, -16, -1);
    r.in[3] = leaf(a, AT_SHAPE(B, T, N), 4, -1, 1);
    r.in[4] = leaf(a, AT_SHAPE(B, T, N), 5, -1, 1);
    r.in[5] = leaf(a, AT_SHAPE(I), 6, 0, 1);
    r.in[6] = leaf(a, AT_SHAPE(B, T, I), 7, -1, 1);
    r.in[7] = leaf(a, AT_SHAPE(I), 8, -1, 0);
  } else if (!strcmp(mixer, "s4d")) { /* H = d channels, 32 modes */
    r.in[0] = leaf(a, AT_SHAPE(B, T, d), 1, -1, 1);
    r.in[1] = leaf(a, AT_SHAPE(d, 32, 2), 2, -0.6, 0.6);
    r.in[2] = leaf(a, AT_SHAPE(d, 32, 2), 3, -0.1, 0.1);
    r.in[3] = leaf(a, AT_SHAPE(d, 32, 2), 4, -1, 1);
  } else { /* 2 heads of d / 2 */
    for (int i = 0; i < 3; i++) r.in[i] = leaf(a, AT_SHAPE(B, T, 2, d / 2), 1 + (uint64_t)i, -1, 1);
  }
  double t = time_fwd_bwd(op_fwd, &r, NULL);
  at_arena_free(a);
  return t;
}

int main(int argc, char **argv) {
  at_model_cfg mc;
  at_model_cfg_defaults(&mc);
  mc.d_model = 256, mc.n_heads = mc.n_kv_heads = 2, mc.mlp = AT_MLP_NONE;
  int64_t tokens = 16384, tmin = 256, tmax = 16384;
  int threads = 0;
  const char *mixers = "mamba,s4d,full";
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!v) { fprintf(stderr, "bench_ssm: %s needs a value\n", a); return 2; }
    if (!strcmp(a, "--mixers")) mixers = v;
    else if (!strcmp(a, "--d-model")) mc.d_model = atoll(v);
    else if (!strcmp(a, "--tokens")) tokens = atoll(v);
    else if (!strcmp(a, "--tmin")) tmin = atoll(v);
    else if (!strcmp(a, "--tmax")) tmax = atoll(v);
    else if (!strcmp(a, "--threads")) threads = atoi(v);
    else { fprintf(stderr, "bench_ssm: unknown option %s\n", a); return 2; }
    i++;
  }
  if (mc.d_model < 2 || mc.d_model % 2 || tokens < 1 || tmin < 1 || tmax < tmin) {
    fprintf(stderr, "bench_ssm: d_model must be even and positive, sizes positive\n");
    return 2;
  }
  at_set_threads(threads);
  print_machine();
  printf("# d_model %lld, %lld tokens per step; tokens/s of forward + backward\n", (long long)mc.d_model,
         (long long)tokens);
  printf("%-7s %6s %5s %16s %16s\n", "mixer", "T", "B", "layer tok/s", "op tok/s");
  char list[256];
  snprintf(list, sizeof list, "%s", mixers);
  for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
    int kind = at_mixer_from_name(name);
    if (kind < 0 || (strcmp(name, "mamba") && strcmp(name, "s4d") && strcmp(name, "full"))) {
      fprintf(stderr, "bench_ssm: mixer %s is not benchmarked here (mamba, s4d, full)\n", name);
      return 2;
    }
    for (int64_t T = tmin; T <= tmax; T *= 2) {
      int64_t B = AT_MAX(1, tokens / T);
      double n = (double)(B * T), lt = time_layer(&mc, (at_mixer_kind)kind, B, T), ot = time_op(name, mc.d_model, B, T);
      printf("%-7s %6lld %5lld %16.0f %16.0f\n", name, (long long)T, (long long)B, n / lt, n / ot);
      fflush(stdout);
    }
  }
  return 0;
}
