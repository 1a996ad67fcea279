/* data/stack.c: push and pop on several independent stacks; predict the
 * popped symbol (Kimi Linear §5.1, Figure 4c).
 *
 * Vocabulary (V = vocab_size, M = num_stacks, S = num_symbols or, when 0,
 * V - 3 - M):
 *   0                    padding
 *   1                    <push>
 *   2                    <pop>
 *   [3, 3 + M)           stack ids (stack s is token 3 + s)
 *   [3 + M, 3 + M + S)   symbols
 *
 * Layout: floor(T/3) operations of three tokens each, then T mod 3 padding:
 *   <push> s x   push symbol x on stack s (nothing scored)
 *   <pop>  s x   pop stack s; x is the symbol it returns. The label at the
 *                position of s is x (the next token), and that is the only
 *                scored position of the operation.
 * Each operation: if every stack is empty, a push; otherwise a pop with
 * probability 1/2. A push picks a uniform stack and a uniform symbol; a pop
 * picks a uniform stack among the non-empty ones, so no empty stack is ever
 * popped. Stacks are unbounded.
 */
#include "data/internal.h"

static int64_t num_symbols(const at_task_cfg *c) {
  return c->num_symbols > 0 ? c->num_symbols : c->vocab_size - 3 - c->num_stacks;
}

static at_status stack_check(const at_task_cfg *c, const char **bad) {
  if (c->num_stacks < 1 || c->num_stacks > (1 << 24))
    return at_task_bad(bad, "num_stacks", AT_E_CONFIG, "stack: num_stacks %lld out of range [1, %d]",
                       (long long)c->num_stacks, 1 << 24);
  if (c->num_symbols < 0)
    return at_task_bad(bad, "num_symbols", AT_E_CONFIG, "stack: num_symbols must be >= 0, not %lld",
                       (long long)c->num_symbols);
  int64_t S = num_symbols(c);
  if (3 + c->num_stacks + S > c->vocab_size || S < 2)
    return at_task_bad(bad, c->num_symbols > 0 ? "num_symbols" : "vocab_size", AT_E_CONFIG,
                       "stack: vocab_size %lld cannot hold 3 special tokens, %lld stack ids and num_symbols "
                       "%lld (at least 2 symbols are needed)", (long long)c->vocab_size,
                       (long long)c->num_stacks, (long long)S);
  if (c->seq_len < 6)
    return at_task_bad(bad, "seq_len", AT_E_CONFIG,
                       "stack: seq_len %lld holds fewer than 2 operations of 3 tokens", (long long)c->seq_len);
  return AT_OK;
}

/* Scratch: top[M], nonempty[M], where[M], below[ops], value[ops] (int32). */
static size_t stack_scratch(const at_task *t) {
  return (size_t)(3 * t->cfg.num_stacks + 2 * (t->cfg.seq_len / 3)) * sizeof(int32_t);
}

static void stack_example(const at_task *t, at_split split, int64_t i, at_rng *r, int32_t *tok, int32_t *lab,
                          int32_t *group, void *scratch) {
  (void)split, (void)i;
  const int64_t M = t->cfg.num_stacks, S = num_symbols(&t->cfg), T = t->cfg.seq_len, ops = T / 3;
  /* Each stack is a linked list of the pushes still on it: top[s] is the
   * newest push (an op index) or -1, below[o] the push beneath push o. */
  int32_t *top = scratch, *nonempty = top + M, *where = nonempty + M, *below = where + M,
          *value = below + ops;
  int64_t n_nonempty = 0;
  *group = 0;
  for (int64_t s = 0; s < M; s++) top[s] = -1;
  for (int64_t o = 0; o < ops; o++) {
    int32_t *op = tok + 3 * o;
    if (n_nonempty > 0 && at_rng_below(r, 2)) {
      int32_t s = nonempty[at_rng_below(r, (uint64_t)n_nonempty)];
      int32_t x = value[top[s]];
      top[s] = below[top[s]];
      if (top[s] < 0) { /* now empty: swap it out of the non-empty list */
        int32_t last = nonempty[--n_nonempty];
        nonempty[where[s]] = last;
        where[last] = where[s];
      }
      op[0] = 2, op[1] = 3 + s, op[2] = x;
      lab[3 * o + 1] = x;
    } else {
      int32_t s = (int32_t)at_rng_below(r, (uint64_t)M);
      int32_t x = at_data_pick(r, 3 + M, S);
      if (top[s] < 0) where[s] = (int32_t)n_nonempty, nonempty[n_nonempty++] = s;
      below[o] = top[s], value[o] = x, top[s] = (int32_t)o;
      op[0] = 1, op[1] = 3 + s, op[2] = x;
    }
  }
  for (int64_t p = 3 * ops; p < T; p++) tok[p] = 0;
}

static const at_task_ops ops = {stack_check, NULL, NULL, stack_scratch, stack_example};
const at_task_ops *at_stack_ops(void) { return &ops; }
