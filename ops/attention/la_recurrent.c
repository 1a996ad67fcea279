/* ops/attention/la_recurrent.c: the token-by-token form of linear attention
 * with a scalar decay and an optional normaliser (the definition, and the
 * reference the chunkwise form is tested against), forward and hand-written
 * backward.
 *
 * One step, with a = exp(g_t) (1 without decay) and qs = scale q_t:
 *
 *   S_t = a S_{t-1} + k v^T,        z_t = a z_{t-1} + k        (normalize)
 *   num = S_t^T qs,                 D = qs . z_t + eps
 *   o_t = num / D                   (plain: o_t = num)
 *
 * Backward, carrying (dS, dz) = dL/d(S_t, z_t) from the future (d_ht, d_zt
 * at the end):
 *
 *   normalize: dnum = do / D,  dD = -(do . o_t) / D
 *              dqs = S_t dnum + dD z_t;   dS += qs dnum^T;   dz += dD qs
 *   plain:     dqs = S_t do;              dS += qs do^T
 *   dk = dS v + dz;   dv = dS^T k;   dq = scale dqs
 *   dg = a (<S_{t-1}, dS> + <z_{t-1}, dz>);   dS <- a dS;   dz <- a dz
 *
 * The backward needs S_{t-1} at every step: it restarts from the state saved
 * every C tokens and recomputes the states of that segment.
 */
#include <math.h>
#include <string.h>

#include "ops/attention/la_kernels.h"

static int64_t row1(const at_la_prob *p, int64_t b, int64_t t, int64_t h) {
  return (b * p->T + t) * p->H + h;
}

static real decay_of(const at_la_prob *p, int64_t b, int64_t t, int64_t h) {
  if (p->g) return (real)exp((double)p->g[row1(p, b, t, h)]);
  if (p->g_head) return (real)exp(p->g_head[h]);
  return 1;
}

/* st <- (S_t, z_t) from (S_{t-1}, z_{t-1}). */
static void step(const at_la_prob *p, int64_t b, int64_t t, int64_t h, real *st) {
  const int64_t K = p->K, V = p->V, r = row1(p, b, t, h);
  const real *k = p->k + r * K, *v = p->v + r * V, a = decay_of(p, b, t, h);
  real *S = st, *z = st + K * V;
  for (int64_t d = 0; d < K; d++) {
    real *Sd = S + d * V;
    for (int64_t j = 0; j < V; j++) Sd[j] = a * Sd[j] + k[d] * v[j];
    if (p->normalize) z[d] = a * z[d] + k[d];
  }
}

/* num = S^T qs and, with normalize, the denominator D (else 1). */
static double read_num(const at_la_prob *p, const real *st, const real *q, real *num) {
  const int64_t K = p->K, V = p->V;
  for (int64_t j = 0; j < V; j++) {
    double s = 0;
    for (int64_t d = 0; d < K; d++) s += (double)st[d * V + j] * q[d];
    num[j] = (real)(s * p->scale);
  }
  if (!p->normalize) return 1;
  double den = 0;
  for (int64_t d = 0; d < K; d++) den += (double)q[d] * st[K * V + d];
  return den * p->scale + p->eps;
}

size_t at_la_rec_work(const at_la_prob *p) {
  /* segment states (C), S_t, dS (state-sized each), num, dnum (V) */
  return (size_t)((p->C + 2) * at_la_state_size(p) + 2 * p->V);
}

void at_la_rec_forward(const at_la_prob *p, int64_t b, int64_t h, real *st, real *o, real *ckpt,
                       real *work) {
  const int64_t SS = at_la_state_size(p), V = p->V;
  real *num = work;
  for (int64_t t = 0; t < p->T; t++) {
    if (ckpt && t % p->C == 0) memcpy(ckpt + (t / p->C) * SS, st, (size_t)SS * sizeof(real));
    step(p, b, t, h, st);
    if (!o) continue;
    const int64_t r = row1(p, b, t, h);
    double den = read_num(p, st, p->q + r * p->K, num);
    real *out = o + r * V;
    for (int64_t j = 0; j < V; j++) out[j] = (real)(num[j] / den);
  }
}

/* The gradient of token t's read-out: into dq and the carried (dS, dz). */
static void read_backward(const at_la_prob *p, int64_t r, const real *st, real *dS, real *num,
                          real *dnum, const at_la_grads *gr) {
  const int64_t K = p->K, V = p->V;
  const real *q = p->q + r * K, *d_o = gr->d_o + r * V, *z = st + K * V;
  double den = read_num(p, st, q, num), dD = 0;
  for (int64_t j = 0; j < V; j++) {
    dnum[j] = (real)(d_o[j] / den);
    if (p->normalize) dD -= (double)d_o[j] * num[j] / den;
  }
  dD /= den; /* -(do . o) / D */
  real *dz = dS + K * V;
  for (int64_t d = 0; d < K; d++) {
    const real *Sd = st + d * V;
    real *dSd = dS + d * V, qd = p->scale * q[d];
    double s = 0;
    for (int64_t j = 0; j < V; j++) {
      s += (double)Sd[j] * dnum[j];
      dSd[j] += qd * dnum[j];
    }
    if (p->normalize) {
      s += dD * z[d];
      dz[d] += (real)(dD * qd);
    }
    if (gr->dq) gr->dq[r * K + d] += (real)(p->scale * s);
  }
}

void at_la_rec_backward(const at_la_prob *p, int64_t b, int64_t h, const real *ckpt,
                        const at_la_grads *gr, real *work) {
  const int64_t K = p->K, V = p->V, KV = K * V, SS = at_la_state_size(p), C = p->C;
  real *seg = work, *cur = seg + C * SS, *dS = cur + SS, *num = dS + SS, *dnum = num + V;
  real *dz = dS + KV;
  const int64_t bh = b * p->H + h;
  memset(dS, 0, (size_t)SS * sizeof(real));
  if (gr->d_ht) memcpy(dS, gr->d_ht + bh * KV, (size_t)KV * sizeof(real));
  if (p->normalize && gr->d_zt) memcpy(dz, gr->d_zt + bh * K, (size_t)K * sizeof(real));

  for (int64_t s = at_la_n_chunks(p) - 1; s >= 0; s--) {
    int64_t t0 = s * C, n = AT_MIN(C, p->T - t0);
    /* seg[i] = the state entering token t0 + i */
    memcpy(seg, ckpt + s * SS, (size_t)SS * sizeof(real));
    for (int64_t i = 1; i < n; i++) {
      memcpy(seg + i * SS, seg + (i - 1) * SS, (size_t)SS * sizeof(real));
      step(p, b, t0 + i - 1, h, seg + i * SS);
    }
    for (int64_t i = n - 1; i >= 0; i--) {
      const int64_t t = t0 + i, r = row1(p, b, t, h);
      const real *prev = seg + i * SS;
      memcpy(cur, prev, (size_t)SS * sizeof(real));
      step(p, b, t, h, cur);
      if (gr->d_o) read_backward(p, r, cur, dS, num, dnum, gr);
      const real *k = p->k + r * K, *v = p->v + r * V;
      for (int64_t d = 0; d < K; d++) {
        double s2 = p->normalize ? dz[d] : 0;
        for (int64_t j = 0; j < V; j++) s2 += (double)dS[d * V + j] * v[j];
        if (gr->dk) gr->dk[r * K + d] += (real)s2;
      }
      if (gr->dv)
        for (int64_t j = 0; j < V; j++) {
          double s2 = 0;
          for (int64_t d = 0; d < K; d++) s2 += (double)dS[d * V + j] * k[d];
          gr->dv[r * V + j] += (real)s2;
        }
      if (!at_la_decayed(p)) continue;
      real a = decay_of(p, b, t, h);
      if (p->g && gr->dg) {
        double s2 = 0;
        for (int64_t i2 = 0; i2 < SS; i2++) s2 += (double)prev[i2] * dS[i2];
        gr->dg[r] += (real)(a * s2);
      }
      for (int64_t i2 = 0; i2 < SS; i2++) dS[i2] *= a;
    }
  }
  if (gr->dh0)
    for (int64_t i = 0; i < KV; i++) gr->dh0[bh * KV + i] += dS[i];
  if (p->normalize && gr->dz0)
    for (int64_t d = 0; d < K; d++) gr->dz0[bh * K + d] += dz[d];
}
