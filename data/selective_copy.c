/* data/selective_copy.c: copy the data tokens scattered among noise, in
 * order, after a separator (the selective copying task of Mamba, arXiv
 * 2312.00752 §3.1; the answer slots follow the S4/Zoology copying format:
 * the answers are not fed back as inputs).
 *
 * Vocabulary (V = vocab_size, S = num_symbols or, when 0, V - 2):
 *   0            noise (the "blank" between data tokens, and the answer slots)
 *   1            separator ("copy now")
 *   [2, 2 + S)   data symbols
 *
 * Layout (K = num_tokens_to_copy, R = T - K - 1 the memory region):
 *   positions 0 .. R-1      K data tokens d_0..d_{K-1} (uniform symbols, with
 *                           repetition) at K distinct uniformly random
 *                           positions, in that order; noise everywhere else
 *   position  R             separator
 *   positions R+1 .. T-1    K answer slots, input noise
 *   labels                  d_j at position R+1+j; nothing else is scored
 * So T >= 2K + 1 (the memory region holds at least the K data tokens).
 */
#include "data/internal.h"

static int64_t num_symbols(const at_task_cfg *c) {
  return c->num_symbols > 0 ? c->num_symbols : c->vocab_size - 2;
}

static at_status selective_copy_check(const at_task_cfg *c, const char **bad) {
  const long long K = c->num_tokens_to_copy, T = c->seq_len;
  if (K < 1)
    return at_task_bad(bad, "num_tokens_to_copy", AT_E_CONFIG,
                       "selective_copy: num_tokens_to_copy must be >= 1, not %lld", K);
  if (2 * K + 1 > T)
    return at_task_bad(bad, "num_tokens_to_copy", AT_E_CONFIG,
                       "selective_copy: num_tokens_to_copy %lld needs seq_len >= 2*num_tokens_to_copy+1 = "
                       "%lld (seq_len is %lld)", K, 2 * K + 1, T);
  if (c->num_symbols < 0)
    return at_task_bad(bad, "num_symbols", AT_E_CONFIG, "selective_copy: num_symbols must be >= 0, not %lld",
                       (long long)c->num_symbols);
  int64_t S = num_symbols(c);
  if (2 + S > c->vocab_size || S < 2)
    return at_task_bad(bad, c->num_symbols > 0 ? "num_symbols" : "vocab_size", AT_E_CONFIG,
                       "selective_copy: vocab_size %lld cannot hold noise, separator and %lld data symbols "
                       "(at least 2 are needed)", (long long)c->vocab_size, (long long)S);
  return AT_OK;
}

static void selective_copy_example(const at_task *t, at_split split, int64_t i, at_rng *r, int32_t *tok,
                                   int32_t *lab, int32_t *group, void *scratch) {
  (void)split, (void)i, (void)scratch;
  const int64_t K = t->cfg.num_tokens_to_copy, T = t->cfg.seq_len, R = T - K - 1, S = num_symbols(&t->cfg);
  *group = 0;
  /* Selection sampling (Knuth's algorithm S): position p is chosen with
   * probability (still needed) / (positions left), which yields a uniform
   * K-subset already in increasing order. */
  int64_t placed = 0;
  for (int64_t p = 0; p < R; p++) {
    if ((int64_t)at_rng_below(r, (uint64_t)(R - p)) < K - placed) {
      int32_t d = at_data_pick(r, 2, S);
      tok[p] = d;
      lab[R + 1 + placed] = d;
      placed++;
    } else {
      tok[p] = 0;
    }
  }
  AT_ASSERT(placed == K);
  tok[R] = 1;
  for (int64_t p = R + 1; p < T; p++) tok[p] = 0;
}

static const at_task_ops ops = {selective_copy_check, NULL, NULL, NULL, selective_copy_example};
const at_task_ops *at_selective_copy_ops(void) { return &ops; }
