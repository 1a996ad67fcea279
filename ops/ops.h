/* ops/ops.h: differentiable primitive ops.
 *
 * Every op takes the context first, returns a new tensor in the step arena
 * (NULL on failure, with the reason in at_errmsg() and at_ctx_status), and
 * records itself on the tape when an input requires grad. Forward and
 * backward of each op sit side by side in one file of ops/, with the formula
 * in a comment above. Inputs are never modified.
 *
 * Broadcasting (add/sub/mul/div): shapes are aligned on the right and a
 * dimension of size 1 (or a missing leading dimension) stretches, as in
 * NumPy; the gradient of a stretched input is summed back to its shape.
 *
 * A `dim` argument may be negative (counted from the end). There are no
 * 0-dim tensors: a scalar result has shape [1]. Results do not depend on the
 * thread count (sums run in a fixed order).
 */
#ifndef AT_OPS_H
#define AT_OPS_H

#include "autograd/autograd.h"
#include "core/gemm.h"

/* ---- matrix products (ops/linear.c) ---------------------------------------- */

/* out = op(a) op(b) over matching leading (batch) dims; b may be 2-D and then
 * is shared by every batch entry. a [..., M, K] (or [..., K, M] with ta = AT_T). */
at_tensor *at_matmul(at_ctx *c, at_tensor *a, at_tensor *b, at_trans ta, at_trans tb);
/* y = x W^T + bias: x [..., in], w [out, in], bias [out] or NULL. */
at_tensor *at_linear(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *bias);

/* ---- elementwise arithmetic (ops/arith.c) ----------------------------------- */

at_tensor *at_add(at_ctx *c, at_tensor *a, at_tensor *b);
at_tensor *at_sub(at_ctx *c, at_tensor *a, at_tensor *b);
at_tensor *at_mul(at_ctx *c, at_tensor *a, at_tensor *b);
at_tensor *at_div(at_ctx *c, at_tensor *a, at_tensor *b);
/* s * x + b for constants s, b. */
at_tensor *at_affine(at_ctx *c, at_tensor *x, double s, double b);
#define at_scale(c, x, s) at_affine((c), (x), (s), 0.0)

/* ---- unary functions (ops/unary.c) ------------------------------------------ */

at_tensor *at_exp(at_ctx *c, at_tensor *x);
at_tensor *at_log(at_ctx *c, at_tensor *x);
at_tensor *at_sqrt(at_ctx *c, at_tensor *x);
at_tensor *at_rsqrt(at_ctx *c, at_tensor *x);
at_tensor *at_square(at_ctx *c, at_tensor *x);
at_tensor *at_tanh(at_ctx *c, at_tensor *x);
at_tensor *at_sigmoid(at_ctx *c, at_tensor *x);
at_tensor *at_logsigmoid(at_ctx *c, at_tensor *x);
at_tensor *at_softplus(at_ctx *c, at_tensor *x);          /* log(1 + e^x), stable */
at_tensor *at_silu(at_ctx *c, at_tensor *x);              /* x sigmoid(x) (= swish) */
at_tensor *at_silu_mul(at_ctx *c, at_tensor *a, at_tensor *b); /* silu(a) b, fused (SwiGLU, swish gates) */
at_tensor *at_gelu(at_ctx *c, at_tensor *x);              /* tanh approximation */
at_tensor *at_elu(at_ctx *c, at_tensor *x, double alpha); /* x > 0 ? x : alpha (e^x - 1) */
at_tensor *at_relu(at_ctx *c, at_tensor *x);

/* ---- reductions (ops/reduce.c) ---------------------------------------------- */

/* Over one dim (negative counts from the end); keepdim keeps it with size 1.
 * Reducing the only dim of a 1-D tensor without keepdim gives shape [1]. */
at_tensor *at_sum(at_ctx *c, at_tensor *x, int dim, int keepdim);
at_tensor *at_mean(at_ctx *c, at_tensor *x, int dim, int keepdim);
/* Over everything: a scalar of shape [1]. */
at_tensor *at_sum_all(at_ctx *c, at_tensor *x);
at_tensor *at_mean_all(at_ctx *c, at_tensor *x);

/* ---- shape (ops/shape.c) ------------------------------------------------------ */

/* Same data, new shape (one dim may be -1). The output shares x's data but
 * has its own gradient (backward adds it into x's). */
at_tensor *at_reshape(at_ctx *c, at_tensor *x, int ndim, const int64_t *shape);
#define AT_RESHAPE(c, x, ...) at_reshape((c), (x), AT_SHAPE(__VA_ARGS__))
at_tensor *at_transpose(at_ctx *c, at_tensor *x, int d0, int d1);
/* out.shape[i] = x.shape[perm[i]]. */
at_tensor *at_permute(at_ctx *c, at_tensor *x, const int *perm);
/* Elements start .. start+len-1 along dim (len 0 gives an empty tensor). */
at_tensor *at_slice(at_ctx *c, at_tensor *x, int dim, int64_t start, int64_t len);
/* Any n >= 1 (more than AT_NODE_MAX_IN inputs are joined in halves). */
at_tensor *at_concat(at_ctx *c, at_tensor *const *xs, int n, int dim);

/* ---- indexing (ops/index.c) --------------------------------------------------- */

/* Rows of table [V, D] for ids [...] -> [..., D]; ids out of range fail. */
at_tensor *at_embedding(at_ctx *c, at_tensor *table, const at_itensor *ids);
/* torch.gather: out[..i..] = x[.. idx[..i..] along dim ..]; idx has x's rank
 * and x's shape except along dim. Backward scatter-adds (duplicates add up). */
at_tensor *at_gather(at_ctx *c, at_tensor *x, int dim, const at_itensor *idx);
/* out = x with src[..i..] added at x[.. idx[..i..] along dim ..]; gradients
 * flow to x and src. */
at_tensor *at_scatter_add(at_ctx *c, at_tensor *x, int dim, const at_itensor *idx, at_tensor *src);
/* Indices of the k largest entries of each row of the last dim, in
 * descending order (ties: lower index first). No gradient. Entries equal to
 * -INFINITY (or NaN) are never selected; when a row has fewer than k others,
 * the remaining slots hold -1. 1 <= k <= the last dim. */
at_itensor *at_topk(at_ctx *c, const at_tensor *x, int64_t k);

/* ---- normalisation and softmax (ops/norm.c, ops/softmax.c) ------------------- */

/* x / sqrt(mean(x^2) + eps) * w over the last dim; w [D] or NULL. */
at_tensor *at_rmsnorm(at_ctx *c, at_tensor *x, at_tensor *w, double eps);
/* (x - mean) / sqrt(var + eps) * w + b over the last dim; w, b [D] or NULL. */
at_tensor *at_layernorm(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *b, double eps);
/* x / sqrt(sum(x^2) + eps) over the last dim (fla: eps = 1e-6). */
at_tensor *at_l2norm(at_ctx *c, at_tensor *x, double eps);
/* softmax(x + mask) over the last dim; mask is a constant broadcast to x
 * (e.g. [T, T] for x [B, H, T, T]) holding 0 or -INFINITY (any constant
 * bias works), or NULL. A row that is entirely -INFINITY gives zeros and
 * passes no gradient (both ops). log_softmax gives -INFINITY at masked
 * entries and passes them no gradient: their upstream gradient is ignored. */
at_tensor *at_softmax(at_ctx *c, at_tensor *x, const at_tensor *mask);
at_tensor *at_log_softmax(at_ctx *c, at_tensor *x, const at_tensor *mask);

/* ---- sequence ops (ops/sequence.c) ------------------------------------------- */

/* Rotary embedding on x [B, T, H, D] (or [B, T, D]), position t = pos0 + time
 * index, on the first d_rot dims of the last axis (d_rot even), rotate-half
 * (non-interleaved, NeoX) pairing (i, i + d_rot/2), frequencies
 * theta^(-2i/d_rot). Dims beyond d_rot pass through. 2 <= d_rot <= D,
 * theta > 0; angles are computed in double. */
at_tensor *at_rope(at_ctx *c, at_tensor *x, int64_t d_rot, double theta, int64_t pos0);
/* Causal depthwise conv over time: x [B, T, C], w [C, K], bias [C] or NULL:
 * y[b,t,c] = bias[c] + sum_j w[c,j] x[b, t-K+1+j, c] (zero before t = 0). */
at_tensor *at_conv1d_causal(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *bias);
/* Inclusive cumulative sum along dim. */
at_tensor *at_cumsum(at_ctx *c, at_tensor *x, int dim);

/* ---- losses (ops/loss.c) ------------------------------------------------------ */

/* Mean over positions whose label != ignore of -log softmax(logits)[label]:
 * logits [N, V] (or [B, T, V]), labels [N] (or [B, T]). A scalar [1]; zero
 * when every label is ignored (backward then runs and adds nothing, so a
 * batch without labels needs no special case). *n_counted (may be NULL)
 * receives the number of labelled positions, *n_correct (may be NULL) how
 * many of them have the label as the argmax. Labels outside [0, V) other
 * than `ignore` fail. */
at_tensor *at_cross_entropy(at_ctx *c, at_tensor *logits, const at_itensor *labels, int ignore,
                            int64_t *n_counted, int64_t *n_correct);

#endif
