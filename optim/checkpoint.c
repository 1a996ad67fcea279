/* optim/checkpoint.c: save and load checkpoints; see checkpoint.h for the
 * file layout. Loading reads everything into scratch buffers and only
 * copies it into the model once every check has passed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/h5io.h"
#include "optim/checkpoint.h"

#define MAX_CK_BUFFERS 8

void at_train_state_init(at_train_state *s) {
  memset(s, 0, sizeof *s);
  s->best_metric = NAN;
}

/* ---- hashing --------------------------------------------------------------
 * Each step is a bijection of the running hash for a fixed input word and of
 * the input word for a fixed hash, so changing any single word always
 * changes the result. */

#define HASH_SEED 0x6174746e6c616221ull

static void hmix(uint64_t *h, uint64_t x) {
  uint64_t v = *h ^ (x * 0x9e3779b97f4a7c15ull);
  v = (v << 27) | (v >> 37);
  *h = v * 0xc2b2ae3d27d4eb4full + 0x165667b19e3779f9ull;
}

static void hdouble(uint64_t *h, double x) {
  uint64_t w;
  memcpy(&w, &x, sizeof w);
  hmix(h, w);
}

static void hstr(uint64_t *h, const char *s) {
  size_t n = strlen(s);
  hmix(h, (uint64_t)n);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t w = 0;
    for (size_t j = 0; j < 8 && i + j < n; j++) w |= (uint64_t)(unsigned char)s[i + j] << (8 * j);
    hmix(h, w);
  }
}

/* Everything in a checkpoint except the values. */
typedef struct meta {
  const char *index, *optimizer, *buffers, *config;
  int64_t version, optim_step;
  at_train_state st;
} meta;

static uint64_t meta_hash(const meta *m) {
  uint64_t h = HASH_SEED;
  hstr(&h, AT_CHECKPOINT_FORMAT);
  hmix(&h, (uint64_t)m->version);
  hstr(&h, m->index);
  hstr(&h, m->optimizer);
  hstr(&h, m->buffers);
  hmix(&h, (uint64_t)m->optim_step);
  hmix(&h, (uint64_t)m->st.step);
  hmix(&h, (uint64_t)m->st.skipped_steps);
  hmix(&h, (uint64_t)m->st.tokens);
  hdouble(&h, m->st.train_seconds);
  hdouble(&h, m->st.wall_seconds);
  hdouble(&h, m->st.best_metric);
  hmix(&h, (uint64_t)m->st.n_rng);
  for (int i = 0; i < m->st.n_rng; i++) hmix(&h, m->st.rng[i]);
  hmix(&h, (uint64_t)m->st.n_data_pos);
  for (int i = 0; i < m->st.n_data_pos; i++) hmix(&h, m->st.data_pos[i]);
  hstr(&h, m->config);
  return h;
}

/* ---- the parameter index ------------------------------------------------------ */

static char *param_index(const at_params *p) {
  size_t len = 1;
  for (int k = 0; k < p->n; k++) len += strlen(p->list[k].name) + 2 + 96;
  char *s = malloc(len), *q = s;
  if (!s) return NULL;
  for (int k = 0; k < p->n; k++) {
    char shape[96];
    const at_tensor *t = p->list[k].t;
    q += sprintf(q, "%s\t%s\n", p->list[k].name, at_shape_str(t->ndim, t->shape, shape));
  }
  *q = '\0';
  return s;
}

uint64_t at_checkpoint_signature(const at_params *p) {
  char *index = param_index(p);
  uint64_t h = HASH_SEED;
  hstr(&h, index ? index : "");
  free(index);
  return h;
}

typedef struct entry {
  char name[sizeof ((at_param *)0)->name];
  int ndim;
  int64_t shape[AT_MAX_DIMS];
  at_param *param;          /* the model's parameter of this name */
} entry;

static int parse_shape(const char *s, int *ndim, int64_t *shape) {
  if (*s++ != '[') return 0;
  *ndim = 0;
  if (*s == ']') return s[1] == '\0';
  for (;;) {
    char *end;
    long long d = strtoll(s, &end, 10);
    if (end == s || d < 0 || *ndim == AT_MAX_DIMS) return 0;
    shape[(*ndim)++] = d;
    s = end;
    if (*s == ']') return s[1] == '\0';
    if (*s++ != ',') return 0;
  }
}

/* Splits the index into entries; 0 if it is malformed. */
static int parse_index(char *text, entry **out, int *n_out) {
  int n = 0, cap = 0;
  entry *e = NULL;
  for (char *line = text; *line;) {
    char *nl = strchr(line, '\n');
    if (!nl) goto bad;
    *nl = '\0';
    char *tab = strrchr(line, '\t');
    if (!tab || tab == line || (size_t)(tab - line) >= sizeof e->name) goto bad;
    if (n == cap) {
      cap = cap ? 2 * cap : 64;
      entry *ne = realloc(e, (size_t)cap * sizeof *ne);
      if (!ne) goto bad;
      e = ne;
    }
    entry *x = &e[n];
    memset(x, 0, sizeof *x);
    memcpy(x->name, line, (size_t)(tab - line));
    if (!parse_shape(tab + 1, &x->ndim, x->shape)) goto bad;
    for (int i = 0; i < n; i++)
      if (strcmp(e[i].name, x->name) == 0) goto bad;
    n++;
    *nl = '\n';
    line = nl + 1;
  }
  *out = e, *n_out = n;
  return 1;
bad:
  free(e);
  return 0;
}

/* ---- save ------------------------------------------------------------------------ */

static void join_buffers(const at_optim *o, char *buf, size_t size) {
  buf[0] = '\0';
  for (int i = 0; o && i < at_optim_num_buffers(o); i++) {
    size_t len = strlen(buf);
    snprintf(buf + len, size - len, "%s%s", i ? "," : "", at_optim_buffer_name(o, i));
  }
}

static void hash_values(uint64_t *h, const real *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) hdouble(h, (double)x[i]);
}

#define TRY(expr) \
  do { if ((st = (expr)) != AT_OK) goto done; } while (0)

at_status at_checkpoint_save(const char *path, const at_params *p, const at_optim *o,
                             const at_train_state *s, const char *config_yaml) {
  if (!p->finalized) return at_error(AT_E_ARG, "saving checkpoint %s: the parameter store is not finalized", path);
  if (o && at_optim_params(o) != p)
    return at_error(AT_E_ARG, "saving checkpoint %s: the optimiser belongs to another parameter store", path);
  for (int k = 0; k < p->n; k++)
    if (strpbrk(p->list[k].name, "/\t\n"))
      return at_error(AT_E_ARG, "saving checkpoint %s: parameter name '%s' contains '/', a tab or a newline",
                      path, p->list[k].name);
  at_train_state zero;
  if (!s) at_train_state_init(&zero), s = &zero;
  if (s->n_rng < 0 || s->n_rng > AT_STATE_MAX_WORDS || s->n_data_pos < 0 || s->n_data_pos > AT_STATE_MAX_WORDS)
    return at_error(AT_E_ARG, "saving checkpoint %s: n_rng = %d and n_data_pos = %d must be in 0..%d", path,
                    s->n_rng, s->n_data_pos, AT_STATE_MAX_WORDS);

  char buffers[256];
  join_buffers(o, buffers, sizeof buffers);
  meta m = {
    .index = NULL,
    .optimizer = o ? at_optimizer_name(at_optim_config(o)->kind) : "none",
    .buffers = buffers,
    .config = config_yaml ? config_yaml : "",
    .version = AT_CHECKPOINT_VERSION,
    .optim_step = o ? at_optim_steps_done(o) : 0,
    .st = *s,
  };
  char *index = param_index(p);
  if (!index) return at_error(AT_E_NOMEM, "saving checkpoint %s: out of memory", path);
  m.index = index;
  uint64_t h = meta_hash(&m);
  for (int k = 0; k < p->n; k++) hash_values(&h, p->data + p->list[k].offset, p->list[k].t->size);
  for (int b = 0; o && b < at_optim_num_buffers(o); b++)
    for (int k = 0; k < p->n; k++) hash_values(&h, at_optim_buffer(o, b) + p->list[k].offset, p->list[k].t->size);

  at_h5 *f = NULL;
  at_status st = at_h5_create(path, &f);
  if (st != AT_OK) {
    free(index);
    return at_error_prefix(st, "saving checkpoint");
  }
  char name[512];
  TRY(at_h5_make_group(f, "/params"));
  for (int k = 0; k < p->n; k++) {
    const at_param *e = &p->list[k];
    snprintf(name, sizeof name, "/params/%s", e->name);
    TRY(at_h5_write_real(f, name, e->t->ndim, e->t->shape, p->data + e->offset));
  }
  for (int b = 0; o && b < at_optim_num_buffers(o); b++)
    for (int k = 0; k < p->n; k++) {
      const at_param *e = &p->list[k];
      snprintf(name, sizeof name, "/optim/%s/%s", at_optim_buffer_name(o, b), e->name);
      TRY(at_h5_write_real(f, name, e->t->ndim, e->t->shape, at_optim_buffer(o, b) + e->offset));
    }
  char sig[32];
  snprintf(sig, sizeof sig, "%016llx", (unsigned long long)at_checkpoint_signature(p));
  TRY(at_h5_set_attr_str(f, "/", "format", AT_CHECKPOINT_FORMAT));
  TRY(at_h5_set_attr_int(f, "/", "format_version", AT_CHECKPOINT_VERSION));
  TRY(at_h5_set_attr_str(f, "/", "real", sizeof(real) == 4 ? "float32" : "float64"));
  TRY(at_h5_set_attr_str(f, "/", "param_index", index));
  TRY(at_h5_set_attr_str(f, "/", "model_signature", sig));
  TRY(at_h5_set_attr_int(f, "/", "n_values", p->total));
  TRY(at_h5_set_attr_str(f, "/", "optimizer", m.optimizer));
  TRY(at_h5_set_attr_str(f, "/", "optim_buffers", buffers));
  TRY(at_h5_set_attr_int(f, "/", "optim_step", m.optim_step));
  TRY(at_h5_set_attr_int(f, "/", "step", s->step));
  TRY(at_h5_set_attr_int(f, "/", "skipped_steps", s->skipped_steps));
  TRY(at_h5_set_attr_int(f, "/", "tokens", s->tokens));
  TRY(at_h5_set_attr_double(f, "/", "train_seconds", s->train_seconds));
  TRY(at_h5_set_attr_double(f, "/", "wall_seconds", s->wall_seconds));
  TRY(at_h5_set_attr_double(f, "/", "best_metric", s->best_metric));
  TRY(at_h5_set_attr_int(f, "/", "n_rng", s->n_rng));
  if (s->n_rng) TRY(at_h5_set_attr_u64s(f, "/", "rng", s->n_rng, s->rng));
  TRY(at_h5_set_attr_int(f, "/", "n_data_pos", s->n_data_pos));
  if (s->n_data_pos) TRY(at_h5_set_attr_u64s(f, "/", "data_pos", s->n_data_pos, s->data_pos));
  TRY(at_h5_set_attr_str(f, "/", "config", m.config));
  TRY(at_h5_set_attr_u64s(f, "/", "checksum", 1, &h));
  st = at_h5_commit(f);
  f = NULL;
done:
  if (f) at_h5_close(f);
  free(index);
  if (st != AT_OK) at_error_prefix(st, "saving checkpoint");
  return st;
}

/* ---- load ------------------------------------------------------------------------ */

/* Checks the checkpoint's parameters against the model's, naming the first
 * difference, and links each entry to its parameter. */
static at_status match_model(const char *path, entry *e, int n, at_params *p) {
  char a[96], b[96];
  for (int k = 0; k < p->n; k++) {
    at_param *q = &p->list[k];
    entry *x = NULL;
    for (int i = 0; i < n && !x; i++)
      if (strcmp(e[i].name, q->name) == 0) x = &e[i];
    if (!x)
      return at_error(AT_E_SHAPE, "checkpoint %s: parameter %s (shape %s in the model) is not in the checkpoint",
                      path, q->name, at_shape_str(q->t->ndim, q->t->shape, a));
    int same = x->ndim == q->t->ndim;
    for (int d = 0; same && d < x->ndim; d++) same = x->shape[d] == q->t->shape[d];
    if (!same)
      return at_error(AT_E_SHAPE, "checkpoint %s: parameter %s has shape %s, model has %s", path, q->name,
                      at_shape_str(x->ndim, x->shape, a), at_shape_str(q->t->ndim, q->t->shape, b));
    x->param = q;
  }
  for (int i = 0; i < n; i++)
    if (!e[i].param)
      return at_error(AT_E_SHAPE, "checkpoint %s: parameter %s %s is in the checkpoint but not in the model",
                      path, e[i].name, at_shape_str(e[i].ndim, e[i].shape, a));
  return AT_OK;
}

/* Splits "m,v" into at most MAX_CK_BUFFERS names (in place). */
static int split_buffers(char *s, char **names) {
  int n = 0;
  if (!*s) return 0;
  for (char *tok = s;; n++) {
    if (n == MAX_CK_BUFFERS) return -1;
    names[n] = tok;
    char *c = strchr(tok, ',');
    if (!c) return n + 1;
    *c = '\0';
    tok = c + 1;
  }
}

static at_status read_state(at_h5 *f, at_train_state *s) {
  at_status st;
  int64_t n_rng, n_data;
  at_train_state_init(s);
  if ((st = at_h5_get_attr_int(f, "/", "step", &s->step)) != AT_OK ||
      (st = at_h5_get_attr_int(f, "/", "skipped_steps", &s->skipped_steps)) != AT_OK ||
      (st = at_h5_get_attr_int(f, "/", "tokens", &s->tokens)) != AT_OK ||
      (st = at_h5_get_attr_double(f, "/", "train_seconds", &s->train_seconds)) != AT_OK ||
      (st = at_h5_get_attr_double(f, "/", "wall_seconds", &s->wall_seconds)) != AT_OK ||
      (st = at_h5_get_attr_double(f, "/", "best_metric", &s->best_metric)) != AT_OK ||
      (st = at_h5_get_attr_int(f, "/", "n_rng", &n_rng)) != AT_OK ||
      (st = at_h5_get_attr_int(f, "/", "n_data_pos", &n_data)) != AT_OK)
    return st;
  if (n_rng < 0 || n_rng > AT_STATE_MAX_WORDS || n_data < 0 || n_data > AT_STATE_MAX_WORDS)
    return at_error(AT_E_FORMAT, "%s: n_rng = %lld or n_data_pos = %lld out of range", at_h5_path(f),
                    (long long)n_rng, (long long)n_data);
  if (s->step < 0 || s->skipped_steps < 0 || s->skipped_steps > s->step || s->tokens < 0 ||
      !(s->train_seconds >= 0) || !(s->wall_seconds >= 0))
    return at_error(AT_E_FORMAT, "%s: damaged training state (step %lld, skipped %lld, tokens %lld)", at_h5_path(f),
                    (long long)s->step, (long long)s->skipped_steps, (long long)s->tokens);
  s->n_rng = (int)n_rng, s->n_data_pos = (int)n_data;
  if (n_rng && (st = at_h5_get_attr_u64s(f, "/", "rng", s->n_rng, s->rng)) != AT_OK) return st;
  if (n_data && (st = at_h5_get_attr_u64s(f, "/", "data_pos", s->n_data_pos, s->data_pos)) != AT_OK) return st;
  return AT_OK;
}

/* Reads one dataset (of the entry's shape) as double into `scratch`, adds
 * it to the hash and, when `dst` is given, stores it there as real after
 * checking that it is finite. */
static at_status read_values(at_h5 *f, const char *path, const char *dset, const entry *x, double *scratch,
                             uint64_t *h, real *dst) {
  int64_t n = at_shape_size(x->ndim, x->shape);
  if (n > 0) {
    at_status st = at_h5_read_double(f, dset, x->ndim, x->shape, scratch);
    if (st != AT_OK) return st;
  }
  for (int64_t i = 0; i < n; i++) hdouble(h, scratch[i]);
  if (!dst) return AT_OK;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(scratch[i]))
      return at_error(AT_E_FORMAT, "checkpoint %s: %s contains NaN or Inf", path, dset);
    dst[i] = (real)scratch[i];
  }
  return AT_OK;
}

#define FAIL(s, ...) \
  do { st = at_error((s), __VA_ARGS__); goto done; } while (0)

typedef struct load_args {
  const char *path;
  at_params *p;
  at_optim *o;
  at_train_state *s;
  char **config_yaml;
} load_args;

static at_status load(void *arg) {
  const load_args *a = arg;
  const char *path = a->path;
  at_params *p = a->p;
  at_optim *o = a->o;
  at_train_state *s = a->s;
  char **config_yaml = a->config_yaml;
  at_h5 *f = NULL;
  char *fmt = NULL, *index = NULL, *index_copy = NULL, *optimizer = NULL, *buffers = NULL, *config = NULL;
  entry *ents = NULL;
  int n_ents = 0, n_buf = 0;
  char *buf_names[MAX_CK_BUFFERS];
  real *new_params = NULL, *new_bufs[MAX_CK_BUFFERS] = {0};
  double *scratch = NULL;
  at_train_state ns;
  int64_t version, optim_step;
  uint64_t stored_sum;
  char dset[512];

  at_status st = at_h5_open(path, &f);
  if (st != AT_OK) goto done;
  if (!at_h5_has_attr(f, "/", "format"))
    FAIL(AT_E_FORMAT, "checkpoint %s: not an attnlab checkpoint (no 'format' attribute)", path);
  TRY(at_h5_get_attr_str(f, "/", "format", &fmt));
  if (strcmp(fmt, AT_CHECKPOINT_FORMAT) != 0)
    FAIL(AT_E_FORMAT, "checkpoint %s: a '%.60s' file, not an %s", path, fmt, AT_CHECKPOINT_FORMAT);
  TRY(at_h5_get_attr_int(f, "/", "format_version", &version));
  if (version > AT_CHECKPOINT_VERSION)
    FAIL(AT_E_FORMAT, "checkpoint %s: format version %lld is newer than this attnlab reads (%d)", path,
         (long long)version, AT_CHECKPOINT_VERSION);
  if (version < 1) FAIL(AT_E_FORMAT, "checkpoint %s: bad format version %lld", path, (long long)version);

  /* the model */
  TRY(at_h5_get_attr_str(f, "/", "param_index", &index));
  index_copy = strdup(index);
  if (!index_copy) FAIL(AT_E_NOMEM, "loading checkpoint %s: out of memory", path);
  if (!parse_index(index_copy, &ents, &n_ents))
    FAIL(AT_E_FORMAT, "checkpoint %s: the parameter index is damaged", path);
  TRY(match_model(path, ents, n_ents, p));
  int64_t n_values;
  TRY(at_h5_get_attr_int(f, "/", "n_values", &n_values));
  if (n_values != p->total)
    FAIL(AT_E_FORMAT, "checkpoint %s: declares %lld values but its parameter index has %lld (damaged)", path,
         (long long)n_values, (long long)p->total);

  /* the optimiser */
  TRY(at_h5_get_attr_str(f, "/", "optimizer", &optimizer));
  TRY(at_h5_get_attr_str(f, "/", "optim_buffers", &buffers));
  TRY(at_h5_get_attr_int(f, "/", "optim_step", &optim_step));
  if (o) {
    const char *want = at_optimizer_name(at_optim_config(o)->kind);
    char want_bufs[256];
    join_buffers(o, want_bufs, sizeof want_bufs);
    if (strcmp(optimizer, "none") == 0)
      FAIL(AT_E_STATE, "checkpoint %s: holds no optimiser state (saved without an optimiser)", path);
    if (strcmp(optimizer, want) != 0)
      FAIL(AT_E_STATE, "checkpoint %s: holds %.60s state, the optimiser is %s", path, optimizer, want);
    if (strcmp(buffers, want_bufs) != 0)
      FAIL(AT_E_STATE, "checkpoint %s: holds optimiser buffers [%.60s], the optimiser has [%s]%s", path, buffers,
           want_bufs, strcmp(want, "sgd") == 0 ? " (SGD keeps a buffer only with momentum > 0)" : "");
    if (optim_step < 0) FAIL(AT_E_FORMAT, "checkpoint %s: negative optim_step", path);
  }
  meta m = {.index = index, .optimizer = optimizer, .config = NULL, .version = version, .optim_step = optim_step};
  n_buf = split_buffers(buffers, buf_names);
  if (n_buf < 0) FAIL(AT_E_FORMAT, "checkpoint %s: too many optimiser buffers", path);

  /* the training state and the configuration */
  TRY(read_state(f, &ns));
  TRY(at_h5_get_attr_str(f, "/", "config", &config));
  TRY(at_h5_get_attr_u64s(f, "/", "checksum", 1, &stored_sum));

  /* the values, into scratch memory */
  int64_t max_n = 1;
  for (int i = 0; i < n_ents; i++) max_n = AT_MAX(max_n, ents[i].param->t->size);
  scratch = malloc((size_t)max_n * sizeof *scratch);
  new_params = malloc((size_t)AT_MAX(p->total, 1) * sizeof(real));
  int ok = scratch && new_params;
  for (int b = 0; o && b < n_buf; b++) ok &= (new_bufs[b] = malloc((size_t)AT_MAX(p->total, 1) * sizeof(real))) != NULL;
  if (!ok) FAIL(AT_E_NOMEM, "loading checkpoint %s: out of memory for %lld values", path, (long long)p->total);

  /* the hash covers the buffer list as saved: rebuild it before splitting */
  char joined[256] = "";
  for (int b = 0; b < n_buf; b++) {
    size_t len = strlen(joined);
    snprintf(joined + len, sizeof joined - len, "%s%s", b ? "," : "", buf_names[b]);
  }
  m.buffers = joined;
  m.config = config;
  m.st = ns;
  uint64_t h = meta_hash(&m);
  for (int i = 0; i < n_ents; i++) {
    snprintf(dset, sizeof dset, "/params/%s", ents[i].name);
    TRY(read_values(f, path, dset, &ents[i], scratch, &h, new_params + ents[i].param->offset));
  }
  for (int b = 0; b < n_buf; b++)
    for (int i = 0; i < n_ents; i++) {
      snprintf(dset, sizeof dset, "/optim/%s/%s", buf_names[b], ents[i].name);
      TRY(read_values(f, path, dset, &ents[i], scratch, &h, o ? new_bufs[b] + ents[i].param->offset : NULL));
    }
  if (h != stored_sum) FAIL(AT_E_FORMAT, "checkpoint %s: checksum mismatch, the file is damaged", path);

  /* every check passed: install */
  memcpy(p->data, new_params, (size_t)p->total * sizeof(real));
  if (o) {
    for (int b = 0; b < n_buf; b++) memcpy(at_optim_buffer(o, b), new_bufs[b], (size_t)p->total * sizeof(real));
    at_optim_set_steps_done(o, optim_step);
  }
  if (s) *s = ns;
  if (config_yaml) *config_yaml = config, config = NULL;
done:
  if (st != AT_OK && strncmp(at_errmsg(), "checkpoint ", 11) != 0 && strncmp(at_errmsg(), "loading checkpoint", 18) != 0)
    at_error_prefix(st, "loading checkpoint");
  if (f) at_h5_close(f);
  free(fmt), free(index), free(index_copy), free(optimizer), free(buffers), free(config);
  free(ents), free(scratch), free(new_params);
  for (int b = 0; b < MAX_CK_BUFFERS; b++) free(new_bufs[b]);
  return st;
}

at_status at_checkpoint_load(const char *path, at_params *p, at_optim *o, at_train_state *s,
                             char **config_yaml) {
  if (!p->finalized) return at_error(AT_E_STATE, "loading checkpoint %s: the parameter store is not finalized", path);
  if (o && at_optim_params(o) != p)
    return at_error(AT_E_ARG, "loading checkpoint %s: the optimiser belongs to another parameter store", path);
  load_args a = {path, p, o, s, config_yaml};
  return at_h5_guard(path, load, &a);
}
