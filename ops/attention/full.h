/* ops/attention/full.h: softmax attention (MHA, GQA, MQA) over a causal,
 * sliding-window or block-sparse layout (layout.h).
 *
 *   q [B, T, HQ, D],  k [B, T, H, D],  v [B, T, H, Dv],  HQ % H == 0
 *   query head hq reads kv head hq / (HQ / H)        (H = HQ: MHA, H = 1: MQA)
 *   o[b,i,hq] = sum_j p_ij v[b,j,h],   p_i = softmax_j(scale * q[b,i,hq] . k[b,j,h] + mask_ij)
 *   mask_ij = 0 if the layout's visible(b, hq, i, j), else -inf
 *   o [B, T, HQ, Dv]
 *
 * The softmax runs over the visible keys only. A query row that sees no key
 * (possible with hand-made or data-dependent layouts) gets o = 0, L = -inf
 * and no gradient.
 *
 * Without a layout the mask is causal, with an optional window W: query i
 * sees the keys i-W+1 .. i (W counts the query's own position:
 * FlashAttention's window_size = (W-1, 0); a W-slot rolling cache holds
 * exactly these). W = 0 means no window; W >= T equals full causal
 * attention. Both are layouts built per call (at_attn_layout_causal /
 * _window). Dv may differ from D (MLA: q/k dim 48, v dim 32).
 *
 * at_attention is the fused kernel: FlashAttention-2's tiled online softmax
 * forward over the layout's tiles (queries x keys blocks; tiles not in the
 * layout are never visited) which saves only the log-sum-exp of each query
 * row, and a backward that recomputes the probabilities tile by tile. No
 * T x T buffer exists at any point: memory is linear in T. Parallel over
 * batch x query heads; GQA/MQA key and value gradients are summed over the
 * query heads of a group in a fixed order, so results do not depend on the
 * thread count.
 *
 * at_attention_naive computes the same function from primitive ops (permute,
 * reshape, matmul, scale, softmax with an additive dense mask built from the
 * layout's element predicate), materialising the T x T scores; its backward
 * comes from the tape. It is the reference the fused op is tested against,
 * not meant for training.
 */
#ifndef AT_ATTENTION_FULL_H
#define AT_ATTENTION_FULL_H

#include "autograd/autograd.h"
#include "ops/attention/layout.h"

typedef struct at_attn_opts {
  double scale;                 /* softmax scale; 0 means D^-1/2 */
  int64_t window;               /* sliding window W (keys i-W+1 .. i); 0 means none */
  const at_attn_layout *layout; /* NULL: causal (with the window); else the window must be 0 */
  at_attn_stats *stats;         /* if not NULL, the tiles visited are added to it */
} at_attn_opts;

/* Fused attention. `o` may be NULL (defaults). Shape, option or layout
 * errors return NULL with AT_E_SHAPE / AT_E_ARG and a message. */
at_tensor *at_attention(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                        const at_attn_opts *o);

/* The same function composed of primitive ops (reference for tests). */
at_tensor *at_attention_naive(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                              const at_attn_opts *o);

/* One decoding step for generation: the newest token's queries against a
 * key/value cache.
 *
 *   q [B, 1, HQ, D]; k_cache [B, S, H, D], v_cache [B, S, H, Dv] hold the
 *   keys and values of positions 0 .. len-1 in slots 0 .. len-1 (slots
 *   len .. S-1 are ignored, so a cache can be allocated once for S tokens);
 *   the query is at position len-1, i.e. its own key and value are already in
 *   the cache. 1 <= len <= S. Returns o [B, 1, HQ, Dv], equal to row len-1 of
 *   at_attention over the first len positions (same scale and window: only
 *   the last W cached positions are read). With a layout (built for any
 *   T >= len) the query sees what row len-1 of the layout sees, and only
 *   its tiles' keys are read.
 *
 * Inference only: nothing is recorded on the tape (the output does not
 * require grad). Scratch is O(len) per thread. A rolling-buffer window cache
 * (slot = position mod W) can be passed in position order after unrolling;
 * the softmax does not depend on the order of the keys, so any slot order of
 * the last min(len, W) positions also works with len = min(len, W), W = 0. */
at_tensor *at_attention_decode(at_ctx *c, at_tensor *q, at_tensor *k_cache, at_tensor *v_cache,
                               int64_t len, const at_attn_opts *o);

/* The vector ISA the fused kernel's tiles were compiled for, e.g.
 * "AVX-512 (16 floats per vector)". */
const char *at_attention_isa(void);

#endif
