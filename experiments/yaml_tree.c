/* experiments/yaml_tree.c: libyaml document -> located tree; merging; YAML text out. */
#include "experiments/yaml_tree.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Limits that keep hostile text (deep nesting, self-referencing or
 * exponentially expanding aliases, huge lists) from costing more than a few
 * seconds and megabytes. Real experiment files are at most ~6 levels deep
 * and have a few hundred nodes. Aliases are expanded: every value counts
 * each time it is used. */
#define MAX_DEPTH 24
#define MAX_NODES 100000
#define MAX_ITEMS 4096                 /* items of one list, pairs of one mapping */
#define MAX_TEXT_BYTES ((size_t)4 << 20) /* all scalars, aliases expanded */

static at_status vfail(at_status s, at_cfg_loc at, const char *fmt, va_list ap) {
  char msg[1536];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (at.line > 0) return at_error(s, "%s:%d:%d: %s", at.src, at.line, at.col, msg);
  return at_error(s, "%s: %s", at.src, msg);
}

at_status at_cfg_fail_status(at_status s, at_cfg_loc at, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  s = vfail(s, at, fmt, ap);
  va_end(ap);
  return s;
}

at_status at_cfg_fail(at_cfg_loc at, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  at_status s = vfail(AT_E_CONFIG, at, fmt, ap);
  va_end(ap);
  return s;
}

/* ---- parsing -----------------------------------------------------------------
 * The tree is built from libyaml's events, not from its document: events let
 * the limits act while reading (libyaml's scanner is quadratic in the
 * nesting depth, so 1 MB of "[" would take minutes to load as a document).
 * An alias shares the anchored node (the tree is never modified), and counts
 * as many nodes, bytes and levels as the node it names. */

#define MAX_ANCHORS 512

typedef struct anchor {
  char *name;          /* malloc'ed */
  at_ynode *node;
  long count;          /* nodes, bytes and levels of the node, aliases expanded */
  size_t bytes;
  int height;
  int done;            /* the node is complete (an alias to an open one is a loop) */
} anchor;

typedef struct frame {
  at_ynode *node;      /* the open collection */
  at_ynode **v;        /* items or values (malloc'ed while open) */
  const char **k;
  at_cfg_loc *kloc;
  int n, cap;
  const char *key;     /* a mapping's key waiting for its value */
  at_cfg_loc key_at;
  int anchor;          /* index in anchors, or -1 */
  long count0;
  size_t bytes0;
  int height;          /* of the deepest child */
} frame;

typedef struct builder {
  at_arena *a;
  const char *src;
  int positions;
  long count;
  size_t bytes;
  frame stack[MAX_DEPTH + 1];
  int sp;
  anchor anchors[MAX_ANCHORS];
  int n_anchors;
  at_ynode *root;
} builder;

static at_cfg_loc mark_loc(const builder *b, yaml_mark_t m) {
  at_cfg_loc l = {b->src, 0, 0};
  if (b->positions) l.line = (int)m.line + 1, l.col = (int)m.column + 1;
  return l;
}

static void builder_free(builder *b) {
  for (int i = 0; i < b->sp; i++) free(b->stack[i].v), free(b->stack[i].k), free(b->stack[i].kloc);
  for (int i = 0; i < b->n_anchors; i++) free(b->anchors[i].name);
}

/* Counts what a node adds (itself, or an alias's whole node). */
static at_status charge(builder *b, at_cfg_loc at, long count, size_t bytes, int height) {
  b->count += count, b->bytes += bytes;
  if (b->count > MAX_NODES) return at_cfg_fail(at, "more than %d values (aliases expanding?)", MAX_NODES);
  if (b->bytes > MAX_TEXT_BYTES)
    return at_cfg_fail(at, "more than %zu MiB of text in values (aliases expanding?)", MAX_TEXT_BYTES >> 20);
  if (b->sp + height > MAX_DEPTH)
    return at_cfg_fail(at, "nesting deeper than %d levels (an alias inside itself?)", MAX_DEPTH);
  return AT_OK;
}

static at_status add_anchor(builder *b, const yaml_char_t *name, at_ynode *node, at_cfg_loc at, int *index) {
  *index = -1;
  if (!name) return AT_OK;
  for (int i = 0; i < b->n_anchors; i++)
    if (!strcmp(b->anchors[i].name, (const char *)name))
      return at_cfg_fail(at, "anchor &%.60s is defined twice", (const char *)name);
  if (b->n_anchors == MAX_ANCHORS) return at_cfg_fail(at, "more than %d anchors", MAX_ANCHORS);
  anchor *an = &b->anchors[b->n_anchors];
  memset(an, 0, sizeof *an);
  if (!(an->name = strdup((const char *)name))) return AT_E_NOMEM;
  an->node = node;
  *index = b->n_anchors++;
  return AT_OK;
}

/* Appends a finished node to the open collection, or makes it the root. */
static at_status attach(builder *b, at_ynode *n, int height) {
  if (b->sp == 0) {
    b->root = n;
    return AT_OK;
  }
  frame *f = &b->stack[b->sp - 1];
  if (height + 1 > f->height) f->height = height + 1;
  if (f->node->kind == AT_YN_MAP && !f->key) {
    if (n->kind != AT_YN_SCALAR)
      return at_cfg_fail(n->at, "a key must be a name, not a %s", n->kind == AT_YN_SEQ ? "list" : "mapping");
    f->key = n->s, f->key_at = n->at;
    return AT_OK;
  }
  if (f->n == MAX_ITEMS)
    return at_cfg_fail(f->node->at, "a %s of more than %d %s", f->node->kind == AT_YN_SEQ ? "list" : "mapping",
                       MAX_ITEMS, f->node->kind == AT_YN_SEQ ? "items" : "keys");
  if (f->n == f->cap) {
    int cap = f->cap ? 2 * f->cap : 8;
    at_ynode **v = realloc(f->v, sizeof *v * (size_t)cap);
    if (v) f->v = v;
    if (f->node->kind == AT_YN_MAP) {
      const char **k = realloc(f->k, sizeof *k * (size_t)cap);
      if (k) f->k = k;
      at_cfg_loc *kl = realloc(f->kloc, sizeof *kl * (size_t)cap);
      if (kl) f->kloc = kl;
      if (!k || !kl) return AT_E_NOMEM;
    }
    if (!v) return AT_E_NOMEM;
    f->cap = cap;
  }
  if (f->node->kind == AT_YN_MAP) {
    f->k[f->n] = f->key, f->kloc[f->n] = f->key_at;
    f->key = NULL;
  }
  f->v[f->n++] = n;
  return AT_OK;
}

static at_status on_scalar(builder *b, const yaml_event_t *ev) {
  at_cfg_loc at = mark_loc(b, ev->start_mark);
  size_t len = ev->data.scalar.length;
  at_status s = charge(b, at, 1, len, 0);
  if (s) return s;
  if (memchr(ev->data.scalar.value, 0, len)) return at_cfg_fail(at, "a NUL character in a value");
  at_ynode *n = at_arena_calloc(b->a, sizeof *n);
  char *text = at_arena_alloc(b->a, len + 1);
  if (!n || !text) return AT_E_NOMEM;
  memcpy(text, ev->data.scalar.value, len);
  text[len] = '\0';
  n->kind = AT_YN_SCALAR;
  n->s = text;
  n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
  n->at = at;
  int an;
  if ((s = add_anchor(b, ev->data.scalar.anchor, n, at, &an))) return s;
  if (an >= 0) b->anchors[an] = (anchor){b->anchors[an].name, n, 1, len, 0, 1};
  return attach(b, n, 0);
}

static at_status on_start(builder *b, const yaml_event_t *ev, at_ynode_kind kind) {
  at_cfg_loc at = mark_loc(b, ev->start_mark);
  if (b->sp == MAX_DEPTH) return at_cfg_fail(at, "nesting deeper than %d levels", MAX_DEPTH);
  at_status s = charge(b, at, 1, 0, 0);
  if (s) return s;
  at_ynode *n = at_arena_calloc(b->a, sizeof *n);
  if (!n) return AT_E_NOMEM;
  n->kind = kind;
  n->at = at;
  frame *f = &b->stack[b->sp];
  memset(f, 0, sizeof *f);
  f->node = n;
  f->count0 = b->count - 1;
  f->bytes0 = b->bytes;
  const yaml_char_t *name = kind == AT_YN_SEQ ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor;
  if ((s = add_anchor(b, name, n, at, &f->anchor))) return s;
  b->sp++;
  return AT_OK;
}

/* Closes the open collection: its items move into the arena. */
static at_status on_end(builder *b) {
  frame *f = &b->stack[b->sp - 1];
  at_ynode *n = f->node;
  size_t cnt = (size_t)f->n + 1;
  n->n = f->n;
  n->v = at_arena_calloc(b->a, sizeof *n->v * cnt);
  if (!n->v) return AT_E_NOMEM;
  if (f->n) memcpy(n->v, f->v, sizeof *n->v * (size_t)f->n);
  if (n->kind == AT_YN_MAP) {
    n->k = at_arena_calloc(b->a, sizeof *n->k * cnt);
    n->kloc = at_arena_calloc(b->a, sizeof *n->kloc * cnt);
    if (!n->k || !n->kloc) return AT_E_NOMEM;
    if (f->n) memcpy(n->k, f->k, sizeof *n->k * (size_t)f->n), memcpy(n->kloc, f->kloc, sizeof *n->kloc * (size_t)f->n);
  }
  if (f->anchor >= 0) {
    anchor *an = &b->anchors[f->anchor];
    an->count = b->count - f->count0, an->bytes = b->bytes - f->bytes0, an->height = f->height, an->done = 1;
  }
  int height = f->height;
  free(f->v), free(f->k), free(f->kloc);
  b->sp--;
  return attach(b, n, height);
}

static at_status on_alias(builder *b, const yaml_event_t *ev) {
  at_cfg_loc at = mark_loc(b, ev->start_mark);
  const char *name = (const char *)ev->data.alias.anchor;
  for (int i = 0; i < b->n_anchors; i++) {
    const anchor *an = &b->anchors[i];
    if (strcmp(an->name, name)) continue;
    if (!an->done) return at_cfg_fail(at, "alias *%.60s is inside the value it names (a loop)", name);
    at_status s = charge(b, at, an->count, an->bytes, an->height);
    return s ? s : attach(b, an->node, an->height);
  }
  return at_cfg_fail(at, "alias *%.60s names no anchor defined before it", name);
}

static at_status syntax_error(const yaml_parser_t *ps, const char *text, size_t len,
                              const char *src, int positions) {
  if (ps->error == YAML_MEMORY_ERROR) return at_error(AT_E_NOMEM, "%s: out of memory while reading YAML", src);
  at_cfg_loc at = {src, 1, 1};
  char extra[160] = "";
  if (ps->error == YAML_READER_ERROR) {
    /* The reader reports a byte offset (bad encoding), not a mark. */
    size_t off = ps->problem_offset < len ? ps->problem_offset : len;
    for (size_t i = 0; i < off; i++) {
      if (text[i] == '\n') at.line++, at.col = 1;
      else if (((unsigned char)text[i] & 0xc0) != 0x80) at.col++;
    }
    if (ps->problem_value != -1) snprintf(extra, sizeof extra, " (byte 0x%02x)", ps->problem_value & 0xff);
  } else {
    at.line = (int)ps->problem_mark.line + 1;
    at.col = (int)ps->problem_mark.column + 1;
    if (ps->context && positions)
      snprintf(extra, sizeof extra, " (%s at line %d column %d)", ps->context,
               (int)ps->context_mark.line + 1, (int)ps->context_mark.column + 1);
    else if (ps->context)
      snprintf(extra, sizeof extra, " (%s)", ps->context);
  }
  if (!positions) at.line = at.col = 0;
  return at_cfg_fail(at, "YAML syntax error: %s%s", ps->problem ? ps->problem : "malformed document",
                     extra);
}

/* One event; *done at the end of the stream. */
static at_status on_event(builder *b, const yaml_event_t *ev, int *docs, int *done) {
  switch (ev->type) {
  case YAML_STREAM_END_EVENT:
    *done = 1;
    return AT_OK;
  case YAML_DOCUMENT_START_EVENT:
    ++*docs;
    return AT_OK;
  case YAML_SCALAR_EVENT:
  case YAML_SEQUENCE_START_EVENT:
  case YAML_MAPPING_START_EVENT:
  case YAML_ALIAS_EVENT:
    /* A second document would be silently ignored: refuse it. */
    if (*docs > 1) return at_cfg_fail(mark_loc(b, ev->start_mark), "a second YAML document; an experiment file holds one");
    if (ev->type == YAML_SCALAR_EVENT) return on_scalar(b, ev);
    if (ev->type == YAML_ALIAS_EVENT) return on_alias(b, ev);
    return on_start(b, ev, ev->type == YAML_SEQUENCE_START_EVENT ? AT_YN_SEQ : AT_YN_MAP);
  case YAML_SEQUENCE_END_EVENT:
  case YAML_MAPPING_END_EVENT:
    return on_end(b);
  default:
    return AT_OK;
  }
}

at_status at_yt_parse(at_arena *a, const char *text, size_t len, const char *src, int positions,
                      at_ynode **out) {
  *out = NULL;
  yaml_parser_t ps;
  if (!yaml_parser_initialize(&ps)) return at_error(AT_E_NOMEM, "%s: out of memory", src);
  yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
  builder *b = calloc(1, sizeof *b);
  at_status s = b ? AT_OK : AT_E_NOMEM;
  if (b) b->a = a, b->src = src, b->positions = positions;
  for (int docs = 0, done = 0; s == AT_OK && !done;) {
    yaml_event_t ev;
    if (!yaml_parser_parse(&ps, &ev)) {
      s = syntax_error(&ps, text, len, src, positions);
      break;
    }
    s = on_event(b, &ev, &docs, &done);
    yaml_event_delete(&ev);
  }
  if (s == AT_E_NOMEM && !strstr(at_errmsg(), "out of memory")) at_error(s, "%s: out of memory while reading YAML", src);
  if (s == AT_OK) *out = b->root;
  if (b) builder_free(b);
  free(b);
  yaml_parser_delete(&ps);
  return s;
}

/* ---- queries and merging ----------------------------------------------------- */

int at_yt_find(const at_ynode *map, const char *key) {
  if (!map || map->kind != AT_YN_MAP) return -1;
  for (int i = 0; i < map->n; i++)
    if (strcmp(map->k[i], key) == 0) return i;
  return -1;
}

const at_ynode *at_yt_get(const at_ynode *map, const char *key) {
  int i = at_yt_find(map, key);
  return i < 0 ? NULL : map->v[i];
}

int at_yt_is_null(const at_ynode *n) {
  return n->kind == AT_YN_SCALAR && !n->quoted &&
         (!n->s[0] || !strcmp(n->s, "~") || !strcmp(n->s, "null") || !strcmp(n->s, "Null") ||
          !strcmp(n->s, "NULL"));
}

at_ynode *at_yt_map_copy(at_arena *a, const at_ynode *src, int extra) {
  int n = src ? src->n : 0;
  size_t cap = (size_t)(n + extra + 1);
  at_ynode *m = at_arena_calloc(a, sizeof *m);
  if (!m) return NULL;
  m->kind = AT_YN_MAP;
  m->v = at_arena_calloc(a, sizeof *m->v * cap);
  m->k = at_arena_calloc(a, sizeof *m->k * cap);
  m->kloc = at_arena_calloc(a, sizeof *m->kloc * cap);
  if (!m->v || !m->k || !m->kloc) return NULL;
  if (src) {
    m->at = src->at;
    m->synthetic = src->synthetic;
    m->n = n;
    memcpy(m->v, src->v, sizeof *m->v * (size_t)n);
    memcpy(m->k, src->k, sizeof *m->k * (size_t)n);
    memcpy(m->kloc, src->kloc, sizeof *m->kloc * (size_t)n);
  }
  return m;
}

const at_ynode *at_yt_merge(at_arena *a, const at_ynode *base, const at_ynode *over) {
  if (!base) return over;
  if (!over) return base;
  if (base->kind != AT_YN_MAP || over->kind != AT_YN_MAP) return over;
  at_ynode *m = at_yt_map_copy(a, base, over->n);
  if (!m) return NULL;
  /* A section written in a run is where its defaulted keys are reported;
   * a map made up from a dotted --set or sweep key is not. */
  if (!over->synthetic) m->at = over->at, m->synthetic = 0;
  for (int j = 0; j < over->n; j++) {
    int i = at_yt_find(base, over->k[j]);
    if (i < 0) {
      m->k[m->n] = over->k[j];
      m->kloc[m->n] = over->kloc[j];
      m->v[m->n++] = over->v[j];
    } else {
      const at_ynode *v = at_yt_merge(a, base->v[i], over->v[j]);
      if (!v) return NULL;
      m->v[i] = (at_ynode *)v;
      m->kloc[i] = over->kloc[j];
    }
  }
  return m;
}

const at_ynode *at_yt_path_tree(at_arena *a, const char *const *parts, int n,
                                const at_ynode *leaf, at_cfg_loc at) {
  const at_ynode *cur = leaf;
  for (int i = n - 1; i >= 0; i--) {
    at_ynode *m = at_yt_map_copy(a, NULL, 1);
    if (!m) return NULL;
    m->at = at;
    m->synthetic = 1;
    m->n = 1;
    m->k[0] = parts[i];
    m->kloc[0] = at;
    m->v[0] = (at_ynode *)cur;
    cur = m;
  }
  return cur;
}

/* ---- scalars ----------------------------------------------------------------- */

int at_yt_parse_int(const char *s, int64_t *out) {
  const char *p = s;
  if (*p == '+' || *p == '-') p++;
  if (!*p) return -1;
  for (; *p; p++)
    if (*p < '0' || *p > '9') return -1;
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (errno == ERANGE) return -2;
  *out = v;
  return 0;
}

int at_yt_parse_real(const char *s, double *out) {
  int digits = 0;
  for (const char *p = s; *p; p++) {
    if (*p >= '0' && *p <= '9') digits++;
    else if (!strchr("+-.eE", *p)) return -1; /* also refuses nan, inf, hex */
  }
  if (!digits) return -1;
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (*end || end == s) return -1;
  if (errno == ERANGE || !isfinite(v)) return -2;
  *out = v;
  return 0;
}

/* ---- text out ---------------------------------------------------------------- */

static void sb_vprintf(at_sbuf *b, const char *fmt, va_list ap) {
  if (b->oom) return;
  va_list ap2;
  va_copy(ap2, ap);
  int need = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (need < 0) return;
  if (b->n + (size_t)need + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + (size_t)need + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
      free(b->p);
      b->p = NULL;
      b->n = b->cap = 0;
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
  b->n += (size_t)need;
}

void at_sb_printf(at_sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sb_vprintf(b, fmt, ap);
  va_end(ap);
}

/* Characters that can stand unquoted anywhere, block or flow. */
static int plain_chars(const char *s) {
  if (!s[0] || !strcmp(s, "-")) return 0;
  for (const char *p = s; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
          strchr("_.+/=-", *p)))
      return 0;
  return 1;
}

/* A string that reads back as the same string (not null, not a bool). */
static int plain_ok(const char *s) {
  static const char *const words[] = {"null", "Null", "NULL", "true", "false", "True", "False",
                                      "TRUE", "FALSE", "yes", "no", "on", "off"};
  for (int i = 0; i < AT_ARRAY_LEN(words); i++)
    if (!strcmp(s, words[i])) return 0;
  return plain_chars(s);
}

void at_sb_scalar(at_sbuf *b, const char *s, int force_quotes) {
  if (!force_quotes && plain_ok(s)) {
    at_sb_printf(b, "%s", s);
    return;
  }
  at_sb_printf(b, "\"");
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"') at_sb_printf(b, "\\\"");
    else if (*p == '\\') at_sb_printf(b, "\\\\");
    else if (*p == '\n') at_sb_printf(b, "\\n");
    else if (*p == '\t') at_sb_printf(b, "\\t");
    else if (*p < 0x20 || *p == 0x7f) at_sb_printf(b, "\\x%02x", *p);
    else at_sb_printf(b, "%c", *p);
  }
  at_sb_printf(b, "\"");
}

void at_sb_real(at_sbuf *b, double x) {
  char buf[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, x);
    if (strtod(buf, NULL) == x) break;
  }
  /* Always with a '.' in the mantissa ("1.0", "1.0e-05"): YAML 1.1 readers
   * (PyYAML) take "1e-05" for a string. */
  if (!strchr(buf, '.') && !strchr(buf, 'n') && !strchr(buf, 'i')) {
    char *e = strchr(buf, 'e');
    if (e) at_sb_printf(b, "%.*s.0%s", (int)(e - buf), buf, e);
    else at_sb_printf(b, "%s.0", buf);
    return;
  }
  at_sb_printf(b, "%s", buf);
}

void at_sb_flow(at_sbuf *b, const at_ynode *n) {
  switch (n->kind) {
  case AT_YN_SCALAR:
    if (at_yt_is_null(n)) at_sb_printf(b, "null");
    else if (!n->quoted && plain_chars(n->s)) at_sb_printf(b, "%s", n->s);
    else at_sb_scalar(b, n->s, 1);
    break;
  case AT_YN_SEQ:
    at_sb_printf(b, "[");
    for (int i = 0; i < n->n; i++) {
      if (i) at_sb_printf(b, ", ");
      at_sb_flow(b, n->v[i]);
    }
    at_sb_printf(b, "]");
    break;
  case AT_YN_MAP:
    at_sb_printf(b, "{");
    for (int i = 0; i < n->n; i++) {
      if (i) at_sb_printf(b, ", ");
      at_sb_scalar(b, n->k[i], 0);
      at_sb_printf(b, ": ");
      at_sb_flow(b, n->v[i]);
    }
    at_sb_printf(b, "}");
    break;
  }
}

void at_sb_label(at_sbuf *b, const at_ynode *n) {
  int64_t i;
  double x;
  switch (n->kind) {
  case AT_YN_SCALAR:
    if (!n->quoted && at_yt_parse_int(n->s, &i) == 0) at_sb_printf(b, "%lld", (long long)i);
    else if (!n->quoted && at_yt_parse_real(n->s, &x) == 0) at_sb_real(b, x);
    else at_sb_printf(b, "%s", n->s);
    break;
  case AT_YN_SEQ:
    for (int j = 0; j < n->n; j++) {
      if (j) at_sb_printf(b, ",");
      at_sb_label(b, n->v[j]);
    }
    break;
  case AT_YN_MAP: /* a whole section swept: named by its `label`, else its first value ({task: mqar, ...} -> mqar) */
    for (int j = 0; j < n->n; j++)
      if (!strcmp(n->k[j], "label") && n->v[j]->kind == AT_YN_SCALAR) {
        at_sb_label(b, n->v[j]);
        return;
      }
    if (n->n) at_sb_label(b, n->v[0]);
    break;
  }
}
