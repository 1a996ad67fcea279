/* ops/attention/dsa.c: DSA's sparse attention over the selected keys, the
 * combined op at_dsa (indexer + attention), the decode step, and the
 * selection checks and transposition shared with the indexer loss.
 *
 *   forward   s_i = scale q . k_{S_i}         (i over the valid slots of row t)
 *             lse = log sum_i exp(s_i),  p_i = exp(s_i - lse),  o = sum_i p_i v_{S_i}
 *   backward  Delta = do . o
 *             dp_i = do . v_{S_i},   ds_i = p_i (dp_i - Delta)
 *             dq      += scale sum_i ds_i k_{S_i}                 (pass over rows)
 *             dk_s    += scale sum_{(t,hq): s in S_t} ds q[t,hq]  (pass over keys)
 *             dv_s    += sum_{(t,hq): s in S_t} p do[t,hq]
 *
 * The pass over keys walks the transposed selection (each key's rows in
 * increasing t) and owns its key's dk/dv rows: the scatter-add is a gather,
 * with no atomics and a fixed order of summation.
 */
#include <string.h>

#include "ops/attention/dsa_impl.h"

/* ---- selection checks and transposition ------------------------------------ */

int at_dsa_check_indices(at_ctx *c, const char *op, const int32_t *idx, int64_t batch,
                         int64_t rows, int64_t k, int64_t pos0) {
  int64_t n_keys = pos0 + rows;
  /* seen[s] == r: key s already appeared in row r of this batch entry */
  int64_t *seen = at_scratch(c, (size_t)n_keys * sizeof *seen);
  if (!seen) return 0;
  for (int64_t b = 0; b < batch; b++) {
    for (int64_t s = 0; s < n_keys; s++) seen[s] = -1;
    for (int64_t r = 0; r < rows; r++) {
      const int32_t *row = idx + (b * rows + r) * k;
      int64_t t = pos0 + r;
      for (int64_t i = 0; i < k; i++) {
        int32_t s = row[i];
        if (s == -1) continue;
        if (s < -1 || s > t) {
          at_fail(c, AT_E_ARG,
                  "%s: indices[%lld,%lld,%lld] = %d is not a causal key of position %lld "
                  "(must be -1 or 0..%lld)",
                  op, (long long)b, (long long)r, (long long)i, (int)s, (long long)t, (long long)t);
          return 0;
        }
        if (seen[s] == r) {
          at_fail(c, AT_E_ARG, "%s: indices[%lld,%lld,:] selects key %d twice", op, (long long)b,
                  (long long)r, (int)s);
          return 0;
        }
        seen[s] = r;
      }
    }
  }
  return 1;
}

int at_dsa_transpose(at_ctx *c, const int32_t *idx, int64_t B, int64_t T, int64_t k,
                     at_dsa_csr *out) {
  int64_t n = B * T;
  int64_t *off = at_scratch_zero(c, (size_t)(n + 1) * sizeof *off);
  int64_t *cur = at_scratch(c, (size_t)n * sizeof *cur);
  if (!off || !cur) return 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < T * k; i++) {
      int32_t s = idx[b * T * k + i];
      if (s >= 0) off[b * T + s + 1]++;
    }
  for (int64_t i = 0; i < n; i++) off[i + 1] += off[i];
  int32_t *row = at_scratch(c, (size_t)(off[n] > 0 ? off[n] : 1) * sizeof *row);
  if (!row) return 0;
  memcpy(cur, off, (size_t)n * sizeof *cur);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) /* increasing t: each key's rows come out sorted */
      for (int64_t i = 0; i < k; i++) {
        int32_t s = idx[(b * T + t) * k + i];
        if (s >= 0) row[cur[b * T + s]++] = (int32_t)t;
      }
  out->off = off;
  out->row = row;
  return 1;
}

/* ---- shapes ------------------------------------------------------------------ */

typedef struct sa_dims {
  int64_t B, T, HQ, H, G, D, Dv, K;
  double scale;
} sa_dims;

/* Checks q [B,T,HQ,D], k [B,S,H,D], v [B,S,H,Dv], indices [B,T,K]. With
 * `decode` T must be 1 and S is the cache length; else S = T. */
static int sa_shapes(at_ctx *c, const char *op, const at_tensor *q, const at_tensor *k,
                     const at_tensor *v, const at_itensor *idx, double scale, int decode,
                     sa_dims *d) {
  char sq[96], sk[96], sv[96], si[96];
  int ok = q->ndim == 4 && k->ndim == 4 && v->ndim == 4 && idx->ndim == 3;
  if (ok) {
    d->B = q->shape[0], d->T = q->shape[1], d->HQ = q->shape[2], d->D = q->shape[3];
    d->H = k->shape[2], d->Dv = v->shape[3], d->K = idx->shape[2];
    ok = k->shape[0] == d->B && v->shape[0] == d->B && k->shape[3] == d->D &&
         v->shape[1] == k->shape[1] && v->shape[2] == d->H && d->H > 0 && d->HQ % d->H == 0 &&
         idx->shape[0] == d->B && idx->shape[1] == d->T && d->K > 0 && d->D > 0 && d->Dv > 0 &&
         (decode ? d->T == 1 : k->shape[1] == d->T);
  }
  if (!ok) {
    at_fail(c, AT_E_SHAPE,
            "%s: q %s, k %s, v %s, indices %s do not fit (want q [B,%s,HQ,D], k [B,%s,H,D], "
            "v [B,%s,H,Dv], indices [B,%s,K], HQ %% H == 0)",
            op, AT_SHAPE_STR(q, sq), AT_SHAPE_STR(k, sk), AT_SHAPE_STR(v, sv),
            at_shape_str(idx->ndim, idx->shape, si), decode ? "1" : "T", decode ? "S" : "T",
            decode ? "S" : "T", decode ? "1" : "T");
    return 0;
  }
  if (!isfinite(scale) || scale < 0) {
    at_fail(c, AT_E_ARG, "%s: scale %g must be finite and >= 0 (0: D^-1/2)", op, scale);
    return 0;
  }
  d->G = d->HQ / d->H;
  d->scale = scale > 0 ? scale : 1.0 / sqrt((double)d->D);
  return 1;
}

/* ---- forward ------------------------------------------------------------------ */

/* One query row, every head: o_row [HQ,Dv], lse_row [HQ] (may be NULL).
 * kb, vb: the keys and values of this batch entry ([*,H,D], [*,H,Dv]).
 * sbuf: n doubles, acc: Dv doubles. */
static void sa_row_forward(const sa_dims *d, const real *q_row, const real *kb, const real *vb,
                           const int32_t *keys, int64_t n, real *o_row, real *lse_row,
                           double *sbuf, double *acc) {
  for (int64_t hq = 0; hq < d->HQ; hq++) {
    int64_t h = hq / d->G;
    const real *qv = q_row + hq * d->D;
    real *ov = o_row + hq * d->Dv;
    if (n == 0) { /* nothing selected: o = 0, and no gradient in backward */
      memset(ov, 0, (size_t)d->Dv * sizeof *ov);
      if (lse_row) lse_row[hq] = -INFINITY;
      continue;
    }
    double m = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
      sbuf[i] = d->scale * (double)dsa_dot(qv, kb + ((int64_t)keys[i] * d->H + h) * d->D, d->D);
      if (sbuf[i] > m) m = sbuf[i];
    }
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (sbuf[i] = exp(sbuf[i] - m));
    memset(acc, 0, (size_t)d->Dv * sizeof *acc);
    for (int64_t i = 0; i < n; i++)
      dsa_axpy_d(acc, sbuf[i] / sum, vb + ((int64_t)keys[i] * d->H + h) * d->Dv, d->Dv);
    for (int64_t j = 0; j < d->Dv; j++) ov[j] = (real)acc[j];
    if (lse_row) lse_row[hq] = (real)(m + log(sum));
  }
}

/* Per-thread scratch of the row kernels. */
typedef struct sa_scratch {
  int32_t *keys; /* K */
  double *sbuf;  /* K */
  double *acc;   /* max(D, Dv) */
} sa_scratch;

static sa_scratch *sa_scratch_new(at_ctx *c, int nt, int64_t K, int64_t width) {
  sa_scratch *s = at_scratch(c, (size_t)nt * sizeof *s);
  if (!s) return NULL;
  for (int i = 0; i < nt; i++) {
    s[i].keys = at_scratch(c, (size_t)K * sizeof(int32_t));
    s[i].sbuf = at_scratch(c, (size_t)K * sizeof(double));
    s[i].acc = at_scratch(c, (size_t)width * sizeof(double));
    if (!s[i].keys || !s[i].sbuf || !s[i].acc) return NULL;
  }
  return s;
}

/* ---- backward ----------------------------------------------------------------- */

typedef struct sa_saved {
  int32_t *idx; /* [B,T,K], a copy */
  real *lse;    /* [B,T,HQ] */
} sa_saved;

static void sa_backward(at_ctx *c, at_node *nd) {
  at_tensor *q = nd->in[0], *k = nd->in[1], *v = nd->in[2], *o = nd->out[0];
  const sa_saved *sv = nd->saved;
  sa_dims d = {nd->i[0], nd->i[1], nd->i[2], nd->i[3], nd->i[4], nd->i[5], nd->i[6], nd->i[7],
               nd->f[0]};
  real *dq = at_grad(c, q), *dk = at_grad(c, k), *dv = at_grad(c, v);
  const real *dO = o->grad;
  if (!dq && !dk && !dv) return;
  int64_t rows = d.B * d.T, w = AT_MAX(d.D, d.Dv);
  int nt = dsa_threads();

  /* Delta[b,t,hq] = do . o */
  real *delta = at_scratch(c, (size_t)(rows * d.HQ) * sizeof *delta);
  sa_scratch *scr = sa_scratch_new(c, nt, d.K, w);
  if (!delta || !scr) return;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t r = 0; r < rows * d.HQ; r++)
    delta[r] = dsa_dot(dO + r * d.Dv, o->data + r * d.Dv, d.Dv);

  if (dq) { /* pass over query rows */
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) {
      sa_scratch *s = &scr[omp_get_thread_num()];
      int64_t b = r / d.T;
      const real *kb = k->data + b * d.T * d.H * d.D, *vb = v->data + b * d.T * d.H * d.Dv;
      int64_t n = dsa_row_keys(sv->idx + r * d.K, d.K, s->keys);
      if (n == 0) continue;
      for (int64_t hq = 0; hq < d.HQ; hq++) {
        int64_t h = hq / d.G, rh = r * d.HQ + hq;
        const real *qv = q->data + rh * d.D, *dov = dO + rh * d.Dv;
        double lse = (double)sv->lse[rh], del = (double)delta[rh];
        memset(s->acc, 0, (size_t)d.D * sizeof *s->acc);
        for (int64_t i = 0; i < n; i++) {
          const real *kk = kb + ((int64_t)s->keys[i] * d.H + h) * d.D;
          const real *vv = vb + ((int64_t)s->keys[i] * d.H + h) * d.Dv;
          double p = exp(d.scale * (double)dsa_dot(qv, kk, d.D) - lse);
          double ds = p * ((double)dsa_dot(dov, vv, d.Dv) - del);
          dsa_axpy_d(s->acc, ds, kk, d.D);
        }
        real *g = dq + rh * d.D;
        for (int64_t j = 0; j < d.D; j++) g[j] += (real)(d.scale * s->acc[j]);
      }
    }
  }

  if (dk || dv) { /* pass over keys, through the transposed selection */
    at_dsa_csr csr;
    if (!at_dsa_transpose(c, sv->idx, d.B, d.T, d.K, &csr)) return;
    double *accs = at_scratch(c, (size_t)nt * (size_t)(d.D + d.Dv) * sizeof *accs);
    if (!accs) return;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
    for (int64_t ks = 0; ks < rows; ks++) {
      int64_t b = ks / d.T, m0 = csr.off[ks], m1 = csr.off[ks + 1];
      if (m0 == m1) continue;
      double *ak = accs + (size_t)omp_get_thread_num() * (size_t)(d.D + d.Dv), *av = ak + d.D;
      for (int64_t h = 0; h < d.H; h++) {
        const real *kk = k->data + (ks * d.H + h) * d.D, *vv = v->data + (ks * d.H + h) * d.Dv;
        memset(ak, 0, (size_t)(d.D + d.Dv) * sizeof *ak);
        for (int64_t m = m0; m < m1; m++) {
          int64_t rt = b * d.T + csr.row[m];
          for (int64_t g = 0; g < d.G; g++) {
            int64_t rh = rt * d.HQ + h * d.G + g;
            const real *qv = q->data + rh * d.D, *dov = dO + rh * d.Dv;
            double p = exp(d.scale * (double)dsa_dot(qv, kk, d.D) - (double)sv->lse[rh]);
            double ds = p * ((double)dsa_dot(dov, vv, d.Dv) - (double)delta[rh]);
            if (dk) dsa_axpy_d(ak, ds, qv, d.D);
            if (dv) dsa_axpy_d(av, p, dov, d.Dv);
          }
        }
        if (dk)
          for (int64_t j = 0; j < d.D; j++) dk[(ks * d.H + h) * d.D + j] += (real)(d.scale * ak[j]);
        if (dv)
          for (int64_t j = 0; j < d.Dv; j++) dv[(ks * d.H + h) * d.Dv + j] += (real)av[j];
      }
    }
  }
}

at_tensor *at_dsa_attention(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                            const at_itensor *indices, double scale) {
  if (!q || !k || !v || !indices) return NULL;
  sa_dims d;
  if (!sa_shapes(c, "dsa_attention", q, k, v, indices, scale, 0, &d)) return NULL;
  if (!at_dsa_check_indices(c, "dsa_attention", indices->data, d.B, d.T, d.K, 0)) return NULL;
  at_tensor *out = at_new(c, AT_SHAPE(d.B, d.T, d.HQ, d.Dv));
  if (!out) return NULL;
  at_tensor *ins[] = {q, k, v}, *outs[] = {out};
  int grad = at_needs_grad(c, 3, ins);
  int64_t rows = d.B * d.T;
  sa_saved *sv = NULL;
  if (grad) {
    sv = at_scratch(c, sizeof *sv);
    if (!sv) return NULL;
    sv->idx = at_scratch(c, (size_t)indices->size * sizeof(int32_t));
    sv->lse = at_scratch(c, (size_t)(rows * d.HQ) * sizeof(real));
    if (!sv->idx || !sv->lse) return NULL;
    memcpy(sv->idx, indices->data, (size_t)indices->size * sizeof(int32_t));
  }
  int nt = dsa_threads();
  sa_scratch *scr = sa_scratch_new(c, nt, d.K, AT_MAX(d.D, d.Dv));
  if (!scr) return NULL;
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
  for (int64_t r = 0; r < rows; r++) {
    sa_scratch *s = &scr[omp_get_thread_num()];
    int64_t b = r / d.T;
    int64_t n = dsa_row_keys(indices->data + r * d.K, d.K, s->keys);
    sa_row_forward(&d, q->data + r * d.HQ * d.D, k->data + b * d.T * d.H * d.D,
                   v->data + b * d.T * d.H * d.Dv, s->keys, n, out->data + r * d.HQ * d.Dv,
                   sv ? sv->lse + r * d.HQ : NULL, s->sbuf, s->acc);
  }
  at_node *nd = AT_RECORD(c, "dsa_attention", sa_backward, ins, outs);
  if (nd) {
    nd->saved = sv;
    nd->i[0] = d.B, nd->i[1] = d.T, nd->i[2] = d.HQ, nd->i[3] = d.H, nd->i[4] = d.G;
    nd->i[5] = d.D, nd->i[6] = d.Dv, nd->i[7] = d.K;
    nd->f[0] = d.scale;
  }
  return out;
}

/* ---- indexer + attention ------------------------------------------------------ */

at_tensor *at_dsa(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, const at_tensor *q_idx,
                  const at_tensor *k_idx, const at_tensor *w_idx, int64_t topk,
                  const at_dsa_opts *o, at_itensor **indices) {
  if (indices) *indices = NULL;
  if (!q || !k || !v || !q_idx || !k_idx) return NULL;
  at_dsa_opts def = {0, 0};
  if (!o) o = &def;
  char sq[96], si[96];
  if (q->ndim != 4 || q_idx->ndim != 4 || q->shape[0] != q_idx->shape[0] ||
      q->shape[1] != q_idx->shape[1])
    return at_fail(c, AT_E_SHAPE, "dsa: q %s and q_idx %s must both be [B,T,*,*]",
                   AT_SHAPE_STR(q, sq), AT_SHAPE_STR(q_idx, si));
  at_itensor *sel = at_dsa_topk(c, q_idx, k_idx, w_idx, topk, o->scale_idx);
  if (!sel) return NULL;
  if (indices) *indices = sel;
  return at_dsa_attention(c, q, k, v, sel, o->scale);
}

/* ---- decode ------------------------------------------------------------------- */

at_tensor *at_dsa_attention_decode(at_ctx *c, const at_tensor *q, const at_tensor *k_cache,
                                   const at_tensor *v_cache, const at_itensor *indices,
                                   int64_t len, double scale) {
  if (!q || !k_cache || !v_cache || !indices) return NULL;
  sa_dims d;
  if (!sa_shapes(c, "dsa_attention_decode", q, k_cache, v_cache, indices, scale, 1, &d))
    return NULL;
  int64_t S = k_cache->shape[1];
  if (len < 1 || len > S)
    return at_fail(c, AT_E_ARG, "dsa_attention_decode: len %lld outside 1..%lld (cache slots)",
                   (long long)len, (long long)S);
  if (!at_dsa_check_indices(c, "dsa_attention_decode", indices->data, d.B, 1, d.K, len - 1))
    return NULL;
  at_tensor *out = at_new(c, AT_SHAPE(d.B, 1, d.HQ, d.Dv));
  sa_scratch *scr = sa_scratch_new(c, 1, d.K, AT_MAX(d.D, d.Dv));
  if (!out || !scr) return NULL;
  for (int64_t b = 0; b < d.B; b++) {
    int64_t n = dsa_row_keys(indices->data + b * d.K, d.K, scr->keys);
    sa_row_forward(&d, q->data + b * d.HQ * d.D, k_cache->data + b * S * d.H * d.D,
                   v_cache->data + b * S * d.H * d.Dv, scr->keys, n, out->data + b * d.HQ * d.Dv,
                   NULL, scr->sbuf, scr->acc);
  }
  return out;
}
