/* ops/attention/dsa.h: DeepSeek Sparse Attention (DeepSeek-V3.2-Exp), the ops.
 *
 * Layout [B, T, H, D] as everywhere; everything is causal: no op ever selects
 * or reads a key after its query.
 *
 * 1. Lightning indexer and top-k selection (at_dsa_topk), no gradient:
 *
 *      I[t,s] = sum_j w[t,j] * ReLU(scale_idx * q_idx[t,j] . k_idx[s])     s <= t
 *
 *    q_idx [B,T,HI,DI], k_idx [B,T,DI] (one index key per token, shared by
 *    the HI indexer heads), w [B,T,HI] (NULL: all weights 1), scale_idx
 *    (0: DI^-1/2, flash-linear-attention's default; a positive scale does not
 *    change the ranking). indices [B,T,topk] int32: the min(t+1, topk) causal
 *    keys with the highest I[t,:] in descending score order, then -1 padding
 *    (rows with t+1 <= topk select every causal key: dense). This is
 *    fla's `naive_dsa_indexer(..., activation='relu')`.
 *    Ties: equal scores are ranked by position, the LATER key first (ReLU makes
 *    exact ties at 0 common; an untrained or dead indexer then degenerates to
 *    a sliding window of the most recent keys). fla's torch.topk leaves ties
 *    unspecified, so on tied rows its order (and possibly its set) differs.
 *    Cost O(T^2 HI DI) (GEMM tiles), memory O(T topk): scores are streamed
 *    tile by tile into per-row heaps; no T x T buffer. Parallel over batch x
 *    query tiles.
 *
 * 2. Sparse attention over the selected keys (at_dsa_attention):
 *
 *      o[t,hq] = sum_{s in S_t} p_s v[s,h],  p = softmax_{s in S_t}(scale q[t,hq] . k[s,h])
 *
 *    h = hq / (HQ/H) (GQA; MQA with H = 1), q [B,T,HQ,D], k [B,T,H,D],
 *    v [B,T,H,Dv] (Dv may differ from D), S_t = the entries of indices[b,t,:]
 *    that are not -1. Every entry must be -1 or a causal key 0 <= s <= t, and
 *    a row must not repeat a key (AT_E_ARG otherwise: a silent future key is
 *    the classic DSA bug). A row with no key gives o = 0 and no gradient.
 *    scale 0 means D^-1/2. Cost O(T topk HQ (D + Dv)); the forward saves only
 *    the log-sum-exp of each (row, head). The backward recomputes the
 *    probabilities: dq in a pass over query rows, dk and dv in a pass over
 *    keys using the transposed selection (for each key, the rows that chose
 *    it, in increasing t), so the scatter-add of dk/dv needs no atomics and
 *    the results do not depend on the thread count. indices are copied, not
 *    recorded (no gradient flows to the selection).
 *
 * 3. The indexer's training loss (at_dsa_indexer_loss), DeepSeek-V3.2's
 *    Eq. 3 (dense warm-up) and Eq. 4 (sparse stage):
 *
 *      L = 1/(B T) sum_{b,t} KL(p_t || softmax(I[t, L_t]))
 *      p_t[s] = 1/HQ sum_hq softmax_{s in L_t}(scale q[t,hq] . k[s,h])
 *
 *    L_t = all causal keys 0..t (dense stage) or the selected set S_t (sparse
 *    stage: teacher and student are both renormalised over S_t, as Megatron's
 *    compute_dsa_indexer_loss does). The MEAN over the B*T query rows (the
 *    paper sums over t: multiply by T for its scale). q and k are the main
 *    attention's queries and keys and are constants here: nothing flows into
 *    the main model; the indexer gets dL/dI[t,s] = (softmax(I_t) - p_t)[s] /
 *    (B T) on L_t, through the ReLU (derivative 0 at 0) into q_idx, k_idx, w.
 *    Everything is computed row by row and recomputed in backward (O(T)
 *    memory per thread, no T x T buffer); dk_idx is accumulated in a pass
 *    over keys (deterministic).
 *
 * 4. Single-step decode forms for generation, one new token at position
 *    len-1 against caches of positions 0..len-1 (at_dsa_topk_decode,
 *    at_dsa_attention_decode). Inference only: nothing is recorded.
 *
 * Reference: fla-org/flash-linear-attention fla/ops/dsa/naive.py (`naive_dsa`,
 * `naive_dsa_indexer`); tests/golden/dsa.h5 holds its values.
 */
#ifndef AT_ATTENTION_DSA_H
#define AT_ATTENTION_DSA_H

#include "autograd/autograd.h"

/* Query rows per indexer task and keys per GEMM tile of the indexer. */
#define AT_DSA_TILE_Q 32
#define AT_DSA_TILE_K 256

typedef struct at_dsa_opts {
  double scale;     /* main attention softmax scale; 0: D^-1/2 */
  double scale_idx; /* indexer scale inside the ReLU; 0: DI^-1/2 */
} at_dsa_opts;

/* ---- 1. lightning indexer + top-k ------------------------------------------ */

/* indices [B, T, topk] (see above). No tape node; inputs may require grad.
 * topk >= 1; w_idx may be NULL. */
at_itensor *at_dsa_topk(at_ctx *c, const at_tensor *q_idx, const at_tensor *k_idx,
                        const at_tensor *w_idx, int64_t topk, double scale_idx);

/* ---- 2. sparse attention ------------------------------------------------------ */

/* o [B, T, HQ, Dv] over the keys of `indices` [B, T, K] (any K >= 1). */
at_tensor *at_dsa_attention(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                            const at_itensor *indices, double scale);

/* The same function composed of primitive ops (embedding-gather of K and V,
 * matmul, softmax with a -inf mask at -1 slots), gradients from the tape: the
 * reference for tests, materialising [B,T,HQ,K] scores. */
at_tensor *at_dsa_attention_naive(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                                  const at_itensor *indices, double scale);

/* Indexer + sparse attention: fla's naive_dsa(q, k, v, q_idx, k_idx, w_idx,
 * topk=topk, scale=o->scale). Gradients flow to q, k, v only (the selection
 * has none). `o` may be NULL (defaults). If `indices` is not NULL it receives
 * the selection (in the step arena). */
at_tensor *at_dsa(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, const at_tensor *q_idx,
                  const at_tensor *k_idx, const at_tensor *w_idx, int64_t topk,
                  const at_dsa_opts *o, at_itensor **indices);

/* ---- 3. indexer loss ----------------------------------------------------------- */

typedef struct at_dsa_loss_opts {
  double scale;     /* main attention softmax scale (of q, k); 0: D^-1/2 */
  double scale_idx; /* indexer scale; 0: DI^-1/2 */
  int sparse;       /* 0: dense warm-up (KL over all causal keys); 1: sparse stage (over S_t) */
} at_dsa_loss_opts;

typedef struct at_dsa_loss_stats {
  double kl;          /* the loss value: mean KL per query row */
  double recall;      /* mean over the B*T rows of sum_{s in S_t} p_dense[t,s]: the share of the
                       * dense attention mass (heads summed, normalised) that the selection
                       * keeps; NAN when `indices` is NULL */
  double recall_tail; /* the same mean over the rows that have more causal keys than selected
                       * ones (the rows where selection matters); NAN if there are none */
  int64_t tail_rows;  /* how many such rows */
} at_dsa_loss_stats;

/* Scalar [1] loss (above). q_idx, k_idx, w_idx are the differentiable indexer
 * inputs (w_idx may be NULL: weights 1); q [B,T,HQ,D] and k [B,T,H,D] are
 * the main attention's (constants; in the sparse stage pass them as used by
 * the sparse attention). `indices` [B,T,K]: the selection (required when
 * o->sparse; optional in the dense stage, where it only feeds the recall).
 * `stats` may be NULL. Cost: dense stage O(T^2 (HQ D + HI DI)) forward and
 * about twice that backward; sparse stage O(T K (HQ D + HI DI)), plus, only
 * when `stats` is not NULL, one pass O(T^2 HQ D) over all causal keys for the
 * recall (the dense stage gets the recall for free). */
at_tensor *at_dsa_indexer_loss(at_ctx *c, at_tensor *q_idx, at_tensor *k_idx, at_tensor *w_idx,
                               const at_tensor *q, const at_tensor *k, const at_itensor *indices,
                               const at_dsa_loss_opts *o, at_dsa_loss_stats *stats);

/* The same loss composed of primitive ops over [B,T,T] scores (matmul, ReLU,
 * weighted head sum, masked log-softmax; the teacher under no-grad), gradients
 * from the tape: the reference for tests. Every row must have at least one
 * key in L_t (true for any at_dsa_topk selection). No statistics. */
at_tensor *at_dsa_indexer_loss_naive(at_ctx *c, at_tensor *q_idx, at_tensor *k_idx,
                                     at_tensor *w_idx, at_tensor *q, at_tensor *k,
                                     const at_itensor *indices, const at_dsa_loss_opts *o);

/* ---- 4. decode (one new token; inference only) --------------------------------- */

/* The selection of the token at position len-1: q_idx [B,1,HI,DI],
 * w_idx [B,1,HI] (or NULL), k_idx_cache [B,S,DI] holding the index keys of
 * positions 0..len-1 in slots 0..len-1 (its own key included), 1 <= len <= S.
 * Returns [B, 1, topk], equal to row len-1 of at_dsa_topk over the first len
 * positions (the scores come from a GEMM of another shape, so in float two
 * keys whose scores differ by a rounding error may swap places). */
at_itensor *at_dsa_topk_decode(at_ctx *c, const at_tensor *q_idx, const at_tensor *k_idx_cache,
                               const at_tensor *w_idx, int64_t len, int64_t topk,
                               double scale_idx);

/* One attention step: q [B,1,HQ,D] at position len-1, k_cache [B,S,H,D],
 * v_cache [B,S,H,Dv] with positions 0..len-1 in slots 0..len-1, indices
 * [B,1,K] (entries -1 or < len, e.g. from at_dsa_topk_decode). Returns
 * o [B,1,HQ,Dv], equal to row len-1 of at_dsa_attention. Only the selected
 * slots are read, so a DSA cache costs the selection O(len) index-key reads
 * and the attention O(K) K/V reads per step. */
at_tensor *at_dsa_attention_decode(at_ctx *c, const at_tensor *q, const at_tensor *k_cache,
                                   const at_tensor *v_cache, const at_itensor *indices,
                                   int64_t len, double scale);

#endif
