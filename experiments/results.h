/* experiments/results.h: the results file of an experiment (results.h5).
 *
 * The whole file is kept in memory and rewritten atomically (temporary
 * file + rename) by at_results_write, which the train tool calls after each
 * evaluation and at the end of each run, so a crash keeps the curves up to
 * the last evaluation. The same structure is what at_results_read returns
 * (for tests, the table and plot writer, and --resume).
 *
 * Layout:
 *   /  attributes format = "attnlab-results", format_version = 1, experiment,
 *      source (the experiment file's text), attnlab_version, threads,
 *      date (UTC, ISO 8601, when the results were created), n_runs
 *   /runs/<id>/  one group per run and sweep point, with datasets
 *      train_step (int32) [n_train], train_loss (float64) [n_train],
 *      eval_step (int32) [n_eval], eval_loss, eval_accuracy (float64) [n_eval],
 *      eval_group_accuracy (float64) [n_eval, n_groups] (only if n_groups > 0)
 *    and attributes index (file order), name, base_name, sweep_point, config
 *      (resolved YAML), status, params, steps, skipped_steps, train_tokens,
 *      train_seconds, wall_seconds, tokens_per_second, final_eval_loss,
 *      final_eval_accuracy, eval_group_names (newline-separated, if any),
 *      extra_attrs (newline-separated names of the extra attributes) and the
 *      extra attributes themselves (numbers or strings);
 *   /runs/<id>/series/<name>/  named curves: step (int32), value (float64).
 *   /runs/<id>/eval_sets/<name>/  a further test set (data.eval) evaluated at
 *      each evaluation: datasets step (int32), loss, accuracy (float64) and
 *      attributes config (the test set's resolved data section, a YAML flow
 *      map), final_loss, final_accuracy (the last evaluation's, NaN if none).
 * tools/results.py reads it all into Python (h5py; pandas if available).
 */
#ifndef AT_RESULTS_H
#define AT_RESULTS_H

#include "core/base.h"

#define AT_RESULTS_FORMAT "attnlab-results"
#define AT_RESULTS_VERSION 1
#ifndef AT_VERSION_STRING
#define AT_VERSION_STRING "0.1.0"
#endif

/* A run attribute beyond the fixed ones (kv_cache_bytes_per_token,
 * bits_per_byte, ...): a number, or a string when str != NULL. */
typedef struct at_results_extra {
  char key[64];
  double num;
  char *str;
} at_results_extra;

/* A named curve beyond the fixed ones (e.g. "indexer_kl"): values by step. */
typedef struct at_results_series {
  char name[48];
  int64_t n, cap_;
  int64_t *step;
  double *value;
} at_results_series;

/* A further test set evaluated along a run (data.eval). */
typedef struct at_results_evalset {
  char name[48];
  char *config;               /* its resolved data section (malloc'ed, never NULL) */
  int64_t n, cap_;
  int64_t *step;
  double *loss, *accuracy;
  int n_groups;               /* per-group accuracy (niah depth buckets); 0: none */
  char **group_names;
  double *group_accuracy;     /* [n][n_groups] */
} at_results_evalset;

typedef struct at_results_run {
  char id[128];               /* group name under /runs ("kda__lr=0.003") */
  char name[128];             /* display name ("kda lr=0.003") */
  char base_name[64];         /* run name without the sweep point */
  char sweep_point[128];      /* "lr=0.003", or "" */
  char *config;               /* resolved YAML (malloc'ed, never NULL) */
  char status[256];           /* "running" (initially), "ok", "stopped: <reason>" */
  int64_t params;             /* parameter count */
  int64_t steps;              /* training steps done */
  int64_t skipped_steps;      /* non-finite steps skipped */
  int64_t train_tokens;       /* training tokens consumed */
  double train_seconds;       /* training time: evaluation and checkpoints excluded */
  double wall_seconds;        /* the run's wall time */
  /* Derived by at_results_write (set the inputs, not these):
   *   tokens_per_second = train_tokens / train_seconds (NaN while train_seconds is 0),
   *   final_eval_loss / final_eval_accuracy = the last evaluation's (NaN if none). */
  double tokens_per_second;
  double final_eval_loss, final_eval_accuracy;
  /* curves (append with at_results_log_*) */
  int64_t n_train;
  int64_t *train_step;
  double *train_loss;
  int64_t n_eval;
  int64_t *eval_step;
  double *eval_loss, *eval_accuracy;
  int n_groups;               /* per-group accuracy (e.g. NIAH depth buckets); 0: none */
  char **group_names;
  double *eval_group_accuracy; /* [n_eval][n_groups] */
  int n_extra;
  at_results_extra *extra;
  int n_series;               /* named curves, under /runs/<id>/series/<name>/{step,value} */
  at_results_series *series;
  int cap_series_;
  int n_evalsets;             /* test sets of data.eval, in the order first logged */
  at_results_evalset *evalsets;
  int cap_evalsets_;
  int64_t cap_train_, cap_eval_; /* private */
  int cap_extra_;
} at_results_run;

typedef struct at_results {
  char experiment[128];
  char *source;               /* the experiment file's text (malloc'ed, never NULL) */
  char version[32];           /* attnlab version */
  int threads;                /* thread count of the process */
  char date[32];              /* creation, UTC "2025-01-31T12:00:00Z" */
  int n_runs;
  at_results_run **runs;      /* in the order they were added */
  int cap_runs_;              /* private */
} at_results;

/* New, empty results: version AT_VERSION_STRING, threads at_threads(),
 * date now. `source_yaml` may be NULL. */
at_status at_results_new(const char *experiment, const char *source_yaml, at_results **out);
/* Reads a results file written by at_results_write (AT_E_IO, AT_E_FORMAT
 * with the file and object named). */
at_status at_results_read(const char *path, at_results **out);
void at_results_free(at_results *r);
/* Fills every run's derived fields, then writes everything to `path`
 * atomically (path.tmp, then rename). */
at_status at_results_write(at_results *r, const char *path);

/* The run with this id, or NULL. */
at_results_run *at_results_find(const at_results *r, const char *id);
/* Adds a run (status "running"). The id must be new, non-empty, shorter than
 * 128 bytes, without '/' and not "." or "..". `config_yaml` may be NULL. The
 * pointer stays valid until at_results_free. */
at_status at_results_add_run(at_results *r, const char *id, const char *config_yaml,
                             at_results_run **out);
/* Moves run `id` from src to the end of dst (AT_E_ARG if src lacks it or
 * dst has it). */
at_status at_results_move_run(at_results *dst, at_results *src, const char *id);

/* Names the accuracy groups (at most once per run, before its first
 * evaluation; names without newlines). */
at_status at_results_set_groups(at_results_run *run, int n_groups, const char *const *names);
/* Appends curve points. Steps must be in 0..INT32_MAX and not decrease.
 * `group_accuracy` has n_groups values (NULL when n_groups is 0). */
at_status at_results_log_train(at_results_run *run, int64_t step, double loss);
at_status at_results_log_eval(at_results_run *run, int64_t step, double loss, double accuracy,
                              const double *group_accuracy);
/* Appends to the named curve (created on first use; names are file-safe). */
at_status at_results_log_series(at_results_run *run, const char *name, int64_t step, double value);
/* The named curve, or NULL. */
const at_results_series *at_results_get_series(const at_results_run *run, const char *name);
/* Appends an evaluation of the test set `name` (created on first use with
 * its configuration text; later calls may pass NULL). Names have no '/'.
 * `group_accuracy` has the set's n_groups values (NULL when it has none). */
at_status at_results_log_evalset(at_results_run *run, const char *name, const char *config, int64_t step,
                                 double loss, double accuracy, const double *group_accuracy);
/* Names the accuracy groups of test set `name` (created if new), once,
 * before its first evaluation (names without newlines). */
at_status at_results_set_evalset_groups(at_results_run *run, const char *name, const char *config, int n_groups,
                                        const char *const *names);
/* The test set `name`, or NULL. */
const at_results_evalset *at_results_get_evalset(const at_results_run *run, const char *name);
/* Drops the curve points after `step` (resuming from a checkpoint at step). */
void at_results_truncate(at_results_run *run, int64_t step);
/* Drops the evaluations (of the test split and of every test set) at
 * `step` and after (re-evaluating a checkpoint). */
void at_results_drop_evals(at_results_run *run, int64_t step);

/* Extra run attributes (a key may not be one of the fixed names above;
 * setting a key again replaces its value). */
at_status at_results_set_num(at_results_run *run, const char *key, double value);
at_status at_results_set_str(at_results_run *run, const char *key, const char *value);
/* The extra attribute `key`, or NULL. */
const at_results_extra *at_results_get(const at_results_run *run, const char *key);

#endif
