/* ops/attention/la_chunk.c: the chunkwise (training) form of linear attention
 * with a scalar decay and an optional normaliser, forward and hand-written
 * backward.
 *
 * Inside a chunk of n <= C tokens (local index r), with (S0, z0) the state
 * entering it and a_r the decay of token r (1 without decay):
 *
 *   E[r,j] = a_{j+1} ... a_r  (j <= r; E[r,r] = 1)     decay from j to r
 *   P[r]   = a_0 ... a_r                               decay from S0 to r
 *   F[j]   = E[n-1,j],  Lam = P[n-1]                   decay to the chunk end
 *   A      = (Qs K^T) ⊙ E  (j <= r; 0 above),  Qs = scale Q
 *   N      = diag(P) (Qs S0) + A V                     numerators
 *   D      = P ⊙ (Qs z0) + A 1 + eps                   denominators (normalize)
 *   O      = diag(1/D) N   (plain: O = N)
 *   S1     = Lam S0 + (K ⊙ F)^T V,     z1 = Lam z0 + (K ⊙ F)^T 1
 *
 * Every decay is a product of factors in [0, 1] built token by token, so no
 * exponent is positive and the masked (j > r) entries are never formed.
 *
 * Backward of one chunk (dO given, (dS1, dz1) carried from the next chunk;
 * b_r = log P[r] the cumulative log-decay, dg_i = sum_{r >= i} db_r):
 *
 *   normalize: dN = diag(1/D) dO,  dD = -rowsum(dO ⊙ N) / D^2;  plain: dN = dO, dD = 0
 *   dA   = tril(dN V^T + dD 1^T)              dV  = A^T dN + (K ⊙ F) dS1
 *   dQs  = (dA ⊙ E) K + diag(P) dN S0^T + diag(dD ⊙ P) 1 z0^T
 *   dK   = (dA ⊙ E)^T Qs + diag(F) (V dS1^T + 1 dz1^T)
 *   dS0  = Lam dS1 + Qs^T diag(P) dN           dz0 = Lam dz1 + Qs^T (dD ⊙ P)
 *   decays: dP[r] = dN_r . (Qs S0)_r + dD_r (Qs_r . z0),
 *           dF[j] = k_j . (dS1 v_j + dz1),  dLam = <S0, dS1> + <z0, dz1>;
 *           db[r] += dP[r] P[r];  db[r] += sum_{j<r} dA[r,j] A[r,j],
 *           db[j] -= sum_{r>j} dA[r,j] A[r,j];  db[j] -= dF[j] F[j] and
 *           db[n-1] += dF[j] F[j] for j < n-1;  db[n-1] += dLam Lam
 *   dq = scale dQs; (dS0, dz0) is the next (earlier) chunk's (dS1, dz1).
 * Terms whose decay is the constant 1 (E[r,r], F[n-1]) stay out of db, so
 * gradients that are tiny under strong decay are not swamped by rounding.
 *
 * Q, K, V, O and their gradients are read and written in place ([B,T,H,D]
 * rows, leading dimension H*D): GEMMs take the strides and `scale` as alpha.
 */
#include <math.h>
#include <string.h>

#include "core/gemm.h"
#include "ops/attention/la_kernels.h"

typedef struct work {
  real *E, *A, *dA;           /* C x C */
  real *QS0, *N, *KF, *X;     /* C x V, C x V, C x K, C x K */
  real *P, *F, *D, *dD, *db, *qz; /* C */
  real *erow;                 /* C + 1 */
  real *dS, *dS0;             /* state-sized */
} work;

static size_t pad(size_t n) { return (n + 15) & ~(size_t)15; } /* 64-byte multiples */

static size_t carve(const at_la_prob *p, real *base, work *w) {
  const size_t K = (size_t)p->K, V = (size_t)p->V, C = (size_t)p->C;
  const size_t SS = (size_t)at_la_state_size(p);
  size_t off = 0;
  work z;
  if (!w) w = &z;
#define TAKE(ptr, n)              \
  do {                            \
    if (base) (ptr) = base + off; \
    off += pad(n);                \
  } while (0)
  TAKE(w->E, C * C); TAKE(w->A, C * C); TAKE(w->dA, C * C);
  TAKE(w->QS0, C * V); TAKE(w->N, C * V); TAKE(w->KF, C * K); TAKE(w->X, C * K);
  TAKE(w->P, C); TAKE(w->F, C); TAKE(w->D, C); TAKE(w->dD, C); TAKE(w->db, C);
  TAKE(w->qz, C); TAKE(w->erow, C + 1);
  TAKE(w->dS, SS); TAKE(w->dS0, SS);
#undef TAKE
  return off;
}

size_t at_la_chunk_work(const at_la_prob *p) { return carve(p, NULL, NULL); }

static inline real flush(real x) { return x < AT_LA_TINY ? 0 : x; }

typedef struct chunk {
  int64_t b, h, t0, n;
  real lam;
  const real *q, *k, *v; /* the chunk's first rows */
  int64_t ldq, ldv;      /* H K, H V */
} chunk;

static chunk chunk_at(const at_la_prob *p, int64_t b, int64_t h, int64_t c) {
  chunk ch = {b, h, c * p->C, AT_MIN(p->C, p->T - c * p->C), 1, NULL, NULL, NULL, p->H * p->K,
              p->H * p->V};
  int64_t r0 = (b * p->T + ch.t0) * p->H + h;
  ch.q = p->q + r0 * p->K, ch.k = p->k + r0 * p->K, ch.v = p->v + r0 * p->V;
  return ch;
}

static int64_t rowi(const at_la_prob *p, const chunk *ch, int64_t r) {
  return (ch->b * p->T + ch->t0 + r) * p->H + ch->h;
}

/* E, P, F, Lam of the chunk, K ⊙ F, and A = (Qs K^T) ⊙ E. */
static void prepare(const at_la_prob *p, chunk *ch, work *w) {
  const int64_t K = p->K, C = p->C, n = ch->n;
  real *er = w->erow; /* er[0]: from S0; er[1 + j]: E[r, j] */
  er[0] = 1;
  for (int64_t r = 0; r < n; r++) {
    real ar = p->g ? (real)exp((double)p->g[rowi(p, ch, r)])
                   : p->g_head ? (real)exp(p->g_head[ch->h]) : 1;
    for (int64_t j = 0; j <= r; j++) er[j] = flush(er[j] * ar);
    er[r + 1] = 1;
    for (int64_t j = 0; j <= r; j++) w->E[r * C + j] = er[j + 1];
    w->P[r] = er[0];
  }
  ch->lam = er[0];
  for (int64_t j = 0; j < n; j++) w->F[j] = er[j + 1];
  for (int64_t j = 0; j < n; j++) {
    const real *kj = ch->k + j * ch->ldq;
    real *kf = w->KF + j * K, f = w->F[j];
    for (int64_t d = 0; d < K; d++) kf[d] = f * kj[d];
  }
  at_gemm(AT_N, AT_T, n, n, K, p->scale, ch->q, ch->ldq, ch->k, ch->ldq, 0, w->A, C);
  for (int64_t r = 0; r < n; r++) {
    for (int64_t j = 0; j <= r; j++) w->A[r * C + j] *= w->E[r * C + j];
    for (int64_t j = r + 1; j < n; j++) w->A[r * C + j] = 0; /* used by GEMMs */
  }
}

/* N = diag(P)(Qs S0) + A V (into out, leading dim ldo); QS0 kept; with
 * normalize also qz = Qs z0 and D. */
static void numerators(const at_la_prob *p, const chunk *ch, const real *S0, work *w, real *out,
                       int64_t ldo) {
  const int64_t K = p->K, V = p->V, C = p->C, n = ch->n;
  at_gemm(AT_N, AT_N, n, V, K, p->scale, ch->q, ch->ldq, S0, V, 0, w->QS0, V);
  for (int64_t r = 0; r < n; r++) {
    real *o = out + r * ldo;
    const real *qs0 = w->QS0 + r * V, pr = w->P[r];
    for (int64_t j = 0; j < V; j++) o[j] = pr * qs0[j];
  }
  at_gemm(AT_N, AT_N, n, V, n, 1, w->A, C, ch->v, ch->ldv, 1, out, ldo);
  if (!p->normalize) return;
  const real *z0 = S0 + K * V;
  for (int64_t r = 0; r < n; r++) {
    const real *q = ch->q + r * ch->ldq;
    double qz = 0, rs = 0;
    for (int64_t d = 0; d < K; d++) qz += (double)q[d] * z0[d];
    for (int64_t j = 0; j <= r; j++) rs += w->A[r * C + j];
    w->qz[r] = (real)(qz * p->scale);
    w->D[r] = (real)((double)w->P[r] * w->qz[r] + rs + p->eps);
  }
}

/* S <- (S1, z1) = Lam (S0, z0) + (K ⊙ F)^T (V, 1). */
static void advance(const at_la_prob *p, const chunk *ch, real *S, const work *w) {
  const int64_t K = p->K, V = p->V, SS = at_la_state_size(p), n = ch->n;
  for (int64_t i = 0; i < SS; i++) S[i] *= ch->lam;
  at_gemm(AT_T, AT_N, K, V, n, 1, w->KF, K, ch->v, ch->ldv, 1, S, V);
  if (!p->normalize) return;
  real *z = S + K * V;
  for (int64_t d = 0; d < K; d++) {
    double s = 0;
    for (int64_t j = 0; j < n; j++) s += w->KF[j * K + d];
    z[d] += (real)s;
  }
}

/* ---- forward ------------------------------------------------------------------- */

void at_la_chunk_forward(const at_la_prob *p, int64_t b, int64_t h, real *S, real *o, real *ckpt,
                         real *work_mem) {
  work w;
  carve(p, work_mem, &w);
  const int64_t SS = at_la_state_size(p), V = p->V, ldo = p->H * V;
  for (int64_t c = 0; c < at_la_n_chunks(p); c++) {
    chunk ch = chunk_at(p, b, h, c);
    if (ckpt) memcpy(ckpt + c * SS, S, (size_t)SS * sizeof(real));
    prepare(p, &ch, &w);
    if (o) {
      real *oc = o + rowi(p, &ch, 0) * V;
      numerators(p, &ch, S, &w, oc, ldo);
      if (p->normalize)
        for (int64_t r = 0; r < ch.n; r++)
          for (int64_t j = 0; j < V; j++) oc[r * ldo + j] /= w.D[r];
    }
    advance(p, &ch, S, &w);
  }
}

/* ---- backward ------------------------------------------------------------------ */

/* dN (in w->N, after N itself served for dD) and dD from dO. */
static void output_backward(const at_la_prob *p, const chunk *ch, const real *dO, int64_t ldo,
                            work *w) {
  const int64_t V = p->V, n = ch->n;
  for (int64_t r = 0; r < n; r++) {
    real *nr = w->N + r * V;
    const real *dor = dO ? dO + r * ldo : NULL;
    if (!dor) {
      memset(nr, 0, (size_t)V * sizeof(real));
      w->dD[r] = 0;
      continue;
    }
    if (!p->normalize) {
      memcpy(nr, dor, (size_t)V * sizeof(real));
      w->dD[r] = 0;
      continue;
    }
    double s = 0, Dr = w->D[r];
    for (int64_t j = 0; j < V; j++) {
      s += (double)dor[j] * nr[j];
      nr[j] = (real)(dor[j] / Dr);
    }
    w->dD[r] = (real)(-s / (Dr * Dr));
  }
}

/* db and dg of a chunk (the per-token gate only). */
static void decay_backward(const at_la_prob *p, const chunk *ch, const real *S0, const real *dS1,
                           work *w, real *dg) {
  const int64_t K = p->K, V = p->V, C = p->C, n = ch->n, SS = at_la_state_size(p);
  const real *dz1 = dS1 + K * V;
  for (int64_t r = 0; r < n; r++) w->db[r] = 0;
  for (int64_t r = 1; r < n; r++) /* the pairs below the diagonal (E[r,r] = 1 has none) */
    for (int64_t j = 0; j < r; j++) {
      real s = w->dA[r * C + j] * w->A[r * C + j];
      w->db[r] += s;
      w->db[j] -= s;
    }
  for (int64_t r = 0; r < n; r++) {
    double dp = p->normalize ? (double)w->dD[r] * w->qz[r] : 0;
    const real *nr = w->N + r * V, *qs0 = w->QS0 + r * V;
    for (int64_t j = 0; j < V; j++) dp += (double)nr[j] * qs0[j];
    w->db[r] += (real)(dp * w->P[r]);
  }
  for (int64_t j = 0; j + 1 < n; j++) { /* F[n-1] = 1 has no log-decay gradient */
    const real *kj = ch->k + j * ch->ldq, *xj = w->X + j * K;
    double df = 0;
    for (int64_t d = 0; d < K; d++) df += (double)kj[d] * (xj[d] + (p->normalize ? dz1[d] : 0));
    real s = (real)df * w->F[j];
    w->db[j] -= s;
    w->db[n - 1] += s;
  }
  double dlam = 0;
  for (int64_t i = 0; i < SS; i++) dlam += (double)S0[i] * dS1[i];
  w->db[n - 1] += (real)(dlam * ch->lam);
  double acc = 0; /* dg_r = sum_{i >= r} db_i */
  for (int64_t r = n - 1; r >= 0; r--) {
    acc += w->db[r];
    dg[rowi(p, ch, r)] += (real)acc;
  }
}

void at_la_chunk_backward(const at_la_prob *p, int64_t b, int64_t h, const real *ckpt,
                          const at_la_grads *gr, real *work_mem) {
  work w;
  carve(p, work_mem, &w);
  const int64_t K = p->K, V = p->V, KV = K * V, C = p->C, SS = at_la_state_size(p);
  const int64_t ldo = p->H * V, bh = b * p->H + h;
  memset(w.dS, 0, (size_t)SS * sizeof(real));
  if (gr->d_ht) memcpy(w.dS, gr->d_ht + bh * KV, (size_t)KV * sizeof(real));
  if (p->normalize && gr->d_zt) memcpy(w.dS + KV, gr->d_zt + bh * K, (size_t)K * sizeof(real));
  const int want_dg = p->g && gr->dg;

  for (int64_t c = at_la_n_chunks(p) - 1; c >= 0; c--) {
    chunk ch = chunk_at(p, b, h, c);
    const int64_t n = ch.n, r0 = rowi(p, &ch, 0);
    const real *S0 = ckpt + c * SS, *z0 = S0 + KV, *dS1 = w.dS, *dz1 = w.dS + KV;
    real *dz0 = w.dS0 + KV;
    prepare(p, &ch, &w);
    numerators(p, &ch, S0, &w, w.N, V);
    output_backward(p, &ch, gr->d_o ? gr->d_o + r0 * V : NULL, ldo, &w);

    /* dA = tril(dN V^T + dD 1^T) */
    at_gemm(AT_N, AT_T, n, n, V, 1, w.N, V, ch.v, ch.ldv, 0, w.dA, C);
    for (int64_t r = 0; r < n; r++) {
      for (int64_t j = 0; j <= r; j++) w.dA[r * C + j] += w.dD[r];
      for (int64_t j = r + 1; j < n; j++) w.dA[r * C + j] = 0;
    }
    /* X = V dS1^T (for dK and dF) */
    if (gr->dk || want_dg) at_gemm(AT_N, AT_T, n, K, V, 1, ch.v, ch.ldv, dS1, V, 0, w.X, K);
    if (want_dg) decay_backward(p, &ch, S0, dS1, &w, gr->dg);
    /* dV = A^T dN + (K ⊙ F) dS1 */
    if (gr->dv) {
      real *dv = gr->dv + r0 * V;
      at_gemm(AT_T, AT_N, n, V, n, 1, w.A, C, w.N, V, 1, dv, ldo);
      at_gemm(AT_N, AT_N, n, V, K, 1, w.KF, K, dS1, V, 1, dv, ldo);
    }
    for (int64_t r = 0; r < n; r++) /* dA ⊙ E */
      for (int64_t j = 0; j <= r; j++) w.dA[r * C + j] *= w.E[r * C + j];
    /* dK = (dA ⊙ E)^T Qs + diag(F) (X + 1 dz1^T) */
    if (gr->dk) {
      real *dk = gr->dk + r0 * K;
      at_gemm(AT_T, AT_N, n, K, n, p->scale, w.dA, C, ch.q, ch.ldq, 1, dk, ch.ldq);
      for (int64_t j = 0; j < n; j++) {
        real *dkj = dk + j * ch.ldq, f = w.F[j];
        const real *xj = w.X + j * K;
        for (int64_t d = 0; d < K; d++) dkj[d] += f * (xj[d] + (p->normalize ? dz1[d] : 0));
      }
    }
    /* from here on QS0 holds diag(P) dN */
    for (int64_t r = 0; r < n; r++)
      for (int64_t j = 0; j < V; j++) w.QS0[r * V + j] = w.P[r] * w.N[r * V + j];
    /* dQs = (dA ⊙ E) K + diag(P) dN S0^T + (dD ⊙ P) z0^T; dq = scale dQs */
    if (gr->dq) {
      real *dq = gr->dq + r0 * K;
      at_gemm(AT_N, AT_N, n, K, n, p->scale, w.dA, C, ch.k, ch.ldq, 1, dq, ch.ldq);
      at_gemm(AT_N, AT_T, n, K, V, p->scale, w.QS0, V, S0, V, 1, dq, ch.ldq);
      if (p->normalize)
        for (int64_t r = 0; r < n; r++) {
          real s = p->scale * w.dD[r] * w.P[r];
          for (int64_t d = 0; d < K; d++) dq[r * ch.ldq + d] += s * z0[d];
        }
    }
    /* dS0 = Lam dS1 + Qs^T diag(P) dN;  dz0 = Lam dz1 + Qs^T (dD ⊙ P) */
    for (int64_t i = 0; i < SS; i++) w.dS0[i] = ch.lam * w.dS[i];
    at_gemm(AT_T, AT_N, K, V, n, p->scale, ch.q, ch.ldq, w.QS0, V, 1, w.dS0, V);
    if (p->normalize)
      for (int64_t r = 0; r < n; r++) {
        const real *q = ch.q + r * ch.ldq;
        real s = p->scale * w.dD[r] * w.P[r];
        for (int64_t d = 0; d < K; d++) dz0[d] += s * q[d];
      }
    real *t = w.dS;
    w.dS = w.dS0;
    w.dS0 = t;
  }
  if (gr->dh0)
    for (int64_t i = 0; i < KV; i++) gr->dh0[bh * KV + i] += w.dS[i];
  if (p->normalize && gr->dz0)
    for (int64_t d = 0; d < K; d++) gr->dz0[bh * K + d] += w.dS[KV + d];
}
