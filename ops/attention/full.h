/* ops/attention/full.h: causal softmax attention (MHA, GQA, MQA, sliding window).
 *
 *   q [B, T, HQ, D],  k [B, T, H, D],  v [B, T, H, Dv],  HQ % H == 0
 *   query head hq reads kv head hq / (HQ / H)        (H = HQ: MHA, H = 1: MQA)
 *   o[b,i,hq] = sum_j p_ij v[b,j,h],   p_i = softmax_j(scale * q[b,i,hq] . k[b,j,h] + mask_ij)
 *   mask_ij = 0 if j <= i and (W == 0 or j >= i - W + 1), else -inf
 *   o [B, T, HQ, Dv]
 *
 * The window W counts keys including the query's own position: query i sees
 * the keys i-W+1 .. i (FlashAttention's window_size = (W-1, 0); a W-slot
 * rolling cache holds exactly these). W = 0 means no window; W >= T equals
 * full causal attention. Dv may differ from D (MLA: q/k dim 48, v dim 32).
 *
 * at_attention is the fused kernel: FlashAttention-2's tiled online softmax
 * forward (tiles of AT_ATTN_TILE_Q queries x AT_ATTN_TILE_K keys, tiles
 * above the diagonal or outside the window are never visited) which saves
 * only the log-sum-exp of each query row, and a backward that recomputes the
 * probabilities tile by tile. No T x T buffer exists at any point: memory is
 * linear in T. Parallel over batch x query heads; GQA/MQA key and value
 * gradients are summed over the query heads of a group in a fixed order, so
 * results do not depend on the thread count.
 *
 * at_attention_naive computes the same function from primitive ops (permute,
 * reshape, matmul, scale, softmax with an additive mask), materialising the
 * T x T scores; its backward comes from the tape. It is the reference the
 * fused op is tested against, not meant for training.
 */
#ifndef AT_ATTENTION_FULL_H
#define AT_ATTENTION_FULL_H

#include "autograd/autograd.h"

/* Tile sizes of the fused kernel (queries x keys). */
#define AT_ATTN_TILE_Q 64
#define AT_ATTN_TILE_K 64

typedef struct at_attn_opts {
  double scale;   /* softmax scale; 0 means D^-1/2 */
  int64_t window; /* sliding window W (keys i-W+1 .. i); 0 means none */
} at_attn_opts;

/* Fused causal attention. `o` may be NULL (defaults). Shape or option errors
 * return NULL with AT_E_SHAPE / AT_E_ARG and a message. */
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
 *   the last W cached positions are read).
 *
 * Inference only: nothing is recorded on the tape (the output does not
 * require grad). Scratch is O(len) per thread. A rolling-buffer window cache
 * (slot = position mod W) can be passed in position order after unrolling;
 * the softmax does not depend on the order of the keys, so any slot order of
 * the last min(len, W) positions also works with len = min(len, W), W = 0. */
at_tensor *at_attention_decode(at_ctx *c, at_tensor *q, at_tensor *k_cache, at_tensor *v_cache,
                               int64_t len, const at_attn_opts *o);

#endif
