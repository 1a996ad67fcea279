/* experiments/results.c: the results file, kept in memory and rewritten
 * whole (it is small: curves of a few thousand points per run). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/h5io.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "experiments/results.h"

/* Attribute names of a run group that extras may not use. */
static const char *const fixed_attrs[] = {
  "index", "name", "base_name", "sweep_point", "config", "status", "params", "steps",
  "skipped_steps", "train_tokens", "train_seconds", "wall_seconds", "tokens_per_second",
  "final_eval_loss", "final_eval_accuracy", "eval_group_names", "extra_attrs",
};

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

/* ---- building ------------------------------------------------------------------ */

at_status at_results_new(const char *experiment, const char *source_yaml, at_results **out) {
  *out = NULL;
  at_results *r = calloc(1, sizeof *r);
  if (!r || !(r->source = dup_or_empty(source_yaml))) {
    free(r);
    return at_error(AT_E_NOMEM, "results: out of memory");
  }
  snprintf(r->experiment, sizeof r->experiment, "%s", experiment ? experiment : "");
  snprintf(r->version, sizeof r->version, "%s", AT_VERSION_STRING);
  r->threads = at_threads();
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(r->date, sizeof r->date, "%Y-%m-%dT%H:%M:%SZ", &tm);
  *out = r;
  return AT_OK;
}

static void free_lines(char **v, int n) {
  for (int i = 0; i < n; i++) free(v[i]);
  free(v);
}

static void free_run(at_results_run *run) {
  if (!run) return;
  free(run->config);
  free(run->train_step), free(run->train_loss);
  free(run->eval_step), free(run->eval_loss), free(run->eval_accuracy), free(run->eval_group_accuracy);
  free_lines(run->group_names, run->n_groups);
  for (int i = 0; i < run->n_extra; i++) free(run->extra[i].str);
  free(run->extra);
  for (int i = 0; i < run->n_series; i++) free(run->series[i].step), free(run->series[i].value);
  free(run->series);
  for (int i = 0; i < run->n_evalsets; i++) {
    at_results_evalset *e = &run->evalsets[i];
    free(e->config), free(e->step), free(e->loss), free(e->accuracy), free(e->group_accuracy);
    free_lines(e->group_names, e->n_groups);
  }
  free(run->evalsets);
  free(run);
}

void at_results_free(at_results *r) {
  if (!r) return;
  for (int i = 0; i < r->n_runs; i++) free_run(r->runs[i]);
  free(r->runs);
  free(r->source);
  free(r);
}

at_results_run *at_results_find(const at_results *r, const char *id) {
  for (int i = 0; i < r->n_runs; i++)
    if (strcmp(r->runs[i]->id, id) == 0) return r->runs[i];
  return NULL;
}

/* Room for one more run. */
static at_status grow_runs(at_results *r) {
  if (r->n_runs < r->cap_runs_) return AT_OK;
  int cap = r->cap_runs_ ? 2 * r->cap_runs_ : 8;
  at_results_run **nr = realloc(r->runs, (size_t)cap * sizeof *nr);
  if (!nr) return at_error(AT_E_NOMEM, "results: out of memory");
  r->runs = nr, r->cap_runs_ = cap;
  return AT_OK;
}

at_status at_results_add_run(at_results *r, const char *id, const char *config_yaml, at_results_run **out) {
  *out = NULL;
  if (!id[0] || strlen(id) >= sizeof r->runs[0]->id || strchr(id, '/') || strcmp(id, ".") == 0 ||
      strcmp(id, "..") == 0)
    return at_error(AT_E_ARG, "results: run id '%s' is empty, too long, or contains '/'", id);
  if (at_results_find(r, id)) return at_error(AT_E_ARG, "results: run '%s' added twice", id);
  if (grow_runs(r) != AT_OK) return AT_E_NOMEM;
  at_results_run *run = calloc(1, sizeof *run);
  if (!run || !(run->config = dup_or_empty(config_yaml))) {
    free(run);
    return at_error(AT_E_NOMEM, "results: out of memory");
  }
  snprintf(run->id, sizeof run->id, "%s", id);
  snprintf(run->name, sizeof run->name, "%s", id);
  snprintf(run->status, sizeof run->status, "running");
  run->tokens_per_second = run->final_eval_loss = run->final_eval_accuracy = NAN;
  r->runs[r->n_runs++] = run;
  *out = run;
  return AT_OK;
}

at_status at_results_move_run(at_results *dst, at_results *src, const char *id) {
  int k = 0;
  while (k < src->n_runs && strcmp(src->runs[k]->id, id)) k++;
  if (k == src->n_runs || at_results_find(dst, id))
    return at_error(AT_E_ARG, "results: run '%s' cannot be moved", id);
  if (grow_runs(dst) != AT_OK) return AT_E_NOMEM;
  dst->runs[dst->n_runs++] = src->runs[k];
  memmove(src->runs + k, src->runs + k + 1, (size_t)(src->n_runs - k - 1) * sizeof *src->runs);
  src->n_runs--;
  return AT_OK;
}

/* Copies n group names (no newlines) for run `id`. */
static at_status copy_names(const char *id, int n, const char *const *names, char ***out) {
  *out = NULL;
  if (n < 0) return at_error(AT_E_ARG, "results: run %s: %d groups", id, n);
  for (int i = 0; i < n; i++)
    if (strchr(names[i], '\n'))
      return at_error(AT_E_ARG, "results: run %s: group name '%s' contains a newline", id, names[i]);
  if (n == 0) return AT_OK;
  char **v = calloc((size_t)n, sizeof *v);
  for (int i = 0; v && i < n; i++)
    if (!(v[i] = strdup(names[i]))) {
      free_lines(v, i);
      v = NULL;
    }
  if (!v) return at_error(AT_E_NOMEM, "results: out of memory");
  *out = v;
  return AT_OK;
}

at_status at_results_set_groups(at_results_run *run, int n_groups, const char *const *names) {
  if (run->n_groups || run->n_eval)
    return at_error(AT_E_STATE, "results: run %s: accuracy groups must be set once, before the first evaluation",
                    run->id);
  at_status st = copy_names(run->id, n_groups, names, &run->group_names);
  if (st == AT_OK) run->n_groups = n_groups;
  return st;
}

/* Grows *p (elements of `size` bytes) to hold `cap` elements. */
static int grow(void **p, int64_t cap, size_t size) {
  void *q = realloc(*p, (size_t)cap * size);
  if (!q) return 0;
  *p = q;
  return 1;
}

static at_status check_step(const at_results_run *run, int64_t step, const int64_t *steps, int64_t n,
                            const char *what) {
  if (step < 0 || step > INT32_MAX)
    return at_error(AT_E_ARG, "results: run %s: %s step %lld out of range", run->id, what, (long long)step);
  if (n > 0 && step < steps[n - 1])
    return at_error(AT_E_ARG, "results: run %s: %s step %lld after step %lld", run->id, what, (long long)step,
                    (long long)steps[n - 1]);
  return AT_OK;
}

at_status at_results_log_train(at_results_run *run, int64_t step, double loss) {
  at_status st = check_step(run, step, run->train_step, run->n_train, "train");
  if (st != AT_OK) return st;
  if (run->n_train == run->cap_train_) {
    int64_t cap = run->cap_train_ ? 2 * run->cap_train_ : 256;
    if (!grow((void **)&run->train_step, cap, sizeof(int64_t)) ||
        !grow((void **)&run->train_loss, cap, sizeof(double)))
      return at_error(AT_E_NOMEM, "results: out of memory");
    run->cap_train_ = cap;
  }
  run->train_step[run->n_train] = step;
  run->train_loss[run->n_train++] = loss;
  return AT_OK;
}

at_status at_results_log_eval(at_results_run *run, int64_t step, double loss, double accuracy,
                              const double *group_accuracy) {
  at_status st = check_step(run, step, run->eval_step, run->n_eval, "eval");
  if (st != AT_OK) return st;
  if (run->n_groups > 0 && !group_accuracy)
    return at_error(AT_E_ARG, "results: run %s: %d group accuracies expected", run->id, run->n_groups);
  if (run->n_eval == run->cap_eval_) {
    int64_t cap = run->cap_eval_ ? 2 * run->cap_eval_ : 64;
    if (!grow((void **)&run->eval_step, cap, sizeof(int64_t)) ||
        !grow((void **)&run->eval_loss, cap, sizeof(double)) ||
        !grow((void **)&run->eval_accuracy, cap, sizeof(double)) ||
        (run->n_groups && !grow((void **)&run->eval_group_accuracy, cap * run->n_groups, sizeof(double))))
      return at_error(AT_E_NOMEM, "results: out of memory");
    run->cap_eval_ = cap;
  }
  int64_t i = run->n_eval++;
  run->eval_step[i] = step;
  run->eval_loss[i] = loss;
  run->eval_accuracy[i] = accuracy;
  if (run->n_groups)
    memcpy(run->eval_group_accuracy + i * run->n_groups, group_accuracy, (size_t)run->n_groups * sizeof(double));
  return AT_OK;
}

const at_results_series *at_results_get_series(const at_results_run *run, const char *name) {
  for (int i = 0; i < run->n_series; i++)
    if (!strcmp(run->series[i].name, name)) return &run->series[i];
  return NULL;
}

at_status at_results_log_series(at_results_run *run, const char *name, int64_t step, double value) {
  at_results_series *se = (at_results_series *)at_results_get_series(run, name);
  if (!se) {
    if (!name[0] || strlen(name) >= sizeof se->name || strchr(name, '/'))
      return at_error(AT_E_ARG, "results: run %s: bad series name '%s'", run->id, name);
    if (run->n_series == run->cap_series_) {
      int cap = run->cap_series_ ? 2 * run->cap_series_ : 4;
      if (!grow((void **)&run->series, cap, sizeof *run->series)) return at_error(AT_E_NOMEM, "results: out of memory");
      run->cap_series_ = cap;
    }
    se = &run->series[run->n_series++];
    memset(se, 0, sizeof *se);
    snprintf(se->name, sizeof se->name, "%s", name);
  }
  at_status st = check_step(run, step, se->step, se->n, name);
  if (st != AT_OK) return st;
  if (se->n == se->cap_) {
    int64_t cap = se->cap_ ? 2 * se->cap_ : 256;
    if (!grow((void **)&se->step, cap, sizeof(int64_t)) || !grow((void **)&se->value, cap, sizeof(double)))
      return at_error(AT_E_NOMEM, "results: out of memory");
    se->cap_ = cap;
  }
  se->step[se->n] = step;
  se->value[se->n++] = value;
  return AT_OK;
}

const at_results_evalset *at_results_get_evalset(const at_results_run *run, const char *name) {
  for (int i = 0; i < run->n_evalsets; i++)
    if (!strcmp(run->evalsets[i].name, name)) return &run->evalsets[i];
  return NULL;
}

/* The test set `name`, created (empty, with its config) if new. */
static at_results_evalset *evalset_slot(at_results_run *run, const char *name, const char *config, at_status *st) {
  at_results_evalset *e = (at_results_evalset *)at_results_get_evalset(run, name);
  *st = AT_OK;
  if (e) return e;
  if (!name[0] || strlen(name) >= sizeof e->name || strchr(name, '/')) {
    *st = at_error(AT_E_ARG, "results: run %s: bad test set name '%s'", run->id, name);
    return NULL;
  }
  if (run->n_evalsets == run->cap_evalsets_) {
    int cap = run->cap_evalsets_ ? 2 * run->cap_evalsets_ : 4;
    if (!grow((void **)&run->evalsets, cap, sizeof *run->evalsets)) {
      *st = at_error(AT_E_NOMEM, "results: out of memory");
      return NULL;
    }
    run->cap_evalsets_ = cap;
  }
  e = &run->evalsets[run->n_evalsets];
  memset(e, 0, sizeof *e);
  if (!(e->config = dup_or_empty(config))) {
    *st = at_error(AT_E_NOMEM, "results: out of memory");
    return NULL;
  }
  snprintf(e->name, sizeof e->name, "%s", name);
  run->n_evalsets++;
  return e;
}

at_status at_results_set_evalset_groups(at_results_run *run, const char *name, const char *config, int n_groups,
                                        const char *const *names) {
  at_status st;
  at_results_evalset *e = evalset_slot(run, name, config, &st);
  if (!e) return st;
  if (e->n_groups || e->n)
    return at_error(AT_E_STATE,
                    "results: run %s: test set %s: accuracy groups must be set once, before its first evaluation",
                    run->id, name);
  st = copy_names(run->id, n_groups, names, &e->group_names);
  if (st == AT_OK) e->n_groups = n_groups;
  return st;
}

at_status at_results_log_evalset(at_results_run *run, const char *name, const char *config, int64_t step,
                                 double loss, double accuracy, const double *group_accuracy) {
  at_status st;
  at_results_evalset *e = evalset_slot(run, name, config, &st);
  if (!e) return st;
  st = check_step(run, step, e->step, e->n, name);
  if (st != AT_OK) return st;
  if (e->n_groups > 0 && !group_accuracy)
    return at_error(AT_E_ARG, "results: run %s: test set %s: %d group accuracies expected", run->id, name, e->n_groups);
  if (e->n == e->cap_) {
    int64_t cap = e->cap_ ? 2 * e->cap_ : 64;
    if (!grow((void **)&e->step, cap, sizeof(int64_t)) || !grow((void **)&e->loss, cap, sizeof(double)) ||
        !grow((void **)&e->accuracy, cap, sizeof(double)) ||
        (e->n_groups && !grow((void **)&e->group_accuracy, cap * e->n_groups, sizeof(double))))
      return at_error(AT_E_NOMEM, "results: out of memory");
    e->cap_ = cap;
  }
  if (e->n_groups)
    memcpy(e->group_accuracy + e->n * e->n_groups, group_accuracy, (size_t)e->n_groups * sizeof(double));
  e->step[e->n] = step;
  e->loss[e->n] = loss;
  e->accuracy[e->n++] = accuracy;
  return AT_OK;
}

/* Drops the evaluations after `step` (> step, or >= step with `at`). */
static void drop_evals(at_results_run *run, int64_t step, int at) {
  while (run->n_eval > 0 && run->eval_step[run->n_eval - 1] + at > step) run->n_eval--;
  for (int i = 0; i < run->n_evalsets; i++) {
    at_results_evalset *e = &run->evalsets[i];
    while (e->n > 0 && e->step[e->n - 1] + at > step) e->n--;
  }
}

void at_results_truncate(at_results_run *run, int64_t step) {
  while (run->n_train > 0 && run->train_step[run->n_train - 1] > step) run->n_train--;
  drop_evals(run, step, 0);
  for (int i = 0; i < run->n_series; i++) {
    at_results_series *se = &run->series[i];
    while (se->n > 0 && se->step[se->n - 1] > step) se->n--;
  }
}

void at_results_drop_evals(at_results_run *run, int64_t step) { drop_evals(run, step, 1); }

static at_results_extra *extra_slot(at_results_run *run, const char *key, at_status *st) {
  *st = AT_OK;
  for (int i = 0; i < AT_ARRAY_LEN(fixed_attrs); i++)
    if (strcmp(key, fixed_attrs[i]) == 0) {
      *st = at_error(AT_E_ARG, "results: run %s: '%s' is a fixed attribute (set the field)", run->id, key);
      return NULL;
    }
  if (!key[0] || strlen(key) >= sizeof run->extra[0].key || strpbrk(key, "/\n")) {
    *st = at_error(AT_E_ARG, "results: run %s: bad attribute name '%s'", run->id, key);
    return NULL;
  }
  for (int i = 0; i < run->n_extra; i++)
    if (strcmp(run->extra[i].key, key) == 0) {
      free(run->extra[i].str);
      run->extra[i].str = NULL;
      return &run->extra[i];
    }
  if (run->n_extra == run->cap_extra_) {
    int cap = run->cap_extra_ ? 2 * run->cap_extra_ : 8;
    if (!grow((void **)&run->extra, cap, sizeof *run->extra)) {
      *st = at_error(AT_E_NOMEM, "results: out of memory");
      return NULL;
    }
    run->cap_extra_ = cap;
  }
  at_results_extra *e = &run->extra[run->n_extra++];
  memset(e, 0, sizeof *e);
  snprintf(e->key, sizeof e->key, "%s", key);
  return e;
}

at_status at_results_set_num(at_results_run *run, const char *key, double value) {
  at_status st;
  at_results_extra *e = extra_slot(run, key, &st);
  if (e) e->num = value;
  return st;
}

at_status at_results_set_str(at_results_run *run, const char *key, const char *value) {
  at_status st;
  at_results_extra *e = extra_slot(run, key, &st);
  if (!e) return st;
  e->num = NAN;
  if (!(e->str = strdup(value))) {
    /* keep the attribute, as an empty string */
    e->str = calloc(1, 1);
    return at_error(AT_E_NOMEM, "results: out of memory");
  }
  return AT_OK;
}

const at_results_extra *at_results_get(const at_results_run *run, const char *key) {
  for (int i = 0; i < run->n_extra; i++)
    if (strcmp(run->extra[i].key, key) == 0) return &run->extra[i];
  return NULL;
}

/* ---- writing ---------------------------------------------------------------------- */

/* "a\nb\nc" of n strings (malloc'ed). */
static char *join_lines(int n, char *const *s) {
  size_t len = 1;
  for (int i = 0; i < n; i++) len += strlen(s[i]) + 1;
  char *out = malloc(len), *q = out;
  if (!out) return NULL;
  for (int i = 0; i < n; i++) q += sprintf(q, "%s%s", i ? "\n" : "", s[i]);
  *q = '\0';
  return out;
}

static at_status write_steps(at_h5 *f, const char *name, const int64_t *steps, int64_t n) {
  int32_t *s = malloc((size_t)AT_MAX(n, 1) * sizeof *s);
  if (!s) return at_error(AT_E_NOMEM, "results: out of memory");
  for (int64_t i = 0; i < n; i++) s[i] = (int32_t)steps[i];
  at_status st = at_h5_write_int(f, name, 1, &n, s);
  free(s);
  return st;
}

#define TRY(expr) \
  do { if ((st = (expr)) != AT_OK) goto done; } while (0)

static at_status write_run(at_h5 *f, const at_results_run *run, int index) {
  char g[160], d[200];
  at_status st = AT_OK;
  char *names = NULL, *keys = NULL, **key_ptrs = NULL;
  snprintf(g, sizeof g, "/runs/%s", run->id);
  TRY(at_h5_make_group(f, g));
#define DSET(x) (snprintf(d, sizeof d, "%s/%s", g, (x)), d)
  TRY(write_steps(f, DSET("train_step"), run->train_step, run->n_train));
  TRY(at_h5_write_double(f, DSET("train_loss"), 1, &run->n_train, run->train_loss));
  TRY(write_steps(f, DSET("eval_step"), run->eval_step, run->n_eval));
  TRY(at_h5_write_double(f, DSET("eval_loss"), 1, &run->n_eval, run->eval_loss));
  TRY(at_h5_write_double(f, DSET("eval_accuracy"), 1, &run->n_eval, run->eval_accuracy));
  if (run->n_groups) {
    int64_t shape[2] = {run->n_eval, run->n_groups};
    TRY(at_h5_write_double(f, DSET("eval_group_accuracy"), 2, shape, run->eval_group_accuracy));
    if (!(names = join_lines(run->n_groups, run->group_names)))
      TRY(at_error(AT_E_NOMEM, "results: out of memory"));
    TRY(at_h5_set_attr_str(f, g, "eval_group_names", names));
  }
  for (int i = 0; i < run->n_series; i++) {
    const at_results_series *se = &run->series[i];
    char sd[300];
    snprintf(sd, sizeof sd, "%s/series/%s/step", g, se->name);
    TRY(write_steps(f, sd, se->step, se->n));
    snprintf(sd, sizeof sd, "%s/series/%s/value", g, se->name);
    TRY(at_h5_write_double(f, sd, 1, &se->n, se->value));
  }
  for (int i = 0; i < run->n_evalsets; i++) {
    const at_results_evalset *e = &run->evalsets[i];
    char eg[300], ed[320];
    snprintf(eg, sizeof eg, "%s/eval_sets/%s", g, e->name);
    TRY(at_h5_make_group(f, eg));
    snprintf(ed, sizeof ed, "%s/step", eg);
    TRY(write_steps(f, ed, e->step, e->n));
    snprintf(ed, sizeof ed, "%s/loss", eg);
    TRY(at_h5_write_double(f, ed, 1, &e->n, e->loss));
    snprintf(ed, sizeof ed, "%s/accuracy", eg);
    TRY(at_h5_write_double(f, ed, 1, &e->n, e->accuracy));
    if (e->n_groups) {
      int64_t shape[2] = {e->n, e->n_groups};
      snprintf(ed, sizeof ed, "%s/group_accuracy", eg);
      TRY(at_h5_write_double(f, ed, 2, shape, e->group_accuracy));
      free(names);
      if (!(names = join_lines(e->n_groups, e->group_names))) TRY(at_error(AT_E_NOMEM, "results: out of memory"));
      TRY(at_h5_set_attr_str(f, eg, "group_names", names));
    }
    TRY(at_h5_set_attr_str(f, eg, "config", e->config));
    TRY(at_h5_set_attr_double(f, eg, "final_loss", e->n ? e->loss[e->n - 1] : NAN));
    TRY(at_h5_set_attr_double(f, eg, "final_accuracy", e->n ? e->accuracy[e->n - 1] : NAN));
  }
#undef DSET
  TRY(at_h5_set_attr_int(f, g, "index", index));
  TRY(at_h5_set_attr_str(f, g, "name", run->name));
  TRY(at_h5_set_attr_str(f, g, "base_name", run->base_name));
  TRY(at_h5_set_attr_str(f, g, "sweep_point", run->sweep_point));
  TRY(at_h5_set_attr_str(f, g, "config", run->config));
  TRY(at_h5_set_attr_str(f, g, "status", run->status));
  TRY(at_h5_set_attr_int(f, g, "params", run->params));
  TRY(at_h5_set_attr_int(f, g, "steps", run->steps));
  TRY(at_h5_set_attr_int(f, g, "skipped_steps", run->skipped_steps));
  TRY(at_h5_set_attr_int(f, g, "train_tokens", run->train_tokens));
  TRY(at_h5_set_attr_double(f, g, "train_seconds", run->train_seconds));
  TRY(at_h5_set_attr_double(f, g, "wall_seconds", run->wall_seconds));
  TRY(at_h5_set_attr_double(f, g, "tokens_per_second", run->tokens_per_second));
  TRY(at_h5_set_attr_double(f, g, "final_eval_loss", run->final_eval_loss));
  TRY(at_h5_set_attr_double(f, g, "final_eval_accuracy", run->final_eval_accuracy));
  key_ptrs = malloc((size_t)AT_MAX(run->n_extra, 1) * sizeof *key_ptrs);
  if (!key_ptrs) TRY(at_error(AT_E_NOMEM, "results: out of memory"));
  for (int i = 0; i < run->n_extra; i++) key_ptrs[i] = (char *)run->extra[i].key;
  if (!(keys = join_lines(run->n_extra, key_ptrs)))
    TRY(at_error(AT_E_NOMEM, "results: out of memory"));
  TRY(at_h5_set_attr_str(f, g, "extra_attrs", keys));
  for (int i = 0; i < run->n_extra; i++) {
    const at_results_extra *e = &run->extra[i];
    TRY(e->str ? at_h5_set_attr_str(f, g, e->key, e->str) : at_h5_set_attr_double(f, g, e->key, e->num));
  }
done:
  free(names), free(keys), free(key_ptrs);
  return st;
}

at_status at_results_write(at_results *r, const char *path) {
  for (int i = 0; i < r->n_runs; i++) {
    at_results_run *run = r->runs[i];
    run->tokens_per_second = run->train_seconds > 0 ? (double)run->train_tokens / run->train_seconds : NAN;
    run->final_eval_loss = run->n_eval ? run->eval_loss[run->n_eval - 1] : NAN;
    run->final_eval_accuracy = run->n_eval ? run->eval_accuracy[run->n_eval - 1] : NAN;
  }
  at_h5 *f;
  at_status st = at_h5_create(path, &f);
  if (st != AT_OK) return at_error_prefix(st, "writing results");
  TRY(at_h5_set_attr_str(f, "/", "format", AT_RESULTS_FORMAT));
  TRY(at_h5_set_attr_int(f, "/", "format_version", AT_RESULTS_VERSION));
  TRY(at_h5_set_attr_str(f, "/", "experiment", r->experiment));
  TRY(at_h5_set_attr_str(f, "/", "source", r->source));
  TRY(at_h5_set_attr_str(f, "/", "attnlab_version", r->version));
  TRY(at_h5_set_attr_int(f, "/", "threads", r->threads));
  TRY(at_h5_set_attr_str(f, "/", "date", r->date));
  TRY(at_h5_set_attr_int(f, "/", "n_runs", r->n_runs));
  TRY(at_h5_make_group(f, "/runs"));
  for (int i = 0; i < r->n_runs; i++) TRY(write_run(f, r->runs[i], i));
  st = at_h5_commit(f);
  f = NULL;
done:
  if (f) at_h5_close(f);
  if (st != AT_OK) at_error_prefix(st, "writing results");
  return st;
}

/* ---- reading ------------------------------------------------------------------------
 * Everything read is checked against what a writer can produce: sizes that
 * agree with each other (curves and their steps, the group names and the
 * accuracy table, n_runs and the runs stored), steps in 0..INT32_MAX that
 * never decrease, valid run ids, and limits on counts (READ_MAX_*) that keep
 * a hostile file from costing more than its size. */

#define READ_MAX_RUNS 4096
#define READ_MAX_GROUPS 1024
#define READ_MAX_SERIES 64
#define READ_MAX_EXTRAS 256

static at_status read_str(at_h5 *f, const char *obj, const char *attr, char *dst, size_t size) {
  char *s;
  at_status st = at_h5_get_attr_str(f, obj, attr, &s);
  if (st != AT_OK) return st;
  snprintf(dst, size, "%s", s);
  free(s);
  return AT_OK;
}

/* A 1-d dataset's length; the caller checks it against its partner's. */
static at_status length_of(at_h5 *f, const char *name, int64_t *n) {
  int nd;
  int64_t shape[4];
  at_status st = at_h5_shape(f, name, &nd, shape);
  if (st != AT_OK) return st;
  if (nd != 1) return at_error(AT_E_FORMAT, "%s: '%s' is not 1-dimensional", at_h5_path(f), name);
  *n = shape[0];
  return AT_OK;
}

/* Steps as written: in 0..INT32_MAX, never decreasing. */
static at_status read_steps(at_h5 *f, const char *name, int64_t n, int64_t *out) {
  if (n == 0) return AT_OK;
  int32_t *s = malloc((size_t)n * sizeof *s);
  if (!s) return at_error(AT_E_NOMEM, "results: out of memory");
  at_status st = at_h5_read_int(f, name, 1, &n, s);
  for (int64_t i = 0; st == AT_OK && i < n; i++) {
    if (s[i] < 0 || (i > 0 && s[i] < s[i - 1]))
      st = at_error(AT_E_FORMAT, "%s: '%s' is damaged: step %d at index %lld %s", at_h5_path(f), name, (int)s[i],
                    (long long)i, s[i] < 0 ? "is negative" : "comes after a larger step");
    out[i] = s[i];
  }
  free(s);
  return st;
}

static at_status read_doubles(at_h5 *f, const char *name, int ndim, const int64_t *shape, double *out) {
  if (at_shape_size(ndim, shape) == 0) return AT_OK;
  return at_h5_read_double(f, name, ndim, shape, out);
}

/* Splits newline-separated `text` into at most `max` malloc'ed strings;
 * -1 when out of memory, -2 when there are more. */
static int split_lines(const char *text, int max, char ***out) {
  *out = NULL;
  if (!text[0]) return 0;
  int n = 1;
  for (const char *c = text; *c && n <= max; c++) n += *c == '\n';
  if (n > max) return -2;
  char **v = calloc((size_t)n, sizeof *v);
  if (!v) return -1;
  const char *start = text;
  for (int i = 0; i < n; i++) {
    const char *end = strchr(start, '\n');
    size_t len = end ? (size_t)(end - start) : strlen(start);
    if (!(v[i] = strndup(start, len))) {
      for (int j = 0; j < i; j++) free(v[j]);
      free(v);
      return -1;
    }
    start = end ? end + 1 : start + len;
  }
  *out = v;
  return n;
}

#define READ_MAX_EVALSETS 8 /* data.eval holds at most AT_MAX_EVAL_SETS */

/* The lines of attribute `attr` of `g`, at most `max` of them. */
static at_status read_lines(at_h5 *f, const char *g, const char *attr, int max, char ***lines, int *n) {
  char *s = NULL;
  *lines = NULL, *n = 0;
  at_status st = at_h5_get_attr_str(f, g, attr, &s);
  if (st != AT_OK) return st;
  int k = split_lines(s, max, lines);
  free(s);
  if (k == -1) return at_error(AT_E_NOMEM, "results: out of memory");
  if (k == -2) return at_error(AT_E_FORMAT, "%s: %s: attribute %s lists more than %d names", at_h5_path(f), g, attr, max);
  *n = k;
  return AT_OK;
}

/* A test set's group names and group_accuracy [n, groups] (none: *ng 0). */
static at_status read_evalset_groups(at_h5 *f, const char *eg, int64_t n, char ***names, int *ng, double **acc) {
  *names = NULL, *ng = 0, *acc = NULL;
  if (!at_h5_has_attr(f, eg, "group_names")) return AT_OK;
  at_status st = read_lines(f, eg, "group_names", READ_MAX_GROUPS, names, ng);
  char d[340];
  int nd;
  int64_t shape[4];
  snprintf(d, sizeof d, "%s/group_accuracy", eg);
  if (st == AT_OK && *ng == 0) st = at_error(AT_E_FORMAT, "%s: %s: group_names is empty", at_h5_path(f), eg);
  if (st == AT_OK) st = at_h5_shape(f, d, &nd, shape);
  if (st == AT_OK && (nd != 2 || shape[0] != n || shape[1] != *ng))
    st = at_error(AT_E_FORMAT, "%s: %s: group_accuracy is not [%lld, %d]", at_h5_path(f), eg, (long long)n, *ng);
  if (st == AT_OK && !(*acc = malloc((size_t)AT_MAX(n * *ng, 1) * sizeof **acc)))
    st = at_error(AT_E_NOMEM, "results: out of memory");
  if (st == AT_OK) st = read_doubles(f, d, 2, shape, *acc);
  return st;
}

/* One test set's curve (its three datasets of equal length, and the group
 * accuracies of each point when it has groups) and config. */
static at_status read_evalset(at_h5 *f, const char *g, const char *name, at_results_run *run) {
  char eg[300], sd[320], *config = NULL, **gnames = NULL;
  snprintf(eg, sizeof eg, "%s/eval_sets/%s", g, name);
  int64_t n = 0, n2 = 0, n3 = 0;
  int ng = 0;
  double *gacc = NULL;
  at_status st;
  snprintf(sd, sizeof sd, "%s/step", eg);
  if ((st = length_of(f, sd, &n)) != AT_OK) return st;
  int64_t *steps = malloc((size_t)AT_MAX(n, 1) * sizeof *steps);
  double *loss = malloc((size_t)AT_MAX(n, 1) * sizeof *loss), *acc = malloc((size_t)AT_MAX(n, 1) * sizeof *acc);
  if (!steps || !loss || !acc) st = at_error(AT_E_NOMEM, "results: out of memory");
  if (st == AT_OK) st = read_steps(f, sd, n, steps);
  snprintf(sd, sizeof sd, "%s/loss", eg);
  if (st == AT_OK && (st = length_of(f, sd, &n2)) == AT_OK) st = read_doubles(f, sd, 1, &n, loss);
  snprintf(sd, sizeof sd, "%s/accuracy", eg);
  if (st == AT_OK && (st = length_of(f, sd, &n3)) == AT_OK) st = read_doubles(f, sd, 1, &n, acc);
  if (st == AT_OK && (n2 != n || n3 != n))
    st = at_error(AT_E_FORMAT, "%s: %s: test set %s: step, loss and accuracy differ in length", at_h5_path(f), g, name);
  if (st == AT_OK) st = at_h5_get_attr_str(f, eg, "config", &config);
  if (st == AT_OK) st = read_evalset_groups(f, eg, n, &gnames, &ng, &gacc);
  if (st == AT_OK) evalset_slot(run, name, config, &st); /* an empty curve still names its set */
  if (st == AT_OK && ng) st = at_results_set_evalset_groups(run, name, config, ng, (const char *const *)gnames);
  for (int64_t j = 0; st == AT_OK && j < n; j++)
    st = at_results_log_evalset(run, name, config, steps[j], loss[j], acc[j], ng ? gacc + j * ng : NULL);
  free(config), free(steps), free(loss), free(acc), free(gacc);
  free_lines(gnames, ng);
  return st;
}

static at_status read_evalsets(at_h5 *f, const char *g, at_results_run *run) {
  char d[200], **names = NULL;
  int n = 0;
  snprintf(d, sizeof d, "%s/eval_sets", g);
  if (!at_h5_exists(f, d)) return AT_OK;
  at_status st = at_h5_list(f, d, &names, &n);
  if (st == AT_OK && n > READ_MAX_EVALSETS)
    st = at_error(AT_E_FORMAT, "%s: %s: more than %d test sets", at_h5_path(f), g, READ_MAX_EVALSETS);
  for (int i = 0; i < n && st == AT_OK; i++) st = read_evalset(f, g, names[i], run);
  at_h5_free_list(names, n);
  return st;
}

/* train_*, eval_* and eval_group_accuracy of a run. */
static at_status read_curves(at_h5 *f, const char *g, at_results_run *run) {
  char d[200];
  at_status st = AT_OK;
#define DSET(x) (snprintf(d, sizeof d, "%s/%s", g, (x)), d)
  int64_t n_train, n_eval, n2;
  TRY(length_of(f, DSET("train_step"), &n_train));
  TRY(length_of(f, DSET("train_loss"), &n2));
  if (n2 != n_train) TRY(at_error(AT_E_FORMAT, "%s: %s: train_step and train_loss differ in length", at_h5_path(f), g));
  TRY(length_of(f, DSET("eval_step"), &n_eval));
  TRY(length_of(f, DSET("eval_loss"), &n2));
  if (n2 != n_eval) TRY(at_error(AT_E_FORMAT, "%s: %s: eval_step and eval_loss differ in length", at_h5_path(f), g));
  TRY(length_of(f, DSET("eval_accuracy"), &n2));
  if (n2 != n_eval) TRY(at_error(AT_E_FORMAT, "%s: %s: eval_step and eval_accuracy differ in length", at_h5_path(f), g));
  run->cap_train_ = AT_MAX(n_train, 1), run->cap_eval_ = AT_MAX(n_eval, 1);
  run->train_step = malloc((size_t)run->cap_train_ * sizeof(int64_t));
  run->train_loss = malloc((size_t)run->cap_train_ * sizeof(double));
  run->eval_step = malloc((size_t)run->cap_eval_ * sizeof(int64_t));
  run->eval_loss = malloc((size_t)run->cap_eval_ * sizeof(double));
  run->eval_accuracy = malloc((size_t)run->cap_eval_ * sizeof(double));
  if (!run->train_step || !run->train_loss || !run->eval_step || !run->eval_loss || !run->eval_accuracy)
    TRY(at_error(AT_E_NOMEM, "results: out of memory"));
  TRY(read_steps(f, DSET("train_step"), n_train, run->train_step));
  TRY(read_doubles(f, DSET("train_loss"), 1, &n_train, run->train_loss));
  TRY(read_steps(f, DSET("eval_step"), n_eval, run->eval_step));
  TRY(read_doubles(f, DSET("eval_loss"), 1, &n_eval, run->eval_loss));
  TRY(read_doubles(f, DSET("eval_accuracy"), 1, &n_eval, run->eval_accuracy));
  run->n_train = n_train, run->n_eval = n_eval;
  if (at_h5_has_attr(f, g, "eval_group_names")) {
    int n;
    TRY(read_lines(f, g, "eval_group_names", READ_MAX_GROUPS, &run->group_names, &n));
    run->n_groups = n;
    if (n == 0) TRY(at_error(AT_E_FORMAT, "%s: %s: eval_group_names is empty", at_h5_path(f), g));
    int nd;
    int64_t shape[4];
    TRY(at_h5_shape(f, DSET("eval_group_accuracy"), &nd, shape));
    if (nd != 2 || shape[0] != n_eval || shape[1] != n)
      TRY(at_error(AT_E_FORMAT, "%s: %s: eval_group_accuracy is not [%lld, %d]", at_h5_path(f), g,
                   (long long)n_eval, n));
    run->eval_group_accuracy = malloc((size_t)(run->cap_eval_ * n) * sizeof(double));
    if (!run->eval_group_accuracy) TRY(at_error(AT_E_NOMEM, "results: out of memory"));
    TRY(read_doubles(f, d, 2, shape, run->eval_group_accuracy));
  }
#undef DSET
done:
  return st;
}

/* The named curves under <g>/series. */
static at_status read_series(at_h5 *f, const char *g, at_results_run *run) {
  char d[200], sd[400], **names = NULL;
  int n = 0;
  snprintf(d, sizeof d, "%s/series", g);
  if (!at_h5_exists(f, d)) return AT_OK;
  at_status st = at_h5_list(f, d, &names, &n);
  if (st == AT_OK && n > READ_MAX_SERIES)
    st = at_error(AT_E_FORMAT, "%s: %s: more than %d series", at_h5_path(f), g, READ_MAX_SERIES);
  for (int i = 0; i < n && st == AT_OK; i++) {
    int64_t len, len2, *steps = NULL;
    double *vals = NULL;
    if (strlen(names[i]) >= sizeof run->series[0].name || strchr(names[i], '/')) {
      st = at_error(AT_E_FORMAT, "%s: %s: bad series name '%.60s'", at_h5_path(f), g, names[i]);
      break;
    }
    snprintf(sd, sizeof sd, "%s/series/%s/step", g, names[i]);
    if ((st = length_of(f, sd, &len)) != AT_OK) break;
    steps = malloc((size_t)AT_MAX(len, 1) * sizeof *steps);
    vals = malloc((size_t)AT_MAX(len, 1) * sizeof *vals);
    if (!steps || !vals) st = at_error(AT_E_NOMEM, "results: out of memory");
    if (st == AT_OK) st = read_steps(f, sd, len, steps);
    snprintf(sd, sizeof sd, "%s/series/%s/value", g, names[i]);
    if (st == AT_OK) st = length_of(f, sd, &len2);
    if (st == AT_OK && len2 != len)
      st = at_error(AT_E_FORMAT, "%s: %s: series %s: step and value differ in length", at_h5_path(f), g, names[i]);
    if (st == AT_OK) st = read_doubles(f, sd, 1, &len, vals);
    for (int64_t j = 0; st == AT_OK && j < len; j++) st = at_results_log_series(run, names[i], steps[j], vals[j]);
    free(steps), free(vals);
  }
  at_h5_free_list(names, n);
  return st;
}

/* The extra attributes listed in extra_attrs: numbers or strings. */
static at_status read_extras(at_h5 *f, const char *g, at_results_run *run) {
  char **keys = NULL;
  int n = 0;
  at_status st = read_lines(f, g, "extra_attrs", READ_MAX_EXTRAS, &keys, &n);
  for (int i = 0; i < n && st == AT_OK; i++) {
    char *v = NULL;
    double x;
    if (at_results_get(run, keys[i]))
      st = at_error(AT_E_FORMAT, "%s: %s: extra attribute %.60s is listed twice", at_h5_path(f), g, keys[i]);
    else if (at_h5_get_attr_double(f, g, keys[i], &x) == AT_OK)
      st = at_results_set_num(run, keys[i], x);
    else if ((st = at_h5_get_attr_str(f, g, keys[i], &v)) == AT_OK)
      st = at_results_set_str(run, keys[i], v);
    free(v);
    if (st == AT_E_ARG) st = at_error_prefix(AT_E_FORMAT, "%s", at_h5_path(f)); /* a name no writer makes */
  }
  free_lines(keys, n);
  return st;
}

static at_status read_run(at_h5 *f, const char *id, at_results_run *run, int64_t *index) {
  char g[160];
  at_status st = AT_OK;
  if (!id[0] || strlen(id) >= sizeof run->id || !strcmp(id, ".") || !strcmp(id, ".."))
    return at_error(AT_E_FORMAT, "%s: bad run id '%.60s' under /runs", at_h5_path(f), id);
  snprintf(g, sizeof g, "/runs/%s", id);
  snprintf(run->id, sizeof run->id, "%s", id);
  TRY(read_curves(f, g, run));
  TRY(read_series(f, g, run));
  TRY(read_evalsets(f, g, run));
  TRY(at_h5_get_attr_int(f, g, "index", index));
  TRY(read_str(f, g, "name", run->name, sizeof run->name));
  TRY(read_str(f, g, "base_name", run->base_name, sizeof run->base_name));
  TRY(read_str(f, g, "sweep_point", run->sweep_point, sizeof run->sweep_point));
  TRY(at_h5_get_attr_str(f, g, "config", &run->config));
  TRY(read_str(f, g, "status", run->status, sizeof run->status));
  TRY(at_h5_get_attr_int(f, g, "params", &run->params));
  TRY(at_h5_get_attr_int(f, g, "steps", &run->steps));
  TRY(at_h5_get_attr_int(f, g, "skipped_steps", &run->skipped_steps));
  TRY(at_h5_get_attr_int(f, g, "train_tokens", &run->train_tokens));
  TRY(at_h5_get_attr_double(f, g, "train_seconds", &run->train_seconds));
  TRY(at_h5_get_attr_double(f, g, "wall_seconds", &run->wall_seconds));
  TRY(at_h5_get_attr_double(f, g, "tokens_per_second", &run->tokens_per_second));
  TRY(at_h5_get_attr_double(f, g, "final_eval_loss", &run->final_eval_loss));
  TRY(at_h5_get_attr_double(f, g, "final_eval_accuracy", &run->final_eval_accuracy));
  if (run->steps < 0 || run->skipped_steps < 0 || run->skipped_steps > run->steps || run->train_tokens < 0 ||
      run->params < 0)
    TRY(at_error(AT_E_FORMAT, "%s: %s: negative or inconsistent counts (steps %lld, skipped %lld)", at_h5_path(f), g,
                 (long long)run->steps, (long long)run->skipped_steps));
  TRY(read_extras(f, g, run));
done:
  return st;
}

typedef struct read_args {
  const char *path;
  at_results **out;
} read_args;

static at_status read_results(void *arg) {
  const read_args *a = arg;
  const char *path = a->path;
  at_results **out = a->out;
  *out = NULL;
  at_h5 *f;
  at_status st = at_h5_open(path, &f);
  if (st != AT_OK) return at_error_prefix(st, "reading results");
  at_results *r = calloc(1, sizeof *r);
  char *fmt = NULL, **ids = NULL;
  int n_ids = 0;
  int64_t *order = NULL, version, threads, n_runs;
  if (!r) TRY(at_error(AT_E_NOMEM, "results: out of memory"));
  if (!at_h5_has_attr(f, "/", "format"))
    TRY(at_error(AT_E_FORMAT, "%s: not an attnlab results file (no 'format' attribute)", path));
  TRY(at_h5_get_attr_str(f, "/", "format", &fmt));
  if (strcmp(fmt, AT_RESULTS_FORMAT) != 0)
    TRY(at_error(AT_E_FORMAT, "%s: a '%.60s' file, not an %s file", path, fmt, AT_RESULTS_FORMAT));
  TRY(at_h5_get_attr_int(f, "/", "format_version", &version));
  if (version > AT_RESULTS_VERSION)
    TRY(at_error(AT_E_FORMAT, "%s: format version %lld is newer than this attnlab reads (%d)", path,
                 (long long)version, AT_RESULTS_VERSION));
  if (version < 1) TRY(at_error(AT_E_FORMAT, "%s: bad format version %lld", path, (long long)version));
  TRY(read_str(f, "/", "experiment", r->experiment, sizeof r->experiment));
  TRY(at_h5_get_attr_str(f, "/", "source", &r->source));
  TRY(read_str(f, "/", "attnlab_version", r->version, sizeof r->version));
  TRY(at_h5_get_attr_int(f, "/", "threads", &threads));
  r->threads = (int)AT_MAX(AT_MIN(threads, 1 << 20), 0);
  TRY(read_str(f, "/", "date", r->date, sizeof r->date));
  TRY(at_h5_get_attr_int(f, "/", "n_runs", &n_runs));
  TRY(at_h5_list(f, "/runs", &ids, &n_ids));
  if (n_runs != n_ids)
    TRY(at_error(AT_E_FORMAT, "%s: declares %lld runs but holds %d", path, (long long)n_runs, n_ids));
  if (n_ids > READ_MAX_RUNS) TRY(at_error(AT_E_FORMAT, "%s: more than %d runs", path, READ_MAX_RUNS));
  r->runs = calloc((size_t)AT_MAX(n_ids, 1), sizeof *r->runs);
  order = calloc((size_t)AT_MAX(n_ids, 1), sizeof *order);
  if (!r->runs || !order) TRY(at_error(AT_E_NOMEM, "results: out of memory"));
  r->cap_runs_ = AT_MAX(n_ids, 1);
  for (int i = 0; i < n_ids; i++) {
    at_results_run *run = calloc(1, sizeof *run);
    if (!run) TRY(at_error(AT_E_NOMEM, "results: out of memory"));
    r->runs[r->n_runs++] = run;
    TRY(read_run(f, ids[i], run, &order[i]));
  }
  /* file order (insertion sort on the stored index; few runs) */
  for (int i = 1; i < r->n_runs; i++)
    for (int j = i; j > 0 && order[j] < order[j - 1]; j--) {
      int64_t t = order[j];
      order[j] = order[j - 1], order[j - 1] = t;
      at_results_run *x = r->runs[j];
      r->runs[j] = r->runs[j - 1], r->runs[j - 1] = x;
    }
done:
  at_h5_close(f);
  free(fmt), free(order);
  at_h5_free_list(ids, n_ids);
  if (st != AT_OK) {
    at_results_free(r);
    if (strncmp(at_errmsg(), "reading results", 15) != 0) at_error_prefix(st, "reading results");
    return st;
  }
  *out = r;
  return AT_OK;
}

at_status at_results_read(const char *path, at_results **out) {
  *out = NULL;
  read_args a = {path, out};
  return at_h5_guard(path, read_results, &a);
}
