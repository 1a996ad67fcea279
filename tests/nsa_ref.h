/* tests/nsa_ref.h: plain-loop references of NSA's selection and of the
 * selected-blocks attention (the definitions of ops/attention/nsa.h written
 * out token by token), shared by test_nsa.c and test_nsa_d.c. */
#ifndef AT_TEST_NSA_REF_H
#define AT_TEST_NSA_REF_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/attention/nsa.h"

typedef struct ref_cand {
  int64_t j;
  int prio;
  double score;
} ref_cand;

static int ref_cand_cmp(const void *a, const void *b) {
  const ref_cand *x = a, *y = b;
  if (x->prio != y->prio) return y->prio - x->prio;
  if (x->score != y->score) return x->score < y->score ? 1 : -1;
  return x->j < y->j ? -1 : 1;
}

/* Brute force: per query t and kv head, the compressed mass of every token u
 * of every selection block (each compression block covering u adds its
 * probability, summed over the group's heads), the candidates 0 .. t / l'
 * sorted by (forced rank, score, index), the first n kept. p [B, H, G T, C]
 * (NULL: all 0); out [B, H, T, n]. */
static inline void ref_select(const at_tensor *p, int64_t B, int64_t H, int64_t G, int64_t T,
                              const at_nsa_blocks *o, int32_t *out) {
  int64_t C = p ? p->shape[3] : 0, ls = o->sel_block, n = o->n_select;
  ref_cand *cd = malloc((size_t)(T / ls + 1) * sizeof *cd);
  for (int64_t bh = 0; bh < B * H; bh++)
    for (int64_t t = 0; t < T; t++) {
      int64_t jt = t / ls;
      for (int64_t j = 0; j <= jt; j++) {
        double s = 0;
        for (int64_t u = j * ls; u < (j + 1) * ls; u++)
          for (int64_t i = 0; i < C; i++)
            if (i * o->cmp_stride <= u && u < i * o->cmp_stride + o->cmp_block)
              for (int64_t g = 0; g < G; g++) s += (double)p->data[(bh * G * T + g * T + t) * C + i];
        int prio = j == jt && o->n_local > 0 ? 3 : j == 0 ? 2 : (j < jt && jt - j < o->n_local ? 1 : 0);
        cd[j] = (ref_cand){j, prio, s};
      }
      qsort(cd, (size_t)(jt + 1), sizeof *cd, ref_cand_cmp);
      for (int64_t r = 0; r < n; r++) out[(bh * T + t) * n + r] = r <= jt ? (int32_t)cd[r].j : -1;
    }
  free(cd);
}

/* Softmax attention of query (b, t, hq) over the tokens u <= t of the
 * blocks sel[b, hq / G, t, :] (block size ls): o [B, T, HQ, D] of q, k, v. */
static inline void ref_selected_attention(const at_tensor *q, const at_tensor *k, const at_tensor *v,
                                          const at_itensor *sel, int64_t ls, double *o) {
  int64_t B = q->shape[0], T = q->shape[1], HQ = q->shape[2], D = q->shape[3], H = k->shape[2];
  int64_t G = HQ / H, n = sel->shape[3];
  double *w = malloc((size_t)T * sizeof *w);
  unsigned char *vis = malloc((size_t)T);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t hq = 0; hq < HQ; hq++) {
        int64_t h = hq / G;
        memset(vis, 0, (size_t)T);
        for (int64_t r = 0; r < n; r++) {
          int32_t j = sel->data[((b * H + h) * T + t) * n + r];
          for (int64_t u = j * ls; j >= 0 && u < (j + 1) * ls && u <= t; u++) vis[u] = 1;
        }
        double mx = -INFINITY, z = 0;
        for (int64_t u = 0; u <= t; u++) {
          if (!vis[u]) continue;
          double s = 0;
          for (int64_t e = 0; e < D; e++)
            s += (double)q->data[((b * T + t) * HQ + hq) * D + e] * (double)k->data[((b * T + u) * H + h) * D + e];
          w[u] = s / sqrt((double)D);
          mx = fmax(mx, w[u]);
        }
        for (int64_t u = 0; u <= t; u++)
          if (vis[u]) z += (w[u] = exp(w[u] - mx));
        double *dst = o + ((b * T + t) * HQ + hq) * D;
        for (int64_t e = 0; e < D; e++) {
          double a = 0;
          for (int64_t u = 0; u <= t; u++)
            if (vis[u]) a += w[u] / z * (double)v->data[((b * T + u) * H + h) * D + e];
          dst[e] = z > 0 ? a : 0;
        }
      }
  free(w);
  free(vis);
}

#endif
