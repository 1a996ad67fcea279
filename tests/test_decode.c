/* Generation (models/generate.h) beyond the registry-wide suite
 * (tests/mixed/mixers: every mixer with its defaults): the decoder against
 * the forward for option variants — the rolling cache of a sliding window
 * against the windowed forward, GQA / MQA, learned positions, MLA with query
 * compression and NoPE, DSA's sparse stage, the linear mixers without short
 * convs and with other gates and forms — and a hybrid; the decoder's
 * refusals; sampling on hand-made distributions; greedy generation against
 * recomputing the forward over the growing sequence. */
#include <string.h>

#include "core/threads.h"
#include "models/generate.h"
#include "testing.h"

enum { D = 32, H = 4, V = 40, B = 3, T = 19 };

typedef struct opt {
  const char *mixer, *key;
  double value;
} opt;

/* A model of `layers` (mixer names) with options, randomised so that every
 * path matters: weights N(0, 0.3), norms 1 + N(0, 0.1), decay parameters
 * (A_log, dt_bias) as initialised plus N(0, 0.1). */
static at_model *model_mlp(const char *const *layers, int n_layers, const opt *opts, int n_opts, at_position pos,
                           int64_t kv_heads, at_mlp_kind mlp) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.vocab_size = V, cfg.max_seq_len = T;
  cfg.d_model = D, cfg.n_heads = H, cfg.n_kv_heads = kv_heads, cfg.n_layers = n_layers;
  cfg.mlp = mlp, cfg.mlp_hidden = 48, cfg.position = pos;
  for (int l = 0; l < n_layers; l++) cfg.layers[l] = at_mixer_from_name(layers[l]);
  for (int i = 0; i < n_opts; i++)
    cr_assert(at_mixer_opt_set(&cfg, at_mixer_from_name(opts[i].mixer), opts[i].key, opts[i].value) == AT_OK, "%s",
              at_errmsg());
  at_model *m = NULL;
  cr_assert(at_model_new(&cfg, 5, &m) == AT_OK, "%s", at_errmsg());
  for (int i = 0; i < m->params->n; i++) {
    at_tensor *t = m->params->list[i].t;
    const char *n = m->params->list[i].name;
    at_rng r = at_rng_make(21, (uint64_t)i);
    int keep = strstr(n, "A_log") || strstr(n, "dt_bias"), norm = strstr(n, "norm") != NULL;
    for (int64_t j = 0; j < t->size; j++) {
      double z = at_rng_normal(&r);
      t->data[j] = keep ? (real)(t->data[j] + 0.1 * z) : norm ? (real)(1 + 0.1 * z) : (real)(0.3 * z);
    }
  }
  return m;
}

/* The same with the SwiGLU MLP. */
static at_model *model_of(const char *const *layers, int n_layers, const opt *opts, int n_opts, at_position pos,
                          int64_t kv_heads) {
  return model_mlp(layers, n_layers, opts, n_opts, pos, kv_heads, AT_MLP_SWIGLU);
}

static at_itensor *tokens(at_ctx *c, int64_t t0, int64_t len) {
  at_itensor *tok = at_inew(c, AT_SHAPE(B, len));
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < len; t++) tok->data[b * len + t] = (int32_t)((11 * (t0 + t) + 7 * b + (t0 + t) * (t0 + t)) % V);
  return tok;
}

/* Worst per-position relative error of the decoder (prefill of `prefill`
 * tokens, then steps) against the forward under `stage`. */
static double decode_error(at_model *m, int prefill, unsigned stage) {
  at_set_threads(2);
  at_ctx *c = at_ctx_new(0);
  at_no_grad_begin(c);
  at_tensor *ref = at_model_logits_stage(c, m, tokens(c, 0, T), stage);
  at_no_grad_end(c);
  cr_assert(ref, "forward: %s", at_errmsg());
  at_decoder *d = NULL;
  cr_assert(at_decoder_new(m, B, T, stage, &d) == AT_OK, "%s", at_errmsg());
  double worst = 0;
  for (int64_t t = 0; t < T;) {
    int64_t n = t == 0 ? prefill : 1;
    at_tensor *z = t == 0 ? at_decoder_prefill(c, d, tokens(c, 0, n), 1) : at_decoder_step(c, d, tokens(c, t, 1));
    cr_assert(z, "decoding at %lld: %s", (long long)t, at_errmsg());
    for (int64_t b = 0; b < B; b++)
      for (int64_t i = 0; i < n; i++)
        worst = fmax(worst, at_test_rel_err(z->data + (b * n + i) * V, ref->data + (b * T + t + i) * V, V));
    t += n;
  }
  cr_expect_eq(d->len, T);
  at_decoder_free(d);
  at_ctx_free(c);
  return worst;
}

static void expect_decodes(const char *what, at_model *m, unsigned stage) {
  for (int p = 1; p <= T; p += 8) {
    double e = decode_error(m, p, stage);
    cr_expect(e < 1e-4, "%s: prefill %d + steps vs the forward: relative error %.3g", what, p, e);
  }
  at_model_free(m);
}

#define LAYERS(...) (const char *const[]){__VA_ARGS__}, AT_ARRAY_LEN(((const char *const[]){__VA_ARGS__}))
#define OPTS(...) (const opt[]){__VA_ARGS__}, AT_ARRAY_LEN(((const opt[]){__VA_ARGS__}))
#define NO_OPTS NULL, 0

/* The rolling cache of W slots: position p in slot p mod W, so after W
 * tokens it holds only the keys the window shows; equal to the forward's
 * windowed attention (which recomputes over the window). */
Test(decode, sliding_window_rolling_cache_equals_the_windowed_forward) {
  for (int w = 1; w <= 7; w += 3)
    expect_decodes("full window", model_of(LAYERS("full", "full"), OPTS({"full", "window", w}), AT_POS_ROPE, H), 0);
  at_model *m = model_of(LAYERS("full"), OPTS({"full", "window", 5}), AT_POS_ROPE, H);
  at_decoder *d = NULL;
  cr_assert(at_decoder_new(m, B, T, 0, &d) == AT_OK);
  cr_expect_eq(at_decoder_state_bytes(d), 2 * B * 5 * D * (int64_t)sizeof(real), "a W-slot cache");
  at_decoder_free(d);
  at_model_free(m);
}

Test(decode, gqa_mqa_and_positions) {
  expect_decodes("gqa", model_of(LAYERS("full", "full"), NO_OPTS, AT_POS_ROPE, 2), 0);
  expect_decodes("mqa", model_of(LAYERS("full", "full"), NO_OPTS, AT_POS_ROPE, 1), 0);
  expect_decodes("nope", model_of(LAYERS("full", "full"), NO_OPTS, AT_POS_NOPE, H), 0);
  expect_decodes("learned positions", model_of(LAYERS("full", "kda"), NO_OPTS, AT_POS_LEARNED, H), 0);
}

Test(decode, mla_variants) {
  expect_decodes("mla q_rank", model_of(LAYERS("mla", "mla"), OPTS({"mla", "q_rank", 12}, {"mla", "kv_rank", 20}),
                                        AT_POS_ROPE, H), 0);
  expect_decodes("mla nope", model_of(LAYERS("mla"), OPTS({"mla", "position", AT_POS_NOPE}), AT_POS_ROPE, H), 0);
}

/* The sparse stage: each step attends to the indexer's top-k slots of the
 * index cache (k < T, so the selection matters). */
Test(decode, dsa_sparse_stage) {
  expect_decodes("dsa sparse", model_of(LAYERS("dsa", "dsa"), OPTS({"dsa", "topk", 5}, {"dsa", "index_dim", 8}),
                                        AT_POS_ROPE, H), AT_STAGE_SPARSE);
  expect_decodes("dsa dense", model_of(LAYERS("dsa"), OPTS({"dsa", "topk", 5}, {"dsa", "q_rank", 16}), AT_POS_ROPE, H), 0);
}

Test(decode, linear_mixer_variants) {
  expect_decodes("kda no conv, bounded, chunk 4",
                 model_of(LAYERS("kda", "kda"), OPTS({"kda", "short_conv", 0}, {"kda", "decay_gate", 1}, {"kda", "chunk_size", 4}),
                          AT_POS_NOPE, H), 0);
  expect_decodes("gdn conv 2, neg eig, chunk 8",
                 model_of(LAYERS("gdn"), OPTS({"gdn", "conv_size", 2}, {"gdn", "allow_neg_eigval", 1}, {"gdn", "chunk_size", 8}),
                          AT_POS_NOPE, H), 0);
  expect_decodes("deltanet conv 3", model_of(LAYERS("deltanet"), OPTS({"deltanet", "conv_size", 3}), AT_POS_NOPE, H), 0);
  expect_decodes("mamba2 no conv, no gate",
                 model_of(LAYERS("mamba2"), OPTS({"mamba2", "short_conv", 0}, {"mamba2", "output_gate", 2}), AT_POS_NOPE, H), 0);
  expect_decodes("linear_attn unnormalised, rmsnorm",
                 model_of(LAYERS("linear_attn"), OPTS({"linear_attn", "normalize", 0}, {"linear_attn", "output_norm", 1},
                                                      {"linear_attn", "feature_map", 1}), AT_POS_NOPE, H), 0);
  expect_decodes("retnet parallel, rmsnorm",
                 model_of(LAYERS("retnet", "retnet"), OPTS({"retnet", "mode", 1}, {"retnet", "norm", 1}), AT_POS_ROPE, H), 0);
  expect_decodes("performer iid, 24 features",
                 model_of(LAYERS("performer"), OPTS({"performer", "orthogonal", 0}, {"performer", "num_features", 24}),
                          AT_POS_NOPE, H), 0);
  expect_decodes("gla conv 3, sigmoid gate, clamp, chunk 4",
                 model_of(LAYERS("gla", "gla"), OPTS({"gla", "short_conv", 1}, {"gla", "conv_size", 3}, {"gla", "output_gate", 0},
                                                     {"gla", "clamp_min", -0.2}, {"gla", "chunk_size", 4}), AT_POS_NOPE, H), 0);
  expect_decodes("gla no gate", model_of(LAYERS("gla"), OPTS({"gla", "output_gate", 2}), AT_POS_NOPE, H), 0);
  expect_decodes("mamba no conv history (conv_size 1), chunk 4",
                 model_of(LAYERS("mamba"), OPTS({"mamba", "conv_size", 1}, {"mamba", "chunk_size", 4}), AT_POS_NOPE, H), 0);
  expect_decodes("mamba conv 3, d_state 4, chunk 3",
                 model_of(LAYERS("mamba", "mamba"),
                          OPTS({"mamba", "conv_size", 3}, {"mamba", "d_state", 4}, {"mamba", "chunk_size", 3}), AT_POS_NOPE, H),
                 0);
  expect_decodes("s4d d_state 4", model_of(LAYERS("s4d", "s4d"), OPTS({"s4d", "d_state", 4}), AT_POS_NOPE, H), 0);
}

/* RWKV-7 as its model runs it: three rwkv7 layers (the value residual from
 * the first reaches the later ones in prefill and steps) with the token-
 * shifted channel mix, whose last input the decoder keeps per block. */
Test(decode, rwkv7_with_channel_mix) {
  expect_decodes("rwkv7 + rwkv_cmix, chunk 4",
                 model_mlp(LAYERS("rwkv7", "rwkv7", "rwkv7"), OPTS({"rwkv7", "chunk_size", 4}), AT_POS_NOPE, H,
                           AT_MLP_RWKV_CMIX), 0);
  expect_decodes("hybrid gla, full, rwkv7", model_mlp(LAYERS("gla", "full", "rwkv7"), NO_OPTS, AT_POS_ROPE, H,
                                                      AT_MLP_RWKV_CMIX), 0);
}

Test(decode, hybrid_of_every_family) {
  expect_decodes("hybrid", model_of(LAYERS("kda", "full", "mamba2", "mla", "retnet"), NO_OPTS, AT_POS_ROPE, 2), 0);
}

/* ---- refusals ------------------------------------------------------------------- */

static at_itensor *zeros(at_ctx *c, int64_t b, int64_t t) {
  at_itensor *x = at_inew(c, AT_SHAPE(b, t));
  memset(x->data, 0, (size_t)(b * t) * sizeof(int32_t));
  return x;
}

Test(decode, refusals_are_clear) {
  at_model *m = model_of(LAYERS("full", "gdn"), NO_OPTS, AT_POS_LEARNED, H);
  at_decoder *d = NULL;
  cr_expect_eq(at_decoder_new(m, 1, T + 1, 0, &d), AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "learned positions cannot extrapolate"), "%s", at_errmsg());
  cr_assert(at_decoder_new(m, 2, 4, 0, &d) == AT_OK);
  at_ctx *c = at_ctx_new(0);
  cr_expect(at_decoder_step(c, d, zeros(c, 3, 1)) == NULL, "a batch of 3 in a decoder of 2");
  cr_expect(strstr(at_errmsg(), "do not fit"), "%s", at_errmsg());
  at_ctx_reset(c); /* a failure sticks to the context until it is reset */
  cr_assert(at_decoder_prefill(c, d, zeros(c, 2, 3), 0) != NULL, "%s", at_errmsg());
  cr_expect(at_decoder_prefill(c, d, zeros(c, 2, 3), 0) == NULL && strstr(at_errmsg(), "empty decoder"), "%s",
            at_errmsg());
  at_ctx_reset(c);
  cr_assert(at_decoder_step(c, d, zeros(c, 2, 1)) != NULL, "%s", at_errmsg());
  cr_expect(at_decoder_step(c, d, zeros(c, 2, 1)) == NULL, "position 4 of a 4-token decoder");
  at_decoder_free(d);
  /* a mixer without decoding functions is refused by name */
  at_mixer_impl crippled = *m->blocks[1].mixer;
  crippled.step = NULL;
  m->blocks[1].mixer = &crippled;
  cr_expect_eq(at_decoder_new(m, 1, 4, 0, &d), AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "mixer gdn has no decoding functions"), "%s", at_errmsg());
  m->blocks[1].mixer = at_mixer_impl_of(at_mixer_from_name("gdn"));
  at_ctx_free(c);
  at_model_free(m);
}

/* ---- sampling ------------------------------------------------------------------- */

/* p = (0.05, 0.5, 0.1, 0.2, 0.15) as logits (shifted: softmax ignores it). */
static const double P5[5] = {0.05, 0.5, 0.1, 0.2, 0.15};

static void probs_of(const at_sample_opts *o, double *out) {
  real z[5];
  for (int i = 0; i < 5; i++) z[i] = (real)(log(P5[i]) + 3.0);
  at_sampler s;
  cr_assert(at_sampler_init(&s, 5, o, 1) == AT_OK, "%s", at_errmsg());
  at_sample_probs(&s, z);
  memcpy(out, s.probs, sizeof(double) * 5);
  at_sampler_free(&s);
}

static void expect_probs(const at_sample_opts *o, const double *want, const char *what) {
  double p[5];
  probs_of(o, p);
  for (int i = 0; i < 5; i++) cr_expect(fabs(p[i] - want[i]) < 1e-6, "%s: p[%d] = %.7f, want %.7f", what, i, p[i], want[i]);
}

Test(decode, sampling_distributions) {
  expect_probs(&(at_sample_opts){1, 0, 1}, P5, "temperature 1");
  double t2[5], sum = 0; /* temperature 2: p^(1/2) renormalised */
  for (int i = 0; i < 5; i++) sum += t2[i] = sqrt(P5[i]);
  for (int i = 0; i < 5; i++) t2[i] /= sum;
  expect_probs(&(at_sample_opts){2, 0, 1}, t2, "temperature 2");
  expect_probs(&(at_sample_opts){1, 2, 1}, (double[]){0, 0.5 / 0.7, 0, 0.2 / 0.7, 0}, "top_k 2");
  /* top_p: 0.5 < 0.6, then 0.7 >= 0.6: the two most probable */
  expect_probs(&(at_sample_opts){1, 0, 0.6}, (double[]){0, 0.5 / 0.7, 0, 0.2 / 0.7, 0}, "top_p 0.6");
  expect_probs(&(at_sample_opts){1, 0, 0.5}, (double[]){0, 1, 0, 0, 0}, "top_p 0.5 (reached by the first)");
  expect_probs(&(at_sample_opts){1, 0, 0.84}, (double[]){0, 0.5 / 0.85, 0, 0.2 / 0.85, 0.15 / 0.85}, "top_p 0.84");
  /* top_k then top_p on the renormalised top 3: 0.5/0.85 = 0.588 < 0.6 */
  expect_probs(&(at_sample_opts){1, 3, 0.6}, (double[]){0, 0.5 / 0.7, 0, 0.2 / 0.7, 0}, "top_k 3, top_p 0.6");
  expect_probs(&(at_sample_opts){0, 0, 1}, (double[]){0, 1, 0, 0, 0}, "greedy");
  expect_probs(&(at_sample_opts){0.5, 1, 1}, (double[]){0, 1, 0, 0, 0}, "top_k 1");
  /* ties rank the lower id first */
  real tie[4] = {1, 2, 2, 0};
  at_sampler s;
  cr_assert(at_sampler_init(&s, 4, &(at_sample_opts){1, 1, 1}, 1) == AT_OK);
  at_sample_probs(&s, tie);
  cr_expect(s.probs[1] == 1 && s.probs[2] == 0, "a tie keeps the lower id");
  at_sampler_free(&s);
  cr_assert(at_sampler_init(&s, 4, &(at_sample_opts){0, 0, 1}, 1) == AT_OK);
  cr_expect_eq(at_sample(&s, tie), 1, "greedy ties to the lower id");
  at_sampler_free(&s);
  cr_expect_eq(at_sampler_init(&s, 4, &(at_sample_opts){-1, 0, 1}, 1), AT_E_ARG);
  cr_expect_eq(at_sampler_init(&s, 4, &(at_sample_opts){1, 0, 0}, 1), AT_E_ARG);
  cr_expect_eq(at_sampler_init(&s, 4, &(at_sample_opts){1, -2, 1}, 1), AT_E_ARG);
}

/* Draws follow the distribution (20,000 draws, within 5 standard errors),
 * never leave the kept set, and are the same for the same seed. */
Test(decode, sampling_is_deterministic_and_follows_the_distribution) {
  real z[5];
  for (int i = 0; i < 5; i++) z[i] = (real)log(P5[i]);
  const at_sample_opts cases[] = {{1, 0, 1}, {1, 3, 1}, {1, 0, 0.8}, {0.7, 4, 0.9}};
  enum { N = 20000 };
  for (int k = 0; k < AT_ARRAY_LEN(cases); k++) {
    at_sampler a, b;
    cr_assert(at_sampler_init(&a, 5, &cases[k], 42) == AT_OK && at_sampler_init(&b, 5, &cases[k], 42) == AT_OK);
    int count[5] = {0}, same = 1;
    for (int n = 0; n < N; n++) {
      int32_t x = at_sample(&a, z);
      same &= x == at_sample(&b, z);
      count[x]++;
    }
    cr_expect(same, "case %d: the same seed gives the same draws", k);
    for (int i = 0; i < 5; i++) {
      double p = a.probs[i], se = sqrt(p * (1 - p) / N);
      if (p == 0) cr_expect_eq(count[i], 0, "case %d: token %d is outside the kept set", k, i);
      else cr_expect(fabs(count[i] / (double)N - p) < 5 * se + 1e-9, "case %d: token %d drawn %.4f, p %.4f", k, i,
                     count[i] / (double)N, p);
    }
    at_sampler_free(&a), at_sampler_free(&b);
  }
  at_sampler a, b;
  cr_assert(at_sampler_init(&a, 5, &cases[0], 1) == AT_OK && at_sampler_init(&b, 5, &cases[0], 2) == AT_OK);
  int differ = 0;
  for (int n = 0; n < 64; n++) differ += at_sample(&a, z) != at_sample(&b, z);
  cr_expect(differ > 0, "another seed, other draws");
  at_sampler_free(&a), at_sampler_free(&b);
}

/* ---- the generation loop -------------------------------------------------------- */

/* Greedy generation through the decoder equals the argmax of the forward
 * recomputed over the growing sequence; a seeded sample is reproducible. */
Test(decode, greedy_generation_equals_recomputing_the_forward) {
  at_set_threads(2);
  static const char *const pairs[][2] = {{"full", "kda"}, {"mamba2", "mla"}, {"dsa", "retnet"}};
  for (int variant = 0; variant < AT_ARRAY_LEN(pairs); variant++) {
    const char *const *two = pairs[variant];
    at_model *m = model_of(two, 2, NO_OPTS, AT_POS_ROPE, H);
    at_ctx *c = at_ctx_new(0);
    at_decoder *d = NULL;
    cr_assert(at_decoder_new(m, 1, T, 0, &d) == AT_OK);
    at_sampler s;
    cr_assert(at_sampler_init(&s, V, &(at_sample_opts){0, 0, 1}, 0) == AT_OK);
    int32_t prompt[4] = {3, 1, 4, 1}, out[T], seq[T];
    at_gen_stats g;
    cr_assert(at_generate(c, d, prompt, 4, T - 3, &s, out, &g) == AT_OK, "%s", at_errmsg());
    cr_expect(g.prompt_tokens == 4 && g.new_tokens == T - 3 && g.state_bytes == at_decoder_state_bytes(d));
    memcpy(seq, prompt, sizeof prompt);
    for (int n = 4; n < T + 1; n++) { /* the forward over seq[0..n-1], argmax of the last row */
      at_itensor *tok = at_inew(c, AT_SHAPE(1, n));
      memcpy(tok->data, seq, (size_t)n * sizeof(int32_t));
      at_no_grad_begin(c);
      at_tensor *z = at_model_logits(c, m, tok);
      at_no_grad_end(c);
      cr_assert(z);
      int32_t best = (int32_t)at_sample(&s, z->data + (n - 1) * V);
      cr_expect_eq(out[n - 4], best, "%s+%s: token %d: decoder %d, forward %d", two[0], two[1], n, out[n - 4], best);
      if (n < T) seq[n] = best;
      at_ctx_reset(c);
    }
    at_sampler_free(&s);
    /* sampled with a seed: the same twice */
    int32_t a[8], b[8];
    cr_assert(at_sampler_init(&s, V, &(at_sample_opts){1.0, 10, 0.95}, 7) == AT_OK);
    cr_assert(at_generate(c, d, prompt, 4, 8, &s, a, NULL) == AT_OK);
    at_sampler_free(&s);
    cr_assert(at_sampler_init(&s, V, &(at_sample_opts){1.0, 10, 0.95}, 7) == AT_OK);
    cr_assert(at_generate(c, d, prompt, 4, 8, &s, b, NULL) == AT_OK);
    cr_expect(!memcmp(a, b, sizeof a), "a seeded generation is reproducible");
    cr_expect_eq(at_generate(c, d, prompt, 4, T, &s, b, NULL), AT_E_ARG, "longer than the decoder");
    at_sampler_free(&s);
    at_decoder_free(d);
    at_ctx_free(c);
    at_model_free(m);
  }
}
