/* tests/dsa_ref.h: plain-loop double references of the DSA ops for the tests
 * (the definitions written out directly, T x T where convenient), and
 * helpers to build selections. Included by test_dsa_d.c and test_dsa.c. */
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

#endif
