/* The report of an experiment (experiments/report.c, plots.c) against the
 * results it reads: a seed sweep becomes mean ± sample standard deviation of
 * the per-seed values, and the plots' data files carry the same numbers
 * (accuracy against length from the training length and a test set, the
 * needle heat map's depth buckets by length, of the test split and of a
 * test set at another length, training tokens of each evaluation, the
 * cost bars' median tokens/s); data.label names a sweep column. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiments/results.h"
#include "testing_train.h"

static const char *yaml =
    "experiment: report_test\n"
    "seed: 0\n"
    "data: {train_examples: 500, test_examples: 32}\n"
    "model: {d_model: 16, n_heads: 2, mlp: none, position: nope, layers: [kda]}\n"
    "train: {steps: 6, batch_size: 4, lr: 3.0e-3, eval_every: 3, threads: 1, log_every: 100}\n"
    "runs:\n"
    "  - {name: kda}\n"
    "  - {name: full, model: {layers: [full]}}\n"
    "sweep:\n"
    "  data:\n"
    "    - {seq_len: 32, task: mqar, vocab_size: 128, num_kv_pairs: 4,\n"
    "       eval: [{name: 2x, seq_len: 64, num_kv_pairs: 8}], label: mqar32}\n"
    "    - {seq_len: 24, task: niah, vocab_size: 64, num_depth_buckets: 3}\n"
    "    - {seq_len: 40, task: niah, vocab_size: 64, num_depth_buckets: 3, eval: [{name: long, seq_len: 56}]}\n"
    "  seed: [0, 1, 2]\n"
    "report: {metric: auto, best_over: []}\n";

static char dir[256];

static char *slurp(const char *path) {
  static char buf[1 << 16];
  FILE *f = fopen(path, "r");
  cr_assert(f, "%s missing", path);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return buf;
}

static const at_results_run *run_of(const at_results *r, const char *id) {
  const at_results_run *rr = at_results_find(r, id);
  cr_assert(rr, "run %s missing", id);
  return rr;
}

/* mean and sample standard deviation of three numbers */
static void stats3(const double *x, double *mean, double *sd) {
  *mean = (x[0] + x[1] + x[2]) / 3;
  double s = 0;
  for (int i = 0; i < 3; i++) s += (x[i] - *mean) * (x[i] - *mean);
  *sd = sqrt(s / 2);
}

static at_results *run_experiment(void) {
  snprintf(dir, sizeof dir, "/tmp/attnlab_report_XXXXXX");
  cr_assert(mkdtemp(dir));
  char path[400];
  snprintf(path, sizeof path, "%s/exp.yaml", dir);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fputs(yaml, f);
  fclose(f);
  at_test_train(path, dir);
  snprintf(path, sizeof path, "%s/results.h5", dir);
  at_results *r = NULL;
  cr_assert(at_results_read(path, &r) == AT_OK, "%s", at_errmsg());
  return r;
}

Test(report, seeds_are_mean_and_std_and_the_plots_carry_the_same_numbers, .timeout = 300) {
  at_results *r = run_experiment();
  char id[160], path[600], want[200];
  /* table: kda on mqar (its column and the 2x set) as mean ± std over the seeds */
  double acc[3], set[3], mean, sd;
  for (int s = 0; s < 3; s++) {
    snprintf(id, sizeof id, "kda__data=mqar32__seed=%d", s);
    const at_results_run *rr = run_of(r, id);
    const at_results_evalset *es = at_results_get_evalset(rr, "2x");
    cr_assert(es && es->n);
    acc[s] = rr->final_eval_accuracy, set[s] = es->accuracy[es->n - 1];
  }
  snprintf(path, sizeof path, "%s/table.md", dir);
  char *table = strdup(slurp(path));
  stats3(acc, &mean, &sd);
  snprintf(want, sizeof want, "| kda | %.1f ± %.1f%% |", 100 * mean, 100 * sd);
  cr_expect(strstr(table, want), "%s not in\n%s", want, table);
  cr_expect(strstr(table, "mean ± standard deviation over 3 seeds"), "%s", table);
  cr_expect(strstr(table, "| run | mqar32 | mqar32 2x | 24 | 40 |"), "data.label names a column: %s", table);
  cr_expect(strstr(table, "| params | tokens/s | cache B/token | state B |"), "%s", table);
  free(table);

  /* length.mqar.0.dat: kda at T 32 (its column) and 64 (the 2x set), in order */
  snprintf(path, sizeof path, "%s/plot/length.mqar.0.dat", dir);
  long long len[2];
  double a[2], d[2];
  cr_assert(sscanf(slurp(path), "%lld %lf %lf\n%lld %lf %lf", &len[0], &a[0], &d[0], &len[1], &a[1], &d[1]) == 6);
  cr_expect(len[0] == 32 && len[1] == 64);
  cr_expect(fabs(a[0] - 100 * mean) < 1e-3 && fabs(d[0] - 100 * sd) < 1e-3, "%g vs %g", a[0], 100 * mean);
  stats3(set, &mean, &sd);
  cr_expect(fabs(a[1] - 100 * mean) < 1e-3 && fabs(d[1] - 100 * sd) < 1e-3, "%g vs %g", a[1], 100 * mean);
  /* niah at two lengths: a curve too */
  snprintf(path, sizeof path, "%s/plot/length.niah.1.dat", dir);
  cr_expect(sscanf(slurp(path), "%lld %*f %*f\n%lld", &len[0], &len[1]) == 2 && len[0] == 24 && len[1] == 40);

  /* needle.1.dat (full, the second row): depth x length (T 24 and 40 trained,
   * 56 the test set of the T 40 column), mean group accuracy */
  snprintf(path, sizeof path, "%s/plot/needle.1.dat", dir);
  char *needle = strdup(slurp(path)), *line = needle;
  for (int y = 0; y < 3; y++)
    for (int g = 0; g < 3; g++) {
      double x, half, z, gs[3];
      int yy;
      cr_assert(sscanf(line, "%lf %lf %d %lf", &x, &half, &yy, &z) == 4, "line %d.%d", y, g);
      line = strchr(line, '\n') + 1;
      for (int s = 0; s < 3; s++) {
        snprintf(id, sizeof id, "full__data=%d__seed=%d", y ? 40 : 24, s);
        const at_results_run *rr = run_of(r, id);
        const at_results_evalset *es = y == 2 ? at_results_get_evalset(rr, "long") : NULL;
        cr_assert(rr->n_groups == 3 && rr->n_eval > 0);
        cr_assert(y < 2 || (es && es->n_groups == 3 && es->n == rr->n_eval &&
                            !strcmp(es->group_names[2], rr->group_names[2])));
        gs[s] = y < 2 ? rr->eval_group_accuracy[(rr->n_eval - 1) * 3 + g] : es->group_accuracy[(es->n - 1) * 3 + g];
      }
      stats3(gs, &mean, &sd);
      cr_expect(yy == y && fabs(x - 100.0 * (g + 0.5) / 3) < 1e-3 && fabs(half - 50.0 / 3) < 1e-3);
      cr_expect(fabs(z - 100 * mean) < 1e-3, "depth %d row %d: %g vs %g", g, y, z, 100 * mean);
    }
  snprintf(path, sizeof path, "%s/plot/needle.gp", dir);
  cr_expect(strstr(slurp(path), "'T 24' 0, 'T 40' 1, 'T 56' 2"), "%s", slurp(path));
  free(needle);

  /* the eval curve's fourth column: training tokens = step x batch x T */
  snprintf(path, sizeof path, "%s/plot/kda__data=mqar32__seed=0.eval.dat", dir);
  long long step;
  double loss, ac, tokens;
  cr_assert(sscanf(slurp(path), "%lld %lf %lf %lf", &step, &loss, &ac, &tokens) == 4);
  const at_results_run *first = run_of(r, "kda__data=mqar32__seed=0");
  cr_expect(first->eval_step[0] == step && fabs(tokens - (double)step * 4 * 32) < 1e-6, "%lld %g", step, tokens);

  /* cost.dat: the kda row's median tokens/s over its 9 runs, its cache and state */
  double t[9];
  int n = 0;
  for (int i = 0; i < r->n_runs; i++)
    if (!strcmp(r->runs[i]->base_name, "kda")) t[n++] = r->runs[i]->tokens_per_second;
  cr_assert(n == 9);
  for (int i = 0; i < n; i++)
    for (int j = i + 1; j < n; j++)
      if (t[j] < t[i]) {
        double x = t[i];
        t[i] = t[j], t[j] = x;
      }
  snprintf(path, sizeof path, "%s/plot/cost.dat", dir);
  char *cost = strchr(slurp(path), '\n') + 1;
  double tps, cache, state;
  cr_assert(sscanf(cost, "0 \"kda\" %lf %lf %lf", &tps, &cache, &state) == 3, "%s", cost);
  cr_expect(fabs(tps - t[4]) <= 1e-5 * t[4] && cache == 0 && state > 0, "%g vs %g", tps, t[4]);
  cost = strchr(cost, '\n') + 1;
  cr_assert(sscanf(cost, "1 \"full\" %lf %lf %lf", &tps, &cache, &state) == 3, "%s", cost);
  cr_expect(cache > 0 && state == 0, "full attention caches keys and values per token");
  at_results_free(r);
  at_test_rmdir(dir);
}
