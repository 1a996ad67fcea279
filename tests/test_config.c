/* experiments/ and models/config.c: the experiment-file loader.
 *
 * Fixtures are in tests/configs/: good files by what they show, bad files
 * named for what they break. Every error is checked for its exact
 * "file:line:col: " prefix (or "--set ...: ") and the key words of its message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "experiments/config.h"
#include "mixer_testing.h"
#include "models/linear_mixers.h"
#include "models/mla.h"
#include "testing.h"

#define LIN(cfg, k) ((const at_lin_mixer_opts *)(const void *)(cfg)->mixer[k].bytes)
#define MLA(cfg, k) ((const at_mla_opts *)(const void *)(cfg)->mixer[k].bytes)

static const char *fixture(const char *name) {
  static char path[4][1024];
  static int slot;
  char *p = path[slot++ % 4];
  snprintf(p, 1024, "%s/tests/configs/%s", AT_SOURCE_DIR, name);
  return p;
}

static at_experiment *load_ok_sets(const char *name, const char *const *sets, int n) {
  at_experiment *e = NULL;
  at_status s = at_experiment_load(fixture(name), sets, n, &e);
  cr_assert(s == AT_OK, "%s: %s", name, at_errmsg());
  cr_assert(e != NULL);
  return e;
}
static at_experiment *load_ok(const char *name) { return load_ok_sets(name, NULL, 0); }

/* The error must start with `prefix` and contain `words`. */
static void expect_msg(at_status s, at_status want, const char *prefix, const char *words) {
  const char *m = at_errmsg();
  cr_expect(s == want, "status %s, want %s (%s)", at_status_name(s), at_status_name(want), m);
  cr_expect(strncmp(m, prefix, strlen(prefix)) == 0, "message '%s' does not start with '%s'", m, prefix);
  cr_expect(strstr(m + AT_MIN(strlen(m), strlen(prefix)), words) != NULL,
            "message '%s' lacks '%s'", m, words);
}

/* Loads a bad fixture; expects `file:line:col: ` and `words`. */
static void expect_file_error_sets(const char *name, const char *const *sets, int n, at_status want,
                                   int line, int col, const char *words) {
  at_experiment *e = (at_experiment *)0x1;
  at_status s = at_experiment_load(fixture(name), sets, n, &e);
  cr_expect(e == NULL, "%s: no experiment on failure", name);
  char prefix[1200];
  snprintf(prefix, sizeof prefix, "%s:%d:%d: ", fixture(name), line, col);
  expect_msg(s, want, prefix, words);
}
static void expect_file_error(const char *name, int line, int col, const char *words) {
  expect_file_error_sets(name, NULL, 0, AT_E_CONFIG, line, col, words);
}

/* Loads a good fixture with one bad --set; expects "--set <arg>: " and `words`. */
static void expect_set_error(const char *name, const char *arg, const char *words) {
  at_experiment *e = NULL;
  at_status s = at_experiment_load(fixture(name), &arg, 1, &e);
  cr_expect(e == NULL);
  char prefix[600];
  snprintf(prefix, sizeof prefix, "--set %s: ", arg);
  expect_msg(s, AT_E_CONFIG, prefix, words);
}

/* ---- good files ------------------------------------------------------------------ */

Test(config, example_of_the_issue) {
  at_experiment *e = load_ok("example.yaml");
  cr_expect_str_eq(e->name, "mqar_full");
  cr_expect_str_eq(e->report_metric, "eval_accuracy");
  cr_expect(e->source && strstr(e->source, "mqar_full"));
  cr_assert_eq(e->n_runs, 4, "2 runs x 2 learning rates");
  static const char *ids[] = {"full__lr=0.001", "full__lr=0.003", "swa__lr=0.001", "swa__lr=0.003"};
  static const char *names[] = {"full lr=0.001", "full lr=0.003", "swa lr=0.001", "swa lr=0.003"};
  static const double lrs[] = {1e-3, 3e-3, 1e-3, 3e-3};
  for (int i = 0; i < 4; i++) {
    const at_run_cfg *r = &e->runs[i];
    cr_expect_str_eq(r->run_id, ids[i]);
    cr_expect_str_eq(r->name, names[i]);
    cr_expect_str_eq(r->sweep_point, i % 2 ? "lr=0.003" : "lr=0.001");
    cr_expect_str_eq(r->base_name, i < 2 ? "full" : "swa");
    cr_expect(r->train.optim.lr == lrs[i]);
    cr_expect(r->seed == 0 && r->data.seed == 0);
    cr_expect(r->data.kind == AT_TASK_MQAR && r->data.vocab_size == 8192 && r->data.seq_len == 64);
    cr_expect(r->data.num_kv_pairs == 4 && r->data.train_examples == 20000 && r->data.test_examples == 1000);
    const at_model_cfg *m = &r->model;
    cr_expect(m->d_model == 64 && m->n_layers == 2 && m->n_heads == 1 && m->n_kv_heads == 1);
    cr_expect(m->mlp == AT_MLP_NONE && m->mlp_hidden == 256 && m->position == AT_POS_ROPE);
    cr_expect(!m->tie_embeddings && m->layers[0] == MIXER(full) && m->layers[1] == MIXER(full));
    cr_expect(m->vocab_size == 8192 && m->max_seq_len == 64, "model sizes come from the task");
    cr_expect(get_opt(m, MIXER(full), "window") == (i < 2 ? 0 : 16), "run %d window", i);
    cr_expect(MIXER_COMMON(m, MIXER(full))->head_dim == 64);
    const at_train_cfg *t = &r->train;
    cr_expect(t->steps == 2000 && t->optim.total_steps == 2000 && t->batch_size == 64);
    cr_expect(t->optim.schedule == AT_SCHED_COSINE && t->optim.warmup_steps == 100);
    cr_expect(t->optim.weight_decay == 0.1 && t->optim.grad_clip == 1.0);
    cr_expect(t->eval_every == 200 && t->checkpoint_every == 500 && t->threads == 2);
    cr_expect(r->yaml && strstr(r->yaml, "experiment: mqar_full\n"));
  }
  at_experiment_free(e);
}

Test(config, defaults) {
  at_experiment *e = load_ok("minimal.yaml");
  cr_assert_eq(e->n_runs, 1);
  const at_run_cfg *r = &e->runs[0];
  cr_expect_str_eq(r->name, "tiny", "without runs: one run named after the experiment");
  cr_expect_str_eq(r->run_id, "tiny");
  cr_expect_str_eq(r->sweep_point, "");
  cr_expect_str_eq(r->base_name, "tiny");
  cr_expect_str_eq(e->report_metric, "eval_accuracy");
  cr_expect(r->seed == 0 && r->data.kind == AT_TASK_MQAR);
  const at_model_cfg *m = &r->model;
  cr_expect(m->d_model == 64 && m->n_layers == 2 && m->n_heads == 2 && m->n_kv_heads == 2);
  cr_expect(m->mlp == AT_MLP_SWIGLU && m->mlp_hidden == 176, "8/3 * 64 rounded up to 16");
  cr_expect(m->position == AT_POS_ROPE && m->rope_theta == 10000.0 && m->norm_eps == 1e-5);
  cr_expect(m->init_std == 0.02 && !m->tie_embeddings);
  cr_expect(m->layers[0] == MIXER(full) && m->layers[1] == MIXER(full));
  for (int k = 0; k < at_mixer_count(); k++)
    cr_expect(MIXER_COMMON(m, k)->head_dim == 32, "head_dim of %s resolved", at_mixer_name(k));
  cr_expect(MIXER_COMMON(m, MIXER(full))->position == AT_POS_ROPE, "inherit resolves to rope");
  cr_expect(MIXER_COMMON(m, MIXER(kda))->position == AT_POS_NOPE);
  const at_lin_mixer_opts *kda = LIN(m, MIXER(kda));
  cr_expect(kda->chunk_size == 0 && kda->short_conv == 1 && kda->conv_size == 4);
  cr_expect(at_lin_auto_chunk(32) == 16 && at_lin_auto_chunk(64) == 32 && at_lin_auto_chunk(128) == 64);
  cr_expect(kda->output_gate == AT_GATE_SIGMOID && kda->decay_gate == AT_DECAY_UNBOUNDED);
  cr_expect(kda->lower_bound == -5.0 && kda->allow_neg_eigval == 0 && kda->expand_v == 1);
  cr_expect(get_opt(m, MIXER(gdn), "output_gate") == AT_GATE_SWISH && get_opt(m, MIXER(gdn), "expand_v") == 2);
  cr_expect(get_opt(m, MIXER(deltanet), "output_gate") == AT_GATE_NONE);
  cr_expect(get_opt(m, MIXER(mamba2), "d_state") == 16 && get_opt(m, MIXER(mamba2), "expand") == 2);
  /* derived values of a mixer the layers use: kv_rank 4 d_h, rope_dim d_h / 2 */
  at_model_cfg used = *m;
  used.layers[0] = MIXER(mla), used.layers[1] = MIXER(dsa);
  at_mixer_kind bad;
  const char *key;
  cr_assert(at_model_cfg_resolve(&used, &bad, &key) == AT_OK, "%s", at_errmsg());
  const at_mla_opts *mla = MLA(&used, MIXER(mla));
  cr_expect(mla->kv_rank == 128 && mla->q_rank == 0 && mla->rope_dim == 16, "4 d_h and d_h / 2");
  const at_mla_opts *dsa = MLA(&used, MIXER(dsa));
  cr_expect(dsa->index_heads == 4 && dsa->index_dim == 16 && dsa->topk == 32);
  const at_train_cfg *t = &r->train;
  cr_expect(t->steps == 1000 && t->optim.total_steps == 1000 && t->batch_size == 32);
  cr_expect(t->optim.kind == AT_OPT_ADAMW && t->optim.lr == 1e-3);
  cr_expect(t->optim.beta1 == 0.9 && t->optim.beta2 == 0.95 && t->optim.eps == 1e-8);
  cr_expect(t->optim.weight_decay == 0.1 && t->optim.grad_clip == 1.0 && t->optim.schedule == AT_SCHED_COSINE);
  cr_expect(t->optim.warmup_steps == 0 && t->optim.min_lr_ratio == 0.0 && t->optim.decay_frac == 0.2);
  cr_expect(t->eval_every == 100 && t->eval_examples == 0 && t->checkpoint_every == 0);
  cr_expect(t->log_every == 10 && t->threads == 0 && t->max_bad_steps == 5 && t->n_stages == 0);
  at_experiment_free(e);
}

Test(config, runs_deep_merge_and_derived_values) {
  at_experiment *e = load_ok("hybrid.yaml");
  cr_expect_str_eq(e->report_metric, "eval_loss");
  cr_assert_eq(e->n_runs, 12);
  /* kda_mla: the shared pattern repeated to 4 layers, shared kda options */
  const at_model_cfg *m = &e->runs[0].model;
  const at_mixer_kind pat[] = {MIXER(kda), MIXER(kda), MIXER(kda), MIXER(mla)};
  cr_expect(m->n_layers == 4);
  for (int i = 0; i < 4; i++) cr_expect(m->layers[i] == pat[i], "layer %d", i);
  cr_expect(m->n_heads == 4 && m->n_kv_heads == 2);
  const at_lin_mixer_opts *kda = LIN(m, MIXER(kda));
  cr_expect(kda->chunk_size == 32 && kda->decay_gate == AT_DECAY_BOUNDED && kda->lower_bound == -4.5);
  cr_expect(kda->short_conv == 1 && kda->common.head_dim == 16);
  cr_expect(MIXER_COMMON(m, MIXER(mla))->position == AT_POS_NOPE && get_opt(m, MIXER(mla), "rope_dim") == 0,
            "nope: no decoupled RoPE");
  cr_expect(get_opt(m, MIXER(mla), "kv_rank") == 64);
  /* kda_wide overrides one kda key; the others stay from the shared section */
  kda = LIN(&e->runs[4].model, MIXER(kda));
  cr_expect_str_eq(e->runs[4].base_name, "kda_wide");
  cr_expect(kda->short_conv == 0 && kda->chunk_size == 32 && kda->decay_gate == AT_DECAY_BOUNDED);
  /* dsa replaces the layer list (lists replace, maps merge) and has stages */
  const at_run_cfg *r = &e->runs[9]; /* dsa, lr 1e-3, expand_v 2 */
  cr_expect_str_eq(r->run_id, "dsa__lr=0.001__expand_v=2");
  m = &r->model;
  cr_expect(m->layers[0] == MIXER(full) && m->layers[1] == MIXER(dsa) && m->layers[2] == MIXER(gdn) &&
            m->layers[3] == MIXER(mamba2));
  cr_expect(get_opt(m, MIXER(dsa), "topk") == 16 && get_opt(m, MIXER(dsa), "index_heads") == 2);
  cr_expect(get_opt(m, MIXER(dsa), "index_dim") == 16, "default kept");
  cr_expect(get_opt(m, MIXER(dsa), "rope_dim") == 8 && MIXER_COMMON(m, MIXER(dsa))->position == AT_POS_ROPE);
  cr_expect(get_opt(m, MIXER(gdn), "output_gate") == AT_GATE_SIGMOID);
  cr_expect(get_opt(m, MIXER(kda), "expand_v") == 2 && get_opt(m, MIXER(kda), "chunk_size") == 32);
  const at_train_cfg *t = &r->train;
  cr_assert_eq(t->n_stages, 2);
  cr_expect_str_eq(t->stages[0].name, "warmup");
  cr_expect(t->stages[0].steps == 100 && t->stages[0].lr == 1e-3 && t->stages[0].trainable == AT_TRAINABLE_INDEXER);
  cr_expect(t->stages[0].indexer_loss == 1 && t->stages[0].sparse == 0);
  cr_expect_str_eq(t->stages[1].name, "sparse");
  cr_expect(t->stages[1].steps == 200 && t->stages[1].sparse == 1 && t->stages[1].trainable == AT_TRAINABLE_ALL);
  cr_expect(t->stages[1].lr == 1e-3, "a stage without lr takes the run's (swept) lr");
  cr_expect(e->runs[11].train.stages[1].lr == 2e-3);
  cr_expect(e->runs[0].train.n_stages == 0, "stages are the dsa run's only");
  cr_expect(t->optim.schedule == AT_SCHED_WSD && t->optim.decay_frac == 0.25 && t->eval_examples == 200);
  cr_expect(r->data.query_contiguous == 1 && r->data.num_kv_pairs == 8 && r->data.seq_len == 128);
  cr_expect(r->seed == 3 && r->data.seed == 3);
  at_experiment_free(e);
}

Test(config, runs_change_the_task) {
  at_experiment *e = load_ok("runs_tasks.yaml");
  cr_assert_eq(e->n_runs, 2);
  const at_run_cfg *a = &e->runs[0], *b = &e->runs[1];
  cr_expect(a->data.kind == AT_TASK_MQAR && a->data.num_kv_pairs == 8 && a->data.seq_len == 64);
  cr_expect(b->data.kind == AT_TASK_PALINDROME && b->data.palindrome_len == 20 && b->data.seq_len == 64);
  cr_expect(a->data.train_examples == 500 && b->data.test_examples == 100);
  cr_expect(a->seed == 11 && a->data.seed == 11 && b->seed == 12 && b->data.seed == 12, "a run's seed");
  cr_expect(b->train.optim.kind == AT_OPT_SGD && b->train.optim.momentum == 0.8 && b->train.optim.nesterov);
  cr_expect(a->train.optim.kind == AT_OPT_ADAMW);
  cr_expect(a->model.d_model == 32 && a->model.mlp_hidden == 96, "mlp_hidden follows d_model");
  cr_expect(strstr(a->yaml, "num_kv_pairs: 8") && !strstr(a->yaml, "palindrome_len"),
            "the resolved data section holds the task's keys only");
  cr_expect(strstr(b->yaml, "palindrome_len: 20") && !strstr(b->yaml, "num_kv_pairs"));
  at_experiment_free(e);
}

Test(config, sweep_expansion) {
  at_experiment *e = load_ok("sweep_seed.yaml");
  cr_assert_eq(e->n_runs, 6, "3 seeds x 2 layer lists");
  for (int i = 0; i < 6; i++) {
    const at_run_cfg *r = &e->runs[i];
    uint64_t seed = (uint64_t)(1 + i / 2);
    cr_expect(r->seed == seed && r->data.seed == seed, "run %d seed", i);
    cr_expect(r->model.layers[0] == (i % 2 ? MIXER(kda) : MIXER(full)), "the last key varies fastest");
    cr_expect(r->train.steps == 10);
  }
  cr_expect_str_eq(e->runs[3].run_id, "seeds__seed=2__layers=kda,full");
  cr_expect_str_eq(e->runs[3].sweep_point, "seed=2 layers=kda,full");
  cr_expect_str_eq(e->runs[3].name, "seeds seed=2 layers=kda,full");
  cr_expect(e->seed_key == 0 && !e->sweep_best[0] && e->sweep_best[1],
            "seeds are averaged, never best-over; the other keys are best-over by default");
  at_experiment_free(e);

  e = load_ok("sweep_same_leaf.yaml");
  cr_assert_eq(e->n_runs, 2);
  cr_expect_str_eq(e->runs[1].run_id, "leaves__kda.chunk_size=32__gdn.chunk_size=64__lr=0.001");
  cr_expect_str_eq(e->runs[1].name, "leaves kda.chunk_size=32 gdn.chunk_size=64 lr=0.001");
  cr_expect(get_opt(&e->runs[1].model, MIXER(kda), "chunk_size") == 32 && get_opt(&e->runs[1].model, MIXER(gdn), "chunk_size") == 64);
  at_experiment_free(e);

  e = load_ok("hybrid.yaml");
  cr_assert_eq(e->n_runs, 12, "3 runs x 2 lr x 2 expand_v");
  cr_expect_str_eq(e->runs[0].run_id, "kda_mla__lr=0.001__expand_v=1");
  cr_expect_str_eq(e->runs[1].run_id, "kda_mla__lr=0.001__expand_v=2");
  cr_expect_str_eq(e->runs[2].run_id, "kda_mla__lr=0.002__expand_v=1");
  cr_expect_str_eq(e->runs[7].name, "kda_wide lr=0.002 expand_v=2");
  for (int i = 0; i < 12; i++) {
    cr_expect(e->runs[i].train.optim.lr == (i % 4 < 2 ? 1e-3 : 2e-3), "run %d lr", i);
    cr_expect(get_opt(&e->runs[i].model, MIXER(kda), "expand_v") == 1 + i % 2, "run %d expand_v", i);
  }
  at_experiment_free(e);
}

Test(config, set_overrides) {
  const char *sets[] = {"model.d_model=128", "model.layers=[kda, full]", "train.steps=500",
                        "model.attention.kda.chunk_size=16", "steps=700", "seed=9",
                        "model.attention={full: {window: 8}}"};
  at_experiment *e = load_ok_sets("example.yaml", sets, AT_ARRAY_LEN(sets));
  cr_assert_eq(e->n_runs, 4);
  const at_run_cfg *full = &e->runs[0], *swa = &e->runs[2];
  cr_expect(full->model.d_model == 128 && swa->model.d_model == 128);
  cr_expect(full->model.layers[0] == MIXER(kda) && full->model.layers[1] == MIXER(full));
  cr_expect(swa->model.layers[0] == MIXER(full), "a run's own setting wins over --set");
  cr_expect(get_opt(&full->model, MIXER(kda), "chunk_size") == 16);
  cr_expect(full->train.steps == 700, "a bare key is a train key; later --set wins");
  cr_expect(full->seed == 9 && full->data.seed == 9);
  cr_expect(get_opt(&full->model, MIXER(full), "window") == 8, "--set merges a mapping");
  cr_expect(get_opt(&swa->model, MIXER(full), "window") == 16);
  cr_expect(full->train.optim.lr == 1e-3, "the sweep still applies");
  at_experiment_free(e);

  const char *exp_name[] = {"experiment=renamed", "report.metric=eval_loss"};
  e = load_ok_sets("minimal.yaml", exp_name, 2);
  cr_expect_str_eq(e->name, "renamed");
  cr_expect_str_eq(e->runs[0].name, "renamed");
  cr_expect_str_eq(e->report_metric, "eval_loss");
  at_experiment_free(e);
}

/* ---- errors, one test per class --------------------------------------------------- */

Test(config_errors, yaml_syntax) {
  expect_file_error("bad_syntax.yaml", 2, 41, "YAML syntax error: did not find expected ',' or ']' "
                                              "(while parsing a flow sequence at line 2 column 30)");
  expect_file_error("bad_indent.yaml", 4, 2, "YAML syntax error: did not find expected key");
  expect_file_error("bad_two_documents.yaml", 3, 1, "a second YAML document");
  expect_file_error("bad_empty.yaml", 1, 1, "the file is empty");
  expect_file_error("bad_alias_loop.yaml", 2, 23, "alias *m is inside the value it names");
}

Test(config_errors, unknown_key_with_suggestion) {
  expect_file_error("bad_unknown_key.yaml", 4, 3, "unknown key 'n_head' in model; did you mean 'n_heads'?");
  expect_file_error("bad_unknown_key_far.yaml", 2, 20, "unknown key 'learning_rate' in train (valid keys: steps,");
  expect_file_error("bad_misplaced_key.yaml", 2, 1, "unknown key 'threads' in the experiment file; it belongs in train");
  expect_file_error("bad_unknown_task.yaml", 2, 14, "data.task: unknown value 'palindrom'; did you mean 'palindrome'?");
}

Test(config_errors, duplicate_key) {
  expect_file_error("bad_duplicate_key.yaml", 5, 3, "duplicate key 'lr' in train (first given at line 3)");
}

Test(config_errors, wrong_type) {
  expect_file_error("bad_type_string.yaml", 2, 13, "train.lr: expected a number, got the string \"0.001\"");
  expect_file_error("bad_type_list.yaml", 2, 8, "model: expected a mapping, got a list");
  expect_file_error("bad_type_float_for_int.yaml", 2, 18, "model.d_model: expected an integer, got '64.5'");
  expect_file_error("bad_type_bool.yaml", 2, 25, "model.tie_embeddings: expected true or false, got 'yes'");
}

Test(config_errors, out_of_range) {
  expect_file_error("bad_range_size.yaml", 2, 17, "data.seq_len must be between 1 and");
  expect_file_error("bad_range_lr.yaml", 2, 13, "train.lr must be > 0, got 0");
  expect_file_error("bad_range_beta.yaml", 2, 16, "train.beta2 must be in [0, 1), got 1.0");
  expect_file_error("bad_best_over_seed.yaml", 3, 26, "seeds are averaged (mean and standard deviation), never picked");
  expect_set_error("minimal.yaml", "train.threads=-1", "train.threads must be between 0 and 4096, got -1");
  expect_set_error("minimal.yaml", "model.attention.full.window=-1", "model.attention.full.window must be between 0");
  expect_set_error("minimal.yaml", "model.d_model=0", "model.d_model must be between 1 and 65536, got 0");
  expect_set_error("minimal.yaml", "train.beta1=-0.1", "train.beta1 must be in [0, 1)");
}

Test(config_errors, impossible_shapes) {
  expect_file_error("bad_shape_heads.yaml", 4, 12, "model.d_model 64 is not divisible by model.n_heads 3");
  expect_file_error("bad_shape_kv_heads.yaml", 2, 46, "model.n_heads 4 is not a multiple of model.n_kv_heads 3");
  expect_file_error("bad_shape_layers.yaml", 4, 11, "model.layers has 2 entries but model.n_layers is 3");
  expect_file_error("bad_head_dim.yaml", 5, 24, "mixer mamba2: expand * d_model = 128 is not divisible by head_dim 48");
  expect_set_error("minimal.yaml", "model.d_model=66", "mixer full: RoPE needs an even head_dim, got 33");
}

Test(config_errors, mixers) {
  expect_file_error("bad_unknown_mixer_near.yaml", 2, 18, "unknown mixer 'kdaa' in model.layers; did you mean 'kda'?");
  expect_file_error("bad_unknown_mixer.yaml", 2, 24, "unknown mixer 'gated_deltanet' in model.layers (mixers: full,");
  expect_file_error("bad_mixer_key.yaml", 5, 27, "key 'window' does not apply to mixer 'kda' (its keys: head_dim,");
  expect_set_error("minimal.yaml", "model.attention.kdaa={}", "unknown mixer 'kdaa' in model.attention; did you mean 'kda'?");
}

Test(config_errors, task_constraints) {
  /* the task's own check names the key; point at it (the data module may
   * blame num_kv_pairs or seq_len: accept either position) */
  at_experiment *e = NULL;
  at_status s = at_experiment_load(fixture("bad_task_constraint.yaml"), NULL, 0, &e);
  cr_expect(s == AT_E_CONFIG && e == NULL, "%s", at_errmsg());
  char p1[1200], p2[1200];
  snprintf(p1, sizeof p1, "%s:2:47: data.num_kv_pairs: ", fixture("bad_task_constraint.yaml"));
  snprintf(p2, sizeof p2, "%s:2:30: data.seq_len: ", fixture("bad_task_constraint.yaml"));
  cr_expect(!strncmp(at_errmsg(), p1, strlen(p1)) || !strncmp(at_errmsg(), p2, strlen(p2)), "%s", at_errmsg());
  /* keys of other tasks are refused */
  expect_file_error("bad_task_key.yaml", 4, 3, "key 'num_kv_pairs' does not apply to task 'palindrome'");
}

Test(config_errors, missing_data_file) {
  at_experiment *e = NULL;
  at_status s = at_experiment_load(fixture("bad_missing_text.yaml"), NULL, 0, &e);
  cr_expect(e == NULL && (s == AT_E_IO || s == AT_E_CONFIG), "%s", at_errmsg());
  char prefix[1200];
  snprintf(prefix, sizeof prefix, "%s:4:9: data.path: ", fixture("bad_missing_text.yaml"));
  cr_expect(!strncmp(at_errmsg(), prefix, strlen(prefix)), "%s", at_errmsg());
  cr_expect(strstr(at_errmsg(), "/nonexistent/attnlab/corpus.txt") != NULL, "%s", at_errmsg());
}

Test(config_errors, missing_experiment_file) {
  at_experiment *e = NULL;
  at_status s = at_experiment_load(fixture("no_such_file.yaml"), NULL, 0, &e);
  cr_expect(s == AT_E_IO && e == NULL);
  cr_expect(strstr(at_errmsg(), "no_such_file.yaml: cannot open") != NULL, "%s", at_errmsg());
  s = at_experiment_load(fixture(""), NULL, 0, &e); /* a directory */
  cr_expect(s == AT_E_IO && e == NULL, "%s", at_errmsg());
  cr_expect(at_experiment_load(NULL, NULL, 0, &e) == AT_E_ARG);
}

Test(config_errors, top_level) {
  expect_file_error("bad_missing_experiment.yaml", 2, 1, "missing key 'experiment'");
  expect_file_error("bad_experiment_name.yaml", 1, 13, "experiment: 'my experiment/1' is not a file-safe name");
}

Test(config_errors, runs) {
  expect_file_error("bad_run_override.yaml", 6, 13, "unknown key 'd_modle' in model; did you mean 'd_model'?");
  expect_file_error("bad_run_shape.yaml", 6, 22, "model.d_model 64 is not divisible by model.n_heads 5 (in run 'odd')");
  expect_file_error("bad_run_duplicate.yaml", 4, 11, "run name 'KDA' repeats runs[0]");
  expect_file_error("bad_run_no_name.yaml", 4, 5, "runs[1] needs a 'name'");
}

Test(config_errors, sweep) {
  expect_file_error("bad_sweep_key.yaml", 4, 3, "unknown key 'd_modle' in model; did you mean 'd_model'?");
  expect_file_error("bad_sweep_value.yaml", 2, 22, "train.lr must be > 0, got -3.0e-3");
  expect_file_error("bad_sweep_repeat.yaml", 2, 22, "sweep lr repeats the value 0.001");
}

Test(config_errors, stages) {
  expect_file_error("bad_stages_sum.yaml", 6, 5, "train.stages take 900 steps in all but train.steps is 1000");
  expect_file_error("bad_stages_no_dsa.yaml", 6, 7, "stage 'sparse' asks for sparse, which no mixer of model.layers supports");
  expect_file_error("bad_stages_key.yaml", 5, 45, "train.stages[0].trainable: unknown value 'indexers'; did you mean 'indexer'?");
}

Test(config_errors, set_arguments) {
  expect_set_error("example.yaml", "model.d_modle=3", "unknown key 'd_modle' in model; did you mean 'd_model'?");
  expect_set_error("example.yaml", "model.layers=[kda,full", "YAML syntax error: did not find expected ',' or ']'");
  expect_set_error("example.yaml", "model.layers", "expected section.key=value");
  expect_set_error("example.yaml", "model.layers=[kda,fulll]", "unknown mixer 'fulll' in model.layers; did you mean 'full'?");
  expect_set_error("example.yaml", "lr=abc", "train.lr: expected a number, got 'abc'");
  expect_set_error("example.yaml", "model.d_model=", "model.d_model: expected an integer, got nothing");
  expect_set_error("example.yaml", "runs=[]", "'runs' can only be given in the file");
  expect_set_error("example.yaml", "model..d_model=3", "has an empty part");
  /* found only once the runs are resolved: still reported at the --set */
  expect_set_error("example.yaml", "model.n_heads=3", "model.d_model 64 is not divisible by model.n_heads 3 (in run 'full lr=0.001')");
  expect_set_error("example.yaml", "sweep.lr=[]", "sweep lr: expected a non-empty list of values");
  expect_set_error("example.yaml", "sweep.model.d_modl=[32]", "unknown key 'd_modl' in model; did you mean 'd_model'?");
}

/* The grid can be replaced from the command line, key by key. */
Test(config, set_replaces_sweep_keys) {
  const char *one[] = {"sweep.lr=[3.0e-3]"};
  at_experiment *e = load_ok_sets("example.yaml", one, 1);
  cr_expect(e->n_runs == 2 && e->n_sweep == 1, "%d runs", e->n_runs);
  cr_expect(e->runs[0].train.optim.lr == 3e-3);
  at_experiment_free(e);
  const char *grid[] = {"sweep.lr=[1.0e-3, 2.0e-3, 4.0e-3]", "sweep.seed=[1, 2]"};
  e = load_ok_sets("example.yaml", grid, 2);
  cr_expect(e->n_runs == 12 && e->n_sweep == 2, "%d runs", e->n_runs);
  cr_expect(e->runs[11].seed == 2 && e->runs[11].train.optim.lr == 4e-3);
  at_experiment_free(e);
  const char *fresh[] = {"sweep={model.d_model: [32, 64]}"};
  e = load_ok_sets("minimal.yaml", fresh, 1);
  cr_expect(e->n_runs == 2 && e->runs[1].model.d_model == 64);
  at_experiment_free(e);
}

Test(config_errors, first_error_in_file_order) {
  /* line 2 (n_heads) is only found when the run is resolved; line 3 and
   * line 5 are wrong whatever the merge: the earliest of those is reported */
  expect_file_error("bad_first_error.yaml", 3, 16, "train.steps: expected an integer, got 'ten'");
}

/* ---- resolved YAML ---------------------------------------------------------------- */

static void expect_same_run(const at_run_cfg *a, const at_run_cfg *b) {
#define EQ(f) cr_expect(a->f == b->f, "%s: %s differs", a->run_id, #f)
#define SEQ(f) cr_expect(!strcmp(a->f, b->f), "%s: %s differs ('%s' vs '%s')", a->run_id, #f, a->f, b->f)
  SEQ(name);
  SEQ(run_id);
  SEQ(sweep_point);
  SEQ(base_name);
  EQ(seed);
  EQ(data.kind); EQ(data.seed); EQ(data.vocab_size); EQ(data.seq_len); EQ(data.train_examples);
  EQ(data.test_examples); EQ(data.num_kv_pairs); EQ(data.power_a); EQ(data.random_non_queries);
  EQ(data.query_contiguous); EQ(data.palindrome_len); EQ(data.num_stacks); EQ(data.num_symbols);
  EQ(data.num_tokens_to_copy); EQ(data.num_depth_buckets); SEQ(data.path); EQ(data.val_fraction);
  SEQ(data.cache);
  EQ(model.vocab_size); EQ(model.max_seq_len); EQ(model.d_model); EQ(model.n_layers); EQ(model.n_heads);
  EQ(model.n_kv_heads); EQ(model.mlp); EQ(model.mlp_hidden); EQ(model.position); EQ(model.rope_theta);
  EQ(model.norm_eps); EQ(model.init_std); EQ(model.tie_embeddings);
  for (int i = 0; i < a->model.n_layers; i++) EQ(model.layers[i]);
  for (int k = 0; k < at_mixer_count(); k++) { /* every option of the mixers the run uses */
    const at_mixer_impl *impl = at_mixer_impl_of(k);
    if (!at_mixer_used(&a->model, k)) continue;
    for (int i = 0; i < impl->n_opts; i++) {
      double x = get_opt(&a->model, k, impl->opts[i].key), y = get_opt(&b->model, k, impl->opts[i].key);
      cr_expect(x == y, "%s: %s.%s %g vs %g", a->run_id, impl->name, impl->opts[i].key, x, y);
    }
  }
  EQ(train.optim.kind); EQ(train.optim.lr); EQ(train.optim.beta1); EQ(train.optim.beta2);
  EQ(train.optim.eps); EQ(train.optim.momentum); EQ(train.optim.nesterov); EQ(train.optim.weight_decay);
  EQ(train.optim.grad_clip); EQ(train.optim.schedule); EQ(train.optim.warmup_steps);
  EQ(train.optim.total_steps); EQ(train.optim.min_lr_ratio); EQ(train.optim.decay_frac);
  EQ(train.steps); EQ(train.batch_size); EQ(train.eval_every); EQ(train.eval_examples);
  EQ(train.checkpoint_every); EQ(train.log_every); EQ(train.threads); EQ(train.max_bad_steps);
  EQ(train.n_stages);
  for (int i = 0; i < a->train.n_stages; i++) {
    SEQ(train.stages[i].name); EQ(train.stages[i].steps); EQ(train.stages[i].lr);
    EQ(train.stages[i].trainable); EQ(train.stages[i].sparse); EQ(train.stages[i].indexer_loss);
  }
  SEQ(yaml);
#undef EQ
#undef SEQ
}

static void round_trip(const char *name, const char *const *sets, int n_sets, int expect_runs) {
  at_experiment *e = load_ok_sets(name, sets, n_sets);
  cr_assert_eq(e->n_runs, expect_runs, "%s", name);
  for (int i = 0; i < e->n_runs; i++) {
    char path[] = "/tmp/attnlab_resolved_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    size_t len = strlen(e->runs[i].yaml);
    cr_assert(write(fd, e->runs[i].yaml, len) == (ssize_t)len);
    close(fd);
    at_experiment *back = NULL;
    at_status s = at_experiment_load(path, NULL, 0, &back);
    unlink(path);
    cr_assert(s == AT_OK, "%s run %d: the resolved YAML does not load: %s\n%s", name, i, at_errmsg(),
              e->runs[i].yaml);
    cr_assert_eq(back->n_runs, 1);
    cr_expect_str_eq(back->name, e->name);
    cr_expect_str_eq(back->report_metric, e->report_metric);
    expect_same_run(&e->runs[i], &back->runs[0]);
    at_experiment_free(back);
  }
  at_experiment_free(e);
}

Test(config, resolved_yaml_round_trip) {
  round_trip("example.yaml", NULL, 0, 4);
  round_trip("hybrid.yaml", NULL, 0, 12);
  round_trip("runs_tasks.yaml", NULL, 0, 2);
  round_trip("sweep_seed.yaml", NULL, 0, 6);
  round_trip("sweep_same_leaf.yaml", NULL, 0, 2);
  round_trip("minimal.yaml", NULL, 0, 1);
  char set[1100];
  /* any file of a few kilobytes serves as a byte corpus */
  snprintf(set, sizeof set, "data.path=%s/tests/test_config.c", AT_SOURCE_DIR);
  const char *sets[] = {set, "description=\"quotes \\\" and \\\\ and a\\ttab\"", "seed=123456789012"};
  round_trip("text.yaml", sets, 3, 1);
}

Test(config, resolved_yaml_content) {
  at_experiment *e = load_ok("hybrid.yaml");
  const char *y = e->runs[9].yaml;
  cr_expect(strstr(y, "  layers: [full, dsa, gdn, mamba2]\n") != NULL, "%s", y);
  cr_expect(strstr(y, "    dsa: {position: rope, head_dim: 16, kv_rank: 64, q_rank: 0, rope_dim: 8, "
                      "index_heads: 2, index_dim: 16, topk: 16}\n") != NULL, "%s", y);
  cr_expect(strstr(y, "    kda: {") != NULL, "mixers the file mentions are written even if unused");
  cr_expect(strstr(y, "    deltanet:") == NULL, "unmentioned, unused mixers are not");
  cr_expect(strstr(y, "  norm_eps: 1.0e-05\n") != NULL, "reals keep a '.' for YAML 1.1 readers: %s", y);
  cr_expect(strstr(y, "    - {name: warmup, steps: 100, lr: 0.001, trainable: indexer, sparse: false, "
                      "indexer_loss: true}\n") != NULL, "%s", y);
  cr_expect(strstr(y, "runs:\n  - name: dsa\nsweep:\n  lr: [1.0e-3]\n  model.attention.kda.expand_v: [2]\n"),
            "%s", y);
  at_experiment_free(e);
}

/* ---- names -------------------------------------------------------------------------- */

Test(config, mixer_names) {
  static const char *names[] = {"full", "deltanet", "gdn", "kda", "mamba2", "mla", "dsa"};
  cr_assert(at_mixer_count() >= AT_ARRAY_LEN(names));
  for (int k = 0; k < AT_ARRAY_LEN(names); k++) {
    cr_expect_str_eq(at_mixer_name((at_mixer_kind)k), names[k]);
    cr_expect_eq(at_mixer_from_name(names[k]), k);
  }
  cr_expect_eq(at_mixer_from_name("kdaa"), -1);
  cr_expect_eq(at_mixer_from_name("FULL"), -1);
  cr_expect_eq(at_mixer_from_name(""), -1);
  cr_expect_eq(at_mixer_from_name(NULL), -1);
  cr_expect_str_eq(at_mixer_name(at_mixer_count()), "unknown");
  cr_expect_str_eq(at_mixer_name(-1), "unknown");
  at_model_cfg m;
  at_model_cfg_defaults(&m);
  cr_expect(MIXER_COMMON(&m, MIXER(full))->head_dim == 0, "head_dim 0 means d_model / n_heads");
  cr_expect(MIXER_COMMON(&m, MIXER(full))->position == AT_POS_INHERIT &&
            MIXER_COMMON(&m, MIXER(kda))->position == AT_POS_NOPE);
}

/* ---- robustness: every truncation and many corruptions of a good file --------------- */

Test(config, never_crashes_on_damaged_files) {
  FILE *f = fopen(fixture("hybrid.yaml"), "rb");
  cr_assert(f);
  char text[4096];
  size_t len = fread(text, 1, sizeof text, f);
  fclose(f);
  char path[] = "/tmp/attnlab_damaged_XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0);
  close(fd);
  uint64_t state = 12345;
  int ok = 0, refused = 0;
  size_t cuts = len / 3 + 1;
  for (size_t trial = 0; trial < cuts + 300; trial++) {
    char buf[4096];
    size_t n = len;
    memcpy(buf, text, len);
    if (trial < cuts) {
      n = trial * 3; /* a truncation */
    } else {         /* a corrupted byte */
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      static const char junk[] = ":-[]{}#&*!|>'\"%@`, \n\t0aZ.";
      buf[(state >> 33) % len] = junk[(state >> 17) % (sizeof junk - 1)];
    }
    FILE *w = fopen(path, "wb");
    cr_assert(w);
    fwrite(buf, 1, n, w);
    fclose(w);
    at_experiment *e = NULL;
    at_status s = at_experiment_load(path, NULL, 0, &e);
    if (s == AT_OK) {
      ok++;
      cr_expect(e && e->n_runs > 0);
      at_experiment_free(e);
    } else {
      refused++;
      cr_expect(e == NULL && at_errmsg()[0] != '\0');
      cr_expect(s == AT_E_CONFIG || s == AT_E_IO, "status %d: %s", s, at_errmsg());
      cr_expect(strncmp(at_errmsg(), path, strlen(path)) == 0, "every refusal is located: %s", at_errmsg());
    }
  }
  unlink(path);
  cr_expect(ok > 0 && refused > 0, "ok %d refused %d", ok, refused);
}

/* ---- limits on hostile text (each refusal in well under a second) --------------------- */

/* Loads `text` from a temporary file; expects line:col and `words`. */
static void expect_text_error(const char *text, size_t len, int line, int col, const char *words) {
  char path[] = "/tmp/attnlab_hostile_XXXXXX";
  int fd = mkstemp(path);
  cr_assert(fd >= 0 && write(fd, text, len) == (ssize_t)len);
  close(fd);
  at_experiment *e = NULL;
  at_status s = at_experiment_load(path, NULL, 0, &e);
  char prefix[200];
  if (line) snprintf(prefix, sizeof prefix, "%s:%d:%d: ", path, line, col);
  else snprintf(prefix, sizeof prefix, "%s: ", path);
  expect_msg(s, AT_E_CONFIG, prefix, words);
  cr_expect(e == NULL);
  unlink(path);
}

static char *repeat(const char *head, const char *unit, int n, const char *tail, size_t *len) {
  size_t h = strlen(head), u = strlen(unit), t = strlen(tail);
  char *s = malloc(h + u * (size_t)n + t + 1);
  cr_assert(s);
  memcpy(s, head, h);
  for (int i = 0; i < n; i++) memcpy(s + h + u * (size_t)i, unit, u);
  memcpy(s + h + u * (size_t)n, tail, t + 1);
  *len = h + u * (size_t)n + t;
  return s;
}

Test(config_errors, hostile_text_limits) {
  size_t n;
  char *s = repeat("", "[", 1 << 20, "", &n); /* libyaml's own loader needs minutes for this */
  expect_text_error(s, n, 1, 25, "nesting deeper than 24 levels");
  free(s);
  s = repeat("experiment: x\nsweep: {lr: [", "1,", 5000, "1]}\n", &n);
  expect_text_error(s, n, 2, 13, "a list of more than 4096 items");
  free(s);
  s = repeat("experiment: x\nmodel: {", "a: 1, ", 5000, "b: 2}\n", &n);
  for (size_t i = 0, k = 0; i + 5 < n; i++) /* distinct keys */
    if (s[i] == 'a' && s[i + 1] == ':') s[i] = (char)('a' + k++ % 26);
  expect_text_error(s, n, 2, 8, "a mapping of more than 4096 keys");
  free(s);
  static const char laughs[] =
      "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
      "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
      "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n";
  expect_text_error(laughs, strlen(laughs), 5, 29, "more than 100000 values (aliases expanding?)");
  char *big = repeat("experiment: x\ndescription: &d \"", "y", 1 << 20, "\"\nz: [*d, *d, *d, *d]\n", &n);
  expect_text_error(big, n, 0, 0, "larger than 1024 KiB"); /* the file itself */
  free(big);
  big = repeat("experiment: x\ndescription: &d \"", "y", 900000, "\"\nz: [*d, *d, *d, *d, *d]\n", &n);
  expect_text_error(big, n, 3, 17, "more than 4 MiB of text in values");
  free(big);
  static const char twice[] = "experiment: x\na: &n 1\nb: &n 2\n", undefined[] = "experiment: x\na: *nowhere\n";
  expect_text_error(twice, strlen(twice), 3, 4, "anchor &n is defined twice");
  expect_text_error(undefined, strlen(undefined), 2, 4, "alias *nowhere names no anchor");
  /* --set values are limited too */
  char *arg = repeat("lr=", "1", 70000, "", &n);
  const char *sets[] = {arg};
  at_experiment *e = NULL;
  at_status st = at_experiment_load(fixture("minimal.yaml"), sets, 1, &e);
  cr_expect(st == AT_E_CONFIG && e == NULL && strstr(at_errmsg(), "longer than 64 KiB"), "%s", at_errmsg());
  free(arg);
  arg = repeat("model.layers=", "[", 60000, "", &n);
  sets[0] = arg;
  st = at_experiment_load(fixture("minimal.yaml"), sets, 1, &e);
  cr_expect(st == AT_E_CONFIG && strstr(at_errmsg(), "nesting deeper than 24"), "%s", at_errmsg());
  free(arg);
}
