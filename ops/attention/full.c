/* ops/attention/full.c: softmax attention over a block-sparse layout, fused
 * (FlashAttention-2), with its decode step; the naive reference composed of
 * primitive ops is at the end of the file.
 *
 * Forward (FA2 Alg. 1), per query head and query block Q_i, over the key
 * blocks K_j of the layout's list for that block (S is scaled and masked:
 * -inf where the layout hides a pair):
 *   S = scale Q_i K_j^T + mask
 *   m' = max(m, rowmax S);  P = exp(S - m');  l = e^(m - m') l + rowsum P
 *   O  = diag(e^(m - m')) O + P V_j;  m = m'
 * then O = diag(l)^-1 O, and only L = m + log l (one number per query row)
 * is saved for the backward. A row that sees no key has l = 0: O = 0 and
 * L = -inf, and it gets no gradient.
 *
 * Backward (FA2 Alg. 2), with Dr_i = rowsum(dO_i o O_i) (the softmax
 * Jacobian term: sum_j P_ij dP_ij = dO_i . O_i), over the same tiles:
 *     P  = exp(scale Q_i K_j^T + mask - L_i)          (recomputed)
 *     dV_j += P^T dO_i;   dP = dO_i V_j^T;   dS = P o (dP - Dr_i)
 *     dQ_i += scale dS K_j;   dK_j += scale dS^T Q_i
 * in query-block order, so dQ_i accumulates locally and dK_j, dV_j are
 * summed over i in a fixed order.
 *
 * Work is split over (batch, query head); each item owns its rows of o and
 * dq (layouts of one-row query blocks shared by a kv head's query heads, as
 * NSA's selection, run those heads together: "grouped rows" below). With
 * GQA/MQA (G = HQ/H > 1 query heads per kv head) each item writes
 * its dK/dV contribution to its own buffer and the G buffers are then summed
 * in head order (FA2 §3.1), so no two threads touch the same memory and the
 * result does not depend on the thread count. The tile products are the
 * register-blocked kernels of full_tile.h; K^T (and V^T for the backward)
 * are packed once per call so that no tile packs anything. Memory: the
 * packed copies, L, and a few tiles per thread: linear in T.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/gemm.h"
#include "core/threads.h"
#include "ops/attention/full.h"
#include "ops/attention/full_tile.h"
#include "ops/ops.h"

typedef struct attn_dims {
  int64_t B, T, HQ, H, G, D, Dv;
  int64_t bk, bkp, nkb; /* the layout's key blocks; K^T, V^T are packed per block as
                         * [dim][bkp] panels, bkp = bk in whole vectors */
  real scale;
} attn_dims;

/* Row strides of the [B,T,heads,dim] layouts. */
#define RQ(d) ((d)->HQ * (d)->D)
#define RK(d) ((d)->H * (d)->D)
#define RV(d) ((d)->H * (d)->Dv)
#define RO(d) ((d)->HQ * (d)->Dv)

static void set_dims(attn_dims *d, const at_tensor *q, const at_tensor *k, const at_tensor *v,
                     real scale) {
  d->B = k->shape[0], d->T = k->shape[1], d->H = k->shape[2];
  d->HQ = q->shape[2], d->G = d->HQ / d->H, d->D = q->shape[3], d->Dv = v->shape[3];
  d->scale = scale;
}

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
  if (W && o->layout) {
    at_fail(c, AT_E_ARG, "%s: window %lld given with a layout (build the window into the layout)",
            op, (long long)W);
    return 0;
  }
  if (!isfinite(scale)) {
    at_fail(c, AT_E_ARG, "%s: scale %g is not finite", op, scale);
    return 0;
  }
  set_dims(d, q, k, v, (real)(scale != 0 ? scale : 1.0 / sqrt((double)q->shape[3])));
  return 1;
}

/* The layout of a call: the given one (checked against the inputs), else
 * causal or the sliding window, built here. */
static const at_attn_layout *call_layout(at_ctx *c, const char *op, const at_attn_opts *o,
                                         const attn_dims *d) {
  if (o && o->layout)
    return at_attn_layout_check(c, op, o->layout, d->B, d->T, d->HQ) ? o->layout : NULL;
  int64_t W = o ? o->window : 0;
  return W ? at_attn_layout_window(c, d->T, W) : at_attn_layout_causal(c, d->T);
}

/* ---- shared by forward and backward ---------------------------------------- */

static void set_panels(attn_dims *d, const at_attn_layout *L) {
  d->bk = L->bk, d->bkp = tv_round(L->bk), d->nkb = L->nkb;
}

/* The panel of key block kb of kv head (b, h) in a packed x^T. */
static const real *panel(const attn_dims *d, const real *xt, int64_t dim, int64_t b, int64_t h,
                         int64_t kb) {
  return xt + ((b * d->H + h) * d->nkb + kb) * dim * d->bkp;
}

/* x [B, T, H, dim] -> xt [B, H, nkb, dim, bkp]: per key block, the keys'
 * vectors as columns (zero past the block's last key), the operand the
 * score products read along keys. One block's panel is contiguous, so a
 * product's reduction walks neighbouring rows, not rows T apart. */
static void pack_panels(const attn_dims *d, const real *x, int64_t dim, real *xt) {
  int64_t T = d->T, H = d->H, nkb = d->nkb, bkp = d->bkp;
#pragma omp parallel for schedule(static) num_threads(at_threads())
  for (int64_t w = 0; w < d->B * H * nkb; w++) {
    int64_t b = w / (H * nkb), h = w / nkb % H, kb = w % nkb, j0 = kb * d->bk;
    int64_t nc = AT_MIN(d->bk, T - j0);
    real *dst = xt + w * dim * bkp;
    for (int64_t p = 0; p < dim; p++) memset(dst + p * bkp + nc, 0, (size_t)(bkp - nc) * sizeof(real));
    for (int64_t y = 0; y < nc; y++) {
      const real *src = x + ((b * T + j0 + y) * H + h) * dim;
      for (int64_t p = 0; p < dim; p++) dst[p * bkp + y] = src[p];
    }
  }
}

/* One (query block, key block) tile's scores, scaled and masked:
 * s[x, 0..ncp) = scale q_{i0+x} . k_{j0+y}, or -inf where (i0+x, j0+y) is
 * hidden or y >= nc. ktp: the key block's panel; vis: ncp bytes of scratch. */
static void tile_scores(const attn_dims *d, const at_attn_layout *L, int64_t b, int64_t hq,
                        const real *qrows, const real *ktp, int64_t i0, int64_t nr, int64_t j0,
                        int64_t nc, int kind, real *s, unsigned char *vis) {
  int64_t ncp = tv_round(nc);
  tile_mm(nr, ncp, d->D, d->scale, qrows, RQ(d), 1, ktp, d->bkp, 0, s, ncp);
  for (int64_t x = 0; x < nr; x++) {
    real *sr = s + x * ncp;
    if (kind == AT_TILE_FULL) {
      if (nc < ncp) row_cut(sr, ncp, nc);
    } else if (kind == AT_TILE_CAUSAL) {
      row_cut(sr, ncp, AT_MIN(nc, i0 + x - j0 + 1));
    } else {
      at_attn_layout_row(L, b, hq, i0 + x, j0, nc, vis);
      memset(vis + nc, 0, (size_t)(ncp - nc));
      row_mask(sr, ncp, vis);
    }
  }
}

/* The tile list of (b, hq)'s query block r. */
static void tile_list(const at_attn_layout *L, int64_t b, int64_t hq, int64_t r, int64_t *e0,
                      int64_t *e1) {
  int64_t s = at_attn_layout_set(L, b, hq);
  *e0 = L->row[s * L->nqb + r], *e1 = L->row[s * L->nqb + r + 1];
}

typedef struct attn_scratch { /* one thread's */
  real *s, *dp;                 /* tiles: bq x round(bk) */
  unsigned char *vis;           /* round(bk) */
  real *m, *sub, *corr, *dr, *ls; /* bq rows */
  tvec *l;                      /* bq rows of lane sums */
} attn_scratch;

/* nt threads' scratch for tiles of `rows` rows (dp, dr, ls only for the
 * backward); 0 if out of memory. */
static int scratch_new(at_ctx *c, const at_attn_layout *L, int64_t rows, int nt, int backward, attn_scratch *sc) {
  size_t bq = (size_t)rows, nk = (size_t)tv_round(L->bk), te = bq * nk;
  real *s = at_scratch(c, (size_t)nt * te * sizeof(real));
  real *dp = backward ? at_scratch(c, (size_t)nt * te * sizeof(real)) : NULL;
  unsigned char *vis = at_scratch(c, (size_t)nt * nk);
  real *m = at_scratch(c, (size_t)nt * bq * 5 * sizeof(real));
  tvec *l = at_scratch(c, (size_t)nt * bq * sizeof(tvec));
  if (!s || (backward && !dp) || !vis || !m || !l) return 0;
  for (int t = 0; t < nt; t++) {
    real *r = m + t * bq * 5;
    sc[t] = (attn_scratch){s + t * te, dp ? dp + t * te : NULL, vis + t * nk, r, r + bq,
                           r + 2 * bq, r + 3 * bq, r + 4 * bq, l + t * bq};
  }
  return 1;
}

/* ---- forward ------------------------------------------------------------- */

/* Online softmax over one tile's masked scores (rows of s become P), with
 * the running max m and lane sums l (vectors, reduced once at the end of
 * the query block) of each row; rescales o's rows when m grows. The
 * correction factors of all rows are one vector loop. A row with nothing
 * visible so far keeps m = -inf: it subtracts 0, so its P is exp(-inf) = 0. */
static void online_softmax(int64_t nr, int64_t ncp, real *s, attn_scratch *sc, real *orows,
                           int64_t ro, int64_t Dv) {
  real *m = sc->m, *sub = sc->sub, *corr = sc->corr;
  for (int64_t x = 0; x < nr; x++) {
    real mx = row_max(s + x * ncp, ncp);
    sub[x] = m[x] > mx ? m[x] : mx; /* the new max */
  }
#pragma omp simd
  for (int64_t x = 0; x < nr; x++) {
    real mnew = sub[x], s0 = mnew == -INFINITY ? 0 : mnew;
    corr[x] = at_expr(m[x] - s0); /* 0 while m = -inf */
    m[x] = mnew, sub[x] = s0;
  }
  for (int64_t x = 0; x < nr; x++) {
    real *sr = s + x * ncp;
    row_exp(sr, ncp, sub[x]);
    sc->l[x] = sc->l[x] * corr[x] + row_vsum(sr, ncp);
    if (corr[x] != 1) row_scale(orows + x * ro, Dv, corr[x]);
  }
}

/* Every query block of head (b, hq); writes o's rows and (if lse) L.
 * Returns the number of tiles visited. */
static int64_t fwd_head(const attn_dims *d, const at_attn_layout *L, int64_t b, int64_t hq,
                        const real *q, const real *kt, const real *v, real *o, real *lse,
                        attn_scratch *sc) {
  int64_t T = d->T, h = hq / d->G, rq = RQ(d), rv = RV(d), ro = RO(d), tiles = 0;
  const real *qb = q + b * T * rq + hq * d->D;
  const real *vb = v + b * T * rv + h * d->Dv;
  real *ob = o + b * T * ro + hq * d->Dv;
  for (int64_t r = 0; r < L->nqb; r++) {
    int64_t i0 = r * L->bq, nr = AT_MIN(L->bq, T - i0), e0, e1;
    for (int64_t x = 0; x < nr; x++) {
      sc->m[x] = -INFINITY, sc->l[x] = (tvec){0};
      memset(ob + (i0 + x) * ro, 0, (size_t)d->Dv * sizeof(real));
    }
    tile_list(L, b, hq, r, &e0, &e1);
    for (int64_t e = e0; e < e1; e++, tiles++) {
      int64_t j0 = L->col[e] * L->bk, nc = AT_MIN(L->bk, T - j0), ncp = tv_round(nc);
      tile_scores(d, L, b, hq, qb + i0 * rq, panel(d, kt, d->D, b, h, L->col[e]), i0, nr, j0, nc,
                  L->kind[e], sc->s, sc->vis);
      online_softmax(nr, ncp, sc->s, sc, ob + i0 * ro, ro, d->Dv);
      tile_mm(nr, d->Dv, nc, 1, sc->s, ncp, 1, vb + j0 * rv, rv, 1, ob + i0 * ro, ro);
    }
    for (int64_t x = 0; x < nr; x++) {
      double lx = tv_hsum(sc->l[x]); /* 0: the row sees no key; its o stays 0 */
      if (lx > 0) row_scale(ob + (i0 + x) * ro, d->Dv, (real)(1.0 / lx));
      if (lse) lse[(b * d->HQ + hq) * T + i0 + x] = lx > 0 ? (real)(sc->m[x] + log(lx)) : -INFINITY;
    }
  }
  return tiles;
}

/* ---- grouped rows: one position, the G query heads of a kv head --------------
 * A layout of one-row query blocks (bq = 1: NSA's per-token selection) whose
 * G = HQ/H query heads of a kv head share their key blocks runs those G
 * heads at one position as the rows of one tile (the NSA paper's GQA-group
 * kernel, §3.3): their q rows h G .. h G + G - 1 are adjacent in [B,T,HQ,D]
 * (row stride D), so each key tile is loaded once per group, and one
 * G-row product replaces G one-row products. The work item is (b, h); it
 * owns its kv head's dK / dV rows, so the backward needs no per-head
 * buffers. Tiles are counted per query head, as in the ungrouped path. */
static int grouped(const attn_dims *d, const at_attn_layout *L) {
  return L->bq == 1 && d->G > 1 && (L->heads == 1 || L->head_group % d->G == 0);
}

/* The G x ncp scores of position i's group (first head hq0) against one key
 * tile, scaled and masked (every row has the same visible keys). */
static void group_scores(const attn_dims *d, const at_attn_layout *L, int64_t b, int64_t hq0,
                         const real *qrows, const real *ktp, int64_t i, int64_t j0, int64_t nc,
                         int kind, real *s, unsigned char *vis) {
  int64_t ncp = tv_round(nc), cut = kind == AT_TILE_CAUSAL ? AT_MIN(nc, i - j0 + 1) : nc;
  tile_mm(d->G, ncp, d->D, d->scale, qrows, d->D, 1, ktp, d->bkp, 0, s, ncp);
  if (kind == AT_TILE_MASKED) {
    at_attn_layout_row(L, b, hq0, i, j0, nc, vis);
    memset(vis + nc, 0, (size_t)(ncp - nc));
  }
  for (int64_t x = 0; x < d->G; x++) {
    if (kind == AT_TILE_MASKED) row_mask(s + x * ncp, ncp, vis);
    else if (cut < ncp) row_cut(s + x * ncp, ncp, cut);
  }
}

/* The forward of kv head (b, h)'s G query heads, position by position. */
static int64_t fwd_group(const attn_dims *d, const at_attn_layout *L, int64_t b, int64_t h,
                         const real *q, const real *kt, const real *v, real *o, real *lse,
                         attn_scratch *sc) {
  int64_t T = d->T, G = d->G, hq0 = h * G, Dv = d->Dv, tiles = 0;
  const real *qb = q + b * T * RQ(d) + hq0 * d->D, *vb = v + b * T * RV(d) + h * Dv;
  real *ob = o + b * T * RO(d) + hq0 * Dv;
  for (int64_t i = 0; i < T; i++) {
    int64_t e0, e1;
    real *orows = ob + i * RO(d);
    for (int64_t x = 0; x < G; x++) sc->m[x] = -INFINITY, sc->l[x] = (tvec){0};
    memset(orows, 0, (size_t)(G * Dv) * sizeof(real));
    tile_list(L, b, hq0, i, &e0, &e1);
    for (int64_t e = e0; e < e1; e++, tiles++) {
      int64_t j0 = L->col[e] * L->bk, nc = AT_MIN(L->bk, T - j0), ncp = tv_round(nc);
      group_scores(d, L, b, hq0, qb + i * RQ(d), panel(d, kt, d->D, b, h, L->col[e]), i, j0, nc,
                   L->kind[e], sc->s, sc->vis);
      online_softmax(G, ncp, sc->s, sc, orows, Dv, Dv);
      tile_mm(G, Dv, nc, 1, sc->s, ncp, 1, vb + j0 * RV(d), RV(d), 1, orows, Dv);
    }
    for (int64_t x = 0; x < G; x++) {
      double lx = tv_hsum(sc->l[x]);
      if (lx > 0) row_scale(orows + x * Dv, Dv, (real)(1.0 / lx));
      if (lse) lse[(b * d->HQ + hq0 + x) * T + i] = lx > 0 ? (real)(sc->m[x] + log(lx)) : -INFINITY;
    }
  }
  return tiles * G;
}

/* ---- backward ------------------------------------------------------------ */

typedef struct attn_saved {
  const at_attn_layout *L;
  real *lse;
  at_attn_stats *stats;
} attn_saved;

/* Where one work item's gradients go: dq rows of its head (or NULL), and
 * its dK/dV rows (row strides rdk/rdv), or NULL. */
typedef struct bwd_out {
  real *dq, *dk, *dv;
  int64_t rdk, rdv;
} bwd_out;

/* Gradients of head (b, hq). Returns the number of tiles visited. */
static int64_t bwd_head(const attn_dims *d, const at_attn_layout *L, int64_t b, int64_t hq,
                        const real *q, const real *k, const real *kt, const real *vt,
                        const real *o, const real *dout, const real *lse, bwd_out g,
                        attn_scratch *sc) {
  int64_t T = d->T, h = hq / d->G, rq = RQ(d), rk = RK(d), ro = RO(d), tiles = 0;
  const real *qb = q + b * T * rq + hq * d->D, *kb = k + b * T * rk + h * d->D;
  const real *ob = o + b * T * ro + hq * d->Dv, *dob = dout + b * T * ro + hq * d->Dv;
  const real *Lr = lse + (b * d->HQ + hq) * T;
  for (int64_t r = 0; r < L->nqb; r++) {
    int64_t i0 = r * L->bq, nr = AT_MIN(L->bq, T - i0), e0, e1;
    for (int64_t x = 0; x < nr; x++) {
      double acc = 0;
      const real *dor = dob + (i0 + x) * ro, *orow = ob + (i0 + x) * ro;
      for (int64_t e = 0; e < d->Dv; e++) acc += (double)dor[e] * orow[e];
      sc->dr[x] = (real)acc;
      /* a row that sees nothing (L = -inf) has every score masked: any
       * finite L keeps exp(-inf - L) = 0 */
      sc->ls[x] = isfinite(Lr[i0 + x]) ? Lr[i0 + x] : 0;
    }
    tile_list(L, b, hq, r, &e0, &e1);
    for (int64_t e = e0; e < e1; e++, tiles++) {
      int64_t j0 = L->col[e] * L->bk, nc = AT_MIN(L->bk, T - j0), ncp = tv_round(nc);
      real *p = sc->s, *dp = sc->dp;
      tile_scores(d, L, b, hq, qb + i0 * rq, panel(d, kt, d->D, b, h, L->col[e]), i0, nr, j0, nc,
                  L->kind[e], p, sc->vis);
      for (int64_t x = 0; x < nr; x++) row_exp(p + x * ncp, ncp, sc->ls[x]);
      if (g.dv) /* dV_j += P^T dO_i */
        tile_mm(nc, d->Dv, nr, 1, p, 1, ncp, dob + i0 * ro, ro, 1, g.dv + j0 * g.rdv, g.rdv);
      if (!g.dq && !g.dk) continue;
      tile_mm(nr, ncp, d->Dv, 1, dob + i0 * ro, ro, 1, panel(d, vt, d->Dv, b, h, L->col[e]),
              d->bkp, 0, dp, ncp);
      tile_ds(nr, ncp, p, dp, sc->dr);
      if (g.dq) /* dQ_i += scale dS K_j */
        tile_mm(nr, d->D, nc, d->scale, dp, ncp, 1, kb + j0 * rk, rk, 1, g.dq + i0 * rq, rq);
      if (g.dk) /* dK_j += scale dS^T Q_i */
        tile_mm(nc, d->D, nr, d->scale, dp, 1, ncp, qb + i0 * rq, rq, 1, g.dk + j0 * g.rdk, g.rdk);
    }
  }
  return tiles;
}

/* The gradients of kv head (b, h)'s G query heads (grouped rows); g.dq is
 * the group's first dq row, g.dk / g.dv the kv head's rows. */
static int64_t bwd_group(const attn_dims *d, const at_attn_layout *L, int64_t b, int64_t h,
                         const real *q, const real *k, const real *kt, const real *vt,
                         const real *o, const real *dout, const real *lse, bwd_out g,
                         attn_scratch *sc) {
  int64_t T = d->T, G = d->G, hq0 = h * G, D = d->D, Dv = d->Dv, tiles = 0;
  const real *qb = q + b * T * RQ(d) + hq0 * D, *kb = k + b * T * RK(d) + h * D;
  const real *ob = o + b * T * RO(d) + hq0 * Dv, *dob = dout + b * T * RO(d) + hq0 * Dv;
  for (int64_t i = 0; i < T; i++) {
    int64_t e0, e1;
    const real *qrows = qb + i * RQ(d), *dorows = dob + i * RO(d);
    for (int64_t x = 0; x < G; x++) {
      double acc = 0;
      for (int64_t e = 0; e < Dv; e++) acc += (double)dorows[x * Dv + e] * ob[i * RO(d) + x * Dv + e];
      real Lx = lse[(b * d->HQ + hq0 + x) * T + i];
      sc->dr[x] = (real)acc, sc->ls[x] = isfinite(Lx) ? Lx : 0;
    }
    tile_list(L, b, hq0, i, &e0, &e1);
    for (int64_t e = e0; e < e1; e++, tiles++) {
      int64_t j0 = L->col[e] * L->bk, nc = AT_MIN(L->bk, T - j0), ncp = tv_round(nc);
      real *p = sc->s, *dp = sc->dp;
      group_scores(d, L, b, hq0, qrows, panel(d, kt, D, b, h, L->col[e]), i, j0, nc, L->kind[e], p, sc->vis);
      for (int64_t x = 0; x < G; x++) row_exp(p + x * ncp, ncp, sc->ls[x]);
      if (g.dv) tile_mm(nc, Dv, G, 1, p, 1, ncp, dorows, Dv, 1, g.dv + j0 * g.rdv, g.rdv);
      if (!g.dq && !g.dk) continue;
      tile_mm(G, ncp, Dv, 1, dorows, Dv, 1, panel(d, vt, Dv, b, h, L->col[e]), d->bkp, 0, dp, ncp);
      tile_ds(G, ncp, p, dp, sc->dr);
      if (g.dq) tile_mm(G, D, nc, d->scale, dp, ncp, 1, kb + j0 * RK(d), RK(d), 1, g.dq + i * RQ(d), D);
      if (g.dk) tile_mm(nc, D, G, d->scale, dp, 1, ncp, qrows, D, 1, g.dk + j0 * g.rdk, g.rdk);
    }
  }
  return tiles * G;
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
  const attn_saved *sv = nd->saved;
  const at_attn_layout *L = sv->L;
  attn_dims d;
  set_dims(&d, q, k, v, (real)nd->f[0]);
  set_panels(&d, L);
  real *dq = at_grad(c, q), *dk = at_grad(c, k), *dv = at_grad(c, v);
  if (!dq && !dk && !dv) return;
  /* GQA/MQA: per-query-head buffers for dK and dV, summed afterwards
   * (grouped rows: each item owns its kv head's rows) */
  int grp = grouped(&d, L), part = d.G > 1 && !grp;
  size_t nq = (size_t)(d.B * d.HQ * d.T), nkt = (size_t)(d.B * d.H * d.nkb * d.bkp);
  real *kp = part && dk ? at_scratch_zero(c, nq * (size_t)d.D * sizeof(real)) : NULL;
  real *vp = part && dv ? at_scratch_zero(c, nq * (size_t)d.Dv * sizeof(real)) : NULL;
  real *kt = at_scratch(c, nkt * (size_t)d.D * sizeof(real));
  real *vt = dq || dk ? at_scratch(c, nkt * (size_t)d.Dv * sizeof(real)) : NULL;
  int64_t work = grp ? d.B * d.H : d.B * d.HQ, tiles = 0;
  int nt = (int)AT_MIN((int64_t)at_threads(), work);
  attn_scratch *sc = at_scratch(c, (size_t)nt * sizeof *sc);
  if (!kt || ((dq || dk) && !vt) || (part && dk && !kp) || (part && dv && !vp) || !sc ||
      !scratch_new(c, L, grp ? d.G : L->bq, nt, 1, sc))
    return; /* status set */
  pack_panels(&d, k->data, d.D, kt);
  if (vt) pack_panels(&d, v->data, d.Dv, vt);
#pragma omp parallel num_threads(nt) reduction(+ : tiles)
  {
    attn_scratch *s = sc + omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < work; w++) {
      int64_t b = w / (grp ? d.H : d.HQ), hq = grp ? w % d.H * d.G : w % d.HQ, h = hq / d.G;
      bwd_out g = {dq ? dq + b * d.T * RQ(&d) + hq * d.D : NULL, NULL, NULL, d.D, d.Dv};
      if (part) {
        if (kp) g.dk = kp + (size_t)w * d.T * d.D;
        if (vp) g.dv = vp + (size_t)w * d.T * d.Dv;
      } else {
        if (dk) g.dk = dk + b * d.T * RK(&d) + h * d.D, g.rdk = RK(&d);
        if (dv) g.dv = dv + b * d.T * RV(&d) + h * d.Dv, g.rdv = RV(&d);
      }
      if (grp) tiles += bwd_group(&d, L, b, h, q->data, k->data, kt, vt, out->data, out->grad, sv->lse, g, s);
      else tiles += bwd_head(&d, L, b, hq, q->data, k->data, kt, vt, out->data, out->grad, sv->lse, g, s);
    }
  }
  if (kp) sum_groups(&d, d.D, kp, dk);
  if (vp) sum_groups(&d, d.Dv, vp, dv);
  if (sv->stats) sv->stats->backward_tiles += tiles;
}

at_tensor *at_attention(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                        const at_attn_opts *o) {
  if (!q || !k || !v) return NULL;
  attn_dims d;
  if (!attn_check(c, "attention", q, k, v, o, 0, &d)) return NULL;
  const at_attn_layout *L = call_layout(c, "attention", o, &d);
  if (!L) return NULL;
  set_panels(&d, L);
  at_tensor *out = at_new(c, AT_SHAPE(d.B, d.T, d.HQ, d.Dv));
  at_tensor *ins[] = {q, k, v}, *outs[] = {out};
  int grad = at_needs_grad(c, 3, ins);
  real *lse = grad ? at_scratch(c, (size_t)(d.B * d.HQ * d.T) * sizeof(real)) : NULL;
  real *kt = at_scratch(c, (size_t)(d.B * d.H * d.nkb * d.bkp * d.D) * sizeof(real));
  int grp = grouped(&d, L);
  int64_t work = grp ? d.B * d.H : d.B * d.HQ, tiles = 0;
  int nt = (int)AT_MIN((int64_t)at_threads(), work);
  attn_scratch *sc = at_scratch(c, (size_t)nt * sizeof *sc);
  if (!out || (grad && !lse) || !kt || !sc || !scratch_new(c, L, grp ? d.G : L->bq, nt, 0, sc)) return NULL;
  pack_panels(&d, k->data, d.D, kt);
#pragma omp parallel num_threads(nt) reduction(+ : tiles)
  {
    attn_scratch *s = sc + omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int64_t w = 0; w < work; w++)
      tiles += grp ? fwd_group(&d, L, w / d.H, w % d.H, q->data, kt, v->data, out->data, lse, s)
                   : fwd_head(&d, L, w / d.HQ, w % d.HQ, q->data, kt, v->data, out->data, lse, s);
  }
  at_attn_stats *stats = o ? o->stats : NULL;
  if (stats) stats->forward_tiles += tiles;
  at_node *nd = AT_RECORD(c, "attention", attention_backward, ins, outs);
  if (nd) {
    attn_saved *sv = at_scratch(c, sizeof *sv);
    if (!sv) return NULL;
    *sv = (attn_saved){L, lse, stats};
    nd->saved = sv;
    nd->f[0] = d.scale;
  }
  return out;
}

const char *at_attention_isa(void) {
#if TV_BYTES == 64
  return TVL == 16 ? "AVX-512 (16 floats per vector)" : "AVX-512 (8 doubles per vector)";
#elif TV_BYTES == 32
  return TVL == 8 ? "AVX (8 floats per vector)" : "AVX (4 doubles per vector)";
#else
  return TVL == 4 ? "SSE (4 floats per vector)" : "SSE (2 doubles per vector)";
#endif
}

/* ---- decode step ----------------------------------------------------------- */

/* The visible key ranges of the query at position i = len - 1: the tiles of
 * its query block in the layout (cut at len), or, without a layout, the one
 * range of the causal window. */
typedef struct key_range {
  int64_t j0, n;
  int kind;
} key_range;

static int64_t decode_ranges(const at_attn_layout *L, int64_t W, int64_t b, int64_t hq,
                             int64_t len, key_range *out) {
  if (!L) {
    int64_t lo = W && len > W ? len - W : 0;
    out[0] = (key_range){lo, len - lo, AT_TILE_FULL};
    return 1;
  }
  int64_t i = len - 1, e0, e1, n = 0;
  tile_list(L, b, hq, i / L->bq, &e0, &e1);
  for (int64_t e = e0; e < e1; e++) {
    int64_t j0 = L->col[e] * L->bk;
    if (j0 <= i) out[n++] = (key_range){j0, AT_MIN(L->bk, len - j0), L->kind[e]};
  }
  return n;
}

/* o = softmax(scale q K^T) V over the visible cached keys of one head:
 * scores for every range first (O(len) scratch), then one exp pass and the
 * P V products range by range. */
static void decode_head(const attn_dims *d, const at_attn_layout *L, int64_t b, int64_t hq,
                        int64_t len, const key_range *kr, int64_t nr, const real *q,
                        const real *kc, const real *vc, real *out, real *sr,
                        unsigned char *vis) {
  int64_t h = hq / d->G, i = len - 1;
  const real *kb = kc + b * d->T * RK(d) + h * d->D, *vb = vc + b * d->T * RV(d) + h * d->Dv;
  real mx = -INFINITY;
  for (int64_t x = 0; x < nr; x++) {
    int64_t j0 = kr[x].j0, n = kr[x].n;
    real *s = sr + j0;
    at_gemm(AT_N, AT_T, 1, n, d->D, d->scale, q, d->D, kb + j0 * RK(d), RK(d), 0, s, n);
    if (kr[x].kind == AT_TILE_MASKED) at_attn_layout_row(L, b, hq, i, j0, n, vis);
    for (int64_t y = 0; y < n; y++) { /* CAUSAL ranges end at i: nothing to cut */
      if (kr[x].kind == AT_TILE_MASKED && !vis[y]) s[y] = -INFINITY;
      mx = s[y] > mx ? s[y] : mx;
    }
  }
  memset(out, 0, (size_t)d->Dv * sizeof(real));
  if (mx == -INFINITY) return; /* no visible key: o = 0 */
  double sum = 0;
  for (int64_t x = 0; x < nr; x++) {
    real *s = sr + kr[x].j0;
    for (int64_t y = 0; y < kr[x].n; y++) sum += (s[y] = at_expr(s[y] - mx));
  }
  for (int64_t x = 0; x < nr; x++)
    at_gemm(AT_N, AT_N, 1, d->Dv, kr[x].n, (real)(1.0 / sum), sr + kr[x].j0, kr[x].n,
            vb + kr[x].j0 * RV(d), RV(d), 1, out, d->Dv);
}

at_tensor *at_attention_decode(at_ctx *c, at_tensor *q, at_tensor *k_cache, at_tensor *v_cache,
                               int64_t len, const at_attn_opts *o) {
  if (!q || !k_cache || !v_cache) return NULL;
  attn_dims d;
  if (!attn_check(c, "attention_decode", q, k_cache, v_cache, o, 1, &d)) return NULL;
  if (len < 1 || len > d.T)
    return at_fail(c, AT_E_ARG, "attention_decode: len %lld outside 1 .. %lld (the cache's length)",
                   (long long)len, (long long)d.T);
  const at_attn_layout *L = o ? o->layout : NULL;
  if (L) {
    if (L->T < len)
      return at_fail(c, AT_E_SHAPE, "attention_decode: the layout is for T = %lld, shorter than len %lld",
                     (long long)L->T, (long long)len);
    if (!at_attn_layout_check(c, "attention_decode", L, d.B, L->T, d.HQ)) return NULL;
  }
  at_tensor *out = at_new(c, AT_SHAPE(d.B, 1, d.HQ, d.Dv));
  int nt = (int)AT_MIN((int64_t)at_threads(), d.B * d.HQ);
  int64_t maxr = L ? L->nkb : 1;
  real *s = at_scratch(c, (size_t)nt * (size_t)len * sizeof(real));
  unsigned char *vis = at_scratch(c, (size_t)nt * (size_t)(L ? L->bk : 1));
  key_range *kr = at_scratch(c, (size_t)nt * (size_t)maxr * sizeof *kr);
  if (!out || !s || !vis || !kr) return NULL;
  int64_t work = d.B * d.HQ, W = o ? o->window : 0;
#pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num();
#pragma omp for schedule(static)
    for (int64_t w = 0; w < work; w++) {
      int64_t b = w / d.HQ, hq = w % d.HQ;
      key_range *r = kr + t * maxr;
      int64_t n = decode_ranges(L, W, b, hq, len, r);
      decode_head(&d, L, b, hq, len, r, n, q->data + w * d.D, k_cache->data, v_cache->data,
                  out->data + w * d.Dv, s + (size_t)t * len, vis + t * (L ? L->bk : 1));
    }
  }
  return out;
}

/* ---- naive reference ----------------------------------------------------------- */

/* The dense mask of a call: M[i,j] = 0 where query i sees key j, else -inf.
 * Without a layout [T, T] from the window, written out again independently
 * of the fused op's; with one [B*H, G, T, T] from its element predicate
 * (at_attn_layout_visible), not from its tile lists. */
static at_tensor *dense_mask(at_ctx *c, const attn_dims *d, const at_attn_opts *o) {
  int64_t T = d->T, W = o ? o->window : 0;
  const at_attn_layout *L = o ? o->layout : NULL;
  if (L && !at_attn_layout_check(c, "attention_naive", L, d->B, T, d->HQ)) return NULL;
  at_tensor *m = L ? at_new(c, AT_SHAPE(d->B * d->H, d->G, T, T)) : at_new(c, AT_SHAPE(T, T));
  if (!m) return NULL;
  for (int64_t bh = 0; bh < (L ? d->B * d->HQ : 1); bh++) /* (b, hq) = (bh / HQ, bh % HQ) */
    for (int64_t i = 0; i < T; i++)
      for (int64_t j = 0; j < T; j++) {
        int vis = L ? at_attn_layout_visible(L, bh / d->HQ, bh % d->HQ, i, j)
                    : j <= i && (W == 0 || i - j < W);
        m->data[(bh * T + i) * T + j] = vis ? 0 : -INFINITY;
      }
  return m;
}

/* The same attention from primitive ops, its backward from the tape:
 *   Q' = q permuted to [B, HQ, T, D], viewed as [B*H, G*T, D] (the G query
 *        heads of kv head h are consecutive: hq = h*G + g);
 *   K', V' = k, v permuted to [B, H, T, *], viewed as [B*H, T, *];
 *   S = scale Q' K'^T viewed as [B*H, G, T, T];  P = softmax(S + M)
 *   (a row with no visible key gives P = 0: o = 0, no gradient);
 *   o = (P V') viewed as [B, HQ, T, Dv], permuted back to [B, T, HQ, Dv].
 * Materialises B*HQ*T*T scores: for tests and small T only. */
at_tensor *at_attention_naive(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                              const at_attn_opts *o) {
  if (!q || !k || !v) return NULL;
  attn_dims d;
  if (!attn_check(c, "attention_naive", q, k, v, o, 0, &d)) return NULL;
  int64_t B = d.B, T = d.T, H = d.H, G = d.G;
  at_tensor *mask = dense_mask(c, &d, o);
  if (!mask) return NULL;
  const int perm[] = {0, 2, 1, 3}; /* [B,T,H,*] <-> [B,H,T,*] */
  at_tensor *qh = at_reshape(c, at_permute(c, q, perm), AT_SHAPE(B * H, G * T, d.D));
  at_tensor *kh = at_reshape(c, at_permute(c, k, perm), AT_SHAPE(B * H, T, d.D));
  at_tensor *vh = at_reshape(c, at_permute(c, v, perm), AT_SHAPE(B * H, T, d.Dv));
  at_tensor *s = at_scale(c, at_matmul(c, qh, kh, AT_N, AT_T), (double)d.scale);
  at_tensor *p = at_softmax(c, at_reshape(c, s, AT_SHAPE(B * H, G, T, T)), mask);
  at_tensor *oh = at_matmul(c, at_reshape(c, p, AT_SHAPE(B * H, G * T, T)), vh, AT_N, AT_N);
  return at_permute(c, at_reshape(c, oh, AT_SHAPE(B, d.HQ, T, d.Dv)), perm);
}
