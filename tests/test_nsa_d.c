/* ops/attention/nsa.c in double: gradchecks of each NSA branch (the
 * compression MLP, the compressed attention, fused and naive, with GQA and
 * a decoding offset, the selected branch over a fixed selection, the window
 * branch), the compression and the compressed attention against plain
 * loops, and the refusals. The whole layer
 * (gates included) is gradchecked by the registry suite tests/mixed/mixers. */
#include "testing.h"
#include "nsa_ref.h"
#include "ops/attention/attention.h"
#include "ops/ops.h"

static const at_nsa_blocks blk = {.cmp_block = 4, .cmp_stride = 2, .sel_block = 4, .n_select = 3, .n_local = 1};

static at_tensor *compress_fn(at_ctx *c, at_tensor **in, void *u) {
  (void)u;
  return at_nsa_compress(c, in[0], in[1], in[2], in[3], &blk);
}

Test(nsa_compress, gradcheck) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 11, H = 2, D = 3, F = 5, l = blk.cmp_block;
  at_tensor *in[] = {AT_RANDN(c, 1, 1, B, T, H, D), AT_RANDN(c, 2, 0.5, l, D), AT_RANDN(c, 3, 0.5, F, l * D),
                     AT_RANDN(c, 4, 0.5, D, F)};
  AT_GRADCHECK(c, compress_fn, in, 4, NULL, "nsa_compress");
  at_ctx_free(c);
}

/* k~_i = W2 silu(W1 vec(k[i d .. i d + l - 1] + E)) by loops. */
Test(nsa_compress, equals_loops) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 11, H = 2, D = 3, F = 5, l = blk.cmp_block, C = at_nsa_n_cmp(&blk, T);
  at_tensor *k = AT_RANDN(c, 1, 1, B, T, H, D), *pe = AT_RANDN(c, 2, 0.5, l, D), *w1 = AT_RANDN(c, 3, 0.5, F, l * D),
            *w2 = AT_RANDN(c, 4, 0.5, D, F);
  at_tensor *y = at_nsa_compress(c, k, pe, w1, w2, &blk);
  cr_assert(y && y->shape[0] == B && y->shape[1] == C && C == 4 && y->shape[2] == H && y->shape[3] == D);
  double worst = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < C; i++)
      for (int64_t h = 0; h < H; h++) {
        double hid[5];
        for (int64_t f = 0; f < F; f++) {
          double a = 0;
          for (int64_t j = 0; j < l; j++)
            for (int64_t e = 0; e < D; e++)
              a += w1->data[f * l * D + j * D + e] *
                   (k->data[((b * T + i * blk.cmp_stride + j) * H + h) * D + e] + pe->data[j * D + e]);
          hid[f] = a / (1 + exp(-a));
        }
        for (int64_t e = 0; e < D; e++) {
          double a = 0;
          for (int64_t f = 0; f < F; f++) a += w2->data[e * F + f] * hid[f];
          worst = fmax(worst, fabs(a - y->data[((b * C + i) * H + h) * D + e]));
        }
      }
  cr_expect(worst < 1e-12, "compression differs from loops by %g", worst);
  at_ctx_free(c);
}

typedef struct {
  int64_t pos0;
} cmp_user;

static at_tensor *cmp_fn(at_ctx *c, at_tensor **in, void *u) {
  cmp_user *s = u;
  return at_nsa_cmp_attention(c, in[0], in[1], in[2], &blk, s->pos0, 0, NULL);
}

static at_tensor *cmp_naive_fn(at_ctx *c, at_tensor **in, void *u) {
  cmp_user *s = u;
  return at_nsa_cmp_attention_naive(c, in[0], in[1], in[2], &blk, s->pos0, 0, NULL);
}

/* The fused and the naive form: GQA (2 query heads per kv head), Dv != D,
 * rows without a complete block (o = 0), and a decoding offset (queries at
 * positions 3 .. 7). */
Test(nsa_cmp_attention, gradcheck_gqa_offset) {
  at_ctx *c = at_ctx_new(0);
  const int64_t pos0s[] = {0, 3};
  for (int i = 0; i < 2; i++) {
    int64_t B = 2, Tq = i ? 5 : 11, HQ = 4, H = 2, D = 3, Dv = 2, C = at_nsa_n_cmp(&blk, pos0s[i] + Tq);
    cmp_user u = {pos0s[i]};
    at_tensor *in[] = {AT_RANDN(c, 10 + i, 1, B, Tq, HQ, D), AT_RANDN(c, 20 + i, 1, B, C, H, D),
                       AT_RANDN(c, 30 + i, 1, B, C, H, Dv)};
    AT_GRADCHECK(c, cmp_fn, in, 3, &u, i ? "cmp attention, offset" : "cmp attention");
    AT_GRADCHECK(c, cmp_naive_fn, in, 3, &u, i ? "naive cmp attention, offset" : "naive cmp attention");
  }
  at_ctx_free(c);
}

/* Compressed attention by loops: query t sees block i iff i d + l - 1 <= t. */
Test(nsa_cmp_attention, equals_loops) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 11, HQ = 4, H = 2, D = 3, C = at_nsa_n_cmp(&blk, T), G = HQ / H;
  at_tensor *q = AT_RANDN(c, 1, 1, B, T, HQ, D), *kc = AT_RANDN(c, 2, 1, B, C, H, D), *vc = AT_RANDN(c, 3, 1, B, C, H, D), *p;
  at_tensor *y = at_nsa_cmp_attention_naive(c, q, kc, vc, &blk, 0, 0, &p);
  at_tensor *yf = at_nsa_cmp_attention(c, q, kc, vc, &blk, 0, 0, NULL);
  cr_assert(y && p && yf);
  double worst = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t hq = 0; hq < HQ; hq++) {
        int64_t h = hq / G;
        double s[8], mx = -INFINITY, z = 0;
        for (int64_t i = 0; i < C; i++) {
          s[i] = -INFINITY;
          if (i * blk.cmp_stride + blk.cmp_block - 1 > t) continue;
          double a = 0;
          for (int64_t e = 0; e < D; e++) a += q->data[((b * T + t) * HQ + hq) * D + e] * kc->data[((b * C + i) * H + h) * D + e];
          s[i] = a / sqrt((double)D), mx = fmax(mx, s[i]);
        }
        for (int64_t i = 0; i < C; i++) z += s[i] > -INFINITY ? exp(s[i] - mx) : 0;
        for (int64_t i = 0; i < C; i++) {
          double pi = z > 0 && s[i] > -INFINITY ? exp(s[i] - mx) / z : 0;
          worst = fmax(worst, fabs(pi - p->data[((b * H + h) * G * T + (hq % G) * T + t) * C + i]));
        }
        for (int64_t e = 0; e < D; e++) {
          double a = 0;
          for (int64_t i = 0; i < C; i++)
            if (z > 0 && s[i] > -INFINITY) a += exp(s[i] - mx) / z * vc->data[((b * C + i) * H + h) * D + e];
          worst = fmax(worst, fabs(a - y->data[((b * T + t) * HQ + hq) * D + e]));
          worst = fmax(worst, fabs(a - yf->data[((b * T + t) * HQ + hq) * D + e]));
        }
      }
  cr_expect(worst < 1e-12, "compressed attention (naive or fused) differs from loops by %g", worst);
  at_ctx_free(c);
}

typedef struct {
  at_attn_opts o;
} att_user;

static at_tensor *att_fn(at_ctx *c, at_tensor **in, void *u) {
  att_user *s = u;
  return at_attention(c, in[0], in[1], in[2], &s->o);
}

/* The selected branch over a fixed selection (the compressed ranking of
 * random queries), and the window branch. */
Test(nsa_branches, gradcheck_selected_and_window) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 13, HQ = 4, H = 2, D = 4, C = at_nsa_n_cmp(&blk, T), G = HQ / H;
  at_tensor *p;
  cr_assert(at_nsa_cmp_attention_naive(c, AT_RANDN(c, 1, 1.5, B, T, HQ, D), AT_RANDN(c, 2, 1.5, B, C, H, D),
                                 AT_RANDN(c, 3, 1, B, C, H, D), &blk, 0, 0, &p));
  at_itensor *sel = at_nsa_select(c, p, B, H, G, T, 0, &blk);
  att_user us = {{.layout = at_attn_layout_selected(c, T, 1, blk.sel_block, sel, G)}}, uw = {{.window = 4}};
  cr_assert(us.o.layout);
  at_tensor *in[] = {AT_RANDN(c, 5, 1, B, T, HQ, D), AT_RANDN(c, 6, 1, B, T, H, D), AT_RANDN(c, 7, 1, B, T, H, D)};
  AT_GRADCHECK(c, att_fn, in, 3, &us, "selected branch");
  AT_GRADCHECK(c, att_fn, in, 3, &uw, "window branch");
  at_ctx_free(c);
}

Test(nsa_ops, refusals) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *k = AT_RANDN(c, 1, 1, 1, 3, 1, 2), *pe = AT_RANDN(c, 2, 1, 4, 2), *w1 = AT_RANDN(c, 3, 1, 2, 8),
            *w2 = AT_RANDN(c, 4, 1, 2, 2);
  cr_expect(at_nsa_compress(c, k, pe, w1, w2, &blk) == NULL); /* T 3 < l 4 */
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  at_ctx_reset(c);
  at_tensor *q = AT_RANDN(c, 1, 1, 1, 3, 3, 2), *kc = AT_RANDN(c, 2, 1, 1, 2, 2, 2);
  cr_expect(at_nsa_cmp_attention(c, q, kc, kc, &blk, 0, 0, NULL) == NULL); /* HQ 3 over H 2 */
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  at_ctx_free(c);
}
