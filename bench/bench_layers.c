/* bench/bench_layers.c: training throughput of whole mixer layers (forward,
 * and forward + backward with every parameter and the input requiring
 * gradients) for T = 256 ... 16384 at a fixed number of tokens per step
 * (B = tokens / T), the linear mixers next to full attention, and the core
 * op alone at the layer's shapes (linear growth for kda / gdn, quadratic for
 * attention).
 *
 *   build/bench/bench_layers [--mixers kda,gdn,full] [--d-model 256] [--heads 2]
 *                            [--head-dim 128] [--tokens 16384] [--tmin 256]
 *                            [--tmax 16384] [--full-tmax 16384] [--chunk 64]
 *                            [--threads N] [--no-op] [--opt MIXER.KEY=NUMBER]...
 *
 * Defaults: d_model 256, 2 heads of 128 (the Kimi Linear head size; gdn
 * with its expand_v 2, mamba2 with expand 2, d_state 16 and heads of
 * head_dim), chunk 64, 16384 tokens per step, every option of each mixer at
 * its default (short conv 4, gates). Mixers: any registered one but mla and
 * dsa (bench_dsa); the op column only for full, deltanet, gdn, kda, mamba2,
 * the others print "-" (sparse_transformer, longformer, bigbird: the layer's
 * own pattern options, e.g. --opt sparse_transformer.stride=128; nsa per
 * branch: bench_nsa).
 * Columns:
 *   layer fwd / fwd+bwd tok/s   B T / time of one layer's forward (+ backward)
 *   op fwd+bwd tok/s            the same for the mixer's core op alone on
 *                               inputs of the layer's shapes (delta-rule op or
 *                               simple_gla; at_attention for full)
 *   op share                    op fwd+bwd time / layer fwd+bwd time
 *   keys/query                  the keys per query the fused attention
 *                               computes: visited tiles x tile area / T, per
 *                               head (softmax mixers with a fixed pattern; the
 *                               attention's cost is proportional to it; dense
 *                               causal is about T / 2)
 *   arena MB                    the step arena's high-water mark (layer fwd+bwd)
 * Each point repeats until it has run for at least 0.5 s (at least twice)
 * and reports the best time.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/threads.h"
#include "models/linear_mixers.h"
#include "models/softmax_layer.h"
#include "ops/attention/layout.h"
#include "ops/attention/attention.h"

#define MIXER(n) at_mixer_from_name(#n)

typedef struct bench_cfg {
  at_model_cfg mc;
  int64_t tokens, chunk;
} bench_cfg;

static void die(const char *what) {
  fprintf(stderr, "bench_layers: %s: %s\n", what, at_errmsg());
  exit(1);
}

/* Seeds dy = 1e-3 on the output and runs the tape backwards. */
static void backward_from(at_ctx *c, at_tensor *y) {
  real *d = at_grad(c, y);
  if (!d) die("output needs no gradient");
  for (int64_t i = 0; i < y->size; i++) d[i] = (real)1e-3;
  if (at_backward_from_seeded(c) != AT_OK) die("backward");
}

typedef struct timing {
  double fwd, fwd_bwd; /* best seconds per call */
  double arena_mb;
  double keys; /* keys computed per query and head (tile-rounded); -1: no fixed pattern */
} timing;

/* Times f(c, user) (a forward) alone and with its backward. */
typedef at_tensor *(*fwd_fn)(at_ctx *c, void *user);

static timing time_fn(fwd_fn f, void *user, at_params *p) {
  timing t = {1e30, 1e30, 0, -1};
  at_ctx *c = at_ctx_new(0);
  if (!c) die("context");
  for (int bwd = 0; bwd < 2; bwd++) {
    double total = 0;
    for (int reps = 0; total < 0.5 || reps < 2; reps++) {
      at_ctx_reset(c);
      if (p) at_params_zero_grad(p);
      double t0 = at_now();
      at_tensor *y = f(c, user);
      if (!y) die("forward");
      if (bwd) backward_from(c, y);
      double dt = at_now() - t0;
      total += dt;
      double *best = bwd ? &t.fwd_bwd : &t.fwd;
      if (dt < *best) *best = dt;
    }
  }
  t.arena_mb = (double)at_arena_high_water(c->arena) / (1 << 20);
  at_ctx_free(c);
  return t;
}

/* ---- a whole layer ------------------------------------------------------------ */

typedef struct layer_run {
  const at_mixer_impl *impl;
  void *layer;
  at_tensor *x; /* in its own arena: survives the step resets */
} layer_run;

static at_tensor *layer_fwd(at_ctx *c, void *user) {
  layer_run *r = user;
  at_mixer_io io = {0};
  r->x->grad = NULL;
  return r->impl->forward(c, r->layer, r->x, &io);
}

/* Keys per query and head the layer's fixed pattern makes the kernel compute, or -1. */
static double layer_keys(const at_mixer_impl *impl, const void *layer, int64_t HQ, int64_t T) {
  if (impl->forward != at_softmax_forward) return -1;
  at_ctx *c = at_ctx_new(0);
  if (!c) die("context");
  at_attn_layout *L = at_softmax_mixer_layout(c, impl, layer, T);
  double keys = L ? (double)at_attn_layout_tiles(L, 1, HQ) * (double)(L->bq * L->bk) / (double)(HQ * T) : -1;
  at_ctx_free(c);
  return keys;
}

static timing time_layer(const bench_cfg *bc, at_mixer_kind kind, int64_t B, int64_t T) {
  at_model_cfg mc = bc->mc;
  mc.n_layers = 1;
  mc.layers[0] = kind;
  layer_run r = {at_mixer_impl_of(kind), NULL, NULL};
  if (!r.impl) die("mixer");
  at_params *p = at_params_new();
  if (!p) die("params");
  if (r.impl->create(&mc, 0, p, "layer.", &r.layer) != AT_OK) die("create");
  if (at_params_finalize(p) != AT_OK) die("params");
  r.impl->init(r.layer, &mc, 1);
  at_arena *xa = at_arena_new((size_t)(B * T * mc.d_model) * sizeof(real) + 4096);
  r.x = at_tensor_alloc(xa, AT_SHAPE(B, T, mc.d_model));
  if (!r.x) die("input");
  at_fill_normal(r.x->data, r.x->size, 2, 1, 0, 1);
  r.x->requires_grad = 1;
  timing t = time_fn(layer_fwd, &r, p);
  t.keys = layer_keys(r.impl, r.layer, mc.n_heads, T);
  r.impl->destroy(r.layer);
  at_params_free(p);
  at_arena_free(xa);
  return t;
}

/* ---- the core op at the layer's shapes ----------------------------------------- */

typedef struct op_run {
  at_mixer_kind kind;
  at_tensor *in[5]; /* q k v g beta (g, beta NULL when the op has none) */
  int64_t chunk;
} op_run;

static at_tensor *op_fwd(at_ctx *c, void *user) {
  op_run *r = user;
  for (int i = 0; i < 5; i++)
    if (r->in[i]) r->in[i]->grad = NULL;
  if (r->kind == MIXER(full)) {
    at_attn_opts o = {.scale = 0, .window = 0};
    return at_attention(c, r->in[0], r->in[1], r->in[2], &o);
  }
  at_lin_opts o = {r->kind == MIXER(mamba2) ? 1.0 : 0, r->chunk, AT_LIN_CHUNK};
  at_lin_kind k = r->kind == MIXER(kda) ? AT_LIN_KDA
                  : r->kind == MIXER(gdn) ? AT_LIN_GATED_DELTA_RULE
                  : r->kind == MIXER(deltanet) ? AT_LIN_DELTA_RULE : AT_LIN_SIMPLE_GLA;
  return at_lin_attn(c, k, r->in[0], r->in[1], r->in[2], r->in[3], r->in[4], NULL, NULL, &o);
}

/* The mixers whose core op time_op runs. */
static int has_op(at_mixer_kind k) {
  return k == MIXER(full) || k == MIXER(deltanet) || k == MIXER(gdn) || k == MIXER(kda) || k == MIXER(mamba2);
}

static void l2norm_rows(real *x, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; r++) {
    double s = 0;
    for (int64_t i = 0; i < d; i++) s += (double)x[r * d + i] * x[r * d + i];
    for (int64_t i = 0; i < d; i++) x[r * d + i] = (real)(x[r * d + i] / sqrt(s + 1e-6));
  }
}

static timing time_op(const bench_cfg *bc, at_mixer_kind kind, int64_t B, int64_t T) {
  const at_model_cfg *mc = &bc->mc;
  const at_lin_mixer_opts *o = (const at_lin_mixer_opts *)(const void *)mc->mixer[kind].bytes;
  int64_t H = mc->n_heads, K = at_layer_head_dim(mc, at_mixer_impl_of(kind)), V = K;
  if (kind == MIXER(gdn) || kind == MIXER(kda)) V = o->expand_v * K;
  if (kind == MIXER(mamba2)) { /* q = C, k = B [.., d_state], v = dt x [.., head_dim] */
    H = o->expand * mc->d_model / K;
    V = K;
    K = o->d_state;
  }
  at_arena *a = at_arena_new((size_t)(B * T * H * (3 * K + 2 * V + 2)) * sizeof(real) + (1 << 16));
  op_run r = {kind, {NULL}, bc->chunk};
  r.in[0] = at_tensor_alloc(a, AT_SHAPE(B, T, H, K));
  r.in[1] = at_tensor_alloc(a, AT_SHAPE(B, T, H, K));
  r.in[2] = at_tensor_alloc(a, AT_SHAPE(B, T, H, V));
  if (kind == MIXER(kda)) r.in[3] = at_tensor_alloc(a, AT_SHAPE(B, T, H, K));
  if (kind == MIXER(gdn) || kind == MIXER(mamba2)) r.in[3] = at_tensor_alloc(a, AT_SHAPE(B, T, H));
  if (kind == MIXER(kda) || kind == MIXER(gdn) || kind == MIXER(deltanet))
    r.in[4] = at_tensor_alloc(a, AT_SHAPE(B, T, H));
  for (int i = 0; i < 5; i++) {
    if (!r.in[i]) {
      if (i < 3) die("op inputs");
      continue;
    }
    if (i == 3) at_fill_uniform(r.in[i]->data, r.in[i]->size, 10 + (uint64_t)i, 1, -1, 0);
    else if (i == 4) at_fill_uniform(r.in[i]->data, r.in[i]->size, 10 + (uint64_t)i, 1, 0, 1);
    else at_fill_normal(r.in[i]->data, r.in[i]->size, 10 + (uint64_t)i, 1, 0, 1);
    r.in[i]->requires_grad = 1;
  }
  if (kind != MIXER(full) && kind != MIXER(mamba2)) {
    l2norm_rows(r.in[0]->data, B * T * H, K);
    l2norm_rows(r.in[1]->data, B * T * H, K);
  }
  timing t = time_fn(op_fwd, &r, NULL);
  at_arena_free(a);
  return t;
}

/* --opt MIXER.KEY=VALUE: one numeric option of one mixer. */
static int set_opt(at_model_cfg *mc, const char *arg) {
  char name[64];
  const char *dot = strchr(arg, '.'), *eq = strchr(arg, '=');
  int kind = -1;
  if (dot && eq && dot < eq && (size_t)(dot - arg) < sizeof name) {
    snprintf(name, sizeof name, "%.*s", (int)(dot - arg), arg);
    kind = at_mixer_from_name(name);
  }
  char key[64];
  const char *why = "no such mixer";
  if (kind >= 0 && (size_t)(eq - dot - 1) < sizeof key) {
    snprintf(key, sizeof key, "%.*s", (int)(eq - dot - 1), dot + 1);
    if (at_mixer_opt_set(mc, (at_mixer_kind)kind, key, atof(eq + 1)) == AT_OK) return 1;
    why = at_errmsg();
  }
  fprintf(stderr, "bench_layers: --opt %s: want MIXER.KEY=NUMBER for an option of a mixer (%s)\n", arg, why);
  return 0;
}

int main(int argc, char **argv) {
  bench_cfg bc;
  at_model_cfg_defaults(&bc.mc);
  bc.mc.d_model = 256;
  bc.mc.n_heads = bc.mc.n_kv_heads = 2;
  bc.mc.mlp = AT_MLP_NONE;
  bc.tokens = 16384;
  bc.chunk = 64;
  int64_t head_dim = 128, tmin = 256, tmax = 16384, full_tmax = 16384;
  int threads = 0, with_op = 1;
  const char *mixers = "kda,gdn,full", *opts[16];
  int n_opts = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--no-op")) { with_op = 0; continue; }
    if (!val) { fprintf(stderr, "bench_layers: %s needs a value\n", a); return 2; }
    if (!strcmp(a, "--mixers")) mixers = val;
    else if (!strcmp(a, "--d-model")) bc.mc.d_model = atoll(val);
    else if (!strcmp(a, "--heads")) bc.mc.n_heads = bc.mc.n_kv_heads = atoll(val);
    else if (!strcmp(a, "--head-dim")) head_dim = atoll(val);
    else if (!strcmp(a, "--tokens")) bc.tokens = atoll(val);
    else if (!strcmp(a, "--tmin")) tmin = atoll(val);
    else if (!strcmp(a, "--tmax")) tmax = atoll(val);
    else if (!strcmp(a, "--full-tmax")) full_tmax = atoll(val);
    else if (!strcmp(a, "--chunk")) bc.chunk = atoll(val);
    else if (!strcmp(a, "--threads")) threads = atoi(val);
    else if (!strcmp(a, "--opt") && n_opts < AT_ARRAY_LEN(opts)) opts[n_opts++] = val;
    else if (!strcmp(a, "--opt")) {
      fprintf(stderr, "bench_layers: more than %d --opt\n", AT_ARRAY_LEN(opts));
      return 2;
    }
    else { fprintf(stderr, "bench_layers: unknown option %s\n", a); return 2; }
    i++;
  }
  if (bc.mc.d_model < 1 || bc.mc.n_heads < 1 || head_dim < 1 || bc.tokens < 1 || tmin < 1 ||
      bc.chunk < 1) {
    fprintf(stderr, "bench_layers: sizes must be positive\n");
    return 2;
  }
  for (int k = 0; k < at_mixer_count(); k++) {
    at_mixer_opt_set(&bc.mc, k, "head_dim", (double)head_dim);
    at_mixer_opt_set(&bc.mc, k, "chunk_size", (double)bc.chunk); /* where the mixer has one */
  }
  for (int i = 0; i < n_opts; i++)
    if (!set_opt(&bc.mc, opts[i])) return 2;
  at_set_threads(threads);
  printf("# bench_layers: d_model=%lld heads=%lld head_dim=%lld tokens/step=%lld chunk=%lld "
         "threads=%d (%s, BLIS %s)\n",
         (long long)bc.mc.d_model, (long long)bc.mc.n_heads, (long long)head_dim,
         (long long)bc.tokens, (long long)bc.chunk, at_threads(), AT_REAL_NAME, at_blis_arch());
  printf("%-18s %6s %5s %14s %14s %14s %9s %9s %10s\n", "mixer", "T", "B", "layer fwd", "layer fwd+bwd",
         "op fwd+bwd", "op share", "arena MB", "keys/query");
  char list[256];
  snprintf(list, sizeof list, "%s", mixers);
  for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
    int kind = at_mixer_from_name(name);
    if (kind < 0 || !at_mixer_impl_of((at_mixer_kind)kind) || kind == MIXER(mla) || kind == MIXER(dsa)) {
      fprintf(stderr, "bench_layers: mixer %s is not benchmarked here\n", name);
      return 2;
    }
    for (int64_t T = tmin; T <= tmax; T *= 2) {
      if (kind == MIXER(full) && T > full_tmax) break;
      int64_t B = AT_MAX(1, bc.tokens / T);
      double n = (double)(B * T);
      timing lt = time_layer(&bc, (at_mixer_kind)kind, B, T);
      printf("%-18s %6lld %5lld %14.0f %14.0f", name, (long long)T, (long long)B, n / lt.fwd, n / lt.fwd_bwd);
      if (with_op && has_op((at_mixer_kind)kind)) {
        timing ot = time_op(&bc, (at_mixer_kind)kind, B, T);
        printf(" %14.0f %8.0f%%", n / ot.fwd_bwd, 100 * ot.fwd_bwd / lt.fwd_bwd);
      } else {
        printf(" %14s %9s", "-", "-");
      }
      printf(" %9.0f", lt.arena_mb);
      if (lt.keys >= 0) printf(" %10.0f\n", lt.keys);
      else printf(" %10s\n", "-");
      fflush(stdout);
    }
  }
  return 0;
}
