/* bench/bench_gla_rwkv.c: forward + backward throughput of the gla and dplr
 * (RWKV-7) ops and of the gla and rwkv7 layers for T = 256 ... 16384 at a
 * fixed number of tokens per step (B = tokens / T), next to the kda op and
 * full softmax attention (op and layer), with the CPU and vector ISA.
 *
 *   build/bench/bench_gla_rwkv [--heads 2] [--head-dim 128] [--d-model 256]
 *                              [--tokens 16384] [--tmin 256] [--tmax 16384]
 *                              [--chunk 64] [--threads N] [--no-layers]
 *
 * Ops at H heads of K = V = head_dim, chunk form (inputs as the layers make
 * them: unit q, k; gk in [-1, 0); dplr's a = -kappa, b = kappa alpha);
 * layers at d_model with every option at its default (gla: expand_k 0.5,
 * so K = d_model / (2 H); rwkv7: heads of d_model / H; full: RoPE).
 * Every gradient is computed (each input / parameter requires grad). Each
 * point repeats until it has run for at least 0.5 s (at least twice) and
 * reports the best time; tokens/s = B T / time.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/threads.h"
#include "models/model.h"
#include "ops/attention/attention.h"
#include "ops/attention/dplr.h"

static void die(const char *what) {
  fprintf(stderr, "bench_gla_rwkv: %s: %s\n", what, at_errmsg());
  exit(1);
}

typedef at_tensor *(*fwd_fn)(at_ctx *c, void *user);

/* Best seconds of forward + backward (dy = 1e-3). */
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
    if (!d) die("no gradient");
    for (int64_t i = 0; i < y->size; i++) d[i] = (real)1e-3;
    if (at_backward_from_seeded(c) != AT_OK) die("backward");
    double dt = at_now() - t0;
    total += dt;
    if (dt < best) best = dt;
  }
  at_ctx_free(c);
  return best;
}

/* ---- the ops ------------------------------------------------------------------ */

enum { OP_GLA, OP_DPLR, OP_KDA, OP_FULL, N_OPS };
static const char *const op_names[N_OPS] = {"gla op", "dplr op", "kda op", "full op"};

typedef struct op_run {
  int op;
  int64_t chunk;
  at_tensor *q, *k, *v, *g, *a, *b, *beta;
} op_run;

static at_tensor *op_fwd(at_ctx *c, void *user) {
  op_run *r = user;
  at_tensor *all[] = {r->q, r->k, r->v, r->g, r->a, r->b, r->beta};
  for (int i = 0; i < AT_ARRAY_LEN(all); i++)
    if (all[i]) all[i]->grad = NULL;
  at_lin_opts o = {0, r->chunk, AT_LIN_CHUNK};
  switch (r->op) {
  case OP_GLA: return at_gla(c, r->q, r->k, r->v, r->g, NULL, NULL, &o);
  case OP_DPLR: return at_dplr(c, r->q, r->k, r->v, r->a, r->b, r->g, NULL, NULL, &o);
  case OP_KDA: return at_kda(c, r->q, r->k, r->v, r->g, r->beta, NULL, NULL, &o);
  default: {
    at_attn_opts ao = {.scale = 0, .window = 0};
    return at_attention(c, r->q, r->k, r->v, &ao);
  }
  }
}

static void unit_rows(real *x, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; r++) {
    double s = 0;
    for (int64_t i = 0; i < d; i++) s += (double)x[r * d + i] * x[r * d + i];
    for (int64_t i = 0; i < d; i++) x[r * d + i] = (real)(x[r * d + i] / sqrt(s + 1e-12));
  }
}

static at_tensor *input(at_arena *ar, int64_t B, int64_t T, int64_t H, int64_t D, uint64_t seed,
                        double lo, double hi, int normal) {
  at_tensor *t = D ? at_tensor_alloc(ar, AT_SHAPE(B, T, H, D)) : at_tensor_alloc(ar, AT_SHAPE(B, T, H));
  if (!t) die("op inputs");
  if (normal) at_fill_normal(t->data, t->size, seed, 1, 0, 1);
  else at_fill_uniform(t->data, t->size, seed, 1, lo, hi);
  t->requires_grad = 1;
  return t;
}

static double time_op(int op, int64_t B, int64_t T, int64_t H, int64_t K, int64_t chunk) {
  at_arena *ar = at_arena_new((size_t)(B * T * H * (6 * K + 2)) * sizeof(real) + (1 << 16));
  op_run r = {op, chunk, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
  r.q = input(ar, B, T, H, K, 1, 0, 0, 1);
  r.k = input(ar, B, T, H, K, 2, 0, 0, 1);
  r.v = input(ar, B, T, H, K, 3, 0, 0, 1);
  if (op != OP_FULL) {
    unit_rows(r.q->data, B * T * H, K);
    unit_rows(r.k->data, B * T * H, K);
    r.g = input(ar, B, T, H, K, 4, -1, 0, 0);
  }
  if (op == OP_KDA) r.beta = input(ar, B, T, H, 0, 5, 0, 1, 0);
  if (op == OP_DPLR) {
    r.a = input(ar, B, T, H, K, 6, 0, 0, 1);
    unit_rows(r.a->data, B * T * H, K);
    r.b = input(ar, B, T, H, K, 7, 0, 0, 1);
    for (int64_t i = 0; i < r.b->size; i++) r.b->data[i] = -r.a->data[i] * (real)(0.5 + 0.4 * sin((double)i));
  }
  double t = time_fwd_bwd(op_fwd, &r, NULL);
  at_arena_free(ar);
  return t;
}

/* ---- the layers ------------------------------------------------------------------ */

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

static double time_layer(const at_model_cfg *base, const char *mixer, int64_t B, int64_t T) {
  at_model_cfg mc = *base;
  int kind = at_mixer_from_name(mixer);
  mc.n_layers = 1;
  mc.layers[0] = kind;
  at_mixer_kind bad;
  const char *key;
  if (at_model_cfg_resolve(&mc, &bad, &key) != AT_OK) die("options");
  layer_run r = {at_mixer_impl_of(kind), NULL, NULL};
  at_params *p = at_params_new();
  if (!p || r.impl->create(&mc, 0, p, "layer.", &r.layer) != AT_OK || at_params_finalize(p) != AT_OK)
    die("create");
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

static void print_machine(void) {
  char cpu[256] = "unknown";
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[512];
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "model name", 10)) {
      char *s = strchr(line, ':');
      if (s) snprintf(cpu, sizeof cpu, "%s", s + 2);
      cpu[strcspn(cpu, "\n")] = 0;
      break;
    }
  if (f) fclose(f);
#if defined(__AVX512F__)
  const char *isa = "AVX-512";
#elif defined(__AVX2__)
  const char *isa = "AVX2";
#else
  const char *isa = "baseline x86-64 / other";
#endif
  printf("# CPU: %s; compiled for %s; BLIS kernels: %s; %d threads\n", cpu, isa, at_blis_arch(), at_threads());
}

int main(int argc, char **argv) {
  int64_t H = 2, K = 128, d = 256, tokens = 16384, tmin = 256, tmax = 16384, chunk = 64;
  int threads = 0, layers = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    int64_t *dst = !strcmp(a, "--heads") ? &H : !strcmp(a, "--head-dim") ? &K : !strcmp(a, "--d-model") ? &d
                   : !strcmp(a, "--tokens") ? &tokens : !strcmp(a, "--tmin") ? &tmin
                   : !strcmp(a, "--tmax") ? &tmax : !strcmp(a, "--chunk") ? &chunk : NULL;
    if (!strcmp(a, "--no-layers")) {
      layers = 0;
    } else if (!strcmp(a, "--threads") && v) {
      threads = atoi(v), i++;
    } else if (dst && v) {
      *dst = atoll(v), i++;
    } else {
      fprintf(stderr, "usage: bench_gla_rwkv [--heads H] [--head-dim K] [--d-model D] [--tokens N] "
                      "[--tmin T] [--tmax T] [--chunk C] [--threads N] [--no-layers]\n");
      return 2;
    }
  }
  if (threads > 0) at_set_threads(threads);
  print_machine();
  printf("# ops: %lld heads of %lld, chunk %lld; layers: d_model %lld, %lld heads; %lld tokens per step; "
         "forward + backward tokens/s\n", (long long)H, (long long)K, (long long)chunk, (long long)d, (long long)H,
         (long long)tokens);
  at_model_cfg mc;
  at_model_cfg_defaults(&mc);
  mc.d_model = d;
  mc.n_heads = mc.n_kv_heads = H;
  mc.mlp = AT_MLP_NONE;
  static const char *const layer_names[] = {"gla", "rwkv7", "full"};
  printf("%6s %5s", "T", "B");
  for (int o = 0; o < N_OPS; o++) printf(" %10s", op_names[o]);
  if (layers)
    for (int l = 0; l < 3; l++) printf(" %9s layer", layer_names[l]);
  printf("\n");
  for (int64_t T = tmin; T <= tmax; T *= 2) {
    int64_t B = tokens / T > 0 ? tokens / T : 1;
    printf("%6lld %5lld", (long long)T, (long long)B);
    fflush(stdout);
    for (int o = 0; o < N_OPS; o++) {
      printf(" %10.0f", (double)(B * T) / time_op(o, B, T, H, K, chunk));
      fflush(stdout);
    }
    for (int l = 0; layers && l < 3; l++) {
      for (int k = 0; k < at_mixer_count(); k++) at_mixer_opt_set(&mc, k, "chunk_size", (double)chunk);
      printf(" %15.0f", (double)(B * T) / time_layer(&mc, layer_names[l], B, T));
      fflush(stdout);
    }
    printf("\n");
  }
  return 0;
}
