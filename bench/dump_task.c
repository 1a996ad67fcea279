/* bench/dump_task.c: writes the examples one run of an experiment trains
 * and evaluates on, so that a reference implementation outside attnlab
 * (bench/torch_gla_rwkv.py) trains on exactly the same data, in the same
 * order, with the same settings.
 *
 *   dump_task EXPERIMENT.yaml RUN OUT.h5 [--set section.key=value]...
 *
 * RUN is the run's index (0-based, sweep points expanded) or its name.
 * OUT.h5: train/tokens, train/labels [steps x batch_size, T] (int32, the
 * order the trainer consumes them), test/tokens, test/labels [n, T] (the
 * examples every evaluation uses), labels -100 where unscored; root
 * attributes `config` (the run's resolved YAML) and `run`. Exit status 0,
 * or 2 with a message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/h5io.h"
#include "data/data.h"
#include "experiments/config.h"

static at_status dump(at_h5 *h, at_task *task, at_split split, int64_t n, int64_t T, const char *grp) {
  int32_t *tok = malloc((size_t)(n * T) * sizeof *tok), *lab = malloc((size_t)(n * T) * sizeof *lab);
  at_status st = tok && lab ? AT_OK : at_error(AT_E_NOMEM, "out of memory for %lld examples", (long long)n);
  if (st == AT_OK) at_task_batch(task, split, 0, n, tok, lab, NULL);
  char name[64];
  snprintf(name, sizeof name, "%s/tokens", grp);
  if (st == AT_OK) st = at_h5_write_int(h, name, AT_SHAPE(n, T), tok);
  snprintf(name, sizeof name, "%s/labels", grp);
  if (st == AT_OK) st = at_h5_write_int(h, name, AT_SHAPE(n, T), lab);
  free(tok), free(lab);
  return st;
}

static int run_index(const at_experiment *e, const char *arg) {
  for (int i = 0; i < e->n_runs; i++)
    if (strcmp(e->runs[i].name, arg) == 0) return i;
  char *end;
  long i = strtol(arg, &end, 10);
  return *end == 0 && i >= 0 && i < e->n_runs ? (int)i : -1;
}

int main(int argc, char **argv) {
  if (argc < 4 || (argc - 4) % 2) {
    fprintf(stderr, "usage: dump_task EXPERIMENT.yaml RUN OUT.h5 [--set section.key=value]...\n");
    return 2;
  }
  const char *sets[32];
  int n_sets = 0;
  for (int i = 4; i + 1 < argc && n_sets < 32; i += 2) {
    if (strcmp(argv[i], "--set") != 0) {
      fprintf(stderr, "dump_task: unknown option %s\n", argv[i]);
      return 2;
    }
    sets[n_sets++] = argv[i + 1];
  }
  at_experiment *e = NULL;
  at_task *task = NULL;
  at_h5 *h = NULL;
  at_status st = at_experiment_load(argv[1], sets, n_sets, &e);
  int k = st == AT_OK ? run_index(e, argv[2]) : -1;
  if (st == AT_OK && k < 0) st = at_error(AT_E_ARG, "no run '%s' in %s (%d runs)", argv[2], argv[1], e->n_runs);
  const at_run_cfg *rc = k >= 0 ? &e->runs[k] : NULL;
  if (st == AT_OK) st = at_task_open(&rc->data, &task);
  if (st == AT_OK) st = at_h5_create(argv[3], &h);
  if (st == AT_OK) {
    int64_t T = rc->data.seq_len, n_test = at_task_size(task, AT_SPLIT_TEST);
    if (rc->train.eval_examples > 0 && rc->train.eval_examples < n_test) n_test = rc->train.eval_examples;
    st = dump(h, task, AT_SPLIT_TRAIN, rc->train.steps * rc->train.batch_size, T, "train");
    if (st == AT_OK) st = dump(h, task, AT_SPLIT_TEST, n_test, T, "test");
    if (st == AT_OK) st = at_h5_set_attr_str(h, "/", "config", rc->yaml);
    if (st == AT_OK) st = at_h5_set_attr_str(h, "/", "run", rc->name);
    if (st == AT_OK) {
      st = at_h5_commit(h);
      h = NULL;
    }
  }
  if (st != AT_OK) fprintf(stderr, "dump_task: %s\n", at_errmsg());
  at_h5_close(h);
  at_task_free(task);
  at_experiment_free(e);
  return st == AT_OK ? 0 : 2;
}
