/* ops/attention/dsa_naive.c: DSA's sparse attention and indexer loss composed
 * of primitive ops (embedding-gather, reshape, permute, matmul, masked
 * softmax, ...), gradients from the tape. They materialise [T, K] (attention)
 * and [T, T] (loss) per batch entry: references for the fused ops in tests,
 * not meant for training.
 */
#include <string.h>

#include "ops/attention/dsa_impl.h"
#include "ops/ops.h"

/* A finite "minus infinity" for the loss's masks: p * log(pi) must be 0 * big
 * (= 0) at masked keys, not 0 * -inf (= NaN); exp(-1e30 - max) is exactly 0. */
#define NAIVE_MASKED (-1e30)

/*   S = gather(K, indices),  o = softmax(scale q S^T + mask) gather(V, indices)
 * mask = -inf at -1 slots (their gathered row is a placeholder). */
at_tensor *at_dsa_attention_naive(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                                  const at_itensor *indices, double scale) {
  if (!q || !k || !v || !indices) return NULL;
  char sq[96], sk[96], sv[96], si[96];
  if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4 || indices->ndim != 3 ||
      k->shape[2] <= 0 || q->shape[2] % k->shape[2] != 0 || k->shape[1] != q->shape[1] ||
      indices->shape[0] != q->shape[0] || indices->shape[1] != q->shape[1])
    return at_fail(c, AT_E_SHAPE, "dsa_attention_naive: q %s, k %s, v %s, indices %s do not fit",
                   AT_SHAPE_STR(q, sq), AT_SHAPE_STR(k, sk), AT_SHAPE_STR(v, sv),
                   at_shape_str(indices->ndim, indices->shape, si));
  int64_t B = q->shape[0], T = q->shape[1], HQ = q->shape[2], D = q->shape[3];
  int64_t H = k->shape[2], Dv = v->shape[3], K = indices->shape[2], G = HQ / H;
  if (!at_dsa_check_indices(c, "dsa_attention_naive", indices->data, B, T, K, 0)) return NULL;
  if (scale == 0) scale = 1.0 / sqrt((double)D);
  /* rows of the [B*T, H*D] key table; a -1 slot reads row b*T (masked out) */
  at_itensor *ids = at_inew(c, AT_SHAPE(B, T, K));
  at_tensor *mask = at_new(c, AT_SHAPE(B * T, 1, 1, K));
  if (!ids || !mask) return NULL;
  for (int64_t i = 0; i < indices->size; i++) {
    int64_t b = i / (T * K), s = indices->data[i];
    ids->data[i] = (int32_t)(b * T + (s < 0 ? 0 : s));
    mask->data[i] = s < 0 ? -INFINITY : 0;
  }
  static const int swap12[] = {0, 2, 1, 3};
  at_tensor *kg = at_embedding(c, AT_RESHAPE(c, k, B * T, H * D), ids);            /* [B,T,K,H*D] */
  kg = at_permute(c, AT_RESHAPE(c, kg, B * T, K, H, D), swap12);                   /* [BT,H,K,D] */
  at_tensor *vg = at_embedding(c, AT_RESHAPE(c, v, B * T, H * Dv), ids);
  vg = at_permute(c, AT_RESHAPE(c, vg, B * T, K, H, Dv), swap12);                  /* [BT,H,K,Dv] */
  at_tensor *s = at_matmul(c, AT_RESHAPE(c, q, B * T, H, G, D), kg, AT_N, AT_T);   /* [BT,H,G,K] */
  at_tensor *p = at_softmax(c, at_scale(c, s, scale), mask);
  at_tensor *o = at_matmul(c, p, vg, AT_N, AT_N);                                  /* [BT,H,G,Dv] */
  return AT_RESHAPE(c, o, B, T, HQ, Dv);
}

/* The teacher p [B,T,T] as a constant: per kv head h, the G query heads'
 * softmax(scale q k_h^T + mask) summed, then over h, divided by HQ. */
static at_tensor *naive_teacher(at_ctx *c, at_tensor *q, at_tensor *k, const at_tensor *mask,
                                double scale) {
  int64_t B = q->shape[0], T = q->shape[1], HQ = q->shape[2], D = q->shape[3], H = k->shape[2];
  int64_t G = HQ / H;
  static const int swap12[] = {0, 2, 1, 3};
  at_tensor *sum = NULL;
  for (int64_t h = 0; h < H; h++) {
    at_tensor *qh = at_permute(c, at_slice(c, q, 2, h * G, G), swap12); /* [B,G,T,D] */
    at_tensor *kh = AT_RESHAPE(c, at_slice(c, k, 2, h, 1), B, T, D);
    at_tensor *l = at_matmul(c, AT_RESHAPE(c, qh, B, G * T, D), kh, AT_N, AT_T); /* [B,G*T,T] */
    at_tensor *ph = at_softmax(c, at_scale(c, AT_RESHAPE(c, l, B, G, T, T), scale), mask);
    ph = at_sum(c, ph, 1, 0); /* [B,T,T] */
    sum = sum ? at_add(c, sum, ph) : ph;
  }
  return at_scale(c, sum, 1.0 / (double)HQ);
}

/*   I = sum_j w_j ReLU(scale_idx q_idx_j k_idx^T)          [B,T,T]
 *   L = 1/(B T) sum (p log p - p log_softmax(I + mask)),   mask = 0 on L_t, else "-inf" */
at_tensor *at_dsa_indexer_loss_naive(at_ctx *c, at_tensor *q_idx, at_tensor *k_idx,
                                     at_tensor *w_idx, at_tensor *q, at_tensor *k,
                                     const at_itensor *indices, const at_dsa_loss_opts *o) {
  if (!q_idx || !k_idx || !q || !k || !o) return NULL;
  if (o->sparse && !indices)
    return at_fail(c, AT_E_ARG, "dsa_indexer_loss_naive: the sparse stage needs indices");
  char s1[96], s2[96];
  if (q_idx->ndim != 4 || k_idx->ndim != 3 || q->ndim != 4 || k->ndim != 4)
    return at_fail(c, AT_E_SHAPE, "dsa_indexer_loss_naive: q_idx %s, k_idx %s do not fit",
                   AT_SHAPE_STR(q_idx, s1), AT_SHAPE_STR(k_idx, s2));
  int64_t B = q_idx->shape[0], T = q_idx->shape[1], HI = q_idx->shape[2], DI = q_idx->shape[3];
  int64_t K = indices ? indices->shape[2] : 0;
  if (indices && !at_dsa_check_indices(c, "dsa_indexer_loss_naive", indices->data, B, T, K, 0))
    return NULL;
  double scale = o->scale > 0 ? o->scale : 1.0 / sqrt((double)q->shape[3]);
  double scale_idx = o->scale_idx > 0 ? o->scale_idx : 1.0 / sqrt((double)DI);
  /* additive masks of L_t: [B,T,T] for the loss, [B,1,T,T] for the heads */
  at_tensor *mask = at_new(c, AT_SHAPE(B, T, T));
  if (!mask) return NULL;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      real *row = mask->data + (b * T + t) * T;
      for (int64_t s = 0; s < T; s++) row[s] = !o->sparse && s <= t ? 0 : (real)NAIVE_MASKED;
      if (o->sparse)
        for (int64_t i = 0; i < K; i++) {
          int32_t s = indices->data[(b * T + t) * K + i];
          if (s >= 0) row[s] = 0;
        }
    }
  at_tensor *mask4 = AT_RESHAPE(c, mask, B, 1, T, T);

  at_no_grad_begin(c);
  at_tensor *p = naive_teacher(c, q, k, mask4, scale);
  at_no_grad_end(c);
  if (!p) return NULL;
  double plogp = 0;
  for (int64_t i = 0; i < p->size; i++)
    if (p->data[i] > 0) plogp += (double)p->data[i] * log((double)p->data[i]);

  at_tensor *a = at_matmul(c, AT_RESHAPE(c, q_idx, B, T * HI, DI), k_idx, AT_N, AT_T); /* [B,T*HI,T] */
  a = at_relu(c, at_scale(c, AT_RESHAPE(c, a, B, T, HI, T), scale_idx));
  if (w_idx) a = at_mul(c, a, AT_RESHAPE(c, w_idx, B, T, HI, 1));
  at_tensor *I = at_sum(c, a, 2, 0);                       /* [B,T,T] */
  at_tensor *logpi = at_log_softmax(c, I, mask);
  at_tensor *cross = at_sum_all(c, at_mul(c, p, logpi));   /* sum p log pi */
  double n = (double)(B * T);
  return at_affine(c, cross, -1.0 / n, plogp / n);
}
