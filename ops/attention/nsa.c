/* ops/attention/nsa.c: Native Sparse Attention's compression, compressed
 * attention and selection (formulas in nsa.h). The compression MLP is a
 * composition of autograd ops (its backward comes from the tape); the
 * compressed attention is a fused kernel with its own backward, beside its
 * naive form from autograd ops; the selection is integer and records
 * nothing. */
#include <math.h>
#include <string.h>

#include <omp.h>

#include "core/threads.h"
#include "ops/attention/full_tile.h"
#include "ops/attention/nsa.h"
#include "ops/ops.h"

int64_t at_nsa_n_cmp(const at_nsa_blocks *o, int64_t T) {
  return T >= o->cmp_block ? (T - o->cmp_block) / o->cmp_stride + 1 : 0;
}

/* ---- 1. compression ------------------------------------------------------------ */

/* The token rows of every block: idx [B, C l, H, D], row i l + j = token i d + j. */
static at_itensor *block_rows(at_ctx *c, const at_tensor *k, int64_t C, const at_nsa_blocks *o) {
  int64_t B = k->shape[0], HD = k->shape[2] * k->shape[3], l = o->cmp_block;
  at_itensor *idx = at_inew(c, AT_SHAPE(B, C * l, k->shape[2], k->shape[3]));
  if (!idx) return NULL;
  for (int64_t b = 0; b < B; b++)
    for (int64_t r = 0; r < C * l; r++) {
      int32_t tok = (int32_t)(r / l * o->cmp_stride + r % l);
      int32_t *dst = idx->data + (b * C * l + r) * HD;
      for (int64_t e = 0; e < HD; e++) dst[e] = tok;
    }
  return idx;
}

at_tensor *at_nsa_compress(at_ctx *c, at_tensor *k, at_tensor *pe, at_tensor *w1, at_tensor *w2,
                           const at_nsa_blocks *o) {
  if (!k || !pe || !w1 || !w2) return NULL;
  int64_t l = o->cmp_block;
  if (k->ndim != 4 || pe->ndim != 2 || pe->shape[0] != l || pe->shape[1] != k->shape[3])
    return at_fail(c, AT_E_SHAPE, "nsa_compress: k must be [B, T, H, D] and pe [%lld, D]", (long long)l);
  int64_t B = k->shape[0], T = k->shape[1], H = k->shape[2], D = k->shape[3], C = at_nsa_n_cmp(o, T);
  if (C < 1)
    return at_fail(c, AT_E_ARG, "nsa_compress: T %lld holds no block of %lld", (long long)T, (long long)l);
  at_tensor *x = at_gather(c, k, 1, block_rows(c, k, C, o));         /* [B, C l, H, D] */
  x = at_permute(c, AT_RESHAPE(c, x, B * C, l, H, D), (const int[]){0, 2, 1, 3}); /* [B C, H, l, D] */
  x = AT_RESHAPE(c, x, B, C, H, l * D);
  /* W1 vec(X + E) = W1 vec(X) + W1 vec(E): the position embedding enters as
   * the first layer's bias (the same function, without a broadcast add over
   * every block) */
  at_tensor *b1 = AT_RESHAPE(c, at_linear(c, AT_RESHAPE(c, pe, 1, l * D), w1, NULL), w1->shape[0]);
  return at_linear(c, at_silu(c, at_linear(c, x, w1, b1)), w2, NULL); /* [B, C, H, D] */
}

/* ---- 2. compressed attention ------------------------------------------------------ */

typedef struct cmp_dims {
  int64_t B, Tq, HQ, H, G, D, Dv, C, Cp, pos0, R; /* Cp: C in whole vectors; R = pos0 + Tq */
  real scale;
  at_nsa_blocks o;
} cmp_dims;

/* Checks the shapes of q, kc, vc and fills d; 0 (failure recorded) if they do not fit. */
static int cmp_check(at_ctx *c, const at_tensor *q, const at_tensor *kc, const at_tensor *vc,
                     const at_nsa_blocks *o, int64_t pos0, double scale, cmp_dims *d) {
  if (q->ndim != 4 || kc->ndim != 4 || vc->ndim != 4 || kc->shape[0] != q->shape[0] ||
      vc->shape[0] != q->shape[0] || kc->shape[3] != q->shape[3] || kc->shape[1] != vc->shape[1] ||
      kc->shape[2] != vc->shape[2] || kc->shape[2] < 1 || q->shape[2] % kc->shape[2] || kc->shape[1] < 1) {
    at_fail(c, AT_E_SHAPE, "nsa_cmp_attention: q [B, Tq, HQ, D], kc [B, C, H, D], vc [B, C, H, Dv] "
            "with HQ a multiple of H and C >= 1");
    return 0;
  }
  *d = (cmp_dims){.B = q->shape[0], .Tq = q->shape[1], .HQ = q->shape[2], .H = kc->shape[2],
                  .G = q->shape[2] / kc->shape[2], .D = q->shape[3], .Dv = vc->shape[3],
                  .C = kc->shape[1], .Cp = tv_round(kc->shape[1]), .pos0 = pos0, .R = pos0 + q->shape[1],
                  .scale = (real)(scale > 0 ? scale : 1 / sqrt((double)q->shape[3])), .o = *o};
  return 1;
}

/* The naive form, from autograd ops (the fused kernel's reference). */

/* mask [G Tq, C]: 0 where block i ends at or before the row's position. */
static at_tensor *cmp_mask(at_ctx *c, int64_t G, int64_t Tq, int64_t C, int64_t pos0, const at_nsa_blocks *o) {
  at_tensor *m = at_new(c, AT_SHAPE(G * Tq, C));
  if (!m) return NULL;
  for (int64_t r = 0; r < G * Tq; r++)
    for (int64_t i = 0; i < C; i++)
      m->data[r * C + i] = i * o->cmp_stride + o->cmp_block - 1 <= pos0 + r % Tq ? 0 : -INFINITY;
  return m;
}

at_tensor *at_nsa_cmp_attention_naive(at_ctx *c, at_tensor *q, at_tensor *kc, at_tensor *vc,
                                      const at_nsa_blocks *o, int64_t pos0, double scale, at_tensor **p) {
  if (p) *p = NULL;
  cmp_dims d;
  if (!q || !kc || !vc || !cmp_check(c, q, kc, vc, o, pos0, scale, &d)) return NULL;
  const int bhtd[] = {0, 2, 1, 3};
  at_tensor *qh = AT_RESHAPE(c, at_permute(c, q, bhtd), d.B, d.H, d.G * d.Tq, d.D);
  at_tensor *s = at_matmul(c, qh, at_permute(c, kc, bhtd), AT_N, AT_T); /* [B, H, G Tq, C] */
  at_tensor *pr = at_softmax(c, at_scale(c, s, d.scale), cmp_mask(c, d.G, d.Tq, d.C, pos0, o));
  at_tensor *y = at_matmul(c, pr, at_permute(c, vc, bhtd), AT_N, AT_N); /* [B, H, G Tq, Dv] */
  if (p) *p = pr;
  return at_permute(c, AT_RESHAPE(c, y, d.B, d.HQ, d.Tq, d.Dv), bhtd);
}

/* The fused form. A work item is (b, kv head h) with its G query heads, in
 * blocks of CMP_BQ positions. Every visible block of a row fits one scratch
 * row (C ~ T / d), so each row's softmax is exact in one pass:
 *   S = scale Q Kc^T, cut after the row's complete blocks;
 *   P = exp(S - max) / sum;  O = P Vc;  L = max + log sum (saved)
 * and the group's selection is ranked there from the sum over g of P
 * (section 3), so no [T, C] tensor exists. The backward runs the same tiles:
 *   P = exp(S - L);  dVc += P^T dO;  dP = dO Vc^T;  dS = P o (dP - Dr);
 *   dQ += scale dS Kc;  dKc += scale dS^T Q     (Dr = rowsum(dO o O))
 * The item owns its kv head's rows of dKc and dVc: no thread shares memory,
 * and the sums run in a fixed order whatever the thread count. */
#define CMP_BQ 32

typedef struct cmp_scratch { /* one thread's */
  real *kt, *vt;             /* the item's Kc^T [D][Cp], Vc^T [Dv][Cp] (zero past C) */
  real *s, *dp;              /* [CMP_BQ][Cp] */
  double *imp;               /* [CMP_BQ][Cp]: sum over the group of P (selection) */
  double *rank;              /* selection blocks' scores */
  int *f;
  real *ls, *dr;             /* [CMP_BQ] */
} cmp_scratch;

static int cmp_scratch_new(at_ctx *c, const cmp_dims *d, int nt, int backward, int select, cmp_scratch *sc) {
  size_t cp = (size_t)d->Cp, tile = CMP_BQ * cp, nsb = (size_t)((d->R + d->o.sel_block - 1) / d->o.sel_block);
  for (int t = 0; t < nt; t++) {
    cmp_scratch *x = sc + t;
    x->kt = at_scratch(c, (size_t)d->D * cp * sizeof(real));
    x->vt = backward ? at_scratch(c, (size_t)d->Dv * cp * sizeof(real)) : NULL;
    x->s = at_scratch(c, tile * sizeof(real));
    x->dp = backward ? at_scratch(c, tile * sizeof(real)) : NULL;
    x->imp = select ? at_scratch(c, tile * sizeof(double)) : NULL;
    x->rank = select ? at_scratch(c, nsb * sizeof(double)) : NULL;
    x->f = select ? at_scratch(c, nsb * sizeof(int)) : NULL;
    x->ls = at_scratch(c, 2 * CMP_BQ * sizeof(real));
    x->dr = x->ls ? x->ls + CMP_BQ : NULL;
    if (!x->kt || (backward && (!x->vt || !x->dp)) || !x->s || (select && (!x->imp || !x->rank || !x->f)) || !x->ls)
      return 0;
  }
  return 1;
}

/* The rows of kv head (b, h) of x [B, C, H, dim] as columns of xt [dim][Cp]. */
static void cmp_pack(const cmp_dims *d, const real *x, int64_t dim, int64_t b, int64_t h, real *xt) {
  for (int64_t p = 0; p < dim; p++) {
    real *dst = xt + p * d->Cp;
    for (int64_t i = 0; i < d->C; i++) dst[i] = x[((b * d->C + i) * d->H + h) * dim + p];
    for (int64_t i = d->C; i < d->Cp; i++) dst[i] = 0;
  }
}

/* Blocks complete at (absolute) position t. */
static int64_t cmp_visible(const cmp_dims *d, int64_t t) { return AT_MIN(d->C, at_nsa_n_cmp(&d->o, t + 1)); }

/* The scaled scores of nr query rows (position pos0 + i0 ..) of head hq
 * against the first ncp columns of the packed keys, cut after each row's
 * complete blocks. */
static void cmp_scores(const cmp_dims *d, const real *q, int64_t b, int64_t hq, int64_t i0, int64_t nr,
                       int64_t ncp, const real *kt, real *s) {
  const real *qr = q + ((b * d->Tq + i0) * d->HQ + hq) * d->D;
  tile_mm(nr, ncp, d->D, d->scale, qr, d->HQ * d->D, 1, kt, d->Cp, 0, s, ncp);
  for (int64_t x = 0; x < nr; x++) row_cut(s + x * ncp, ncp, cmp_visible(d, d->pos0 + i0 + x));
}

/* Rows of s become P (0 for a row without a complete block); L per row into lse. */
static void cmp_softmax(const cmp_dims *d, int64_t i0, int64_t nr, int64_t ncp, real *s, real *lse) {
  for (int64_t x = 0; x < nr; x++) {
    real *sr = s + x * ncp;
    if (cmp_visible(d, d->pos0 + i0 + x) == 0) {
      memset(sr, 0, (size_t)ncp * sizeof(real));
      lse[x] = -INFINITY;
      continue;
    }
    real mx = row_max(sr, ncp);
    row_exp(sr, ncp, mx);
    double sum = tv_hsum(row_vsum(sr, ncp));
    row_scale(sr, ncp, (real)(1.0 / sum));
    lse[x] = (real)(mx + log(sum));
  }
}

static void rank_row(const at_nsa_blocks *o, int64_t t, const double *m, int64_t nc, double *s, int *f,
                     int32_t *out);

/* Forward of item (b, h): o's rows of its G heads, L, and (if sel) the
 * group's selection rows. */
static void cmp_fwd_item(const cmp_dims *d, int64_t b, int64_t h, const real *q, const real *kc,
                         const real *vc, real *out, real *lse, int32_t *sel, cmp_scratch *sc) {
  const real *vb = vc + (b * d->C * d->H + h) * d->Dv;
  cmp_pack(d, kc, d->D, b, h, sc->kt);
  for (int64_t i0 = 0; i0 < d->Tq; i0 += CMP_BQ) {
    int64_t nr = AT_MIN(CMP_BQ, d->Tq - i0), nc = cmp_visible(d, d->pos0 + i0 + nr - 1), ncp = tv_round(nc);
    if (sel) memset(sc->imp, 0, (size_t)(nr * ncp) * sizeof(double));
    for (int64_t hq = h * d->G; hq < (h + 1) * d->G; hq++) {
      real *orow = out + ((b * d->Tq + i0) * d->HQ + hq) * d->Dv;
      real *lr = lse ? lse + (b * d->HQ + hq) * d->Tq + i0 : sc->ls;
      if (nc == 0) { /* no row of the block sees a complete block */
        for (int64_t x = 0; x < nr; x++) memset(orow + x * d->HQ * d->Dv, 0, (size_t)d->Dv * sizeof(real)), lr[x] = -INFINITY;
        continue;
      }
      cmp_scores(d, q, b, hq, i0, nr, ncp, sc->kt, sc->s);
      cmp_softmax(d, i0, nr, ncp, sc->s, lr);
      tile_mm(nr, d->Dv, nc, 1, sc->s, ncp, 1, vb, d->H * d->Dv, 0, orow, d->HQ * d->Dv);
      if (sel)
        for (int64_t e = 0; e < nr * ncp; e++) sc->imp[e] += sc->s[e];
    }
    for (int64_t x = 0; sel && x < nr; x++) {
      int64_t t = d->pos0 + i0 + x;
      rank_row(&d->o, t, sc->imp + x * ncp, cmp_visible(d, t), sc->rank, sc->f,
               sel + ((b * d->H + h) * d->R + t) * d->o.n_select);
    }
  }
}

typedef struct cmp_saved {
  cmp_dims d;
  real *lse;
} cmp_saved;

/* Gradients of item (b, h) (dq, dkc, dvc may be NULL). */
static void cmp_bwd_item(const cmp_dims *d, int64_t b, int64_t h, const real *q, const real *kc,
                         const real *vc, const real *out, const real *dout, const real *lse, real *dq,
                         real *dkc, real *dvc, cmp_scratch *sc) {
  int64_t rq = d->HQ * d->D, ro = d->HQ * d->Dv, rk = d->H * d->D, rv = d->H * d->Dv;
  int64_t kvo = b * d->C * d->H + h;
  cmp_pack(d, kc, d->D, b, h, sc->kt);
  cmp_pack(d, vc, d->Dv, b, h, sc->vt);
  for (int64_t i0 = 0; i0 < d->Tq; i0 += CMP_BQ) {
    int64_t nr = AT_MIN(CMP_BQ, d->Tq - i0), nc = cmp_visible(d, d->pos0 + i0 + nr - 1), ncp = tv_round(nc);
    if (nc == 0) continue;
    for (int64_t hq = h * d->G; hq < (h + 1) * d->G; hq++) {
      int64_t row0 = (b * d->Tq + i0) * d->HQ + hq;
      const real *qr = q + row0 * d->D, *dor = dout + row0 * d->Dv, *Lr = lse + (b * d->HQ + hq) * d->Tq + i0;
      for (int64_t x = 0; x < nr; x++) {
        double acc = 0;
        for (int64_t e = 0; e < d->Dv; e++) acc += (double)dor[x * ro + e] * out[(row0 + x * d->HQ) * d->Dv + e];
        sc->dr[x] = (real)acc, sc->ls[x] = isfinite(Lr[x]) ? Lr[x] : 0; /* -inf: the row is all cut */
      }
      real *p = sc->s, *dp = sc->dp;
      cmp_scores(d, q, b, hq, i0, nr, ncp, sc->kt, p);
      for (int64_t x = 0; x < nr; x++) row_exp(p + x * ncp, ncp, sc->ls[x]);
      if (dvc) tile_mm(nc, d->Dv, nr, 1, p, 1, ncp, dor, ro, 1, dvc + kvo * d->Dv, rv);
      if (!dq && !dkc) continue;
      tile_mm(nr, ncp, d->Dv, 1, dor, ro, 1, sc->vt, d->Cp, 0, dp, ncp);
      tile_ds(nr, ncp, p, dp, sc->dr);
      if (dq) tile_mm(nr, d->D, nc, d->scale, dp, ncp, 1, kc + kvo * d->D, rk, 1, dq + row0 * d->D, rq);
      if (dkc) tile_mm(nc, d->D, nr, d->scale, dp, 1, ncp, qr, rq, 1, dkc + kvo * d->D, rk);
    }
  }
}

static void cmp_backward(at_ctx *c, at_node *nd) {
  const cmp_saved *sv = nd->saved;
  const cmp_dims *d = &sv->d;
  at_tensor *q = nd->in[0], *kc = nd->in[1], *vc = nd->in[2], *out = nd->out[0];
  real *dq = at_grad(c, q), *dkc = at_grad(c, kc), *dvc = at_grad(c, vc);
  if (!dq && !dkc && !dvc) return;
  int nt = (int)AT_MIN((int64_t)at_threads(), d->B * d->H);
  cmp_scratch *sc = at_scratch(c, (size_t)nt * sizeof *sc);
  if (!sc || !cmp_scratch_new(c, d, nt, 1, 0, sc)) return; /* status set */
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t w = 0; w < d->B * d->H; w++)
    cmp_bwd_item(d, w / d->H, w % d->H, q->data, kc->data, vc->data, out->data, out->grad, sv->lse, dq, dkc,
                 dvc, sc + omp_get_thread_num());
}

at_tensor *at_nsa_cmp_attention(at_ctx *c, at_tensor *q, at_tensor *kc, at_tensor *vc,
                                const at_nsa_blocks *o, int64_t pos0, double scale, at_itensor **sel) {
  if (sel) *sel = NULL;
  cmp_dims d;
  if (!q || !kc || !vc || !cmp_check(c, q, kc, vc, o, pos0, scale, &d)) return NULL;
  at_tensor *out = at_new(c, AT_SHAPE(d.B, d.Tq, d.HQ, d.Dv)), *ins[] = {q, kc, vc}, *outs[] = {out};
  int grad = at_needs_grad(c, 3, ins);
  real *lse = grad ? at_scratch(c, (size_t)(d.B * d.HQ * d.Tq) * sizeof(real)) : NULL;
  at_itensor *s = sel ? at_inew(c, AT_SHAPE(d.B, d.H, d.R, o->n_select)) : NULL;
  int nt = (int)AT_MIN((int64_t)at_threads(), d.B * d.H);
  cmp_scratch *sc = at_scratch(c, (size_t)nt * sizeof *sc);
  if (!out || (grad && !lse) || (sel && !s) || !sc || !cmp_scratch_new(c, &d, nt, 0, sel != NULL, sc))
    return NULL;
  for (int64_t bh = 0; s && bh < d.B * d.H; bh++) /* rows before pos0 */
    for (int64_t e = 0; e < pos0 * o->n_select; e++) s->data[bh * d.R * o->n_select + e] = -1;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int64_t w = 0; w < d.B * d.H; w++)
    cmp_fwd_item(&d, w / d.H, w % d.H, q->data, kc->data, vc->data, out->data, lse, s ? s->data : NULL,
                 sc + omp_get_thread_num());
  at_node *nd = AT_RECORD(c, "nsa_cmp_attention", cmp_backward, ins, outs);
  if (nd) {
    cmp_saved *sv = at_scratch(c, sizeof *sv);
    if (!sv) return NULL;
    *sv = (cmp_saved){d, lse};
    nd->saved = sv;
  }
  if (sel) *sel = s;
  return out;
}

/* ---- 3. selection ------------------------------------------------------------------ */

/* Tokens shared by compression block i and selection block j. */
static int64_t overlap(const at_nsa_blocks *o, int64_t i, int64_t j) {
  int64_t a = AT_MAX(i * o->cmp_stride, j * o->sel_block);
  int64_t z = AT_MIN(i * o->cmp_stride + o->cmp_block, (j + 1) * o->sel_block);
  return AT_MAX(z - a, 0);
}

/* Forced rank of block j for a query in block jt (higher first; 0: not forced). */
static int forced(const at_nsa_blocks *o, int64_t j, int64_t jt) {
  if (j == jt && o->n_local > 0) return 3;
  if (j == 0) return 2;
  return j < jt && j > jt - o->n_local ? 1 : 0;
}

/* 1 if block a ranks before block b. */
static int ranks_before(const double *s, const int *f, int64_t a, int64_t b) {
  if (f[a] != f[b]) return f[a] > f[b];
  if (s[a] != s[b]) return s[a] > s[b];
  return a < b;
}

/* The top n of blocks 0 .. jt into out[n] (-1 padded); s, f scratch of jt + 1. */
static void top_blocks(const at_nsa_blocks *o, int64_t jt, const double *s, int *f, int32_t *out) {
  for (int64_t j = 0; j <= jt; j++) f[j] = forced(o, j, jt);
  for (int64_t r = 0; r < o->n_select; r++) {
    int64_t best = -1;
    for (int64_t j = 0; j <= jt; j++)
      if (f[j] >= 0 && (best < 0 || ranks_before(s, f, j, best))) best = j;
    out[r] = (int32_t)best;
    if (best >= 0) f[best] = -1; /* taken */
  }
}

/* Ranks the selection blocks of position t from the group's compressed
 * probability mass m[i] of blocks i < nc (Eq. 9-10) into out[n]; s, f
 * scratch of t / l' + 1. */
static void rank_row(const at_nsa_blocks *o, int64_t t, const double *m, int64_t nc, double *s, int *f,
                     int32_t *out) {
  int64_t jt = t / o->sel_block;
  memset(s, 0, (size_t)(jt + 1) * sizeof *s);
  for (int64_t i = 0; i < nc; i++) {
    if (m[i] == 0) continue;
    int64_t j0 = i * o->cmp_stride / o->sel_block, j1 = (i * o->cmp_stride + o->cmp_block - 1) / o->sel_block;
    for (int64_t j = j0; j <= AT_MIN(j1, jt); j++) s[j] += m[i] * (double)overlap(o, i, j);
  }
  top_blocks(o, jt, s, f, out);
}

at_itensor *at_nsa_select(at_ctx *c, const at_tensor *p, int64_t B, int64_t H, int64_t G, int64_t Tq,
                          int64_t pos0, const at_nsa_blocks *o) {
  int64_t C = p ? p->shape[3] : 0, n = o->n_select, R = pos0 + Tq, nsb = (R + o->sel_block - 1) / o->sel_block;
  if (p && (p->ndim != 4 || p->shape[0] != B || p->shape[1] != H || p->shape[2] != G * Tq))
    return at_fail(c, AT_E_SHAPE, "nsa_select: p must be [%lld, %lld, %lld, C]", (long long)B,
                   (long long)H, (long long)(G * Tq));
  at_itensor *sel = at_inew(c, AT_SHAPE(B, H, R, n));
  double *s = at_scratch(c, (size_t)nsb * sizeof *s), *m = at_scratch(c, (size_t)(C + 1) * sizeof *m);
  int *f = at_scratch(c, (size_t)nsb * sizeof *f);
  if (!sel || !s || !m || !f) return NULL;
  for (int64_t bh = 0; bh < B * H; bh++) {
    int32_t *dst = sel->data + bh * R * n;
    for (int64_t e = 0; e < pos0 * n; e++) dst[e] = -1;
    for (int64_t t = 0; t < Tq; t++) {
      for (int64_t i = 0; i < C; i++) {
        m[i] = 0;
        for (int64_t g = 0; g < G; g++) m[i] += p->data[(bh * G * Tq + g * Tq + t) * C + i];
      }
      rank_row(o, pos0 + t, m, C, s, f, dst + (pos0 + t) * n);
    }
  }
  return sel;
}
