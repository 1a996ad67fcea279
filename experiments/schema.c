/* experiments/schema.c: the keys of an experiment file, their types, ranges
 * and defaults; resolution of derived values; the resolved YAML.
 *
 * Schema (defaults in brackets; "derived" values are computed per run):
 *
 *   experiment   required; a file-safe name (results/<experiment>/)
 *   seed         [0] the run's seed; also the data seed
 *   description  [""] free text
 *   report       {metric: eval_accuracy | eval_loss | auto} [eval_accuracy],
 *                best_over: sweep keys the table keeps the best point over [every sweep
 *                key]; the other sweep keys become the table's columns
 *   data         task [mqar]: mqar | palindrome | stack | selective_copy | niah | text
 *                vocab_size, seq_len, train_examples, test_examples  (every task)
 *                label: the name of a sweep.data entry's column [its first value]
 *                mqar: num_kv_pairs, power_a, random_non_queries,
 *                      query_layout (zoology | contiguous)
 *                palindrome: palindrome_len      stack: num_stacks, num_symbols
 *                selective_copy: num_tokens_to_copy      niah: num_depth_buckets
 *                text: path (a text file, a directory, or a *.bin token file whose
 *                vocab_size is its tokenizer's unless given), val_fraction, cache
 *                Defaults per task: at_task_cfg_defaults (data/). A key that does not
 *                concern the run's task is refused.
 *                eval [none]: further test sets evaluated at every evaluation, a list
 *                (at most 8) of maps of data keys overriding the run's resolved data
 *                section (its task's keys; the task itself stays), plus an optional
 *                file-safe `name` [the overridden keys, "seq_len=194"]; their
 *                vocabulary must fit the model's, and with position learned their
 *                seq_len may not exceed the training length.
 *   model        d_model [64], n_layers [len(layers), else 2], n_heads [2],
 *                n_kv_heads [n_heads], mlp [swiglu] (none | swiglu | rwkv_cmix),
 *                mlp_hidden [8/3 d_model rounded up to 16; rwkv_cmix: 4 d_model
 *                rounded up to 32], position [rope]
 *                (rope | nope | learned), rope_theta [10000], norm_eps [1e-5],
 *                init_std [0.02], residual_init [scaled] (scaled: output projections
 *                into the residual stream at init_std / sqrt(2 n_layers); plain:
 *                init_std), tie_embeddings [false],
 *                layers [full x n_layers]: a list of mixers, or {pattern: [...]}
 *                repeated to n_layers,
 *                attention: {<mixer>: {options}} with the options below.
 *   train        steps [1000], batch_size [32], lr [1e-3], optimizer [adamw]
 *                (adamw | sgd), beta1 [0.9], beta2 [0.95], eps [1e-8],
 *                momentum [0.9], nesterov [false], weight_decay [0.1],
 *                grad_clip [1.0], schedule [cosine] (constant | cosine | wsd),
 *                warmup_steps [0], min_lr_ratio [0], decay_frac [0.2],
 *                eval_every [100; 0 = at the end], eval_examples [0 = whole test split],
 *                checkpoint_every [0 = at the end], log_every [10], threads [0 = all],
 *                max_bad_steps [5], stages (below), sample [0]: text runs print this
 *                many sampled bytes at each evaluation (0: none).
 *   runs         a list of {name (required, unique), seed, data, model, train, stages};
 *                sections deep-merge over the shared ones (maps key by key, lists
 *                replace). Without runs: one run named after the experiment.
 *   sweep        {dotted key: [values]}: "lr" means train.lr, "seed" the seed,
 *                otherwise section.key[.key...]; every run is expanded over the
 *                cartesian product (last key fastest).
 *
 * Mixer options (model.attention.<mixer>): each mixer's own table in its
 * at_mixer_impl (models/mixer.h; `train --mixers` prints them all).
 *
 * Stages (train.stages or runs[i].stages, at most 4): {name (required),
 * steps (required; the stages' steps sum to train.steps), lr [train.lr],
 * trainable [all] (all | indexer | main), sparse [false], indexer_loss [false]};
 * indexer, sparse and indexer_loss need a dsa layer.
 */
#include "experiments/schema.h"

#include "models/mixer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG ((int64_t)1 << 40)
#define MAX_MIXER_OPTS 32
#define TASK(k) (1u << (k))

_Static_assert(sizeof(at_position) == sizeof(int) && sizeof(at_mlp_kind) == sizeof(int) &&
               sizeof(at_residual_init) == sizeof(int) &&
               sizeof(at_optimizer_kind) == sizeof(int) && sizeof(at_schedule_kind) == sizeof(int) &&
               sizeof(at_trainable) == sizeof(int) && sizeof(at_task_kind) == sizeof(int),
               "enum fields are written as int");

enum { F_INT, F_REAL, F_BOOL, F_STR, F_ENUM, F_TASK, F_LAYERS, F_ATTENTION, F_STAGES, F_NAMES, F_EVAL, F_LABEL };

typedef struct field {
  const char *key;
  int type;
  size_t off, size;
  int64_t imin, imax;            /* F_INT */
  double lo, hi;                 /* F_REAL */
  int lo_open, hi_open;
  const char *const *names;      /* F_ENUM, NULL-terminated */
  const int *vals;               /* F_ENUM values (NULL: the index) */
  unsigned mask;                 /* tasks or mixers the key concerns (0: all) */
} field;

#define FI(k, S, f, mn, mx, m) \
  {.key = k, .type = F_INT, .off = offsetof(S, f), .size = sizeof(((S *)0)->f), .imin = mn, .imax = mx, .mask = m}
#define FR(k, S, f, l, h, lo_o, hi_o, m)                                                    \
  {.key = k, .type = F_REAL, .off = offsetof(S, f), .size = sizeof(double), .lo = l, .hi = h, \
   .lo_open = lo_o, .hi_open = hi_o, .mask = m}
#define FB(k, S, f, m) {.key = k, .type = F_BOOL, .off = offsetof(S, f), .size = sizeof(int), .mask = m}
#define FS(k, S, f, m) {.key = k, .type = F_STR, .off = offsetof(S, f), .size = sizeof(((S *)0)->f), .mask = m}
#define FE(k, S, f, nm, vl, m) \
  {.key = k, .type = F_ENUM, .off = offsetof(S, f), .size = sizeof(int), .names = nm, .vals = vl, .mask = m}
#define FX(k, t) {.key = k, .type = t}

static const char *const mlp_names[] = {"none", "swiglu", "rwkv_cmix", NULL};
static const char *const resid_names[] = {"scaled", "plain", NULL};
static const char *const model_pos_names[] = {"rope", "nope", "learned", NULL};
static const int model_pos_vals[] = {AT_POS_ROPE, AT_POS_NOPE, AT_POS_LEARNED};
static const char *const optimizer_names[] = {"adamw", "sgd", NULL};
static const int optimizer_vals[] = {AT_OPT_ADAMW, AT_OPT_SGD};
static const char *const schedule_names[] = {"constant", "cosine", "wsd", NULL};
static const int schedule_vals[] = {AT_SCHED_CONSTANT, AT_SCHED_COSINE, AT_SCHED_WSD};
static const char *const trainable_names[] = {"all", "indexer", "main", NULL};
static const int trainable_vals[] = {AT_TRAINABLE_ALL, AT_TRAINABLE_INDEXER, AT_TRAINABLE_MAIN};
static const char *const layout_names[] = {"zoology", "contiguous", NULL};
static const char *const metric_names[] = {"eval_accuracy", "eval_loss", "auto", NULL};

static const field data_fields[] = {
  FX("task", F_TASK),
  FX("label", F_LABEL), /* names a sweep.data entry (at_sb_label); not stored, not emitted */
  FI("vocab_size", at_task_cfg, vocab_size, 2, INT32_MAX, 0),
  FI("seq_len", at_task_cfg, seq_len, 1, (int64_t)1 << 24, 0),
  FI("train_examples", at_task_cfg, train_examples, 1, BIG, 0),
  FI("test_examples", at_task_cfg, test_examples, 0, BIG, 0), /* text: 0 = every held-out window */
  FI("num_kv_pairs", at_task_cfg, num_kv_pairs, 1, (int64_t)1 << 24, TASK(AT_TASK_MQAR)),
  FR("power_a", at_task_cfg, power_a, 0, 1, 1, 0, TASK(AT_TASK_MQAR)),
  FB("random_non_queries", at_task_cfg, random_non_queries, TASK(AT_TASK_MQAR)),
  FE("query_layout", at_task_cfg, query_contiguous, layout_names, NULL, TASK(AT_TASK_MQAR)),
  FI("palindrome_len", at_task_cfg, palindrome_len, 0, (int64_t)1 << 24, TASK(AT_TASK_PALINDROME)),
  FI("num_stacks", at_task_cfg, num_stacks, 1, (int64_t)1 << 20, TASK(AT_TASK_STACK)),
  FI("num_symbols", at_task_cfg, num_symbols, 0, INT32_MAX, TASK(AT_TASK_STACK)),
  FI("num_tokens_to_copy", at_task_cfg, num_tokens_to_copy, 1, (int64_t)1 << 24,
     TASK(AT_TASK_SELECTIVE_COPY)),
  FI("num_depth_buckets", at_task_cfg, num_depth_buckets, 1, 1000, TASK(AT_TASK_NIAH)),
  FS("path", at_task_cfg, path, TASK(AT_TASK_TEXT)),
  FR("val_fraction", at_task_cfg, val_fraction, 0, 1, 1, 1, TASK(AT_TASK_TEXT)),
  FS("cache", at_task_cfg, cache, TASK(AT_TASK_TEXT)),
  FX("eval", F_EVAL),
};

static const field model_fields[] = {
  FI("d_model", at_model_cfg, d_model, 1, 65536, 0),
  FI("n_layers", at_model_cfg, n_layers, 1, AT_MAX_LAYERS, 0),
  FI("n_heads", at_model_cfg, n_heads, 1, 4096, 0),
  FI("n_kv_heads", at_model_cfg, n_kv_heads, 1, 4096, 0),
  FE("mlp", at_model_cfg, mlp, mlp_names, NULL, 0),
  FI("mlp_hidden", at_model_cfg, mlp_hidden, 1, (int64_t)1 << 20, 0),
  FE("position", at_model_cfg, position, model_pos_names, model_pos_vals, 0),
  FR("rope_theta", at_model_cfg, rope_theta, 0, INFINITY, 1, 1, 0),
  FR("norm_eps", at_model_cfg, norm_eps, 0, 1, 1, 0, 0),
  FR("init_std", at_model_cfg, init_std, 0, INFINITY, 1, 1, 0),
  FE("residual_init", at_model_cfg, residual_init, resid_names, NULL, 0),
  FB("tie_embeddings", at_model_cfg, tie_embeddings, 0),
  FX("layers", F_LAYERS),
  FX("attention", F_ATTENTION),
};

static const field train_fields[] = {
  FI("steps", at_train_cfg, steps, 1, BIG, 0),
  FI("batch_size", at_train_cfg, batch_size, 1, (int64_t)1 << 24, 0),
  FI("micro_batches", at_train_cfg, micro_batches, 1, (int64_t)1 << 24, 0),
  FR("lr", at_train_cfg, optim.lr, 0, INFINITY, 1, 1, 0),
  FE("optimizer", at_train_cfg, optim.kind, optimizer_names, optimizer_vals, 0),
  FR("beta1", at_train_cfg, optim.beta1, 0, 1, 0, 1, 0),
  FR("beta2", at_train_cfg, optim.beta2, 0, 1, 0, 1, 0),
  FR("eps", at_train_cfg, optim.eps, 0, 1, 1, 0, 0),
  FR("momentum", at_train_cfg, optim.momentum, 0, 1, 0, 1, 0),
  FB("nesterov", at_train_cfg, optim.nesterov, 0),
  FR("weight_decay", at_train_cfg, optim.weight_decay, 0, INFINITY, 0, 1, 0),
  FR("grad_clip", at_train_cfg, optim.grad_clip, 0, INFINITY, 0, 1, 0),
  FE("schedule", at_train_cfg, optim.schedule, schedule_names, schedule_vals, 0),
  FI("warmup_steps", at_train_cfg, optim.warmup_steps, 0, BIG, 0),
  FR("min_lr_ratio", at_train_cfg, optim.min_lr_ratio, 0, 1, 0, 0, 0),
  FR("decay_frac", at_train_cfg, optim.decay_frac, 0, 1, 0, 0, 0),
  FI("eval_every", at_train_cfg, eval_every, 0, BIG, 0),
  FI("eval_examples", at_train_cfg, eval_examples, 0, BIG, 0),
  FI("checkpoint_every", at_train_cfg, checkpoint_every, 0, BIG, 0),
  FI("log_every", at_train_cfg, log_every, 1, BIG, 0),
  FI("threads", at_train_cfg, threads, 0, 4096, 0),
  FI("max_bad_steps", at_train_cfg, max_bad_steps, 1, 1 << 20, 0),
  FX("stages", F_STAGES),
  FI("sample", at_train_cfg, sample, 0, 1 << 20, 0),
};

static const field stage_fields[] = {
  FS("name", at_stage_cfg, name, 0),
  FI("steps", at_stage_cfg, steps, 1, BIG, 0),
  FR("lr", at_stage_cfg, lr, 0, INFINITY, 1, 1, 0),
  FE("trainable", at_stage_cfg, trainable, trainable_names, trainable_vals, 0),
  FB("sparse", at_stage_cfg, sparse, 0),
  FB("indexer_loss", at_stage_cfg, indexer_loss, 0),
};

typedef struct report_cfg {
  int metric;
} report_cfg;
static const field report_fields[] = {
  FE("metric", report_cfg, metric, metric_names, NULL, 0),
  FX("best_over", F_NAMES), /* sweep keys the table takes the best point over [all] */
};

void at_cfg_train_defaults(at_train_cfg *t) {
  memset(t, 0, sizeof *t);
  at_optim_cfg_defaults(&t->optim); /* then every field set here, so the file's meaning is ours */
  t->optim.kind = AT_OPT_ADAMW;
  t->optim.lr = 1e-3;
  t->optim.beta1 = 0.9;
  t->optim.beta2 = 0.95;
  t->optim.eps = 1e-8;
  t->optim.momentum = 0.9;
  t->optim.nesterov = 0;
  t->optim.weight_decay = 0.1;
  t->optim.grad_clip = 1.0;
  t->optim.schedule = AT_SCHED_COSINE;
  t->optim.warmup_steps = 0;
  t->optim.min_lr_ratio = 0.0;
  t->optim.decay_frac = 0.2;
  t->steps = 1000;
  t->optim.total_steps = t->steps;
  t->batch_size = 32;
  t->micro_batches = 1;
  t->eval_every = 100;
  t->eval_examples = 0;
  t->checkpoint_every = 0;
  t->log_every = 10;
  t->threads = 0;
  t->max_bad_steps = 5;
  t->n_stages = 0;
  t->sample = 0;
}

/* ---- messages ---------------------------------------------------------------- */

const char *at_cfg_section_of(const char *key) {
  static const struct {
    const char *name;
    const field *f;
    int n;
  } secs[] = {{"data", data_fields, AT_ARRAY_LEN(data_fields)},
              {"model", model_fields, AT_ARRAY_LEN(model_fields)},
              {"train", train_fields, AT_ARRAY_LEN(train_fields)}};
  for (int s = 0; s < AT_ARRAY_LEN(secs); s++)
    for (int i = 0; i < secs[s].n; i++)
      if (!strcmp(key, secs[s].f[i].key)) return secs[s].name;
  return NULL;
}

int at_cfg_edit_distance(const char *a, const char *b) {
  enum { M = 64 };
  size_t n = strlen(a), m = strlen(b);
  if (n >= M || m >= M) return 1000;
  int d[M][M];
  for (size_t i = 0; i <= n; i++) d[i][0] = (int)i;
  for (size_t j = 0; j <= m; j++) d[0][j] = (int)j;
  for (size_t i = 1; i <= n; i++)
    for (size_t j = 1; j <= m; j++) {
      int cost = a[i - 1] != b[j - 1];
      int v = AT_MIN(d[i - 1][j] + 1, d[i][j - 1] + 1);
      v = AT_MIN(v, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) v = AT_MIN(v, d[i - 2][j - 2] + 1);
      d[i][j] = v;
    }
  return d[n][m];
}

const char *at_cfg_nearest(const char *key, const char *const *valid, int n) {
  const char *best = NULL;
  int bd = 1000;
  for (int i = 0; i < n; i++) {
    int d = at_cfg_edit_distance(key, valid[i]);
    if (d < bd) bd = d, best = valid[i];
  }
  int limit = strlen(key) >= 4 ? 2 : 1;
  return bd <= limit ? best : NULL;
}

static void join_names(char *buf, size_t size, const char *const *names, int n) {
  size_t len = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && len + 1 < size; i++) {
    int w = snprintf(buf + len, size - len, "%s%s", i ? ", " : "", names[i]);
    if (w < 0) break;
    len += (size_t)w;
  }
}

at_status at_cfg_unknown_key(at_cfg_loc at, const char *key, const char *what,
                             const char *const *valid, int n) {
  const char *near = at_cfg_nearest(key, valid, n);
  if (near) return at_cfg_fail(at, "unknown key '%s' in %s; did you mean '%s'?", key, what, near);
  char list[1024];
  join_names(list, sizeof list, valid, n);
  return at_cfg_fail(at, "unknown key '%s' in %s (valid keys: %s)", key, what, list);
}

at_status at_cfg_dup_key(const at_ynode *map, int i, const char *what) {
  for (int j = 0; j < i; j++)
    if (strcmp(map->k[j], map->k[i]) == 0) {
      if (map->kloc[j].line > 0)
        return at_cfg_fail(map->kloc[i], "duplicate key '%s' in %s (first given at line %d)", map->k[i],
                           what, map->kloc[j].line);
      return at_cfg_fail(map->kloc[i], "duplicate key '%s' in %s", map->k[i], what);
    }
  return AT_OK;
}

/* "a list", "a mapping", "nothing", "the string \"x\"", "'x'" */
static const char *describe(const at_ynode *v, char *buf, size_t size) {
  if (v->kind == AT_YN_SEQ) return "a list";
  if (v->kind == AT_YN_MAP) return "a mapping";
  if (at_yt_is_null(v)) return "nothing";
  if (v->quoted) snprintf(buf, size, "the string \"%.60s\"", v->s);
  else snprintf(buf, size, "'%.60s'", v->s);
  return buf;
}

at_status at_cfg_expected(const at_ynode *v, const char *what, const char *type) {
  char buf[96];
  return at_cfg_fail(v->at, "%s: expected %s, got %s", what, type, describe(v, buf, sizeof buf));
}

at_status at_cfg_expect_map(const at_ynode *n, const char *what) {
  if (n->kind == AT_YN_MAP) return AT_OK;
  return at_cfg_expected(n, what, "a mapping");
}

at_status at_cfg_get_int(const at_ynode *v, const char *what, int64_t lo, int64_t hi, int64_t *out) {
  if (v->kind != AT_YN_SCALAR || v->quoted || at_yt_is_null(v)) return at_cfg_expected(v, what, "an integer");
  int64_t x;
  int r = at_yt_parse_int(v->s, &x);
  if (r == -1) return at_cfg_expected(v, what, "an integer");
  if (r == -2) return at_cfg_fail(v->at, "%s: %s is out of range", what, v->s);
  if (x < lo || x > hi) {
    if (hi < BIG && lo > INT64_MIN)
      return at_cfg_fail(v->at, "%s must be between %lld and %lld, got %lld", what, (long long)lo,
                         (long long)hi, (long long)x);
    if (x < lo) return at_cfg_fail(v->at, "%s must be >= %lld, got %lld", what, (long long)lo, (long long)x);
    return at_cfg_fail(v->at, "%s must be <= %lld, got %lld", what, (long long)hi, (long long)x);
  }
  *out = x;
  return AT_OK;
}

static at_status get_real(const at_ynode *v, const field *f, const char *what, double *out) {
  if (v->kind != AT_YN_SCALAR || v->quoted || at_yt_is_null(v)) return at_cfg_expected(v, what, "a number");
  double x;
  int r = at_yt_parse_real(v->s, &x);
  if (r == -1) return at_cfg_expected(v, what, "a number");
  if (r == -2) return at_cfg_fail(v->at, "%s: %s is out of range", what, v->s);
  int below = f->lo_open ? !(x > f->lo) : !(x >= f->lo);
  int above = f->hi_open ? !(x < f->hi) : !(x <= f->hi);
  if (below || above) {
    char range[64];
    if (isfinite(f->lo) && isfinite(f->hi))
      snprintf(range, sizeof range, "in %c%g, %g%c", f->lo_open ? '(' : '[', f->lo, f->hi,
               f->hi_open ? ')' : ']');
    else if (isfinite(f->lo))
      snprintf(range, sizeof range, "%s %g", f->lo_open ? ">" : ">=", f->lo);
    else
      snprintf(range, sizeof range, "%s %g", f->hi_open ? "<" : "<=", f->hi);
    return at_cfg_fail(v->at, "%s must be %s, got %s", what, range, v->s);
  }
  *out = x;
  return AT_OK;
}

static at_status get_bool(const at_ynode *v, const char *what, int *out) {
  if (v->kind == AT_YN_SCALAR && !v->quoted) {
    if (!strcmp(v->s, "true")) return *out = 1, AT_OK;
    if (!strcmp(v->s, "false")) return *out = 0, AT_OK;
  }
  return at_cfg_expected(v, what, "true or false");
}

at_status at_cfg_get_str(const at_ynode *v, const char *what, char *buf, size_t size) {
  if (v->kind != AT_YN_SCALAR || at_yt_is_null(v)) return at_cfg_expected(v, what, "a string");
  size_t len = strlen(v->s);
  if (len >= size) return at_cfg_fail(v->at, "%s is longer than %zu characters", what, size - 1);
  memcpy(buf, v->s, len + 1);
  return AT_OK;
}

at_status at_cfg_get_name(const at_ynode *v, const char *what, char *buf, size_t size) {
  at_status s = at_cfg_get_str(v, what, buf, size);
  if (s) return s;
  int ok = (buf[0] >= 'a' && buf[0] <= 'z') || (buf[0] >= 'A' && buf[0] <= 'Z') || (buf[0] >= '0' && buf[0] <= '9');
  for (const char *p = buf; *p && ok; p++)
    ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("_-.+", *p);
  if (!ok)
    return at_cfg_fail(v->at, "%s: '%s' is not a file-safe name (a letter or digit, then letters, "
                       "digits, '_', '-', '.' or '+')", what, buf);
  return AT_OK;
}

static at_status get_enum(const at_ynode *v, const char *what, const char *const *names,
                          const int *vals, int *out) {
  int n = 0;
  while (names[n]) n++;
  char list[256];
  join_names(list, sizeof list, names, n);
  if (v->kind != AT_YN_SCALAR || at_yt_is_null(v)) {
    char type[300];
    snprintf(type, sizeof type, "one of %s", list);
    return at_cfg_expected(v, what, type);
  }
  for (int i = 0; i < n; i++)
    if (!strcmp(v->s, names[i])) return *out = vals ? vals[i] : i, AT_OK;
  const char *near = at_cfg_nearest(v->s, names, n);
  if (near)
    return at_cfg_fail(v->at, "%s: unknown value '%s'; did you mean '%s'? (one of %s)", what, v->s, near, list);
  return at_cfg_fail(v->at, "%s: unknown value '%s' (one of %s)", what, v->s, list);
}

/* ---- applying sections ------------------------------------------------------- */

typedef struct section {
  const char *name;              /* "model", "model.attention.kda" */
  const field *f;
  int nf;
  int kind;                      /* -1, or the bit checked against field masks */
  const char *kind_what;         /* "mixer", "task" */
  const char *kind_name;         /* "kda" */
} section;

static int applies(const field *f, int kind) { return kind < 0 || !f->mask || (f->mask & (1u << kind)); }

static int section_keys(const section *sec, const char **out) {
  int n = 0;
  for (int i = 0; i < sec->nf; i++)
    if (applies(&sec->f[i], sec->kind)) out[n++] = sec->f[i].key;
  return n;
}

static at_status apply_map(const section *sec, const at_ynode *map, void *target);

/* The registered mixers' names, and "unknown mixer" with a suggestion. */
static int mixer_names(const char **names) {
  int n = at_mixer_count();
  for (int k = 0; k < n; k++) names[k] = at_mixer_name(k);
  return n;
}

static at_status unknown_mixer(at_cfg_loc at, const char *name, const char *what) {
  const char *names[AT_MAX_MIXERS];
  int n = mixer_names(names);
  const char *near = at_cfg_nearest(name, names, n);
  if (near) return at_cfg_fail(at, "unknown mixer '%s' in %s; did you mean '%s'?", name, what, near);
  char list[512];
  join_names(list, sizeof list, names, n);
  return at_cfg_fail(at, "unknown mixer '%s' in %s (mixers: %s)", name, what, list);
}

static at_status check_layer_list(const at_ynode *v, const char *what) {
  if (v->kind != AT_YN_SEQ) return at_cfg_expected(v, what, "a list of mixer names");
  if (v->n == 0) return at_cfg_fail(v->at, "%s is empty", what);
  if (v->n > AT_MAX_LAYERS) return at_cfg_fail(v->v[AT_MAX_LAYERS]->at, "%s: more than %d layers", what, AT_MAX_LAYERS);
  for (int i = 0; i < v->n; i++) {
    const at_ynode *it = v->v[i];
    if (it->kind != AT_YN_SCALAR || at_yt_is_null(it)) return at_cfg_expected(it, what, "a mixer name");
    if (at_mixer_from_name(it->s) < 0) return unknown_mixer(it->at, it->s, what);
  }
  return AT_OK;
}

static at_status check_layers(const at_ynode *v) {
  if (v->kind != AT_YN_MAP) return check_layer_list(v, "model.layers");
  static const char *const keys[] = {"pattern"};
  for (int i = 0; i < v->n; i++) {
    at_status s = at_cfg_dup_key(v, i, "model.layers");
    if (s) return s;
    if (strcmp(v->k[i], "pattern")) return at_cfg_unknown_key(v->kloc[i], v->k[i], "model.layers", keys, 1);
  }
  const at_ynode *p = at_yt_get(v, "pattern");
  if (!p) return at_cfg_fail(v->at, "model.layers: a mapping needs 'pattern' (mixers repeated to n_layers)");
  return check_layer_list(p, "model.layers.pattern");
}

/* A mixer's option table as schema fields (section kind -1: every row applies). */
static int mixer_fields(const at_mixer_impl *impl, field *out) {
  static const int types[] = {[AT_OPT_INT] = F_INT, [AT_OPT_REAL] = F_REAL, [AT_OPT_BOOL] = F_BOOL,
                              [AT_OPT_ENUM] = F_ENUM};
  AT_ASSERT(impl->n_opts <= MAX_MIXER_OPTS);
  for (int i = 0; i < impl->n_opts; i++) {
    const at_mixer_opt *o = &impl->opts[i];
    int is_int = o->type == AT_OPT_INT; /* only integer options have integer bounds (reals may be +-inf) */
    out[i] = (field){.key = o->key, .type = types[o->type], .off = o->off,
                     .size = o->type == AT_OPT_INT ? sizeof(int64_t) : o->type == AT_OPT_REAL ? sizeof(double) : sizeof(int),
                     .imin = is_int ? (int64_t)o->lo : 0, .imax = is_int ? (int64_t)o->hi : 0, .lo = o->lo, .hi = o->hi,
                     .lo_open = o->lo_open, .hi_open = o->hi_open, .names = o->names, .vals = o->vals};
  }
  return impl->n_opts;
}

/* 1 if some other mixer has option `key`. */
static int other_mixer_key(const at_mixer_impl *self, const char *key) {
  for (int k = 0; k < at_mixer_count(); k++) {
    const at_mixer_impl *m = at_mixer_impl_of(k);
    for (int i = 0; m != self && i < m->n_opts; i++)
      if (!strcmp(m->opts[i].key, key)) return 1;
  }
  return 0;
}

static at_status apply_mixer(const at_mixer_impl *impl, const at_ynode *map, void *opts) {
  char name[96];
  snprintf(name, sizeof name, "model.attention.%s", impl->name);
  field f[MAX_MIXER_OPTS];
  section sec = {name, f, mixer_fields(impl, f), -1, "mixer", impl->name};
  at_status s = at_cfg_expect_map(map, name);
  for (int i = 0; s == AT_OK && i < map->n; i++) {
    int mine = 0;
    for (int j = 0; j < sec.nf; j++) mine |= !strcmp(f[j].key, map->k[i]);
    if (mine || !other_mixer_key(impl, map->k[i])) continue;
    const char *keys[MAX_MIXER_OPTS];
    char list[1024];
    int nk = section_keys(&sec, keys);
    join_names(list, sizeof list, keys, nk);
    return at_cfg_fail(map->kloc[i], "key '%s' does not apply to mixer '%s' (its keys: %s)", map->k[i],
                       impl->name, list);
  }
  return s ? s : apply_map(&sec, map, opts);
}

static at_status apply_attention(const at_ynode *v, at_model_cfg *m) {
  at_status s = at_cfg_expect_map(v, "model.attention");
  if (s) return s;
  for (int i = 0; i < v->n; i++) {
    if ((s = at_cfg_dup_key(v, i, "model.attention"))) return s;
    int k = at_mixer_from_name(v->k[i]);
    if (k < 0) return unknown_mixer(v->kloc[i], v->k[i], "model.attention");
    if ((s = apply_mixer(at_mixer_impl_of(k), v->v[i], m->mixer[k].bytes))) return s;
  }
  return AT_OK;
}

at_status at_cfg_apply_stages(const at_ynode *v, const char *what, at_train_cfg *t) {
  if (v->kind != AT_YN_SEQ) return at_cfg_expected(v, what, "a list of stages");
  if (v->n > AT_MAX_STAGES) return at_cfg_fail(v->v[AT_MAX_STAGES]->at, "%s: at most %d stages", what, AT_MAX_STAGES);
  for (int i = 0; i < v->n; i++) {
    const at_ynode *it = v->v[i];
    char name[96];
    snprintf(name, sizeof name, "%s[%d]", what, i);
    at_stage_cfg *st = &t->stages[i];
    memset(st, 0, sizeof *st);
    st->trainable = AT_TRAINABLE_ALL;
    section sec = {name, stage_fields, AT_ARRAY_LEN(stage_fields), -1, NULL, NULL};
    at_status s = apply_map(&sec, it, st);
    if (s) return s;
    if (at_yt_find(it, "name") < 0) return at_cfg_fail(it->at, "%s needs a 'name'", name);
    if (at_yt_find(it, "steps") < 0) return at_cfg_fail(it->at, "%s needs 'steps'", name);
    char what_name[128];
    snprintf(what_name, sizeof what_name, "%s.name", name);
    if ((s = at_cfg_get_name(at_yt_get(it, "name"), what_name, st->name, sizeof st->name))) return s;
    for (int j = 0; j < i; j++)
      if (!strcmp(t->stages[j].name, st->name))
        return at_cfg_fail(at_yt_get(it, "name")->at, "%s: stage name '%s' repeats %s[%d]", name, st->name,
                           what, j);
  }
  t->n_stages = v->n;
  return AT_OK;
}

/* Pair i of map m as a map of its own (for applying one key). */
static at_ynode one_pair(const at_ynode *m, int i) {
  return (at_ynode){.kind = AT_YN_MAP, .n = 1, .v = &m->v[i], .k = &m->k[i], .kloc = &m->kloc[i], .at = m->kloc[i]};
}

/* A test set's name: a letter or digit, then letters, digits and _-.+=,
 * (its default "seq_len=194,num_kv_pairs=64" is one); it names an HDF5
 * group and a table column. */
static at_status check_eval_name(const at_ynode *v, const char *what) {
  char name[sizeof ((at_eval_cfg *)0)->name];
  at_status s = at_cfg_get_str(v, what, name, sizeof name);
  int ok = s == AT_OK && ((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z') ||
                          (name[0] >= '0' && name[0] <= '9'));
  for (const char *p = name; ok && *p; p++)
    ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("_-.+=,", *p);
  if (s == AT_OK && !ok)
    return at_cfg_fail(v->at, "%s: '%s' is not a test set name (a letter or digit, then letters, digits or _-.+=,)",
                       what, name);
  return s;
}

/* data.eval: a list of maps of data keys (any task's, checked against the
 * run's task when resolved) and an optional name. */
static at_status check_eval_list(const at_ynode *v, const char *what) {
  if (v->kind != AT_YN_SEQ) return at_cfg_expected(v, what, "a list of test sets ({seq_len: ..., name: ...})");
  if (v->n > AT_MAX_EVAL_SETS) return at_cfg_fail(v->v[AT_MAX_EVAL_SETS]->at, "%s: at most %d test sets", what, AT_MAX_EVAL_SETS);
  for (int i = 0; i < v->n; i++) {
    const at_ynode *it = v->v[i];
    char sub[192];
    snprintf(sub, sizeof sub, "%s[%d]", what, i);
    at_status s = at_cfg_expect_map(it, sub);
    for (int j = 0; s == AT_OK && j < it->n; j++) {
      if ((s = at_cfg_dup_key(it, j, sub))) break;
      char key[320];
      snprintf(key, sizeof key, "%s.%s", sub, it->k[j]);
      if (!strcmp(it->k[j], "name")) {
        s = check_eval_name(it->v[j], key);
      } else if (!strcmp(it->k[j], "eval")) {
        s = at_cfg_fail(it->kloc[j], "%s: a test set has no test sets of its own", key);
      } else {
        at_task_cfg scratch;
        memset(&scratch, 0, sizeof scratch);
        at_task_cfg_defaults(&scratch, AT_TASK_MQAR);
        at_ynode pair = one_pair(it, j);
        section sec = {sub, data_fields, AT_ARRAY_LEN(data_fields), -1, "task", NULL};
        s = apply_map(&sec, &pair, &scratch);
      }
    }
    if (s) return s;
  }
  return AT_OK;
}

static at_status set_value(const section *sec, const field *f, const at_ynode *v, void *target) {
  char what[160];
  snprintf(what, sizeof what, "%s.%s", sec->name, f->key);
  char *dst = (char *)target + f->off;
  at_status s = AT_OK;
  switch (f->type) {
  case F_INT: {
    int64_t x;
    if ((s = at_cfg_get_int(v, what, f->imin, f->imax, &x))) return s;
    if (f->size == sizeof(int64_t)) *(int64_t *)dst = x;
    else *(int *)dst = (int)x;
    break;
  }
  case F_REAL:
    s = get_real(v, f, what, (double *)dst);
    break;
  case F_BOOL:
    s = get_bool(v, what, (int *)dst);
    break;
  case F_STR:
    s = at_cfg_get_str(v, what, dst, f->size);
    break;
  case F_ENUM:
    s = get_enum(v, what, f->names, f->vals, (int *)dst);
    break;
  case F_TASK: {
    const char *names[AT_TASK_COUNT + 1];
    for (int k = 0; k < AT_TASK_COUNT; k++) names[k] = at_task_name((at_task_kind)k);
    names[AT_TASK_COUNT] = NULL;
    int k;
    if ((s = get_enum(v, what, names, NULL, &k))) return s;
    ((at_task_cfg *)target)->kind = (at_task_kind)k;
    break;
  }
  case F_LAYERS:
    s = check_layers(v);
    break;
  case F_ATTENTION:
    s = apply_attention(v, (at_model_cfg *)target);
    break;
  case F_STAGES:
    s = at_cfg_apply_stages(v, what, (at_train_cfg *)target);
    break;
  case F_EVAL:
    s = check_eval_list(v, what);
    break;
  case F_LABEL:
    if (v->kind != AT_YN_SCALAR || at_yt_is_null(v)) return at_cfg_expected(v, what, "a name");
    break;
  case F_NAMES: /* a list of names, checked by the caller */
    if (v->kind != AT_YN_SEQ) return at_cfg_expected(v, what, "a list of names");
    for (int i = 0; i < v->n; i++)
      if (v->v[i]->kind != AT_YN_SCALAR || at_yt_is_null(v->v[i])) return at_cfg_expected(v->v[i], what, "a name");
    break;
  }
  return s;
}

static at_status apply_map(const section *sec, const at_ynode *map, void *target) {
  at_status s = at_cfg_expect_map(map, sec->name);
  if (s) return s;
  for (int i = 0; i < map->n; i++) {
    if ((s = at_cfg_dup_key(map, i, sec->name))) return s;
    const field *f = NULL;
    for (int j = 0; j < sec->nf && !f; j++)
      if (!strcmp(sec->f[j].key, map->k[i])) f = &sec->f[j];
    const char *keys[64];
    if (!f) {
      /* Suggest among every key of the section (any task or mixer). */
      section all = *sec;
      all.kind = -1;
      int nk = section_keys(&all, keys);
      return at_cfg_unknown_key(map->kloc[i], map->k[i], sec->name, keys, nk);
    }
    if (!applies(f, sec->kind)) {
      char list[1024];
      int nk = section_keys(sec, keys);
      join_names(list, sizeof list, keys, nk);
      return at_cfg_fail(map->kloc[i], "key '%s' does not apply to %s '%s' (its keys: %s)", f->key,
                         sec->kind_what, sec->kind_name, list);
    }
    if ((s = set_value(sec, f, map->v[i], target))) return s;
  }
  return AT_OK;
}

at_status at_cfg_apply_data(const at_ynode *map, int task, at_task_cfg *d) {
  section sec = {"data", data_fields, AT_ARRAY_LEN(data_fields), task, "task",
                 task >= 0 ? at_task_name((at_task_kind)task) : NULL};
  return apply_map(&sec, map, d);
}

at_status at_cfg_apply_model(const at_ynode *map, at_model_cfg *m) {
  section sec = {"model", model_fields, AT_ARRAY_LEN(model_fields), -1, NULL, NULL};
  return apply_map(&sec, map, m);
}

at_status at_cfg_apply_train(const at_ynode *map, at_train_cfg *t) {
  section sec = {"train", train_fields, AT_ARRAY_LEN(train_fields), -1, NULL, NULL};
  return apply_map(&sec, map, t);
}

at_status at_cfg_apply_report(const at_ynode *map, char *metric, size_t size) {
  section sec = {"report", report_fields, AT_ARRAY_LEN(report_fields), -1, NULL, NULL};
  report_cfg r = {0};
  for (int i = 0; metric_names[i]; i++)
    if (!strcmp(metric, metric_names[i])) r.metric = i;
  at_status s = apply_map(&sec, map, &r);
  if (s == AT_OK) snprintf(metric, size, "%s", metric_names[r.metric]);
  return s;
}

/* ---- resolving a run ---------------------------------------------------------- */

/* Where key `k` of `map` is, or the map, or the fallback. */
static at_cfg_loc loc_of(const at_ynode *map, const char *k, at_cfg_loc fb) {
  const at_ynode *v = k ? at_yt_get(map, k) : NULL;
  if (v) return v->at;
  return map ? map->at : fb;
}

/* The first of k1, k2 that is given. */
static at_cfg_loc loc_of2(const at_ynode *map, const char *k1, const char *k2, at_cfg_loc fb) {
  if (at_yt_get(map, k1)) return loc_of(map, k1, fb);
  return loc_of(map, k2, fb);
}

static at_status resolve_data(const at_ynode *dm, uint64_t seed, at_cfg_loc fb, at_task_cfg *d) {
  int kind = AT_TASK_MQAR;
  const at_ynode *tv = at_yt_get(dm, "task");
  if (tv) kind = at_task_from_name(tv->s);
  AT_ASSERT(kind >= 0); /* checked before */
  memset(d, 0, sizeof *d);
  at_task_cfg_defaults(d, (at_task_kind)kind);
  d->kind = (at_task_kind)kind;
  d->seed = seed;
  at_status s;
  if (dm && (s = at_cfg_apply_data(dm, kind, d))) return s;
  int64_t declared = at_task_corpus_vocab(d); /* a token file's tokenizer, unless vocab_size is given */
  if (declared > 0 && at_yt_find(dm, "vocab_size") < 0) d->vocab_size = declared;
  const char *bad = NULL;
  s = at_task_check(d, &bad);
  if (s) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", at_errmsg());
    at_cfg_loc at = loc_of(dm, bad, fb);
    return at_cfg_fail_status(s == AT_E_IO ? AT_E_IO : AT_E_CONFIG, at, "data%s%s: %s", bad ? "." : "",
                              bad ? bad : "", msg);
  }
  return AT_OK;
}

static at_status resolve_model(const at_ynode *mm, const at_task_cfg *d, at_cfg_loc fb, at_model_cfg *m) {
  at_model_cfg_defaults(m);
  at_status s;
  if (mm && (s = at_cfg_apply_model(mm, m))) return s;
  m->vocab_size = d->vocab_size;
  m->max_seq_len = d->seq_len;

  /* layers and n_layers */
  const at_ynode *lay = at_yt_get(mm, "layers");
  int nl_given = at_yt_find(mm, "n_layers") >= 0;
  if (lay) {
    const at_ynode *list = lay->kind == AT_YN_MAP ? at_yt_get(lay, "pattern") : lay;
    if (!nl_given) m->n_layers = list->n;
    else if (lay->kind == AT_YN_SEQ && list->n != m->n_layers)
      return at_cfg_fail(lay->at, "model.layers has %d entries but model.n_layers is %lld", list->n,
                         (long long)m->n_layers);
    for (int i = 0; i < m->n_layers; i++) m->layers[i] = at_mixer_from_name(list->v[i % list->n]->s);
  } else {
    for (int i = 0; i < m->n_layers; i++) m->layers[i] = at_mixer_from_name("full");
  }

  /* heads */
  if (m->d_model % m->n_heads)
    return at_cfg_fail(loc_of2(mm, "n_heads", "d_model", fb),
                       "model.d_model %lld is not divisible by model.n_heads %lld", (long long)m->d_model,
                       (long long)m->n_heads);
  if (at_yt_find(mm, "n_kv_heads") < 0) m->n_kv_heads = m->n_heads;
  else if (m->n_kv_heads > m->n_heads || m->n_heads % m->n_kv_heads)
    return at_cfg_fail(loc_of(mm, "n_kv_heads", fb),
                       "model.n_heads %lld is not a multiple of model.n_kv_heads %lld",
                       (long long)m->n_heads, (long long)m->n_kv_heads);
  if (at_yt_find(mm, "mlp_hidden") < 0)
    m->mlp_hidden = m->mlp == AT_MLP_RWKV_CMIX ? (4 * m->d_model + 31) / 32 * 32
                                               : ((8 * m->d_model + 2) / 3 + 15) / 16 * 16;

  /* mixers: derived values and each mixer's own check, placed at the option
   * at fault, else at the mixer's options, else where the layers name it */
  at_mixer_kind bad;
  const char *key;
  if ((s = at_model_cfg_resolve(m, &bad, &key)) == AT_OK) return AT_OK;
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", at_errmsg());
  const at_ynode *om = at_yt_get(at_yt_get(mm, "attention"), at_mixer_name(bad));
  at_cfg_loc at = om ? om->at : loc_of(mm, "layers", fb);
  if (key && !strncmp(key, "model.", 6)) at = loc_of(mm, key + 6, at);
  else if (key) at = loc_of(om, key, at);
  return at_cfg_fail(at, "mixer %s: %s", at_mixer_name(bad), msg);
}

/* The mixers that respond to every stage flag ("dsa"). */
static const char *indexer_mixers(void) {
  static char buf[256];
  const char *names[AT_MAX_MIXERS];
  int n = 0;
  for (int k = 0; k < at_mixer_count(); k++) {
    const at_mixer_impl *m = at_mixer_impl_of(k);
    if ((m->stage_flags & (AT_STAGE_SPARSE | AT_STAGE_AUX_LOSS)) && (m->groups & (1u << AT_GROUP_INDEXER)))
      names[n++] = m->name;
  }
  join_names(buf, sizeof buf, names, n);
  return buf;
}

static at_status resolve_train(const at_ynode *tm, const at_task_cfg *d, const at_model_cfg *m,
                               at_cfg_loc fb, at_train_cfg *t) {
  at_cfg_train_defaults(t);
  at_status s;
  if (tm && (s = at_cfg_apply_train(tm, t))) return s;
  t->optim.total_steps = t->steps;
  if (t->optim.warmup_steps > t->steps)
    return at_cfg_fail(loc_of2(tm, "warmup_steps", "steps", fb), "train.warmup_steps %lld exceeds train.steps %lld",
                       (long long)t->optim.warmup_steps, (long long)t->steps);
  if (t->batch_size % t->micro_batches)
    return at_cfg_fail(loc_of2(tm, "micro_batches", "batch_size", fb),
                       "train.batch_size %lld is not a multiple of train.micro_batches %lld",
                       (long long)t->batch_size, (long long)t->micro_batches);
  if (d->test_examples > 0 && t->eval_examples > d->test_examples)
    return at_cfg_fail(loc_of(tm, "eval_examples", fb),
                       "train.eval_examples %lld exceeds data.test_examples %lld",
                       (long long)t->eval_examples, (long long)d->test_examples);
  if (t->sample > 0 && d->kind != AT_TASK_TEXT)
    return at_cfg_fail(loc_of(tm, "sample", fb), "train.sample prints text samples; the task is %s (set it to 0)",
                       at_task_name(d->kind));
  if (t->sample > 0 && m->position == AT_POS_LEARNED && t->sample + 1 > d->seq_len)
    return at_cfg_fail(loc_of(tm, "sample", fb), "train.sample %lld: a sample of %lld positions (prompt included) exceeds "
                       "the %lld learned positions", (long long)t->sample, (long long)t->sample + 1,
                       (long long)d->seq_len);
  if (t->n_stages > 0) {
    const at_ynode *sv = at_yt_get(tm, "stages");
    at_cfg_loc sat = loc_of(tm, "stages", fb);
    int64_t sum = 0;
    unsigned flags = 0, groups = 0;
    for (int i = 0; i < m->n_layers; i++) {
      flags |= at_mixer_impl_of(m->layers[i])->stage_flags;
      groups |= at_mixer_impl_of(m->layers[i])->groups;
    }
    for (int i = 0; i < t->n_stages; i++) {
      at_stage_cfg *st = &t->stages[i];
      sum += st->steps;
      if (st->lr == 0) st->lr = t->optim.lr;
      const char *need = st->sparse && !(flags & AT_STAGE_SPARSE) ? "sparse"
                         : st->indexer_loss && !(flags & AT_STAGE_AUX_LOSS) ? "indexer_loss"
                         : st->trainable == AT_TRAINABLE_INDEXER && !(groups & (1u << AT_GROUP_INDEXER))
                             ? "trainable: indexer" : NULL;
      if (need)
        return at_cfg_fail(sv && i < sv->n ? sv->v[i]->at : sat,
                           "stage '%s' asks for %s, which no mixer of model.layers supports "
                           "(mixers with an indexer: %s)", st->name, need, indexer_mixers());
      if (st->trainable == AT_TRAINABLE_INDEXER && !st->indexer_loss)
        return at_cfg_fail(sv && i < sv->n ? sv->v[i]->at : sat,
                           "stage '%s' trains only the indexer, whose only loss is the indexer's KL: "
                           "set indexer_loss: true", st->name);
    }
    if (sum != t->steps)
      return at_cfg_fail(sat, "train.stages take %lld steps in all but train.steps is %lld", (long long)sum,
                         (long long)t->steps);
  }
  return AT_OK;
}

/* Appends "key=value" to a test set's default name (the value as a short
 * label, characters outside a name's made '_'). */
static void name_part(at_sbuf *b, const char *key, const at_ynode *v) {
  at_sbuf l = {0};
  at_sb_label(&l, v);
  at_sb_printf(b, "%s%s=", b->n ? "," : "", key);
  for (size_t i = 0; l.p && i < l.n; i++) {
    char c = l.p[i];
    int keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("_-.+", c);
    at_sb_printf(b, "%c", keep ? c : '_');
  }
  free(l.p);
}

/* The test sets of data.eval: the run's resolved data section with each
 * set's keys applied (checked against the run's task), then the task's own
 * checks and what the model can take (its vocabulary; learned positions do
 * not reach beyond the training length). */
static at_status resolve_evals(const at_ynode *dm, at_run_cfg *r) {
  const at_ynode *ev = at_yt_get(dm, "eval");
  r->n_evals = 0;
  for (int i = 0; ev && i < ev->n; i++) {
    const at_ynode *it = ev->v[i];
    at_eval_cfg *e = &r->evals[r->n_evals];
    memset(e, 0, sizeof *e);
    e->data = r->data;
    char sub[64];
    snprintf(sub, sizeof sub, "data.eval[%d]", i);
    at_sbuf label = {0};
    at_status s = AT_OK;
    for (int j = 0; j < it->n && s == AT_OK; j++) {
      const char *k = it->k[j];
      if (!strcmp(k, "name")) {
        snprintf(e->name, sizeof e->name, "%s", it->v[j]->s);
        continue;
      }
      if (!strcmp(k, "task") && at_task_from_name(it->v[j]->s) != (int)r->data.kind) {
        s = at_cfg_fail(it->v[j]->at, "%s.task: a test set evaluates the run's task (%s); give another task a run "
                        "of its own", sub, at_task_name(r->data.kind));
        break;
      }
      at_ynode pair = one_pair(it, j);
      section sec = {sub, data_fields, AT_ARRAY_LEN(data_fields), (int)r->data.kind, "task", at_task_name(r->data.kind)};
      if ((s = apply_map(&sec, &pair, &e->data)) == AT_OK) name_part(&label, k, it->v[j]);
    }
    if (s == AT_OK && !e->name[0]) {
      if (label.oom || !label.n || label.n >= sizeof e->name)
        s = at_cfg_fail(it->at, "%s: give the test set a name (name: ...; its keys make a name of %zu characters, "
                        "at most %zu)", sub, label.n, sizeof e->name - 1);
      else
        memcpy(e->name, label.p, label.n + 1);
    }
    free(label.p);
    for (int q = 0; s == AT_OK && q < r->n_evals; q++)
      if (!strcmp(r->evals[q].name, e->name))
        s = at_cfg_fail(it->at, "%s: the name '%s' repeats data.eval[%d]", sub, e->name, q);
    const char *bad = NULL;
    if (s == AT_OK && (s = at_task_check(&e->data, &bad)) != AT_OK) {
      char msg[1024];
      snprintf(msg, sizeof msg, "%s", at_errmsg());
      s = at_cfg_fail_status(s == AT_E_IO ? AT_E_IO : AT_E_CONFIG, loc_of(it, bad, it->at), "%s%s%s: %s", sub,
                             bad ? "." : "", bad ? bad : "", msg);
    }
    if (s == AT_OK && e->data.vocab_size > r->data.vocab_size)
      s = at_cfg_fail(loc_of(it, "vocab_size", it->at), "%s.vocab_size %lld exceeds the model's vocabulary (data.vocab_size "
                      "%lld)", sub, (long long)e->data.vocab_size, (long long)r->data.vocab_size);
    if (s == AT_OK && r->model.position == AT_POS_LEARNED && e->data.seq_len > r->data.seq_len)
      s = at_cfg_fail(loc_of(it, "seq_len", it->at), "%s: seq_len %lld exceeds the training length %lld, and learned "
                      "positions cannot extrapolate (model.position rope or nope can)", sub,
                      (long long)e->data.seq_len, (long long)r->data.seq_len);
    if (s) return s;
    r->n_evals++;
  }
  return AT_OK;
}

at_status at_cfg_resolve(const at_ynode *root, at_cfg_loc fb, at_run_cfg *r) {
  uint64_t seed = 0;
  const at_ynode *sv = at_yt_get(root, "seed");
  at_status s;
  if (sv) {
    int64_t x;
    if ((s = at_cfg_get_int(sv, "seed", 0, INT64_MAX, &x))) return s;
    seed = (uint64_t)x;
  }
  r->seed = seed;
  const at_ynode *dm = at_yt_get(root, "data"), *mm = at_yt_get(root, "model"), *tm = at_yt_get(root, "train");
  if ((s = resolve_data(dm, seed, fb, &r->data))) return s;
  if ((s = resolve_model(mm, &r->data, fb, &r->model))) return s;
  if ((s = resolve_evals(dm, r))) return s;
  return resolve_train(tm, &r->data, &r->model, fb, &r->train);
}

/* ---- resolved YAML ------------------------------------------------------------ */

static void emit_value(at_sbuf *b, const field *f, const void *target) {
  const char *p = (const char *)target + f->off;
  switch (f->type) {
  case F_INT:
    at_sb_printf(b, "%lld", f->size == sizeof(int64_t) ? (long long)*(const int64_t *)p : (long long)*(const int *)p);
    break;
  case F_REAL:
    at_sb_real(b, *(const double *)p);
    break;
  case F_BOOL:
    at_sb_printf(b, "%s", *(const int *)p ? "true" : "false");
    break;
  case F_STR:
    at_sb_scalar(b, p, 0);
    break;
  case F_ENUM: {
    int v = *(const int *)p;
    for (int i = 0; f->names[i]; i++)
      if ((f->vals ? f->vals[i] : i) == v) {
        at_sb_printf(b, "%s", f->names[i]);
        return;
      }
    AT_ASSERT_MSG(0, "enum value without a name");
    break;
  }
  case F_TASK:
    at_sb_printf(b, "%s", at_task_name(((const at_task_cfg *)target)->kind));
    break;
  default:
    break;
  }
}

void at_cfg_emit_data_flow(at_sbuf *b, const at_task_cfg *d) {
  at_sb_printf(b, "{");
  for (int i = 0, n = 0; i < AT_ARRAY_LEN(data_fields); i++) {
    const field *f = &data_fields[i];
    if (f->type == F_EVAL || f->type == F_LABEL || f->type == F_TASK || !applies(f, (int)d->kind)) continue;
    at_sb_printf(b, "%s%s: ", n++ ? ", " : "", f->key);
    emit_value(b, f, d);
  }
  at_sb_printf(b, "}");
}

void at_cfg_emit_sections(at_sbuf *b, const at_run_cfg *r, const at_ynode *root) {
  at_sb_printf(b, "data:\n");
  for (int i = 0; i < AT_ARRAY_LEN(data_fields); i++) {
    const field *f = &data_fields[i];
    if (!applies(f, (int)r->data.kind) || f->type == F_EVAL || f->type == F_LABEL) continue;
    at_sb_printf(b, "  %s: ", f->key);
    emit_value(b, f, &r->data);
    at_sb_printf(b, "\n");
  }
  if (r->n_evals > 0) at_sb_printf(b, "  eval:\n");
  for (int i = 0; i < r->n_evals; i++) { /* every key, so the set reads back as it was */
    at_sbuf one = {0};
    at_cfg_emit_data_flow(&one, &r->evals[i].data);
    at_sb_printf(b, "    - {name: ");
    at_sb_scalar(b, r->evals[i].name, 0);
    at_sb_printf(b, ", %s\n", one.p ? one.p + 1 : "}");
    b->oom |= one.oom;
    free(one.p);
  }
  const at_model_cfg *m = &r->model;
  at_sb_printf(b, "model:\n");
  for (int i = 0; i < AT_ARRAY_LEN(model_fields); i++) {
    const field *f = &model_fields[i];
    if (f->type == F_LAYERS || f->type == F_ATTENTION) continue;
    at_sb_printf(b, "  %s: ", f->key);
    emit_value(b, f, m);
    at_sb_printf(b, "\n");
  }
  at_sb_printf(b, "  layers: [");
  for (int i = 0; i < m->n_layers; i++) at_sb_printf(b, "%s%s", i ? ", " : "", at_mixer_name(m->layers[i]));
  at_sb_printf(b, "]\n  attention:\n");
  const at_ynode *att = at_yt_get(at_yt_get(root, "model"), "attention");
  for (int k = 0; k < at_mixer_count(); k++) { /* the mixers used or given options */
    if (!at_mixer_used(m, k) && at_yt_find(att, at_mixer_name(k)) < 0) continue;
    const at_mixer_impl *impl = at_mixer_impl_of(k);
    field f[MAX_MIXER_OPTS];
    int nf = mixer_fields(impl, f);
    at_sb_printf(b, "    %s: {", impl->name);
    for (int i = 0; i < nf; i++) {
      at_sb_printf(b, "%s%s: ", i ? ", " : "", f[i].key);
      emit_value(b, &f[i], m->mixer[k].bytes);
    }
    at_sb_printf(b, "}\n");
  }
  const at_train_cfg *t = &r->train;
  at_sb_printf(b, "train:\n");
  for (int i = 0; i < AT_ARRAY_LEN(train_fields); i++) {
    const field *f = &train_fields[i];
    if (f->type == F_STAGES) continue;
    at_sb_printf(b, "  %s: ", f->key);
    emit_value(b, f, t);
    at_sb_printf(b, "\n");
  }
  if (t->n_stages > 0) {
    at_sb_printf(b, "  stages:\n");
    for (int s = 0; s < t->n_stages; s++) {
      at_sb_printf(b, "    - {");
      for (int i = 0; i < AT_ARRAY_LEN(stage_fields); i++) {
        at_sb_printf(b, "%s%s: ", i ? ", " : "", stage_fields[i].key);
        emit_value(b, &stage_fields[i], &t->stages[s]);
      }
      at_sb_printf(b, "}\n");
    }
  }
}
