/* ops/attention/nsa.h: Native Sparse Attention (DeepSeek, arXiv 2502.11089),
 * the compression and selection math of its three branches (the selected
 * and sliding-window branches themselves run on the fused attention,
 * full.h, over at_attn_layout_selected / a window).
 *
 * Layout [B, T, H, D] as everywhere; everything is causal. Notation:
 * l = cmp_block, d = cmp_stride (d <= l), l' = sel_block, n = n_select.
 *
 * 1. Compression phi (Eq. 7; the paper leaves phi's form open, this is
 *    research note sparse_path §2.5): C = T >= l ? (T - l) / d + 1 : 0
 *    overlapping blocks, block i covering tokens i d .. i d + l - 1, per kv
 *    head h (weights shared by the heads):
 *
 *      X_i = k[i d .. i d + l - 1, h, :] + E          E [l, D]  intra-block position embedding
 *      k~_i = W2 silu(W1 vec(X_i))                   W1 [F, l D], W2 [D, F]
 *
 *    (at_nsa_compress; vec flattens token-major: entry j D + e is X_i[j, e]).
 *    Values are compressed by a second MLP of the same form.
 *
 * 2. Compressed attention (Eq. 8), q at position t sees the blocks that
 *    end at or before t (i d + l - 1 <= t):
 *
 *      p_t = softmax_i(scale q_t . k~_i),  o_t = sum_i p_t[i] v~_i
 *
 *    per query head hq over kv head hq / G (G = HQ / H); a row with no
 *    complete block gives o = 0 (at_nsa_cmp_attention, fused: a row's
 *    C ~ T / d scores fit a scratch row, so its softmax is exact in one
 *    pass, and the selection is ranked in the same pass).
 *
 * 3. Selection (Eq. 9-12), no gradient (at_nsa_select from p; fused into
 *    at_nsa_cmp_attention): selection block j
 *    covers tokens j l' .. (j+1) l' - 1. Its importance for query t is the
 *    compressed probability mass mapped by geometric overlap and summed over
 *    the G query heads of the kv group (Eq. 10: a group shares its blocks),
 *
 *      s_t[j] = sum_{g<G} sum_i p_t^(h G + g)[i] |[i d, i d + l) ∩ [j l', (j+1) l')|
 *
 *    (tokens shared; with d | l and d | l' this is d times the paper's count
 *    of shared stride-d sub-blocks: the research note's correction of Eq. 9's
 *    shifted indices). Candidates are the blocks j <= t / l' (never a future
 *    block; keys after t inside the current block are masked by the
 *    attention's causality). Forced blocks rank first, in this order: the
 *    current block t / l' (if n_local >= 1), block 0, then the earlier local blocks
 *    t / l' - 1 .. t / l' - n_local + 1; the rest by s_t descending, ties by
 *    the lower block first. indices [B, H, T, n] int32 in rank order, -1 when
 *    fewer than n blocks exist.
 */
#ifndef AT_ATTENTION_NSA_H
#define AT_ATTENTION_NSA_H

#include "autograd/autograd.h"

typedef struct at_nsa_blocks {
  int64_t cmp_block, cmp_stride; /* l, d */
  int64_t sel_block, n_select;   /* l', n */
  int64_t n_local;               /* local blocks forced (the current one included); 0: none */
} at_nsa_blocks;

/* Compressed blocks complete within the first T positions. */
int64_t at_nsa_n_cmp(const at_nsa_blocks *o, int64_t T);

/* k [B, T, H, D] -> [B, C, H, D] (C >= 1 required: T >= l); pe [l, D],
 * w1 [F, l D], w2 [D, F]. */
at_tensor *at_nsa_compress(at_ctx *c, at_tensor *k, at_tensor *pe, at_tensor *w1, at_tensor *w2,
                           const at_nsa_blocks *o);

/* q [B, Tq, HQ, D] at positions pos0 .. pos0 + Tq - 1, kc [B, C, H, D],
 * vc [B, C, H, Dv] (C >= 1) -> o [B, Tq, HQ, Dv], fused (no [Tq, C] tensor;
 * work and memory per (b, kv head) as nsa.c describes); *sel (may be NULL)
 * receives the selection [B, H, pos0 + Tq, n] the probabilities imply (as
 * at_nsa_select; no gradient). scale 0 means D^-1/2. */
at_tensor *at_nsa_cmp_attention(at_ctx *c, at_tensor *q, at_tensor *kc, at_tensor *vc,
                                const at_nsa_blocks *o, int64_t pos0, double scale, at_itensor **sel);

/* The same from autograd ops (the reference of the fused form); *p (may be
 * NULL) receives the probabilities [B, H, G Tq, C] (row g Tq + t: query
 * head h G + g at position pos0 + t). */
at_tensor *at_nsa_cmp_attention_naive(at_ctx *c, at_tensor *q, at_tensor *kc, at_tensor *vc,
                                      const at_nsa_blocks *o, int64_t pos0, double scale, at_tensor **p);

/* The selection [B, H, pos0 + Tq, n] for the queries of p (as returned by
 * at_nsa_cmp_attention for B, H, G, Tq; p NULL: no block complete yet, every
 * score 0); rows before pos0 are -1 (a decoding step's layout covers every
 * position up to its own). */
at_itensor *at_nsa_select(at_ctx *c, const at_tensor *p, int64_t B, int64_t H, int64_t G, int64_t Tq,
                          int64_t pos0, const at_nsa_blocks *o);

#endif
