/* Evaluation beyond the training run's test split, and the tools built on
 * checkpoints: data.eval test sets (loading, resolution, refusals with
 * their positions, the resolved YAML reading back the same), their curves
 * in results.h5 and columns in the table and table.csv, train.sample,
 * `train --eval-only` on finished runs, ./generate on a checkpoint
 * (synthetic task example, token prompts, a text model's bytes) and
 * ./export (the safetensors layout, fla's names, the logits it records,
 * refusals). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "experiments/config.h"
#include "experiments/restore.h"
#include "experiments/results.h"
#include "experiments/runner.h"
#include "testing.h"

static char dir[256];

static void remove_dir(void) { at_test_rmdir(dir); }

TestSuite(eval_sets, .fini = remove_dir);
TestSuite(tools, .fini = remove_dir);

static void make_dir(void) {
  snprintf(dir, sizeof dir, "/tmp/attnlab_eval_XXXXXX");
  cr_assert(mkdtemp(dir) != NULL);
}

static const char *write_file(const char *name, const char *text) {
  static char path[4][512];
  static int slot;
  char *p = path[slot++ % 4];
  snprintf(p, 512, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  cr_assert(f);
  fputs(text, f);
  fclose(f);
  return p;
}

/* Runs a shell command, its stdout (and stderr with err) into buf; the exit status. */
static int run_cmd(const char *cmd, char *buf, size_t n) {
  FILE *p = popen(cmd, "r");
  cr_assert(p);
  size_t got = fread(buf, 1, n - 1, p);
  buf[got] = 0;
  int rc = pclose(p);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static at_experiment *load(const char *yaml, at_status *st) {
  at_experiment *e = NULL;
  *st = at_experiment_load(write_file("exp.yaml", yaml), NULL, 0, &e);
  return e;
}

/* ---- configuration -------------------------------------------------------------- */

#define TINY_DATA "data: {task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 2, train_examples: 2000,\n"

Test(eval_sets, resolve_and_read_back) {
  make_dir();
  at_status st;
  at_experiment *e = load("experiment: x\n" TINY_DATA
                          "       test_examples: 64, eval: [{seq_len: 48, num_kv_pairs: 4, name: 1.5x}, {num_kv_pairs: 3}]}\n"
                          "model: {d_model: 32, n_heads: 2, position: rope}\n",
                          &st);
  cr_assert(st == AT_OK, "%s", at_errmsg());
  const at_run_cfg *rc = &e->runs[0];
  cr_assert_eq(rc->n_evals, 2);
  cr_expect_str_eq(rc->evals[0].name, "1.5x");
  cr_expect(rc->evals[0].data.seq_len == 48 && rc->evals[0].data.num_kv_pairs == 4);
  cr_expect(rc->evals[0].data.vocab_size == 64 && rc->evals[0].data.test_examples == 64, "the rest is the run's");
  cr_expect_str_eq(rc->evals[1].name, "num_kv_pairs=3", "named by its keys");
  cr_expect(rc->evals[1].data.seq_len == 32 && rc->evals[1].data.num_kv_pairs == 3);
  /* the resolved YAML (checkpoints carry it) reads back to the same sets */
  at_experiment *back = NULL;
  cr_assert(at_experiment_load_text("resolved", rc->yaml, &back) == AT_OK, "%s\n%s", at_errmsg(), rc->yaml);
  cr_assert_eq(back->runs[0].n_evals, 2);
  for (int i = 0; i < 2; i++) {
    cr_expect_str_eq(back->runs[0].evals[i].name, rc->evals[i].name);
    cr_expect(!memcmp(&back->runs[0].evals[i].data, &rc->evals[i].data, sizeof rc->evals[i].data));
  }
  cr_expect_str_eq(back->runs[0].yaml, rc->yaml);
  at_experiment_free(back);
  at_experiment_free(e);
}

/* The error must be at file:line:col and contain `words`. */
static void expect_error(const char *yaml, int line, int col, const char *words) {
  at_status st;
  at_experiment *e = load(yaml, &st);
  cr_expect(e == NULL && st == AT_E_CONFIG, "accepted: %s", yaml);
  char prefix[700];
  snprintf(prefix, sizeof prefix, "%s/exp.yaml:%d:%d: ", dir, line, col);
  cr_expect(!strncmp(at_errmsg(), prefix, strlen(prefix)) && strstr(at_errmsg(), words), "'%s' wants '%s' ... '%s'",
            at_errmsg(), prefix, words);
  at_experiment_free(e);
}

Test(eval_sets, refusals_point_at_the_key) {
  make_dir();
  expect_error("experiment: x\n" TINY_DATA "  eval: [{seq_len: 48, num_kv_pairs: 4}]}\nmodel: {position: learned}\n", 3, 20,
               "data.eval[0]: seq_len 48 exceeds the training length 32, and learned positions cannot extrapolate");
  expect_error("experiment: x\n" TINY_DATA "  eval: [{task: stack}]}\n", 3, 17, "a test set evaluates the run's task (mqar)");
  expect_error("experiment: x\n" TINY_DATA "  eval: [{seq_lne: 40}]}\n", 3, 11, "unknown key 'seq_lne' in data.eval[0]; did you mean 'seq_len'?");
  expect_error("experiment: x\n" TINY_DATA "  eval: [{num_stacks: 2}]}\n", 3, 11, "key 'num_stacks' does not apply to task 'mqar'");
  expect_error("experiment: x\n" TINY_DATA "  eval: [{vocab_size: 128, seq_len: 64}]}\n", 3, 23,
               "data.eval[0].vocab_size 128 exceeds the model's vocabulary (data.vocab_size 64)");
  expect_error("experiment: x\n" TINY_DATA "  eval: [{name: a/b, seq_len: 40}]}\n", 3, 17, "is not a test set name");
  expect_error("experiment: x\n" TINY_DATA "  eval: [{name: t, seq_len: 40}, {name: t, seq_len: 48}]}\n", 3, 34,
               "the name 't' repeats data.eval[0]");
  expect_error("experiment: x\n" TINY_DATA "  eval: [{eval: []}]}\n", 3, 11, "a test set has no test sets of its own");
  expect_error("experiment: x\n" TINY_DATA "  eval: {seq_len: 40}}\n", 3, 9, "data.eval: expected a list of test sets");
  expect_error("experiment: x\n" TINY_DATA "  eval: [{num_kv_pairs: 40}]}\n", 3, 25, "data.eval[0].num_kv_pairs: mqar: num_kv_pairs 40 needs seq_len");
  expect_error("experiment: x\n" TINY_DATA "  test_examples: 8}\ntrain: {sample: 10}\n", 4, 17,
               "train.sample prints text samples; the task is mqar");
}

/* ---- training with test sets, then --eval-only ----------------------------------- */

static const char *tiny =
    "experiment: tiny\n"
    "seed: 3\n"
    "data: {task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 2, train_examples: 2000,\n"
    "       test_examples: 64, random_non_queries: false, eval: [{seq_len: 48, num_kv_pairs: 3, name: long}]}\n"
    "model: {d_model: 32, n_heads: 2, mlp: none, position: rope, layers: [full, kda]}\n"
    "train: {steps: 60, batch_size: 16, lr: 3.0e-3, warmup_steps: 10, eval_every: 30, threads: 1, log_every: 1000}\n"
    "runs: [{name: a}, {name: b, seed: 4}]\n";

static at_status train_file(const char *path, const char *out, int eval_only, int *failed) {
  at_experiment *e = NULL;
  at_status st = at_experiment_load(path, NULL, 0, &e);
  cr_assert(st == AT_OK, "%s", at_errmsg());
  FILE *log = fopen("/dev/null", "w");
  at_train_opts o = {.out_dir = out, .progress = 0, .log = log};
  st = eval_only ? at_experiment_eval_only(e, &o, failed) : at_experiment_train(e, &o, failed);
  fclose(log);
  at_experiment_free(e);
  return st;
}

static at_results *results_of(const char *out) {
  char path[600];
  snprintf(path, sizeof path, "%s/results.h5", out);
  at_results *r = NULL;
  cr_assert(at_results_read(path, &r) == AT_OK, "%s", at_errmsg());
  return r;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  cr_assert(f, "%s", path);
  static char buf[1 << 16];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  return buf;
}

Test(eval_sets, training_records_them_and_eval_only_reevaluates) {
  make_dir();
  char out[300], path[600];
  snprintf(out, sizeof out, "%s/out", dir);
  int failed = 0;
  cr_assert(train_file(write_file("tiny.yaml", tiny), out, 0, &failed) == AT_OK && failed == 0, "%s", at_errmsg());
  at_results *r = results_of(out);
  double final_loss[2], final_long[2];
  for (int i = 0; i < 2; i++) {
    const at_results_run *run = r->runs[i];
    const at_results_evalset *es = at_results_get_evalset(run, "long");
    cr_assert(es && es->n == run->n_eval && run->n_eval == 2, "a point per evaluation");
    for (int j = 0; j < es->n; j++) cr_expect(es->step[j] == run->eval_step[j] && isfinite(es->loss[j]));
    cr_expect(strstr(es->config, "seq_len: 48") && strstr(es->config, "num_kv_pairs: 3"), "%s", es->config);
    final_loss[i] = run->final_eval_loss, final_long[i] = es->loss[es->n - 1];
  }
  at_results_free(r);
  snprintf(path, sizeof path, "%s/table.md", out);
  cr_expect(strstr(slurp(path), "| run | eval_accuracy | long |"), "%s", slurp(path));
  snprintf(path, sizeof path, "%s/table.csv", out);
  cr_expect(strstr(slurp(path), ",\"long:final_eval_loss\",\"long:final_eval_accuracy\"\n"), "%s", slurp(path));

  /* --eval-only with a second test set: the checkpoint's evaluation replaces
   * the one at its step (the same numbers: evaluation is deterministic) */
  char *more = strdup(tiny);
  char *at = strstr(more, "name: long}]");
  cr_assert(at);
  char yaml[2048];
  snprintf(yaml, sizeof yaml, "%.*sname: long}, {num_kv_pairs: 5}]%s", (int)(at - more), more, at + strlen("name: long}]"));
  free(more);
  cr_assert(train_file(write_file("more.yaml", yaml), out, 1, &failed) == AT_OK && failed == 0, "%s", at_errmsg());
  r = results_of(out);
  for (int i = 0; i < 2; i++) {
    const at_results_run *run = r->runs[i];
    cr_expect_eq(run->n_eval, 2, "replaced, not appended");
    cr_expect(run->final_eval_loss == final_loss[i], "%.9g vs %.9g", run->final_eval_loss, final_loss[i]);
    const at_results_evalset *es = at_results_get_evalset(run, "long"), *five = at_results_get_evalset(run, "num_kv_pairs=5");
    cr_expect(es && es->n == 2 && es->loss[1] == final_long[i]);
    cr_expect(five && five->n == 1 && five->step[0] == 59 && isfinite(five->accuracy[0]));
  }
  at_results_free(r);
  snprintf(path, sizeof path, "%s/table.md", out);
  cr_expect(strstr(slurp(path), "| run | eval_accuracy | long | num_kv_pairs=5 |"), "%s", slurp(path));

  /* without results.h5 the runs come back from their checkpoints alone, with
   * no training curve: that panel says "no data" (gnuplot fails on an empty plot) */
  snprintf(path, sizeof path, "%s/results.h5", out);
  cr_assert(remove(path) == 0);
  cr_assert(train_file(write_file("more.yaml", yaml), out, 1, &failed) == AT_OK && failed == 0, "%s", at_errmsg());
  r = results_of(out);
  cr_expect(r->n_runs == 2 && r->runs[0]->n_train == 0 && r->runs[0]->n_eval == 1);
  cr_expect_str_eq(r->runs[0]->status, "ok");
  at_results_free(r);
  snprintf(path, sizeof path, "%s/plot/curves.gp", out);
  cr_expect(strstr(slurp(path), "'no data'"), "%s", slurp(path));

  /* a run without a checkpoint, and a checkpoint of another model, are counted */
  snprintf(path, sizeof path, "%s/checkpoints/b.h5", out);
  cr_assert(remove(path) == 0);
  cr_assert(train_file(write_file("more.yaml", yaml), out, 1, &failed) == AT_OK);
  cr_expect_eq(failed, 1);
  char *other = strdup(yaml), *d32 = strstr(other, "d_model: 32");
  cr_assert(d32);
  memcpy(d32, "d_model: 48", 11);
  cr_expect_eq(train_file(write_file("other.yaml", other), out, 1, &failed), AT_E_IO, "no run evaluated");
  cr_expect_eq(failed, 2);
  free(other);
}

/* ---- the tools on checkpoints ------------------------------------------------------ */

Test(tools, generate_on_a_task_checkpoint) {
  make_dir();
  char out[300], ck[600], cmd[1600], buf[8192];
  snprintf(out, sizeof out, "%s/out", dir);
  int failed = 0;
  cr_assert(train_file(write_file("tiny.yaml", tiny), out, 0, &failed) == AT_OK, "%s", at_errmsg());
  snprintf(ck, sizeof ck, "%s/checkpoints/a.h5", out);
  snprintf(cmd, sizeof cmd, "%s/bin/generate %s --task-example 2 2>&1", AT_BINARY_DIR, ck);
  cr_expect_eq(run_cmd(cmd, buf, sizeof buf), 0, "%s", buf);
  cr_expect(strstr(buf, "task mqar, test example 2") && strstr(buf, "correct ") && strstr(buf, "tokens/s") &&
            strstr(buf, "vector ISA"), "%s", buf);
  snprintf(cmd, sizeof cmd, "%s/bin/generate %s --prompt '3 5 7' --tokens 6 --seed 9 2>/dev/null", AT_BINARY_DIR, ck);
  char a[256], b[256];
  cr_expect_eq(run_cmd(cmd, a, sizeof a), 0);
  cr_expect_eq(run_cmd(cmd, b, sizeof b), 0);
  int n = 0;
  for (char *p = strtok(a, " \n"); p; p = strtok(NULL, " \n")) n++;
  cr_expect_eq(n, 6, "six ids");
  run_cmd(cmd, a, sizeof a);
  cr_expect_str_eq(a, b, "the same seed, the same tokens");
  const char *bad[] = {"", "--prompt '3 99'", "--task-example 9999", "--top-p 0", "--temperature -1", "--prompt x --task-example 1"};
  for (int i = 0; i < AT_ARRAY_LEN(bad); i++) {
    snprintf(cmd, sizeof cmd, "%s/bin/generate %s %s 2>&1", AT_BINARY_DIR, ck, bad[i]);
    cr_expect_eq(run_cmd(cmd, buf, sizeof buf), 2, "'%s' accepted: %s", bad[i], buf);
    cr_expect(strstr(buf, "generate: "), "%s", buf);
  }
  snprintf(cmd, sizeof cmd, "%s/bin/generate %s/tiny.yaml 2>&1", AT_BINARY_DIR, dir);
  cr_expect_eq(run_cmd(cmd, buf, sizeof buf), 2);
  cr_expect(strstr(buf, "not an HDF5 file"), "%s", buf);
}

/* A text model: train.sample at each evaluation, then ./generate bytes. */
Test(tools, text_sample_and_generate) {
  make_dir();
  char text[8192];
  for (int i = 0, n = 0; i < 120; i++) n += snprintf(text + n, sizeof text - (size_t)n, "the cat sat on mat %d.\n", i % 9);
  const char *corpus = write_file("corpus.txt", text);
  char yaml[1024], out[300], log_path[600], cmd[2400], buf[8192];
  snprintf(yaml, sizeof yaml,
           "experiment: bytes\ndata: {task: text, path: %s, val_fraction: 0.1, seq_len: 24}\n"
           "model: {d_model: 32, n_heads: 2, position: learned, layers: [full, gdn], tie_embeddings: true}\n"
           "train: {steps: 20, batch_size: 8, eval_every: 10, threads: 1, sample: 16}\n",
           corpus);
  snprintf(out, sizeof out, "%s/out", dir);
  snprintf(log_path, sizeof log_path, "%s/log.txt", dir);
  snprintf(cmd, sizeof cmd, "%s/bin/train %s --out %s > %s 2>&1", AT_BINARY_DIR, write_file("text.yaml", yaml), out, log_path);
  cr_assert(system(cmd) == 0, "%s", slurp(log_path));
  const char *log = slurp(log_path);
  cr_expect(strstr(log, "[bytes] sample @10:\n") && strstr(log, "[bytes] sample @20:\n"), "%s", log);
  snprintf(cmd, sizeof cmd, "%s/bin/generate %s/checkpoints/bytes.h5 --prompt 'the ' --tokens 12 --top-k 5 2>/dev/null",
           AT_BINARY_DIR, out);
  cr_expect_eq(run_cmd(cmd, buf, sizeof buf), 0);
  cr_expect_eq(strlen(buf), 12, "12 bytes: '%s'", buf);
  /* learned positions: prompt and continuation within the 24 trained */
  snprintf(cmd, sizeof cmd, "%s/bin/generate %s/checkpoints/bytes.h5 --tokens 30 2>&1", AT_BINARY_DIR, out);
  cr_expect_eq(run_cmd(cmd, buf, sizeof buf), 2);
  cr_expect(strstr(buf, "learned positions cannot extrapolate"), "%s", buf);
  /* a sample longer than the learned positions is refused when loading */
  snprintf(yaml + strlen(yaml) - 12, 40, "sample: 24}\n");
  snprintf(cmd, sizeof cmd, "%s/bin/train %s --dry-run 2>&1", AT_BINARY_DIR, write_file("long.yaml", yaml));
  cr_expect_eq(run_cmd(cmd, buf, sizeof buf), 2);
  cr_expect(strstr(buf, "exceeds the 24 learned positions"), "%s", buf);
}

/* at_restore: the configuration and parameters of a checkpoint. */
Test(tools, restore_rebuilds_the_run) {
  make_dir();
  char out[300], ck[600];
  snprintf(out, sizeof out, "%s/out", dir);
  int failed = 0;
  cr_assert(train_file(write_file("tiny.yaml", tiny), out, 0, &failed) == AT_OK);
  snprintf(ck, sizeof ck, "%s/checkpoints/b.h5", out);
  at_restored r;
  cr_assert(at_restore(ck, &r) == AT_OK, "%s", at_errmsg());
  cr_expect_str_eq(r.rc->base_name, "b");
  cr_expect(r.rc->seed == 4 && r.rc->n_evals == 1 && r.ts.step == 60 && r.m->step == 59);
  at_model *fresh = NULL;
  cr_assert(at_run_model_new(r.rc, &fresh) == AT_OK);
  cr_expect(memcmp(fresh->params->data, r.m->params->data, (size_t)fresh->params->total * sizeof(real)) != 0,
            "the trained parameters, not the initial ones");
  at_model_free(fresh);
  at_restored_free(&r);
  cr_expect_eq(at_restore(write_file("x.h5", "not hdf5"), &r), AT_E_FORMAT);
}

/* The safetensors header of an export: its JSON text (malloc'ed), and the
 * size the data after it should have (the largest data offset). */
static char *safetensors_header(const char *path, long *data_bytes, long *file_bytes) {
  FILE *f = fopen(path, "rb");
  cr_assert(f, "%s", path);
  unsigned char n8[8];
  cr_assert(fread(n8, 1, 8, f) == 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; i++) n |= (uint64_t)n8[i] << (8 * i);
  cr_assert(n % 8 == 0 && n < (1u << 20), "header length %llu", (unsigned long long)n);
  char *h = calloc(n + 1, 1);
  cr_assert(fread(h, 1, n, f) == n);
  fseek(f, 0, SEEK_END);
  *file_bytes = ftell(f) - 8 - (long)n;
  fclose(f);
  *data_bytes = 0;
  for (const char *p = h; (p = strstr(p, "\"data_offsets\":[")); p++) {
    long a, b;
    cr_assert(sscanf(p, "\"data_offsets\":[%ld,%ld]", &a, &b) == 2 && b >= a);
    if (b > *data_bytes) *data_bytes = b;
  }
  return h;
}

Test(tools, export_writes_fla_names_and_logits) {
  make_dir();
  char out[300], ck[600], cmd[1600], buf[8192], path[700];
  snprintf(out, sizeof out, "%s/out", dir);
  int failed = 0;
  cr_assert(train_file(write_file("tiny.yaml", tiny), out, 0, &failed) == AT_OK);
  snprintf(ck, sizeof ck, "%s/checkpoints/a.h5", out);
  snprintf(cmd, sizeof cmd, "%s/bin/export %s %s/fla 2>&1", AT_BINARY_DIR, ck, dir);
  cr_assert_eq(run_cmd(cmd, buf, sizeof buf), 0, "%s", buf);
  /* [full, kda]: fla's KDA model with layer 0 as a standard attention layer */
  snprintf(path, sizeof path, "%s/fla/config.json", dir);
  const char *config = slurp(path);
  cr_expect(strstr(config, "\"model_type\": \"kda\"") && strstr(config, "\"attn\": {\"layers\": [0], \"num_heads\": 2") &&
            strstr(config, "\"intermediate_size\": 8"), "%s", config);
  long data = 0, file = 0;
  snprintf(path, sizeof path, "%s/fla/model.safetensors", dir);
  char *h = safetensors_header(path, &data, &file);
  const char *names[] = {"model.embeddings.weight", "model.layers.0.attn.q_proj.weight", "model.layers.1.attn.f_proj.0.weight",
                         "model.layers.1.attn.q_conv1d.weight\":{\"dtype\":\"F32\",\"shape\":[32,1,4]",
                         "model.layers.1.attn.g_proj.1.bias", "model.layers.1.mlp.down_proj.weight", "model.norm.weight",
                         "lm_head.weight"};
  for (int i = 0; i < AT_ARRAY_LEN(names); i++) cr_expect(strstr(h, names[i]), "%s missing in %.300s", names[i], h);
  cr_expect(data == file && data > 0, "data %ld bytes, file %ld", data, file);
  free(h);
  /* the recorded logits are the model's forward on the recorded ids */
  snprintf(path, sizeof path, "%s/fla/attnlab_check.safetensors", dir);
  h = safetensors_header(path, &data, &file);
  cr_expect(strstr(h, "\"input_ids\":{\"dtype\":\"I64\",\"shape\":[2,32]") && strstr(h, "\"logits\":{\"dtype\":\"F32\",\"shape\":[2,32,64]"), "%s", h);
  FILE *f = fopen(path, "rb");
  cr_assert(f);
  fseek(f, 8 + (long)strlen(h), SEEK_SET);
  int64_t ids[64];
  float *logits = malloc(2 * 32 * 64 * sizeof(float));
  cr_assert(fread(ids, 8, 64, f) == 64 && fread(logits, 4, 2 * 32 * 64, f) == 2 * 32 * 64);
  fclose(f);
  at_restored r;
  cr_assert(at_restore(ck, &r) == AT_OK);
  at_ctx *c = at_ctx_new(0);
  at_itensor *tok = at_inew(c, AT_SHAPE(2, 32));
  for (int i = 0; i < 64; i++) tok->data[i] = (int32_t)ids[i];
  at_tensor *z = at_model_logits(c, r.m, tok);
  cr_assert(z);
  for (int64_t i = 0; i < z->size; i++) cr_assert(logits[i] == z->data[i], "logit %lld", (long long)i);
  at_ctx_free(c);
  at_restored_free(&r);
  free(logits), free(h);
  /* refusals name the reason; nothing is written */
  char *nope = strdup(tiny), *rope = strstr(nope, "position: rope");
  memcpy(rope, "position: nope", 14);
  cr_assert(train_file(write_file("nope.yaml", nope), out, 0, &failed) == AT_OK);
  free(nope);
  snprintf(cmd, sizeof cmd, "%s/bin/export %s %s/fla2 2>&1", AT_BINARY_DIR, ck, dir);
  cr_expect_eq(run_cmd(cmd, buf, sizeof buf), 2);
  cr_expect(strstr(buf, "cannot be exported to flash-linear-attention: layer 0 (full) has no RoPE"), "%s", buf);
  snprintf(path, sizeof path, "%s/fla2", dir);
  cr_expect(access(path, F_OK) != 0, "no output directory for a refused model");
}

/* The mixers mapped to fla's gla, rwkv7 and mamba models: each export's
 * model_type and config fields, and its tensor names and shapes in fla's
 * naming; options fla's layers cannot express are refused with the reason. */
typedef struct export_case {
  const char *run;
  const char *want[12]; /* "key": value in config.json, else a tensor in the safetensors header (!: not there) */
} export_case;

static const export_case export_cases[] = {
  {"gla", {"\"model_type\": \"gla\"", "\"expand_k\": 0.5", "\"use_output_gate\": true",
           "\"model.layers.1.attn.gk_proj.1.bias\":{\"dtype\":\"F32\",\"shape\":[16]",
           "\"model.layers.0.attn.g_norm_swish_gate.weight\":{\"dtype\":\"F32\",\"shape\":[16]",
           "\"model.layers.0.mlp.gate_proj.weight\":{\"dtype\":\"F32\",\"shape\":[8,32]"}},
  {"gla_conv", {"\"use_short_conv\": true", "\"clamp_min\": -0.050000000000000003", "\"use_output_gate\": false",
                "\"model.layers.0.attn.k_conv1d.weight\":{\"dtype\":\"F32\",\"shape\":[32,1,3]",
                "\"model.layers.0.attn.g_norm.weight\"", "\"model.layers.0.attn.gk_proj.0.weight\":{\"dtype\":\"F32\",\"shape\":[16,32]"}},
  {"mamba", {"\"model_type\": \"mamba\"", "\"state_size\": 8", "\"dt_rank\": 2",
             "\"backbone.layers.1.mixer.in_proj.weight\":{\"dtype\":\"F32\",\"shape\":[64,32]",
             "\"backbone.layers.0.mixer.conv1d.weight\":{\"dtype\":\"F32\",\"shape\":[32,1,4]",
             "\"backbone.layers.0.mixer.A_log\":{\"dtype\":\"F32\",\"shape\":[32,8]",
             "\"backbone.layers.0.mixer.x_proj.weight\":{\"dtype\":\"F32\",\"shape\":[18,32]",
             "\"backbone.layers.0.mixer.dt_proj.bias\":{\"dtype\":\"F32\",\"shape\":[32]",
             "\"backbone.layers.1.norm.weight\"", "\"backbone.norm_f.weight\"", "\"backbone.embeddings.weight\""}},
  /* d_model 32 as the stream [h, -h] of fla's hidden_size 64: 4 heads of 16, attnlab's 2 and 2 that output 0 */
  {"rwkv7", {"\"model_type\": \"rwkv7\"", "\"hidden_size\": 64", "\"num_heads\": 4", "\"norm_bias\": false",
             "\"intermediate_size\": 48", "\"model.layers.1.attn.v_lora.lora.0.weight\":{\"dtype\":\"F32\",\"shape\":[32,64]",
             "!model.layers.0.attn.v_lora", "\"model.layers.0.attn.r_k\":{\"dtype\":\"F32\",\"shape\":[4,16]",
             "\"model.layers.0.attn.x_w\":{\"dtype\":\"F32\",\"shape\":[1,1,64]",
             "\"model.layers.1.ffn.value.weight\":{\"dtype\":\"F32\",\"shape\":[64,48]",
             "\"model.layers.0.attn.g_norm.bias\":{\"dtype\":\"F32\",\"shape\":[64]", "\"model.embeddings.weight\":{\"dtype\":\"F32\",\"shape\":[64,64]"}},
};

static const struct {
  const char *run, *why;
} export_refusals[] = {
  {"gla_sigmoid", "gla with the sigmoid output gate: fla's GLA model takes the gate's activation from hidden_act"},
  {"gla_rank", "gla with gate_low_rank_dim 8, gate_logit_normalizer 16: fla's GLA model always builds its layer with 16"},
  {"gla_cmix", "a gla model with RWKV's channel mix (mlp: rwkv_cmix): fla's gla blocks have a GatedMLP"},
  {"mamba_mlp", "a mamba model with an MLP: fla's mamba blocks have none"},
  {"mamba_full", "a mamba model with softmax attention layers: fla's configuration of it has no hybrid layers"},
  {"rwkv7_swiglu", "a rwkv7 model with a SwiGLU MLP: fla's RWKV-7 blocks have RWKV's channel mix"},
  {"rwkv7_full", "a rwkv7 model with softmax attention layers: fla's RWKV7Block takes v_first from every attention layer"},
  {"rwkv7_heads", "rwkv7 with n_heads x head_dim 16 != d_model: fla's RWKV7Attention has key and value width hidden_size"},
  {"nsa", "mixer nsa: fla's NativeSparseAttention compresses blocks by mean pooling"},
  {"longformer", "mixer longformer: flash-linear-attention has no model for it"},
};

static const char *export_yaml =
    "experiment: ex\nseed: 2\n"
    "data: {task: mqar, vocab_size: 64, seq_len: 16, num_kv_pairs: 2, train_examples: 500, test_examples: 16}\n"
    "model: {d_model: 32, n_heads: 2, mlp: none, position: nope}\n"
    "train: {steps: 2, batch_size: 4, eval_every: 2, threads: 1, log_every: 1000}\n"
    "runs:\n"
    "  - {name: gla, model: {layers: [gla, gla]}}\n"
    "  - {name: gla_conv, model: {layers: [gla], mlp: swiglu, attention: {gla: {short_conv: true, conv_size: 3,\n"
    "                                  output_gate: none, expand_k: 1, clamp_min: -0.05}}}}\n"
    "  - {name: gla_sigmoid, model: {layers: [gla], attention: {gla: {output_gate: sigmoid}}}}\n"
    "  - {name: gla_rank, model: {layers: [gla], attention: {gla: {gate_low_rank_dim: 8}}}}\n"
    "  - {name: gla_cmix, model: {layers: [gla], mlp: rwkv_cmix}}\n"
    "  - {name: mamba, model: {layers: [mamba, mamba], attention: {mamba: {d_state: 8, expand: 1, dt_rank: 2}}}}\n"
    "  - {name: mamba_mlp, model: {layers: [mamba], mlp: swiglu}}\n"
    "  - {name: mamba_full, model: {layers: [mamba, full], position: rope}}\n"
    "  - {name: rwkv7, model: {layers: [rwkv7, rwkv7], mlp: rwkv_cmix, mlp_hidden: 48}}\n"
    "  - {name: rwkv7_swiglu, model: {layers: [rwkv7], mlp: swiglu}}\n"
    "  - {name: rwkv7_full, model: {layers: [rwkv7, full], position: rope}}\n"
    "  - {name: rwkv7_heads, model: {layers: [rwkv7], attention: {rwkv7: {head_dim: 8}}}}\n"
    "  - {name: nsa, model: {layers: [nsa], position: rope}}\n"
    "  - {name: longformer, model: {layers: [longformer], position: rope}}\n";

Test(tools, export_maps_gla_rwkv7_mamba) {
  make_dir();
  char out[300], cmd[1600], buf[8192], path[700];
  snprintf(out, sizeof out, "%s/out", dir);
  int failed = 0;
  cr_assert(train_file(write_file("ex.yaml", export_yaml), out, 0, &failed) == AT_OK && !failed);
  for (int i = 0; i < AT_ARRAY_LEN(export_cases); i++) {
    const export_case *ec = &export_cases[i];
    snprintf(cmd, sizeof cmd, "%s/bin/export %s/checkpoints/%s.h5 %s/fla_%s 2>&1", AT_BINARY_DIR, out, ec->run, dir, ec->run);
    cr_assert_eq(run_cmd(cmd, buf, sizeof buf), 0, "%s: %s", ec->run, buf);
    snprintf(path, sizeof path, "%s/fla_%s/config.json", dir, ec->run);
    const char *config = slurp(path);
    long data = 0, file = 0;
    snprintf(path, sizeof path, "%s/fla_%s/model.safetensors", dir, ec->run);
    char *h = safetensors_header(path, &data, &file);
    cr_expect(data == file && data > 0, "%s: data %ld bytes, file %ld", ec->run, data, file);
    for (int k = 0; k < AT_ARRAY_LEN(ec->want) && ec->want[k]; k++) {
      const char *w = ec->want[k];
      if (w[0] == '!') cr_expect(!strstr(h, w + 1), "%s: %s in the header", ec->run, w + 1);
      else if (strstr(w, "\": ")) cr_expect(strstr(config, w), "%s: %s missing in %s", ec->run, w, config);
      else cr_expect(strstr(h, w), "%s: %s missing in %.2000s", ec->run, w, h);
    }
    free(h);
  }
  for (int i = 0; i < AT_ARRAY_LEN(export_refusals); i++) {
    snprintf(cmd, sizeof cmd, "%s/bin/export %s/checkpoints/%s.h5 %s/fla_%s 2>&1", AT_BINARY_DIR, out,
             export_refusals[i].run, dir, export_refusals[i].run);
    cr_expect_eq(run_cmd(cmd, buf, sizeof buf), 2, "%s exported: %s", export_refusals[i].run, buf);
    cr_expect(strstr(buf, "cannot be exported to flash-linear-attention: ") && strstr(buf, export_refusals[i].why), "%s: %s",
              export_refusals[i].run, buf);
  }
}
