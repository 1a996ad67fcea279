/* tests/dplr_gradcheck.h: what the double gradient checks of gla and dplr
 * share (test_dplr_d.c, test_dplr_gates_d.c). */
#ifndef AT_DPLR_GRADCHECK_H
#define AT_DPLR_GRADCHECK_H

#include "lin_gradcheck.h" /* pack: o and the final state as one output */
#include "ops/attention/dplr.h"

typedef struct dp_case {
  int lowrank;
  at_lin_opts opts;
  int want_ht;
  int ih0; /* position of h0 in the inputs, -1 if absent */
} dp_case;

/* inputs: q k v gk [a b] [h0] */
static inline at_tensor *dp_fn(at_ctx *c, at_tensor **in, void *u) {
  const dp_case *g = u;
  at_tensor *ht = NULL, *h0 = g->ih0 >= 0 ? in[g->ih0] : NULL, **pht = g->want_ht ? &ht : NULL;
  at_tensor *o = g->lowrank ? at_dplr(c, in[0], in[1], in[2], in[4], in[5], in[3], h0, pht, &g->opts)
                            : at_gla(c, in[0], in[1], in[2], in[3], h0, pht, &g->opts);
  return g->want_ht ? pack(c, o, ht) : o;
}

/* q, k (rows of norm ~1), v, gk in [g_lo, g_hi], for dplr a and b (a
 * contraction: |a| ~ 1, |b| ~ 0.5), h0. Returns the number of inputs. */
static inline int dp_inputs(at_ctx *c, int lowrank, int64_t B, int64_t T, int64_t H, int64_t K,
                            int64_t V, double g_lo, double g_hi, int use_h0, uint64_t seed,
                            at_tensor **in, dp_case *gc) {
  int n = 0;
  in[n++] = AT_RANDN(c, seed + 1, 0.6, B, T, H, K);
  in[n++] = AT_RANDN(c, seed + 2, 1 / sqrt((double)K), B, T, H, K);
  in[n++] = AT_RANDN(c, seed + 3, 1, B, T, H, V);
  in[n++] = AT_RAND(c, seed + 4, g_lo, g_hi, B, T, H, K);
  if (lowrank) {
    in[n++] = AT_RANDN(c, seed + 5, 1 / sqrt((double)K), B, T, H, K);
    in[n++] = AT_RANDN(c, seed + 6, 0.5 / sqrt((double)K), B, T, H, K);
  }
  gc->ih0 = -1;
  if (use_h0) gc->ih0 = n, in[n++] = AT_RANDN(c, seed + 7, 0.5, B, H, K, V);
  return n;
}

/* The recurrent form and the chunk form with chunk sizes 1, 4 (ragged), 5
 * (three chunks, ragged) and 64 (one partial chunk), with and without an
 * initial state; o and the final state packed. */
static inline void dp_check_forms(int lowrank) {
  at_ctx *c = at_ctx_new(1 << 20);
  const struct { at_lin_form form; int64_t C, T; } forms[] = {
      {AT_LIN_RECURRENT, 4, 7}, {AT_LIN_CHUNK, 1, 5}, {AT_LIN_CHUNK, 4, 7},
      {AT_LIN_CHUNK, 5, 13},    {AT_LIN_CHUNK, 64, 9}};
  for (int f = 0; f < AT_ARRAY_LEN(forms); f++)
    for (int use_h0 = 0; use_h0 < 2; use_h0++) {
      at_tensor *in[7];
      dp_case gc = {lowrank, {0, forms[f].C, forms[f].form}, 1, -1};
      int64_t B = 1 + use_h0, H = 2 - use_h0;
      int n = dp_inputs(c, lowrank, B, forms[f].T, H, 4, 3, -1.0, -0.02, use_h0,
                        (uint64_t)(10 * f + use_h0), in, &gc);
      char what[128];
      snprintf(what, sizeof what, "%s %s C=%lld T=%lld h0=%d", lowrank ? "dplr" : "gla",
               forms[f].form == AT_LIN_CHUNK ? "chunk" : "recurrent", (long long)forms[f].C,
               (long long)forms[f].T, use_h0);
      AT_GRADCHECK(c, dp_fn, in, n, &gc, what);
    }
  at_ctx_free(c);
}

/* o alone (no final state asked for), scale 0.7, chunk 3, both forms. */
static inline void dp_check_output_only(int lowrank) {
  at_ctx *c = at_ctx_new(1 << 20);
  for (int form = 0; form < 2; form++) {
    at_tensor *in[7];
    dp_case gc = {lowrank, {0.7, 3, (at_lin_form)form}, 0, -1};
    int n = dp_inputs(c, lowrank, 2, 8, 1, 3, 2, -0.5, 0, 1, 100 + (uint64_t)lowrank, in, &gc);
    char what[96];
    snprintf(what, sizeof what, "%s form %d, o only, scale 0.7", lowrank ? "dplr" : "gla", form);
    AT_GRADCHECK(c, dp_fn, in, n, &gc, what);
  }
  at_ctx_free(c);
}

/* Strong decays: gk in [-25, -15] with every third near 0, both forms. */
static inline void dp_check_strong_decay(int lowrank) {
  at_ctx *c = at_ctx_new(1 << 20);
  for (int form = 0; form < 2; form++) {
    at_tensor *in[7];
    dp_case gc = {lowrank, {0, 4, (at_lin_form)form}, 1, -1};
    int n = dp_inputs(c, lowrank, 1, 9, 2, 4, 3, -25, -15, 1, 200 + (uint64_t)lowrank, in, &gc);
    at_tensor *g = in[3];
    for (int64_t i = 0; i < g->size; i += 3) g->data[i] = -1e-3;
    char what[96];
    snprintf(what, sizeof what, "%s form %d, decays -20 and ~0", lowrank ? "dplr" : "gla", form);
    AT_GRADCHECK(c, dp_fn, in, n, &gc, what);
  }
  at_ctx_free(c);
}

#endif
