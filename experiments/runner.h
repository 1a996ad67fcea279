/* experiments/runner.h: training every run of an experiment.
 *
 * For each (run, sweep point): build the task, the model and the optimiser,
 * train with a progress line, evaluate every eval_every steps and at the
 * end, checkpoint every checkpoint_every steps and at the end (atomically),
 * and record curves and final metrics in results.h5. At the end, write the
 * comparison table (table.md, also printed) and the curves (curves.png via
 * gnuplot, with the data and script beside it).
 *
 * Output directory layout (<out> = results/<experiment> unless given):
 *   <out>/results.h5, <out>/table.md, <out>/curves.png, <out>/plot/ (data + gnuplot script),
 *   <out>/checkpoints/<run_id>.h5
 */
#ifndef AT_RUNNER_H
#define AT_RUNNER_H

#include <stdio.h>

#include "experiments/config.h"

typedef struct at_train_opts {
  const char *out_dir;   /* NULL: results/<experiment> */
  int resume;            /* continue from checkpoints; completed runs are kept */
  int progress;          /* 1: redraw one line on a terminal; 0: plain lines */
  FILE *log;             /* progress and summaries (stdout if NULL) */
  int64_t stop_after;    /* > 0: leave each run after this many steps, checkpointed, as if
                            interrupted (continue later with resume) */
  int data_parallel;     /* under MPI: every rank trains every run, each its share of every
                            batch's slices (train.micro_batches), gradients gathered; rank 0
                            evaluates and writes (experiments/dist.h) */
} at_train_opts;

/* Creates the output directory (refusing one that cannot be written) and
 * runs everything. A run that fails (bad shapes, too many non-finite steps)
 * is recorded with its reason, counted in *n_failed, and the others still
 * run; the status is the first failure that is not a run's own (I/O, a
 * checkpoint that cannot be resumed). */
at_status at_experiment_train(const at_experiment *e, const at_train_opts *o, int *n_failed);

/* --eval-only: evaluates each run's checkpoint in the output directory
 * (train.stages' stage at its step) on the test split and every test set of
 * data.eval, records the evaluations at the checkpoint's step in results.h5
 * (replacing those at that step and after; a run the results lack is added
 * from its checkpoint) and writes the table and curves. Runs without a
 * checkpoint, or whose checkpoint is of another model, are counted in
 * *n_failed; AT_E_IO when no run could be evaluated
 * (experiments/evaluate.c). */
at_status at_experiment_eval_only(const at_experiment *e, const at_train_opts *o, int *n_failed);

/* What --dry-run prints: each resolved run with its parameter count,
 * inference memory per token and recurrent state. Builds the models (to
 * check shapes) without training. */
at_status at_experiment_describe(const at_experiment *e, FILE *out);

/* Writes table.md and the curves for a results file (also used by --resume
 * with nothing left to train). `e` provides the report settings. */
at_status at_experiment_report(const at_experiment *e, const char *out_dir, FILE *log);

#endif
