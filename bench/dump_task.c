/* bench/dump_task.c: writes the exact batches a run of an experiment trains
 * on, and its evaluation examples, to HDF5, so that another implementation
 * (bench/torch_linpath.py) can train on the same data in the same order.
 *
 *   build/bench/dump_task FILE.yaml RUN OUT.h5 [--set section.key=value]...
 *
 * RUN is the run's index in the expanded experiment (0 = the first run).
 * OUT.h5: train_tokens, train_labels [steps * batch_size, T] (int32, in the
 * order of the steps), test_tokens, test_labels [n_eval, T] (the examples
 * an evaluation uses), and root attributes task, steps, batch_size, seq_len,
 * vocab_size, seed, run (its name) and config (its resolved YAML, which
 * bench/torch_gla_rwkv.py builds its model and recipe from).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/h5io.h"
#include "data/data.h"
#include "experiments/config.h"

static int fail(const char *what) {
  fprintf(stderr, "dump_task: %s: %s\n", what, at_errmsg());
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: dump_task FILE.yaml RUN OUT.h5 [--set section.key=value]...\n");
    return 2;
  }
  const char *sets[32];
  int n_sets = 0;
  for (int i = 4; i + 1 < argc && n_sets < 32; i += 2)
    if (!strcmp(argv[i], "--set")) sets[n_sets++] = argv[i + 1];
  at_experiment *e = NULL;
  if (at_experiment_load(argv[1], sets, n_sets, &e) != AT_OK) return fail(argv[1]);
  int run = atoi(argv[2]);
  if (run < 0 || run >= e->n_runs) {
    fprintf(stderr, "dump_task: run %d outside 0..%d\n", run, e->n_runs - 1);
    return 2;
  }
  const at_run_cfg *rc = &e->runs[run];
  at_task *task = NULL;
  if (at_task_open(&rc->data, &task) != AT_OK) return fail("task");
  const int64_t B = rc->train.batch_size, steps = rc->train.steps, T = rc->data.seq_len;
  int64_t n_test = at_task_size(task, AT_SPLIT_TEST);
  if (rc->train.eval_examples > 0) n_test = AT_MIN(n_test, rc->train.eval_examples);
  int32_t *tok = malloc((size_t)(steps * B * T) * sizeof *tok), *lab = malloc((size_t)(steps * B * T) * sizeof *lab);
  int32_t *ttok = malloc((size_t)(n_test * T) * sizeof *ttok), *tlab = malloc((size_t)(n_test * T) * sizeof *tlab);
  if (!tok || !lab || !ttok || !tlab) return fail("out of memory");
  for (int64_t s = 0; s < steps; s++) /* the runner's order: examples s B .. s B + B - 1 */
    at_task_batch(task, AT_SPLIT_TRAIN, s * B, B, tok + s * B * T, lab + s * B * T, NULL);
  at_task_batch(task, AT_SPLIT_TEST, 0, n_test, ttok, tlab, NULL);
  at_h5 *h = NULL;
  if (at_h5_create(argv[3], &h) != AT_OK) return fail(argv[3]);
  if (at_h5_write_int(h, "train_tokens", 2, (int64_t[]){steps * B, T}, tok) != AT_OK ||
      at_h5_write_int(h, "train_labels", 2, (int64_t[]){steps * B, T}, lab) != AT_OK ||
      at_h5_write_int(h, "test_tokens", 2, (int64_t[]){n_test, T}, ttok) != AT_OK ||
      at_h5_write_int(h, "test_labels", 2, (int64_t[]){n_test, T}, tlab) != AT_OK ||
      at_h5_set_attr_str(h, "/", "task", at_task_name(rc->data.kind)) != AT_OK ||
      at_h5_set_attr_int(h, "/", "steps", steps) != AT_OK || at_h5_set_attr_int(h, "/", "batch_size", B) != AT_OK ||
      at_h5_set_attr_int(h, "/", "seq_len", T) != AT_OK ||
      at_h5_set_attr_int(h, "/", "vocab_size", rc->data.vocab_size) != AT_OK ||
      at_h5_set_attr_int(h, "/", "seed", (int64_t)rc->seed) != AT_OK ||
      at_h5_set_attr_str(h, "/", "run", rc->name) != AT_OK ||
      at_h5_set_attr_str(h, "/", "config", rc->yaml) != AT_OK || at_h5_commit(h) != AT_OK)
    return fail(argv[3]);
  printf("dump_task: %s run %d (%s): %lld training sequences, %lld test sequences of %lld tokens -> %s\n",
         argv[1], run, rc->name, (long long)(steps * B), (long long)n_test, (long long)T, argv[3]);
  free(tok), free(lab), free(ttok), free(tlab);
  at_task_free(task);
  at_experiment_free(e);
  return 0;
}
