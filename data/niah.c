/* data/niah.c: a key-value needle at a controlled depth in random filler,
 * asked for at the end (sparse_path §7 E1: needle / passkey retrieval versus
 * distance).
 *
 * Vocabulary (V = vocab_size, F = num_symbols or, when 0, (V - 2) / 3;
 * the remaining ids are split into keys and values, NK = (V - 2 - F) / 2):
 *   0                           KEY marker
 *   1                           VAL marker
 *   [2, 2 + F)                  filler symbols
 *   [2 + F, 2 + F + NK)         keys
 *   [2 + F + NK, V)             values
 * Filler never uses a marker, key or value id, so the needle and the query
 * are the only KEY/VAL tokens in a sequence.
 *
 * Layout (P = T - 6 possible needle positions, d in [0, P)):
 *   positions d .. d+3       KEY k VAL v   (the needle)
 *   positions T-3 .. T-1     KEY k VAL     (the query)
 *   every other position     uniform filler
 *   labels                   v at position T-1 (the token that follows VAL);
 *                            nothing else is scored
 * Depth d / P in [0, 1) is where the needle starts (0: the start of the
 * sequence, farthest from the query). Example i belongs to depth bucket
 * g = i mod B (B = num_depth_buckets), so buckets are spread evenly over
 * the examples of a split; its needle position is uniform among the d with
 * g/B <= d/P < (g+1)/B. The example's group is g, named "depth a-b%".
 */
#include <stdio.h>
#include <stdlib.h>

#include "data/internal.h"

static int64_t num_filler(const at_task_cfg *c) {
  return c->num_symbols > 0 ? c->num_symbols : (c->vocab_size - 2) / 3;
}

static at_status niah_check(const at_task_cfg *c, const char **bad) {
  if (c->num_symbols < 0)
    return at_task_bad(bad, "num_symbols", AT_E_CONFIG, "niah: num_symbols (filler) must be >= 0, not %lld",
                       (long long)c->num_symbols);
  int64_t F = num_filler(c), NK = (c->vocab_size - 2 - F) / 2, NV = c->vocab_size - 2 - F - NK;
  if (F < 1 || NK < 2 || NV < 2)
    return at_task_bad(bad, c->num_symbols > 0 ? "num_symbols" : "vocab_size", AT_E_CONFIG,
                       "niah: vocab_size %lld with %lld filler symbols (num_symbols) leaves %lld keys and "
                       "%lld values (at least 1 filler symbol, 2 keys and 2 values are needed)",
                       (long long)c->vocab_size, (long long)F, (long long)NK, (long long)NV);
  if (c->seq_len < 7)
    return at_task_bad(bad, "seq_len", AT_E_CONFIG,
                       "niah: seq_len %lld cannot hold a 4-token needle and a 3-token query",
                       (long long)c->seq_len);
  if (c->num_depth_buckets < 1 || c->num_depth_buckets > 1000)
    return at_task_bad(bad, "num_depth_buckets", AT_E_CONFIG, "niah: num_depth_buckets %lld out of range [1, 1000]",
                       (long long)c->num_depth_buckets);
  if (c->num_depth_buckets > c->seq_len - 6)
    return at_task_bad(bad, "num_depth_buckets", AT_E_CONFIG,
                       "niah: num_depth_buckets %lld needs as many needle positions, seq_len - 6 = %lld",
                       (long long)c->num_depth_buckets, (long long)(c->seq_len - 6));
  return AT_OK;
}

static at_status niah_open(at_task *t) {
  int B = (int)t->cfg.num_depth_buckets;
  t->num_groups = B;
  t->group_names = calloc((size_t)B, sizeof *t->group_names);
  if (!t->group_names) return at_error(AT_E_NOMEM, "niah: out of memory");
  for (int g = 0; g < B; g++)
    snprintf(t->group_names[g], sizeof t->group_names[g], "depth %.4g-%.4g%%", 100.0 * g / B,
             100.0 * (g + 1) / B);
  return AT_OK;
}

static void niah_example(const at_task *t, at_split split, int64_t i, at_rng *r, int32_t *tok, int32_t *lab,
                         int32_t *group, void *scratch) {
  (void)split, (void)scratch;
  const int64_t T = t->cfg.seq_len, B = t->cfg.num_depth_buckets, P = T - 6;
  const int64_t F = num_filler(&t->cfg), NK = (t->cfg.vocab_size - 2 - F) / 2,
                NV = t->cfg.vocab_size - 2 - F - NK;
  int64_t g = i % B;
  int64_t lo = (g * P + B - 1) / B, hi = ((g + 1) * P + B - 1) / B; /* ceil: g/B <= d/P < (g+1)/B */
  AT_ASSERT(lo < hi);
  int64_t d = lo + (int64_t)at_rng_below(r, (uint64_t)(hi - lo));
  int32_t k = at_data_pick(r, 2 + F, NK), v = at_data_pick(r, 2 + F + NK, NV);
  for (int64_t p = 0; p < T; p++) tok[p] = at_data_pick(r, 2, F);
  tok[d] = 0, tok[d + 1] = k, tok[d + 2] = 1, tok[d + 3] = v;
  tok[T - 3] = 0, tok[T - 2] = k, tok[T - 1] = 1;
  lab[T - 1] = v;
  *group = (int32_t)g;
}

static const at_task_ops ops = {niah_check, niah_open, NULL, NULL, niah_example};
const at_task_ops *at_niah_ops(void) { return &ops; }
