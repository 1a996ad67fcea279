/* experiments/config.h: experiment files.
 *
 * An experiment YAML has shared sections (data, model, train), a list of
 * runs that override them, and an optional sweep grid; loading expands it
 * into one resolved configuration per (run, sweep point). Loading is strict:
 * unknown keys (with the nearest valid one suggested), duplicate keys, wrong
 * types, out-of-range values and impossible shapes are refused before any
 * training with "file:line:col: message".
 */
#ifndef AT_EXPERIMENT_CONFIG_H
#define AT_EXPERIMENT_CONFIG_H

#include "data/data.h"
#include "models/config.h"
#include "optim/optim.h"

/* Training stages (the DSA recipe: a dense warm-up that trains only the
 * indexer, then sparse training of everything). With stages, train.steps is
 * the sum of their steps and each stage runs its own lr. */
#define AT_MAX_STAGES 4
typedef enum at_trainable {
  AT_TRAINABLE_ALL,      /* every parameter */
  AT_TRAINABLE_INDEXER,  /* only the DSA lightning indexers (the rest frozen) */
  AT_TRAINABLE_MAIN      /* everything except the indexers */
} at_trainable;

typedef struct at_stage_cfg {
  char name[32];
  int64_t steps;
  double lr;                   /* resolved: the stage's lr, or train.lr when not given */
  at_trainable trainable;
  int sparse;                  /* DSA top-k selection on (1) or dense attention (0) */
  int indexer_loss;            /* add the indexer's KL alignment loss */
} at_stage_cfg;

typedef struct at_train_cfg {
  at_optim_cfg optim;          /* lr, schedule, weight decay, clipping, ... */
  int64_t steps;
  int64_t batch_size;
  int64_t micro_batches;       /* the batch computed in this many equal slices, their gradients
                                  summed in slice order (memory; data-parallel ranks) */
  int64_t eval_every;          /* steps between evaluations (and at the end) */
  int64_t eval_examples;       /* test examples per evaluation (0: the whole test split) */
  int64_t checkpoint_every;    /* 0: only at the end */
  int64_t log_every;
  int threads;                 /* 0: all processors */
  int max_bad_steps;           /* consecutive non-finite steps before the run stops */
  int n_stages;                /* 0: one plain stage */
  at_stage_cfg stages[AT_MAX_STAGES];
  int64_t sample;              /* text runs: bytes of a sample printed at each evaluation (0: none) */
} at_train_cfg;

/* A further test set evaluated at every evaluation (data.eval): the run's
 * data section with some keys overridden (e.g. seq_len at 2x the training
 * length), under a name (results.h5 /runs/<id>/eval_sets/<name>/, a table
 * column). */
#define AT_MAX_EVAL_SETS 8
typedef struct at_eval_cfg {
  char name[40];               /* file-safe; default: the overridden keys, "seq_len=194" */
  at_task_cfg data;            /* resolved */
} at_eval_cfg;

#define AT_MAX_SWEEP_KEYS 8

typedef struct at_run_cfg {
  char name[64];               /* run name, with the sweep point appended ("kda lr=0.003") */
  char run_id[128];            /* file-safe id ("kda__lr=0.003") */
  char sweep_point[128];       /* "lr=0.003", or "" */
  char base_name[64];          /* run name without the sweep point */
  char sweep_values[AT_MAX_SWEEP_KEYS][64]; /* this point's value of each sweep key, as shown */
  uint64_t seed;
  at_task_cfg data;
  at_model_cfg model;
  at_train_cfg train;
  int n_evals;                 /* data.eval */
  at_eval_cfg evals[AT_MAX_EVAL_SETS];
  char *yaml;                  /* the resolved configuration as YAML (malloc'ed) */
} at_run_cfg;

typedef struct at_experiment {
  char name[128];
  char path[1024];             /* the file it was loaded from */
  char *source;                /* the file's text (malloc'ed) */
  int n_runs;
  at_run_cfg *runs;            /* expanded runs x sweep points, in file order */
  char report_metric[32];      /* which final metric the table ranks by ("eval_accuracy") */
  int n_sweep;                 /* sweep keys, in file order */
  char sweep_keys[AT_MAX_SWEEP_KEYS][64];   /* as shown in run names ("lr", "data") */
  int sweep_best[AT_MAX_SWEEP_KEYS];        /* 1: the table keeps the best point over this key */
  int seed_key;                             /* the sweep key "seed" (the table averages over
                                               it: mean +- std), or -1 */
} at_experiment;

/* Loads and checks `path`, applying `--set section.key=value` overrides (in
 * order, to the shared sections) before expansion. On failure returns
 * AT_E_CONFIG (or AT_E_IO) with "file:line:col: message" in at_errmsg(). */
at_status at_experiment_load(const char *path, const char *const *sets, int n_sets,
                             at_experiment **out);
/* The same from text in memory (a checkpoint's resolved configuration);
 * `name` stands for the file in messages. */
at_status at_experiment_load_text(const char *name, const char *text, at_experiment **out);
void at_experiment_free(at_experiment *e);

#endif
