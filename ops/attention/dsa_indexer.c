/* ops/attention/dsa_indexer.c: DSA's lightning indexer and top-k selection.
 *
 *   I[t,s] = sum_j w[t,j] ReLU(scale q_idx[t,j] . k_idx[s])      0 <= s <= t
 *   S_t    = the min(t+1, topk) keys of highest I[t,:], best first; ties: later key first
 *
 * A task is a tile of AT_DSA_TILE_Q query rows of one batch entry. Its index
 * queries [rows*HI, DI] (contiguous in [B,T,HI,DI]) meet the index keys in
 * tiles of AT_DSA_TILE_K keys through one GEMM; the ReLU-weighted head sum
 * turns each tile into scores that stream into one bounded heap per row.
 * Memory per thread: one GEMM tile and rows*topk heap entries; never T x T.
 * No gradient: the selection is an integer output (the indexer learns from
 * at_dsa_indexer_loss).
 */
#include <string.h>

#include "ops/attention/dsa_impl.h"

typedef struct cand {
  double s;
  int32_t i;
} cand;

/* a ranks below b: lower score, or the same score and an earlier key. */
static inline int worse(cand a, cand b) { return a.s < b.s || (a.s == b.s && a.i < b.i); }

/* A min-heap by `worse` (its root is the weakest candidate kept). */
static void sift_down(cand *h, int64_t n, int64_t i) {
  for (;;) {
    int64_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && worse(h[l], h[m])) m = l;
    if (r < n && worse(h[r], h[m])) m = r;
    if (m == i) return;
    cand t = h[i];
    h[i] = h[m], h[m] = t;
    i = m;
  }
}

static void heap_offer(cand *h, int64_t *n, int64_t cap, cand x) {
  if (*n < cap) {
    int64_t i = (*n)++;
    h[i] = x;
    while (i > 0 && worse(h[i], h[(i - 1) / 2])) {
      cand t = h[i];
      h[i] = h[(i - 1) / 2], h[(i - 1) / 2] = t;
      i = (i - 1) / 2;
    }
  } else if (worse(h[0], x)) {
    h[0] = x;
    sift_down(h, *n, 0);
  }
}

/* Heap sort: the weakest goes last, so the array ends best first. */
static void heap_sort_best_first(cand *h, int64_t n) {
  for (int64_t m = n - 1; m > 0; m--) {
    cand t = h[0];
    h[0] = h[m], h[m] = t;
    sift_down(h, m, 0);
  }
}

typedef struct ix_dims {
  int64_t HI, DI, topk, cap; /* cap = heap capacity = min(topk, keys) */
  double scale;
} ix_dims;

typedef struct ix_scratch {
  real *a;      /* [TILE_Q * HI, TILE_K] */
  cand *heap;   /* [TILE_Q, cap] */
  int64_t *n;   /* [TILE_Q] */
} ix_scratch;

/* Selection of nq consecutive query rows at positions pos0 .. pos0+nq-1 of
 * one batch entry: qi [nq,HI,DI], w [nq,HI] or NULL, kb the entry's index
 * keys ([*,DI], keys 0 .. pos0+nq-1 are read), out [nq, topk]. */
static void select_tile(const ix_dims *d, const real *qi, const real *w, const real *kb,
                        int64_t pos0, int64_t nq, ix_scratch *s, int32_t *out) {
  const int64_t TK = AT_DSA_TILE_K, HI = d->HI;
  for (int64_t r = 0; r < nq; r++) s->n[r] = 0;
  int64_t n_keys = pos0 + nq;
  for (int64_t s0 = 0; s0 < n_keys; s0 += TK) {
    int64_t nk = AT_MIN(TK, n_keys - s0);
    /* a[(r,j), s] = scale q_idx[r,j] . k_idx[s0+s] */
    at_gemm_strided(AT_N, AT_T, nq * HI, nk, d->DI, (real)d->scale, qi, d->DI, 1,
                    kb + s0 * d->DI, d->DI, 1, 0, s->a, TK, 1, 1);
    for (int64_t r = 0; r < nq; r++) {
      int64_t t = pos0 + r, last = AT_MIN(nk, t - s0 + 1); /* causal: keys s <= t */
      const real *wr = w ? w + r * HI : NULL;
      cand *h = s->heap + r * d->cap;
      for (int64_t i = 0; i < last; i++) {
        double sc = 0;
        for (int64_t j = 0; j < HI; j++) {
          real x = s->a[(r * HI + j) * TK + i];
          if (x > 0) sc += (wr ? (double)wr[j] : 1.0) * (double)x;
        }
        cand c = {sc, (int32_t)(s0 + i)};
        heap_offer(h, &s->n[r], d->cap, c);
      }
    }
  }
  for (int64_t r = 0; r < nq; r++) {
    cand *h = s->heap + r * d->cap;
    heap_sort_best_first(h, s->n[r]);
    int32_t *o = out + r * d->topk;
    for (int64_t i = 0; i < d->topk; i++) o[i] = i < s->n[r] ? h[i].i : -1;
  }
}

static int ix_scratch_init(at_ctx *c, ix_scratch *s, const ix_dims *d) {
  s->a = at_scratch(c, (size_t)(AT_DSA_TILE_Q * d->HI * AT_DSA_TILE_K) * sizeof(real));
  s->heap = at_scratch(c, (size_t)(AT_DSA_TILE_Q * d->cap) * sizeof(cand));
  s->n = at_scratch(c, (size_t)AT_DSA_TILE_Q * sizeof(int64_t));
  return s->a && s->heap && s->n;
}

/* Checks q_idx [B,T,HI,DI], k_idx [B,S,DI], w [B,T,HI]; S = T unless decode
 * (then T = 1 and S is the cache length). */
static int ix_shapes(at_ctx *c, const char *op, const at_tensor *qi, const at_tensor *ki,
                     const at_tensor *w, int64_t topk, double scale, int decode, ix_dims *d) {
  char sq[96], sk[96], sw[96] = "none";
  int ok = qi->ndim == 4 && ki->ndim == 3 && qi->shape[0] == ki->shape[0] &&
           qi->shape[3] == ki->shape[2] && qi->shape[2] > 0 && qi->shape[3] > 0 &&
           (decode ? qi->shape[1] == 1 : qi->shape[1] == ki->shape[1]);
  if (w) {
    AT_SHAPE_STR(w, sw);
    ok = ok && w->ndim == 3 && w->shape[0] == qi->shape[0] && w->shape[1] == qi->shape[1] &&
         w->shape[2] == qi->shape[2];
  }
  if (!ok) {
    at_fail(c, AT_E_SHAPE,
            "%s: q_idx %s, k_idx %s, w_idx %s do not fit (want q_idx [B,%s,HI,DI], "
            "k_idx [B,%s,DI], w_idx [B,%s,HI])",
            op, AT_SHAPE_STR(qi, sq), AT_SHAPE_STR(ki, sk), sw, decode ? "1" : "T",
            decode ? "S" : "T", decode ? "1" : "T");
    return 0;
  }
  if (topk < 1 || topk > INT32_MAX) {
    at_fail(c, AT_E_ARG, "%s: topk %lld must be >= 1", op, (long long)topk);
    return 0;
  }
  if (!isfinite(scale) || scale < 0) {
    at_fail(c, AT_E_ARG, "%s: scale_idx %g must be finite and >= 0 (0: DI^-1/2)", op, scale);
    return 0;
  }
  d->HI = qi->shape[2], d->DI = qi->shape[3], d->topk = topk;
  d->scale = scale > 0 ? scale : 1.0 / sqrt((double)d->DI);
  return 1;
}

at_itensor *at_dsa_topk(at_ctx *c, const at_tensor *q_idx, const at_tensor *k_idx,
                        const at_tensor *w_idx, int64_t topk, double scale_idx) {
  if (!q_idx || !k_idx) return NULL;
  ix_dims d;
  if (!ix_shapes(c, "dsa_topk", q_idx, k_idx, w_idx, topk, scale_idx, 0, &d)) return NULL;
  int64_t B = q_idx->shape[0], T = q_idx->shape[1];
  d.cap = AT_MIN(topk, T);
  at_itensor *out = at_inew(c, AT_SHAPE(B, T, topk));
  if (!out) return NULL;
  int nt = dsa_threads();
  ix_scratch *scr = at_scratch(c, (size_t)nt * sizeof *scr);
  if (!scr) return NULL;
  for (int i = 0; i < nt; i++)
    if (!ix_scratch_init(c, &scr[i], &d)) return NULL;
  const int64_t TQ = AT_DSA_TILE_Q, tiles = (T + TQ - 1) / TQ;
  /* later tiles see more keys: hand them out first, dynamically */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t task = 0; task < B * tiles; task++) {
    int64_t b = task % B, tile = tiles - 1 - task / B, t0 = tile * TQ;
    int64_t nq = AT_MIN(TQ, T - t0);
    select_tile(&d, q_idx->data + (b * T + t0) * d.HI * d.DI,
                w_idx ? w_idx->data + (b * T + t0) * d.HI : NULL, k_idx->data + b * T * d.DI,
                t0, nq, &scr[omp_get_thread_num()], out->data + (b * T + t0) * topk);
  }
  return out;
}

at_itensor *at_dsa_topk_decode(at_ctx *c, const at_tensor *q_idx, const at_tensor *k_idx_cache,
                               const at_tensor *w_idx, int64_t len, int64_t topk,
                               double scale_idx) {
  if (!q_idx || !k_idx_cache) return NULL;
  ix_dims d;
  if (!ix_shapes(c, "dsa_topk_decode", q_idx, k_idx_cache, w_idx, topk, scale_idx, 1, &d))
    return NULL;
  int64_t B = q_idx->shape[0], S = k_idx_cache->shape[1];
  if (len < 1 || len > S)
    return at_fail(c, AT_E_ARG, "dsa_topk_decode: len %lld outside 1..%lld (cache slots)",
                   (long long)len, (long long)S);
  d.cap = AT_MIN(topk, len);
  at_itensor *out = at_inew(c, AT_SHAPE(B, 1, topk));
  ix_scratch scr;
  if (!out || !ix_scratch_init(c, &scr, &d)) return NULL;
  for (int64_t b = 0; b < B; b++)
    select_tile(&d, q_idx->data + b * d.HI * d.DI, w_idx ? w_idx->data + b * d.HI : NULL,
                k_idx_cache->data + b * S * d.DI, len - 1, 1, &scr, out->data + b * topk);
  return out;
}
