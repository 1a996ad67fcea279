/* experiments/yaml_tree.h: the experiment loader's YAML tree (internal).
 *
 * libyaml's document is converted into a small immutable tree whose nodes
 * remember where they came from (a file position, or the --set argument), so
 * an error found after runs and sweep points are merged still points at the
 * text that caused it. Everything lives in one arena, freed at once.
 */
#ifndef AT_EXPERIMENTS_YAML_TREE_H
#define AT_EXPERIMENTS_YAML_TREE_H

#include <stdarg.h>

#include "core/arena.h"

/* Where a node came from: "file:line:col", or a --set argument (line 0). */
typedef struct at_cfg_loc {
  const char *src;
  int line, col; /* 1-based */
} at_cfg_loc;

/* Sets "loc: message" as the error and returns `s`. */
at_status at_cfg_fail_status(at_status s, at_cfg_loc at, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
/* The same with AT_E_CONFIG. */
at_status at_cfg_fail(at_cfg_loc at, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef enum at_ynode_kind { AT_YN_SCALAR, AT_YN_SEQ, AT_YN_MAP } at_ynode_kind;

typedef struct at_ynode at_ynode;
struct at_ynode {
  at_ynode_kind kind;
  int quoted;          /* scalar written in quotes or as a block literal: a string */
  int synthetic;       /* a map made from a dotted key (--set, sweep), not written as such */
  const char *s;       /* scalar text */
  int n;               /* items or pairs */
  at_ynode **v;        /* items, or the values of a map */
  const char **k;      /* keys of a map */
  at_cfg_loc *kloc;    /* where each key is */
  at_cfg_loc at;
};

/* Parses one YAML document. `positions` = 0 gives every node the location
 * {src, 0, 0} (a --set value). *out = NULL for an empty document. Syntax
 * errors are reported with libyaml's problem, mark and context. */
at_status at_yt_parse(at_arena *a, const char *text, size_t len, const char *src, int positions,
                      at_ynode **out);

/* Index of `key` in a map, or -1 (also when `map` is NULL or not a map). */
int at_yt_find(const at_ynode *map, const char *key);
/* The value under `key`, or NULL. */
const at_ynode *at_yt_get(const at_ynode *map, const char *key);
/* Plain empty, "~" or "null": no value. */
int at_yt_is_null(const at_ynode *n);

/* Deep merge: maps merge key by key (keys of `over` win, new keys come
 * last), anything else is replaced by `over`. NULL on out of memory. */
const at_ynode *at_yt_merge(at_arena *a, const at_ynode *base, const at_ynode *over);
/* {parts[0]: {parts[1]: ... leaf}} with every map and key at `at`. */
const at_ynode *at_yt_path_tree(at_arena *a, const char *const *parts, int n,
                                const at_ynode *leaf, at_cfg_loc at);
/* A map with the first n pairs of `src` (n <= src->n) plus room for `extra`. */
at_ynode *at_yt_map_copy(at_arena *a, const at_ynode *src, int extra);

/* Scalars: 0 ok, -1 not that kind of number, -2 out of range. */
int at_yt_parse_int(const char *s, int64_t *out);
int at_yt_parse_real(const char *s, double *out);

/* A growing string; `oom` is set (and the text dropped) when out of memory. */
typedef struct at_sbuf {
  char *p;
  size_t n, cap;
  int oom;
} at_sbuf;
void at_sb_printf(at_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A YAML scalar: plain when unambiguous, else double-quoted. */
void at_sb_scalar(at_sbuf *b, const char *s, int force_quotes);
/* The shortest decimal form that reads back as the same double. */
void at_sb_real(at_sbuf *b, double x);
/* A node in flow style ([a, b], {k: v}). */
void at_sb_flow(at_sbuf *b, const at_ynode *n);
/* A short text naming a value in a run id ("0.003", "kda,full"). */
void at_sb_label(at_sbuf *b, const at_ynode *n);

#endif
