/* bench/bench_train.c: training throughput of a small decoder LM.
 *
 * The same model as bench/torch_lm.py (same arguments): token embedding,
 * n_layers x [RMSNorm -> mixer -> residual -> RMSNorm -> SwiGLU -> residual],
 * RMSNorm, LM head (untied), trained on random tokens with AdamW. Prints
 * tokens/s, the model's FLOP/s (6 N per token for the weights, plus the
 * attention's T x T products for softmax layers) and the machine's sgemm
 * peak measured here (large square products, same threads), so the three
 * can be read side by side, with the CPU, the vector ISA the build targets
 * and BLIS's kernel set. bench/compare.sh runs both programs.
 *
 *   bench_train [--mixer full|kda|gdn|deltanet|mamba2|mla] [--d-model 128] [--layers 4]
 *               [--heads 4] [--kv-heads 4] [--mlp-hidden 512] [--vocab 256] [--seq-len 256]
 *               [--batch 16] [--steps 10] [--threads 2] [--head-dim 0] [--chunk 0] [--d-state 16]
 *
 * --chunk 0 keeps the mixer's default chunk length (the delta family's
 * depends on the head dim), as bench/torch_lm.py with its --chunk 0.
 */
#include <blis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/gemm.h"
#include "core/rng.h"
#include "core/threads.h"
#include "models/model.h"
#include "optim/optim.h"

#ifdef AT_DOUBLE
#define BLI_GEMM_EX bli_dgemm_ex
#else
#define BLI_GEMM_EX bli_sgemm_ex
#endif

typedef struct args {
  const char *mixer;
  long d_model, layers, heads, kv_heads, mlp_hidden, vocab, seq_len, batch, steps, threads, head_dim, chunk,
      d_state;
} args;

static int parse(int argc, char **argv, args *a) {
  *a = (args){"full", 128, 4, 4, 4, 512, 256, 256, 16, 10, 2, 0, 0, 16};
  struct { const char *name; long *v; } opts[] = {
    {"--d-model", &a->d_model}, {"--layers", &a->layers}, {"--heads", &a->heads},
    {"--kv-heads", &a->kv_heads}, {"--mlp-hidden", &a->mlp_hidden}, {"--vocab", &a->vocab},
    {"--seq-len", &a->seq_len}, {"--batch", &a->batch}, {"--steps", &a->steps},
    {"--threads", &a->threads}, {"--head-dim", &a->head_dim}, {"--chunk", &a->chunk},
    {"--d-state", &a->d_state}};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--mixer") && i + 1 < argc) {
      a->mixer = argv[++i];
      continue;
    }
    int found = 0;
    for (int j = 0; j < AT_ARRAY_LEN(opts) && !found; j++)
      if (!strcmp(argv[i], opts[j].name) && i + 1 < argc) *opts[j].v = atol(argv[++i]), found = 1;
    if (!found) {
      fprintf(stderr, "bench_train: unknown argument %s\n", argv[i]);
      return 0;
    }
  }
  return 1;
}

/* The machine's sgemm peak for `threads` threads, GFLOP/s: the best of
 * the wrapper (BLIS single-threaded per piece) and of one BLIS call with
 * BLIS's own threads, on n x n x n products. */
static double sgemm_peak(int threads) {
  const int64_t n = 1536;
  real *a = malloc((size_t)(n * n) * sizeof *a), *b = malloc((size_t)(n * n) * sizeof *b),
       *c = malloc((size_t)(n * n) * sizeof *c);
  at_fill_uniform(a, n * n, 1, 1, -1, 1);
  at_fill_uniform(b, n * n, 1, 2, -1, 1);
  double best = 0;
  rntm_t rntm = BLIS_RNTM_INITIALIZER;
  bli_rntm_set_num_threads(threads, &rntm);
  real one = 1, zero = 0;
  for (int rep = 0; rep < 10; rep++) {
    double t0 = at_now();
    if (rep % 2)
      at_gemm_strided(AT_N, AT_N, n, n, n, 1, a, n, 1, b, n, 1, 0, c, n, 1, threads);
    else
      BLI_GEMM_EX(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)n, (dim_t)n, (dim_t)n, &one, a,
                  (inc_t)n, 1, b, (inc_t)n, 1, &zero, c, (inc_t)n, 1, NULL, &rntm);
    double dt = at_now() - t0;
    if (rep >= 2) best = AT_MAX(best, 2.0 * (double)(n * n * n) / dt / 1e9);
  }
  free(a), free(b), free(c);
  return best;
}

/* The CPU's model name (from /proc/cpuinfo; "unknown" elsewhere). */
static void cpu_model(char *out, size_t size) {
  snprintf(out, size, "unknown");
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
      const char *v = strchr(line, ':') + 1;
      while (*v == ' ') v++;
      snprintf(out, size, "%.*s", (int)strcspn(v, "\n"), v);
      break;
    }
  fclose(f);
}

int main(int argc, char **argv) {
  args a;
  if (!parse(argc, argv, &a)) return 2;
  at_set_threads((int)a.threads);
  int kind = at_mixer_from_name(a.mixer);
  if (kind < 0) {
    fprintf(stderr, "bench_train: unknown mixer %s\n", a.mixer);
    return 2;
  }
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.vocab_size = a.vocab, cfg.max_seq_len = a.seq_len;
  cfg.d_model = a.d_model, cfg.n_layers = a.layers, cfg.n_heads = a.heads, cfg.n_kv_heads = a.kv_heads;
  cfg.mlp = a.mlp_hidden > 0 ? AT_MLP_SWIGLU : AT_MLP_NONE;
  cfg.mlp_hidden = a.mlp_hidden;
  cfg.position = AT_POS_ROPE;
  cfg.tie_embeddings = 0;
  for (int l = 0; l < a.layers; l++) cfg.layers[l] = (at_mixer_kind)kind;
  /* the options each mixer has (at_mixer_opt_set refuses the others) */
  at_mixer_opt_set(&cfg, kind, "head_dim", a.head_dim > 0 ? a.head_dim : a.d_model / a.heads);
  if (a.chunk > 0) at_mixer_opt_set(&cfg, kind, "chunk_size", a.chunk); /* else the mixer's default */
  at_mixer_opt_set(&cfg, kind, "d_state", a.d_state);
  at_model *m = NULL;
  if (at_model_new(&cfg, 1, &m) != AT_OK) {
    fprintf(stderr, "bench_train: %s\n", at_errmsg());
    return 2;
  }
  at_optim_cfg oc;
  at_optim_cfg_defaults(&oc);
  oc.weight_decay = 0.1;
  oc.total_steps = a.steps + 2;
  at_optim *opt = NULL;
  at_optim_new(&oc, m->params, &opt);
  at_ctx *c = at_ctx_new(0);
  int64_t B = a.batch, T = a.seq_len;
  at_rng r = at_rng_make(7, 7);
  double t_run = 0;
  for (long step = 0; step < a.steps + 2; step++) { /* 2 warm-up steps */
    double t0 = at_now();
    at_itensor *tok = at_inew(c, AT_SHAPE(B, T)), *lab = at_inew(c, AT_SHAPE(B, T));
    for (int64_t i = 0; i < B * T; i++) {
      tok->data[i] = (int32_t)at_rng_below(&r, (uint64_t)a.vocab);
      lab->data[i] = (int32_t)at_rng_below(&r, (uint64_t)a.vocab);
    }
    at_tensor *loss = at_model_loss(c, m, tok, lab, NULL, NULL);
    if (!loss) {
      fprintf(stderr, "bench_train: %s\n", at_errmsg());
      return 1;
    }
    at_params_zero_grad(m->params);
    at_backward(c, loss);
    at_step_info info;
    at_optim_step(opt, &info);
    at_ctx_reset(c);
    if (step >= 2) t_run += at_now() - t0;
  }
  double tps = (double)(B * T * a.steps) / t_run;
  /* model FLOPs per token: 6 per weight (forward + backward) except the
   * embedding lookup, plus softmax attention's scores and values (causal:
   * half of 2 x 2 T d per layer forward, x3 with backward). */
  double n_weights = (double)at_model_num_params(m) - (double)(a.vocab * a.d_model);
  double flops_tok = 6 * n_weights;
  if (!strcmp(a.mixer, "full") || !strcmp(a.mixer, "mla"))
    flops_tok += 3.0 * 2.0 * (double)a.layers * (double)T *
                 (double)(a.heads * at_layer_head_dim(&m->cfg, at_mixer_impl_of(kind)));
  double model_gflops = flops_tok * tps / 1e9;
  double peak = sgemm_peak((int)a.threads);
  char cpu[160];
  cpu_model(cpu, sizeof cpu);
  printf("attnlab mixer=%s tokens_per_second=%.1f step_ms=%.2f params=%lld model_gflops=%.1f "
         "sgemm_peak_gflops=%.1f fraction_of_peak=%.3f blis=%s threads=%ld isa=%s march=%s "
         "cpu=\"%s\"\n",
         a.mixer, tps, t_run / (double)a.steps * 1e3, (long long)at_model_num_params(m), model_gflops, peak,
         model_gflops / peak, at_blis_arch(), a.threads, at_isa(), at_march(), cpu);
  at_ctx_free(c);
  at_optim_free(opt);
  at_model_free(m);
  return 0;
}
