/* ops/attention/delta.c: the public entry points of the gated delta-rule
 * family (delta.h): input checks, the tape node, the loop over
 * batch x heads (at_parallel_items), and the step form. The arithmetic is in
 * delta_recurrent.c (token by token) and delta_chunk.c (chunkwise); the
 * formulas are at the top of those files.
 *
 * One tape node "<kind>" per call: inputs q k v g beta h0 (g, beta, h0 may be
 * absent), outputs o and the final state. The node saves the state entering
 * every chunk (B x H x ceil(T/C) x K x V) and nothing per token.
 */
#include <math.h>
#include <string.h>

#include "ops/attention/delta.h"
#include "ops/attention/lin_kernels.h"

int at_check_qkv(at_ctx *c, const char *op, const at_tensor *q, const at_tensor *k,
                 const at_tensor *v) {
  if (q->ndim == 4 && at_same_shape(q, k) && v->ndim == 4 && v->shape[0] == q->shape[0] &&
      v->shape[1] == q->shape[1] && v->shape[2] == q->shape[2])
    return 1;
  char s1[96], s2[96], s3[96];
  at_fail(c, AT_E_SHAPE, "%s: q %s, k %s, v %s must be [B,T,H,K], [B,T,H,K], [B,T,H,V]", op,
          AT_SHAPE_STR(q, s1), AT_SHAPE_STR(k, s2), AT_SHAPE_STR(v, s3));
  return 0;
}

static const char *const kind_names[AT_LIN_KIND_COUNT] = {"delta_rule", "gated_delta_rule",
                                                          "kda", "simple_gla"};

const char *at_lin_kind_name(at_lin_kind kind) {
  return (int)kind >= 0 && (int)kind < AT_LIN_KIND_COUNT ? kind_names[kind] : "?";
}

int at_lin_kind_from_name(const char *name) {
  for (int i = 0; name && i < AT_LIN_KIND_COUNT; i++)
    if (strcmp(name, kind_names[i]) == 0) return i;
  return -1;
}

/* ---- checks --------------------------------------------------------------------- */

static int has_beta(at_lin_kind kind) { return kind != AT_LIN_SIMPLE_GLA; }
static int has_g(at_lin_kind kind) { return kind != AT_LIN_DELTA_RULE; }

/* Fills *p from the inputs, or records why they do not fit and returns 0.
 * `state_name` is "initial_state" or "state" (step form). */
static int check(at_ctx *c, at_lin_kind kind, at_tensor *q, at_tensor *k, at_tensor *v,
                 at_tensor *g, at_tensor *beta, at_tensor *h0, const at_lin_opts *opts,
                 const char *state_name, at_lin_prob *p) {
  if ((int)kind < 0 || (int)kind >= AT_LIN_KIND_COUNT) {
    at_fail(c, AT_E_ARG, "linear attention: unknown kind %d", (int)kind);
    return 0;
  }
  const char *op = kind_names[kind];
  char s1[96], s2[96];
  if (!q || !k || !v || (has_g(kind) && !g) || (has_beta(kind) && !beta)) {
    if (at_ctx_status(c) == AT_OK) /* not an earlier failure: a missing argument */
      at_fail(c, AT_E_ARG, "%s: q, k, v%s%s are required", op, has_g(kind) ? ", g" : "",
              has_beta(kind) ? ", beta" : "");
    return 0;
  }
  if (!has_g(kind) && g) {
    at_fail(c, AT_E_ARG, "%s: takes no gate g", op);
    return 0;
  }
  if (!has_beta(kind) && beta) {
    at_fail(c, AT_E_ARG, "%s: takes no beta", op);
    return 0;
  }
  if (!at_check_qkv(c, op, q, k, v)) return 0;
  memset(p, 0, sizeof *p);
  p->B = q->shape[0], p->T = q->shape[1], p->H = q->shape[2], p->K = q->shape[3];
  p->V = v->shape[3];
  if (p->B < 1 || p->T < 1 || p->H < 1 || p->K < 1 || p->V < 1) {
    at_fail(c, AT_E_SHAPE, "%s: empty q %s or v %s", op, AT_SHAPE_STR(q, s1), AT_SHAPE_STR(v, s2));
    return 0;
  }
  if (g) {
    int chan = kind == AT_LIN_KDA;
    int ok = g->ndim == (chan ? 4 : 3) && g->shape[0] == p->B && g->shape[1] == p->T &&
             g->shape[2] == p->H && (!chan || g->shape[3] == p->K);
    if (!ok) {
      at_fail(c, AT_E_SHAPE, "%s: g %s must be %s for q %s", op, AT_SHAPE_STR(g, s1),
              chan ? "[B,T,H,K]" : "[B,T,H]", AT_SHAPE_STR(q, s2));
      return 0;
    }
  }
  if (beta && (beta->ndim != 3 || beta->shape[0] != p->B || beta->shape[1] != p->T ||
               beta->shape[2] != p->H)) {
    at_fail(c, AT_E_SHAPE, "%s: beta %s must be [B,T,H] for q %s", op, AT_SHAPE_STR(beta, s1),
            AT_SHAPE_STR(q, s2));
    return 0;
  }
  if (h0 && (h0->ndim != 4 || h0->shape[0] != p->B || h0->shape[1] != p->H ||
             h0->shape[2] != p->K || h0->shape[3] != p->V)) {
    at_fail(c, AT_E_SHAPE, "%s: %s %s must be [B,H,K,V] = [%lld,%lld,%lld,%lld]", op,
            state_name, AT_SHAPE_STR(h0, s1), (long long)p->B, (long long)p->H,
            (long long)p->K, (long long)p->V);
    return 0;
  }
  double scale = opts ? opts->scale : 0;
  int64_t C = opts ? opts->chunk_size : 0;
  if (!isfinite(scale) || C < 0 || (opts && opts->form != AT_LIN_CHUNK &&
                                    opts->form != AT_LIN_RECURRENT)) {
    at_fail(c, AT_E_ARG, "%s: bad options (scale %g, chunk_size %lld, form %d)", op, scale,
            (long long)C, opts ? (int)opts->form : 0);
    return 0;
  }
  p->scale = (real)(scale != 0 ? scale : 1 / sqrt((double)p->K));
  p->C = C ? C : 64;
  p->gate = !g ? AT_LIN_GATE_NONE : kind == AT_LIN_KDA ? AT_LIN_GATE_CHANNEL : AT_LIN_GATE_HEAD;
  p->delta = has_beta(kind);
  p->q = q->data, p->k = k->data, p->v = v->data;
  p->g = g ? g->data : NULL;
  p->beta = beta ? beta->data : NULL;
  return 1;
}

/* ---- forward and backward --------------------------------------------------------- */

typedef struct lin_saved {
  at_lin_prob p;
  at_lin_form form;
  real *ckpt; /* [B, H, n_chunks, K, V] */
} lin_saved;

/* One (batch, head) item of the forward or the backward. */
typedef struct lin_item {
  const at_lin_prob *p;
  at_lin_form form;
  const at_lin_grads *gr;   /* backward */
  real *ckpt;               /* the saved chunk states, NULL when not saved */
  const at_tensor *h0, *hT; /* forward: NULL, or the initial / final states */
  real *o;
  size_t kw;                /* forward: the kernel's workspace (the state follows) */
} lin_item;

static void lin_backward_item(void *arg, int64_t bh, real *w) {
  const lin_item *it = arg;
  const at_lin_prob *p = it->p;
  const real *ck = it->ckpt + bh * at_lin_n_chunks(p) * p->K * p->V;
  if (it->form == AT_LIN_CHUNK)
    at_lin_chunk_backward(p, bh / p->H, bh % p->H, ck, it->gr, w);
  else
    at_lin_rec_backward(p, bh / p->H, bh % p->H, ck, it->gr, w);
}

static void lin_backward(at_ctx *c, at_node *nd) {
  const lin_saved *s = nd->saved;
  const at_lin_prob *p = &s->p;
  at_tensor *o = nd->out[0], *ht = nd->out[1];
  at_lin_grads gr = {o->grad, ht ? ht->grad : NULL,
                     at_grad(c, nd->in[0]), at_grad(c, nd->in[1]), at_grad(c, nd->in[2]),
                     at_grad(c, nd->in[3]), at_grad(c, nd->in[4]), at_grad(c, nd->in[5])};
  if (at_ctx_status(c) != AT_OK) return;
  if (!gr.dq && !gr.dk && !gr.dv && !gr.dg && !gr.dbeta && !gr.dh0) return;
  lin_item it = {.p = p, .form = s->form, .gr = &gr, .ckpt = s->ckpt};
  size_t ws = s->form == AT_LIN_CHUNK ? at_lin_chunk_work(p) : at_lin_rec_work(p);
  at_parallel_items(c, p->B * p->H, ws, lin_backward_item, &it);
}

static void lin_forward_item(void *arg, int64_t bh, real *w) {
  const lin_item *it = arg;
  const at_lin_prob *p = it->p;
  const int64_t KV = p->K * p->V;
  real *S = it->hT ? it->hT->data + bh * KV : w + it->kw;
  if (it->h0 && it->h0 != it->hT) /* h0 == hT: the step form's state, updated in place */
    memcpy(S, it->h0->data + bh * KV, (size_t)KV * sizeof(real));
  else if (!it->h0)
    memset(S, 0, (size_t)KV * sizeof(real));
  real *ck = it->ckpt ? it->ckpt + bh * at_lin_n_chunks(p) * KV : NULL;
  if (it->form == AT_LIN_CHUNK)
    at_lin_chunk_forward(p, bh / p->H, bh % p->H, S, it->o, ck, w);
  else
    at_lin_rec_forward(p, bh / p->H, bh % p->H, S, it->o, ck, w);
}

at_tensor *at_lin_attn(at_ctx *c, at_lin_kind kind, at_tensor *q, at_tensor *k, at_tensor *v,
                       at_tensor *g, at_tensor *beta, at_tensor *h0, at_tensor **ht,
                       const at_lin_opts *opts) {
  if (ht) *ht = NULL;
  at_lin_prob p;
  if (!check(c, kind, q, k, v, g, beta, h0, opts, "initial_state", &p)) return NULL;
  at_lin_form form = opts ? opts->form : AT_LIN_CHUNK;
  const int64_t KV = p.K * p.V, nck = at_lin_n_chunks(&p);
  at_tensor *o = AT_NEW(c, p.B, p.T, p.H, p.V);
  at_tensor *hT = ht ? AT_NEW(c, p.B, p.H, p.K, p.V) : NULL;
  if (!o || (ht && !hT)) return NULL;
  at_tensor *ins[] = {q, k, v, g, beta, h0}, *outs[] = {o, hT};
  lin_saved *s = NULL;
  if (at_needs_grad(c, AT_ARRAY_LEN(ins), ins)) {
    s = at_scratch(c, sizeof *s);
    if (!s) return NULL;
    s->p = p;
    s->form = form;
    s->ckpt = at_scratch(c, (size_t)(p.B * p.H * nck * KV) * sizeof(real));
    if (!s->ckpt) return NULL;
  }

  /* per thread: the kernel's workspace, then the running state when ht is not wanted */
  lin_item it = {.p = &p, .form = form, .ckpt = s ? s->ckpt : NULL, .h0 = h0, .hT = hT,
                 .o = o->data};
  it.kw = form == AT_LIN_CHUNK ? at_lin_chunk_work(&p) : at_lin_rec_work(&p);
  if (!at_parallel_items(c, p.B * p.H, it.kw + (size_t)(p.K * p.V), lin_forward_item, &it))
    return NULL;

  if (s) {
    at_node *nd = AT_RECORD(c, kind_names[kind], lin_backward, ins, outs);
    if (!nd) return NULL;
    nd->saved = s;
  }
  if (ht) *ht = hT;
  return o;
}

at_tensor *at_delta_rule(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *beta,
                         at_tensor *h0, at_tensor **ht, const at_lin_opts *opts) {
  return at_lin_attn(c, AT_LIN_DELTA_RULE, q, k, v, NULL, beta, h0, ht, opts);
}

at_tensor *at_gated_delta_rule(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                               at_tensor *g, at_tensor *beta, at_tensor *h0, at_tensor **ht,
                               const at_lin_opts *opts) {
  return at_lin_attn(c, AT_LIN_GATED_DELTA_RULE, q, k, v, g, beta, h0, ht, opts);
}

at_tensor *at_kda(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                  at_tensor *beta, at_tensor *h0, at_tensor **ht, const at_lin_opts *opts) {
  return at_lin_attn(c, AT_LIN_KDA, q, k, v, g, beta, h0, ht, opts);
}

/* ---- step form ------------------------------------------------------------------ */

at_tensor *at_lin_attn_step(at_ctx *c, at_lin_kind kind, at_tensor *q, at_tensor *k,
                            at_tensor *v, at_tensor *g, at_tensor *beta, at_tensor *state,
                            const at_lin_opts *opts) {
  if (!state) {
    if (at_ctx_status(c) == AT_OK)
      at_fail(c, AT_E_ARG, "%s_step: the state is required", at_lin_kind_name(kind));
    return NULL;
  }
  at_lin_prob p;
  if (!check(c, kind, q, k, v, g, beta, state, opts, "state", &p)) return NULL;
  p.C = 1; /* no checkpoints, no segment buffer */
  at_tensor *o = AT_NEW(c, p.B, p.T, p.H, p.V);
  if (!o) return NULL;
  lin_item it = {.p = &p, .form = AT_LIN_RECURRENT, .h0 = state, .hT = state, .o = o->data,
                 .kw = at_lin_rec_work(&p)};
  if (!at_parallel_items(c, p.B * p.H, it.kw, lin_forward_item, &it)) return NULL;
  return o;
}

at_tensor *at_delta_rule_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                              at_tensor *beta, at_tensor *state, const at_lin_opts *opts) {
  return at_lin_attn_step(c, AT_LIN_DELTA_RULE, q, k, v, NULL, beta, state, opts);
}

at_tensor *at_gated_delta_rule_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                                    at_tensor *g, at_tensor *beta, at_tensor *state,
                                    const at_lin_opts *opts) {
  return at_lin_attn_step(c, AT_LIN_GATED_DELTA_RULE, q, k, v, g, beta, state, opts);
}

at_tensor *at_kda_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                       at_tensor *beta, at_tensor *state, const at_lin_opts *opts) {
  return at_lin_attn_step(c, AT_LIN_KDA, q, k, v, g, beta, state, opts);
}
