/* ops/attention/dplr_chunk.c: the chunkwise (training) form of gla / dplr,
 * forward and hand-written backward.
 *
 * Inside a chunk of n <= C tokens (local index r), with S0 the state entering
 * it, e_r = exp(gk_r) per key channel and the (never formed) cumulative
 * log-decay c_r = gk_0 + ... + gk_r:
 *
 *   E[r,j] = e_{j+1} ... e_r = exp(c_r - c_j)  (j <= r; E[r,r] = 1)
 *   P[r]   = e_0 ... e_r,  P[-1] = 1            decay from S0 through r
 *   F[j]   = E[n-1,j],  Lam = P[n-1]            decay to the chunk end
 *
 * Unrolling S_r = D_r S_{r-1} + k_r v_r^T + b_r u_r^T with u_r = S_{r-1}^T a_r:
 *
 *   S_r = diag(P[r]) S0 + sum_{j<=r} diag(E[r,j]) (k_j v_j^T + b_j u_j^T)
 *
 * so with the pair matrices (qs = scale q; a's rows see the state BEFORE
 * their token's decay, hence E[r-1,j]):
 *
 *   Aqk[r,j] = sum_d qs[r,d] k[j,d] E[r,j,d]     Aqb: b instead of k   (j <= r)
 *   Aak[r,j] = sum_d  a[r,d] k[j,d] E[r-1,j,d]   Aab: b instead of k   (j <  r)
 *   QP = qs ⊙ P,  AP[r] = a[r] ⊙ P[r-1],  KF = k ⊙ F,  BF = b ⊙ F
 *
 * the chunk is (dplr; gla has no a, b and U = 0):
 *
 *   X  = AP S0 + Aak V,        (I - Aab) U = X  (forward substitution: the
 *                                                 rows u_r for every r at once)
 *   O  = QP S0 + Aqk V + Aqb U
 *   S1 = diag(Lam) S0 + KF^T V + BF^T U
 *
 * Every decay is a product of factors in (0, 1] built token by token (the
 * E rows are kept one query row at a time), so nothing is exp of a positive
 * number, masked (j > r) entries are never formed, and a per-channel decay
 * is never split as exp(c_r) / exp(c_j). Products below 1e-30 are flushed
 * to zero. The pair sums are direct O(n^2 K) loops; the rest are GEMMs.
 *
 * Backward of one chunk (dO given, dS1 carried from the next chunk; dc_r is
 * the gradient of the cumulative log-decay, dgk_i = sum_{r >= i} dc_r):
 *
 *   from S1:  dS0 = diag(Lam) dS1,  dLam = rowsum(S0 ⊙ dS1),
 *             dV = KF dS1,  dKF = V dS1^T,  dU = BF dS1,  dBF = U dS1^T
 *   from O:   dQP = dO S0^T,  dS0 += QP^T dO,  dAqk = tril(dO V^T),
 *             dV += Aqk^T dO,  dAqb = tril(dO U^T),  dU += Aqb^T dO
 *   from U:   Y = (I - Aab)^-T dU (back substitution),  dAab = strict_tril(Y U^T),
 *             dAP = Y S0^T,  dS0 += AP^T Y,  dAak = strict_tril(Y V^T),  dV += Aak^T Y
 *   pairs (j < r; the diagonal pairs, E = 1, feed dq dk da db but not dc):
 *             G[r,j] = (dAqk[r,j] qs_r ⊙ k_j + dAqb[r,j] qs_r ⊙ b_j
 *                       + dAak[r+1,j] a_{r+1} ⊙ k_j + dAab[r+1,j] a_{r+1} ⊙ b_j) ⊙ E[r,j]
 *             dqs_r += sum_j (dAqk[r,j] k_j + dAqb[r,j] b_j) ⊙ E[r,j]   (and a_{r+1}
 *             likewise with dAak, dAab), dk_j, db_j by the transposed sums,
 *             dc_r += sum_j G[r,j],  dc_j -= sum_r G[r,j]
 *   decays:   dc_r += dQP_r ⊙ QP_r;  dc_{r-1} += dAP_r ⊙ AP_r;
 *             dc_j -= dKF_j ⊙ KF_j + dBF_j ⊙ BF_j and dc_{n-1} += the same (j < n-1);
 *             dc_{n-1} += dLam ⊙ Lam
 *   dq = scale dqs; dS0 is the next (earlier) chunk's dS1.
 * Terms whose decay is the constant 1 (E[r,r], F[n-1], P[-1]) are left out
 * of dc instead of being added and subtracted: that would leave rounding
 * noise of the size of O(1) terms in gradients that are tiny under strong
 * decay.
 */
#include <math.h>
#include <string.h>

#include "core/gemm.h"
#include "ops/attention/dplr_kernels.h"

/* ---- workspace ------------------------------------------------------------------ */

typedef struct work {
  real *dS, *dS0;                                             /* K x V */
  real *Qs, *Kc, *Ac, *Bc, *dec, *P, *F, *QP, *KF, *AP, *BF;  /* C x K */
  real *dQs, *dK, *dA, *dB, *dQP, *dKF, *dAP, *dBF, *dc;      /* C x K */
  real *dKcol, *dBcol;                                        /* C x K */
  real *U, *dU, *dVl;                                         /* C x V */
  real *Aqk, *Aqb, *Aak, *Aab, *dAqk, *dAqb, *dAak, *dAab;    /* C x C */
  real *Erow;                                                 /* (C + 1) x K */
  real *Lam, *dLam, *dqrow, *darow;                           /* K */
} work;

static size_t pad(size_t n) { return (n + 15) & ~(size_t)15; } /* 64-byte multiples */

static size_t carve(const at_dplr_prob *p, real *base, work *w) {
  const size_t K = (size_t)p->K, V = (size_t)p->V, C = (size_t)p->C;
  size_t off = 0;
  work z;
  if (!w) w = &z;
  real **kv[] = {&w->dS, &w->dS0};
  real **ck[] = {&w->Qs,  &w->Kc,  &w->Ac,  &w->Bc,  &w->dec, &w->P,   &w->F,    &w->QP,
                 &w->KF,  &w->AP,  &w->BF,  &w->dQs, &w->dK,  &w->dA,  &w->dB,   &w->dQP,
                 &w->dKF, &w->dAP, &w->dBF, &w->dc,  &w->dKcol, &w->dBcol};
  real **cv[] = {&w->U, &w->dU, &w->dVl};
  real **cc[] = {&w->Aqk, &w->Aqb, &w->Aak, &w->Aab, &w->dAqk, &w->dAqb, &w->dAak, &w->dAab};
  real **kk[] = {&w->Lam, &w->dLam, &w->dqrow, &w->darow};
  const struct { real ***ptrs; int n; size_t size; } groups[] = {
      {kv, AT_ARRAY_LEN(kv), K * V}, {ck, AT_ARRAY_LEN(ck), C * K},
      {cv, AT_ARRAY_LEN(cv), C * V}, {cc, AT_ARRAY_LEN(cc), C * C},
      {kk, AT_ARRAY_LEN(kk), K}};
  for (int g = 0; g < AT_ARRAY_LEN(groups); g++)
    for (int i = 0; i < groups[g].n; i++) {
      if (base) *groups[g].ptrs[i] = base + off;
      off += pad(groups[g].size);
    }
  if (base) w->Erow = base + off;
  off += pad((C + 1) * K);
  return off;
}

size_t at_dplr_chunk_work(const at_dplr_prob *p) { return carve(p, NULL, NULL); }

static inline real flush(real x) { return x < AT_DPLR_TINY ? 0 : x; }

/* ---- the chunk's inputs and decays ---------------------------------------------- */

typedef struct chunk {
  int64_t b, h, t0, n;
} chunk;

static int64_t rowi(const at_dplr_prob *p, const chunk *ch, int64_t r) {
  return at_dplr_row(p, ch->b, ch->t0 + r, ch->h);
}

/* Loads qs, k, a, b and e = exp(gk) of the chunk. */
static void load(const at_dplr_prob *p, const chunk *ch, work *w) {
  const int64_t K = p->K, n = ch->n;
  const size_t row = (size_t)K * sizeof(real);
  for (int64_t r = 0; r < n; r++) {
    int64_t i = rowi(p, ch, r) * K;
    for (int64_t d = 0; d < K; d++) w->Qs[r * K + d] = p->scale * p->q[i + d];
    memcpy(w->Kc + r * K, p->k + i, row);
    if (p->lowrank) {
      memcpy(w->Ac + r * K, p->a + i, row);
      memcpy(w->Bc + r * K, p->b + i, row);
    }
    for (int64_t d = 0; d < K; d++) w->dec[r * K + d] = (real)exp((double)p->g[i + d]);
  }
}

/* Advances the decay rows to query row r: Er[0] = P[r], Er[1 + j] = E[r, j]. */
static void advance_rows(const work *w, int64_t K, int64_t r) {
  real *Er = w->Erow;
  const real *er = w->dec + r * K;
  for (int64_t j = -1; j < r; j++) {
    real *e = Er + (j + 1) * K;
#pragma omp simd
    for (int64_t d = 0; d < K; d++) e[d] = flush(e[d] * er[d]);
  }
  for (int64_t d = 0; d < K; d++) Er[(r + 1) * K + d] = 1;
}

static inline real dot(const real *x, const real *y, const real *e, int64_t K) {
  real s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t d = 0; d < K; d++) s += x[d] * y[d] * e[d];
  return s;
}

/* P, F, Lam and the pair matrices by direct sums; entries outside their
 * triangle are zero (the GEMMs read whole n x n blocks). */
static void pairs(const at_dplr_prob *p, int64_t n, work *w) {
  const int64_t K = p->K, C = p->C;
  const int lr = p->lowrank;
  for (int64_t d = 0; d < K; d++) w->Erow[d] = 1;
  if (lr)
    for (int64_t j = 0; j < n; j++) w->Aak[j] = w->Aab[j] = 0; /* row 0 */
  for (int64_t r = 0; r < n; r++) {
    advance_rows(w, K, r);
    memcpy(w->P + r * K, w->Erow, (size_t)K * sizeof(real));
    const real *qr = w->Qs + r * K, *an = lr && r + 1 < n ? w->Ac + (r + 1) * K : NULL;
    for (int64_t j = 0; j <= r; j++) {
      const real *e = w->Erow + (j + 1) * K, *kj = w->Kc + j * K, *bj = w->Bc + j * K;
      w->Aqk[r * C + j] = dot(qr, kj, e, K);
      if (!lr) continue;
      w->Aqb[r * C + j] = dot(qr, bj, e, K);
      if (an) { /* row r + 1 of the a-matrices reads E row r */
        w->Aak[(r + 1) * C + j] = dot(an, kj, e, K);
        w->Aab[(r + 1) * C + j] = dot(an, bj, e, K);
      }
    }
    for (int64_t j = r + 1; j < n; j++) {
      w->Aqk[r * C + j] = 0;
      if (lr) w->Aqb[r * C + j] = 0;
      if (an) w->Aak[(r + 1) * C + j] = w->Aab[(r + 1) * C + j] = 0;
    }
  }
  memcpy(w->Lam, w->Erow, (size_t)K * sizeof(real));
  memcpy(w->F, w->Erow + K, (size_t)(n * K) * sizeof(real));
}

/* What the output, the next state and the backward need: the pair
 * matrices, the decayed operands and U. V rows are read in place. */
static void prepare(const at_dplr_prob *p, const chunk *ch, const real *S0, work *w) {
  const int64_t K = p->K, V = p->V, C = p->C, n = ch->n, ldv = p->H * V;
  load(p, ch, w);
  pairs(p, n, w);
#pragma omp simd
  for (int64_t i = 0; i < n * K; i++) {
    w->QP[i] = w->Qs[i] * w->P[i];
    w->KF[i] = w->Kc[i] * w->F[i];
  }
  if (!p->lowrank) return;
  for (int64_t r = 0; r < n; r++)
    for (int64_t d = 0; d < K; d++) {
      int64_t i = r * K + d;
      w->AP[i] = w->Ac[i] * (r ? w->P[i - K] : 1);
      w->BF[i] = w->Bc[i] * w->F[i];
    }
  /* X = AP S0 + Aak V, then U = (I - Aab)^-1 X in place */
  const real *vin = p->v + rowi(p, ch, 0) * V;
  at_gemm(AT_N, AT_N, n, V, K, 1, w->AP, K, S0, V, 0, w->U, V);
  at_gemm(AT_N, AT_N, n, V, n, 1, w->Aak, C, vin, ldv, 1, w->U, V);
  for (int64_t r = 1; r < n; r++) {
    real *u = w->U + r * V;
    for (int64_t i = 0; i < r; i++) {
      real l = w->Aab[r * C + i];
      const real *ui = w->U + i * V;
#pragma omp simd
      for (int64_t j = 0; j < V; j++) u[j] += l * ui[j];
    }
  }
}

/* ---- forward ------------------------------------------------------------------- */

void at_dplr_chunk_forward(const at_dplr_prob *p, int64_t b, int64_t h, real *S, real *o,
                           real *ckpt, real *work_mem) {
  work w;
  carve(p, work_mem, &w);
  const int64_t K = p->K, V = p->V, C = p->C, KV = K * V, ldv = p->H * V;
  for (int64_t c = 0; c < at_dplr_n_chunks(p); c++) {
    chunk ch = {b, h, c * C, AT_MIN(C, p->T - c * C)};
    const real *vin = p->v + rowi(p, &ch, 0) * V;
    if (ckpt) memcpy(ckpt + c * KV, S, (size_t)KV * sizeof(real));
    prepare(p, &ch, S, &w);
    if (o) { /* O = QP S0 + Aqk V + Aqb U */
      real *oc = o + rowi(p, &ch, 0) * V;
      at_gemm(AT_N, AT_N, ch.n, V, K, 1, w.QP, K, S, V, 0, oc, ldv);
      at_gemm(AT_N, AT_N, ch.n, V, ch.n, 1, w.Aqk, C, vin, ldv, 1, oc, ldv);
      if (p->lowrank) at_gemm(AT_N, AT_N, ch.n, V, ch.n, 1, w.Aqb, C, w.U, V, 1, oc, ldv);
    }
    /* S1 = diag(Lam) S0 + KF^T V + BF^T U */
    for (int64_t d = 0; d < K; d++)
      for (int64_t j = 0; j < V; j++) S[d * V + j] *= w.Lam[d];
    at_gemm(AT_T, AT_N, K, V, ch.n, 1, w.KF, K, vin, ldv, 1, S, V);
    if (p->lowrank) at_gemm(AT_T, AT_N, K, V, ch.n, 1, w.BF, K, w.U, V, 1, S, V);
  }
}

/* ---- backward ------------------------------------------------------------------ */

/* Zeroes the entries of an n x n block (row stride C) outside j <= r - strict. */
static void keep_lower(real *A, int64_t n, int64_t C, int strict) {
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = r + 1 - strict; j < n; j++)
      if (j >= 0) A[r * C + j] = 0;
}

/* The pair terms of dqs, dk, da, db and dc from the dA matrices, recomputing
 * the rows of E exactly as the forward did. */
static void pairs_backward(const at_dplr_prob *p, int64_t n, work *w) {
  const int64_t K = p->K, C = p->C;
  const int lr = p->lowrank;
  memset(w->dKcol, 0, (size_t)(n * K) * sizeof(real));
  memset(w->dBcol, 0, (size_t)(n * K) * sizeof(real));
  for (int64_t d = 0; d < K; d++) w->Erow[d] = 1;
  for (int64_t r = 0; r < n; r++) {
    advance_rows(w, K, r);
    const real *qr = w->Qs + r * K, *kr = w->Kc + r * K, *br = w->Bc + r * K;
    const int has_next = lr && r + 1 < n;
    const real *an = has_next ? w->Ac + (r + 1) * K : w->Ac; /* read only when has_next */
    const real *cqk = w->dAqk + r * C, *cqb = w->dAqb + r * C;
    const real *cak = w->dAak + (r + 1) * C, *cab = w->dAab + (r + 1) * C;
    memset(w->dqrow, 0, (size_t)K * sizeof(real));
    memset(w->darow, 0, (size_t)K * sizeof(real));
    for (int64_t j = 0; j < r; j++) {
      const real *e = w->Erow + (j + 1) * K, *kj = w->Kc + j * K, *bj = w->Bc + j * K;
      real c1 = cqk[j], c2 = lr ? cqb[j] : 0, c3 = has_next ? cak[j] : 0, c4 = has_next ? cab[j] : 0;
      real *dkc = w->dKcol + j * K, *dbc = w->dBcol + j * K;
      if (!lr) {
        if (c1 == 0) continue;
#pragma omp simd
        for (int64_t d = 0; d < K; d++) {
          w->dqrow[d] += c1 * kj[d] * e[d];
          dkc[d] += c1 * qr[d] * e[d];
        }
        continue;
      }
#pragma omp simd
      for (int64_t d = 0; d < K; d++) {
        real ke = kj[d] * e[d], be = bj[d] * e[d], qe = qr[d] * e[d], ae = an[d] * e[d];
        w->dqrow[d] += c1 * ke + c2 * be;
        w->darow[d] += c3 * ke + c4 * be;
        dkc[d] += c1 * qe + c3 * ae;
        dbc[d] += c2 * qe + c4 * ae;
      }
    }
    /* the diagonal pairs (E = 1): no log-decay gradient */
    real c1 = cqk[r], c2 = lr ? cqb[r] : 0, c3 = has_next ? cak[r] : 0, c4 = has_next ? cab[r] : 0;
    real *dq = w->dQs + r * K, *dk = w->dK + r * K, *dc = w->dc + r * K;
#pragma omp simd
    for (int64_t d = 0; d < K; d++) {
      dq[d] += w->dqrow[d] + c1 * kr[d];
      dk[d] += c1 * qr[d];
      dc[d] += qr[d] * w->dqrow[d];
    }
    if (!lr) continue;
    real *dbv = w->dB + r * K;
#pragma omp simd
    for (int64_t d = 0; d < K; d++) {
      dq[d] += c2 * br[d];
      dbv[d] += c2 * qr[d];
    }
    if (!has_next) continue;
    real *da = w->dA + (r + 1) * K;
#pragma omp simd
    for (int64_t d = 0; d < K; d++) {
      da[d] += w->darow[d] + c3 * kr[d] + c4 * br[d];
      dk[d] += c3 * an[d];
      dbv[d] += c4 * an[d];
      dc[d] += an[d] * w->darow[d];
    }
  }
#pragma omp simd
  for (int64_t i = 0; i < n * K; i++) {
    w->dK[i] += w->dKcol[i];
    w->dc[i] -= w->Kc[i] * w->dKcol[i];
  }
  if (lr)
#pragma omp simd
    for (int64_t i = 0; i < n * K; i++) {
      w->dB[i] += w->dBcol[i];
      w->dc[i] -= w->Bc[i] * w->dBcol[i];
    }
}

/* The gradients that flow from O and S1 into the chunk's intermediates. */
static void output_state_backward(const at_dplr_prob *p, const chunk *ch, const real *S0,
                                  const real *dO, work *w) {
  const int64_t K = p->K, V = p->V, C = p->C, n = ch->n, ldv = p->H * V;
  const real *vin = p->v + rowi(p, ch, 0) * V;
  const int lr = p->lowrank;
  /* from S1 = diag(Lam) S0 + KF^T V + BF^T U */
  at_gemm(AT_N, AT_N, n, V, K, 1, w->KF, K, w->dS, V, 0, w->dVl, V);
  at_gemm(AT_N, AT_T, n, K, V, 1, vin, ldv, w->dS, V, 0, w->dKF, K);
  if (lr) {
    at_gemm(AT_N, AT_N, n, V, K, 1, w->BF, K, w->dS, V, 0, w->dU, V);
    at_gemm(AT_N, AT_T, n, K, V, 1, w->U, V, w->dS, V, 0, w->dBF, K);
  }
  for (int64_t d = 0; d < K; d++) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < V; j++) s += (double)S0[d * V + j] * w->dS[d * V + j];
    w->dLam[d] = (real)s;
#pragma omp simd
    for (int64_t j = 0; j < V; j++) w->dS0[d * V + j] = w->Lam[d] * w->dS[d * V + j];
  }
  /* from O = QP S0 + Aqk V + Aqb U */
  if (dO) {
    at_gemm(AT_N, AT_T, n, K, V, 1, dO, ldv, S0, V, 0, w->dQP, K);
    at_gemm(AT_T, AT_N, K, V, n, 1, w->QP, K, dO, ldv, 1, w->dS0, V);
    at_gemm(AT_N, AT_T, n, n, V, 1, dO, ldv, vin, ldv, 0, w->dAqk, C);
    at_gemm(AT_T, AT_N, n, V, n, 1, w->Aqk, C, dO, ldv, 1, w->dVl, V);
    if (lr) {
      at_gemm(AT_N, AT_T, n, n, V, 1, dO, ldv, w->U, V, 0, w->dAqb, C);
      at_gemm(AT_T, AT_N, n, V, n, 1, w->Aqb, C, dO, ldv, 1, w->dU, V);
    }
  } else {
    memset(w->dQP, 0, (size_t)(n * K) * sizeof(real));
    for (int64_t r = 0; r < n; r++) {
      memset(w->dAqk + r * C, 0, (size_t)n * sizeof(real));
      if (lr) memset(w->dAqb + r * C, 0, (size_t)n * sizeof(real));
    }
  }
  keep_lower(w->dAqk, n, C, 0);
  if (!lr) return;
  keep_lower(w->dAqb, n, C, 0);
  /* from (I - Aab) U = X = AP S0 + Aak V: Y = (I - Aab)^-T dU, in place */
  for (int64_t r = n - 2; r >= 0; r--) {
    real *y = w->dU + r * V;
    for (int64_t i = r + 1; i < n; i++) {
      real l = w->Aab[i * C + r];
      const real *yi = w->dU + i * V;
#pragma omp simd
      for (int64_t j = 0; j < V; j++) y[j] += l * yi[j];
    }
  }
  at_gemm(AT_N, AT_T, n, n, V, 1, w->dU, V, w->U, V, 0, w->dAab, C);
  at_gemm(AT_N, AT_T, n, n, V, 1, w->dU, V, vin, ldv, 0, w->dAak, C);
  keep_lower(w->dAab, n, C, 1);
  keep_lower(w->dAak, n, C, 1);
  at_gemm(AT_N, AT_T, n, K, V, 1, w->dU, V, S0, V, 0, w->dAP, K);
  at_gemm(AT_T, AT_N, K, V, n, 1, w->AP, K, w->dU, V, 1, w->dS0, V);
  at_gemm(AT_T, AT_N, n, V, n, 1, w->Aak, C, w->dU, V, 1, w->dVl, V);
}

/* The decayed operands QP, KF, AP, BF and Lam: their input and dc terms. */
static void decays_backward(const at_dplr_prob *p, int64_t n, work *w) {
  const int64_t K = p->K;
  for (int64_t r = 0; r < n; r++)
#pragma omp simd
    for (int64_t d = 0; d < K; d++) {
      int64_t i = r * K + d;
      w->dQs[i] += w->dQP[i] * w->P[i];
      w->dc[i] += w->dQP[i] * w->QP[i];
      w->dK[i] += w->dKF[i] * w->F[i];
      if (r < n - 1) { /* F[n-1] = 1 has no log-decay gradient */
        w->dc[i] -= w->dKF[i] * w->KF[i];
        w->dc[(n - 1) * K + d] += w->dKF[i] * w->KF[i];
      }
    }
  if (p->lowrank)
    for (int64_t r = 0; r < n; r++)
#pragma omp simd
      for (int64_t d = 0; d < K; d++) {
        int64_t i = r * K + d;
        w->dB[i] += w->dBF[i] * w->F[i];
        if (r < n - 1) {
          w->dc[i] -= w->dBF[i] * w->BF[i];
          w->dc[(n - 1) * K + d] += w->dBF[i] * w->BF[i];
        }
        if (r > 0) { /* AP[r] = a[r] P[r-1]; P[-1] = 1 */
          w->dA[i] += w->dAP[i] * w->P[i - K];
          w->dc[i - K] += w->dAP[i] * w->AP[i];
        } else {
          w->dA[i] += w->dAP[i];
        }
      }
  for (int64_t d = 0; d < K; d++) w->dc[(n - 1) * K + d] += w->dLam[d] * w->Lam[d];
}

/* Adds the chunk's gradients into the inputs' (dgk_r = sum_{i >= r} dc_i). */
static void scatter(const at_dplr_prob *p, const chunk *ch, const at_dplr_grads *gr, work *w) {
  const int64_t K = p->K, V = p->V, n = ch->n;
  for (int64_t r = n - 2; r >= 0; r--)
#pragma omp simd
    for (int64_t d = 0; d < K; d++) w->dc[r * K + d] += w->dc[(r + 1) * K + d];
  for (int64_t r = 0; r < n; r++) {
    int64_t i = rowi(p, ch, r);
    real *dst[] = {gr->dq, gr->dk, gr->dg, p->lowrank ? gr->da : NULL, p->lowrank ? gr->db : NULL};
    const real *src[] = {w->dQs, w->dK, w->dc, w->dA, w->dB};
    for (int s = 0; s < AT_ARRAY_LEN(dst); s++) {
      if (!dst[s]) continue;
      real f = s == 0 ? p->scale : 1;
#pragma omp simd
      for (int64_t d = 0; d < K; d++) dst[s][i * K + d] += f * src[s][r * K + d];
    }
    if (gr->dv)
#pragma omp simd
      for (int64_t j = 0; j < V; j++) gr->dv[i * V + j] += w->dVl[r * V + j];
  }
}

void at_dplr_chunk_backward(const at_dplr_prob *p, int64_t b, int64_t h, const real *ckpt,
                            const at_dplr_grads *gr, real *work_mem) {
  work w;
  carve(p, work_mem, &w);
  const int64_t K = p->K, V = p->V, C = p->C, KV = K * V;
  if (gr->d_ht)
    memcpy(w.dS, gr->d_ht + (b * p->H + h) * KV, (size_t)KV * sizeof(real));
  else
    memset(w.dS, 0, (size_t)KV * sizeof(real));
  for (int64_t c = at_dplr_n_chunks(p) - 1; c >= 0; c--) {
    chunk ch = {b, h, c * C, AT_MIN(C, p->T - c * C)};
    const int64_t n = ch.n;
    const real *S0 = ckpt + c * KV;
    prepare(p, &ch, S0, &w);
    real *zero[] = {w.dQs, w.dK, w.dA, w.dB, w.dc};
    for (int i = 0; i < AT_ARRAY_LEN(zero); i++) memset(zero[i], 0, (size_t)(n * K) * sizeof(real));
    output_state_backward(p, &ch, S0, gr->d_o ? gr->d_o + rowi(p, &ch, 0) * V : NULL, &w);
    pairs_backward(p, n, &w);
    decays_backward(p, n, &w);
    scatter(p, &ch, gr, &w);
    real *t = w.dS;
    w.dS = w.dS0;
    w.dS0 = t;
  }
  if (gr->dh0) {
    real *dh0 = gr->dh0 + (b * p->H + h) * KV;
    for (int64_t i = 0; i < KV; i++) dh0[i] += w.dS[i];
  }
}
