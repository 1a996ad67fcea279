/* ops/attention/layout.h: block-sparse attention layouts, the visibility
 * pattern the fused attention (full.h) runs over.
 *
 * A layout says which keys j each query i of a head sees. Its definition is
 * an element predicate, always intersected with causality:
 *
 *   visible(b, hq, i, j) = j <= i  and  ( rule_h(i, j)                  per-head element rule
 *                                         or global_b(i) or global_b(j)  global positions
 *                                         or kb(j) in listed(b,h,qb(i)) ) listed key blocks
 *
 *   rule (each term 0 = off; a rule is the union of its terms):
 *     causal          every key
 *     window W, dil d i - j = k d for some 0 <= k < W   (d = 1: keys i-W+1 .. i)
 *     stride l        (i - j) mod l == 0
 *     block l:
 *       same_block    i / l == j / l
 *       summary c     l - c - shift <= j mod l < l - shift   ("summary columns")
 *   global: a global position attends to every earlier key and every later
 *     query attends to it (Longformer); one list per batch row or shared;
 *   listed: explicit key blocks per query block (BigBird random/window/global
 *     blocks; NSA's top-n selected blocks, built at run time from data).
 *
 * Queries are cut into blocks of bq rows and keys into blocks of bk keys
 * (the kernel's tiles). From the predicate the builder derives, for every
 * (batch set, head set, query block), the ascending list of key blocks that
 * hold at least one visible pair, each tagged
 *   FULL    every pair visible (no mask),
 *   CAUSAL  exactly the pairs j <= i visible,
 *   MASKED  the kernel evaluates the rule row by row (at_attn_layout_row).
 * The kernel visits exactly these tiles, so work is proportional to the
 * visible blocks; no T x T structure exists (the lists hold at most
 * nqb * nkb / 2 entries per set, rules and globals O(T)).
 *
 * Variation: a layout has `batch` batch sets (1 = shared by every row, or
 * B) and `heads` head sets (1 = shared, or one per group of `head_group`
 * consecutive query heads: head_group = 1 is per query head, HQ / H per kv
 * head). Query head hq of batch row b uses set (b or 0, hq / head_group or 0).
 *
 * A mixer builds its layout in the forward pass and hands it to the op:
 *   at_attn_layout *L = at_attn_layout_strided(c, T, l);       (or _fixed, _bigbird, ...)
 *   at_attn_opts o = {.layout = L};
 *   at_tensor *y = at_attention(c, q, k, v, &o);               (and at_attention_decode)
 * Heads with different factorised parts:
 *   at_attn_rule r[HQ];
 *   for (h = 0; h < HQ; h++) r[h] = at_attn_rule_strided(l, h % 2 ? AT_ST_SECOND : AT_ST_LOCAL);
 *   L = at_attn_layout_rules(c, T, HQ, r);
 * Data-dependent blocks (NSA's top-n per batch row, kv head and query block):
 *   L = at_attn_layout_selected(c, T, bq, bk, sel, HQ / H);   (sel: int32 [B, H, nqb, n])
 * Anything else is an at_attn_pattern: rules per head, globals per batch
 * row and listed blocks per (batch row, head set, query block), combined.
 *
 * Layouts live in the step arena of the context they were built in (they
 * are small; build them in the forward pass, e.g. from the batch's data);
 * an attention call's backward reads its layout, so it must not be rewound
 * before the backward ran. Constructors return NULL with AT_E_ARG and a
 * message on bad parameters.
 */
#ifndef AT_ATTENTION_LAYOUT_H
#define AT_ATTENTION_LAYOUT_H

#include "autograd/autograd.h"

/* Default tile sizes (queries x keys); -D overrides them for experiments. */
#ifndef AT_ATTN_TILE_Q
#define AT_ATTN_TILE_Q 64
#endif
#ifndef AT_ATTN_TILE_K
#define AT_ATTN_TILE_K 64
#endif

typedef enum at_attn_tile_kind { AT_TILE_FULL = 0, AT_TILE_CAUSAL = 1, AT_TILE_MASKED = 2 } at_attn_tile_kind;

/* One head's element rule (see above); zero-initialise and set terms. */
typedef struct at_attn_rule {
  int causal;                /* every key j <= i */
  int64_t window, dilation;  /* i - j = k * dilation, 0 <= k < window (dilation 0 means 1) */
  int64_t stride;            /* (i - j) mod stride == 0 */
  int64_t block;             /* the period of the two "fixed" terms: */
  int same_block;            /*   i / block == j / block */
  int64_t summary, shift;    /*   block - summary - shift <= j mod block < block - shift */
} at_attn_rule;

/* Everything a layout is built from. Zero-initialise and set what is used. */
typedef struct at_attn_pattern {
  int64_t T;                 /* sequence length */
  int64_t block_q, block_k;  /* 0: AT_ATTN_TILE_Q, AT_ATTN_TILE_K */
  int64_t batch, heads;      /* sets (0 means 1) */
  int64_t head_group;        /* query heads per head set (0 means 1) */
  /* rules: n_rules = 1 (every head set) or `heads`; NULL / 0: no rule */
  const at_attn_rule *rules;
  int64_t n_rules;
  /* global positions: bytes [global_rows, T], nonzero = global;
   * global_rows = 1 (shared) or `batch`; NULL: none */
  const unsigned char *global;
  int64_t global_rows;
  /* listed key blocks: int32 [batch, heads, nqb, n_listed]; entries < 0 are
   * unused, duplicates and blocks after the query block are ignored */
  const int32_t *listed;
  int64_t n_listed;
} at_attn_pattern;

typedef struct at_attn_layout {
  int64_t T, bq, bk, nqb, nkb;
  int64_t batch, heads, head_group;
  /* the tiles: set s = sb * heads + sh, query block r has entries
   * row[s * nqb + r] .. row[s * nqb + r + 1] - 1 of col (key block, ascending)
   * and kind (at_attn_tile_kind) */
  int64_t *row;
  int32_t *col;
  unsigned char *kind;
  /* the predicate's parts (copies) */
  at_attn_rule *rules;       /* n_rules of them */
  int64_t n_rules;
  unsigned char *global;     /* [global_rows, T] or NULL */
  int64_t *global_prefix;    /* [global_rows, T + 1]: globals before t */
  int64_t global_rows;
  int64_t *listed_row;       /* like row/col, the listed blocks alone (sorted, deduplicated) */
  int32_t *listed_col;
} at_attn_layout;

/* Counts of tiles an attention call visited (added to, never reset). */
typedef struct at_attn_stats {
  int64_t forward_tiles, backward_tiles;
} at_attn_stats;

/* ---- building ---------------------------------------------------------------- */

at_attn_layout *at_attn_layout_new(at_ctx *c, const at_attn_pattern *p);

/* Causal (every key j <= i); window W >= 1: keys i-W+1 .. i (W >= T is
 * causal). Default tiles. */
at_attn_layout *at_attn_layout_causal(at_ctx *c, int64_t T);
at_attn_layout *at_attn_layout_window(at_ctx *c, int64_t T, int64_t W);

/* One rule per query head (n_heads of them, or 1 for all heads). */
at_attn_layout *at_attn_layout_rules(at_ctx *c, int64_t T, int64_t n_heads,
                                     const at_attn_rule *rules);

/* Sparse Transformer (Child et al. 2019) factorised parts: a head may use
 * either part or their union (AT_ST_BOTH, the "merged" head). */
enum { AT_ST_LOCAL = 1, AT_ST_SECOND = 2, AT_ST_BOTH = 3 };
/* strided: local = {max(0, i-l) .. i} (window l + 1), second = (i-j) mod l == 0 */
at_attn_rule at_attn_rule_strided(int64_t l, int parts);
/* fixed: local = own block of l, second = the last c positions of every
 * block, moved `shift` positions earlier (heads attending to distinct
 * c-sized sub-blocks use shift = h c) */
at_attn_rule at_attn_rule_fixed(int64_t l, int64_t c, int parts, int64_t shift);
/* Both parts for every head. */
at_attn_layout *at_attn_layout_strided(at_ctx *c, int64_t T, int64_t l);
at_attn_layout *at_attn_layout_fixed(at_ctx *c, int64_t T, int64_t l, int64_t csum);

/* Longformer (causal): a window of W keys per head with dilation
 * dilation[h] (NULL: 1 for every head; n_heads entries otherwise), plus
 * global positions `global` [batch, T] (bytes, nonzero = global; batch = 1
 * shares them; NULL: none), e.g. the query tokens of each MQAR example. */
at_attn_layout *at_attn_layout_longformer(at_ctx *c, int64_t T, int64_t W, int64_t n_heads,
                                          const int64_t *dilation, int64_t batch,
                                          const unsigned char *global);

/* BigBird (causal, blocks of `block` for queries and keys): query block r
 * sees key blocks r-w .. r (window), the first g blocks (global: they see
 * every earlier block as queries and are seen by every later one), and
 * `random` blocks drawn uniformly without replacement from the blocks in
 * between (g .. r-w-1; all of them if fewer), per query head (n_heads sets)
 * and query block, from (seed, head, block) by the counter RNG: the draw of
 * a block does not depend on T, so a layout built for a decoder's max_len
 * shows every query the blocks the one built for the forward's T shows. */
at_attn_layout *at_attn_layout_bigbird(at_ctx *c, int64_t T, int64_t block, int64_t w,
                                       int64_t g, int64_t random, int64_t n_heads,
                                       uint64_t seed);

/* Data-dependent selected key blocks (NSA's selection branch): sel
 * [B, H, nqb, n] int32 key-block indices per (batch row, kv head, query
 * block) (query blocks of bq rows: bq = 1 for a selection per query
 * position), -1 for none; `group` = HQ / H query heads share a kv head's
 * selection. Key blocks of bk. */
at_attn_layout *at_attn_layout_selected(at_ctx *c, int64_t T, int64_t bq, int64_t bk,
                                        const at_itensor *sel, int64_t group);

/* ---- reading ------------------------------------------------------------------ */

/* The predicate for query head hq of batch row b (0 <= i, j < T). */
int at_attn_layout_visible(const at_attn_layout *L, int64_t b, int64_t hq, int64_t i, int64_t j);

/* vis[x] = visible(b, hq, i, j0 + x) for x < n, for the keys of one tile of
 * a query row: what the kernel evaluates on MASKED tiles (O(n), no division
 * per key). */
void at_attn_layout_row(const at_attn_layout *L, int64_t b, int64_t hq, int64_t i, int64_t j0,
                        int64_t n, unsigned char *vis);

/* The set index of (b, hq), and its entry range for query block r. */
int64_t at_attn_layout_set(const at_attn_layout *L, int64_t b, int64_t hq);

/* Tiles one attention call over [B, T, HQ, *] visits (forward; the backward
 * visits the same): the sum over (b, hq) of the list lengths. */
int64_t at_attn_layout_tiles(const at_attn_layout *L, int64_t B, int64_t HQ);

/* Checks that L fits B batch rows and HQ query heads of T positions; 0 with
 * AT_E_SHAPE / AT_E_ARG recorded (prefixed by `op`) otherwise. */
int at_attn_layout_check(at_ctx *c, const char *op, const at_attn_layout *L, int64_t B,
                         int64_t T, int64_t HQ);

#endif
