/* ops/attention/linear_attn.c + favor.c: double gradient checks (central
 * differences against the hand-written backward, relative error < 1e-6) of
 * linear attention (plain and normalised), retention and the per-token
 * gated form in the recurrent form, the chunk form with chunk sizes 1, 4
 * (ragged), 5 (three chunks, ragged) and 64 (one partial chunk) and the
 * parallel form, with and without an initial state (and normaliser); strong
 * decays; the FAVOR+ feature map (queries, keys with a running maximum);
 * the whole Performer op. The checked output packs o and the final state(s). */
#include "lin_gradcheck.h" /* pack() */
#include "ops/attention/favor.h"

typedef struct la_gc {
  at_la_decay decay;
  at_la_opts opts;
  int performer, o_only;
  int ig, ih0, iz0;    /* positions in the input array, -1 if absent */
  at_tensor *M0, *W;   /* performer constants */
} la_gc;

static at_tensor *la_fn(at_ctx *c, at_tensor **in, void *u) {
  const la_gc *g = u;
  at_tensor *ht = NULL, *zt = NULL;
  at_tensor *h0 = g->ih0 >= 0 ? in[g->ih0] : NULL, *z0 = g->iz0 >= 0 ? in[g->iz0] : NULL;
  at_tensor **pht = g->o_only ? NULL : &ht, **pzt = g->o_only ? NULL : &zt;
  at_tensor *o = g->performer
                     ? at_performer(c, in[0], in[1], in[2], g->W, h0, z0, g->M0, pht, pzt, NULL, &g->opts)
                     : at_la_attn(c, g->decay, in[0], in[1], in[2], g->ig >= 0 ? in[g->ig] : NULL, h0, z0, pht,
                                  pzt, &g->opts);
  if (g->o_only) return o;
  o = pack(c, o, ht);
  return zt ? pack(c, o, zt) : o;
}

/* Inputs: q, k (positive with the normaliser), v, g in [g_lo, g_hi], h0, z0. */
static int make(at_ctx *c, la_gc *g, int64_t B, int64_t T, int64_t H, int64_t K, int64_t V, double g_lo,
                double g_hi, int use_h0, uint64_t seed, at_tensor **in) {
  int n = 0, norm = g->opts.normalize;
  if (norm) {
    in[n++] = AT_RAND(c, seed + 1, 0.2, 1.5, B, T, H, K);
    in[n++] = AT_RAND(c, seed + 2, 0.2, 1.5, B, T, H, K);
  } else {
    in[n++] = AT_RANDN(c, seed + 1, 0.7, B, T, H, K);
    in[n++] = AT_RANDN(c, seed + 2, 0.7, B, T, H, K);
  }
  in[n++] = AT_RANDN(c, seed + 3, 1, B, T, H, V);
  g->ig = g->ih0 = g->iz0 = -1;
  if (g->decay == AT_LA_DECAY_GATE) g->ig = n, in[n++] = AT_RAND(c, seed + 4, g_lo, g_hi, B, T, H);
  if (use_h0) {
    g->ih0 = n, in[n++] = AT_RANDN(c, seed + 5, 0.5, B, H, K, V);
    if (norm) g->iz0 = n, in[n++] = AT_RAND(c, seed + 6, 0.5, 2, B, H, K);
  }
  return n;
}

static void check_decay(at_la_decay decay, int normalize, double g_lo, double g_hi) {
  at_ctx *c = at_ctx_new(1 << 20);
  const struct { at_la_form form; int64_t C, T; } forms[] = {
      {AT_LA_RECURRENT, 4, 7}, {AT_LA_CHUNK, 1, 5},  {AT_LA_CHUNK, 4, 7},
      {AT_LA_CHUNK, 5, 13},    {AT_LA_CHUNK, 64, 9}, {AT_LA_PARALLEL, 0, 9}};
  for (int f = 0; f < AT_ARRAY_LEN(forms); f++) {
    if (forms[f].form == AT_LA_PARALLEL && decay == AT_LA_DECAY_GATE) continue;
    for (int use_h0 = 0; use_h0 < 2; use_h0++) {
      at_tensor *in[6];
      la_gc g = {decay, {0, forms[f].C, forms[f].form, normalize, 0}, 0, 0, 0, 0, 0, NULL, NULL};
      int64_t B = 1 + use_h0, H = 3 - use_h0;
      int n = make(c, &g, B, forms[f].T, H, 4, 3, g_lo, g_hi, use_h0, (uint64_t)(10 * f + use_h0), in);
      char what[128];
      snprintf(what, sizeof what, "decay %d norm %d form %d C=%lld T=%lld h0=%d", (int)decay, normalize,
               (int)forms[f].form, (long long)forms[f].C, (long long)forms[f].T, use_h0);
      AT_GRADCHECK(c, la_fn, in, n, &g, what);
    }
  }
  at_ctx_free(c);
}

Test(linpath_gradcheck, linear_attn) { check_decay(AT_LA_DECAY_NONE, 0, 0, 0); }
Test(linpath_gradcheck, linear_attn_normalized) { check_decay(AT_LA_DECAY_NONE, 1, 0, 0); }
Test(linpath_gradcheck, retention) { check_decay(AT_LA_DECAY_RETENTION, 0, 0, 0); }
Test(linpath_gradcheck, gated) { check_decay(AT_LA_DECAY_GATE, 0, -1.0, -0.02); }
Test(linpath_gradcheck, gated_normalized) { check_decay(AT_LA_DECAY_GATE, 1, -1.0, -0.02); }

/* Strong decays: gates in [-25, -15] with every third near 0, both forms. */
Test(linpath_gradcheck, strong_decay) {
  at_ctx *c = at_ctx_new(1 << 20);
  for (int norm = 0; norm < 2; norm++)
    for (int form = 0; form < 2; form++) {
      at_tensor *in[6];
      la_gc g = {AT_LA_DECAY_GATE, {0, 4, (at_la_form)form, norm, 0}, 0, 0, 0, 0, 0, NULL, NULL};
      int n = make(c, &g, 1, 9, 2, 4, 3, -25, -15, 1, 200 + (uint64_t)(2 * norm + form), in);
      for (int64_t i = 0; i < in[g.ig]->size; i += 3) in[g.ig]->data[i] = -1e-3;
      char what[96];
      snprintf(what, sizeof what, "gates -20 and ~0, norm %d form %d", norm, form);
      AT_GRADCHECK(c, la_fn, in, n, &g, what);
    }
  at_ctx_free(c);
}

/* o alone with a custom scale and eps. */
Test(linpath_gradcheck, output_only_scale_eps) {
  at_ctx *c = at_ctx_new(1 << 20);
  for (int form = 0; form < 2; form++) {
    at_tensor *in[6];
    la_gc g = {AT_LA_DECAY_NONE, {0.7, 3, (at_la_form)form, 1, 1e-3}, 0, 1, 0, 0, 0, NULL, NULL};
    int n = make(c, &g, 2, 8, 1, 3, 2, 0, 0, 1, 100 + (uint64_t)form, in);
    char what[64];
    snprintf(what, sizeof what, "scale 0.7 eps 1e-3 form %d", form);
    AT_GRADCHECK(c, la_fn, in, n, &g, what);
  }
  at_ctx_free(c);
}

/* ---- FAVOR+ ------------------------------------------------------------------------ */

typedef struct feat_gc {
  at_tensor *W, *M0;
  int key;
} feat_gc;

/* Each row of phi over its sum: the stabilisers (a factor per row, held
 * constant by the backward) cancel, as they do in the attention ratio. */
static at_tensor *feat_fn(at_ctx *c, at_tensor **in, void *u) {
  const feat_gc *f = u;
  at_tensor *g = NULL;
  at_tensor *phi = at_favor_features(c, in[0], f->W, f->key, f->M0, f->key ? &g : NULL, NULL);
  return at_div(c, phi, at_sum(c, phi, -1, 1));
}

/* The feature map: queries (per-row max), keys (running max, with and
 * without M0), m < K, m = K, m > K (a partial block). */
Test(linpath_gradcheck, favor_features) {
  at_ctx *c = at_ctx_new(1 << 20);
  const int64_t ms[] = {3, 5, 12};
  for (int i = 0; i < AT_ARRAY_LEN(ms); i++)
    for (int key = 0; key < 3; key++) {
      feat_gc f = {AT_NEW(c, ms[i], 5), key == 2 ? AT_RAND(c, 9, 0, 1, 2, 3) : NULL, key > 0};
      at_favor_draw(f.W->data, ms[i], 5, 1, 3, 4, (uint64_t)i);
      if (f.M0) f.M0->requires_grad = 0;
      at_tensor *x = AT_RANDN(c, 20 + (uint64_t)(3 * i + key), 1.0, 2, 6, 3, 5);
      char what[64];
      snprintf(what, sizeof what, "favor features m=%lld %s", (long long)ms[i],
               key == 0 ? "queries" : key == 1 ? "keys" : "keys with M0");
      AT_GRADCHECK(c, feat_fn, &x, 1, &f, what);
    }
  at_ctx_free(c);
}

/* The Performer op: features then the gated, normalised op, both forms, with
 * and without a state (h0, z0, M0). The output o only: the final state is
 * relative to the running maximum MT, which the backward holds fixed (o does
 * not depend on it; ht and zt scale with exp(-MT)). */
Test(linpath_gradcheck, performer) {
  at_ctx *c = at_ctx_new(1 << 20);
  const struct { at_la_form form; int64_t C, T; } forms[] = {
      {AT_LA_RECURRENT, 4, 7}, {AT_LA_CHUNK, 1, 5}, {AT_LA_CHUNK, 4, 11}, {AT_LA_CHUNK, 64, 9}};
  for (int f = 0; f < AT_ARRAY_LEN(forms); f++)
    for (int use_h0 = 0; use_h0 < 2; use_h0++) {
      const int64_t B = 2, H = 2, K = 4, V = 3, m = 6;
      la_gc g = {AT_LA_DECAY_GATE, {0, forms[f].C, forms[f].form, 0, 0}, 1, 1, -1, -1, -1, NULL, AT_NEW(c, m, K)};
      at_favor_draw(g.W->data, m, K, 1, 5, 6, (uint64_t)f);
      at_tensor *in[5];
      int n = 0;
      in[n++] = AT_RANDN(c, 30 + (uint64_t)f, 0.8, B, forms[f].T, H, K);
      in[n++] = AT_RANDN(c, 40 + (uint64_t)f, 0.8, B, forms[f].T, H, K);
      in[n++] = AT_RANDN(c, 50 + (uint64_t)f, 1.0, B, forms[f].T, H, V);
      if (use_h0) {
        g.ih0 = n, in[n++] = AT_RANDN(c, 60, 0.5, B, H, m, V);
        g.iz0 = n, in[n++] = AT_RAND(c, 61, 0.5, 2, B, H, m);
        g.M0 = AT_RAND(c, 62, 0, 1, B, H);
        g.M0->requires_grad = 0;
      }
      char what[96];
      snprintf(what, sizeof what, "performer form %d C=%lld T=%lld h0=%d", (int)forms[f].form,
               (long long)forms[f].C, (long long)forms[f].T, use_h0);
      AT_GRADCHECK(c, la_fn, in, n, &g, what);
    }
  at_ctx_free(c);
}
