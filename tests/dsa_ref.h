/* tests/dsa_ref.h: plain-loop double references of the DSA ops for the tests
 * (the definitions written out directly, T x T where convenient), helpers to
 * build selections, and the fused-vs-naive comparison. Included (after
 * testing.h) by test_dsa_d.c and test_dsa.c. */
#ifndef AT_TEST_DSA_REF_H
#define AT_TEST_DSA_REF_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "ops/attention/dsa.h"

/* Index score I[b,t,s] (no causal mask). */
static inline double ref_index_score(const at_tensor *qi, const at_tensor *ki, const at_tensor *w,
                                     double scale, int64_t b, int64_t t, int64_t s) {
  int64_t T = qi->shape[1], HI = qi->shape[2], DI = qi->shape[3];
  double I = 0;
  for (int64_t j = 0; j < HI; j++) {
    double a = 0;
    for (int64_t e = 0; e < DI; e++)
      a += (double)qi->data[((b * T + t) * HI + j) * DI + e] * (double)ki->data[(b * T + s) * DI + e];
    a *= scale;
    I += (w ? (double)w->data[(b * T + t) * HI + j] : 1.0) * (a > 0 ? a : 0);
  }
  return I;
}

/* Brute-force selection: all T x T scores, each causal row sorted by
 * (score desc, position desc), the first min(t+1, topk) kept, -1 padded. */
static inline void ref_topk(const at_tensor *qi, const at_tensor *ki, const at_tensor *w,
                            double scale, int64_t topk, int32_t *out) {
  int64_t B = qi->shape[0], T = qi->shape[1];
  double *sc = malloc((size_t)(T * T) * sizeof *sc);
  int32_t *ord = malloc((size_t)T * sizeof *ord);
  for (int64_t b = 0; b < B; b++) {
    for (int64_t t = 0; t < T; t++)
      for (int64_t s = 0; s <= t; s++) sc[t * T + s] = ref_index_score(qi, ki, w, scale, b, t, s);
    for (int64_t t = 0; t < T; t++) {
      const double *row = sc + t * T;
      for (int64_t s = 0; s <= t; s++) ord[s] = (int32_t)s;
      for (int64_t i = 1; i <= t; i++) /* insertion sort, best first */
        for (int64_t j = i; j > 0; j--) {
          int32_t x = ord[j], y = ord[j - 1];
          int better = row[x] > row[y] || (row[x] == row[y] && x > y);
          if (!better) break;
          ord[j] = y, ord[j - 1] = x;
        }
      for (int64_t i = 0; i < topk; i++) out[(b * T + t) * topk + i] = i <= t ? ord[i] : -1;
    }
  }
  free(sc);
  free(ord);
}

/* Sparse attention o [B,T,HQ,Dv] over idx [B,T,K] (-1 skipped; an empty row gives 0). */
static inline void ref_attention(const at_tensor *q, const at_tensor *k, const at_tensor *v,
                                 const int32_t *idx, int64_t K, double scale, double *o) {
  int64_t B = q->shape[0], T = q->shape[1], HQ = q->shape[2], D = q->shape[3];
  int64_t H = k->shape[2], Dv = v->shape[3], G = HQ / H;
  double *s = malloc((size_t)K * sizeof *s);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t hq = 0; hq < HQ; hq++) {
        int64_t h = hq / G;
        const int32_t *row = idx + (b * T + t) * K;
        double m = -INFINITY, z = 0;
        for (int64_t i = 0; i < K; i++) {
          if (row[i] < 0) continue;
          double x = 0;
          for (int64_t e = 0; e < D; e++)
            x += (double)q->data[((b * T + t) * HQ + hq) * D + e] *
                 (double)k->data[((b * T + row[i]) * H + h) * D + e];
          s[i] = scale * x;
          m = fmax(m, s[i]);
        }
        for (int64_t i = 0; i < K; i++)
          if (row[i] >= 0) z += exp(s[i] - m);
        double *ov = o + ((b * T + t) * HQ + hq) * Dv;
        for (int64_t e = 0; e < Dv; e++) ov[e] = 0;
        for (int64_t i = 0; i < K; i++) {
          if (row[i] < 0) continue;
          double p = exp(s[i] - m) / z;
          for (int64_t e = 0; e < Dv; e++)
            ov[e] += p * (double)v->data[((b * T + row[i]) * H + h) * Dv + e];
        }
      }
  free(s);
}

/* Teacher of row (b,t) over the keys marked in `in` [T]: p[s] = 1/HQ sum_hq
 * softmax over marked s of scale q[t,hq].k[s,h]; unmarked p = 0. */
static inline void ref_teacher(const at_tensor *q, const at_tensor *k, double scale, int64_t b,
                               int64_t t, const int *in, double *p) {
  int64_t T = q->shape[1], HQ = q->shape[2], D = q->shape[3], H = k->shape[2], G = HQ / H;
  for (int64_t s = 0; s < T; s++) p[s] = 0;
  double *l = malloc((size_t)T * sizeof *l);
  for (int64_t hq = 0; hq < HQ; hq++) {
    double m = -INFINITY, z = 0;
    for (int64_t s = 0; s < T; s++) {
      if (!in[s]) continue;
      double x = 0;
      for (int64_t e = 0; e < D; e++)
        x += (double)q->data[((b * T + t) * HQ + hq) * D + e] *
             (double)k->data[((b * T + s) * H + hq / G) * D + e];
      l[s] = scale * x;
      m = fmax(m, l[s]);
    }
    for (int64_t s = 0; s < T; s++)
      if (in[s]) z += exp(l[s] - m);
    for (int64_t s = 0; s < T; s++)
      if (in[s]) p[s] += exp(l[s] - m) / z / (double)HQ;
  }
  free(l);
}

/* Student softmax(I[t, marked]) of row (b,t). */
static inline void ref_student(const at_tensor *qi, const at_tensor *ki, const at_tensor *w,
                               double scale_idx, int64_t b, int64_t t, const int *in, double *pi) {
  int64_t T = qi->shape[1];
  double m = -INFINITY, z = 0;
  for (int64_t s = 0; s < T; s++)
    if (in[s]) pi[s] = ref_index_score(qi, ki, w, scale_idx, b, t, s), m = fmax(m, pi[s]);
  for (int64_t s = 0; s < T; s++)
    if (in[s]) z += exp(pi[s] - m);
  for (int64_t s = 0; s < T; s++) pi[s] = in[s] ? exp(pi[s] - m) / z : 0;
}

/* The key set L_t as marks: 0..t (sparse = 0) or the valid entries of idx. */
static inline void ref_keyset(int64_t T, int64_t t, int sparse, const int32_t *row, int64_t K,
                              int *in) {
  for (int64_t s = 0; s < T; s++) in[s] = !sparse && s <= t;
  if (sparse)
    for (int64_t i = 0; i < K; i++)
      if (row[i] >= 0) in[row[i]] = 1;
}

/* A random causal selection [B,T,K]: every row holds key 0 and its own key t
 * (so many rows share keys: duplicates in the scatter-add) plus random
 * earlier keys, with a -1 hole in some rows and rows with fewer than K keys. */
static inline void random_selection(int64_t B, int64_t T, int64_t K, uint64_t seed, int32_t *idx) {
  at_rng r = at_rng_make(seed, 31);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      int32_t *row = idx + (b * T + t) * K;
      for (int64_t i = 0; i < K; i++) row[i] = -1;
      int64_t n = 0;
      row[n++] = (int32_t)t;
      if (t > 0 && n < K) row[n++] = 0;
      int64_t want = AT_MIN(K, t + 1) - (t % 3 == 2 ? 1 : 0); /* some rows keep a hole */
      for (int guard = 0; n < want && guard < 1000; guard++) {
        int32_t s = (int32_t)at_rng_below(&r, (uint64_t)t + 1);
        int dup = 0;
        for (int64_t i = 0; i < n; i++) dup |= row[i] == s;
        if (!dup) row[n++] = s;
      }
      /* shuffle so -1 holes and keys are interleaved */
      for (int64_t i = K - 1; i > 0; i--) {
        int64_t j = (int64_t)at_rng_below(&r, (uint64_t)i + 1);
        int32_t x = row[i];
        row[i] = row[j], row[j] = x;
      }
    }
}

/* Output and input gradients of f(in) under a fixed random output gradient:
 * for holding a fused op against its naive reference. The inputs' grads are
 * reset first; returns the output (its data stays in the arena). */
typedef at_tensor *(*dsa_build_fn)(at_ctx *c, at_tensor **in, void *user);
static inline at_tensor *run_with_grads(at_ctx *c, dsa_build_fn f, at_tensor **in, int n,
                                        void *user, real **grads) {
  for (int i = 0; i < n; i++) in[i]->grad = NULL;
  at_ctx_mark m = at_ctx_get_mark(c);
  at_tensor *out = f(c, in, user);
  if (!out) return NULL;
  at_rng g = at_rng_make(4242, 1);
  real *seed = at_grad(c, out);
  for (int64_t i = 0; i < out->size; i++) seed[i] = (real)(2 * at_rng_uniform(&g) - 1);
  if (at_backward_from_seeded(c) != AT_OK) return NULL;
  for (int i = 0; i < n; i++) {
    grads[i] = malloc((size_t)in[i]->size * sizeof(real));
    if (in[i]->grad)
      memcpy(grads[i], in[i]->grad, (size_t)in[i]->size * sizeof(real));
    else
      memset(grads[i], 0, (size_t)in[i]->size * sizeof(real));
    in[i]->grad = NULL;
  }
  c->n_nodes = m.n_nodes; /* drop the tape, keep the values */
  return out;
}

typedef struct {
  const at_itensor *idx;
  double scale;
  at_dsa_loss_opts lo;
  at_tensor *q, *k; /* the loss's constants */
} fvn_user;

static inline at_tensor *fvn_attn_fused(at_ctx *c, at_tensor **in, void *u) {
  fvn_user *s = u;
  return at_dsa_attention(c, in[0], in[1], in[2], s->idx, s->scale);
}
static inline at_tensor *fvn_attn_naive(at_ctx *c, at_tensor **in, void *u) {
  fvn_user *s = u;
  return at_dsa_attention_naive(c, in[0], in[1], in[2], s->idx, s->scale);
}
static inline at_tensor *fvn_loss_fused(at_ctx *c, at_tensor **in, void *u) {
  fvn_user *s = u;
  return at_dsa_indexer_loss(c, in[0], in[1], in[2], s->q, s->k, s->idx, &s->lo, NULL);
}
static inline at_tensor *fvn_loss_naive(at_ctx *c, at_tensor **in, void *u) {
  fvn_user *s = u;
  return at_dsa_indexer_loss_naive(c, in[0], in[1], in[2], s->q, s->k, s->idx, &s->lo);
}

/* Fused vs naive (attention and loss, both stages) on one random case:
 * relative errors of outputs below tol_o and of gradients below tol_g. */
static inline void check_fused_vs_naive(at_ctx *c, uint64_t seed, double tol_o, double tol_g) {
  int64_t B = 2, T = 19, HQ = 6, H = 2, D = 5, Dv = 3, HI = 3, DI = 4, K = 6;
  at_tensor *x[] = {at_test_randn(c, seed, 1, AT_SHAPE(B, T, HQ, D)),
                    at_test_randn(c, seed + 1, 1, AT_SHAPE(B, T, H, D)),
                    at_test_randn(c, seed + 2, 1, AT_SHAPE(B, T, H, Dv))};
  at_tensor *xi[] = {at_test_randn(c, seed + 3, 1, AT_SHAPE(B, T, HI, DI)),
                     at_test_randn(c, seed + 4, 1, AT_SHAPE(B, T, DI)),
                     at_test_randn(c, seed + 5, 1, AT_SHAPE(B, T, HI))};
  int32_t *sel = malloc((size_t)(B * T * K) * sizeof *sel);
  random_selection(B, T, K, seed, sel);
  for (int64_t i = 0; i < K; i++) sel[(0 * T + 7) * K + i] = -1; /* one empty row */
  at_itensor *idx = at_inew(c, AT_SHAPE(B, T, K));
  memcpy(idx->data, sel, (size_t)idx->size * sizeof *sel);
  fvn_user u = {idx, 0, {0, 0, 0}, x[0], x[1]};
  real *gf[3], *gn[3];
  at_tensor *of = run_with_grads(c, fvn_attn_fused, x, 3, &u, gf);
  at_tensor *on = run_with_grads(c, fvn_attn_naive, x, 3, &u, gn);
  cr_assert(of && on, "%s", at_errmsg());
  AT_EXPECT_CLOSE(of->data, on->data, of->size, tol_o, "attention: fused vs naive o");
  const char *names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; i++) {
    AT_EXPECT_CLOSE(gf[i], gn[i], x[i]->size, tol_g, names[i]);
    free(gf[i]), free(gn[i]);
  }
  /* the loss, on the indexer's own selection (every row has a key) */
  u.idx = at_dsa_topk(c, xi[0], xi[1], xi[2], K, 0);
  for (int sparse = 0; sparse < 2; sparse++) {
    u.lo.sparse = sparse;
    at_tensor *lf = run_with_grads(c, fvn_loss_fused, xi, 3, &u, gf);
    at_tensor *ln = run_with_grads(c, fvn_loss_naive, xi, 3, &u, gn);
    cr_assert(lf && ln, "%s", at_errmsg());
    cr_expect(fabs((double)lf->data[0] - (double)ln->data[0]) <= tol_o * fabs((double)ln->data[0]),
              "loss stage %d: fused %.9g vs naive %.9g", sparse, (double)lf->data[0],
              (double)ln->data[0]);
    const char *ln_names[] = {"dq_idx", "dk_idx", "dw_idx"};
    for (int i = 0; i < 3; i++) {
      AT_EXPECT_CLOSE(gf[i], gn[i], xi[i]->size, tol_g, ln_names[i]);
      free(gf[i]), free(gn[i]);
    }
  }
  free(sel);
}

#endif
