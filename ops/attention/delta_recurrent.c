/* ops/attention/delta_recurrent.c: the token-by-token form of the gated
 * delta rule / simple GLA (the definition, and the reference the chunkwise
 * form is tested against), forward and hand-written backward.
 *
 * One step, with a = exp(g_t) per key channel (a scalar gate broadcasts):
 *
 *   S~ = diag(a) S_{t-1}
 *   delta:   u = v - S~^T k,   S_t = S~ + beta k u^T
 *   plain:   S_t = S~ + k v^T
 *   o_t = S_t^T q_s,            q_s = scale q
 *
 * Backward, carrying dS = dL/dS_t from the future (starts at d_ht):
 *
 *   dS  += q_s do^T;            dq = scale S_t do
 *   delta:   dbeta = k^T dS u;  du = beta dS^T k;  dk = beta dS u - S~ du;
 *            dv = du;           dS~ = dS - k du^T
 *   plain:   dk = dS v;         dv = dS^T k;       dS~ = dS
 *   dg_d = sum_v S~[d,v] dS~[d,v]   (summed over d for a per-head gate)
 *   dS_{t-1} = diag(a) dS~
 *
 * The backward needs S_{t-1} at every step: it restarts from the state saved
 * every C tokens and recomputes the C states of that segment.
 */
#include <math.h>
#include <string.h>

#include "ops/attention/lin_kernels.h"

static const real *row_of(const real *x, const at_lin_prob *p, int64_t b, int64_t t, int64_t h,
                          int64_t d) {
  return x + ((b * p->T + t) * p->H + h) * d;
}

/* a = exp(g_t) for the K channels. */
static void decay_of(const at_lin_prob *p, int64_t b, int64_t t, int64_t h, real *a) {
  if (p->gate == AT_LIN_GATE_NONE) {
    for (int64_t d = 0; d < p->K; d++) a[d] = 1;
  } else if (p->gate == AT_LIN_GATE_HEAD) {
    real e = (real)exp((double)*row_of(p->g, p, b, t, h, 1));
    for (int64_t d = 0; d < p->K; d++) a[d] = e;
  } else {
    const real *g = row_of(p->g, p, b, t, h, p->K);
    for (int64_t d = 0; d < p->K; d++) a[d] = (real)exp((double)g[d]);
  }
}

/* S <- S_t from S_{t-1}; keeps S~ in `tilde` when not NULL and the delta
 * correction u (without beta) in `u`. */
static void step(const at_lin_prob *p, int64_t b, int64_t t, int64_t h, real *S, real *tilde,
                 real *u, real *a) {
  const int64_t K = p->K, V = p->V;
  const real *k = row_of(p->k, p, b, t, h, K), *v = row_of(p->v, p, b, t, h, V);
  decay_of(p, b, t, h, a);
  for (int64_t d = 0; d < K; d++)
    for (int64_t j = 0; j < V; j++) S[d * V + j] *= a[d];
  if (tilde) memcpy(tilde, S, (size_t)(K * V) * sizeof(real));
  if (p->delta) {
    real beta = *row_of(p->beta, p, b, t, h, 1);
    for (int64_t j = 0; j < V; j++) {
      double s = 0;
      for (int64_t d = 0; d < K; d++) s += (double)S[d * V + j] * k[d];
      u[j] = (real)(v[j] - s);
    }
    for (int64_t d = 0; d < K; d++) {
      real bk = beta * k[d];
      for (int64_t j = 0; j < V; j++) S[d * V + j] += bk * u[j];
    }
  } else {
    for (int64_t d = 0; d < K; d++)
      for (int64_t j = 0; j < V; j++) S[d * V + j] += k[d] * v[j];
  }
}

/* o_t = S^T (scale q_t) */
static void read_out(const at_lin_prob *p, int64_t b, int64_t t, int64_t h, const real *S,
                     real *o) {
  const int64_t K = p->K, V = p->V;
  const real *q = row_of(p->q, p, b, t, h, K);
  real *out = o + ((b * p->T + t) * p->H + h) * V;
  for (int64_t j = 0; j < V; j++) {
    double s = 0;
    for (int64_t d = 0; d < K; d++) s += (double)S[d * V + j] * q[d];
    out[j] = (real)(s * p->scale);
  }
}

size_t at_lin_rec_work(const at_lin_prob *p) {
  /* segment states (C x K x V), S~, S_t, dS (K x V), u, du (V), a (K) */
  return (size_t)((p->C + 3) * p->K * p->V + 2 * p->V + p->K);
}

void at_lin_rec_forward(const at_lin_prob *p, int64_t b, int64_t h, real *S, real *o, real *ckpt,
                        real *work) {
  const int64_t KV = p->K * p->V;
  real *u = work, *a = work + p->V;
  for (int64_t t = 0; t < p->T; t++) {
    if (ckpt && t % p->C == 0) memcpy(ckpt + (t / p->C) * KV, S, (size_t)KV * sizeof(real));
    step(p, b, t, h, S, NULL, u, a);
    if (o) read_out(p, b, t, h, S, o);
  }
}

void at_lin_rec_backward(const at_lin_prob *p, int64_t b, int64_t h, const real *ckpt,
                         const at_lin_grads *gr, real *work) {
  const int64_t K = p->K, V = p->V, KV = K * V, C = p->C;
  real *seg = work, *tilde = seg + C * KV, *St = tilde + KV, *dS = St + KV;
  real *u = dS + KV, *du = u + V, *a = du + V;
  const real sc = p->scale;
  if (gr->d_ht)
    memcpy(dS, gr->d_ht + (b * p->H + h) * KV, (size_t)KV * sizeof(real));
  else
    memset(dS, 0, (size_t)KV * sizeof(real));

  for (int64_t s = at_lin_n_chunks(p) - 1; s >= 0; s--) {
    int64_t t0 = s * C, n = AT_MIN(C, p->T - t0);
    /* seg[i] = S_{t0+i-1}, the state entering token t0 + i */
    memcpy(seg, ckpt + s * KV, (size_t)KV * sizeof(real));
    for (int64_t i = 1; i < n; i++) {
      memcpy(seg + i * KV, seg + (i - 1) * KV, (size_t)KV * sizeof(real));
      step(p, b, t0 + i - 1, h, seg + i * KV, NULL, u, a);
    }
    for (int64_t i = n - 1; i >= 0; i--) {
      int64_t t = t0 + i;
      memcpy(St, seg + i * KV, (size_t)KV * sizeof(real));
      step(p, b, t, h, St, tilde, u, a);
      const real *q = row_of(p->q, p, b, t, h, K), *k = row_of(p->k, p, b, t, h, K);
      const real *v = row_of(p->v, p, b, t, h, V);
      const int64_t rk = ((b * p->T + t) * p->H + h) * K, rv = ((b * p->T + t) * p->H + h) * V;
      const int64_t r1 = (b * p->T + t) * p->H + h;
      if (gr->d_o) {
        const real *d_o = gr->d_o + rv;
        for (int64_t d = 0; d < K; d++) {
          real qd = sc * q[d];
          double s2 = 0;
          for (int64_t j = 0; j < V; j++) {
            dS[d * V + j] += qd * d_o[j];
            s2 += (double)St[d * V + j] * d_o[j];
          }
          if (gr->dq) gr->dq[rk + d] += (real)(sc * s2);
        }
      }
      if (p->delta) {
        real beta = p->beta[r1];
        double dbeta = 0;
        for (int64_t j = 0; j < V; j++) {
          double s2 = 0;
          for (int64_t d = 0; d < K; d++) s2 += (double)dS[d * V + j] * k[d];
          du[j] = (real)(beta * s2);
        }
        for (int64_t d = 0; d < K; d++) {
          double su = 0, st = 0;
          for (int64_t j = 0; j < V; j++) {
            su += (double)dS[d * V + j] * u[j];
            st += (double)tilde[d * V + j] * du[j];
          }
          dbeta += k[d] * su;
          if (gr->dk) gr->dk[rk + d] += (real)(beta * su - st);
        }
        if (gr->dbeta) gr->dbeta[r1] += (real)dbeta;
        if (gr->dv)
          for (int64_t j = 0; j < V; j++) gr->dv[rv + j] += du[j];
        for (int64_t d = 0; d < K; d++)
          for (int64_t j = 0; j < V; j++) dS[d * V + j] -= k[d] * du[j];
      } else {
        for (int64_t d = 0; d < K; d++) {
          double s2 = 0;
          for (int64_t j = 0; j < V; j++) s2 += (double)dS[d * V + j] * v[j];
          if (gr->dk) gr->dk[rk + d] += (real)s2;
        }
        if (gr->dv)
          for (int64_t j = 0; j < V; j++) {
            double s2 = 0;
            for (int64_t d = 0; d < K; d++) s2 += (double)dS[d * V + j] * k[d];
            gr->dv[rv + j] += (real)s2;
          }
      }
      /* dS now holds dS~ */
      if (p->gate != AT_LIN_GATE_NONE) {
        double tot = 0;
        for (int64_t d = 0; d < K; d++) {
          double s2 = 0;
          for (int64_t j = 0; j < V; j++) s2 += (double)tilde[d * V + j] * dS[d * V + j];
          if (p->gate == AT_LIN_GATE_CHANNEL && gr->dg) gr->dg[rk + d] += (real)s2;
          tot += s2;
        }
        if (p->gate == AT_LIN_GATE_HEAD && gr->dg) gr->dg[r1] += (real)tot;
        for (int64_t d = 0; d < K; d++)
          for (int64_t j = 0; j < V; j++) dS[d * V + j] *= a[d];
      }
    }
  }
  if (gr->dh0) {
    real *dh0 = gr->dh0 + (b * p->H + h) * KV;
    for (int64_t i = 0; i < KV; i++) dh0[i] += dS[i];
  }
}
