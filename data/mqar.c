/* data/mqar.c: multi-query associative recall.
 *
 * Vocabulary (V = vocab_size, N = num_kv_pairs, T = seq_len):
 *   keys     [1, V/2)   N distinct per example (drawn without replacement)
 *   values   [V/2, V)   N distinct per example
 *   0        Zoology layout: the non-query filler when random_non_queries = 0;
 *            contiguous layout: the separator and the padding
 * With random_non_queries = 1 (Zoology's default) the filler is uniform in
 * [0, V), so it may repeat a key or a value, as in Zoology.
 *
 * Zoology layout (query_contiguous = 0; arXiv 2312.04927, zoology/data/
 * multiquery_ar.py semantics):
 *   positions 0 .. 2N-1   k_1 v_1 k_2 v_2 ... k_N v_N
 *   positions 2N .. T-1   the query region, (T-2N)/2 slots at even offsets:
 *                         key k_j sits at position 2N + 2 g_j, where the slots
 *                         g_1..g_N are drawn without replacement with
 *                         P(slot s) proportional to (s+1)^(a-1), a = power_a
 *                         (so early slots, short gaps, are most likely); every
 *                         other query-region position is filler
 *   labels                v_j at position 2N + 2 g_j, ignored elsewhere
 * Constraints (Zoology's, one pass): T even, 4N <= T, V > T.
 *
 * Contiguous layout (query_contiguous = 1; Kimi Linear §5.1 "A 1 C 3 <sep> C A"):
 *   positions 0 .. 2N-1   k_1 v_1 ... k_N v_N
 *   position  2N          separator (0)
 *   positions 2N+1 .. 3N  every key once, in a uniformly random order
 *   positions 3N+1 .. T-1 padding (0), unlabelled
 *   labels                the paired value at each query position
 * So T >= 3N + 1; when T is larger the tail is padding. Padding comes after
 * every scored position, so under a causal model it cannot change a scored
 * prediction; it only costs compute. random_non_queries has no effect here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/internal.h"

static at_status mqar_check(const at_task_cfg *c, const char **bad) {
  const long long V = c->vocab_size, T = c->seq_len, N = c->num_kv_pairs;
  if (c->query_contiguous != 0 && c->query_contiguous != 1)
    return at_task_bad(bad, "query_contiguous", AT_E_CONFIG, "mqar: query_contiguous must be 0 or 1, not %d",
                       c->query_contiguous);
  if (c->random_non_queries != 0 && c->random_non_queries != 1)
    return at_task_bad(bad, "random_non_queries", AT_E_CONFIG,
                       "mqar: random_non_queries must be 0 or 1, not %d", c->random_non_queries);
  if (N < 1)
    return at_task_bad(bad, "num_kv_pairs", AT_E_CONFIG, "mqar: num_kv_pairs must be >= 1, not %lld", N);
  if (c->query_contiguous) {
    if (3 * N + 1 > T)
      return at_task_bad(bad, "num_kv_pairs", AT_E_CONFIG,
                         "mqar (contiguous): num_kv_pairs %lld needs seq_len >= 3*num_kv_pairs+1 = %lld "
                         "(seq_len is %lld)", N, 3 * N + 1, T);
  } else {
    if (T % 2 != 0)
      return at_task_bad(bad, "seq_len", AT_E_CONFIG, "mqar: seq_len must be even (Zoology), not %lld", T);
    if (4 * N > T)
      return at_task_bad(bad, "num_kv_pairs", AT_E_CONFIG,
                         "mqar: num_kv_pairs %lld needs seq_len >= 4*num_kv_pairs = %lld (seq_len is %lld)",
                         N, 4 * N, T);
    if (V <= T)
      return at_task_bad(bad, "vocab_size", AT_E_CONFIG,
                         "mqar: vocab_size %lld must exceed seq_len %lld (Zoology)", V, T);
    if (!(c->power_a > 0) || !isfinite(c->power_a))
      return at_task_bad(bad, "power_a", AT_E_CONFIG, "mqar: power_a must be a positive number, not %g",
                         c->power_a);
  }
  if (V / 2 - 1 < N)
    return at_task_bad(bad, "vocab_size", AT_E_CONFIG,
                       "mqar: vocab_size %lld leaves %lld keys in [1, V/2) for %lld distinct keys", V,
                       V / 2 - 1, N);
  return AT_OK;
}

static at_status mqar_open(at_task *t) {
  if (t->cfg.query_contiguous) return AT_OK;
  int64_t space = (t->cfg.seq_len - 2 * t->cfg.num_kv_pairs) / 2;
  t->gap_space = space;
  t->gap_weight = malloc((size_t)space * sizeof *t->gap_weight);
  if (!t->gap_weight) return at_error(AT_E_NOMEM, "mqar: out of memory");
  for (int64_t s = 0; s < space; s++) t->gap_weight[s] = pow((double)(s + 1), t->cfg.power_a - 1.0);
  return AT_OK;
}

/* Scratch: keys[N], values[N], order[N] (int32), a hash table of H >= 4N
 * uint32 slots (also the Fisher-Yates array when R < 2N), then space bytes. */
static int64_t hash_slots(int64_t n) {
  int64_t h = 16;
  while (h < 4 * n) h *= 2;
  return h;
}

static size_t mqar_scratch(const at_task *t) {
  int64_t n = t->cfg.num_kv_pairs;
  return (size_t)(3 * n + hash_slots(n)) * sizeof(int32_t) + (size_t)t->gap_space + 1;
}

/* n distinct integers from [lo, lo + range), uniformly, in random order. */
static void sample_distinct(at_rng *r, int64_t lo, int64_t range, int64_t n, int32_t *out, uint32_t *work,
                            int64_t slots) {
  AT_ASSERT(n <= range);
  if (2 * n > range) { /* dense: partial Fisher-Yates over all candidates (range < 2n <= slots) */
    AT_ASSERT(range <= slots);
    for (int64_t i = 0; i < range; i++) work[i] = (uint32_t)i;
    for (int64_t j = 0; j < n; j++) {
      int64_t k = j + (int64_t)at_rng_below(r, (uint64_t)(range - j));
      uint32_t x = work[k];
      work[k] = work[j], work[j] = x;
      out[j] = (int32_t)(lo + x);
    }
    return;
  }
  /* sparse: rejection against an open-addressing set (entries are value+1) */
  memset(work, 0, (size_t)slots * sizeof *work);
  uint64_t mask = (uint64_t)slots - 1;
  for (int64_t j = 0; j < n;) {
    uint32_t x = (uint32_t)at_rng_below(r, (uint64_t)range);
    uint64_t h = ((uint64_t)x * 0x9E3779B97F4A7C15ull) >> 20 & mask;
    while (work[h] && work[h] != x + 1) h = (h + 1) & mask;
    if (work[h]) continue; /* seen: draw again */
    work[h] = x + 1;
    out[j++] = (int32_t)(lo + x);
  }
}

static void mqar_example(const at_task *t, at_split split, int64_t i, at_rng *r, int32_t *tok, int32_t *lab,
                         int32_t *group, void *scratch) {
  (void)split, (void)i;
  const int64_t V = t->cfg.vocab_size, T = t->cfg.seq_len, N = t->cfg.num_kv_pairs;
  int32_t *keys = scratch, *vals = keys + N, *order = vals + N;
  int64_t slots = hash_slots(N);
  uint32_t *work = (uint32_t *)(order + N);
  uint8_t *taken = (uint8_t *)(work + slots);
  *group = 0;
  sample_distinct(r, 1, V / 2 - 1, N, keys, work, slots);
  sample_distinct(r, V / 2, V - V / 2, N, vals, work, slots);
  for (int64_t j = 0; j < N; j++) tok[2 * j] = keys[j], tok[2 * j + 1] = vals[j];

  if (t->cfg.query_contiguous) {
    tok[2 * N] = 0; /* separator */
    for (int64_t j = 0; j < N; j++) order[j] = (int32_t)j;
    for (int64_t j = N - 1; j > 0; j--) {
      int64_t k = (int64_t)at_rng_below(r, (uint64_t)(j + 1));
      int32_t x = order[k];
      order[k] = order[j], order[j] = x;
    }
    for (int64_t j = 0; j < N; j++) {
      int64_t p = 2 * N + 1 + j;
      tok[p] = keys[order[j]];
      lab[p] = vals[order[j]];
    }
    for (int64_t p = 3 * N + 1; p < T; p++) tok[p] = 0; /* padding */
    return;
  }

  /* Query slots: N draws without replacement, each proportional to the
   * weights of the slots still free (what numpy's choice(replace=False, p)
   * does). The sum is recomputed per draw so rounding cannot drift. */
  const int64_t space = t->gap_space;
  const double *w = t->gap_weight;
  memset(taken, 0, (size_t)space);
  int32_t *gap = order;
  for (int64_t j = 0; j < N; j++) {
    double total = 0;
    for (int64_t s = 0; s < space; s++)
      if (!taken[s]) total += w[s];
    double u = at_rng_uniform(r) * total, acc = 0;
    int64_t pick = -1;
    for (int64_t s = 0; s < space; s++) {
      if (taken[s]) continue;
      pick = s; /* the last free slot if rounding runs past the end */
      acc += w[s];
      if (u < acc) break;
    }
    AT_ASSERT(pick >= 0);
    taken[pick] = 1;
    gap[j] = (int32_t)pick;
  }
  for (int64_t p = 2 * N; p < T; p++) tok[p] = t->cfg.random_non_queries ? at_data_pick(r, 0, V) : 0;
  for (int64_t j = 0; j < N; j++) {
    int64_t p = 2 * N + 2 * (int64_t)gap[j];
    tok[p] = keys[j];
    lab[p] = vals[j];
  }
}

static const at_task_ops ops = {mqar_check, mqar_open, NULL, mqar_scratch, mqar_example};
const at_task_ops *at_mqar_ops(void) { return &ops; }
