/* ops/attention/dplr.c: the public entry points of gla and dplr (dplr.h):
 * input checks, the tape node, the OpenMP loop over batch x heads, and the
 * step form. The arithmetic is in dplr_recurrent.c (token by token) and
 * dplr_chunk.c (chunkwise); the formulas are at the top of those files.
 *
 * One tape node per call ("gla" or "dplr"): inputs q k v a b gk h0 (a, b,
 * h0 may be absent), outputs o and the final state. The node saves the
 * state entering every chunk (B x H x ceil(T/C) x K x V), nothing per token.
 */
#include <math.h>
#include <string.h>

#include "ops/attention/dplr_kernels.h"

/* ---- checks --------------------------------------------------------------------- */

static int same_qk(const at_tensor *x, const at_tensor *q) { return x && at_same_shape(x, q); }

/* Fills *p from the inputs, or records why they do not fit and returns 0.
 * `state_name` is "initial_state" or "state" (step form). */
static int check(at_ctx *c, const char *op, at_tensor *q, at_tensor *k, at_tensor *v,
                 at_tensor *a, at_tensor *b, at_tensor *gk, at_tensor *h0, const at_lin_opts *opts,
                 const char *state_name, at_dplr_prob *p) {
  char s1[96], s2[96];
  int lowrank = strcmp(op, "gla") != 0;
  if (!q || !k || !v || !gk || (lowrank && (!a || !b))) {
    if (at_ctx_status(c) == AT_OK) /* not an earlier failure: a missing argument */
      at_fail(c, AT_E_ARG, "%s: q, k, v, %sgk are required", op, lowrank ? "a, b, " : "");
    return 0;
  }
  if (!lowrank && (a || b)) {
    at_fail(c, AT_E_ARG, "%s: takes no a, b (the low-rank term is dplr's)", op);
    return 0;
  }
  if (!at_check_qkv(c, op, q, k, v)) return 0;
  const char *bad = !same_qk(gk, q) ? "gk" : lowrank && !same_qk(a, q) ? "a"
                    : lowrank && !same_qk(b, q) ? "b" : NULL;
  if (bad) {
    const at_tensor *x = bad[0] == 'g' ? gk : bad[0] == 'a' ? a : b;
    at_fail(c, AT_E_SHAPE, "%s: %s %s must be [B,T,H,K] like q %s", op, bad, AT_SHAPE_STR(x, s1),
            AT_SHAPE_STR(q, s2));
    return 0;
  }
  memset(p, 0, sizeof *p);
  p->B = q->shape[0], p->T = q->shape[1], p->H = q->shape[2], p->K = q->shape[3];
  p->V = v->shape[3];
  if (p->B < 1 || p->T < 1 || p->H < 1 || p->K < 1 || p->V < 1) {
    at_fail(c, AT_E_SHAPE, "%s: empty q %s or v %s", op, AT_SHAPE_STR(q, s1), AT_SHAPE_STR(v, s2));
    return 0;
  }
  if (h0 && (h0->ndim != 4 || h0->shape[0] != p->B || h0->shape[1] != p->H ||
             h0->shape[2] != p->K || h0->shape[3] != p->V)) {
    at_fail(c, AT_E_SHAPE, "%s: %s %s must be [B,H,K,V] = [%lld,%lld,%lld,%lld]", op, state_name,
            AT_SHAPE_STR(h0, s1), (long long)p->B, (long long)p->H, (long long)p->K,
            (long long)p->V);
    return 0;
  }
  double scale = opts ? opts->scale : 0;
  int64_t C = opts ? opts->chunk_size : 0;
  if (!isfinite(scale) || C < 0 ||
      (opts && opts->form != AT_LIN_CHUNK && opts->form != AT_LIN_RECURRENT)) {
    at_fail(c, AT_E_ARG, "%s: bad options (scale %g, chunk_size %lld, form %d)", op, scale,
            (long long)C, opts ? (int)opts->form : 0);
    return 0;
  }
  p->scale = (real)(scale != 0 ? scale : 1 / sqrt((double)p->K));
  p->C = C ? C : 64;
  p->lowrank = lowrank;
  p->q = q->data, p->k = k->data, p->v = v->data, p->g = gk->data;
  p->a = lowrank ? a->data : NULL;
  p->b = lowrank ? b->data : NULL;
  return 1;
}

/* ---- forward and backward --------------------------------------------------------- */

typedef struct dplr_saved {
  at_dplr_prob p;
  at_lin_form form;
  real *ckpt; /* [B, H, n_chunks, K, V] */
} dplr_saved;

/* One (batch, head) item of the forward or the backward. */
typedef struct dplr_item {
  const at_dplr_prob *p;
  at_lin_form form;
  const at_dplr_grads *gr;  /* backward */
  real *ckpt;               /* the saved chunk states, NULL when not saved */
  const at_tensor *h0, *hT; /* forward: NULL, or the initial / final states */
  real *o;
  size_t kw;                /* forward: the kernel's workspace (the state follows) */
} dplr_item;

static void dplr_backward_item(void *arg, int64_t bh, real *w) {
  const dplr_item *it = arg;
  const at_dplr_prob *p = it->p;
  const real *ck = it->ckpt + bh * at_dplr_n_chunks(p) * p->K * p->V;
  if (it->form == AT_LIN_CHUNK)
    at_dplr_chunk_backward(p, bh / p->H, bh % p->H, ck, it->gr, w);
  else
    at_dplr_rec_backward(p, bh / p->H, bh % p->H, ck, it->gr, w);
}

/* Node inputs: q k v a b gk h0. */
static void dplr_backward(at_ctx *c, at_node *nd) {
  const dplr_saved *s = nd->saved;
  const at_dplr_prob *p = &s->p;
  at_tensor *o = nd->out[0], *ht = nd->out[1];
  at_dplr_grads gr = {o->grad, ht ? ht->grad : NULL,
                      at_grad(c, nd->in[0]), at_grad(c, nd->in[1]), at_grad(c, nd->in[2]),
                      at_grad(c, nd->in[3]), at_grad(c, nd->in[4]), at_grad(c, nd->in[5]),
                      at_grad(c, nd->in[6])};
  if (at_ctx_status(c) != AT_OK) return;
  if (!gr.dq && !gr.dk && !gr.dv && !gr.da && !gr.db && !gr.dg && !gr.dh0) return;
  dplr_item it = {.p = p, .form = s->form, .gr = &gr, .ckpt = s->ckpt};
  size_t ws = s->form == AT_LIN_CHUNK ? at_dplr_chunk_work(p) : at_dplr_rec_work(p);
  at_parallel_items(c, p->B * p->H, ws, dplr_backward_item, &it);
}

static void dplr_forward_item(void *arg, int64_t bh, real *w) {
  const dplr_item *it = arg;
  const at_dplr_prob *p = it->p;
  const int64_t KV = p->K * p->V;
  real *S = it->hT ? it->hT->data + bh * KV : w + it->kw;
  if (it->h0 && it->h0 != it->hT) /* h0 == hT: the step form's state, updated in place */
    memcpy(S, it->h0->data + bh * KV, (size_t)KV * sizeof(real));
  else if (!it->h0)
    memset(S, 0, (size_t)KV * sizeof(real));
  real *ck = it->ckpt ? it->ckpt + bh * at_dplr_n_chunks(p) * KV : NULL;
  if (it->form == AT_LIN_CHUNK)
    at_dplr_chunk_forward(p, bh / p->H, bh % p->H, S, it->o, ck, w);
  else
    at_dplr_rec_forward(p, bh / p->H, bh % p->H, S, it->o, ck, w);
}

at_tensor *at_dplr_attn(at_ctx *c, const char *name, at_tensor *q, at_tensor *k, at_tensor *v,
                        at_tensor *a, at_tensor *b, at_tensor *gk, at_tensor *h0, at_tensor **ht,
                        const at_lin_opts *opts) {
  if (ht) *ht = NULL;
  at_dplr_prob p;
  if (!check(c, name, q, k, v, a, b, gk, h0, opts, "initial_state", &p)) return NULL;
  at_lin_form form = opts ? opts->form : AT_LIN_CHUNK;
  const int64_t KV = p.K * p.V, nck = at_dplr_n_chunks(&p);
  at_tensor *o = AT_NEW(c, p.B, p.T, p.H, p.V);
  at_tensor *hT = ht ? AT_NEW(c, p.B, p.H, p.K, p.V) : NULL;
  if (!o || (ht && !hT)) return NULL;
  at_tensor *ins[] = {q, k, v, a, b, gk, h0}, *outs[] = {o, hT};
  dplr_saved *s = NULL;
  if (at_needs_grad(c, AT_ARRAY_LEN(ins), ins)) {
    s = at_scratch(c, sizeof *s);
    if (!s) return NULL;
    s->p = p;
    s->form = form;
    s->ckpt = at_scratch(c, (size_t)(p.B * p.H * nck * KV) * sizeof(real));
    if (!s->ckpt) return NULL;
  }
  /* per thread: the kernel's workspace, then the running state when ht is not wanted */
  dplr_item it = {.p = &p, .form = form, .ckpt = s ? s->ckpt : NULL, .h0 = h0, .hT = hT,
                  .o = o->data};
  it.kw = form == AT_LIN_CHUNK ? at_dplr_chunk_work(&p) : at_dplr_rec_work(&p);
  if (!at_parallel_items(c, p.B * p.H, it.kw + (size_t)(p.K * p.V), dplr_forward_item, &it))
    return NULL;
  if (s) {
    at_node *nd = AT_RECORD(c, name, dplr_backward, ins, outs);
    if (!nd) return NULL;
    nd->saved = s;
  }
  if (ht) *ht = hT;
  return o;
}

at_tensor *at_dplr(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *a,
                   at_tensor *b, at_tensor *gk, at_tensor *h0, at_tensor **ht,
                   const at_lin_opts *opts) {
  return at_dplr_attn(c, "dplr", q, k, v, a, b, gk, h0, ht, opts);
}

/* ---- step form ------------------------------------------------------------------ */

at_tensor *at_dplr_attn_step(at_ctx *c, const char *name, at_tensor *q, at_tensor *k,
                             at_tensor *v, at_tensor *a, at_tensor *b, at_tensor *gk,
                             at_tensor *state, const at_lin_opts *opts) {
  if (!state) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "%s_step: the state is required", name);
    return NULL;
  }
  at_dplr_prob p;
  if (!check(c, name, q, k, v, a, b, gk, state, opts, "state", &p)) return NULL;
  p.C = 1; /* no checkpoints, no segment buffer */
  at_tensor *o = AT_NEW(c, p.B, p.T, p.H, p.V);
  if (!o) return NULL;
  dplr_item it = {.p = &p, .form = AT_LIN_RECURRENT, .h0 = state, .hT = state, .o = o->data,
                 .kw = at_dplr_rec_work(&p)};
  if (!at_parallel_items(c, p.B * p.H, it.kw, dplr_forward_item, &it)) return NULL;
  return o;
}

at_tensor *at_dplr_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *a,
                        at_tensor *b, at_tensor *gk, at_tensor *state, const at_lin_opts *opts) {
  return at_dplr_attn_step(c, "dplr", q, k, v, a, b, gk, state, opts);
}
