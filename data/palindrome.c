/* data/palindrome.c: reverse a random sequence after a separator (Kimi
 * Linear §5.1, Figure 4a).
 *
 * Vocabulary (V = vocab_size, S = num_symbols or, when 0, V - 2):
 *   0            padding
 *   1            separator
 *   [2, 2 + S)   symbols
 *
 * Layout (L = palindrome_len, or (T-1)/2 when 0; s_0..s_{L-1} uniform over
 * the symbols, with repetition):
 *   positions 0 .. L-1      s_0 s_1 ... s_{L-1}
 *   position  L             separator
 *   positions L+1 .. 2L     s_{L-1} ... s_1 s_0
 *   positions 2L+1 .. T-1   padding
 * Labels follow the Kimi report's example exactly:
 *   tokens  O G R S U N E <sep> E N U S R G O
 *   labels  ∅ ∅ ∅ ∅ ∅ ∅ ∅  ∅    N U S R G O ∅
 * i.e. position p in [L+1, 2L-1] is labelled with the next token
 * tokens[p+1]; the separator's next token (the first reversed symbol) is not
 * scored, nor is the last reversed symbol (nothing follows it) or padding.
 * That is L-1 scored positions per example, each predicting s_{2L-1-p}.
 */
#include "data/internal.h"

static int64_t num_symbols(const at_task_cfg *c) {
  return c->num_symbols > 0 ? c->num_symbols : c->vocab_size - 2;
}

static int64_t length(const at_task_cfg *c) {
  return c->palindrome_len > 0 ? c->palindrome_len : (c->seq_len - 1) / 2;
}

static at_status palindrome_check(const at_task_cfg *c, const char **bad) {
  if (c->num_symbols < 0)
    return at_task_bad(bad, "num_symbols", AT_E_CONFIG, "palindrome: num_symbols must be >= 0, not %lld",
                       (long long)c->num_symbols);
  if (c->num_symbols > 0 && 2 + c->num_symbols > c->vocab_size)
    return at_task_bad(bad, "num_symbols", AT_E_CONFIG,
                       "palindrome: num_symbols %lld plus 2 special tokens exceeds vocab_size %lld",
                       (long long)c->num_symbols, (long long)c->vocab_size);
  if (num_symbols(c) < 2)
    return at_task_bad(bad, c->num_symbols > 0 ? "num_symbols" : "vocab_size", AT_E_CONFIG,
                       "palindrome: needs at least 2 symbols besides padding and separator (vocab_size "
                       "%lld, num_symbols %lld)", (long long)c->vocab_size, (long long)c->num_symbols);
  if (c->palindrome_len < 0)
    return at_task_bad(bad, "palindrome_len", AT_E_CONFIG, "palindrome: palindrome_len must be >= 0, not %lld",
                       (long long)c->palindrome_len);
  int64_t L = length(c);
  if (2 * L + 1 > c->seq_len)
    return at_task_bad(bad, "palindrome_len", AT_E_CONFIG,
                       "palindrome: palindrome_len %lld needs seq_len >= 2*palindrome_len+1 = %lld (seq_len "
                       "is %lld)", (long long)L, (long long)(2 * L + 1), (long long)c->seq_len);
  if (L < 2)
    return at_task_bad(bad, c->palindrome_len > 0 ? "palindrome_len" : "seq_len", AT_E_CONFIG,
                       "palindrome: the sequence to reverse must have >= 2 symbols (one scored position), "
                       "got %lld from %s", (long long)L,
                       c->palindrome_len > 0 ? "palindrome_len" : "seq_len (palindrome_len 0: (seq_len-1)/2)");
  return AT_OK;
}

static void palindrome_example(const at_task *t, at_split split, int64_t i, at_rng *r, int32_t *tok,
                               int32_t *lab, int32_t *group, void *scratch) {
  (void)split, (void)i, (void)scratch;
  const int64_t L = length(&t->cfg), S = num_symbols(&t->cfg), T = t->cfg.seq_len;
  *group = 0;
  for (int64_t p = 0; p < L; p++) tok[p] = at_data_pick(r, 2, S);
  tok[L] = 1;
  for (int64_t j = 0; j < L; j++) tok[L + 1 + j] = tok[L - 1 - j];
  for (int64_t p = 2 * L + 1; p < T; p++) tok[p] = 0;
  for (int64_t p = L + 1; p <= 2 * L - 1; p++) lab[p] = tok[p + 1];
}

static const at_task_ops ops = {palindrome_check, NULL, NULL, NULL, palindrome_example};
const at_task_ops *at_palindrome_ops(void) { return &ops; }
