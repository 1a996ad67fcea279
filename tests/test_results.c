/* experiments/results: round trip of runs, curves, test sets (with group
 * accuracies) and attributes, derived fields, rewrites after each
 * evaluation, resume truncation, refusals. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/h5io.h"
#include "experiments/results.h"
#include "testing.h"

static void tmpname(char *buf, const char *tag) {
  snprintf(buf, 256, "/tmp/attnlab_test_results_%s_%d.h5", tag, (int)getpid());
}

static const char *source = "experiment: demo\nruns:\n  - {name: full}\n  - {name: kda}\n";

/* Three runs, added in non-alphabetical order: a long curve with groups,
 * one stopped early, and one with nothing logged. */
static at_results *build(void) {
  at_results *r;
  cr_assert(at_results_new("demo", source, &r) == AT_OK);
  at_results_run *a, *b, *c;
  cr_assert(at_results_add_run(r, "zeta__lr=0.003", "model: {layers: [kda]}\n", &a) == AT_OK, "%s", at_errmsg());
  snprintf(a->name, sizeof a->name, "zeta lr=0.003");
  snprintf(a->base_name, sizeof a->base_name, "zeta");
  snprintf(a->sweep_point, sizeof a->sweep_point, "lr=0.003");
  a->params = 123456, a->steps = 1000, a->skipped_steps = 1, a->train_tokens = 64000;
  a->train_seconds = 4.0, a->wall_seconds = 5.5;
  const char *groups[] = {"depth 0-25%", "depth 25-50%", "depth 50-100%"};
  cr_assert(at_results_set_groups(a, 3, groups) == AT_OK);
  for (int s = 0; s < 1000; s++) cr_assert(at_results_log_train(a, s, 5.0 / (1 + s)) == AT_OK);
  for (int e = 0; e < 11; e++) {
    double g[3] = {0.1 * e, 0.05 * e, 1.0 / (e + 1)};
    cr_assert(at_results_log_eval(a, 100 * e, 1.0 / (e + 1), 0.09 * e, g) == AT_OK);
  }
  const char *sg[] = {"depth 0-50%", "depth 50-100%"};
  cr_assert(at_results_set_evalset_groups(a, "long", "{seq_len: 64}", 2, sg) == AT_OK, "%s", at_errmsg());
  for (int e = 0; e < 4; e++) {
    double g[2] = {0.25 * e, 1.0 / (e + 3)};
    cr_assert(at_results_log_evalset(a, "long", NULL, 250 * e, 2.0 / (e + 1), 0.2 * e, g) == AT_OK, "%s", at_errmsg());
    cr_assert(at_results_log_evalset(a, "2x", "{seq_len: 128}", 250 * e, 3.0 / (e + 1), 0.1 * e, NULL) == AT_OK);
  }
  cr_assert(at_results_set_num(a, "kv_cache_bytes_per_token", 512) == AT_OK);
  cr_assert(at_results_set_str(a, "note", "line one\nline two") == AT_OK);
  cr_assert(at_results_set_num(a, "bits_per_byte", 2.5) == AT_OK);
  cr_assert(at_results_set_num(a, "bits_per_byte", 2.25) == AT_OK); /* replaced */

  cr_assert(at_results_add_run(r, "alpha", NULL, &b) == AT_OK);
  snprintf(b->status, sizeof b->status, "stopped: 5 non-finite steps in a row at step 17");
  b->steps = 17, b->skipped_steps = 5, b->train_tokens = 17, b->train_seconds = 0.5;
  cr_assert(at_results_log_train(b, 0, NAN) == AT_OK);
  cr_assert(at_results_log_train(b, 10, INFINITY) == AT_OK);
  cr_assert(at_results_log_eval(b, 10, 3.0, 0.25, NULL) == AT_OK);

  cr_assert(at_results_add_run(r, "mid", "", &c) == AT_OK);
  return r;
}

static void same_double(double x, double y, const char *what, const char *run) {
  cr_expect(memcmp(&x, &y, sizeof x) == 0, "%s %s: %.17g vs %.17g", run, what, x, y);
}

/* The test sets of two runs: curves, configs and group accuracies. */
static void expect_same_sets(const at_results_run *a, const at_results_run *b) {
  cr_assert(a->n_evalsets == b->n_evalsets, "%s: %d test sets vs %d", a->id, a->n_evalsets, b->n_evalsets);
  for (int i = 0; i < a->n_evalsets; i++) {
    const at_results_evalset *x = &a->evalsets[i], *y = at_results_get_evalset(b, x->name);
    cr_assert(y && x->n == y->n && x->n_groups == y->n_groups, "%s: test set %s differs", a->id, x->name);
    cr_expect_str_eq(x->config, y->config);
    for (int64_t k = 0; k < x->n; k++) {
      cr_expect(x->step[k] == y->step[k]);
      same_double(x->loss[k], y->loss[k], "test set loss", a->id);
      same_double(x->accuracy[k], y->accuracy[k], "test set accuracy", a->id);
    }
    for (int g = 0; g < x->n_groups; g++) cr_expect_str_eq(x->group_names[g], y->group_names[g]);
    for (int64_t k = 0; k < x->n * x->n_groups; k++)
      same_double(x->group_accuracy[k], y->group_accuracy[k], "test set group accuracy", a->id);
  }
}

static void expect_same(const at_results *x, const at_results *y) {
  cr_expect_str_eq(x->experiment, y->experiment);
  cr_expect_str_eq(x->source, y->source);
  cr_expect_str_eq(x->version, y->version);
  cr_expect_str_eq(x->date, y->date);
  cr_expect(x->threads == y->threads);
  cr_assert(x->n_runs == y->n_runs, "%d runs vs %d", x->n_runs, y->n_runs);
  for (int i = 0; i < x->n_runs; i++) {
    const at_results_run *a = x->runs[i], *b = y->runs[i];
    cr_expect_str_eq(a->id, b->id, "run %d: order not kept", i);
    cr_expect_str_eq(a->name, b->name);
    cr_expect_str_eq(a->base_name, b->base_name);
    cr_expect_str_eq(a->sweep_point, b->sweep_point);
    cr_expect_str_eq(a->config, b->config);
    cr_expect_str_eq(a->status, b->status);
    cr_expect(a->params == b->params && a->steps == b->steps && a->skipped_steps == b->skipped_steps &&
              a->train_tokens == b->train_tokens, "%s: integer attributes differ", a->id);
    same_double(a->train_seconds, b->train_seconds, "train_seconds", a->id);
    same_double(a->wall_seconds, b->wall_seconds, "wall_seconds", a->id);
    same_double(a->tokens_per_second, b->tokens_per_second, "tokens_per_second", a->id);
    same_double(a->final_eval_loss, b->final_eval_loss, "final_eval_loss", a->id);
    same_double(a->final_eval_accuracy, b->final_eval_accuracy, "final_eval_accuracy", a->id);
    cr_assert(a->n_train == b->n_train && a->n_eval == b->n_eval, "%s: curve lengths differ", a->id);
    for (int64_t k = 0; k < a->n_train; k++) {
      cr_expect(a->train_step[k] == b->train_step[k]);
      same_double(a->train_loss[k], b->train_loss[k], "train_loss", a->id);
    }
    for (int64_t k = 0; k < a->n_eval; k++) {
      cr_expect(a->eval_step[k] == b->eval_step[k]);
      same_double(a->eval_loss[k], b->eval_loss[k], "eval_loss", a->id);
      same_double(a->eval_accuracy[k], b->eval_accuracy[k], "eval_accuracy", a->id);
    }
    cr_assert(a->n_groups == b->n_groups, "%s: %d groups vs %d", a->id, a->n_groups, b->n_groups);
    for (int g = 0; g < a->n_groups; g++) cr_expect_str_eq(a->group_names[g], b->group_names[g]);
    for (int64_t k = 0; k < a->n_eval * a->n_groups; k++)
      same_double(a->eval_group_accuracy[k], b->eval_group_accuracy[k], "eval_group_accuracy", a->id);
    expect_same_sets(a, b);
    cr_assert(a->n_extra == b->n_extra, "%s: %d extras vs %d", a->id, a->n_extra, b->n_extra);
    for (int k = 0; k < a->n_extra; k++) {
      const at_results_extra *e = at_results_get(b, a->extra[k].key);
      cr_assert(e, "%s: extra %s lost", a->id, a->extra[k].key);
      cr_expect((e->str == NULL) == (a->extra[k].str == NULL));
      if (e->str) cr_expect_str_eq(e->str, a->extra[k].str);
      else same_double(e->num, a->extra[k].num, a->extra[k].key, a->id);
    }
  }
}

Test(results, round_trip) {
  char path[256], tmp[300];
  tmpname(path, "rt");
  at_h5_tmp_name(path, tmp, sizeof tmp);
  at_results *r = build(), *back;
  cr_assert(at_results_write(r, path) == AT_OK, "%s", at_errmsg());
  cr_expect(access(tmp, F_OK) != 0, "a .tmp file was left behind");
  cr_assert(at_results_read(path, &back) == AT_OK, "%s", at_errmsg());
  expect_same(r, back);
  /* what the table writer relies on */
  cr_expect_str_eq(back->runs[0]->id, "zeta__lr=0.003");
  cr_expect_str_eq(back->runs[1]->id, "alpha");
  cr_expect_str_eq(back->runs[2]->id, "mid");
  cr_expect(back->runs[0]->tokens_per_second == 16000.0);
  cr_expect(back->runs[0]->final_eval_loss == 1.0 / 11 && back->runs[0]->final_eval_accuracy == 0.09 * 10);
  cr_expect(back->runs[1]->final_eval_accuracy == 0.25 && back->runs[1]->tokens_per_second == 34.0);
  cr_expect(isnan(back->runs[2]->final_eval_loss) && isnan(back->runs[2]->tokens_per_second));
  cr_expect_str_eq(back->runs[2]->status, "running");
  cr_expect(at_results_get(back->runs[0], "bits_per_byte")->num == 2.25);
  cr_expect(at_results_get(back->runs[0], "missing") == NULL);
  cr_expect(strlen(back->date) == 20 && back->date[10] == 'T' && back->date[19] == 'Z', "date %s", back->date);
  cr_expect(back->threads >= 1);
  /* a reader's copy can be extended and written again */
  at_results_run *m = at_results_find(back, "mid");
  cr_assert(m);
  cr_assert(at_results_log_eval(m, 0, 1.5, 0.5, NULL) == AT_OK);
  cr_assert(at_results_write(back, path) == AT_OK);
  at_results *again;
  cr_assert(at_results_read(path, &again) == AT_OK, "%s", at_errmsg());
  expect_same(back, again);
  cr_expect(again->runs[2]->final_eval_accuracy == 0.5);
  at_results_free(r), at_results_free(back), at_results_free(again);
  remove(path);
}

Test(results, rewrite_after_each_eval_and_resume) {
  char path[256];
  tmpname(path, "resume");
  at_results *r;
  cr_assert(at_results_new("demo", NULL, &r) == AT_OK);
  at_results_run *run;
  cr_assert(at_results_add_run(r, "full", "x: 1\n", &run) == AT_OK);
  for (int s = 0; s < 300; s++) {
    cr_assert(at_results_log_train(run, s, 1.0 / (s + 1)) == AT_OK);
    if (s % 100 == 99) {
      cr_assert(at_results_log_eval(run, s, 2.0 / (s + 1), s / 300.0, NULL) == AT_OK);
      cr_assert(at_results_write(r, path) == AT_OK);
    }
  }
  /* "crash" before the end: the file has the curves up to the last eval */
  at_results *back;
  cr_assert(at_results_read(path, &back) == AT_OK, "%s", at_errmsg());
  at_results_run *b = at_results_find(back, "full");
  cr_assert(b);
  cr_expect(b->n_train == 300 && b->n_eval == 3);
  /* resume from a checkpoint at step 149: later points are dropped */
  at_results_truncate(b, 149);
  cr_expect(b->n_train == 150 && b->train_step[149] == 149);
  cr_expect(b->n_eval == 1 && b->eval_step[0] == 99);
  cr_expect(at_results_log_train(b, 100, 0) == AT_E_ARG, "a step before the last was accepted");
  cr_assert(at_results_log_train(b, 150, 0.5) == AT_OK);
  cr_assert(at_results_log_eval(b, 150, 0.4, 0.9, NULL) == AT_OK);
  snprintf(b->status, sizeof b->status, "ok");
  cr_assert(at_results_write(back, path) == AT_OK);
  at_results *final;
  cr_assert(at_results_read(path, &final) == AT_OK);
  cr_expect(final->runs[0]->n_train == 151 && final->runs[0]->final_eval_accuracy == 0.9);
  cr_expect_str_eq(final->runs[0]->status, "ok");
  cr_expect_str_eq(final->source, "");
  at_results_free(r), at_results_free(back), at_results_free(final);
  remove(path);
}

Test(results, misuse_is_refused) {
  at_results *r;
  cr_assert(at_results_new("demo", source, &r) == AT_OK);
  at_results_run *run, *other;
  cr_assert(at_results_add_run(r, "a", NULL, &run) == AT_OK);
  cr_expect(at_results_add_run(r, "a", NULL, &other) == AT_E_ARG && other == NULL);
  cr_expect(strstr(at_errmsg(), "twice") != NULL, "%s", at_errmsg());
  cr_expect(at_results_add_run(r, "a/b", NULL, &other) == AT_E_ARG);
  cr_expect(at_results_add_run(r, "", NULL, &other) == AT_E_ARG);
  cr_expect(at_results_add_run(r, "..", NULL, &other) == AT_E_ARG);
  cr_expect(at_results_log_train(run, -1, 0) == AT_E_ARG);
  cr_expect(at_results_log_train(run, (int64_t)INT32_MAX + 1, 0) == AT_E_ARG);
  cr_expect(at_results_set_num(run, "tokens_per_second", 1) == AT_E_ARG, "a fixed name was accepted as extra");
  cr_expect(at_results_set_str(run, "a/b", "x") == AT_E_ARG);
  const char *g[] = {"x", "y"};
  cr_assert(at_results_set_groups(run, 2, g) == AT_OK);
  cr_expect(at_results_log_eval(run, 0, 1, 1, NULL) == AT_E_ARG, "missing group accuracies accepted");
  cr_expect(at_results_set_groups(run, 2, g) == AT_E_STATE);
  const char *bad[] = {"a\nb"};
  cr_expect(at_results_add_run(r, "b", NULL, &other) == AT_OK);
  cr_expect(at_results_set_groups(other, 1, bad) == AT_E_ARG);
  cr_assert(at_results_set_evalset_groups(other, "long", NULL, 2, g) == AT_OK);
  cr_expect(at_results_log_evalset(other, "long", NULL, 0, 1, 1, NULL) == AT_E_ARG,
            "missing group accuracies accepted");
  cr_expect(at_results_set_evalset_groups(other, "long", NULL, 2, g) == AT_E_STATE);
  cr_expect(at_results_set_evalset_groups(other, "x", NULL, 1, bad) == AT_E_ARG);
  cr_expect(at_results_log_evalset(other, "a/b", NULL, 0, 1, 1, NULL) == AT_E_ARG);
  cr_expect(run->n_train == 0 && run->n_eval == 0 && run->n_extra == 0, "a refused call changed the run");
  at_results_free(r);
}

/* A results file's root attributes, one run. */
static void results_header(at_h5 *h) {
  cr_assert(at_h5_set_attr_str(h, "/", "format", AT_RESULTS_FORMAT) == AT_OK);
  cr_assert(at_h5_set_attr_int(h, "/", "format_version", 1) == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "experiment", "x") == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "source", "") == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "attnlab_version", "0") == AT_OK);
  cr_assert(at_h5_set_attr_int(h, "/", "threads", 1) == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "date", "") == AT_OK);
  cr_assert(at_h5_set_attr_int(h, "/", "n_runs", 1) == AT_OK);
}

Test(results, reading_refuses_other_files) {
  char path[256];
  tmpname(path, "other");
  at_results *r = (at_results *)1;
  cr_expect(at_results_read(path, &r) == AT_E_IO && r == NULL);
  cr_expect(strstr(at_errmsg(), path) != NULL, "%s", at_errmsg());
  at_h5 *h;
  cr_assert(at_h5_create(path, &h) == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "format", "attnlab-checkpoint") == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
  cr_expect(at_results_read(path, &r) == AT_E_FORMAT);
  cr_expect(strstr(at_errmsg(), "not an attnlab-results file") != NULL, "%s", at_errmsg());
  /* a results file with a damaged run: lengths that disagree */
  cr_assert(at_h5_create(path, &h) == AT_OK);
  results_header(h);
  cr_assert(at_h5_write_int(h, "/runs/r/train_step", AT_SHAPE(2), (int32_t[]){0, 1}) == AT_OK);
  cr_assert(at_h5_write_double(h, "/runs/r/train_loss", AT_SHAPE(1), (double[]){0}) == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
  cr_expect(at_results_read(path, &r) == AT_E_FORMAT);
  cr_expect(strstr(at_errmsg(), "differ in length") != NULL, "%s", at_errmsg());
  /* a test set whose group accuracies do not match its evaluations */
  cr_assert(at_h5_create(path, &h) == AT_OK);
  results_header(h);
  const char *steps[] = {"train_step", "eval_step", "eval_sets/long/step"};
  const char *values[] = {"train_loss", "eval_loss", "eval_accuracy", "eval_sets/long/loss", "eval_sets/long/accuracy"};
  char d[100];
  for (int i = 0; i < 3; i++) {
    snprintf(d, sizeof d, "/runs/r/%s", steps[i]);
    cr_assert(at_h5_write_int(h, d, AT_SHAPE(2), (int32_t[]){0, 1}) == AT_OK);
  }
  for (int i = 0; i < 5; i++) {
    snprintf(d, sizeof d, "/runs/r/%s", values[i]);
    cr_assert(at_h5_write_double(h, d, AT_SHAPE(2), (double[]){0, 0}) == AT_OK);
  }
  cr_assert(at_h5_set_attr_str(h, "/runs/r/eval_sets/long", "config", "") == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/runs/r/eval_sets/long", "group_names", "a\nb") == AT_OK);
  cr_assert(at_h5_write_double(h, "/runs/r/eval_sets/long/group_accuracy", AT_SHAPE(3, 2), (double[6]){0}) == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
  cr_expect(at_results_read(path, &r) == AT_E_FORMAT);
  cr_expect(strstr(at_errmsg(), "group_accuracy is not [2, 2]") != NULL, "%s", at_errmsg());
  remove(path);
}
