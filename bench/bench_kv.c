/* bench/bench_kv.c: the latent and sparse layers of issue 5.
 *
 *   bench_kv [--experiment FILE] [--no-cache] [--no-layers]
 *            [--batch B] [--d-model D] [--heads H] [--head-dim hd] [--kv-rank dc]
 *            [--rope-dim dr] [--q-rank dq] [--idx-heads HI] [--idx-dim DI] [--topk K]
 *            [--tmin T] [--tmax T] [--reps N] [--threads N]
 *
 * 1. KV cache per token (no timing): every run of the experiment FILE
 *    (default experiments/kv_compression.yaml, found from the working
 *    directory or $AT_SOURCE_DIR) is built and its cache per token printed
 *    beside its non-embedding parameter count: elements over all layers
 *    (MHA/GQA: 2 n_kv d_h per layer; MLA: d_c + d_R; DSA: + the index key
 *    DI), bytes at fp32 and bf16, and the ratio to the first run. Then the
 *    same formulas at DeepSeek-V2's size (60 layers, 128 heads of 128,
 *    d_c 512, d_R 64; DeepSeek 67B's GQA, 95 layers with 8 KV heads) for
 *    comparison with the paper's Table 1 and its "93.3%" (which includes
 *    ~6-bit cache quantization, sparse_path §3.2).
 *
 * 2. The DSA layer (models/dsa.c) against the dense MLA layer, forward +
 *    backward, for T = tmin .. tmax doubling (default 1024 .. 16384), k = 256,
 *    layer sizes of experiments/dsa_two_stage.yaml (d 128, 4 heads of 32,
 *    d_c 128, d_R 16, indexer 4 x 16). Milliseconds, best of N (N = 1 from
 *    T = 8192 on) after one warm-up:
 *      mla       the layer in the dense stage without the indexer loss:
 *                exactly the MLA layer (projections + FlashAttention, O(T^2))
 *      sparse    the sparse stage without the KL: projections, indexer and
 *                top-k (O(T^2 HI DI), no backward), sparse attention O(T k)
 *      sparse+kl the whole sparse-stage step: plus the sparse-set KL (O(T k))
 *                and the top-k recall statistic (one O(T^2) pass of q.k)
 *      warmup    the dense warm-up step: main parameters frozen, dense
 *                attention forward, indexer + dense KL forward and backward
 *    with the ratios sparse/mla and sparse+kl/mla, and the first T where
 *    each drops below 1. A benchmark measures; nothing here asserts a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/threads.h"
#include "experiments/config.h"
#include "models/mla.h"
#include "models/model.h"

static int64_t arg_int(int argc, char **argv, const char *name, int64_t dflt) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return strtoll(argv[i + 1], NULL, 10);
  return dflt;
}

static const char *arg_str(int argc, char **argv, const char *name, const char *dflt) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return dflt;
}

static int has_flag(int argc, char **argv, const char *name) {
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

/* ---- 1. KV cache per token ----------------------------------------------------------- */

static const char *mixers_of(const at_model_cfg *m, char *buf, size_t n) {
  buf[0] = '\0';
  for (int l = 0; l < m->n_layers; l++) {
    const char *name = at_mixer_name(m->layers[l]);
    if (strstr(buf, name)) continue;
    size_t len = strlen(buf);
    snprintf(buf + len, n - len, "%s%s", len ? "+" : "", name);
  }
  return buf;
}

static int cache_table(const char *path) {
  at_experiment *e = NULL;
  if (at_experiment_load(path, NULL, 0, &e) != AT_OK) {
    fprintf(stderr, "bench_kv: %s\n", at_errmsg());
    return 1;
  }
  printf("# KV cache per token of the runs of %s (%s)\n", path, e->name);
  printf("%-10s %-10s %6s %6s %12s %12s %10s %10s %8s\n", "run", "mixer", "layers", "kv_h",
         "non-emb", "elems/token", "fp32_B", "bf16_B", "vs_first");
  double first = -1;
  char shown[64][64];
  int n_shown = 0;
  for (int i = 0; i < e->n_runs; i++) {
    const at_run_cfg *rc = &e->runs[i];
    int seen = 0;
    for (int j = 0; j < n_shown; j++) seen |= !strcmp(shown[j], rc->base_name);
    if (seen) continue; /* sweep points of one run have one architecture */
    if (n_shown < 64) snprintf(shown[n_shown++], sizeof shown[0], "%s", rc->base_name);
    at_model *m = NULL;
    if (at_model_new(&rc->model, rc->seed, &m) != AT_OK) {
      fprintf(stderr, "bench_kv: run %s: %s\n", rc->name, at_errmsg());
      at_experiment_free(e);
      return 1;
    }
    const at_model_cfg *mc = &rc->model;
    int64_t emb = mc->vocab_size * mc->d_model * (mc->tie_embeddings ? 1 : 2) +
                  (mc->position == AT_POS_LEARNED ? mc->max_seq_len * mc->d_model : 0);
    int64_t elems = at_model_cache_per_token(m);
    if (first < 0) first = (double)elems;
    char mix[64];
    printf("%-10s %-10s %6lld %6lld %12lld %12lld %10lld %10lld %8.3f\n", rc->base_name,
           mixers_of(mc, mix, sizeof mix), (long long)mc->n_layers, (long long)mc->n_kv_heads,
           (long long)(at_model_num_params(m) - emb), (long long)elems, (long long)(4 * elems),
           (long long)(2 * elems), (double)elems / first);
    at_model_free(m);
  }
  at_experiment_free(e);
  /* DeepSeek-V2 App. D / Table 1 arithmetic at the paper's size. */
  const double l = 60, nh = 128, dh = 128, dc = 512, dr = 64;
  printf("# at DeepSeek-V2's size (60 layers, 128 heads x 128, d_c 512, d_R 64), elements/token:\n");
  printf("#   MHA %.0f, GQA-8 %.0f, MQA %.0f, MLA %.0f (= GQA with %.2f groups; %.1f%% of MHA)\n",
         2 * nh * dh * l, 2 * 8 * dh * l, 2 * dh * l, (dc + dr) * l, (dc + dr) / (2 * dh),
         100 * (dc + dr) / (2 * nh * dh));
  double d67 = 2 * 8 * 128 * 95; /* DeepSeek 67B: GQA, 95 layers, 8 KV heads of 128 */
  printf("#   vs DeepSeek 67B (%.0f): %.1f%% less at equal precision, %.1f%% less with 6-bit "
         "elements against 16-bit (the abstract's 93.3%%)\n",
         d67, 100 * (1 - (dc + dr) * l / d67), 100 * (1 - (dc + dr) * l / d67 * 6 / 16));
  return 0;
}

/* ---- 2. DSA layer against the dense MLA layer -------------------------------------- */

typedef struct sizes {
  int64_t B, T, d, h, hd, dc, dr, dq, hi, di, k;
} sizes;

enum { M_MLA, M_SPARSE, M_SPARSE_KL, M_WARMUP, M_COUNT };
static const char *const mode_names[M_COUNT] = {"mla_ms", "sparse_ms", "sparse+kl", "warmup_ms"};

typedef struct layer {
  at_params *p;
  const at_mixer_impl *impl;
  void *state;
} layer;

static int layer_new(const sizes *z, layer *L) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = z->d, cfg.n_heads = z->h, cfg.n_kv_heads = z->h;
  cfg.position = z->dr > 0 ? AT_POS_ROPE : AT_POS_NOPE;
  int dsa = at_mixer_from_name("dsa");
  at_mla_opts *o = (at_mla_opts *)(void *)cfg.mixer[dsa].bytes;
  o->common.position = cfg.position, o->common.head_dim = z->hd, o->kv_rank = z->dc, o->rope_dim = z->dr;
  o->q_rank = z->dq, o->index_heads = z->hi, o->index_dim = z->di, o->topk = z->k;
  L->p = at_params_new();
  L->impl = at_mixer_impl_of(dsa);
  L->state = NULL;
  if (!L->p || L->impl->create(&cfg, 0, L->p, "bench.dsa.", &L->state) != AT_OK ||
      at_params_finalize(L->p) != AT_OK) {
    fprintf(stderr, "bench_kv: layer: %s\n", at_errmsg());
    return 0;
  }
  cfg.init_std = 0.1; /* attention visibly non-uniform */
  L->impl->init(L->state, &cfg, 1);
  return 1;
}

static void layer_free(layer *L) {
  if (L->state) L->impl->destroy(L->state);
  at_params_free(L->p);
}

/* One timed forward + backward of mode m; seconds, or -1 on failure. */
static double run_once(layer *L, const sizes *z, int m, at_ctx *c) {
  at_ctx_reset(c);
  at_params_zero_grad(L->p);
  at_params_set_trainable(L->p, -1, m != M_WARMUP);
  at_params_set_trainable(L->p, AT_GROUP_INDEXER, 1);
  at_tensor *x = at_new(c, AT_SHAPE(z->B, z->T, z->d));
  if (!x) return -1;
  at_fill_normal(x->data, x->size, 7, 1, 0, 1);
  x->requires_grad = m != M_WARMUP;
  at_mixer_io io;
  memset(&io, 0, sizeof io);
  io.stage = (m == M_SPARSE || m == M_SPARSE_KL) ? AT_STAGE_SPARSE : 0;
  io.stage |= (m == M_SPARSE_KL || m == M_WARMUP) ? AT_STAGE_AUX_LOSS : 0;
  double t0 = at_now();
  at_tensor *y = L->impl->forward(c, L->state, x, &io);
  if (!y) goto fail;
  if (y->requires_grad) {
    real *g = at_grad(c, y);
    if (!g) goto fail;
    for (int64_t i = 0; i < y->size; i++) g[i] = (real)1e-3;
  }
  if (io.aux_loss) {
    real *g = at_grad(c, io.aux_loss);
    if (!g) goto fail;
    g[0] = 1;
  }
  if (at_backward_from_seeded(c) != AT_OK) goto fail;
  return at_now() - t0;
fail:
  fprintf(stderr, "bench_kv: %s\n", at_errmsg());
  return -1;
}

static double best_of(layer *L, const sizes *z, int m, int reps, at_ctx *c) {
  if (run_once(L, z, m, c) < 0) return -1;
  double best = 1e300;
  for (int r = 0; r < reps; r++) {
    double s = run_once(L, z, m, c);
    if (s < 0) return -1;
    if (s < best) best = s;
  }
  return best;
}

/* A table cell: "-" for a failed measurement. */
static void cell(double v, int prec) {
  if (v < 0) printf(" %10s", "-");
  else printf(" %10.*f", prec, v);
}

static int layer_table(sizes z, int64_t tmin, int64_t tmax, int reps) {
  layer L;
  if (!layer_new(&z, &L)) return 1;
  at_ctx *c = at_ctx_new((size_t)64 << 20);
  if (!c) return 1;
  printf("# DSA layer vs dense MLA layer, forward + backward: B=%lld d=%lld heads=%lld head_dim=%lld "
         "kv_rank=%lld rope_dim=%lld q_rank=%lld indexer %lldx%lld topk=%lld threads=%d (%s)\n",
         (long long)z.B, (long long)z.d, (long long)z.h, (long long)z.hd, (long long)z.dc,
         (long long)z.dr, (long long)z.dq, (long long)z.hi, (long long)z.di, (long long)z.k,
         at_threads(), AT_REAL_NAME);
  printf("%7s", "T");
  for (int m = 0; m < M_COUNT; m++) printf(" %10s", mode_names[m]);
  printf(" %10s %10s\n", "sparse/mla", "s+kl/mla");
  int64_t cross = -1, cross_kl = -1;
  for (int64_t T = tmin; T <= tmax; T *= 2) {
    z.T = T;
    double tm[M_COUNT];
    for (int m = 0; m < M_COUNT; m++) tm[m] = best_of(&L, &z, m, T >= 8192 ? 1 : reps, c);
    printf("%7lld", (long long)T);
    for (int m = 0; m < M_COUNT; m++) cell(tm[m] < 0 ? -1 : 1e3 * tm[m], 1);
    double r = tm[M_MLA] > 0 && tm[M_SPARSE] >= 0 ? tm[M_SPARSE] / tm[M_MLA] : -1;
    double rk = tm[M_MLA] > 0 && tm[M_SPARSE_KL] >= 0 ? tm[M_SPARSE_KL] / tm[M_MLA] : -1;
    cell(r, 3);
    cell(rk, 3);
    printf("\n");
    fflush(stdout);
    if (cross < 0 && r >= 0 && r < 1) cross = T;
    if (cross_kl < 0 && rk >= 0 && rk < 1) cross_kl = T;
  }
  if (cross > 0) printf("# the sparse layer beats dense MLA from T = %lld\n", (long long)cross);
  if (cross_kl > 0) printf("# the whole sparse-stage step (with the KL and recall) from T = %lld\n", (long long)cross_kl);
  if (cross < 0 && cross_kl < 0) printf("# no crossover in this range\n");
  at_ctx_free(c);
  layer_free(&L);
  return 0;
}

int main(int argc, char **argv) {
  if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
    printf("usage: bench_kv [--experiment FILE] [--no-cache] [--no-layers] [--batch B] [--d-model D]\n"
           "                [--heads H] [--head-dim hd] [--kv-rank dc] [--rope-dim dr] [--q-rank dq]\n"
           "                [--idx-heads HI] [--idx-dim DI] [--topk K] [--tmin T] [--tmax T]\n"
           "                [--reps N] [--threads N]\n");
    return 0;
  }
  at_set_threads((int)arg_int(argc, argv, "--threads", 0));
  int rc = 0;
  if (!has_flag(argc, argv, "--no-cache")) {
    char path[2048];
    const char *p = arg_str(argc, argv, "--experiment", NULL);
    if (!p) {
      const char *src = getenv("AT_SOURCE_DIR");
      FILE *f = fopen("experiments/kv_compression.yaml", "r");
      int here = f != NULL;
      if (f) fclose(f);
      snprintf(path, sizeof path, "%s%sexperiments/kv_compression.yaml", here || !src ? "" : src,
               here || !src ? "" : "/");
      p = path;
    }
    rc |= cache_table(p);
  }
  if (!has_flag(argc, argv, "--no-layers")) {
    sizes z = {.B = arg_int(argc, argv, "--batch", 1), .d = arg_int(argc, argv, "--d-model", 128),
               .h = arg_int(argc, argv, "--heads", 4), .hd = arg_int(argc, argv, "--head-dim", 32),
               .dc = arg_int(argc, argv, "--kv-rank", 128), .dr = arg_int(argc, argv, "--rope-dim", 16),
               .dq = arg_int(argc, argv, "--q-rank", 0), .hi = arg_int(argc, argv, "--idx-heads", 4),
               .di = arg_int(argc, argv, "--idx-dim", 16), .k = arg_int(argc, argv, "--topk", 256)};
    int64_t tmin = arg_int(argc, argv, "--tmin", 1024), tmax = arg_int(argc, argv, "--tmax", 16384);
    int reps = (int)arg_int(argc, argv, "--reps", 3);
    if (z.B < 1 || z.d < 1 || z.h < 1 || z.hd < 1 || z.dc < 1 || z.dr < 0 || z.dr % 2 || z.dq < 0 ||
        z.hi < 1 || z.di < z.dr || z.k < 1 || tmin < 1 || reps < 1) {
      fprintf(stderr, "bench_kv: invalid sizes (rope_dim even and <= idx-dim, all positive)\n");
      return 2;
    }
    rc |= layer_table(z, tmin, tmax, reps);
  }
  return rc;
}
