/* tests/lin_gradcheck.h: what the double gradient checks of the linear-
 * attention ops share (test_delta_d.c, test_delta_gates_d.c,
 * test_simple_gla_d.c). */
#ifndef AT_LIN_GRADCHECK_H
#define AT_LIN_GRADCHECK_H

#include <string.h>

#include "ops/attention/delta.h"
#include "testing.h"

/* out = [o.flat, ht.flat]: a test-only op so one gradcheck covers both outputs. */
static inline void pack_backward(at_ctx *c, at_node *n) {
  at_tensor *a = n->in[0], *b = n->in[1];
  const real *d = n->out[0]->grad;
  real *da = at_grad(c, a), *db = at_grad(c, b);
  if (da)
    for (int64_t i = 0; i < a->size; i++) da[i] += d[i];
  if (db)
    for (int64_t i = 0; i < b->size; i++) db[i] += d[a->size + i];
}

static inline at_tensor *pack(at_ctx *c, at_tensor *a, at_tensor *b) {
  if (!a || !b) return NULL;
  at_tensor *out = AT_NEW(c, a->size + b->size);
  memcpy(out->data, a->data, (size_t)a->size * sizeof(real));
  memcpy(out->data + a->size, b->data, (size_t)b->size * sizeof(real));
  at_tensor *ins[] = {a, b}, *outs[] = {out};
  AT_RECORD(c, "pack", pack_backward, ins, outs);
  return out;
}

typedef struct gc_case {
  at_lin_kind kind;
  at_lin_opts opts;
  int use_h0, want_ht;
  int ig, ibeta, ih0; /* positions in the input array, -1 if absent */
} gc_case;

static inline at_tensor *gc_fn(at_ctx *c, at_tensor **in, void *u) {
  const gc_case *g = u;
  at_tensor *ht = NULL;
  at_tensor *o = at_lin_attn(c, g->kind, in[0], in[1], in[2], g->ig >= 0 ? in[g->ig] : NULL,
                             g->ibeta >= 0 ? in[g->ibeta] : NULL,
                             g->ih0 >= 0 ? in[g->ih0] : NULL, g->want_ht ? &ht : NULL,
                             &g->opts);
  return g->want_ht ? pack(c, o, ht) : o;
}

/* Inputs of kind `kind`: q, k (rows of norm ~1), v, then g in [g_lo, g_hi],
 * beta in (0.1, 0.9), h0. Returns the number of inputs. */
static inline int make_inputs(at_ctx *c, at_lin_kind kind, int64_t B, int64_t T, int64_t H,
                              int64_t K, int64_t V, double g_lo, double g_hi, int use_h0,
                              uint64_t seed, at_tensor **in, gc_case *gc) {
  int n = 0;
  in[n++] = AT_RANDN(c, seed + 1, 0.6, B, T, H, K);
  in[n++] = AT_RANDN(c, seed + 2, 1 / sqrt((double)K), B, T, H, K);
  in[n++] = AT_RANDN(c, seed + 3, 1, B, T, H, V);
  gc->ig = gc->ibeta = gc->ih0 = -1;
  if (kind == AT_LIN_KDA) gc->ig = n, in[n++] = AT_RAND(c, seed + 4, g_lo, g_hi, B, T, H, K);
  if (kind == AT_LIN_GATED_DELTA_RULE || kind == AT_LIN_SIMPLE_GLA)
    gc->ig = n, in[n++] = AT_RAND(c, seed + 4, g_lo, g_hi, B, T, H);
  if (kind != AT_LIN_SIMPLE_GLA) gc->ibeta = n, in[n++] = AT_RAND(c, seed + 5, 0.1, 0.9, B, T, H);
  if (use_h0) gc->ih0 = n, in[n++] = AT_RANDN(c, seed + 6, 0.5, B, H, K, V);
  return n;
}

/* Gradient checks of one kind in the recurrent form and the chunk form with
 * chunk sizes 1, 4 (ragged), 5 (three chunks, ragged), 64 (one partial
 * chunk) and 24 (two chunks of 16-row sub-chunks, the second and the last
 * ragged), with and without an initial state; o and the final state packed. */
static inline void check_kind(at_lin_kind kind) {
  at_ctx *c = at_ctx_new(1 << 20);
  const struct { at_lin_form form; int64_t C, T; } forms[] = {
      {AT_LIN_RECURRENT, 4, 7}, {AT_LIN_CHUNK, 1, 5}, {AT_LIN_CHUNK, 4, 7},
      {AT_LIN_CHUNK, 5, 13},    {AT_LIN_CHUNK, 64, 9},  {AT_LIN_CHUNK, 24, 41}};
  for (int f = 0; f < AT_ARRAY_LEN(forms); f++)
    for (int use_h0 = 0; use_h0 < 2; use_h0++) {
      at_tensor *in[6];
      gc_case gc = {kind, {0, forms[f].C, forms[f].form}, use_h0, 1, 0, 0, 0};
      int64_t B = 1 + use_h0, H = 2 - use_h0;
      int n = make_inputs(c, kind, B, forms[f].T, H, 4, 3, -1.0, -0.02, use_h0,
                          (uint64_t)(10 * f + use_h0), in, &gc);
      char what[128];
      snprintf(what, sizeof what, "%s %s C=%lld T=%lld h0=%d", at_lin_kind_name(kind),
               forms[f].form == AT_LIN_CHUNK ? "chunk" : "recurrent", (long long)forms[f].C,
               (long long)forms[f].T, use_h0);
      AT_GRADCHECK(c, gc_fn, in, n, &gc, what);
    }
  at_ctx_free(c);
}

/* o alone (no final state asked for), scale 0.7, chunk 3, both forms. */
static inline void check_output_only(at_lin_kind kind) {
  at_ctx *c = at_ctx_new(1 << 20);
  for (int form = 0; form < 2; form++) {
    at_tensor *in[6];
    gc_case gc = {kind, {0.7, 3, (at_lin_form)form}, 1, 0, 0, 0, 0};
    int n = make_inputs(c, kind, 2, 8, 1, 3, 2, -0.5, 0, 1, 100 + (uint64_t)kind, in, &gc);
    char what[96];
    snprintf(what, sizeof what, "%s form %d, o only, scale 0.7", at_lin_kind_name(kind), form);
    AT_GRADCHECK(c, gc_fn, in, n, &gc, what);
  }
  at_ctx_free(c);
}

/* Strong decays: gates in [-25, -15] with every third near 0, both forms,
 * T 9 in chunks of 4 and T 37 in chunks of 20 (pairs across 16-row
 * sub-chunks). */
static inline void check_strong_decay(at_lin_kind kind) {
  at_ctx *c = at_ctx_new(1 << 20);
  for (int form = 0; form < 4; form++) {
    at_tensor *in[6];
    int64_t C = form < 2 ? 4 : 20, T = form < 2 ? 9 : 37;
    gc_case gc = {kind, {0, C, (at_lin_form)(form % 2)}, 1, 1, 0, 0, 0};
    int n = make_inputs(c, kind, 1, T, 2, 4, 3, -25, -15, 1, 200 + (uint64_t)kind, in, &gc);
    at_tensor *g = in[gc.ig];
    for (int64_t i = 0; i < g->size; i += 3) g->data[i] = -1e-3;
    char what[96];
    snprintf(what, sizeof what, "%s form %d C=%lld T=%lld, gates -20 and ~0", at_lin_kind_name(kind), form % 2,
             (long long)C, (long long)T);
    AT_GRADCHECK(c, gc_fn, in, n, &gc, what);
  }
  at_ctx_free(c);
}

#endif
