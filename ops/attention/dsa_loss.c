/* ops/attention/dsa_loss.c: the lightning indexer's training loss
 * (DeepSeek-V3.2-Exp Eq. 3 and 4; Megatron's compute_dsa_indexer_loss).
 *
 *   L      = 1/(B T) sum_{b,t} KL_t,   KL_t = sum_{s in L_t} p_t[s] (log p_t[s] - log pi_t[s])
 *   pi_t   = softmax_{s in L_t} I[t,s],   I[t,s] = sum_j w[t,j] ReLU(a[t,j,s]),
 *            a[t,j,s] = scale_idx q_idx[t,j] . k_idx[s]
 *   p_t[s] = 1/HQ sum_hq softmax_{s in L_t}(scale q[t,hq] . k[s,h])    (a constant)
 *   L_t    = {0..t} (dense stage) or S_t (sparse stage)
 *
 *   dL/dI[t,s]         = (pi_t[s] - p_t[s]) / (B T) =: g[t,s]          s in L_t
 *   dL/dw[t,j]         = sum_s g[t,s] ReLU(a[t,j,s])
 *   dL/dq_idx[t,j]     = scale_idx w[t,j] sum_s g[t,s] [a[t,j,s] > 0] k_idx[s]
 *   dL/dk_idx[s]       = scale_idx sum_{t: s in L_t} sum_j g[t,s] w[t,j] [a[t,j,s] > 0] q_idx[t,j]
 *
 * Forward and the dq_idx/dw backward run over query rows (one row's scores
 * and probabilities in O(T) per-thread buffers); dk_idx runs over keys (the
 * rows that see key s: s..T-1, or the transposed selection), recomputing
 * each pair from the saved log-sum-exps: no T x T buffer, no atomics.
 */
#include <string.h>

#include "ops/attention/dsa_impl.h"

typedef struct kl_dims {
  int64_t B, T, HI, DI, HQ, H, G, D, K;
  int sparse;
  double scale, scale_idx;
} kl_dims;

typedef struct kl_saved {
  kl_dims d;
  const real *q, *k; /* the main q and k (constants; must outlive backward, like any input) */
  int32_t *idx;      /* sparse stage: [B,T,K] copy; else NULL */
  double *lse_i;     /* [B,T]: log-sum-exp of I over L_t */
  double *lse_m;     /* [B,T,HQ]: per-head log-sum-exp of the main logits over L_t */
} kl_saved;

typedef struct kl_scratch {
  int32_t *keys;       /* T */
  real *a;             /* HI * T */
  double *I, *p, *l;   /* T each */
  double *acc;         /* DI */
  double *lse_all;     /* HQ */
} kl_scratch;

static kl_scratch *kl_scratch_new(at_ctx *c, int nt, const kl_dims *d) {
  kl_scratch *s = at_scratch(c, (size_t)nt * sizeof *s);
  if (!s) return NULL;
  for (int i = 0; i < nt; i++) {
    s[i].keys = at_scratch(c, (size_t)d->T * sizeof(int32_t));
    s[i].a = at_scratch(c, (size_t)(d->HI * d->T) * sizeof(real));
    s[i].I = at_scratch(c, (size_t)(3 * d->T) * sizeof(double));
    s[i].acc = at_scratch(c, (size_t)d->DI * sizeof(double));
    s[i].lse_all = at_scratch(c, (size_t)d->HQ * sizeof(double));
    if (!s[i].keys || !s[i].a || !s[i].I || !s[i].acc || !s[i].lse_all) return NULL;
    s[i].p = s[i].I + d->T;
    s[i].l = s[i].p + d->T;
  }
  return s;
}

/* L_t of row r = b*T + t into keys; returns its size. */
static int64_t kl_row_keys(const kl_dims *d, const int32_t *idx, int64_t r, int32_t *keys) {
  if (!d->sparse) {
    int64_t t = r % d->T;
    for (int64_t i = 0; i <= t; i++) keys[i] = (int32_t)i;
    return t + 1;
  }
  return dsa_row_keys(idx + r * d->K, d->K, keys);
}

/* The teacher p[i] over keys[0..n-1] of row r. With lse_in NULL the per-head
 * log-sum-exps are computed and stored in lse_out; else they are taken from
 * lse_in (backward). l: n doubles of scratch. */
static void kl_row_teacher(const kl_dims *d, const real *q, const real *k, int64_t r,
                           const int32_t *keys, int64_t n, const double *lse_in,
                           double *lse_out, double *p, double *l) {
  const real *kb = k + (r / d->T) * d->T * d->H * d->D;
  for (int64_t i = 0; i < n; i++) p[i] = 0;
  for (int64_t hq = 0; hq < d->HQ; hq++) {
    const real *qv = q + (r * d->HQ + hq) * d->D;
    int64_t h = hq / d->G;
    for (int64_t i = 0; i < n; i++)
      l[i] = d->scale * (double)dsa_dot(qv, kb + ((int64_t)keys[i] * d->H + h) * d->D, d->D);
    double lse = lse_in ? lse_in[hq] : dsa_logsumexp(l, n);
    if (!lse_in) lse_out[hq] = lse;
    for (int64_t i = 0; i < n; i++) p[i] += exp(l[i] - lse);
  }
  for (int64_t i = 0; i < n; i++) p[i] /= (double)d->HQ;
}

/* ---- backward ----------------------------------------------------------------- */

static void kl_backward(at_ctx *c, at_node *nd) {
  at_tensor *qi = nd->in[0], *ki = nd->in[1], *w = nd->in[2], *out = nd->out[0];
  const kl_saved *sv = nd->saved;
  const kl_dims d = sv->d;
  real *dqi = at_grad(c, qi), *dki = at_grad(c, ki), *dw = at_grad(c, w);
  if (!dqi && !dki && !dw) return;
  const int64_t rows = d.B * d.T, HI = d.HI, DI = d.DI;
  const double coef = (double)out->grad[0] / (double)rows;
  const real *wd = w ? w->data : NULL;
  int nt = dsa_threads();
  kl_scratch *scr = kl_scratch_new(c, nt, &d);
  if (!scr) return;

  if (dqi || dw) { /* pass over query rows */
#pragma omp parallel for schedule(dynamic, 8) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) {
      kl_scratch *s = &scr[omp_get_thread_num()];
      int64_t n = kl_row_keys(&d, sv->idx, r, s->keys);
      if (n == 0) continue;
      const real *kib = ki->data + (r / d.T) * d.T * DI, *wr = wd ? wd + r * HI : NULL;
      dsa_index_scores_row(qi->data + r * HI * DI, kib, wr, HI, DI, d.scale_idx, s->keys, n,
                           s->a, s->I);
      kl_row_teacher(&d, sv->q, sv->k, r, s->keys, n, sv->lse_m + r * d.HQ, NULL, s->p, s->l);
      double *g = s->I; /* g overwrites I */
      for (int64_t i = 0; i < n; i++) g[i] = coef * (exp(s->I[i] - sv->lse_i[r]) - s->p[i]);
      for (int64_t j = 0; j < HI; j++) {
        const real *aj = s->a + j * n;
        if (dw) {
          double sum = 0;
          for (int64_t i = 0; i < n; i++)
            if (aj[i] > 0) sum += g[i] * (double)aj[i];
          dw[r * HI + j] += (real)sum;
        }
        if (dqi) {
          memset(s->acc, 0, (size_t)DI * sizeof *s->acc);
          for (int64_t i = 0; i < n; i++)
            if (aj[i] > 0) dsa_axpy_d(s->acc, g[i], kib + (int64_t)s->keys[i] * DI, DI);
          double f = d.scale_idx * (wr ? (double)wr[j] : 1.0);
          real *o = dqi + (r * HI + j) * DI;
          for (int64_t e = 0; e < DI; e++) o[e] += (real)(f * s->acc[e]);
        }
      }
    }
  }

  if (dki) { /* pass over keys */
    at_dsa_csr csr = {NULL, NULL};
    if (d.sparse && !at_dsa_transpose(c, sv->idx, d.B, d.T, d.K, &csr)) return;
#pragma omp parallel for schedule(dynamic, 8) num_threads(nt)
    for (int64_t ks = 0; ks < rows; ks++) {
      kl_scratch *sc = &scr[omp_get_thread_num()];
      int64_t b = ks / d.T, s = ks % d.T;
      /* the rows that see key s: t = s..T-1, or those that selected it */
      int64_t m0 = d.sparse ? csr.off[ks] : s, m1 = d.sparse ? csr.off[ks + 1] : d.T;
      if (m0 == m1) continue;
      const real *kk = ki->data + ks * DI, *kb = sv->k + b * d.T * d.H * d.D;
      real *a = sc->a; /* HI values */
      memset(sc->acc, 0, (size_t)DI * sizeof *sc->acc);
      for (int64_t m = m0; m < m1; m++) {
        int64_t rt = b * d.T + (d.sparse ? csr.row[m] : m);
        const real *qr = qi->data + rt * HI * DI, *wr = wd ? wd + rt * HI : NULL;
        double I = 0;
        for (int64_t j = 0; j < HI; j++) {
          a[j] = (real)d.scale_idx * dsa_dot(qr + j * DI, kk, DI);
          if (a[j] > 0) I += (wr ? (double)wr[j] : 1.0) * (double)a[j];
        }
        double p = 0;
        for (int64_t hq = 0; hq < d.HQ; hq++) {
          const real *kv = kb + (s * d.H + hq / d.G) * d.D;
          double l = d.scale * (double)dsa_dot(sv->q + (rt * d.HQ + hq) * d.D, kv, d.D);
          p += exp(l - sv->lse_m[rt * d.HQ + hq]);
        }
        p /= (double)d.HQ;
        double g = coef * (exp(I - sv->lse_i[rt]) - p);
        for (int64_t j = 0; j < HI; j++)
          if (a[j] > 0) dsa_axpy_d(sc->acc, g * (wr ? (double)wr[j] : 1.0), qr + j * DI, DI);
      }
      real *o = dki + ks * DI;
      for (int64_t e = 0; e < DI; e++) o[e] += (real)(d.scale_idx * sc->acc[e]);
    }
  }
}

/* ---- forward ------------------------------------------------------------------ */

static int kl_shapes(at_ctx *c, const at_tensor *qi, const at_tensor *ki, const at_tensor *w,
                     const at_tensor *q, const at_tensor *k, const at_itensor *idx,
                     const at_dsa_loss_opts *o, kl_dims *d) {
  char s1[96], s2[96], s3[96] = "none", s4[96], s5[96], s6[96] = "none";
  int ok = qi->ndim == 4 && ki->ndim == 3 && q->ndim == 4 && k->ndim == 4;
  if (ok) {
    d->B = qi->shape[0], d->T = qi->shape[1], d->HI = qi->shape[2], d->DI = qi->shape[3];
    d->HQ = q->shape[2], d->D = q->shape[3], d->H = k->shape[2];
    ok = d->HI > 0 && d->DI > 0 && d->D > 0 && d->H > 0 && d->HQ % d->H == 0 &&
         ki->shape[0] == d->B && ki->shape[1] == d->T && ki->shape[2] == d->DI &&
         q->shape[0] == d->B && q->shape[1] == d->T && k->shape[0] == d->B &&
         k->shape[1] == d->T && k->shape[3] == d->D;
  }
  if (w) {
    AT_SHAPE_STR(w, s3);
    ok = ok && w->ndim == 3 && w->shape[0] == qi->shape[0] && w->shape[1] == qi->shape[1] &&
         w->shape[2] == qi->shape[2];
  }
  if (idx) {
    at_shape_str(idx->ndim, idx->shape, s6);
    ok = ok && idx->ndim == 3 && idx->shape[0] == qi->shape[0] && idx->shape[1] == qi->shape[1] &&
         idx->shape[2] > 0;
  }
  if (!ok) {
    at_fail(c, AT_E_SHAPE,
            "dsa_indexer_loss: q_idx %s, k_idx %s, w_idx %s, q %s, k %s, indices %s do not fit "
            "(want [B,T,HI,DI], [B,T,DI], [B,T,HI], [B,T,HQ,D], [B,T,H,D], [B,T,K], HQ %% H == 0)",
            AT_SHAPE_STR(qi, s1), AT_SHAPE_STR(ki, s2), s3, AT_SHAPE_STR(q, s4),
            AT_SHAPE_STR(k, s5), s6);
    return 0;
  }
  if (o->sparse && !idx) {
    at_fail(c, AT_E_ARG, "dsa_indexer_loss: the sparse stage needs the selection (indices)");
    return 0;
  }
  if (!isfinite(o->scale) || o->scale < 0 || !isfinite(o->scale_idx) || o->scale_idx < 0) {
    at_fail(c, AT_E_ARG, "dsa_indexer_loss: scales %g, %g must be finite and >= 0 (0: default)",
            o->scale, o->scale_idx);
    return 0;
  }
  d->G = d->HQ / d->H;
  d->K = idx ? idx->shape[2] : 0;
  d->sparse = o->sparse != 0;
  d->scale = o->scale > 0 ? o->scale : 1.0 / sqrt((double)d->D);
  d->scale_idx = o->scale_idx > 0 ? o->scale_idx : 1.0 / sqrt((double)d->DI);
  return 1;
}

at_tensor *at_dsa_indexer_loss(at_ctx *c, at_tensor *q_idx, at_tensor *k_idx, at_tensor *w_idx,
                               const at_tensor *q, const at_tensor *k, const at_itensor *indices,
                               const at_dsa_loss_opts *o, at_dsa_loss_stats *stats) {
  if (stats) stats->kl = stats->recall = stats->recall_tail = NAN, stats->tail_rows = 0;
  if (!q_idx || !k_idx || !q || !k || !o) return NULL;
  kl_dims d;
  if (!kl_shapes(c, q_idx, k_idx, w_idx, q, k, indices, o, &d)) return NULL;
  if (indices &&
      !at_dsa_check_indices(c, "dsa_indexer_loss", indices->data, d.B, d.T, d.K, 0))
    return NULL;
  const int64_t rows = d.B * d.T, HI = d.HI, DI = d.DI;
  at_tensor *out = at_new(c, AT_SHAPE(1));
  kl_saved *sv = at_scratch(c, sizeof *sv);
  double *kl_row = at_scratch(c, (size_t)(3 * rows) * sizeof(double));
  if (!out || !sv || !kl_row) return NULL;
  double *rec_row = kl_row + rows, *tail_row = rec_row + rows;
  sv->d = d, sv->q = q->data, sv->k = k->data, sv->idx = NULL;
  sv->lse_i = at_scratch(c, (size_t)rows * sizeof(double));
  sv->lse_m = at_scratch(c, (size_t)(rows * d.HQ) * sizeof(double));
  if (!sv->lse_i || !sv->lse_m) return NULL;
  if (d.sparse) {
    sv->idx = at_scratch(c, (size_t)indices->size * sizeof(int32_t));
    if (!sv->idx) return NULL;
    memcpy(sv->idx, indices->data, (size_t)indices->size * sizeof(int32_t));
  }
  const int want_recall = stats && indices;
  int nt = dsa_threads();
  kl_scratch *scr = kl_scratch_new(c, nt, &d);
  if (!scr) return NULL;

#pragma omp parallel for schedule(dynamic, 8) num_threads(nt)
  for (int64_t r = 0; r < rows; r++) {
    kl_scratch *s = &scr[omp_get_thread_num()];
    int64_t t = r % d.T;
    int64_t n = kl_row_keys(&d, sv->idx, r, s->keys);
    double *lse_m = sv->lse_m + r * d.HQ;
    kl_row[r] = 0, rec_row[r] = 0, tail_row[r] = 0;
    if (n == 0) { /* an empty selection: nothing to align, no gradient */
      sv->lse_i[r] = -INFINITY;
      for (int64_t hq = 0; hq < d.HQ; hq++) lse_m[hq] = -INFINITY;
    } else {
      dsa_index_scores_row(q_idx->data + r * HI * DI, k_idx->data + (r / d.T) * d.T * DI,
                           w_idx ? w_idx->data + r * HI : NULL, HI, DI, d.scale_idx, s->keys, n,
                           s->a, s->I);
      double lse_i = sv->lse_i[r] = dsa_logsumexp(s->I, n);
      kl_row_teacher(&d, q->data, k->data, r, s->keys, n, NULL, lse_m, s->p, s->l);
      double kl = 0;
      for (int64_t i = 0; i < n; i++)
        if (s->p[i] > 0) kl += s->p[i] * (log(s->p[i]) - (s->I[i] - lse_i));
      kl_row[r] = kl;
    }
    if (want_recall) {
      const int32_t *sel = indices->data + r * d.K;
      int64_t n_sel = 0;
      for (int64_t i = 0; i < d.K; i++) n_sel += sel[i] >= 0;
      tail_row[r] = n_sel < t + 1;
      if (!d.sparse) { /* p is the dense teacher, indexed by key position */
        double m = 0;
        for (int64_t i = 0; i < d.K; i++)
          if (sel[i] >= 0) m += s->p[sel[i]];
        rec_row[r] = m;
      } else if (n > 0) { /* mass of S_t under dense softmax: exp(lse over S_t - lse over 0..t) */
        for (int64_t i = 0; i <= t; i++) s->keys[i] = (int32_t)i;
        kl_row_teacher(&d, q->data, k->data, r, s->keys, t + 1, NULL, s->lse_all, s->p, s->l);
        double m = 0;
        for (int64_t hq = 0; hq < d.HQ; hq++) m += exp(lse_m[hq] - s->lse_all[hq]);
        rec_row[r] = m / (double)d.HQ;
      }
    }
  }

  double kl = 0, rec = 0, rec_tail = 0;
  int64_t n_tail = 0;
  for (int64_t r = 0; r < rows; r++) { /* fixed order: independent of threads */
    kl += kl_row[r];
    rec += rec_row[r];
    if (tail_row[r] != 0) rec_tail += rec_row[r], n_tail++;
  }
  out->data[0] = (real)(kl / (double)rows);
  if (stats) {
    stats->kl = kl / (double)rows;
    if (want_recall) {
      stats->recall = rec / (double)rows;
      stats->recall_tail = n_tail ? rec_tail / (double)n_tail : NAN;
      stats->tail_rows = n_tail;
    }
  }
  at_tensor *ins[] = {q_idx, k_idx, w_idx}, *outs[] = {out};
  at_node *nd = AT_RECORD(c, "dsa_indexer_loss", kl_backward, ins, outs);
  if (nd) nd->saved = sv;
  return out;
}
