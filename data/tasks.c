/* data/tasks.c: task names, defaults and checks; the at_task object; the
 * seeded training order and batching shared by every task.
 *
 * Determinism. Example i of a split is generated from its own Philox stream
 * (seed, at_data_stream(split, i)), so it depends on nothing else: not on
 * the batch it falls in, the thread that makes it, or the split's size. The
 * training split is served in epochs; position p of the training stream is
 * example perm_e(p mod N) with e = p / N, where perm_e is a keyed Feistel
 * network on [0, 4^h) >= N restricted to [0, N) by cycle walking (apply it
 * again until the value lands in range), a bijection needing no table. The
 * test split is served in index order, wrapping around.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/internal.h"

static const char *const task_names[AT_TASK_COUNT] = {
  [AT_TASK_MQAR] = "mqar",
  [AT_TASK_PALINDROME] = "palindrome",
  [AT_TASK_STACK] = "stack",
  [AT_TASK_SELECTIVE_COPY] = "selective_copy",
  [AT_TASK_NIAH] = "niah",
  [AT_TASK_TEXT] = "text",
};

static const at_task_ops *(*const task_ops[AT_TASK_COUNT])(void) = {
  [AT_TASK_MQAR] = at_mqar_ops,
  [AT_TASK_PALINDROME] = at_palindrome_ops,
  [AT_TASK_STACK] = at_stack_ops,
  [AT_TASK_SELECTIVE_COPY] = at_selective_copy_ops,
  [AT_TASK_NIAH] = at_niah_ops,
  [AT_TASK_TEXT] = at_text_ops,
};

const char *at_task_name(at_task_kind k) {
  if ((int)k < 0 || k >= AT_TASK_COUNT) return "unknown";
  return task_names[k];
}

int at_task_from_name(const char *name) {
  if (!name) return -1;
  for (int k = 0; k < AT_TASK_COUNT; k++)
    if (strcmp(name, task_names[k]) == 0) return k;
  return -1;
}

void at_task_cfg_defaults(at_task_cfg *cfg, at_task_kind kind) {
  memset(cfg, 0, sizeof *cfg);
  cfg->kind = kind;
  cfg->seed = 0;
  cfg->train_examples = 20000;
  cfg->test_examples = 1000;
  /* every task's own keys get a usable value, whatever the kind */
  cfg->num_kv_pairs = 4;
  cfg->power_a = 0.01;
  cfg->random_non_queries = 1;
  cfg->query_contiguous = 0;
  cfg->palindrome_len = 0;
  cfg->num_stacks = 8;
  cfg->num_symbols = 0;
  cfg->num_tokens_to_copy = 16;
  cfg->num_depth_buckets = 10;
  snprintf(cfg->path, sizeof cfg->path, "%s", "/usr/share/games/fortunes");
  cfg->val_fraction = 0.1;
  cfg->cache[0] = '\0';
  switch (kind) {
  case AT_TASK_MQAR: /* Zoology: V 8192, T 64, 4 pairs, power_a 0.01, random non-queries */
    cfg->vocab_size = 8192, cfg->seq_len = 64;
    break;
  case AT_TASK_PALINDROME: /* Kimi's format; L = 32 letters-like symbols (linear_path §7 E3) */
    cfg->vocab_size = 32, cfg->seq_len = 65;
    break;
  case AT_TASK_STACK: /* Kimi's format at CPU scale: 8 stacks, 16 symbols, 64 ops (§7 E4) */
    cfg->vocab_size = 32, cfg->seq_len = 192, cfg->num_symbols = 16;
    break;
  case AT_TASK_SELECTIVE_COPY: /* Mamba: 16 tokens to copy, a 16-token vocabulary */
    cfg->vocab_size = 16, cfg->seq_len = 256;
    break;
  case AT_TASK_NIAH: /* sparse_path §7 E1: T 512, 32 filler symbols, 10 depth buckets */
    cfg->vocab_size = 128, cfg->seq_len = 512, cfg->num_symbols = 32;
    break;
  case AT_TASK_TEXT: /* bytes; every held-out window is a test example */
    cfg->vocab_size = 256, cfg->seq_len = 128, cfg->test_examples = 0;
    break;
  default:
    break;
  }
}

at_status at_task_bad(const char **bad_key, const char *key, at_status st, const char *fmt, ...) {
  if (bad_key) *bad_key = key;
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return at_error(st, "%s", msg);
}

at_status at_task_check(const at_task_cfg *cfg, const char **bad_key) {
  if (bad_key) *bad_key = NULL;
  if ((int)cfg->kind < 0 || cfg->kind >= AT_TASK_COUNT)
    return at_task_bad(bad_key, "task", AT_E_CONFIG, "unknown task kind %d", (int)cfg->kind);
  const char *name = task_names[cfg->kind];
  if (cfg->vocab_size < 2 || cfg->vocab_size > INT32_MAX)
    return at_task_bad(bad_key, "vocab_size", AT_E_CONFIG, "%s: vocab_size %lld out of range [2, %d]",
                       name, (long long)cfg->vocab_size, INT32_MAX);
  if (cfg->seq_len < 2 || cfg->seq_len > (1 << 30))
    return at_task_bad(bad_key, "seq_len", AT_E_CONFIG, "%s: seq_len %lld out of range [2, %d]", name,
                       (long long)cfg->seq_len, 1 << 30);
  if (cfg->train_examples < 1 || cfg->train_examples >= (1ll << 48))
    return at_task_bad(bad_key, "train_examples", AT_E_CONFIG,
                       "%s: train_examples %lld out of range [1, 2^48)", name,
                       (long long)cfg->train_examples);
  int64_t min_test = cfg->kind == AT_TASK_TEXT ? 0 : 1;
  if (cfg->test_examples < min_test || cfg->test_examples >= (1ll << 48))
    return at_task_bad(bad_key, "test_examples", AT_E_CONFIG,
                       "%s: test_examples %lld out of range [%lld, 2^48)%s", name,
                       (long long)cfg->test_examples, (long long)min_test,
                       min_test == 0 ? " (0: every held-out window)" : "");
  return task_ops[cfg->kind]()->check(cfg, bad_key);
}

at_status at_task_open(const at_task_cfg *cfg, at_task **out) {
  *out = NULL;
  const char *bad = NULL;
  at_status st = at_task_check(cfg, &bad);
  if (st != AT_OK) return st;
  at_task *t = calloc(1, sizeof *t);
  if (!t) return at_error(AT_E_NOMEM, "out of memory opening task %s", task_names[cfg->kind]);
  t->cfg = *cfg;
  t->ops = task_ops[cfg->kind]();
  t->size[AT_SPLIT_TRAIN] = cfg->train_examples;
  t->size[AT_SPLIT_TEST] = cfg->test_examples;
  t->num_groups = 1;
  if (t->ops->open && (st = t->ops->open(t)) != AT_OK) {
    at_task_free(t);
    return st;
  }
  AT_ASSERT(t->size[0] > 0 && t->size[1] > 0);
  *out = t;
  return AT_OK;
}

void at_task_free(at_task *t) {
  if (!t) return;
  if (t->ops && t->ops->close) t->ops->close(t);
  free(t->group_names);
  free(t->gap_weight);
  free(t->text[0]);
  free(t->text[1]);
  free(t);
}

int64_t at_task_size(const at_task *t, at_split split) {
  AT_ASSERT(split == AT_SPLIT_TRAIN || split == AT_SPLIT_TEST);
  return t->size[split];
}

int at_task_num_groups(const at_task *t) { return t->num_groups; }

const char *at_task_group_name(const at_task *t, int g) {
  AT_ASSERT(g >= 0 && g < t->num_groups);
  return t->group_names ? t->group_names[g] : "all";
}

/* ---- the training permutation ------------------------------------------------ */

/* One keyed Feistel network on 2*half bits (six rounds). */
static uint64_t feistel(uint64_t seed, uint64_t epoch, int half, uint64_t x) {
  uint64_t mask = (1ull << half) - 1, l = x >> half, r = x & mask;
  for (uint64_t round = 0; round < 6; round++) {
    uint32_t f[4];
    at_philox(seed, at_data_perm_stream(epoch), (round << 32) ^ r, f);
    uint64_t fr = ((uint64_t)f[0] << 32 | f[1]) & mask;
    uint64_t nl = r, nr = l ^ fr;
    l = nl, r = nr;
  }
  return (l << half) | r;
}

/* perm_epoch(idx): a seeded bijection of [0, n). */
static int64_t permute(uint64_t seed, uint64_t epoch, int64_t n, int64_t idx) {
  if (n <= 1) return 0;
  int bits = 0;
  while ((1ull << bits) < (uint64_t)n) bits++;
  int half = (bits + 1) / 2;
  uint64_t x = (uint64_t)idx;
  do x = feistel(seed, epoch, half, x); /* cycle walking: at most ~4 rounds expected */
  while (x >= (uint64_t)n);
  return (int64_t)x;
}

/* ---- batching ------------------------------------------------------------------ */

void at_task_batch(at_task *t, at_split split, int64_t first, int64_t batch, int32_t *tokens,
                   int32_t *labels, int32_t *groups) {
  AT_ASSERT(split == AT_SPLIT_TRAIN || split == AT_SPLIT_TEST);
  AT_ASSERT(first >= 0 && batch >= 0);
  const int64_t T = t->cfg.seq_len, n = t->size[split];
  const size_t scratch_bytes = t->ops->scratch ? t->ops->scratch(t) : 0;
  int parallel = batch > 1 && batch * T >= 4096;
  int oom = 0;
#pragma omp parallel if (parallel) reduction(| : oom)
  {
    void *scratch = scratch_bytes ? malloc(scratch_bytes) : NULL;
    if (scratch_bytes && !scratch) oom = 1;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < batch; b++) {
      if (scratch_bytes && !scratch) continue;
      int64_t pos = first + b, idx = pos % n;
      if (split == AT_SPLIT_TRAIN) idx = permute(t->cfg.seed, (uint64_t)(pos / n), n, idx);
      int32_t *tok = tokens + b * T, *lab = labels + b * T, group = 0;
      for (int64_t p = 0; p < T; p++) tok[p] = 0, lab[p] = AT_IGNORE_LABEL;
      at_rng r = at_rng_make(t->cfg.seed, at_data_stream(split, idx));
      t->ops->example(t, split, idx, &r, tok, lab, &group, scratch);
      if (groups) groups[b] = group;
    }
    free(scratch);
  }
  AT_ASSERT_MSG(!oom, "out of memory for a data generator's scratch");
}
