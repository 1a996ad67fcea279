/* experiments/config.c: loading an experiment file.
 *
 * 1. The file is parsed into a located tree (yaml_tree.c).
 * 2. Every key and value is checked against the schema (schema.c) in file
 *    order: top level, shared sections, each run's overrides, each sweep
 *    value. Nothing depends on merging yet, so the first error is the first
 *    in the file.
 * 3. --set arguments are checked the same way and merged into the shared
 *    sections, in order.
 * 4. Each run is merged over the shared sections, then each sweep point over
 *    the run, and the result is resolved (defaults, derived values, shapes,
 *    the task's own checks) into an at_run_cfg with its resolved YAML.
 */
#include "experiments/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "experiments/schema.h"

#define MAX_FILE_BYTES ((size_t)1 << 20) /* experiment files are a few KiB */
#define MAX_SET_BYTES ((size_t)64 << 10)  /* one --set argument */
#define MAX_RUNS 4096
#define MAX_SWEEP_KEYS AT_MAX_SWEEP_KEYS
#define MAX_PARTS 8

static const char *const top_keys[] = {"experiment", "seed", "description", "report", "data",
                                       "model",      "train", "runs",       "sweep"};
static const char *const run_keys[] = {"name", "seed", "data", "model", "train", "stages"};

typedef struct sweep_key {
  const char *text;              /* as written: "lr", "model.attention.kda.expand_v" */
  const char *show;              /* in names: the last part ("expand_v") unless two keys share it */
  const char *parts[MAX_PARTS];  /* the full path: train, lr */
  int nparts;
  at_cfg_loc at;                 /* the key */
  const at_ynode *values;
  const char **labels;           /* per value, as shown in names ("0.003") */
  const char **safe;             /* the same, file-safe (for run ids) */
} sweep_key;

typedef struct loader {
  at_arena *a;
  const at_ynode *root;          /* the file */
  const at_ynode *shared;        /* the file with --set applied */
  sweep_key sweep[MAX_SWEEP_KEYS];
  int n_sweep;
} loader;

static at_status nomem(void) { return at_error(AT_E_NOMEM, "loading an experiment: out of memory"); }

static char *arena_strdup(at_arena *a, const char *s, size_t len) {
  char *p = at_arena_alloc(a, len + 1);
  if (!p) return NULL;
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

/* A label ("0.003", "kda,full") in the arena; `safe` replaces characters
 * that do not belong in a file name. */
static const char *label_of(at_arena *a, const at_ynode *v, int safe) {
  at_sbuf b = {0};
  at_sb_label(&b, v);
  if (b.oom) return NULL;
  const char *text = b.p ? b.p : "";
  char *out = arena_strdup(a, text, strlen(text));
  free(b.p);
  if (out && safe)
    for (char *p = out; *p; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("_.+=,-", *p)))
        *p = '_';
  return out;
}

/* "model.d_model" -> {model, d_model}; a single key is train.<key> unless it
 * is one of `top_level`. */
static at_status split_key(at_arena *a, const char *text, at_cfg_loc at, const char *what,
                           const char *const *top_level, int n_top, const char **parts, int *n) {
  *n = 0;
  const char *p = text;
  for (;;) {
    const char *dot = strchr(p, '.');
    size_t len = dot ? (size_t)(dot - p) : strlen(p);
    if (len == 0) return at_cfg_fail(at, "%s '%s' has an empty part", what, text);
    if (*n == MAX_PARTS - 1) return at_cfg_fail(at, "%s '%s' is too deep", what, text);
    if (!(parts[(*n)++] = arena_strdup(a, p, len))) return nomem();
    if (!dot) break;
    p = dot + 1;
  }
  if (*n == 1) {
    int top = 0;
    for (int i = 0; i < n_top; i++) top |= !strcmp(parts[0], top_level[i]);
    if (!top) {
      parts[1] = parts[0];
      parts[0] = "train";
      *n = 2;
    }
  }
  return AT_OK;
}

static at_status check_top(loader *L, const at_ynode *m, int from_set);

/* An unknown key at the top level or in a run: often a section's key
 * written one level too high ("threads: 2" instead of "train: {threads: 2}"). */
static at_status misplaced_key(at_cfg_loc at, const char *key, const char *what,
                               const char *const *valid, int n) {
  const char *sec = at_cfg_section_of(key);
  if (sec && !at_cfg_nearest(key, valid, n))
    return at_cfg_fail(at, "unknown key '%s' in %s; it belongs in %s (%s: {%s: ...})", key, what, sec, sec, key);
  return at_cfg_unknown_key(at, key, what, valid, n);
}

/* ---- runs and sweep (checked before anything is merged) ----------------------- */

static at_status check_runs(const at_ynode *v) {
  if (v->kind != AT_YN_SEQ) return at_cfg_expected(v, "runs", "a list of runs ({name: ..., model: {...}})");
  if (v->n == 0) return at_cfg_fail(v->at, "runs is empty (leave it out for one run named after the experiment)");
  at_status s;
  for (int i = 0; i < v->n; i++) {
    const at_ynode *it = v->v[i];
    char what[48], name[64];
    snprintf(what, sizeof what, "runs[%d]", i);
    if ((s = at_cfg_expect_map(it, what))) return s;
    for (int j = 0; j < it->n; j++) {
      if ((s = at_cfg_dup_key(it, j, what))) return s;
      const char *k = it->k[j];
      const at_ynode *x = it->v[j];
      char sub[64];
      snprintf(sub, sizeof sub, "%s.%s", what, k);
      if (!strcmp(k, "name")) {
        if ((s = at_cfg_get_name(x, sub, name, sizeof name))) return s;
        for (int q = 0; q < i; q++) {
          const at_ynode *other = at_yt_get(v->v[q], "name");
          if (!strcasecmp(other->s, name))
            return at_cfg_fail(x->at, "run name '%s' repeats runs[%d] ('%s'; names become file names, so "
                               "they must differ ignoring case)", name, q, other->s);
        }
      } else if (!strcmp(k, "seed")) {
        int64_t seed;
        s = at_cfg_get_int(x, sub, 0, INT64_MAX, &seed);
      } else if (!strcmp(k, "data")) {
        at_task_cfg d;
        memset(&d, 0, sizeof d);
        at_task_cfg_defaults(&d, AT_TASK_MQAR);
        s = at_cfg_apply_data(x, -1, &d);
      } else if (!strcmp(k, "model")) {
        at_model_cfg mc;
        at_model_cfg_defaults(&mc);
        s = at_cfg_apply_model(x, &mc);
      } else if (!strcmp(k, "train") || !strcmp(k, "stages")) {
        at_train_cfg t;
        at_cfg_train_defaults(&t);
        s = !strcmp(k, "train") ? at_cfg_apply_train(x, &t) : at_cfg_apply_stages(x, sub, &t);
      } else {
        s = misplaced_key(it->kloc[j], k, what, run_keys, AT_ARRAY_LEN(run_keys));
      }
      if (s) return s;
    }
    if (at_yt_find(it, "name") < 0) return at_cfg_fail(it->at, "%s needs a 'name'", what);
    const at_ynode *st = at_yt_get(it, "stages");
    if (st && at_yt_get(at_yt_get(it, "train"), "stages"))
      return at_cfg_fail(st->at, "%s gives stages twice (as stages and as train.stages)", what);
  }
  return AT_OK;
}

static at_status check_sweep(loader *L, const at_ynode *v) {
  at_status s;
  L->n_sweep = 0; /* a --set of the sweep checks the whole new grid again */
  if ((s = at_cfg_expect_map(v, "sweep"))) return s;
  if (v->n > MAX_SWEEP_KEYS) return at_cfg_fail(v->kloc[MAX_SWEEP_KEYS], "at most %d sweep keys", MAX_SWEEP_KEYS);
  static const char *const sweep_top[] = {"seed", "data", "model", "train"};
  for (int i = 0; i < v->n; i++) {
    if ((s = at_cfg_dup_key(v, i, "sweep"))) return s;
    sweep_key *sk = &L->sweep[i];
    sk->text = v->k[i];
    sk->at = v->kloc[i];
    sk->values = v->v[i];
    if ((s = split_key(L->a, sk->text, sk->at, "sweep key", sweep_top, AT_ARRAY_LEN(sweep_top), sk->parts,
                       &sk->nparts)))
      return s;
    const char *r = sk->parts[0];
    if (!(!strcmp(r, "seed") && sk->nparts == 1) && strcmp(r, "data") && strcmp(r, "model") && strcmp(r, "train"))
      return at_cfg_fail(sk->at, "sweep key '%s': a sweep varies the seed or a data, model or train key "
                         "(lr, model.d_model, ...)", sk->text);
    for (int j = 0; j < i; j++) {
      const sweep_key *o = &L->sweep[j];
      int same = o->nparts == sk->nparts;
      for (int p = 0; same && p < sk->nparts; p++) same = !strcmp(o->parts[p], sk->parts[p]);
      if (same) return at_cfg_fail(sk->at, "sweep key '%s' names the same setting as '%s'", sk->text, o->text);
    }
    char what[96];
    snprintf(what, sizeof what, "sweep %s", sk->text);
    if (sk->values->kind != AT_YN_SEQ || sk->values->n == 0)
      return at_cfg_expected(sk->values, what, "a non-empty list of values");
    sk->labels = at_arena_calloc(L->a, sizeof *sk->labels * (size_t)sk->values->n);
    sk->safe = at_arena_calloc(L->a, sizeof *sk->safe * (size_t)sk->values->n);
    if (!sk->labels || !sk->safe) return nomem();
    for (int j = 0; j < sk->values->n; j++) {
      const at_ynode *item = sk->values->v[j];
      const at_ynode *tree = at_yt_path_tree(L->a, sk->parts, sk->nparts, item, sk->at);
      if (!tree) return nomem();
      if ((s = check_top(L, tree, 1))) return s;
      if (!(sk->labels[j] = label_of(L->a, item, 0)) || !(sk->safe[j] = label_of(L->a, item, 1))) return nomem();
      for (int q = 0; q < j; q++)
        if (!strcmp(sk->safe[q], sk->safe[j]))
          return at_cfg_fail(item->at, "%s repeats the value %s", what, sk->labels[j]);
    }
    L->n_sweep = i + 1;
  }
  /* Names show the shortest ending of each key's path that no other key
   * shares: "lr", "expand_v", or "kda.chunk_size" beside "gdn.chunk_size". */
  for (int i = 0; i < L->n_sweep; i++) {
    sweep_key *sk = &L->sweep[i];
    int m = 1;
    for (; m < sk->nparts; m++) {
      int clash = 0;
      for (int j = 0; j < L->n_sweep && !clash; j++) {
        const sweep_key *o = &L->sweep[j];
        if (j == i || o->nparts < m) continue;
        clash = 1;
        for (int q = 1; q <= m && clash; q++) clash = !strcmp(o->parts[o->nparts - q], sk->parts[sk->nparts - q]);
      }
      if (!clash) break;
    }
    at_sbuf b = {0};
    for (int q = sk->nparts - m; q < sk->nparts; q++) at_sb_printf(&b, "%s%s", q > sk->nparts - m ? "." : "", sk->parts[q]);
    sk->show = b.oom ? NULL : arena_strdup(L->a, b.p, b.n);
    free(b.p);
    if (!sk->show) return nomem();
  }
  return AT_OK;
}

/* The top level of the file, or a tree made from a --set argument or a sweep
 * value (from_set: runs and sweep cannot be set that way). */
static at_status check_top(loader *L, const at_ynode *m, int from_set) {
  at_status s;
  if (m->kind != AT_YN_MAP)
    return at_cfg_expected(m, "the experiment file", "a mapping (experiment, seed, data, model, train, runs, sweep)");
  for (int i = 0; i < m->n; i++) {
    if ((s = at_cfg_dup_key(m, i, "the experiment file"))) return s;
    const char *k = m->k[i];
    const at_ynode *v = m->v[i];
    if (!strcmp(k, "experiment")) {
      char name[64];
      s = at_cfg_get_name(v, "experiment", name, sizeof name);
    } else if (!strcmp(k, "seed")) {
      int64_t seed;
      s = at_cfg_get_int(v, "seed", 0, INT64_MAX, &seed);
    } else if (!strcmp(k, "description")) {
      char text[2048];
      s = at_cfg_get_str(v, "description", text, sizeof text);
    } else if (!strcmp(k, "report")) {
      char metric[32] = "eval_accuracy";
      s = at_cfg_apply_report(v, metric, sizeof metric);
    } else if (!strcmp(k, "data")) {
      at_task_cfg d;
      memset(&d, 0, sizeof d);
      at_task_cfg_defaults(&d, AT_TASK_MQAR);
      s = at_cfg_apply_data(v, -1, &d);
    } else if (!strcmp(k, "model")) {
      at_model_cfg mc;
      at_model_cfg_defaults(&mc);
      s = at_cfg_apply_model(v, &mc);
    } else if (!strcmp(k, "train")) {
      at_train_cfg t;
      at_cfg_train_defaults(&t);
      s = at_cfg_apply_train(v, &t);
    } else if (!strcmp(k, "runs") && from_set) {
      s = at_cfg_fail(m->kloc[i], "'%s' can only be given in the file", k);
    } else if (!strcmp(k, "runs")) {
      s = check_runs(v);
    } else if (!strcmp(k, "sweep")) {
      s = check_sweep(L, v);
    } else {
      s = misplaced_key(m->kloc[i], k, "the experiment file", top_keys, AT_ARRAY_LEN(top_keys));
    }
    if (s) return s;
  }
  return AT_OK;
}

static at_status apply_sets(loader *L, const char *const *sets, int n_sets) {
  for (int i = 0; i < n_sets; i++) {
    const char *arg = sets[i];
    if (!arg) return at_error(AT_E_ARG, "at_experiment_load: --set argument %d is NULL", i);
    if (strlen(arg) > MAX_SET_BYTES)
      return at_error(AT_E_CONFIG, "--set %.40s...: longer than %zu KiB", arg, MAX_SET_BYTES >> 10);
    size_t n = strlen(arg) + 7;
    char *src = at_arena_alloc(L->a, n);
    if (!src) return nomem();
    if (strlen(arg) > 100) snprintf(src, n, "--set %.100s...", arg); /* messages name the argument, not all of it */
    else snprintf(src, n, "--set %s", arg);
    at_cfg_loc at = {src, 0, 0};
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) return at_cfg_fail(at, "expected section.key=value");
    char *key = arena_strdup(L->a, arg, (size_t)(eq - arg));
    if (!key) return nomem();
    const char *parts[MAX_PARTS];
    int np;
    at_status s = split_key(L->a, key, at, "key", top_keys, AT_ARRAY_LEN(top_keys), parts, &np);
    if (s) return s;
    at_ynode *val;
    if ((s = at_yt_parse(L->a, eq + 1, strlen(eq + 1), src, 0, &val))) return s;
    if (!val) { /* "key=" : an empty value, refused by the key's type */
      if (!(val = at_arena_calloc(L->a, sizeof *val))) return nomem();
      val->kind = AT_YN_SCALAR;
      val->s = "";
      val->at = at;
    }
    if (!strcmp(parts[0], "sweep") && np > 2) { /* sweep.model.d_model=[...]: one dotted sweep key */
      const char *rest = key + strlen("sweep.");
      parts[1] = rest;
      np = 2;
    }
    const at_ynode *tree = at_yt_path_tree(L->a, parts, np, val, at);
    if (!tree) return nomem();
    if (!strcmp(parts[0], "sweep")) { /* sweep=..., sweep.lr=[...]: replace keys of the grid */
      const at_ynode *merged = at_yt_merge(L->a, L->shared, tree);
      if (!merged) return nomem();
      if ((s = check_sweep(L, at_yt_get(merged, "sweep")))) return s;
      L->shared = merged;
      continue;
    }
    if ((s = check_top(L, tree, 1))) return s;
    if (!(L->shared = at_yt_merge(L->a, L->shared, tree))) return nomem();
  }
  return AT_OK;
}

/* ---- expansion ----------------------------------------------------------------- */

/* A run's overrides as a top-level tree: {seed, data, model, train}, with
 * runs[i].stages moved to train.stages. */
static const at_ynode *run_override(loader *L, const at_ynode *item) {
  at_ynode *m = at_yt_map_copy(L->a, NULL, item->n);
  if (!m) return NULL;
  m->at = item->at;
  int st = -1;
  for (int i = 0; i < item->n; i++) {
    if (!strcmp(item->k[i], "name")) continue;
    if (!strcmp(item->k[i], "stages")) {
      st = i;
      continue;
    }
    m->k[m->n] = item->k[i];
    m->kloc[m->n] = item->kloc[i];
    m->v[m->n++] = item->v[i];
  }
  if (st < 0) return m;
  static const char *const path[] = {"train", "stages"};
  const at_ynode *t = at_yt_path_tree(L->a, path, 2, item->v[st], item->kloc[st]);
  return t ? at_yt_merge(L->a, m, t) : NULL;
}

/* The sweep keys as the report sees them: which ones the table keeps the
 * best point over (report.best_over; by default all of them but the seed),
 * and the seed, which the table averages over. */
static at_status sweep_summary(loader *L, at_experiment *e, const at_ynode *best_over) {
  e->n_sweep = L->n_sweep;
  e->seed_key = -1;
  for (int k = 0; k < L->n_sweep; k++) {
    snprintf(e->sweep_keys[k], sizeof e->sweep_keys[k], "%s", L->sweep[k].show);
    if (!strcmp(L->sweep[k].text, "seed")) e->seed_key = k;
    e->sweep_best[k] = best_over == NULL && e->seed_key != k;
  }
  for (int i = 0; best_over && i < best_over->n; i++) {
    const at_ynode *it = best_over->v[i];
    int found = -1;
    for (int k = 0; k < L->n_sweep && found < 0; k++)
      if (!strcmp(it->s, L->sweep[k].text) || !strcmp(it->s, L->sweep[k].show)) found = k;
    if (found < 0) {
      char list[512] = "";
      for (int k = 0; k < L->n_sweep; k++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", k ? ", " : "", L->sweep[k].text);
      }
      return at_cfg_fail(it->at, "report.best_over: '%s' is not a sweep key (sweep keys: %s)", it->s,
                         L->n_sweep ? list : "none");
    }
    if (found == e->seed_key)
      return at_cfg_fail(it->at, "report.best_over: seeds are averaged (mean and standard deviation), "
                         "never picked; remove 'seed'");
    e->sweep_best[found] = 1;
  }
  return AT_OK;
}

static at_status emit_yaml(loader *L, const at_experiment *e, at_run_cfg *rc, const at_ynode *tree,
                           const char *base, const int *point) {
  at_sbuf b = {0};
  at_sb_printf(&b, "experiment: %s\n", e->name); /* a file-safe name: plain */
  const at_ynode *desc = at_yt_get(L->shared, "description");
  if (desc) {
    at_sb_printf(&b, "description: ");
    at_sb_scalar(&b, desc->s, 1);
    at_sb_printf(&b, "\n");
  }
  at_sb_printf(&b, "seed: %llu\nreport: {metric: %s}\n", (unsigned long long)rc->seed, e->report_metric);
  at_cfg_emit_sections(&b, rc, tree);
  at_sb_printf(&b, "runs:\n  - name: %s\n", base);
  if (L->n_sweep > 0) {
    at_sb_printf(&b, "sweep:\n");
    for (int k = 0; k < L->n_sweep; k++) {
      at_sb_printf(&b, "  ");
      at_sb_scalar(&b, L->sweep[k].text, 0);
      at_sb_printf(&b, ": [");
      at_sb_flow(&b, L->sweep[k].values->v[point[k]]);
      at_sb_printf(&b, "]\n");
    }
  }
  if (b.oom) return nomem();
  rc->yaml = b.p;
  return AT_OK;
}

static at_status expand(loader *L, at_experiment *e) {
  const at_ynode *runs = at_yt_get(L->root, "runs");
  const at_ynode *sweep = at_yt_get(L->shared, "sweep");
  int n_base = runs ? runs->n : 1;
  long long points = 1;
  for (int k = 0; k < L->n_sweep && n_base * points <= MAX_RUNS; k++) points *= L->sweep[k].values->n;
  if (n_base * points > MAX_RUNS)
    return at_cfg_fail(sweep ? sweep->at : runs->at, "the runs and the sweep expand to more than %d runs", MAX_RUNS);
  int total = (int)(n_base * points);
  e->runs = calloc((size_t)total, sizeof *e->runs);
  if (!e->runs) return nomem();
  for (int r = 0; r < n_base; r++) {
    const at_ynode *item = runs ? runs->v[r] : NULL;
    const at_ynode *tree0 = L->shared;
    at_cfg_loc fb = item ? item->at : L->root->at;
    const char *base = item ? at_yt_get(item, "name")->s : e->name;
    at_cfg_loc name_at = item ? at_yt_get(item, "name")->at : L->root->at;
    if (item) {
      const at_ynode *ov = run_override(L, item);
      if (!ov || !(tree0 = at_yt_merge(L->a, L->shared, ov))) return nomem();
    }
    for (long long p = 0; p < points; p++) {
      int point[MAX_SWEEP_KEYS];
      long long rest = p;
      for (int k = L->n_sweep - 1; k >= 0; k--) { /* the last key varies fastest */
        point[k] = (int)(rest % L->sweep[k].values->n);
        rest /= L->sweep[k].values->n;
      }
      const at_ynode *tree = tree0;
      char sp[256] = "", id[512], values[MAX_SWEEP_KEYS][64];
      snprintf(id, sizeof id, "%s", base);
      for (int k = 0; k < L->n_sweep; k++) {
        const sweep_key *sk = &L->sweep[k];
        const at_ynode *leaf = sk->values->v[point[k]];
        const at_ynode *t = at_yt_path_tree(L->a, sk->parts, sk->nparts, leaf, sk->at);
        if (!t || !(tree = at_yt_merge(L->a, tree, t))) return nomem();
        size_t ls = strlen(sp), li = strlen(id);
        snprintf(sp + ls, sizeof sp - ls, "%s%s=%s", k ? " " : "", sk->show, sk->labels[point[k]]);
        snprintf(values[k], sizeof values[k], "%s", sk->labels[point[k]]);
        snprintf(id + li, sizeof id - li, "__%s=%s", sk->show, sk->safe[point[k]]);
      }
      at_run_cfg *rc = &e->runs[e->n_runs];
      memset(rc, 0, sizeof *rc);
      AT_ASSERT(strlen(base) < sizeof rc->base_name); /* names are checked to fit */
      memcpy(rc->base_name, base, strlen(base) + 1);
      char name[400];
      snprintf(name, sizeof name, "%s%s%s", base, sp[0] ? " " : "", sp);
      if (strlen(sp) >= sizeof rc->sweep_point || strlen(name) >= sizeof rc->name || strlen(id) >= sizeof rc->run_id)
        return at_cfg_fail(L->n_sweep ? sweep->at : name_at,
                           "run '%s' is too long a name with its sweep point (at most %zu characters, "
                           "and %zu for the id '%s'); shorten the run name or the sweep keys",
                           name, sizeof rc->name - 1, sizeof rc->run_id - 1, id);
      memcpy(rc->sweep_point, sp, strlen(sp) + 1);
      for (int k = 0; k < L->n_sweep; k++) memcpy(rc->sweep_values[k], values[k], sizeof values[k]);
      memcpy(rc->name, name, strlen(name) + 1);
      memcpy(rc->run_id, id, strlen(id) + 1);
      e->n_runs++;
      at_status s = at_cfg_resolve(tree, fb, rc);
      if (s) {
        if (total > 1) {
          char msg[1800];
          snprintf(msg, sizeof msg, "%s", at_errmsg());
          at_error(s, "%s (in run '%s')", msg, rc->name);
        }
        return s;
      }
      if ((s = emit_yaml(L, e, rc, tree, base, point))) return s;
    }
  }
  return AT_OK;
}

/* ---- entry points --------------------------------------------------------------- */

static at_status read_file(const char *path, char **text, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return at_error(AT_E_IO, "%s: cannot open: %s", path, strerror(errno));
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  at_status s = buf ? AT_OK : nomem();
  while (s == AT_OK) {
    if (n > MAX_FILE_BYTES) {
      s = at_error(AT_E_CONFIG, "%s: larger than %zu KiB; not an experiment file", path, MAX_FILE_BYTES >> 10);
      break;
    }
    if (n + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        s = nomem();
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - 1 - n, f);
    n += got;
    if (got == 0) {
      if (ferror(f)) s = at_error(AT_E_IO, "%s: cannot read: %s", path, strerror(errno));
      break;
    }
  }
  fclose(f);
  if (s) {
    free(buf);
    return s;
  }
  buf[n] = '\0';
  *text = buf;
  *len = n;
  return AT_OK;
}

static at_status load(loader *L, at_experiment *e, size_t len, const char *const *sets, int n_sets) {
  at_ynode *root;
  at_status s = at_yt_parse(L->a, e->source, len, e->path, 1, &root);
  if (s) return s;
  at_cfg_loc start = {e->path, 1, 1};
  if (!root) return at_cfg_fail(start, "the file is empty; an experiment needs at least 'experiment: <name>'");
  L->root = L->shared = root;
  if ((s = check_top(L, root, 0))) return s;
  if ((s = apply_sets(L, sets, n_sets))) return s;
  const at_ynode *ex = at_yt_get(L->shared, "experiment");
  if (!ex)
    return at_cfg_fail(root->at, "missing key 'experiment' (a file-safe name; results go to results/<experiment>/)");
  snprintf(e->name, sizeof e->name, "%s", ex->s);
  snprintf(e->report_metric, sizeof e->report_metric, "eval_accuracy");
  const at_ynode *rep = at_yt_get(L->shared, "report");
  if (rep && (s = at_cfg_apply_report(rep, e->report_metric, sizeof e->report_metric))) return s;
  if ((s = sweep_summary(L, e, rep ? at_yt_get(rep, "best_over") : NULL))) return s;
  return expand(L, e);
}

/* Loads e->source (len bytes, e->path its name in messages). */
static at_status load_source(at_experiment *e, size_t len, const char *const *sets, int n_sets) {
  loader L;
  memset(&L, 0, sizeof L);
  if (!(L.a = at_arena_new((size_t)1 << 16))) return nomem();
  at_status s = load(&L, e, len, sets, n_sets);
  at_arena_free(L.a);
  return s;
}

static at_status load_into(const char *path, const char *text, const char *const *sets, int n_sets,
                           at_experiment **out) {
  if (!out) return at_error(AT_E_ARG, "at_experiment_load: out is NULL");
  *out = NULL;
  if (!path || n_sets < 0 || (n_sets > 0 && !sets))
    return at_error(AT_E_ARG, "at_experiment_load: no path, or a bad --set list");
  if (strlen(path) >= sizeof((at_experiment *)0)->path)
    return at_error(AT_E_ARG, "at_experiment_load: path longer than %zu characters",
                    sizeof((at_experiment *)0)->path - 1);
  at_experiment *e = calloc(1, sizeof *e);
  if (!e) return nomem();
  memcpy(e->path, path, strlen(path) + 1);
  size_t len = 0;
  at_status s = AT_OK;
  if (text) {
    len = strlen(text);
    if (!(e->source = strdup(text))) s = nomem();
  } else {
    s = read_file(path, &e->source, &len);
  }
  if (s == AT_OK) s = load_source(e, len, sets, n_sets);
  if (s) {
    at_experiment_free(e);
    return s;
  }
  *out = e;
  return AT_OK;
}

at_status at_experiment_load(const char *path, const char *const *sets, int n_sets, at_experiment **out) {
  return load_into(path, NULL, sets, n_sets, out);
}

at_status at_experiment_load_text(const char *name, const char *text, at_experiment **out) {
  if (!text) return at_error(AT_E_ARG, "at_experiment_load_text: no text");
  return load_into(name, text, NULL, 0, out);
}

void at_experiment_free(at_experiment *e) {
  if (!e) return;
  for (int i = 0; i < e->n_runs; i++) free(e->runs[i].yaml);
  free(e->runs);
  free(e->source);
  free(e);
}
