/* ops/attention/delta_chunk.c: the chunkwise (training) form of the gated
 * delta rule / simple GLA, forward and hand-written backward.
 *
 * Inside a chunk of n <= C tokens (local index r), with S0 the state entering
 * it and a_r = exp(g_r) per key channel:
 *
 *   E[r,j] = a_{j+1} ... a_r   (j <= r; E[r,r] = 1)    decay from j to r
 *   P[r]   = a_0 ... a_r                               decay from S0 to r
 *   F[j]   = E[n-1,j],  Lam = P[n-1]                   decay to the chunk end
 *   Aqk[r,j] = sum_d qs[r,d] k[j,d] E[r,j,d]   (j <= r),   qs = scale q
 *   Akk[r,j] = sum_d  k[r,d] k[j,d] E[r,j,d]   (j <  r)
 *
 * delta:  (I + diag(beta) Akk) U = diag(beta) X,   X = V - (K ⊙ P) S0
 *         (the UT transform: u_r = beta_r (v_r - S~_r^T k_r) for every r at
 *          once, by forward substitution)
 * plain:  U = V
 *         O  = (Qs ⊙ P) S0 + Aqk U
 *         S1 = diag(Lam) S0 + (K ⊙ F)^T U
 *
 * Every decay is a product of factors in (0, 1], built token by token, so
 * nothing is ever exp of a positive number, masked (j > r) entries are
 * never formed, and a per-channel decay is never split as exp(b_r)/exp(b_j).
 * With a per-channel gate Aqk and Akk are direct O(n^2 K) sums (the E rows
 * are kept one query row at a time); with a per-head gate (or none) they are
 * (Qs K^T) ⊙ E and (K K^T) ⊙ E with an n x n scalar E and GEMMs.
 *
 * Backward of one chunk (dO given, dS1 carried from the next chunk; b_r is
 * the cumulative log-decay, dg_i = sum_{r >= i} db_r):
 *
 *   dU   = Aqk^T dO + (K ⊙ F) dS1          dAqk = tril(dO U^T)
 *   dS0  = diag(Lam) dS1 + (Qs ⊙ P)^T dO   dLam = rowsum(S0 ⊙ dS1)
 *   d(Qs ⊙ P) = dO S0^T                    d(K ⊙ F) = U dS1^T
 *   delta:  dY = (I + L)^-T dU  (back substitution), L = diag(beta) Akk,
 *           dL = -strict_tril(dY U^T),   dbeta_r = X_r . dY_r + sum_j Akk[r,j] dL[r,j],
 *           dX = beta ⊙ dY,  dV = dX,  d(K ⊙ P) = -dX S0^T,  dS0 -= (K ⊙ P)^T dX,
 *           dAkk = diag(beta) dL
 *   plain:  dV = dU
 *   pairs:  dqs[r] += sum_j dAqk[r,j] k[j] ⊙ E[r,j]
 *           dk[j]  += sum_r (dAqk[r,j] qs[r] + dAkk[r,j] k[r]) ⊙ E[r,j]
 *           dk[r]  += sum_j dAkk[r,j] k[j] ⊙ E[r,j]
 *           db[r]  += sum_j G[r,j],  db[j] -= sum_r G[r,j]   (j < r),
 *           G[r,j] = (dAqk[r,j] qs[r] + dAkk[r,j] k[r]) ⊙ k[j] ⊙ E[r,j]
 *   decays: db[r] += d(Qs⊙P)[r] ⊙ (Qs⊙P)[r] + d(K⊙P)[r] ⊙ (K⊙P)[r];
 *           for j < n-1: db[j] -= d(K⊙F)[j] ⊙ (K⊙F)[j], db[n-1] += the same;
 *           db[n-1] += dLam ⊙ Lam
 *   dq = scale dqs; dS0 is the next (earlier) chunk's dS1.
 * Terms whose decay is the constant 1 (E[r,r], F[n-1]) are left out of db
 * instead of being added and subtracted: that would leave rounding noise of
 * the size of O(1) terms in gradients that are tiny under strong decay.
 */
#if defined(__AVX512F__) && defined(__OPTIMIZE__) && !defined(__clang__)
/* JB pairs are one zmm: GCC's default on AVX-512 targets splits them into two ymm */
#pragma GCC target("prefer-vector-width=512")
#endif
#include <math.h>
#include <string.h>

#include "core/fastmath.h"
#include "core/gemm.h"
#include "ops/attention/lin_kernels.h"

/* ---- workspace ------------------------------------------------------------------ */

typedef struct work {
  real *dS, *dS0;                                     /* K x V */
  real *Qs, *Kc, *P, *F, *a, *QP, *KP, *KF;            /* C x K */
  real *dQs, *dK, *dQP, *dKP, *dKF, *db, *dKcol;       /* C x K */
  real *X, *U, *dU;                                   /* C x V */
  real *Aqk, *Akk, *E, *dAqk, *dAkk;                  /* C x C */
  real *Erow;                                         /* (C + 1) x K */
  real *KcT, *ErT;                                    /* K x CP, K x (CP + 1) */
  real *Lam, *dLam, *dqrow, *dkrow;                   /* K */
  real *beta, *dbeta, *dbs, *erow, *lc;               /* C + 1 */
} work;

static size_t pad(size_t n) { return (n + 15) & ~(size_t)15; } /* 64-byte multiples */

/* Pair columns computed together in the forward's per-channel sums (64
 * bytes of them: one AVX-512 or two AVX2 registers per sum). */
#define JB ((int64_t)(64 / sizeof(real)))
/* The chunk size rounded up to whole JB blocks (the channel-major copies of
 * the forward are read in whole blocks). */
static int64_t chunk_padded(const at_lin_prob *p) { return (p->C + JB - 1) / JB * JB; }

static size_t carve(const at_lin_prob *p, real *base, work *w) {
  const size_t K = (size_t)p->K, V = (size_t)p->V, C = (size_t)p->C;
  size_t off = 0;
#define TAKE(ptr, n)                           \
  do {                                         \
    if (base) (ptr) = base + off;              \
    off += pad(n);                             \
  } while (0)
  work z;
  if (!w) w = &z;
  TAKE(w->dS, K * V); TAKE(w->dS0, K * V);
  TAKE(w->Qs, C * K); TAKE(w->Kc, C * K); TAKE(w->P, C * K); TAKE(w->F, C * K);
  TAKE(w->a, C * K); TAKE(w->QP, C * K); TAKE(w->KP, C * K); TAKE(w->KF, C * K);
  TAKE(w->dQs, C * K); TAKE(w->dK, C * K); TAKE(w->dQP, C * K); TAKE(w->dKP, C * K);
  TAKE(w->dKF, C * K); TAKE(w->db, C * K); TAKE(w->dKcol, C * K);
  TAKE(w->X, C * V); TAKE(w->U, C * V); TAKE(w->dU, C * V);
  TAKE(w->Aqk, C * C); TAKE(w->Akk, C * C); TAKE(w->E, C * C); TAKE(w->dAqk, C * C);
  TAKE(w->dAkk, C * C);
  TAKE(w->Erow, (C + 1) * K);
  const size_t CP = (size_t)chunk_padded(p);
  TAKE(w->KcT, K * CP); TAKE(w->ErT, K * (CP + 1));
  TAKE(w->Lam, K); TAKE(w->dLam, K); TAKE(w->dqrow, K); TAKE(w->dkrow, K);
  TAKE(w->beta, C + 1); TAKE(w->dbeta, C + 1); TAKE(w->dbs, C + 1); TAKE(w->erow, C + 1); TAKE(w->lc, C + 1);
#undef TAKE
  return off;
}

size_t at_lin_chunk_work(const at_lin_prob *p) { return carve(p, NULL, NULL); }

static inline real flush(real x) { return x < AT_LIN_TINY ? 0 : x; }

/* ---- the chunk's inputs and decays ---------------------------------------------- */

typedef struct chunk {
  int64_t b, h, t0, n;
} chunk;

static int64_t rowi(const at_lin_prob *p, const chunk *ch, int64_t r) {
  return (ch->b * p->T + ch->t0 + r) * p->H + ch->h;
}

/* Loads qs, k, beta and a = exp(g) of the chunk. */
static void load(const at_lin_prob *p, const chunk *ch, work *w) {
  const int64_t K = p->K, n = ch->n;
  for (int64_t r = 0; r < n; r++) {
    int64_t i = rowi(p, ch, r);
    const real *q = p->q + i * K, *k = p->k + i * K;
    for (int64_t d = 0; d < K; d++) w->Qs[r * K + d] = p->scale * q[d];
    memcpy(w->Kc + r * K, k, (size_t)K * sizeof(real));
    w->beta[r] = p->delta ? p->beta[i] : 1;
    if (p->gate == AT_LIN_GATE_CHANNEL) {
      const real *g = p->g + i * K;
#pragma omp simd
      for (int64_t d = 0; d < K; d++) w->a[r * K + d] = at_expr(g[d]);
    } else if (p->gate == AT_LIN_GATE_HEAD) {
      w->a[r] = at_expr(p->g[i]);
    }
  }
}

/* Per-channel gate: P, F, Lam and the pair matrices Aqk (j <= r) and Akk
 * (j < r) by direct sums. The decays are kept channel-major, ErT[d][0] the
 * S0 row (P) and ErT[d][1 + j] = E[r, j, d] while row r is processed, with
 * K channel-major too (KcT[d][j]), so that the sums over d run for JB pairs
 * (r, j..j+JB-1) at once in vector registers instead of one pair at a time
 * with a horizontal sum each. Entries past the chunk are zero. */
static void pairs_channel(const at_lin_prob *p, int64_t n, work *w) {
  const int64_t K = p->K, C = p->C, CP = chunk_padded(p), LE = CP + 1;
  real *ErT = w->ErT, *KcT = w->KcT;
  memset(ErT, 0, (size_t)(K * LE) * sizeof(real));
  memset(KcT, 0, (size_t)(K * CP) * sizeof(real));
  for (int64_t d = 0; d < K; d++) ErT[d * LE] = 1;
  for (int64_t j = 0; j < n; j++)
    for (int64_t d = 0; d < K; d++) KcT[d * CP + j] = w->Kc[j * K + d];
  for (int64_t r = 0; r < n; r++) {
    const real *ar = w->a + r * K, *qr = w->Qs + r * K, *kr = w->Kc + r * K;
    for (int64_t d = 0; d < K; d++) { /* decay every earlier pair and S0 by a_r */
      real *e = ErT + d * LE, a = ar[d];
#pragma omp simd
      for (int64_t j = 0; j <= r; j++) e[j] = flush(e[j] * a);
      e[r + 1] = 1;
      w->P[r * K + d] = e[0];
    }
    for (int64_t j0 = 0; j0 <= r; j0 += JB) {
      real sq[JB], sk[JB];
      for (int64_t jj = 0; jj < JB; jj++) sq[jj] = sk[jj] = 0;
      for (int64_t d = 0; d < K; d++) {
        const real *kt = KcT + d * CP + j0, *e = ErT + d * LE + 1 + j0, q = qr[d], k = kr[d];
#pragma omp simd
        for (int64_t jj = 0; jj < JB; jj++) {
          real ke = kt[jj] * e[jj];
          sq[jj] += q * ke;
          sk[jj] += k * ke;
        }
      }
      for (int64_t jj = 0; jj < JB && j0 + jj <= r; jj++) {
        w->Aqk[r * C + j0 + jj] = sq[jj];
        w->Akk[r * C + j0 + jj] = j0 + jj < r ? sk[jj] : 0;
      }
    }
    for (int64_t j = r + 1; j < n; j++) w->Aqk[r * C + j] = 0; /* used by GEMMs */
  }
  for (int64_t d = 0; d < K; d++) {
    w->Lam[d] = ErT[d * LE];
    for (int64_t j = 0; j < n; j++) w->F[j * K + d] = ErT[d * LE + 1 + j];
  }
}

/* Per-head gate (or none): the scalar E (n x n), P, F, Lam broadcast over
 * K, and Aqk = (Qs K^T) ⊙ E, Akk = strict_tril(K K^T) ⊙ E by GEMMs. */
static void pairs_head(const at_lin_prob *p, int64_t n, work *w) {
  const int64_t K = p->K, C = p->C;
  real *er = w->erow; /* er[0]: from S0; er[1 + j]: E[r, j] */
  er[0] = 1;
  for (int64_t r = 0; r < n; r++) {
    real ar = p->gate == AT_LIN_GATE_NONE ? 1 : w->a[r];
    for (int64_t j = 0; j <= r; j++) er[j] = flush(er[j] * ar);
    er[r + 1] = 1;
    for (int64_t j = 0; j <= r; j++) w->E[r * C + j] = er[j + 1];
    for (int64_t d = 0; d < K; d++) w->P[r * K + d] = er[0];
  }
  for (int64_t d = 0; d < K; d++) w->Lam[d] = er[0];
  for (int64_t j = 0; j < n; j++)
    for (int64_t d = 0; d < K; d++) w->F[j * K + d] = er[j + 1];
  at_gemm(AT_N, AT_T, n, n, K, 1, w->Qs, K, w->Kc, K, 0, w->Aqk, C);
  if (p->delta) at_gemm(AT_N, AT_T, n, n, K, 1, w->Kc, K, w->Kc, K, 0, w->Akk, C);
  for (int64_t r = 0; r < n; r++) {
    for (int64_t j = 0; j <= r; j++) {
      w->Aqk[r * C + j] *= w->E[r * C + j];
      if (p->delta) w->Akk[r * C + j] = j < r ? w->Akk[r * C + j] * w->E[r * C + j] : 0;
    }
    for (int64_t j = r + 1; j < n; j++) w->Aqk[r * C + j] = 0; /* used by GEMMs */
  }
}

/* y -= sum over i0 <= i < i1 of c[i] rows[i * ld ..] (V columns), each
 * element in order of i, JB columns at a time in registers (a row at a time
 * would store and reload y for every i). */
static void sub_rows(real *y, int64_t V, const real *c, const real *rows, int64_t ld, int64_t i0,
                     int64_t i1) {
  int64_t j0 = 0;
  for (; j0 + JB <= V; j0 += JB) {
    real acc[JB];
    for (int64_t jj = 0; jj < JB; jj++) acc[jj] = y[j0 + jj];
    for (int64_t i = i0; i < i1; i++) {
      const real l = c[i], *ri = rows + i * ld + j0;
#pragma omp simd
      for (int64_t jj = 0; jj < JB; jj++) acc[jj] -= l * ri[jj];
    }
    for (int64_t jj = 0; jj < JB; jj++) y[j0 + jj] = acc[jj];
  }
  if (j0 < V)
    for (int64_t i = i0; i < i1; i++)
      for (int64_t j = j0; j < V; j++) y[j] -= c[i] * rows[i * ld + j];
}

/* Everything of the forward that the output, the next state and the
 * backward need: the pair matrices, the decayed operands and U (and X). */
static void prepare(const at_lin_prob *p, const chunk *ch, const real *S0, work *w) {
  const int64_t K = p->K, V = p->V, C = p->C, n = ch->n;
  load(p, ch, w);
  if (p->gate == AT_LIN_GATE_CHANNEL)
    pairs_channel(p, n, w);
  else
    pairs_head(p, n, w);
#pragma omp simd
  for (int64_t i = 0; i < n * K; i++) {
    w->QP[i] = w->Qs[i] * w->P[i];
    w->KP[i] = w->Kc[i] * w->P[i];
    w->KF[i] = w->Kc[i] * w->F[i];
  }
  for (int64_t r = 0; r < n; r++)
    memcpy(w->X + r * V, p->v + rowi(p, ch, r) * V, (size_t)V * sizeof(real));
  if (!p->delta) {
    memcpy(w->U, w->X, (size_t)(n * V) * sizeof(real));
    return;
  }
  /* X = V - (K ⊙ P) S0;  (I + diag(beta) Akk) U = diag(beta) X */
  at_gemm(AT_N, AT_N, n, V, K, -1, w->KP, K, S0, V, 1, w->X, V);
  for (int64_t r = 0; r < n; r++) {
    real *u = w->U + r * V;
    const real *x = w->X + r * V, br = w->beta[r];
#pragma omp simd
    for (int64_t j = 0; j < V; j++) u[j] = br * x[j];
    for (int64_t i = 0; i < r; i++) w->lc[i] = br * w->Akk[r * C + i];
    sub_rows(u, V, w->lc, w->U, V, 0, r);
  }
}

/* ---- forward ------------------------------------------------------------------- */

void at_lin_chunk_forward(const at_lin_prob *p, int64_t b, int64_t h, real *S, real *o,
                          real *ckpt, real *work_mem) {
  work w;
  carve(p, work_mem, &w);
  const int64_t K = p->K, V = p->V, C = p->C, KV = K * V, ldo = p->H * V;
  for (int64_t c = 0; c < at_lin_n_chunks(p); c++) {
    chunk ch = {b, h, c * C, AT_MIN(C, p->T - c * C)};
    if (ckpt) memcpy(ckpt + c * KV, S, (size_t)KV * sizeof(real));
    prepare(p, &ch, S, &w);
    if (o) { /* O = (Qs ⊙ P) S0 + Aqk U */
      real *oc = o + rowi(p, &ch, 0) * V;
      at_gemm(AT_N, AT_N, ch.n, V, K, 1, w.QP, K, S, V, 0, oc, ldo);
      at_gemm(AT_N, AT_N, ch.n, V, ch.n, 1, w.Aqk, C, w.U, V, 1, oc, ldo);
    }
    /* S1 = diag(Lam) S0 + (K ⊙ F)^T U */
    for (int64_t d = 0; d < K; d++)
      for (int64_t j = 0; j < V; j++) S[d * V + j] *= w.Lam[d];
    at_gemm(AT_T, AT_N, K, V, ch.n, 1, w.KF, K, w.U, V, 1, S, V);
  }
}

/* ---- backward ------------------------------------------------------------------ */

/* Row r's pair terms over channels d0 .. d0+nb-1 (nb <= JB): dqrow, dkrow
 * (summed over j < r in order, in registers) and the dKcol of every j. */
static inline void pair_row_backward(work *w, const real *Er, int64_t K, int64_t C, int64_t r,
                                     int64_t d0, int64_t nb) {
  const real *qr = w->Qs + r * K + d0, *kr = w->Kc + r * K + d0;
  real dq[JB], dk[JB];
  for (int64_t d = 0; d < nb; d++) dq[d] = dk[d] = 0;
  for (int64_t j = 0; j < r; j++) {
    real c1 = w->dAqk[r * C + j], c2 = w->dAkk[r * C + j];
    if (c1 == 0 && c2 == 0) continue;
    const real *e = Er + (j + 1) * K + d0, *kj = w->Kc + j * K + d0;
    real *dkc = w->dKcol + j * K + d0;
#pragma omp simd
    for (int64_t d = 0; d < nb; d++) {
      real ke = kj[d] * e[d];
      dq[d] += c1 * ke;
      dk[d] += c2 * ke;
      dkc[d] += (c1 * qr[d] + c2 * kr[d]) * e[d];
    }
  }
  memcpy(w->dqrow + d0, dq, (size_t)nb * sizeof(real));
  memcpy(w->dkrow + d0, dk, (size_t)nb * sizeof(real));
}

/* Per-channel gate: the pair terms of dqs, dk and db from dAqk, dAkk,
 * recomputing the rows of E exactly as the forward did. */
static void pairs_channel_backward(const at_lin_prob *p, int64_t n, work *w) {
  const int64_t K = p->K, C = p->C;
  real *Er = w->Erow;
  memset(w->dKcol, 0, (size_t)(n * K) * sizeof(real));
  for (int64_t d = 0; d < K; d++) Er[d] = 1;
  for (int64_t r = 0; r < n; r++) {
    const real *ar = w->a + r * K, *qr = w->Qs + r * K, *kr = w->Kc + r * K;
    for (int64_t j = -1; j < r; j++) {
      real *e = Er + (j + 1) * K;
#pragma omp simd
      for (int64_t d = 0; d < K; d++) e[d] = flush(e[d] * ar[d]);
    }
    for (int64_t d = 0; d < K; d++) Er[(r + 1) * K + d] = 1;
    int64_t d0 = 0;
    for (; d0 + JB <= K; d0 += JB) pair_row_backward(w, Er, K, C, r, d0, JB);
    if (d0 < K) pair_row_backward(w, Er, K, C, r, d0, K - d0);
    /* the diagonal (E = 1) has no log-decay gradient: kept out of db */
    real c1 = w->dAqk[r * C + r];
    real *dq = w->dQs + r * K, *dk = w->dK + r * K, *db = w->db + r * K;
#pragma omp simd
    for (int64_t d = 0; d < K; d++) {
      dq[d] += w->dqrow[d] + c1 * kr[d];
      dk[d] += w->dkrow[d] + c1 * qr[d];
      db[d] += qr[d] * w->dqrow[d] + kr[d] * w->dkrow[d];
    }
  }
#pragma omp simd
  for (int64_t i = 0; i < n * K; i++) {
    w->dK[i] += w->dKcol[i];
    w->db[i] -= w->Kc[i] * w->dKcol[i];
  }
}

/* Per-head gate (or none): the same with GEMMs; the log-decay gradient of a
 * pair entry is dA[r,j] A[r,j] (added at r, subtracted at j). */
static void pairs_head_backward(const at_lin_prob *p, int64_t n, work *w) {
  const int64_t K = p->K, C = p->C;
  int gated = p->gate != AT_LIN_GATE_NONE;
  for (int64_t r = 0; r < n; r++)
    for (int64_t j = 0; j <= r; j++) {
      if (gated && j < r) { /* the diagonal (E = 1) has no log-decay gradient */
        real s = w->dAqk[r * C + j] * w->Aqk[r * C + j];
        if (p->delta) s += w->dAkk[r * C + j] * w->Akk[r * C + j];
        w->dbs[r] += s;
        w->dbs[j] -= s;
      }
      w->dAqk[r * C + j] *= w->E[r * C + j];
      if (p->delta) w->dAkk[r * C + j] = j < r ? w->dAkk[r * C + j] * w->E[r * C + j] : 0;
    }
  /* dqs += dAqk K, dk += dAqk^T Qs (+ dAkk K + dAkk^T K) */
  at_gemm(AT_N, AT_N, n, K, n, 1, w->dAqk, C, w->Kc, K, 1, w->dQs, K);
  at_gemm(AT_T, AT_N, n, K, n, 1, w->dAqk, C, w->Qs, K, 1, w->dK, K);
  if (p->delta) {
    at_gemm(AT_N, AT_N, n, K, n, 1, w->dAkk, C, w->Kc, K, 1, w->dK, K);
    at_gemm(AT_T, AT_N, n, K, n, 1, w->dAkk, C, w->Kc, K, 1, w->dK, K);
  }
}

void at_lin_chunk_backward(const at_lin_prob *p, int64_t b, int64_t h, const real *ckpt,
                           const at_lin_grads *gr, real *work_mem) {
  work w;
  carve(p, work_mem, &w);
  const int64_t K = p->K, V = p->V, C = p->C, KV = K * V, ldo = p->H * V;
  if (gr->d_ht)
    memcpy(w.dS, gr->d_ht + (b * p->H + h) * KV, (size_t)KV * sizeof(real));
  else
    memset(w.dS, 0, (size_t)KV * sizeof(real));

  for (int64_t c = at_lin_n_chunks(p) - 1; c >= 0; c--) {
    chunk ch = {b, h, c * C, AT_MIN(C, p->T - c * C)};
    const int64_t n = ch.n;
    const real *S0 = ckpt + c * KV;
    const real *dO = gr->d_o ? gr->d_o + rowi(p, &ch, 0) * V : NULL;
    prepare(p, &ch, S0, &w);
    memset(w.dQs, 0, (size_t)(n * K) * sizeof(real));
    memset(w.dK, 0, (size_t)(n * K) * sizeof(real));
    memset(w.db, 0, (size_t)(n * K) * sizeof(real));
    memset(w.dbs, 0, (size_t)n * sizeof(real));

    /* dU = Aqk^T dO + (K ⊙ F) dS1;  d(K ⊙ F) = U dS1^T;  dLam = rowsum(S0 ⊙ dS1) */
    at_gemm(AT_N, AT_N, n, V, K, 1, w.KF, K, w.dS, V, 0, w.dU, V);
    at_gemm(AT_N, AT_T, n, K, V, 1, w.U, V, w.dS, V, 0, w.dKF, K);
    for (int64_t d = 0; d < K; d++) {
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t j = 0; j < V; j++) s += (double)S0[d * V + j] * w.dS[d * V + j];
      w.dLam[d] = (real)s;
    }
    /* dS0 = diag(Lam) dS1 (+ (Qs ⊙ P)^T dO) */
    for (int64_t d = 0; d < K; d++)
#pragma omp simd
      for (int64_t j = 0; j < V; j++) w.dS0[d * V + j] = w.Lam[d] * w.dS[d * V + j];
    if (dO) {
      at_gemm(AT_T, AT_N, n, V, n, 1, w.Aqk, C, dO, ldo, 1, w.dU, V);
      at_gemm(AT_N, AT_T, n, n, V, 1, dO, ldo, w.U, V, 0, w.dAqk, C);
      at_gemm(AT_N, AT_T, n, K, V, 1, dO, ldo, S0, V, 0, w.dQP, K);
      at_gemm(AT_T, AT_N, K, V, n, 1, w.QP, K, dO, ldo, 1, w.dS0, V);
    } else {
      memset(w.dQP, 0, (size_t)(n * K) * sizeof(real));
      for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < n; j++) w.dAqk[r * C + j] = 0;
    }
    for (int64_t r = 0; r < n; r++) /* only j <= r is used */
      for (int64_t j = r + 1; j < n; j++) w.dAqk[r * C + j] = 0;

    if (p->delta) {
      /* dY = (I + L)^-T dU, in place in dU (back substitution) */
      for (int64_t r = n - 1; r >= 0; r--) {
        for (int64_t i = r + 1; i < n; i++) w.lc[i] = w.beta[i] * w.Akk[i * C + r];
        sub_rows(w.dU + r * V, V, w.lc, w.dU, V, r + 1, n);
      }
      /* dL = -strict_tril(dY U^T); dAkk = diag(beta) dL */
      at_gemm(AT_N, AT_T, n, n, V, -1, w.dU, V, w.U, V, 0, w.dAkk, C);
      for (int64_t r = 0; r < n; r++) {
        double db = 0;
        const real *x = w.X + r * V, *dy = w.dU + r * V;
#pragma omp simd reduction(+ : db)
        for (int64_t j = 0; j < V; j++) db += (double)x[j] * dy[j];
        for (int64_t j = 0; j < r; j++) {
          db += (double)w.Akk[r * C + j] * w.dAkk[r * C + j];
          w.dAkk[r * C + j] *= w.beta[r];
        }
        for (int64_t j = r; j < n; j++) w.dAkk[r * C + j] = 0;
        w.dbeta[r] = (real)db;
      }
      /* dX = diag(beta) dY (in place); d(K ⊙ P) = -dX S0^T; dS0 -= (K ⊙ P)^T dX */
      for (int64_t r = 0; r < n; r++)
#pragma omp simd
        for (int64_t j = 0; j < V; j++) w.dU[r * V + j] *= w.beta[r];
      at_gemm(AT_N, AT_T, n, K, V, -1, w.dU, V, S0, V, 0, w.dKP, K);
      at_gemm(AT_T, AT_N, K, V, n, -1, w.KP, K, w.dU, V, 1, w.dS0, V);
    }
    /* w.dU is now dV */

    if (p->gate == AT_LIN_GATE_CHANNEL)
      pairs_channel_backward(p, n, &w);
    else
      pairs_head_backward(p, n, &w);

    /* decayed operands: Qs ⊙ P, K ⊙ P, K ⊙ F, and Lam */
    for (int64_t r = 0; r < n; r++)
#pragma omp simd
      for (int64_t d = 0; d < K; d++) {
        int64_t i = r * K + d;
        w.dQs[i] += w.dQP[i] * w.P[i];
        w.db[i] += w.dQP[i] * w.QP[i];
        w.dK[i] += w.dKF[i] * w.F[i];
        if (r < n - 1) { /* F[n-1] = 1 has no log-decay gradient */
          w.db[i] -= w.dKF[i] * w.KF[i];
          w.db[(n - 1) * K + d] += w.dKF[i] * w.KF[i];
        }
        if (p->delta) {
          w.dK[i] += w.dKP[i] * w.P[i];
          w.db[i] += w.dKP[i] * w.KP[i];
        }
      }
    for (int64_t d = 0; d < K; d++) w.db[(n - 1) * K + d] += w.dLam[d] * w.Lam[d];

    /* scatter into the inputs' gradients */
    for (int64_t r = 0; r < n; r++) {
      int64_t i = rowi(p, &ch, r);
      if (gr->dq)
#pragma omp simd
        for (int64_t d = 0; d < K; d++) gr->dq[i * K + d] += p->scale * w.dQs[r * K + d];
      if (gr->dk)
#pragma omp simd
        for (int64_t d = 0; d < K; d++) gr->dk[i * K + d] += w.dK[r * K + d];
      if (gr->dv)
#pragma omp simd
        for (int64_t j = 0; j < V; j++) gr->dv[i * V + j] += w.dU[r * V + j];
      if (p->delta && gr->dbeta) gr->dbeta[i] += w.dbeta[r];
    }
    if (p->gate != AT_LIN_GATE_NONE && gr->dg) { /* dg_r = sum_{i >= r} db_i */
      if (p->gate == AT_LIN_GATE_CHANNEL) {
        for (int64_t r = n - 2; r >= 0; r--)
#pragma omp simd
          for (int64_t d = 0; d < K; d++) w.db[r * K + d] += w.db[(r + 1) * K + d];
        for (int64_t r = 0; r < n; r++)
#pragma omp simd
          for (int64_t d = 0; d < K; d++) gr->dg[rowi(p, &ch, r) * K + d] += w.db[r * K + d];
      } else {
        double acc = 0;
        for (int64_t r = n - 1; r >= 0; r--) {
          acc += w.dbs[r];
          for (int64_t d = 0; d < K; d++) acc += w.db[r * K + d];
          gr->dg[rowi(p, &ch, r)] += (real)acc;
        }
      }
    }
    real *t = w.dS;
    w.dS = w.dS0;
    w.dS0 = t;
  }
  if (gr->dh0) {
    real *dh0 = gr->dh0 + (b * p->H + h) * KV;
    for (int64_t i = 0; i < KV; i++) dh0[i] += w.dS[i];
  }
}
