/* ops/attention/full.c: causal softmax attention, fused (FlashAttention-2),
 * with its decode step; the naive reference composed of primitive ops is at
 * the end of the file.
 *
 * Forward (FA2 Alg. 1), per query head and query tile Q_i, over the key
 * tiles K_j it can see (S is scaled and masked: -inf outside causal/window):
 *   S = scale Q_i K_j^T + mask
 *   m' = max(m, rowmax S);  P = exp(S - m');  l = e^(m - m') l + rowsum P
 *   O  = diag(e^(m - m')) O + P V_j;  m = m'
 * then O = diag(l)^-1 O, and only L = m + log l (one number per query row)
 * is saved for the backward.
 *
 * Backward (FA2 Alg. 2), with Dr_i = rowsum(dO_i o O_i) (the softmax
 * Jacobian term: sum_j P_ij dP_ij = dO_i . O_i):
 *   for each key tile j, for each query tile i that sees it:
 *     P  = exp(scale Q_i K_j^T + mask - L_i)          (recomputed)
 *     dV_j += P^T dO_i;   dP = dO_i V_j^T;   dS = P o (dP - Dr_i)
 *     dQ_i += scale dS K_j;   dK_j += scale dS^T Q_i
 *
 * Work is split over (batch, query head); each item owns its rows of o and
 * dq. With GQA/MQA (G = HQ/H > 1 query heads per kv head) each item writes
 * its dK/dV contribution to its own buffer and the G buffers are then summed
 * in head order (FA2 §3.1), so no two threads touch the same memory and the
 * result does not depend on the thread count. All tile products are GEMMs
 * (single-threaded inside the parallel region); scratch is two tiles and a
 * few rows per thread, from the step arena.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/gemm.h"
#include "core/threads.h"
#include "ops/attention/full.h"
#include "core/fastmath.h"
#include "ops/ops.h"

#define EXP at_expr /* vectorisable; exactly 0 for masked -inf */

enum { BQ = AT_ATTN_TILE_Q, BK = AT_ATTN_TILE_K };

typedef struct attn_dims {
  int64_t B, T, HQ, H, G, D, Dv, W;
  real scale;
} attn_dims;

/* Checks shapes and options; fills d. decode: q is [B,1,HQ,D] and k, v are
 * a cache [B,S,H,*] (d->T = S). 0 (failure recorded) if they do not fit. */
static int attn_check(at_ctx *c, const char *op, const at_tensor *q, const at_tensor *k,
                      const at_tensor *v, const at_attn_opts *o, int decode, attn_dims *d) {
  char sq[96], sk[96], sv[96];
  AT_SHAPE_STR(q, sq), AT_SHAPE_STR(k, sk), AT_SHAPE_STR(v, sv);
  if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4) {
    at_fail(c, AT_E_SHAPE, "%s: q, k and v must be 4-D [B,T,H,D], got q %s, k %s, v %s", op, sq,
            sk, sv);
    return 0;
  }
  for (int i = 0; i < 4; i++)
    if (q->shape[i] <= 0 || k->shape[i] <= 0 || v->shape[i] <= 0) {
      at_fail(c, AT_E_SHAPE, "%s: empty input: q %s, k %s, v %s", op, sq, sk, sv);
      return 0;
    }
  if (k->shape[0] != v->shape[0] || k->shape[1] != v->shape[1] || k->shape[2] != v->shape[2]) {
    at_fail(c, AT_E_SHAPE, "%s: k %s and v %s differ in batch, length or heads", op, sk, sv);
    return 0;
  }
  if (decode && (q->shape[0] != k->shape[0] || q->shape[1] != 1)) {
    at_fail(c, AT_E_SHAPE, "%s: q %s must be [B,1,HQ,D] with the batch of the cache k %s", op,
            sq, sk);
    return 0;
  }
  if (!decode && (q->shape[0] != k->shape[0] || q->shape[1] != k->shape[1])) {
    at_fail(c, AT_E_SHAPE, "%s: q %s and k %s differ in batch or length", op, sq, sk);
    return 0;
  }
  if (q->shape[3] != k->shape[3]) {
    at_fail(c, AT_E_SHAPE, "%s: q %s and k %s differ in head dim", op, sq, sk);
    return 0;
  }
  if (q->shape[2] % k->shape[2] != 0) {
    at_fail(c, AT_E_SHAPE,
            "%s: the %lld query heads of q %s are not a multiple of the %lld kv heads of k %s", op,
            (long long)q->shape[2], sq, (long long)k->shape[2], sk);
    return 0;
  }
  double scale = o ? o->scale : 0;
  int64_t W = o ? o->window : 0;
  if (W < 0) {
    at_fail(c, AT_E_ARG, "%s: window %lld is negative (0 means none)", op, (long long)W);
    return 0;
  }
  if (!isfinite(scale)) {
    at_fail(c, AT_E_ARG, "%s: scale %g is not finite", op, scale);
    return 0;
  }
  d->B = k->shape[0], d->T = k->shape[1], d->H = k->shape[2];
  d->HQ = q->shape[2], d->G = d->HQ / d->H, d->D = q->shape[3], d->Dv = v->shape[3];
  d->W = W;
  d->scale = (real)(scale != 0 ? scale : 1.0 / sqrt((double)d->D));
  return 1;
}

/* 1 if query i sees key j. */
static inline int visible(const attn_dims *d, int64_t i, int64_t j) {
  return j <= i && (d->W == 0 || j > i - d->W);
}

/* 1 if some (query, key) pair of the tile is masked: it crosses the
 * diagonal or the window's lower edge. */
static inline int tile_masked(const attn_dims *d, int64_t i0, int64_t nr, int64_t j0, int64_t nc) {
  return j0 + nc - 1 > i0 || (d->W && j0 <= i0 + nr - 1 - d->W);
}

/* ---- forward ------------------------------------------------------------- */

/* Row strides of the [B,T,heads,dim] layouts. */
#define RQ(d) ((d)->HQ * (d)->D)
#define RK(d) ((d)->H * (d)->D)
#define RV(d) ((d)->H * (d)->Dv)
#define RO(d) ((d)->HQ * (d)->Dv)

/* Online softmax over the key tiles of every query tile of head (b, hq).
 * s: BQ*BK scratch, m, l: BQ rows. Writes o's rows and (if lse) L. */
static void fwd_head(const attn_dims *d, int64_t b, int64_t hq, const real *q, const real *k,
                     const real *v, real *o, real *lse, real *s, real *m, double *l) {
  int64_t T = d->T, h = hq / d->G, rq = RQ(d), rk = RK(d), rv = RV(d), ro = RO(d);
  const real *qb = q + b * T * rq + hq * d->D, *kb = k + b * T * rk + h * d->D;
  const real *vb = v + b * T * rv + h * d->Dv;
  real *ob = o + b * T * ro + hq * d->Dv;
  for (int64_t i0 = 0; i0 < T; i0 += BQ) {
    int64_t nr = AT_MIN(BQ, T - i0);
    for (int64_t r = 0; r < nr; r++) {
      m[r] = -INFINITY, l[r] = 0;
      memset(ob + (i0 + r) * ro, 0, (size_t)d->Dv * sizeof(real));
    }
    /* keys from the window's edge for the first query to the diagonal for
     * the last: tiles wholly above the diagonal or below the window are
     * never formed */
    int64_t jlo = d->W && i0 - d->W + 1 > 0 ? i0 - d->W + 1 : 0, jhi = i0 + nr;
    for (int64_t j0 = jlo; j0 < jhi; j0 += BK) {
      int64_t nc = AT_MIN(BK, jhi - j0);
      at_gemm(AT_N, AT_T, nr, nc, d->D, d->scale, qb + i0 * rq, rq, kb + j0 * rk, rk, 0, s, nc);
      int masked = tile_masked(d, i0, nr, j0, nc);
      for (int64_t r = 0; r < nr; r++) {
        real *sr = s + r * nc, mx = -INFINITY;
        for (int64_t j = 0; j < nc; j++) {
          if (masked && !visible(d, i0 + r, j0 + j)) sr[j] = -INFINITY;
          else if (sr[j] > mx) mx = sr[j];
        }
        if (mx == -INFINITY) { /* no key of this tile is visible to row r */
          memset(sr, 0, (size_t)nc * sizeof(real));
          continue;
        }
        real mnew = m[r] > mx ? m[r] : mx, corr = EXP(m[r] - mnew); /* 0 on the first tile */
        double sum = 0;
        for (int64_t j = 0; j < nc; j++) sum += (sr[j] = EXP(sr[j] - mnew));
        l[r] = l[r] * corr + sum;
        m[r] = mnew;
        if (corr != 1) {
          real *orow = ob + (i0 + r) * ro;
          for (int64_t e = 0; e < d->Dv; e++) orow[e] *= corr;
        }
      }
      at_gemm(AT_N, AT_N, nr, d->Dv, nc, 1, s, nc, vb + j0 * rv, rv, 1, ob + i0 * ro, ro);
    }
    for (int64_t r = 0; r < nr; r++) {
      /* l >= exp(0) since every query sees its own key (W >= 1) */
      real inv = (real)(1.0 / l[r]), *orow = ob + (i0 + r) * ro;
      for (int64_t e = 0; e < d->Dv; e++) orow[e] *= inv;
      if (lse) lse[(b * d->HQ + hq) * T + i0 + r] = (real)(m[r] + log(l[r]));
    }
  }
}

/* ---- backward ------------------------------------------------------------ */

/* Gradients of head (b, hq). dq: the whole dq (or NULL); dkb/dvb: where this
 * head's dK/dV rows go (row strides rdk/rdv), or NULL. s, dp: BQ*BK scratch;
 * dr: T rows. */
static void bwd_head(const attn_dims *d, int64_t b, int64_t hq, const real *q, const real *k,
                     const real *v, const real *o, const real *dout, const real *lse, real *dq,
                     real *dkb, int64_t rdk, real *dvb, int64_t rdv, real *s, real *dp, real *dr) {
  int64_t T = d->T, h = hq / d->G, rq = RQ(d), rk = RK(d), rv = RV(d), ro = RO(d);
  const real *qb = q + b * T * rq + hq * d->D, *kb = k + b * T * rk + h * d->D;
  const real *vb = v + b * T * rv + h * d->Dv;
  const real *ob = o + b * T * ro + hq * d->Dv, *dob = dout + b * T * ro + hq * d->Dv;
  const real *L = lse + (b * d->HQ + hq) * T;
  real *dqb = dq ? dq + b * T * rq + hq * d->D : NULL;
  for (int64_t i = 0; i < T; i++) {
    double acc = 0;
    for (int64_t e = 0; e < d->Dv; e++) acc += (double)dob[i * ro + e] * ob[i * ro + e];
    dr[i] = (real)acc;
  }
  for (int64_t j0 = 0; j0 < T; j0 += BK) {
    int64_t nc = AT_MIN(BK, T - j0);
    /* queries that see a key of this tile: from its first key (causal) to
     * W-1 past its last key (window) */
    int64_t ihi = d->W ? AT_MIN(T, j0 + nc - 1 + d->W) : T;
    for (int64_t i0 = j0; i0 < ihi; i0 += BQ) {
      int64_t nr = AT_MIN(BQ, ihi - i0);
      at_gemm(AT_N, AT_T, nr, nc, d->D, d->scale, qb + i0 * rq, rq, kb + j0 * rk, rk, 0, s, nc);
      int masked = tile_masked(d, i0, nr, j0, nc);
      for (int64_t r = 0; r < nr; r++) {
        real *sr = s + r * nc, Li = L[i0 + r];
        for (int64_t j = 0; j < nc; j++)
          sr[j] = masked && !visible(d, i0 + r, j0 + j) ? 0 : EXP(sr[j] - Li);
      }
      if (dvb)
        at_gemm(AT_T, AT_N, nc, d->Dv, nr, 1, s, nc, dob + i0 * ro, ro, 1, dvb + j0 * rdv, rdv);
      if (!dqb && !dkb) continue;
      at_gemm(AT_N, AT_T, nr, nc, d->Dv, 1, dob + i0 * ro, ro, vb + j0 * rv, rv, 0, dp, nc);
      for (int64_t r = 0; r < nr; r++) {
        real *pr = s + r * nc, *dsr = dp + r * nc, Di = dr[i0 + r];
        for (int64_t j = 0; j < nc; j++) dsr[j] = pr[j] * (dsr[j] - Di);
      }
      if (dqb)
        at_gemm(AT_N, AT_N, nr, d->D, nc, d->scale, dp, nc, kb + j0 * rk, rk, 1, dqb + i0 * rq,
                rq);
      if (dkb)
        at_gemm(AT_T, AT_N, nc, d->D, nr, d->scale, dp, nc, qb + i0 * rq, rq, 1, dkb + j0 * rdk,
                rdk);
    }
  }
}

/* dst[b,t,h,:] += sum over g of part[b, h*G+g, t, :], in g order. */
static void sum_groups(const attn_dims *d, int64_t dim, const real *part, real *dst) {
  int64_t rows = d->B * d->T * d->H;
#pragma omp parallel for schedule(static) num_threads(at_threads())
  for (int64_t r = 0; r < rows; r++) {
    int64_t b = r / (d->T * d->H), t = (r / d->H) % d->T, h = r % d->H;
    for (int64_t e = 0; e < dim; e++) {
      double acc = 0;
      for (int64_t g = 0; g < d->G; g++)
        acc += part[((b * d->HQ + h * d->G + g) * d->T + t) * dim + e];
      dst[r * dim + e] += (real)acc;
    }
  }
}

static void attention_backward(at_ctx *c, at_node *nd) {
  at_tensor *q = nd->in[0], *k = nd->in[1], *v = nd->in[2], *out = nd->out[0];
  attn_dims d = {.B = k->shape[0], .T = k->shape[1], .HQ = q->shape[2], .H = k->shape[2],
                 .D = q->shape[3], .Dv = v->shape[3], .W = nd->i[0], .scale = (real)nd->f[0]};
  d.G = d.HQ / d.H;
  real *dq = at_grad(c, q), *dk = at_grad(c, k), *dv = at_grad(c, v);
  if (!dq && !dk && !dv) return;
  /* GQA/MQA: per-query-head buffers for dK and dV, summed afterwards */
  int part = d.G > 1;
  size_t nq = (size_t)(d.B * d.HQ * d.T);
  real *kp = part && dk ? at_scratch_zero(c, nq * (size_t)d.D * sizeof(real)) : NULL;
  real *vp = part && dv ? at_scratch_zero(c, nq * (size_t)d.Dv * sizeof(real)) : NULL;
  int nt = (int)AT_MIN((int64_t)at_threads(), d.B * d.HQ);
  real *s = at_scratch(c, (size_t)nt * BQ * BK * sizeof(real));
  real *dp = at_scratch(c, (size_t)nt * BQ * BK * sizeof(real));
  real *dr = at_scratch(c, (size_t)nt * (size_t)d.T * sizeof(real));
  if (!s || !dp || !dr || (part && dk && !kp) || (part && dv && !vp)) return; /* status set */
  const real *lse = nd->saved;
  int64_t work = d.B * d.HQ;
#pragma omp parallel num_threads(nt)
  {
    int tid = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < work; w++) {
      int64_t b = w / d.HQ, hq = w % d.HQ, h = hq / d.G;
      real *dkb = NULL, *dvb = NULL;
      int64_t rdk = d.D, rdv = d.Dv;
      if (part) {
        if (kp) dkb = kp + (size_t)w * d.T * d.D;
        if (vp) dvb = vp + (size_t)w * d.T * d.Dv;
      } else {
        if (dk) dkb = dk + b * d.T * RK(&d) + h * d.D, rdk = RK(&d);
        if (dv) dvb = dv + b * d.T * RV(&d) + h * d.Dv, rdv = RV(&d);
      }
      bwd_head(&d, b, hq, q->data, k->data, v->data, out->data, out->grad, lse, dq, dkb, rdk,
               dvb, rdv, s + (size_t)tid * BQ * BK, dp + (size_t)tid * BQ * BK,
               dr + (size_t)tid * d.T);
    }
  }
  if (kp) sum_groups(&d, d.D, kp, dk);
  if (vp) sum_groups(&d, d.Dv, vp, dv);
}

at_tensor *at_attention(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                        const at_attn_opts *o) {
  if (!q || !k || !v) return NULL;
  attn_dims d;
  if (!attn_check(c, "attention", q, k, v, o, 0, &d)) return NULL;
  at_tensor *out = at_new(c, AT_SHAPE(d.B, d.T, d.HQ, d.Dv));
  at_tensor *ins[] = {q, k, v}, *outs[] = {out};
  int grad = at_needs_grad(c, 3, ins);
  real *lse = grad ? at_scratch(c, (size_t)(d.B * d.HQ * d.T) * sizeof(real)) : NULL;
  int nt = (int)AT_MIN((int64_t)at_threads(), d.B * d.HQ);
  real *s = at_scratch(c, (size_t)nt * BQ * BK * sizeof(real));
  real *m = at_scratch(c, (size_t)nt * BQ * sizeof(real));
  double *l = at_scratch(c, (size_t)nt * BQ * sizeof(double));
  if (!out || (grad && !lse) || !s || !m || !l) return NULL;
  int64_t work = d.B * d.HQ;
#pragma omp parallel num_threads(nt)
  {
    int tid = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < work; w++)
      fwd_head(&d, w / d.HQ, w % d.HQ, q->data, k->data, v->data, out->data, lse,
               s + (size_t)tid * BQ * BK, m + (size_t)tid * BQ, l + (size_t)tid * BQ);
  }
  at_node *nd = AT_RECORD(c, "attention", attention_backward, ins, outs);
  if (nd) {
    nd->saved = lse;
    nd->i[0] = d.W;
    nd->f[0] = d.scale;
  }
  return out;
}

/* ---- decode step ----------------------------------------------------------- */

/* o = softmax(scale q K^T) V over the cached keys lo .. len-1 of one head:
 * a 1 x n score row, no tiling needed (O(len) scratch). */
at_tensor *at_attention_decode(at_ctx *c, at_tensor *q, at_tensor *k_cache, at_tensor *v_cache,
                               int64_t len, const at_attn_opts *o) {
  if (!q || !k_cache || !v_cache) return NULL;
  attn_dims d;
  if (!attn_check(c, "attention_decode", q, k_cache, v_cache, o, 1, &d)) return NULL;
  if (len < 1 || len > d.T)
    return at_fail(c, AT_E_ARG, "attention_decode: len %lld outside 1 .. %lld (the cache's length)",
                   (long long)len, (long long)d.T);
  at_tensor *out = at_new(c, AT_SHAPE(d.B, 1, d.HQ, d.Dv));
  int nt = (int)AT_MIN((int64_t)at_threads(), d.B * d.HQ);
  real *s = at_scratch(c, (size_t)nt * (size_t)len * sizeof(real));
  if (!out || !s) return NULL;
  int64_t lo = d.W && len > d.W ? len - d.W : 0, n = len - lo, work = d.B * d.HQ;
#pragma omp parallel num_threads(nt)
  {
    real *sr = s + (size_t)omp_get_thread_num() * len;
#pragma omp for schedule(static)
    for (int64_t w = 0; w < work; w++) {
      int64_t b = w / d.HQ, hq = w % d.HQ, h = hq / d.G;
      const real *kb = k_cache->data + (b * d.T + lo) * RK(&d) + h * d.D;
      const real *vb = v_cache->data + (b * d.T + lo) * RV(&d) + h * d.Dv;
      at_gemm(AT_N, AT_T, 1, n, d.D, d.scale, q->data + w * d.D, d.D, kb, RK(&d), 0, sr, n);
      real mx = -INFINITY;
      for (int64_t j = 0; j < n; j++) mx = sr[j] > mx ? sr[j] : mx;
      double sum = 0;
      for (int64_t j = 0; j < n; j++) sum += (sr[j] = EXP(sr[j] - mx));
      at_gemm(AT_N, AT_N, 1, d.Dv, n, (real)(1.0 / sum), sr, n, vb, RV(&d), 0,
              out->data + w * d.Dv, d.Dv);
    }
  }
  return out;
}

/* ---- naive reference ----------------------------------------------------------- */

/* The same attention from primitive ops, its backward from the tape:
 *   Q' = q permuted to [B, HQ, T, D], viewed as [B*H, G*T, D] (the G query
 *        heads of kv head h are consecutive: hq = h*G + g);
 *   K', V' = k, v permuted to [B, H, T, *], viewed as [B*H, T, *];
 *   S = scale Q' K'^T viewed as [B*H, G, T, T];  P = softmax(S + M)
 *   with M[i,j] = 0 where query i sees key j, else -inf ([T, T], broadcast);
 *   o = (P V') viewed as [B, HQ, T, Dv], permuted back to [B, T, HQ, Dv].
 * Materialises B*HQ*T*T scores: for tests and small T only. */
at_tensor *at_attention_naive(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                              const at_attn_opts *o) {
  if (!q || !k || !v) return NULL;
  attn_dims d;
  if (!attn_check(c, "attention_naive", q, k, v, o, 0, &d)) return NULL;
  int64_t B = d.B, T = d.T, H = d.H, G = d.G;
  at_tensor *mask = at_new(c, AT_SHAPE(T, T));
  if (!mask) return NULL;
  for (int64_t i = 0; i < T; i++)
    for (int64_t j = 0; j < T; j++) /* written out again, independent of the fused op's */
      mask->data[i * T + j] = j <= i && (d.W == 0 || i - j < d.W) ? 0 : -INFINITY;
  const int perm[] = {0, 2, 1, 3}; /* [B,T,H,*] <-> [B,H,T,*] */
  at_tensor *qh = at_reshape(c, at_permute(c, q, perm), AT_SHAPE(B * H, G * T, d.D));
  at_tensor *kh = at_reshape(c, at_permute(c, k, perm), AT_SHAPE(B * H, T, d.D));
  at_tensor *vh = at_reshape(c, at_permute(c, v, perm), AT_SHAPE(B * H, T, d.Dv));
  at_tensor *s = at_scale(c, at_matmul(c, qh, kh, AT_N, AT_T), (double)d.scale);
  at_tensor *p = at_softmax(c, at_reshape(c, s, AT_SHAPE(B * H, G, T, T)), mask);
  at_tensor *oh = at_matmul(c, at_reshape(c, p, AT_SHAPE(B * H, G * T, T)), vh, AT_N, AT_N);
  return at_permute(c, at_reshape(c, oh, AT_SHAPE(B, d.HQ, T, d.Dv)), perm);
}
