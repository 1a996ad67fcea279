/* experiments/schema.h: the experiment schema (internal to the loader).
 *
 * Each section is a table of keys with types, ranges and the struct field
 * they fill; applying a mapping checks every key and value in file order and
 * stops at the first problem, reported at the key or value's location.
 */
#ifndef AT_EXPERIMENTS_SCHEMA_H
#define AT_EXPERIMENTS_SCHEMA_H

#include "experiments/config.h"
#include "experiments/yaml_tree.h"

/* Sections. `task` for data: the resolved task, whose keys alone are then
 * accepted, or -1 (any task's keys; used before runs are resolved). */
at_status at_cfg_apply_data(const at_ynode *map, int task, at_task_cfg *d);
at_status at_cfg_apply_model(const at_ynode *map, at_model_cfg *m);
at_status at_cfg_apply_train(const at_ynode *map, at_train_cfg *t);
at_status at_cfg_apply_stages(const at_ynode *seq, const char *what, at_train_cfg *t);
at_status at_cfg_apply_report(const at_ynode *map, char *metric, size_t size);
void at_cfg_train_defaults(at_train_cfg *t);

/* Building blocks for the top level. `what` names the value in messages. */
at_status at_cfg_expect_map(const at_ynode *n, const char *what);
/* "<what>: expected <type>, got <what v is>" at v. */
at_status at_cfg_expected(const at_ynode *v, const char *what, const char *type);
/* An error if key i of `map` repeats an earlier key. */
at_status at_cfg_dup_key(const at_ynode *map, int i, const char *what);
/* "unknown key 'k' in <what>; did you mean '<nearest>'?" */
at_status at_cfg_unknown_key(at_cfg_loc at, const char *key, const char *what,
                             const char *const *valid, int n);
at_status at_cfg_get_int(const at_ynode *v, const char *what, int64_t lo, int64_t hi, int64_t *out);
at_status at_cfg_get_str(const at_ynode *v, const char *what, char *buf, size_t size);
/* A file-safe name: a letter or digit, then letters, digits, '_', '-', '.', '+'. */
at_status at_cfg_get_name(const at_ynode *v, const char *what, char *buf, size_t size);
/* "data", "model" or "train" if `key` is a key of that section, else NULL. */
const char *at_cfg_section_of(const char *key);
/* Optimal string alignment distance (edits and adjacent swaps). */
int at_cfg_edit_distance(const char *a, const char *b);
/* The nearest of `valid` to `key` when close enough to be a typo, else NULL. */
const char *at_cfg_nearest(const char *key, const char *const *valid, int n);

/* Resolves one run's merged configuration (keys seed, data, model, train of
 * `root`): defaults, derived values, shape and task checks. `fallback` is
 * where to point when a problem involves only defaulted values. */
at_status at_cfg_resolve(const at_ynode *root, at_cfg_loc fallback, at_run_cfg *r);
/* Appends the resolved data, model and train sections as YAML. `root` tells
 * which mixers' options the file mentions (they are written even if unused). */
void at_cfg_emit_sections(at_sbuf *b, const at_run_cfg *r, const at_ynode *root);
/* A data section as a flow map of its task's keys (task and eval left out). */
void at_cfg_emit_data_flow(at_sbuf *b, const at_task_cfg *d);

#endif
