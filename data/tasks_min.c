/* data/tasks_min.c: TEMPORARY -- replaced by the data module (and optim/).
 *
 * Minimal task names, defaults and checks (plus at_optim_cfg_defaults) so the
 * experiment loader links and its tests run before data/ and optim/ land.
 * The definitions are weak: the real ones win wherever both are linked.
 * Drop this file when merging the data and optim branches.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "data/data.h"
#include "optim/optim.h"

#define AT_WEAK __attribute__((weak))

static const char *const task_names[AT_TASK_COUNT] = {
  [AT_TASK_MQAR] = "mqar",
  [AT_TASK_PALINDROME] = "palindrome",
  [AT_TASK_STACK] = "stack",
  [AT_TASK_SELECTIVE_COPY] = "selective_copy",
  [AT_TASK_NIAH] = "niah",
  [AT_TASK_TEXT] = "text",
};

AT_WEAK const char *at_task_name(at_task_kind k) {
  if ((int)k < 0 || k >= AT_TASK_COUNT) return "unknown";
  return task_names[k];
}

AT_WEAK int at_task_from_name(const char *name) {
  if (!name) return -1;
  for (int k = 0; k < AT_TASK_COUNT; k++)
    if (!strcmp(name, task_names[k])) return k;
  return -1;
}

AT_WEAK void at_task_cfg_defaults(at_task_cfg *cfg, at_task_kind kind) {
  memset(cfg, 0, sizeof *cfg);
  cfg->kind = kind;
  cfg->vocab_size = kind == AT_TASK_TEXT ? 256 : 8192;
  cfg->seq_len = 64;
  cfg->train_examples = 20000;
  cfg->test_examples = 1000;
  cfg->num_kv_pairs = 4;
  cfg->power_a = 0.01;
  cfg->random_non_queries = 1;
  cfg->num_stacks = 4;
  cfg->num_tokens_to_copy = 16;
  cfg->num_depth_buckets = 10;
  if (kind == AT_TASK_TEXT) snprintf(cfg->path, sizeof cfg->path, "/usr/share/games/fortunes/fortunes");
  cfg->val_fraction = 0.1;
}

static at_status bad(const char **bad_key, const char *key, at_status s, const char *msg) {
  if (bad_key) *bad_key = key;
  return at_error(s, "%s", msg);
}

AT_WEAK at_status at_task_check(const at_task_cfg *c, const char **bad_key) {
  if (bad_key) *bad_key = NULL;
  char msg[1200];
  switch (c->kind) {
  case AT_TASK_MQAR: {
    int64_t need = c->query_contiguous ? 3 * c->num_kv_pairs + 1 : 4 * c->num_kv_pairs;
    if (need > c->seq_len) {
      snprintf(msg, sizeof msg, "%lld key-value pairs need seq_len >= %lld (got %lld)",
               (long long)c->num_kv_pairs, (long long)need, (long long)c->seq_len);
      return bad(bad_key, "num_kv_pairs", AT_E_CONFIG, msg);
    }
    if (c->vocab_size / 2 - 1 < c->num_kv_pairs)
      return bad(bad_key, "vocab_size", AT_E_CONFIG, "too small a vocabulary for the keys");
    break;
  }
  case AT_TASK_TEXT: {
    struct stat st;
    if (c->vocab_size != 256) return bad(bad_key, "vocab_size", AT_E_CONFIG, "text is byte-level: vocab_size 256");
    if (stat(c->path, &st) != 0) {
      snprintf(msg, sizeof msg, "no such file or directory: %s", c->path);
      return bad(bad_key, "path", AT_E_IO, msg);
    }
    break;
  }
  default:
    break;
  }
  return AT_OK;
}

AT_WEAK void at_optim_cfg_defaults(at_optim_cfg *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->kind = AT_OPT_ADAMW;
  cfg->lr = 1e-3;
  cfg->beta1 = 0.9;
  cfg->beta2 = 0.95;
  cfg->eps = 1e-8;
  cfg->momentum = 0.9;
  cfg->weight_decay = 0.1;
  cfg->grad_clip = 1.0;
  cfg->schedule = AT_SCHED_COSINE;
  cfg->decay_frac = 0.2;
}
