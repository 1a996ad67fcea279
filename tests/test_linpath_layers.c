/* The linear path's layers (models/linear_attn.c, performer.c, retnet.c):
 *   - against an independent PyTorch implementation with fla's naive ops as
 *     the core (bench/torch_linpath.py via tests/ref/gen_linpath_layers.py ->
 *     tests/golden/linpath_layers.h5): output, every parameter gradient and
 *     the input gradient, at training shapes (B 16, ragged T), in float on
 *     two threads;
 *   - the training form equals the recurrent reference at the layer level
 *     (and retnet's parallel mode);
 *   - performer's features: a pure function of (seed, layer, step /
 *     redraw_every), redrawn exactly when the step crosses a multiple, the
 *     same in every layer rebuilt from the same seed; a run interrupted and
 *     resumed repeats the uninterrupted run's losses bit for bit across
 *     redraws;
 *   - the recurrent state sizes (state_elems) and the option checks. */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/h5io.h"
#include "golden_testing.h"
#include "core/threads.h"
#include "experiments/config.h"
#include "experiments/results.h"
#include "experiments/runner.h"
#include "linlayer_testing.h"
#include "models/linpath.h"

static const char *const opt_keys[] = {"feature_map", "normalize", "output_norm", "chunk_size", "num_features",
                                       "norm", "output_gate", "mode"};

static void check_golden_case(at_h5 *h, const char *grp) {
  char *mixer = NULL, path[256], what[200];
  cr_assert(at_h5_get_attr_str(h, grp, "mixer", &mixer) == AT_OK);
  at_mixer_kind kind = mixer_id(mixer);
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = attr_int(h, grp, "d_model");
  cfg.n_heads = cfg.n_kv_heads = attr_int(h, grp, "n_heads");
  cfg.n_layers = 1;
  cfg.layers[0] = kind;
  for (int i = 0; i < AT_ARRAY_LEN(opt_keys); i++) {
    char a[64];
    snprintf(a, sizeof a, "opt.%s", opt_keys[i]);
    double v;
    if (at_h5_has_attr(h, grp, a)) {
      cr_assert(at_h5_get_attr_double(h, grp, a, &v) == AT_OK);
      set_opt(&cfg, kind, opt_keys[i], v);
    }
  }
  one_layer L;
  layer_build(&L, &cfg, kind, 1);
  if (kind == MIXER(performer)) {
    int64_t m, K;
    at_performer_features(L.layer, &m, &K, NULL);
    snprintf(path, sizeof path, "%s/omega", grp);
    real *w = read_exact(h, path, m * K);
    at_performer_pin_features(L.layer, w);
    free(w);
  }
  snprintf(path, sizeof path, "%s/params", grp);
  char **names;
  int n_names;
  cr_assert(at_h5_list(h, path, &names, &n_names) == AT_OK, "%s", at_errmsg());
  at_h5_free_list(names, n_names);
  int64_t leaves = 0; /* nested names (g_norm/weight) list as one group: count ours */
  for (int i = 0; i < L.p->n; i++) {
    at_tensor *t = L.p->list[i].t;
    snprintf(path, sizeof path, "%s/params/%s", grp, L.p->list[i].name + strlen("mix."));
    cr_assert(at_h5_exists(h, path), "%s: no %s in the file", grp, path);
    real *v = read_exact(h, path, t->size);
    memcpy(t->data, v, (size_t)t->size * sizeof(real));
    free(v);
    leaves++;
  }
  cr_expect(leaves == L.p->n && n_names >= 1);
  int nd;
  int64_t xs[4];
  snprintf(path, sizeof path, "%s/x", grp);
  cr_assert(at_h5_shape(h, path, &nd, xs) == AT_OK && nd == 3);
  cr_expect(xs[0] >= 16, "%s: training shapes (B %lld)", grp, (long long)xs[0]);
  at_ctx *c = at_ctx_new(0);
  real *xv = read_exact(h, path, xs[0] * xs[1] * xs[2]);
  at_tensor *x = at_from(c, xv, 3, xs);
  x->requires_grad = 1;
  at_params_zero_grad(L.p);
  at_tensor *y = layer_forward(c, &L, x);
  cr_assert(y != NULL, "%s: %s", grp, at_errmsg());
  snprintf(path, sizeof path, "%s/y", grp);
  real *yref = read_exact(h, path, y->size);
  snprintf(what, sizeof what, "%s output", grp);
  AT_EXPECT_CLOSE(y->data, yref, y->size, 1e-5, what);
  snprintf(path, sizeof path, "%s/dy", grp);
  real *dy = read_exact(h, path, y->size);
  memcpy(at_grad(c, y), dy, (size_t)y->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  snprintf(path, sizeof path, "%s/dx", grp);
  real *dx = read_exact(h, path, x->size);
  snprintf(what, sizeof what, "%s dx", grp);
  AT_EXPECT_CLOSE(x->grad, dx, x->size, 1e-5, what);
  for (int i = 0; i < L.p->n; i++) {
    at_tensor *t = L.p->list[i].t;
    snprintf(path, sizeof path, "%s/grads/%s", grp, L.p->list[i].name + strlen("mix."));
    real *gref = read_exact(h, path, t->size);
    snprintf(what, sizeof what, "%s d%s", grp, L.p->list[i].name);
    AT_EXPECT_CLOSE(t->grad, gref, t->size, 1e-5, what);
    free(gref);
  }
  free(xv), free(yref), free(dy), free(dx), free(mixer);
  at_ctx_free(c);
  layer_free(&L);
}

Test(linpath_layers, match_pytorch_at_training_shapes) {
  int saved = at_threads();
  at_set_threads(2);
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/linpath_layers.h5", AT_SOURCE_DIR);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  char **cases;
  int n;
  cr_assert(at_h5_list(h, "/", &cases, &n) == AT_OK, "%s", at_errmsg());
  cr_expect_eq(n, 6, "%d cases in %s", n, path);
  for (int i = 0; i < n; i++) check_golden_case(h, cases[i]);
  at_h5_free_list(cases, n);
  at_h5_close(h);
  at_set_threads(saved);
}

/* ---- forms at the layer level --------------------------------------------------- */

static real *forward_copy(one_layer *L, at_tensor *x) {
  at_ctx *c = at_ctx_new(0);
  at_no_grad_begin(c);
  at_tensor *y = layer_forward(c, L, x);
  cr_assert(y, "%s", at_errmsg());
  real *out = malloc((size_t)y->size * sizeof(real));
  memcpy(out, y->data, (size_t)y->size * sizeof(real));
  at_no_grad_end(c);
  at_ctx_free(c);
  return out;
}

Test(linpath_layers, training_form_equals_recurrent) {
  const char *mixers[] = {"linear_attn", "performer", "retnet", "retnet"};
  for (int i = 0; i < 4; i++) {
    at_mixer_kind kind = mixer_id(mixers[i]);
    at_model_cfg cfg;
    at_model_cfg_defaults(&cfg);
    cfg.d_model = 32, cfg.n_heads = 2, cfg.n_layers = 1, cfg.layers[0] = kind;
    set_opt(&cfg, kind, "chunk_size", 16);
    if (i == 3) set_opt(&cfg, kind, "mode", 1); /* parallel */
    one_layer L;
    layer_build(&L, &cfg, kind, 3);
    layer_randomize(&L, 4, 0.3);
    at_ctx *c = at_ctx_new(0);
    at_tensor *x = AT_RANDN(c, 5, 1.0, 3, 70, 32);
    real *a = forward_copy(&L, x);
    at_linear_mixer_set_form(L.layer, AT_LIN_RECURRENT);
    real *b = forward_copy(&L, x);
    char what[64];
    snprintf(what, sizeof what, "%s%s vs recurrent", mixers[i], i == 3 ? " parallel" : "");
    AT_EXPECT_CLOSE(a, b, 3 * 70 * 32, 1e-5, what);
    free(a), free(b);
    at_ctx_free(c);
    layer_free(&L);
  }
}

/* ---- performer's features ------------------------------------------------------- */

static at_model_cfg performer_cfg(int64_t redraw_every) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = 16, cfg.n_heads = 2, cfg.n_layers = 1, cfg.layers[0] = MIXER(performer);
  set_opt(&cfg, MIXER(performer), "redraw_every", (double)redraw_every);
  return cfg;
}

static void forward_at_step(one_layer *L, int64_t step) {
  at_ctx *c = at_ctx_new(0);
  at_mixer_io io = {.step = step};
  at_no_grad_begin(c);
  cr_assert(L->impl->forward(c, L->layer, AT_RANDN(c, 1, 1.0, 1, 5, 16), &io));
  at_no_grad_end(c);
  at_ctx_free(c);
}

Test(linpath_layers, performer_features_follow_the_step) {
  at_model_cfg cfg = performer_cfg(10);
  one_layer A, B2;
  layer_build(&A, &cfg, MIXER(performer), 7);
  layer_build(&B2, &cfg, MIXER(performer), 7);
  int64_t m, K, draw;
  const real *wa = at_performer_features(A.layer, &m, &K, &draw);
  cr_expect(m == 16 && K == 8 && draw == 0, "m = 2 head_dim; draw 0 after init");
  real *w0 = malloc((size_t)(m * K) * sizeof(real));
  memcpy(w0, wa, (size_t)(m * K) * sizeof(real));
  forward_at_step(&A, 9);
  at_performer_features(A.layer, NULL, NULL, &draw);
  cr_expect(draw == 0 && memcmp(w0, wa, (size_t)(m * K) * sizeof(real)) == 0, "step 9: still draw 0");
  forward_at_step(&A, 25);
  at_performer_features(A.layer, NULL, NULL, &draw);
  cr_expect(draw == 2 && memcmp(w0, wa, (size_t)(m * K) * sizeof(real)) != 0, "step 25: draw 2");
  forward_at_step(&B2, 20); /* another layer object, straight to draw 2: the same features */
  cr_expect(memcmp(at_performer_features(B2.layer, NULL, NULL, NULL), wa, (size_t)(m * K) * sizeof(real)) == 0);
  forward_at_step(&A, 3); /* back to draw 0 (an evaluation of an earlier checkpoint) */
  cr_expect(memcmp(w0, wa, (size_t)(m * K) * sizeof(real)) == 0);
  layer_free(&B2);
  /* another seed, or another layer index, draws other features */
  layer_build(&B2, &cfg, MIXER(performer), 8);
  cr_expect(memcmp(at_performer_features(B2.layer, NULL, NULL, NULL), w0, (size_t)(m * K) * sizeof(real)) != 0);
  layer_free(&B2);
  /* redraw_every 0: never */
  at_model_cfg never = performer_cfg(0);
  layer_build(&B2, &never, MIXER(performer), 7);
  forward_at_step(&B2, 100000);
  at_performer_features(B2.layer, NULL, NULL, &draw);
  cr_expect(draw == 0 && memcmp(at_performer_features(B2.layer, NULL, NULL, NULL), w0, (size_t)(m * K) * sizeof(real)) == 0);
  free(w0);
  layer_free(&B2);
  layer_free(&A);
}

static char dir[256];

static void remove_dir(void) { at_test_rmdir(dir); }
TestSuite(linpath_layers, .fini = remove_dir);

static const char *write_file(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static at_results *train(const char *yaml, const char *const *sets, int n_sets, const char *out, int resume,
                         int64_t stop_after) {
  at_experiment *e = NULL;
  cr_assert(at_experiment_load(write_file("exp.yaml", yaml), sets, n_sets, &e) == AT_OK, "%s", at_errmsg());
  FILE *log = fopen("/dev/null", "w");
  at_train_opts o = {.out_dir = out, .resume = resume, .progress = 0, .log = log, .stop_after = stop_after};
  int failed = 0;
  cr_assert(at_experiment_train(e, &o, &failed) == AT_OK, "%s", at_errmsg());
  fclose(log);
  at_experiment_free(e);
  char path[600];
  snprintf(path, sizeof path, "%s/results.h5", out);
  at_results *r = NULL;
  cr_assert(at_results_read(path, &r) == AT_OK, "%s", at_errmsg());
  return r;
}

/* Redraws every 7 steps; interrupted at step 30 (between redraws 28 and 35)
 * and resumed: the same 50 losses to the bit, and the same evaluation. The
 * features do change the run: redraw_every 0 differs from step 7 on and
 * equals it before. */
Test(linpath_layers, performer_resume_is_bit_exact_across_redraws) {
  snprintf(dir, sizeof dir, "/tmp/attnlab_linpath_XXXXXX");
  cr_assert(mkdtemp(dir) != NULL);
  const char *yaml =
      "experiment: perf\nseed: 3\n"
      "data: {task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 2, train_examples: 2000,\n"
      "       test_examples: 64, random_non_queries: false}\n"
      "model: {d_model: 32, n_heads: 2, mlp: none, layers: [performer, performer],\n"
      "        attention: {performer: {redraw_every: 7, chunk_size: 16}}}\n"
      "train: {steps: 50, batch_size: 8, lr: 3.0e-3, warmup_steps: 5, eval_every: 25, threads: 1,\n"
      "        log_every: 1000}\n";
  char a[300], b[300], n0[300];
  snprintf(a, sizeof a, "%s/a", dir), snprintf(b, sizeof b, "%s/b", dir), snprintf(n0, sizeof n0, "%s/n", dir);
  at_results *ra = train(yaml, NULL, 0, a, 0, 0);
  at_results *rb = train(yaml, NULL, 0, b, 0, 30);
  cr_expect(rb->runs[0]->n_train == 30);
  at_results_free(rb);
  rb = train(yaml, NULL, 0, b, 1, 0);
  const at_results_run *x = ra->runs[0], *y = rb->runs[0];
  cr_assert(x->n_train == 50 && y->n_train == 50);
  for (int i = 0; i < 50; i++)
    cr_expect(x->train_loss[i] == y->train_loss[i], "step %d: %.9g vs %.9g", i, x->train_loss[i], y->train_loss[i]);
  cr_expect(x->n_eval == y->n_eval && x->eval_loss[x->n_eval - 1] == y->eval_loss[y->n_eval - 1]);
  const char *never[] = {"model.attention.performer.redraw_every=0"};
  at_results *rn = train(yaml, never, 1, n0, 0, 0);
  const at_results_run *z = rn->runs[0];
  for (int i = 0; i < 7; i++) cr_expect(z->train_loss[i] == x->train_loss[i], "step %d before the first redraw", i);
  int differ = 0;
  for (int i = 7; i < 50; i++) differ |= z->train_loss[i] != x->train_loss[i];
  cr_expect(differ, "the redraws changed nothing");
  at_results_free(ra), at_results_free(rb), at_results_free(rn);
}

/* ---- sizes and options ------------------------------------------------------------ */

Test(linpath_layers, state_elems) {
  const struct { const char *mixer, *key; double v; int64_t want; } cases[] = {
      {"linear_attn", "normalize", 1, 2 * (16 * 16 + 16)}, /* S and z per head */
      {"linear_attn", "normalize", 0, 2 * 16 * 16},
      {"retnet", "expand_v", 2, 2 * 16 * 32},
      {"performer", "num_features", 24, 2 * (24 * 16 + 24 + 1)}, /* S m x V, z, the running max */
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) {
    at_mixer_kind kind = mixer_id(cases[i].mixer);
    at_model_cfg cfg;
    at_model_cfg_defaults(&cfg);
    cfg.d_model = 32, cfg.n_heads = 2, cfg.n_layers = 1, cfg.layers[0] = kind;
    set_opt(&cfg, kind, cases[i].key, cases[i].v);
    one_layer L;
    layer_build(&L, &cfg, kind, 1);
    int64_t n = L.impl->state_elems(L.layer);
    cr_expect(n == cases[i].want, "%s %s=%g: %lld state elements, want %lld", cases[i].mixer, cases[i].key, cases[i].v,
              (long long)n, (long long)cases[i].want);
    layer_free(&L);
  }
}

Test(linpath_layers, bad_options_are_refused) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cr_expect(at_mixer_opt_set(&cfg, MIXER(performer), "redraw_every", -1) != AT_OK);
  cr_expect(at_mixer_opt_set(&cfg, MIXER(linear_attn), "chunk_size", 0) != AT_OK);
  cr_expect(at_mixer_opt_set(&cfg, MIXER(retnet), "expand_v", 0) != AT_OK);
  cr_expect(strstr(at_errmsg(), "retnet: option expand_v = 0 is out of its range") != NULL, "%s", at_errmsg());
  /* RoPE with an odd head dim: placed on head_dim */
  cfg.d_model = 30, cfg.n_heads = 2, cfg.n_layers = 1, cfg.layers[0] = MIXER(retnet);
  set_opt(&cfg, MIXER(retnet), "head_dim", 15);
  at_mixer_kind bad_mixer;
  const char *bad_key = NULL;
  cr_expect(at_model_cfg_resolve(&cfg, &bad_mixer, &bad_key) == AT_E_CONFIG);
  cr_expect(bad_key && strcmp(bad_key, "head_dim") == 0 && strstr(at_errmsg(), "RoPE needs an even head_dim"),
            "%s", at_errmsg());
}
