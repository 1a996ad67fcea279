/* ops/attention/selective_scan.c: Mamba-1's selective scan (S6), with the
 * semantics of mamba_ssm's selective_scan_ref (variable B and C shared by
 * the channels, real A), forward and hand-written backward.
 *
 * Per batch entry b, channel d and state index n (ssm.h):
 *
 *   dt_t = softplus(delta_t + bias_d)       (or delta_t + bias_d)
 *   a_tn = exp(dt_t A_dn)
 *   h_tn = a_tn h_{t-1,n} + dt_t u_t B_tn
 *   y_t  = sum_n C_tn h_tn + D_d u_t,       out_t = y_t silu(z_t)
 *
 * Backward, carrying dh_n = dL/dh_tn from the future (it starts at dht):
 *
 *   dz_t  = dout_t y_t silu'(z_t);          dy_t = dout_t silu(z_t)
 *   dD_d += dy_t u_t;                       du_t = dy_t D_d
 *   dh_n += dy_t C_tn;                      dC_tn += dy_t h_tn   (summed over d)
 *   dB_tn += dh_n dt_t u_t   (summed over d)
 *   du_t += sum_n dh_n dt_t B_tn
 *   ddt_t = sum_n dh_n (A_dn a_tn h_{t-1,n} + B_tn u_t)
 *   dA_dn += dh_n dt_t a_tn h_{t-1,n}       (summed over b, t)
 *   ddelta_t = ddt_t softplus'(delta_t + bias_d);  dbias_d += ddelta_t
 *   dh_n <- a_tn dh_n                        (now dL/dh_{t-1,n})
 *
 * The chunked form never stores the T x D x N states: the forward saves the
 * state entering each chunk of C tokens, and the backward recomputes a
 * chunk's C states (and decays) from it before walking the chunk backwards.
 * Memory: B ceil(T/C) D N saved, C D N per work item while it runs.
 * Work is split into (batch entry, channel block) items with a fixed number
 * of blocks per entry, so the sums over channels (dB, dC) and over batch
 * entries (dA, dD, dbias) are taken in an order that does not depend on the
 * thread count: each item writes its own partial sums, added up in order
 * afterwards. dt and its derivative are computed once per (token, channel)
 * before the scan and kept for the backward ([B,T,D] each). Cost: one exp and
 * a few FMAs per (token, channel, state) in the forward, the same twice in
 * the backward (recomputation).
 *
 * The sequential form is the definition written with primitive ops, token
 * by token, so its backward comes from the tape: the reference.
 */
/* The short reductions over the state (n) vectorise only with the dynamic
 * cost model at -O2 (GCC 12 rejects them under -O2's very-cheap model). */
#ifndef __clang__
#pragma GCC optimize("vect-cost-model=dynamic")
#endif

#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/fastmath.h"
#include "core/threads.h"
#include "ops/attention/ssm.h"

enum { SCAN_BLOCKS = 8 }; /* channel blocks per batch entry (fixed: see above) */

typedef struct scan_prob {
  int64_t B, T, D, N, C;
  int softplus;
  const real *u, *delta, *A, *Bm, *Cm, *Dk, *z, *bias;
  real *dt, *ddt; /* [B,T,D]: dt and d dt / d delta (compute_dt) */
} scan_prob;

static int64_t n_blocks(const scan_prob *p) { return AT_MIN(SCAN_BLOCKS, p->D); }
static int64_t block_lo(const scan_prob *p, int64_t k) { return k * p->D / n_blocks(p); }
static int64_t n_chunks(const scan_prob *p) { return (p->T + p->C - 1) / p->C; }

/* softplus(x) = max(x, 0) + log1p(e^-|x|) and its derivative sigmoid(x),
 * without overflow for any x and branch-free, so the loop over a row
 * vectorises (at_log1p_unit: e in (0, 1]). */
static inline real softplus_d(real x, real *sig) {
  real e = at_expr(-fabs(x));
  *sig = x >= 0 ? 1 / (1 + e) : e / (1 + e);
  return (x > 0 ? x : 0) + at_log1p_unit(e);
}

static inline real silu_r(real z, real *sig) {
  real e = at_expr(-fabs(z));
  *sig = z >= 0 ? 1 / (1 + e) : e / (1 + e);
  return z * *sig;
}

/* dt [B,T,D] for every element and, when ddt is not NULL, d dt / d delta. */
static void compute_dt(const scan_prob *p, real *dt, real *ddt) {
  const int64_t D = p->D, rows = p->B * p->T;
#pragma omp parallel for num_threads(at_threads_here()) schedule(static) if (rows * D >= (1 << 15))
  for (int64_t r = 0; r < rows; r++) {
    const real *x = p->delta + r * D;
    real *o = dt + r * D, *g = ddt ? ddt + r * D : NULL;
#pragma omp simd
    for (int64_t d = 0; d < D; d++) {
      real v = x[d] + (p->bias ? p->bias[d] : 0), s = 1;
      o[d] = p->softplus ? softplus_d(v, &s) : v;
      if (g) g[d] = s;
    }
  }
}

/* ---- checks ------------------------------------------------------------------ */

static int check(at_ctx *c, const char *op, at_tensor *u, at_tensor *delta, at_tensor *A,
                 at_tensor *Bm, at_tensor *Cm, at_tensor *D, at_tensor *z, at_tensor *bias,
                 at_tensor *h0, const at_scan_opts *o, scan_prob *p) {
  char s1[96], s2[96], s3[96];
  if (!u || !delta || !A || !Bm || !Cm) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "%s: u, delta, A, B, C are required", op);
    return 0;
  }
  if (u->ndim != 3 || !at_same_shape(u, delta) || (z && !at_same_shape(u, z))) {
    at_fail(c, AT_E_SHAPE, "%s: u %s, delta %s%s%s must be [B,T,D] alike", op, AT_SHAPE_STR(u, s1),
            AT_SHAPE_STR(delta, s2), z ? ", z " : "", z ? AT_SHAPE_STR(z, s3) : "");
    return 0;
  }
  memset(p, 0, sizeof *p);
  p->B = u->shape[0], p->T = u->shape[1], p->D = u->shape[2];
  p->N = A->ndim == 2 ? A->shape[1] : 0;
  if (p->B < 1 || p->T < 1 || p->D < 1 || p->N < 1 || A->shape[0] != p->D) {
    at_fail(c, AT_E_SHAPE, "%s: A %s must be [D,N] = [%lld,N] for u %s", op, AT_SHAPE_STR(A, s1),
            (long long)p->D, AT_SHAPE_STR(u, s2));
    return 0;
  }
  const at_tensor *bc[] = {Bm, Cm};
  for (int i = 0; i < 2; i++)
    if (bc[i]->ndim != 3 || bc[i]->shape[0] != p->B || bc[i]->shape[1] != p->T || bc[i]->shape[2] != p->N) {
      at_fail(c, AT_E_SHAPE, "%s: %s %s must be [B,T,N] = [%lld,%lld,%lld]", op, i ? "C" : "B",
              AT_SHAPE_STR(bc[i], s1), (long long)p->B, (long long)p->T, (long long)p->N);
      return 0;
    }
  const at_tensor *vec[] = {D, bias};
  for (int i = 0; i < 2; i++)
    if (vec[i] && (vec[i]->ndim != 1 || vec[i]->shape[0] != p->D)) {
      at_fail(c, AT_E_SHAPE, "%s: %s %s must be [D] = [%lld]", op, i ? "delta_bias" : "D",
              AT_SHAPE_STR(vec[i], s1), (long long)p->D);
      return 0;
    }
  if (h0 && (h0->ndim != 3 || h0->shape[0] != p->B || h0->shape[1] != p->D || h0->shape[2] != p->N)) {
    at_fail(c, AT_E_SHAPE, "%s: the state %s must be [B,D,N] = [%lld,%lld,%lld]", op,
            AT_SHAPE_STR(h0, s1), (long long)p->B, (long long)p->D, (long long)p->N);
    return 0;
  }
  int64_t C = o ? o->chunk_size : 0;
  if (C < 0 || (o && o->form != AT_SCAN_CHUNKED && o->form != AT_SCAN_SEQUENTIAL)) {
    at_fail(c, AT_E_ARG, "%s: bad options (chunk_size %lld, form %d)", op, (long long)C, o ? (int)o->form : 0);
    return 0;
  }
  p->C = C ? C : 64;
  p->softplus = o ? o->delta_softplus != 0 : 0;
  p->u = u->data, p->delta = delta->data, p->A = A->data, p->Bm = Bm->data, p->Cm = Cm->data;
  p->Dk = D ? D->data : NULL, p->z = z ? z->data : NULL, p->bias = bias ? bias->data : NULL;
  return 1;
}

/* ---- the kernels ------------------------------------------------------------------ */

/* One token t for channels d0..d1-1 of entry b: h (nd x N) from the state
 * entering the token (prev, may alias h) to the state after it; the decays
 * go to a (nd x N) when not NULL; the output to out when not NULL. */
static void token(const scan_prob *p, int64_t b, int64_t t, int64_t d0, int64_t d1, const real *prev,
                  real *h, real *a, real *out) {
  const int64_t N = p->N;
  const real *Bt = p->Bm + (b * p->T + t) * N, *Ct = p->Cm + (b * p->T + t) * N;
  for (int64_t d = d0; d < d1; d++) {
    const int64_t i = (b * p->T + t) * p->D + d, o = (d - d0) * N;
    real dt = p->dt[i], x = dt * p->u[i], y = 0;
    const real *Ad = p->A + d * N;
    real *hd = h + o, *ad = a ? a + o : NULL;
    const real *pd = prev + o;
#pragma omp simd reduction(+ : y)
    for (int64_t n = 0; n < N; n++) {
      real an = at_expr(dt * Ad[n]);
      if (ad) ad[n] = an;
      hd[n] = an * pd[n] + x * Bt[n];
      y += Ct[n] * hd[n];
    }
    if (!out) continue;
    if (p->Dk) y += p->Dk[d] * p->u[i];
    real sg;
    out[i] = p->z ? y * silu_r(p->z[i], &sg) : y;
  }
}

/* The forward of item (b, d0..d1): h holds the entering state and receives
 * the final one; the state before tokens 0, C, 2C, ... goes to ckpt
 * ([n_chunks, D, N] of entry b) when not NULL. */
static void fwd_item(const scan_prob *p, int64_t b, int64_t d0, int64_t d1, real *h, real *out,
                     real *ckpt) {
  const int64_t N = p->N, nd = d1 - d0;
  for (int64_t t = 0; t < p->T; t++) {
    if (ckpt && t % p->C == 0)
      memcpy(ckpt + ((t / p->C) * p->D + d0) * N, h, (size_t)(nd * N) * sizeof(real));
    token(p, b, t, d0, d1, h, h, NULL, out);
  }
}

typedef struct scan_grads {
  const real *dout, *dht;             /* seeds ([B,T,D], [B,D,N]; NULL: zero) */
  real *du, *ddelta, *dz, *dh0;       /* written by their items directly */
  real *dB_part, *dC_part;            /* [n_blocks, B, T, N] partial sums over a block's channels */
  double *dA_part;                    /* [B, D, N] partial sums over an entry's tokens */
  double *dD_part, *dbias_part;       /* [B, D] */
} scan_grads;

/* Workspace of one item, in reals. */
static size_t bwd_work(const scan_prob *p) {
  size_t nb = (size_t)((p->D + n_blocks(p) - 1) / n_blocks(p) * p->N); /* largest block x N */
  return (2 * (size_t)p->C + 2) * nb;
}

/* The backward of item (b, d0..d1) from entry b's checkpoints. */
static void bwd_item(const scan_prob *p, int64_t b, int64_t blk, const real *ckpt, const scan_grads *g,
                     real *work) {
  const int64_t N = p->N, C = p->C, d0 = block_lo(p, blk), d1 = block_lo(p, blk + 1), nd = d1 - d0;
  const int64_t NB = nd * N, nbmax = (int64_t)(bwd_work(p) / (2 * (size_t)C + 2));
  real *dh = work, *dAc = dh + nbmax, *hs = dAc + nbmax, *as = hs + C * nbmax;
  double *dA = g->dA_part + (b * p->D + d0) * N;
  if (g->dht)
    memcpy(dh, g->dht + (b * p->D + d0) * N, (size_t)NB * sizeof(real));
  else
    memset(dh, 0, (size_t)NB * sizeof(real));
  for (int64_t s = n_chunks(p) - 1; s >= 0; s--) {
    const int64_t t0 = s * C, len = AT_MIN(C, p->T - t0);
    const real *start = ckpt + (s * p->D + d0) * N;
    for (int64_t i = 0; i < len; i++)
      token(p, b, t0 + i, d0, d1, i ? hs + (i - 1) * NB : start, hs + i * NB, as + i * NB, NULL);
    memset(dAc, 0, (size_t)NB * sizeof(real));
    for (int64_t i = len - 1; i >= 0; i--) {
      const int64_t t = t0 + i, row = (b * p->T + t) * N;
      const real *hp = i ? hs + (i - 1) * NB : start, *hc = hs + i * NB, *ac = as + i * NB;
      const real *Bt = p->Bm + row, *Ct = p->Cm + row;
      real *dBr = g->dB_part ? g->dB_part + (blk * p->B * p->T) * N + row : NULL;
      real *dCr = g->dC_part ? g->dC_part + (blk * p->B * p->T) * N + row : NULL;
      for (int64_t d = d0; d < d1; d++) {
        const int64_t idx = (b * p->T + t) * p->D + d, o = (d - d0) * N;
        const real *Ad = p->A + d * N, *hpd = hp + o, *hcd = hc + o, *acd = ac + o;
        real *dhd = dh + o, *dAd = dAc + o;
        real dt = p->dt[idx], ddt = p->ddt[idx], ui = p->u[idx], x = dt * ui;
        real dy = g->dout ? g->dout[idx] : 0;
        if (p->z) {
          real y = 0;
#pragma omp simd reduction(+ : y)
          for (int64_t n = 0; n < N; n++) y += Ct[n] * hcd[n];
          if (p->Dk) y += p->Dk[d] * ui;
          real zi = p->z[idx], sg, gate = silu_r(zi, &sg);
          if (g->dz) g->dz[idx] += dy * y * sg * (1 + zi * (1 - sg));
          dy *= gate;
        }
        real du = 0, dtt = 0;
        if (p->Dk) {
          g->dD_part[b * p->D + d] += (double)(dy * ui);
          du = dy * p->Dk[d];
        }
#pragma omp simd reduction(+ : du, dtt)
        for (int64_t n = 0; n < N; n++) {
          real dhn = dhd[n] + dy * Ct[n], ah = acd[n] * hpd[n];
          if (dCr) dCr[n] += dy * hcd[n];
          if (dBr) dBr[n] += dhn * x;
          du += dhn * dt * Bt[n];
          dtt += dhn * (Ad[n] * ah + Bt[n] * ui);
          dAd[n] += dhn * dt * ah;
          dhd[n] = dhn * acd[n];
        }
        if (g->du) g->du[idx] += du;
        real dd = dtt * ddt;
        if (g->ddelta) g->ddelta[idx] += dd;
        if (g->dbias_part) g->dbias_part[b * p->D + d] += (double)dd;
      }
    }
    for (int64_t j = 0; j < NB; j++) dA[j] += (double)dAc[j];
  }
  if (g->dh0) {
    real *d = g->dh0 + (b * p->D + d0) * N;
    for (int64_t j = 0; j < NB; j++) d[j] += dh[j];
  }
}

/* ---- the tape node ------------------------------------------------------------------ */

typedef struct scan_saved {
  scan_prob p;
  real *ckpt; /* [B, n_chunks, D, N] */
} scan_saved;

enum { IU, IDELTA, IA, IB, IC, ID, IZ, IBIAS, IH0, N_IN };

static void scan_backward(at_ctx *c, at_node *nd) {
  const scan_saved *s = nd->saved;
  const scan_prob *p = &s->p;
  const int64_t B = p->B, T = p->T, D = p->D, N = p->N, nb = n_blocks(p), nck = n_chunks(p);
  at_tensor *out = nd->out[0], *ht = nd->out[1];
  real *dA = at_grad(c, nd->in[IA]), *dB = at_grad(c, nd->in[IB]), *dC = at_grad(c, nd->in[IC]);
  real *dD = at_grad(c, nd->in[ID]), *dbias = at_grad(c, nd->in[IBIAS]);
  scan_grads g = {out->grad, ht ? ht->grad : NULL, at_grad(c, nd->in[IU]), at_grad(c, nd->in[IDELTA]),
                  at_grad(c, nd->in[IZ]), at_grad(c, nd->in[IH0]), NULL, NULL, NULL, NULL, NULL};
  if (at_ctx_status(c) != AT_OK) return;
  at_arena_mark m = at_arena_get_mark(c->arena);
  size_t ws = (bwd_work(p) + 15) & ~(size_t)15;
  int nt = at_threads_here();
  real *buf = at_scratch(c, (size_t)nt * ws * sizeof(real));
  if (dB) g.dB_part = at_scratch_zero(c, (size_t)(nb * B * T * N) * sizeof(real));
  if (dC) g.dC_part = at_scratch_zero(c, (size_t)(nb * B * T * N) * sizeof(real));
  g.dA_part = at_scratch_zero(c, (size_t)(B * D * N) * sizeof(double));
  g.dD_part = at_scratch_zero(c, (size_t)(B * D) * sizeof(double));
  g.dbias_part = at_scratch_zero(c, (size_t)(B * D) * sizeof(double));
  if (!buf || (dB && !g.dB_part) || (dC && !g.dC_part) || !g.dA_part || !g.dD_part || !g.dbias_part) {
    at_fail(c, AT_E_NOMEM, "selective_scan backward: out of memory");
    return;
  }
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t it = 0; it < B * nb; it++)
    bwd_item(p, it / nb, it % nb, s->ckpt + (it / nb) * nck * D * N, &g,
             buf + (size_t)omp_get_thread_num() * ws);
  /* the partial sums, in a fixed order */
  for (int k = 0; k < 2; k++) {
    real *dst = k ? dC : dB;
    const real *src = k ? g.dC_part : g.dB_part;
    if (!dst) continue;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < B * T; r++)
      for (int64_t blk = 0; blk < nb; blk++)
        for (int64_t n = 0; n < N; n++) dst[r * N + n] += src[(blk * B * T + r) * N + n];
  }
  for (int64_t j = 0; j < D * N; j++) {
    double sum = 0;
    for (int64_t b = 0; b < B; b++) sum += g.dA_part[b * D * N + j];
    if (dA) dA[j] += (real)sum;
  }
  for (int64_t d = 0; d < D; d++) {
    double sd = 0, sb = 0;
    for (int64_t b = 0; b < B; b++) sd += g.dD_part[b * D + d], sb += g.dbias_part[b * D + d];
    if (dD) dD[d] += (real)sd;
    if (dbias) dbias[d] += (real)sb;
  }
  at_arena_rewind(c->arena, m);
}

/* Runs the forward over every item; h0/state: the entering state or NULL
 * (zero); hT: the final state [B,D,N] or NULL (then a per-thread buffer). */
static int run_forward(at_ctx *c, const scan_prob *p, const real *h0, real *hT, real *out, real *ckpt) {
  const int64_t D = p->D, N = p->N, nb = n_blocks(p), nck = n_chunks(p);
  const int64_t nbmax = (D + nb - 1) / nb * N;
  int nt = at_threads_here();
  at_arena_mark m = at_arena_get_mark(c->arena);
  real *buf = hT ? NULL : at_scratch(c, (size_t)(nt * nbmax) * sizeof(real));
  if (!hT && !buf) return 0;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t it = 0; it < p->B * nb; it++) {
    const int64_t b = it / nb, d0 = block_lo(p, it % nb), d1 = block_lo(p, it % nb + 1);
    real *h = hT ? hT + (b * D + d0) * N : buf + omp_get_thread_num() * nbmax;
    if (h0)
      memcpy(h, h0 + (b * D + d0) * N, (size_t)((d1 - d0) * N) * sizeof(real));
    else
      memset(h, 0, (size_t)((d1 - d0) * N) * sizeof(real));
    fwd_item(p, b, d0, d1, h, out, ckpt ? ckpt + b * nck * D * N : NULL);
  }
  at_arena_rewind(c->arena, m);
  return 1;
}

static at_tensor *sequential(at_ctx *c, const scan_prob *p, at_tensor *u, at_tensor *delta, at_tensor *A,
                             at_tensor *Bm, at_tensor *Cm, at_tensor *D, at_tensor *z,
                             at_tensor *bias, at_tensor *h0, at_tensor **ht);

at_tensor *at_selective_scan(at_ctx *c, at_tensor *u, at_tensor *delta, at_tensor *A,
                             at_tensor *Bm, at_tensor *Cm, at_tensor *D, at_tensor *z,
                             at_tensor *delta_bias, at_tensor *h0, at_tensor **ht,
                             const at_scan_opts *opts) {
  if (ht) *ht = NULL;
  scan_prob p;
  if (!check(c, "selective_scan", u, delta, A, Bm, Cm, D, z, delta_bias, h0, opts, &p)) return NULL;
  if (opts && opts->form == AT_SCAN_SEQUENTIAL)
    return sequential(c, &p, u, delta, A, Bm, Cm, D, z, delta_bias, h0, ht);
  at_tensor *out = AT_NEW(c, p.B, p.T, p.D);
  at_tensor *hT = ht ? AT_NEW(c, p.B, p.D, p.N) : NULL;
  if (!out || (ht && !hT)) return NULL;
  at_tensor *ins[N_IN] = {u, delta, A, Bm, Cm, D, z, delta_bias, h0}, *outs[] = {out, hT};
  scan_saved *s = NULL;
  const size_t nel = (size_t)(p.B * p.T * p.D) * sizeof(real);
  if (at_needs_grad(c, N_IN, ins)) { /* dt, ddt and the checkpoints stay for the backward */
    s = at_scratch(c, sizeof *s);
    real *ck = at_scratch(c, (size_t)(p.B * n_chunks(&p) * p.D * p.N) * sizeof(real));
    p.dt = at_scratch(c, nel), p.ddt = at_scratch(c, nel);
    if (!s || !ck || !p.dt || !p.ddt) return NULL;
    s->ckpt = ck;
  }
  at_arena_mark mk = at_arena_get_mark(c->arena);
  if (!s && !(p.dt = at_scratch(c, nel))) return NULL;
  compute_dt(&p, p.dt, p.ddt);
  if (!run_forward(c, &p, h0 ? h0->data : NULL, hT ? hT->data : NULL, out->data, s ? s->ckpt : NULL))
    return at_fail(c, AT_E_NOMEM, "selective_scan: out of memory");
  if (!s) at_arena_rewind(c->arena, mk);
  if (s) {
    s->p = p;
    at_node *nd = AT_RECORD(c, "selective_scan", scan_backward, ins, outs);
    if (!nd) return NULL;
    nd->saved = s;
  }
  if (ht) *ht = hT;
  return out;
}

at_tensor *at_selective_scan_step(at_ctx *c, at_tensor *u, at_tensor *delta, at_tensor *A,
                                  at_tensor *Bm, at_tensor *Cm, at_tensor *D, at_tensor *z,
                                  at_tensor *delta_bias, at_tensor *state,
                                  const at_scan_opts *opts) {
  if (!state) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "selective_scan_step: the state is required");
    return NULL;
  }
  scan_prob p;
  if (!check(c, "selective_scan_step", u, delta, A, Bm, Cm, D, z, delta_bias, state, opts, &p)) return NULL;
  at_tensor *out = AT_NEW(c, p.B, p.T, p.D);
  if (!out) return NULL;
  at_arena_mark mk = at_arena_get_mark(c->arena);
  if (!(p.dt = at_scratch(c, (size_t)(p.B * p.T * p.D) * sizeof(real)))) return NULL;
  compute_dt(&p, p.dt, NULL);
  if (!run_forward(c, &p, state->data, state->data, out->data, NULL))
    return at_fail(c, AT_E_NOMEM, "selective_scan_step: out of memory");
  at_arena_rewind(c->arena, mk);
  return out;
}

/* ---- the reference: token by token with primitive ops ------------------------------ */

static at_tensor *sequential(at_ctx *c, const scan_prob *p, at_tensor *u, at_tensor *delta, at_tensor *A,
                             at_tensor *Bm, at_tensor *Cm, at_tensor *D, at_tensor *z,
                             at_tensor *bias, at_tensor *h0, at_tensor **ht) {
  const int64_t B = p->B, T = p->T, Dn = p->D, N = p->N;
  at_tensor *dt = bias ? at_add(c, delta, bias) : delta;
  if (p->softplus) dt = at_softplus(c, dt);
  at_tensor *h = h0 ? h0 : AT_ZEROS(c, B, Dn, N);
  at_tensor **ys = at_scratch(c, (size_t)T * sizeof *ys);
  if (!ys || !h) return at_fail(c, AT_E_NOMEM, "selective_scan: out of memory");
  for (int64_t t = 0; t < T; t++) {
    at_tensor *dtt = AT_RESHAPE(c, at_slice(c, dt, 1, t, 1), B, Dn, 1);
    at_tensor *ut = AT_RESHAPE(c, at_slice(c, u, 1, t, 1), B, Dn, 1);
    at_tensor *a = at_exp(c, at_mul(c, dtt, A));                        /* [B,D,N] */
    at_tensor *bx = at_mul(c, at_mul(c, dtt, ut), at_slice(c, Bm, 1, t, 1)); /* [B,D,1] x [B,1,N] */
    h = at_add(c, at_mul(c, a, h), bx);
    ys[t] = AT_RESHAPE(c, at_sum(c, at_mul(c, h, at_slice(c, Cm, 1, t, 1)), -1, 0), B, 1, Dn);
  }
  at_tensor *y = at_concat(c, ys, (int)T, 1);
  if (D) y = at_add(c, y, at_mul(c, u, D));
  if (z) y = at_mul(c, y, at_silu(c, z));
  if (ht && y) *ht = h;
  return y;
}
