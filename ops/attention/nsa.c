/* ops/attention/nsa.c: Native Sparse Attention's compression and selection
 * (formulas in nsa.h). The compression MLP and the compressed attention are
 * compositions of autograd ops (their backward comes from the tape); the
 * selection is integer and records nothing. */
#include <math.h>
#include <string.h>

#include "ops/attention/nsa.h"
#include "ops/ops.h"

int64_t at_nsa_n_cmp(const at_nsa_blocks *o, int64_t T) {
  return T >= o->cmp_block ? (T - o->cmp_block) / o->cmp_stride + 1 : 0;
}

/* ---- 1. compression ------------------------------------------------------------ */

/* The token rows of every block: idx [B, C l, H, D], row i l + j = token i d + j. */
static at_itensor *block_rows(at_ctx *c, const at_tensor *k, int64_t C, const at_nsa_blocks *o) {
  int64_t B = k->shape[0], HD = k->shape[2] * k->shape[3], l = o->cmp_block;
  at_itensor *idx = at_inew(c, AT_SHAPE(B, C * l, k->shape[2], k->shape[3]));
  if (!idx) return NULL;
  for (int64_t b = 0; b < B; b++)
    for (int64_t r = 0; r < C * l; r++) {
      int32_t tok = (int32_t)(r / l * o->cmp_stride + r % l);
      int32_t *dst = idx->data + (b * C * l + r) * HD;
      for (int64_t e = 0; e < HD; e++) dst[e] = tok;
    }
  return idx;
}

at_tensor *at_nsa_compress(at_ctx *c, at_tensor *k, at_tensor *pe, at_tensor *w1, at_tensor *w2,
                           const at_nsa_blocks *o) {
  if (!k || !pe || !w1 || !w2) return NULL;
  int64_t l = o->cmp_block;
  if (k->ndim != 4 || pe->ndim != 2 || pe->shape[0] != l || pe->shape[1] != k->shape[3])
    return at_fail(c, AT_E_SHAPE, "nsa_compress: k must be [B, T, H, D] and pe [%lld, D]", (long long)l);
  int64_t B = k->shape[0], T = k->shape[1], H = k->shape[2], D = k->shape[3], C = at_nsa_n_cmp(o, T);
  if (C < 1)
    return at_fail(c, AT_E_ARG, "nsa_compress: T %lld holds no block of %lld", (long long)T, (long long)l);
  at_tensor *x = at_gather(c, k, 1, block_rows(c, k, C, o));         /* [B, C l, H, D] */
  x = at_permute(c, AT_RESHAPE(c, x, B * C, l, H, D), (const int[]){0, 2, 1, 3}); /* [B C, H, l, D] */
  x = AT_RESHAPE(c, x, B, C, H, l * D);
  /* W1 vec(X + E) = W1 vec(X) + W1 vec(E): the position embedding enters as
   * the first layer's bias (the same function, without a broadcast add over
   * every block) */
  at_tensor *b1 = AT_RESHAPE(c, at_linear(c, AT_RESHAPE(c, pe, 1, l * D), w1, NULL), w1->shape[0]);
  return at_linear(c, at_silu(c, at_linear(c, x, w1, b1)), w2, NULL); /* [B, C, H, D] */
}

/* ---- 2. compressed attention ------------------------------------------------------ */

/* mask [G Tq, C]: 0 where block i ends at or before the row's position. */
static at_tensor *cmp_mask(at_ctx *c, int64_t G, int64_t Tq, int64_t C, int64_t pos0, const at_nsa_blocks *o) {
  at_tensor *m = at_new(c, AT_SHAPE(G * Tq, C));
  if (!m) return NULL;
  for (int64_t r = 0; r < G * Tq; r++)
    for (int64_t i = 0; i < C; i++)
      m->data[r * C + i] = i * o->cmp_stride + o->cmp_block - 1 <= pos0 + r % Tq ? 0 : -INFINITY;
  return m;
}

at_tensor *at_nsa_cmp_attention(at_ctx *c, at_tensor *q, at_tensor *kc, at_tensor *vc,
                                const at_nsa_blocks *o, int64_t pos0, double scale, at_tensor **p) {
  if (p) *p = NULL;
  if (!q || !kc || !vc) return NULL;
  if (q->ndim != 4 || kc->ndim != 4 || vc->ndim != 4 || kc->shape[0] != q->shape[0] ||
      vc->shape[0] != q->shape[0] || kc->shape[3] != q->shape[3] || kc->shape[1] != vc->shape[1] ||
      kc->shape[2] != vc->shape[2] || kc->shape[2] < 1 || q->shape[2] % kc->shape[2] || kc->shape[1] < 1)
    return at_fail(c, AT_E_SHAPE, "nsa_cmp_attention: q [B, Tq, HQ, D], kc [B, C, H, D], vc [B, C, H, Dv] "
                   "with HQ a multiple of H and C >= 1");
  int64_t B = q->shape[0], Tq = q->shape[1], HQ = q->shape[2], D = q->shape[3];
  int64_t C = kc->shape[1], H = kc->shape[2], G = HQ / H, Dv = vc->shape[3];
  const int bhtd[] = {0, 2, 1, 3};
  at_tensor *qh = AT_RESHAPE(c, at_permute(c, q, bhtd), B, H, G * Tq, D);
  at_tensor *s = at_matmul(c, qh, at_permute(c, kc, bhtd), AT_N, AT_T); /* [B, H, G Tq, C] */
  at_tensor *pr = at_softmax(c, at_scale(c, s, scale > 0 ? scale : 1 / sqrt((double)D)),
                             cmp_mask(c, G, Tq, C, pos0, o));
  at_tensor *y = at_matmul(c, pr, at_permute(c, vc, bhtd), AT_N, AT_N); /* [B, H, G Tq, Dv] */
  if (p) *p = pr;
  return at_permute(c, AT_RESHAPE(c, y, B, HQ, Tq, Dv), bhtd);
}

/* ---- 3. selection ------------------------------------------------------------------ */

/* Tokens shared by compression block i and selection block j. */
static int64_t overlap(const at_nsa_blocks *o, int64_t i, int64_t j) {
  int64_t a = AT_MAX(i * o->cmp_stride, j * o->sel_block);
  int64_t z = AT_MIN(i * o->cmp_stride + o->cmp_block, (j + 1) * o->sel_block);
  return AT_MAX(z - a, 0);
}

/* Forced rank of block j for a query in block jt (higher first; 0: not forced). */
static int forced(const at_nsa_blocks *o, int64_t j, int64_t jt) {
  if (j == jt && o->n_local > 0) return 3;
  if (j == 0) return 2;
  return j < jt && j > jt - o->n_local ? 1 : 0;
}

/* 1 if block a ranks before block b. */
static int ranks_before(const double *s, const int *f, int64_t a, int64_t b) {
  if (f[a] != f[b]) return f[a] > f[b];
  if (s[a] != s[b]) return s[a] > s[b];
  return a < b;
}

/* The top n of blocks 0 .. jt into out[n] (-1 padded); s, f scratch of jt + 1. */
static void top_blocks(const at_nsa_blocks *o, int64_t jt, const double *s, int *f, int32_t *out) {
  for (int64_t j = 0; j <= jt; j++) f[j] = forced(o, j, jt);
  for (int64_t r = 0; r < o->n_select; r++) {
    int64_t best = -1;
    for (int64_t j = 0; j <= jt; j++)
      if (f[j] >= 0 && (best < 0 || ranks_before(s, f, j, best))) best = j;
    out[r] = (int32_t)best;
    if (best >= 0) f[best] = -1; /* taken */
  }
}

at_itensor *at_nsa_select(at_ctx *c, const at_tensor *p, int64_t B, int64_t H, int64_t G, int64_t Tq,
                          int64_t pos0, const at_nsa_blocks *o) {
  int64_t C = p ? p->shape[3] : 0, n = o->n_select, R = pos0 + Tq, nsb = (R + o->sel_block - 1) / o->sel_block;
  if (p && (p->ndim != 4 || p->shape[0] != B || p->shape[1] != H || p->shape[2] != G * Tq))
    return at_fail(c, AT_E_SHAPE, "nsa_select: p must be [%lld, %lld, %lld, C]", (long long)B,
                   (long long)H, (long long)(G * Tq));
  at_itensor *sel = at_inew(c, AT_SHAPE(B, H, R, n));
  double *s = at_scratch(c, (size_t)nsb * sizeof *s);
  int *f = at_scratch(c, (size_t)nsb * sizeof *f);
  if (!sel || !s || !f) return NULL;
  for (int64_t bh = 0; bh < B * H; bh++) {
    int32_t *dst = sel->data + bh * R * n;
    for (int64_t e = 0; e < pos0 * n; e++) dst[e] = -1;
    for (int64_t t = 0; t < Tq; t++) {
      int64_t jt = (pos0 + t) / o->sel_block;
      memset(s, 0, (size_t)(jt + 1) * sizeof *s);
      for (int64_t i = 0; i < C; i++) {
        double m = 0;
        for (int64_t g = 0; g < G; g++) m += p->data[(bh * G * Tq + g * Tq + t) * C + i];
        if (m == 0) continue;
        int64_t j0 = i * o->cmp_stride / o->sel_block, j1 = (i * o->cmp_stride + o->cmp_block - 1) / o->sel_block;
        for (int64_t j = j0; j <= AT_MIN(j1, jt); j++) s[j] += m * (double)overlap(o, i, j);
      }
      top_blocks(o, jt, s, f, dst + (pos0 + t) * n);
    }
  }
  return sel;
}
