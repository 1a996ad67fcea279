/* ops/attention/linear_attn.c: the public entry points of linear_attn.h:
 * input checks, the tape node, the OpenMP loop over batch x heads, the step
 * form, and the parallel (masked decay matrix) form. The arithmetic of the
 * recurrent and chunkwise forms is in la_recurrent.c and la_chunk.c, their
 * formulas at the top of those files.
 *
 * One tape node "linear_attn" / "retention" / "gated_linear_attn" per call:
 * inputs q k v g h0 z0 (g, h0, z0 may be absent), outputs o, ht, zt. The
 * node saves the state entering every chunk (B x H x ceil(T/C) states) and
 * nothing per token.
 */
#include <math.h>
#include <string.h>

#include "ops/attention/delta.h" /* at_check_qkv */
#include "ops/attention/la_kernels.h"
#include "ops/attention/linear_attn.h"

static const char *const decay_names[] = {"linear_attn", "retention", "gated_linear_attn"};

double at_retention_log_decay(int64_t h) { return log1p(-exp2(-5.0 - (double)h)); }

/* ---- checks ---------------------------------------------------------------------- */

typedef struct la_call {
  at_la_prob p;
  at_la_form form;
} la_call;

static int check(at_ctx *c, at_la_decay decay, at_tensor *q, at_tensor *k, at_tensor *v,
                 at_tensor *g, at_tensor *h0, at_tensor *z0, const at_la_opts *opts,
                 const char *state_name, la_call *call) {
  if ((int)decay < 0 || (int)decay > AT_LA_DECAY_GATE) {
    at_fail(c, AT_E_ARG, "linear attention: unknown decay %d", (int)decay);
    return 0;
  }
  const char *op = decay_names[decay];
  const int norm = opts ? opts->normalize : 0;
  char s1[96], s2[96];
  if (!q || !k || !v || (decay == AT_LA_DECAY_GATE && !g)) {
    if (at_ctx_status(c) == AT_OK) /* not an earlier failure: a missing argument */
      at_fail(c, AT_E_ARG, "%s: q, k, v%s are required", op, decay == AT_LA_DECAY_GATE ? ", g" : "");
    return 0;
  }
  if (decay != AT_LA_DECAY_GATE && g) {
    at_fail(c, AT_E_ARG, "%s: takes no gate g", op);
    return 0;
  }
  if (decay == AT_LA_DECAY_RETENTION && norm) {
    at_fail(c, AT_E_ARG, "retention: has no normaliser (normalize must be 0)");
    return 0;
  }
  if (z0 && !norm) {
    at_fail(c, AT_E_ARG, "%s: an initial normaliser z0 needs normalize", op);
    return 0;
  }
  if (!at_check_qkv(c, op, q, k, v)) return 0;
  at_la_prob *p = &call->p;
  memset(call, 0, sizeof *call);
  p->B = q->shape[0], p->T = q->shape[1], p->H = q->shape[2], p->K = q->shape[3];
  p->V = v->shape[3];
  if (p->B < 1 || p->T < 1 || p->H < 1 || p->K < 1 || p->V < 1) {
    at_fail(c, AT_E_SHAPE, "%s: empty q %s or v %s", op, AT_SHAPE_STR(q, s1), AT_SHAPE_STR(v, s2));
    return 0;
  }
  if (g && (g->ndim != 3 || g->shape[0] != p->B || g->shape[1] != p->T || g->shape[2] != p->H)) {
    at_fail(c, AT_E_SHAPE, "%s: g %s must be [B,T,H] for q %s", op, AT_SHAPE_STR(g, s1),
            AT_SHAPE_STR(q, s2));
    return 0;
  }
  if (h0 && (h0->ndim != 4 || h0->shape[0] != p->B || h0->shape[1] != p->H ||
             h0->shape[2] != p->K || h0->shape[3] != p->V)) {
    at_fail(c, AT_E_SHAPE, "%s: %s %s must be [B,H,K,V] = [%lld,%lld,%lld,%lld]", op, state_name,
            AT_SHAPE_STR(h0, s1), (long long)p->B, (long long)p->H, (long long)p->K, (long long)p->V);
    return 0;
  }
  if (z0 && (z0->ndim != 3 || z0->shape[0] != p->B || z0->shape[1] != p->H || z0->shape[2] != p->K)) {
    at_fail(c, AT_E_SHAPE, "%s: the normaliser %s must be [B,H,K] = [%lld,%lld,%lld]", op,
            AT_SHAPE_STR(z0, s1), (long long)p->B, (long long)p->H, (long long)p->K);
    return 0;
  }
  double scale = opts ? opts->scale : 0, eps = opts ? opts->eps : 0;
  int64_t C = opts ? opts->chunk_size : 0;
  at_la_form form = opts ? opts->form : AT_LA_CHUNK;
  if (!isfinite(scale) || !isfinite(eps) || eps < 0 || C < 0 ||
      (form != AT_LA_CHUNK && form != AT_LA_RECURRENT && form != AT_LA_PARALLEL)) {
    at_fail(c, AT_E_ARG, "%s: bad options (scale %g, eps %g, chunk_size %lld, form %d)", op, scale, eps,
            (long long)C, (int)form);
    return 0;
  }
  if (form == AT_LA_PARALLEL && decay == AT_LA_DECAY_GATE) {
    at_fail(c, AT_E_ARG, "%s: the parallel form needs a constant decay (none or retention)", op);
    return 0;
  }
  p->scale = (real)(scale != 0 ? scale : 1 / sqrt((double)p->K));
  p->eps = (real)(eps != 0 ? eps : 1e-10);
  p->C = C ? C : 64;
  p->normalize = norm != 0;
  call->form = form;
  p->q = q->data, p->k = k->data, p->v = v->data;
  p->g = g ? g->data : NULL;
  if (decay == AT_LA_DECAY_RETENTION) { /* in the step arena: lives as long as the node */
    double *gh = at_scratch(c, (size_t)p->H * sizeof *gh);
    if (!gh) return 0;
    for (int64_t h = 0; h < p->H; h++) gh[h] = at_retention_log_decay(h);
    p->g_head = gh;
  }
  return 1;
}

/* ---- forward and backward --------------------------------------------------------- */

typedef struct la_saved {
  la_call call;
  real *ckpt; /* [B, H, n_chunks, state] */
} la_saved;

/* One (batch, head) item of the forward or the backward. */
typedef struct la_item {
  const at_la_prob *p;
  int chunked;
  const at_la_grads *gr;              /* backward */
  real *ckpt;                         /* the saved chunk states, NULL when not saved */
  const at_tensor *h0, *z0, *hT, *zT; /* forward: NULL, or the initial / final states */
  real *o;
  size_t kw;                          /* forward: the kernel's workspace (the state follows) */
} la_item;

static void la_backward_item(void *arg, int64_t bh, real *w) {
  const la_item *it = arg;
  const at_la_prob *p = it->p;
  const real *ck = it->ckpt + bh * at_la_n_chunks(p) * at_la_state_size(p);
  if (it->chunked)
    at_la_chunk_backward(p, bh / p->H, bh % p->H, ck, it->gr, w);
  else
    at_la_rec_backward(p, bh / p->H, bh % p->H, ck, it->gr, w);
}

static void la_backward(at_ctx *c, at_node *nd) {
  la_saved *s = nd->saved;
  at_la_prob *p = &s->call.p;
  at_tensor *o = nd->out[0], *ht = nd->out[1], *zt = nd->out[2];
  at_la_grads gr = {o->grad, ht ? ht->grad : NULL, zt ? zt->grad : NULL,
                    at_grad(c, nd->in[0]), at_grad(c, nd->in[1]), at_grad(c, nd->in[2]),
                    at_grad(c, nd->in[3]), at_grad(c, nd->in[4]), at_grad(c, nd->in[5])};
  if (at_ctx_status(c) != AT_OK) return;
  if (!gr.dq && !gr.dk && !gr.dv && !gr.dg && !gr.dh0 && !gr.dz0) return;
  la_item it = {.p = p, .chunked = s->call.form == AT_LA_CHUNK, .gr = &gr, .ckpt = s->ckpt};
  at_parallel_items(c, p->B * p->H, it.chunked ? at_la_chunk_work(p) : at_la_rec_work(p),
                    la_backward_item, &it);
}

/* The initial state of head bh (S, then z) into st. */
static void load_state(const at_la_prob *p, int64_t bh, const at_tensor *h0, const at_tensor *z0,
                       real *st) {
  const int64_t KV = p->K * p->V;
  memset(st, 0, (size_t)at_la_state_size(p) * sizeof(real));
  if (h0) memcpy(st, h0->data + bh * KV, (size_t)KV * sizeof(real));
  if (z0) memcpy(st + KV, z0->data + bh * p->K, (size_t)p->K * sizeof(real));
}

static void la_forward_item(void *arg, int64_t bh, real *w) {
  const la_item *it = arg;
  const at_la_prob *p = it->p;
  const int64_t KV = p->K * p->V;
  real *st = w + it->kw;
  load_state(p, bh, it->h0, it->z0, st);
  real *ck = it->ckpt ? it->ckpt + bh * at_la_n_chunks(p) * at_la_state_size(p) : NULL;
  if (it->chunked)
    at_la_chunk_forward(p, bh / p->H, bh % p->H, st, it->o, ck, w);
  else
    at_la_rec_forward(p, bh / p->H, bh % p->H, st, it->o, ck, w);
  if (it->hT) memcpy(it->hT->data + bh * KV, st, (size_t)KV * sizeof(real));
  if (it->zT) memcpy(it->zT->data + bh * p->K, st + KV, (size_t)p->K * sizeof(real));
}

static at_tensor *parallel_form(at_ctx *c, at_la_decay decay, at_tensor *q, at_tensor *k,
                                at_tensor *v, at_tensor *h0, at_tensor *z0, at_tensor **ht,
                                at_tensor **zt, const la_call *call);

at_tensor *at_la_attn(at_ctx *c, at_la_decay decay, at_tensor *q, at_tensor *k, at_tensor *v,
                      at_tensor *g, at_tensor *h0, at_tensor *z0, at_tensor **ht,
                      at_tensor **zt, const at_la_opts *opts) {
  if (ht) *ht = NULL;
  if (zt) *zt = NULL;
  la_call call;
  if (!check(c, decay, q, k, v, g, h0, z0, opts, "initial_state", &call)) return NULL;
  if (call.form == AT_LA_PARALLEL) return parallel_form(c, decay, q, k, v, h0, z0, ht, zt, &call);
  at_la_prob *p = &call.p;
  const int64_t SS = at_la_state_size(p), nck = at_la_n_chunks(p);
  at_tensor *o = AT_NEW(c, p->B, p->T, p->H, p->V);
  at_tensor *hT = ht ? AT_NEW(c, p->B, p->H, p->K, p->V) : NULL;
  at_tensor *zT = zt && p->normalize ? AT_NEW(c, p->B, p->H, p->K) : NULL;
  if (!o || (ht && !hT) || (zt && p->normalize && !zT)) return NULL;
  at_tensor *ins[] = {q, k, v, g, h0, z0}, *outs[] = {o, hT, zT};
  la_saved *s = NULL;
  if (at_needs_grad(c, AT_ARRAY_LEN(ins), ins)) {
    if (!(s = at_scratch(c, sizeof *s))) return NULL;
    s->call = call;
    if (!(s->ckpt = at_scratch(c, (size_t)(p->B * p->H * nck * SS) * sizeof(real)))) return NULL;
  }
  la_item it = {.p = p, .chunked = call.form == AT_LA_CHUNK, .ckpt = s ? s->ckpt : NULL,
                .h0 = h0, .z0 = z0, .hT = hT, .zT = zT, .o = o->data};
  it.kw = it.chunked ? at_la_chunk_work(p) : at_la_rec_work(p);
  /* per thread: the kernel's workspace, then the running state */
  if (!at_parallel_items(c, p->B * p->H, it.kw + (size_t)SS, la_forward_item, &it)) return NULL;
  if (s) {
    at_node *nd = AT_RECORD(c, decay_names[decay], la_backward, ins, outs);
    if (!nd) return NULL;
    nd->saved = s;
  }
  if (ht) *ht = hT;
  if (zt) *zt = zT;
  return o;
}

at_tensor *at_linear_attn(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *h0,
                          at_tensor *z0, at_tensor **ht, at_tensor **zt, const at_la_opts *opts) {
  return at_la_attn(c, AT_LA_DECAY_NONE, q, k, v, NULL, h0, z0, ht, zt, opts);
}

at_tensor *at_retention(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *h0,
                        at_tensor **ht, const at_la_opts *opts) {
  return at_la_attn(c, AT_LA_DECAY_RETENTION, q, k, v, NULL, h0, NULL, ht, NULL, opts);
}

/* ---- step form ------------------------------------------------------------------ */

at_tensor *at_la_step(at_ctx *c, at_la_decay decay, at_tensor *q, at_tensor *k, at_tensor *v,
                      at_tensor *g, at_tensor *S, at_tensor *z, const at_la_opts *opts) {
  const char *op = (int)decay >= 0 && (int)decay <= AT_LA_DECAY_GATE ? decay_names[decay] : "?";
  int norm = opts ? opts->normalize : 0;
  if (!S || (norm && !z)) {
    if (at_ctx_status(c) == AT_OK)
      at_fail(c, AT_E_ARG, "%s_step: the state%s is required", op, norm ? " and the normaliser z" : "");
    return NULL;
  }
  at_la_opts o1 = opts ? *opts : (at_la_opts){0};
  o1.form = AT_LA_RECURRENT;
  o1.chunk_size = 1;
  la_call call;
  if (!check(c, decay, q, k, v, g, S, z, &o1, "state", &call)) return NULL;
  at_la_prob *p = &call.p;
  const int64_t SS = at_la_state_size(p);
  at_tensor *o = AT_NEW(c, p->B, p->T, p->H, p->V);
  if (!o) return NULL;
  la_item it = {.p = p, .h0 = S, .z0 = z, .hT = S, .zT = z, .o = o->data, .kw = at_la_rec_work(p)};
  if (!at_parallel_items(c, p->B * p->H, it.kw + (size_t)SS, la_forward_item, &it)) return NULL;
  return o;
}

at_tensor *at_retention_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *S,
                             const at_la_opts *opts) {
  return at_la_step(c, AT_LA_DECAY_RETENTION, q, k, v, NULL, S, NULL, opts);
}

/* ---- parallel form ----------------------------------------------------------------- */

/* [B,T,H,D] -> [B,H,T,D] and back. */
static at_tensor *heads_first(at_ctx *c, at_tensor *x) {
  static const int perm[] = {0, 2, 1, 3};
  return at_permute(c, x, perm);
}

/* A constant [H, rows, cols] with entry (h, r, j) = f(h, r, j). */
typedef double (*entry_fn)(const la_call *call, int64_t h, int64_t r, int64_t j);

static at_tensor *constant(at_ctx *c, const la_call *call, int64_t rows, int64_t cols, entry_fn f) {
  const int64_t H = call->p.H;
  at_tensor *t = AT_NEW(c, H, rows, cols);
  if (!t) return NULL;
  for (int64_t h = 0; h < H; h++)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = 0; j < cols; j++) t->data[(h * rows + r) * cols + j] = (real)f(call, h, r, j);
  return t;
}

static double lg(const la_call *call, int64_t h) { return call->p.g_head ? call->p.g_head[h] : 0; }
/* D[r,j] = a^(r-j) for j <= r, masked before exp */
static double mask_decay(const la_call *call, int64_t h, int64_t r, int64_t j) {
  return j <= r ? exp((double)(r - j) * lg(call, h)) : 0;
}
static double decay_from_start(const la_call *call, int64_t h, int64_t r, int64_t j) { /* P[r] */
  (void)j;
  return exp((double)(r + 1) * lg(call, h));
}
static double decay_to_end(const la_call *call, int64_t h, int64_t r, int64_t j) { /* F[r] */
  (void)j;
  return exp((double)(call->p.T - 1 - r) * lg(call, h));
}
static double decay_all(const la_call *call, int64_t h, int64_t r, int64_t j) { /* Lam */
  (void)r, (void)j;
  return exp((double)call->p.T * lg(call, h));
}

/* O = ((Qs K^T) ⊙ D) V (+ diag(P) Qs S0), over (A 1 + P ⊙ Qs z0 + eps) with
 * normalize; ht = Lam S0 + (K ⊙ F)^T V, zt = Lam z0 + (K ⊙ F)^T 1; all by
 * primitive ops on [B,H,T,*] views. */
static at_tensor *parallel_form(at_ctx *c, at_la_decay decay, at_tensor *q, at_tensor *k,
                                at_tensor *v, at_tensor *h0, at_tensor *z0, at_tensor **ht,
                                at_tensor **zt, const la_call *call) {
  (void)decay;
  const at_la_prob *p = &call->p;
  const int64_t T = p->T;
  at_tensor *qs = at_scale(c, heads_first(c, q), p->scale);
  at_tensor *kh = heads_first(c, k), *vh = heads_first(c, v);
  at_tensor *A = at_mul(c, at_matmul(c, qs, kh, AT_N, AT_T), constant(c, call, T, T, mask_decay));
  at_tensor *num = at_matmul(c, A, vh, AT_N, AT_N);
  at_tensor *P = h0 || z0 ? constant(c, call, T, 1, decay_from_start) : NULL;
  if (h0) num = at_add(c, num, at_mul(c, at_matmul(c, qs, h0, AT_N, AT_N), P));
  if (p->normalize) {
    at_tensor *den = at_affine(c, at_sum(c, A, -1, 1), 1.0, (double)p->eps);
    if (z0) {
      at_tensor *z4 = AT_RESHAPE(c, z0, p->B, p->H, p->K, 1);
      den = at_add(c, den, at_mul(c, at_matmul(c, qs, z4, AT_N, AT_N), P));
    }
    num = at_div(c, num, den);
  }
  at_tensor *o = heads_first(c, num);
  if (ht || zt) {
    at_tensor *kf = at_mul(c, kh, constant(c, call, T, 1, decay_to_end));
    at_tensor *lam = constant(c, call, 1, 1, decay_all);
    if (ht) {
      *ht = at_matmul(c, kf, vh, AT_T, AT_N);
      if (h0 && *ht) *ht = at_add(c, *ht, at_mul(c, h0, lam));
    }
    if (zt && p->normalize) {
      *zt = at_sum(c, kf, 2, 0);
      if (z0 && *zt) *zt = at_add(c, *zt, at_mul(c, z0, AT_RESHAPE(c, lam, p->H, 1)));
    }
  }
  return o;
}
