/* ops/attention/dplr_recurrent.c: the token-by-token form of gla / dplr
 * (the definition, and the reference the chunkwise form is tested against),
 * forward and hand-written backward.
 *
 * One step, with e = exp(gk_t) per key channel:
 *
 *   u   = S_{t-1}^T a_t                           (dplr only)
 *   S_t = diag(e) S_{t-1} + k_t v_t^T + b_t u^T   (gla: without b u^T)
 *   o_t = S_t^T q_s,                               q_s = scale q_t
 *
 * Backward, carrying dS = dL/dS_t from the future (starts at d_ht):
 *
 *   dS += q_s do^T;   dq = scale S_t do
 *   dk = dS v;        dv = dS^T k
 *   db = dS u;        du = dS^T b                   (dplr)
 *   dgk_d = e_d sum_v S_{t-1}[d,v] dS[d,v]
 *   da = S_{t-1} du                                 (dplr)
 *   dS_{t-1} = diag(e) dS + a du^T
 *
 * The backward needs S_{t-1} at every step: it restarts from the state saved
 * every C tokens and recomputes the C states of that segment.
 */
#include <math.h>
#include <string.h>

#include "ops/attention/dplr_kernels.h"

static const real *row_of(const real *x, const at_dplr_prob *p, int64_t b, int64_t t, int64_t h,
                          int64_t d) {
  return x + at_dplr_row(p, b, t, h) * d;
}

/* S <- S_t from S_{t-1}; u = S_{t-1}^T a (dplr), e = exp(gk_t). */
static void step(const at_dplr_prob *p, int64_t b, int64_t t, int64_t h, real *S, real *u,
                 real *e) {
  const int64_t K = p->K, V = p->V;
  const real *k = row_of(p->k, p, b, t, h, K), *v = row_of(p->v, p, b, t, h, V);
  const real *g = row_of(p->g, p, b, t, h, K);
  for (int64_t d = 0; d < K; d++) e[d] = (real)exp((double)g[d]);
  if (p->lowrank) {
    const real *a = row_of(p->a, p, b, t, h, K);
    for (int64_t j = 0; j < V; j++) {
      double s = 0;
      for (int64_t d = 0; d < K; d++) s += (double)S[d * V + j] * a[d];
      u[j] = (real)s;
    }
  }
  const real *bv = p->lowrank ? row_of(p->b, p, b, t, h, K) : NULL;
  for (int64_t d = 0; d < K; d++) {
    real *s = S + d * V;
    for (int64_t j = 0; j < V; j++) s[j] = e[d] * s[j] + k[d] * v[j];
    if (bv)
      for (int64_t j = 0; j < V; j++) s[j] += bv[d] * u[j];
  }
}

/* o_t = S^T (scale q_t) */
static void read_out(const at_dplr_prob *p, int64_t b, int64_t t, int64_t h, const real *S,
                     real *o) {
  const int64_t K = p->K, V = p->V;
  const real *q = row_of(p->q, p, b, t, h, K);
  real *out = o + at_dplr_row(p, b, t, h) * V;
  for (int64_t j = 0; j < V; j++) {
    double s = 0;
    for (int64_t d = 0; d < K; d++) s += (double)S[d * V + j] * q[d];
    out[j] = (real)(s * p->scale);
  }
}

size_t at_dplr_rec_work(const at_dplr_prob *p) {
  /* segment states (C x K x V), S_t, dS (K x V), u, du (V), e (K) */
  return (size_t)((p->C + 2) * p->K * p->V + 2 * p->V + p->K);
}

void at_dplr_rec_forward(const at_dplr_prob *p, int64_t b, int64_t h, real *S, real *o,
                         real *ckpt, real *work) {
  const int64_t KV = p->K * p->V;
  real *u = work, *e = work + p->V;
  for (int64_t t = 0; t < p->T; t++) {
    if (ckpt && t % p->C == 0) memcpy(ckpt + (t / p->C) * KV, S, (size_t)KV * sizeof(real));
    step(p, b, t, h, S, u, e);
    if (o) read_out(p, b, t, h, S, o);
  }
}

/* One token of the backward: dS holds dL/dS_t on entry (future part), and
 * dL/dS_{t-1} on return. Sp = S_{t-1}, St = S_t, u = Sp^T a, e = exp(gk_t). */
static void step_backward(const at_dplr_prob *p, int64_t b, int64_t t, int64_t h, const real *Sp,
                          const real *St, const real *u, const real *e, real *dS, real *du,
                          const at_dplr_grads *gr) {
  const int64_t K = p->K, V = p->V, r = at_dplr_row(p, b, t, h);
  const real *q = row_of(p->q, p, b, t, h, K), *k = row_of(p->k, p, b, t, h, K);
  const real *v = row_of(p->v, p, b, t, h, V);
  const real *a = p->lowrank ? row_of(p->a, p, b, t, h, K) : NULL;
  const real *bv = p->lowrank ? row_of(p->b, p, b, t, h, K) : NULL;
  if (gr->d_o) {
    const real *d_o = gr->d_o + r * V;
    for (int64_t d = 0; d < K; d++) {
      real qd = p->scale * q[d];
      double s = 0;
      for (int64_t j = 0; j < V; j++) {
        dS[d * V + j] += qd * d_o[j];
        s += (double)St[d * V + j] * d_o[j];
      }
      if (gr->dq) gr->dq[r * K + d] += (real)(p->scale * s);
    }
  }
  for (int64_t j = 0; j < V; j++) {
    double sv = 0, su = 0;
    for (int64_t d = 0; d < K; d++) {
      sv += (double)dS[d * V + j] * k[d];
      if (bv) su += (double)dS[d * V + j] * bv[d];
    }
    if (gr->dv) gr->dv[r * V + j] += (real)sv;
    du[j] = (real)su;
  }
  for (int64_t d = 0; d < K; d++) {
    double sk = 0, sb = 0, sg = 0, sa = 0;
    for (int64_t j = 0; j < V; j++) {
      real ds = dS[d * V + j], sp = Sp[d * V + j];
      sk += (double)ds * v[j];
      sg += (double)sp * ds;
      if (bv) sb += (double)ds * u[j], sa += (double)sp * du[j];
    }
    if (gr->dk) gr->dk[r * K + d] += (real)sk;
    if (gr->dg) gr->dg[r * K + d] += (real)(e[d] * sg);
    if (bv && gr->db) gr->db[r * K + d] += (real)sb;
    if (bv && gr->da) gr->da[r * K + d] += (real)sa;
  }
  for (int64_t d = 0; d < K; d++) {
    real *ds = dS + d * V;
    for (int64_t j = 0; j < V; j++) ds[j] = e[d] * ds[j] + (a ? a[d] * du[j] : 0);
  }
}

void at_dplr_rec_backward(const at_dplr_prob *p, int64_t b, int64_t h, const real *ckpt,
                          const at_dplr_grads *gr, real *work) {
  const int64_t K = p->K, V = p->V, KV = K * V, C = p->C;
  real *seg = work, *St = seg + C * KV, *dS = St + KV;
  real *u = dS + KV, *du = u + V, *e = du + V;
  if (gr->d_ht)
    memcpy(dS, gr->d_ht + (b * p->H + h) * KV, (size_t)KV * sizeof(real));
  else
    memset(dS, 0, (size_t)KV * sizeof(real));
  for (int64_t s = at_dplr_n_chunks(p) - 1; s >= 0; s--) {
    int64_t t0 = s * C, n = AT_MIN(C, p->T - t0);
    /* seg[i] = S_{t0+i-1}, the state entering token t0 + i */
    memcpy(seg, ckpt + s * KV, (size_t)KV * sizeof(real));
    for (int64_t i = 1; i < n; i++) {
      memcpy(seg + i * KV, seg + (i - 1) * KV, (size_t)KV * sizeof(real));
      step(p, b, t0 + i - 1, h, seg + i * KV, u, e);
    }
    for (int64_t i = n - 1; i >= 0; i--) {
      memcpy(St, seg + i * KV, (size_t)KV * sizeof(real));
      step(p, b, t0 + i, h, St, u, e);
      step_backward(p, b, t0 + i, h, seg + i * KV, St, u, e, dS, du, gr);
    }
  }
  if (gr->dh0) {
    real *dh0 = gr->dh0 + (b * p->H + h) * KV;
    for (int64_t i = 0; i < KV; i++) dh0[i] += dS[i];
  }
}
