/* experiments/evaluate.h: evaluating a run's model (internal to the runner
 * and `train --eval-only`): its task's test split, the further test sets of
 * data.eval, and the text sample of train.sample. */
#ifndef AT_EVALUATE_H
#define AT_EVALUATE_H

#include <stdio.h>

#include "experiments/config.h"
#include "experiments/results.h"
#include "models/model.h"

#define AT_EVAL_MAX_GROUPS 64

typedef struct at_eval_result {
  double loss, accuracy;
  int n_groups;
  double group_accuracy[AT_EVAL_MAX_GROUPS];
} at_eval_result;

/* Mean loss and accuracy over the labelled positions of the first n test
 * examples of `task` (sequences of T tokens, its seq_len), and the accuracy per
 * example group, under stage flags `stage`; batches of `batch` sequences.
 * Gradients off; memory linear in batch x T (at_model_eval). */
at_status at_evaluate(at_ctx *c, at_model *m, at_task *task, int64_t T, int64_t n, int64_t batch, unsigned stage,
                      at_eval_result *r);

/* The run's entry in the results: parameters, inference memory, accuracy
 * groups of its task (once). */
at_status at_results_run_init(at_results_run *rr, const at_model *m, const at_task *task);

/* The tasks of a run's test sets (data.eval); a text set reading the run's
 * corpus shares its token cache (`cache`), another corpus gets its own next
 * to it. */
typedef struct at_eval_sets {
  int n;
  at_task *task[AT_MAX_EVAL_SETS];
  char *config[AT_MAX_EVAL_SETS]; /* each set's resolved data section, for the results */
} at_eval_sets;
at_status at_eval_sets_open(const at_run_cfg *rc, const char *cache, at_eval_sets *s);
void at_eval_sets_close(at_eval_sets *s);

/* Evaluates every test set (the first `n` examples of each, at most) and
 * logs it in rr at `step`; `line` receives "  <name>: loss .. accuracy ..%"
 * for each set (or bits/byte for text). */
at_status at_eval_sets_run(at_ctx *c, at_model *m, const at_run_cfg *rc, at_eval_sets *s, int64_t n, unsigned stage,
                           at_results_run *rr, int64_t step, char *line, size_t size);

/* A text run's sample: n bytes continuing a newline, drawn at temperature 1
 * with the seed, as printable text (control bytes but newline and tab
 * escaped as \xHH) into a malloc'ed *text. AT_E_ARG if a mixer cannot
 * decode (the message names it). */
at_status at_text_sample(at_ctx *c, at_model *m, int64_t n, uint64_t seed, unsigned stage, char **text);

/* The stage flags (AT_STAGE_*) the training was under at step index
 * `step` (0-based), the indexer loss left out: what an evaluation then runs. */
unsigned at_eval_stage_at(const at_train_cfg *tc, int64_t step);

#endif
