/* experiments/yaml_tree.c: libyaml document -> located tree; merging; YAML text out. */
#include "experiments/yaml_tree.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* Limits that keep hostile files (self-referencing or exponentially
 * expanding aliases) from crashing the loader. Real experiment files are
 * at most ~6 levels deep and have a few hundred nodes. */
#define MAX_DEPTH 24
#define MAX_NODES 100000

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

/* ---- parsing ----------------------------------------------------------------- */

typedef struct conv {
  at_arena *a;
  yaml_document_t *doc;
  const char *src;
  int positions;
  long count;
} conv;

static at_cfg_loc mark_loc(const conv *c, yaml_mark_t m) {
  at_cfg_loc l = {c->src, 0, 0};
  if (c->positions) l.line = (int)m.line + 1, l.col = (int)m.column + 1;
  return l;
}

static at_status convert(conv *c, yaml_node_t *yn, int depth, at_ynode **out) {
  at_cfg_loc at = mark_loc(c, yn->start_mark);
  if (depth > MAX_DEPTH) return at_cfg_fail(at, "nesting deeper than %d levels (an alias inside itself?)", MAX_DEPTH);
  if (++c->count > MAX_NODES) return at_cfg_fail(at, "more than %d values (aliases expanding?)", MAX_NODES);
  at_ynode *n = at_arena_calloc(c->a, sizeof *n);
  if (!n) return AT_E_NOMEM;
  n->at = at;
  switch (yn->type) {
  case YAML_SCALAR_NODE: {
    size_t len = yn->data.scalar.length;
    if (memchr(yn->data.scalar.value, 0, len)) return at_cfg_fail(at, "a NUL character in a value");
    char *s = at_arena_alloc(c->a, len + 1);
    if (!s) return AT_E_NOMEM;
    memcpy(s, yn->data.scalar.value, len);
    s[len] = '\0';
    n->kind = AT_YN_SCALAR;
    n->s = s;
    n->quoted = yn->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    break;
  }
  case YAML_SEQUENCE_NODE: {
    n->kind = AT_YN_SEQ;
    n->n = (int)(yn->data.sequence.items.top - yn->data.sequence.items.start);
    n->v = at_arena_calloc(c->a, sizeof *n->v * (size_t)(n->n + 1));
    if (!n->v) return AT_E_NOMEM;
    for (int i = 0; i < n->n; i++) {
      yaml_node_t *it = yaml_document_get_node(c->doc, yn->data.sequence.items.start[i]);
      AT_ASSERT(it != NULL);
      at_status s = convert(c, it, depth + 1, &n->v[i]);
      if (s) return s;
    }
    break;
  }
  case YAML_MAPPING_NODE: {
    n->kind = AT_YN_MAP;
    n->n = (int)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
    size_t cnt = (size_t)n->n + 1;
    n->v = at_arena_calloc(c->a, sizeof *n->v * cnt);
    n->k = at_arena_calloc(c->a, sizeof *n->k * cnt);
    n->kloc = at_arena_calloc(c->a, sizeof *n->kloc * cnt);
    if (!n->v || !n->k || !n->kloc) return AT_E_NOMEM;
    for (int i = 0; i < n->n; i++) {
      yaml_node_pair_t *p = &yn->data.mapping.pairs.start[i];
      yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
      yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
      AT_ASSERT(kn != NULL && vn != NULL);
      at_ynode *key;
      at_status s = convert(c, kn, depth + 1, &key);
      if (s) return s;
      if (key->kind != AT_YN_SCALAR)
        return at_cfg_fail(key->at, "a key must be a name, not a %s",
                           key->kind == AT_YN_SEQ ? "list" : "mapping");
      n->k[i] = key->s;
      n->kloc[i] = key->at;
      s = convert(c, vn, depth + 1, &n->v[i]);
      if (s) return s;
    }
    break;
  }
  default:
    return at_cfg_fail(at, "an empty node");
  }
  *out = n;
  return AT_OK;
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

at_status at_yt_parse(at_arena *a, const char *text, size_t len, const char *src, int positions,
                      at_ynode **out) {
  *out = NULL;
  yaml_parser_t ps;
  if (!yaml_parser_initialize(&ps)) return at_error(AT_E_NOMEM, "%s: out of memory", src);
  yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
  yaml_document_t doc;
  if (!yaml_parser_load(&ps, &doc)) {
    at_status s = syntax_error(&ps, text, len, src, positions);
    yaml_parser_delete(&ps);
    return s;
  }
  at_status s = AT_OK;
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (root) {
    conv c = {a, &doc, src, positions, 0};
    s = convert(&c, root, 0, out);
    if (s == AT_OK) {
      /* A second document would be silently ignored: refuse it. */
      yaml_document_t doc2;
      if (!yaml_parser_load(&ps, &doc2)) {
        s = syntax_error(&ps, text, len, src, positions);
      } else {
        yaml_node_t *r2 = yaml_document_get_root_node(&doc2);
        if (r2) s = at_cfg_fail(mark_loc(&c, r2->start_mark), "a second YAML document; an experiment file holds one");
        yaml_document_delete(&doc2);
      }
    }
  }
  yaml_document_delete(&doc);
  yaml_parser_delete(&ps);
  if (s) *out = NULL;
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
  case AT_YN_MAP: /* a whole section swept: named by its first value ({task: mqar, ...} -> mqar) */
    if (n->n) at_sb_label(b, n->v[0]);
    break;
  }
}
