/* The linear path's layers (models/linear_attn.c, performer.c, retnet.c):
 * double gradient checks of the whole layer (projections, feature maps,
 * norms, gates, RoPE, the op, output projection) against central
 * differences, for every parameter and the input, over their options:
 * d_model 8, 2 heads of 4, chunk 4 with T 9..11 (full chunks and a ragged
 * tail), batch 2. */
#include "linlayer_testing.h"

typedef struct lp_case {
  const char *mixer;
  const char *keys[4];
  double vals[4];
  int recurrent;
  int64_t T;
} lp_case;

static at_tensor *gc_layer(at_ctx *c, at_tensor **in, void *u) {
  one_layer *L = u;
  return layer_forward(c, L, in[L->p->n]);
}

static void check(const lp_case *k, uint64_t seed) {
  at_mixer_kind kind = mixer_id(k->mixer);
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = 8, cfg.n_heads = cfg.n_kv_heads = 2, cfg.n_layers = 1, cfg.layers[0] = kind;
  set_opt(&cfg, kind, "chunk_size", 4);
  for (int i = 0; i < 4 && k->keys[i]; i++) set_opt(&cfg, kind, k->keys[i], k->vals[i]);
  one_layer L;
  layer_build(&L, &cfg, kind, seed);
  if (k->recurrent) at_linear_mixer_set_form(L.layer, AT_LIN_RECURRENT);
  layer_randomize(&L, seed + 7, 0.5);
  at_ctx *c = at_ctx_new(1 << 22);
  at_tensor **in = calloc((size_t)L.p->n + 1, sizeof *in);
  for (int i = 0; i < L.p->n; i++) in[i] = L.p->list[i].t;
  in[L.p->n] = AT_RANDN(c, seed + 3, 1.0, 2, k->T, 8);
  char what[200];
  snprintf(what, sizeof what, "%s %s=%g %s=%g %s=%g rec=%d T=%lld (%d params)", k->mixer,
           k->keys[0] ? k->keys[0] : "-", k->vals[0], k->keys[1] ? k->keys[1] : "-", k->vals[1],
           k->keys[2] ? k->keys[2] : "-", k->vals[2], k->recurrent, (long long)k->T, L.p->n);
  at_gc_result r;
  cr_assert(at_gradcheck(c, gc_layer, in, L.p->n + 1, &L, 1e-6, &r) == AT_OK, "%s: %s", what, at_errmsg());
  cr_expect(r.max_rel_err < 1e-6, "%s: gradient relative error %.3g on input %d (%s)", what, r.max_rel_err,
            r.worst_input, r.worst_input >= 0 && r.worst_input < L.p->n ? L.p->list[r.worst_input].name : "x");
  cr_expect(r.n_checked == L.p->total + 2 * k->T * 8, "%s: checked %lld of %lld elements", what,
            (long long)r.n_checked, (long long)(L.p->total + 2 * k->T * 8));
  free(in);
  at_ctx_free(c);
  layer_free(&L);
}

/* feature_map: elu 0, relu 1, identity 2; output_norm: none 0, rmsnorm 1 */
Test(linpath_layers_gradcheck, linear_attn) {
  const lp_case cases[] = {
      {"linear_attn", {NULL}, {0}, 0, 9},
      {"linear_attn", {NULL}, {0}, 1, 10},
      {"linear_attn", {"feature_map", "output_norm"}, {1, 1}, 0, 11},
      {"linear_attn", {"feature_map", "normalize", "output_norm"}, {2, 0, 1}, 0, 9},
      {"linear_attn", {"feature_map", "normalize"}, {0, 0}, 1, 11},
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) check(&cases[i], 10 + (uint64_t)i);
}

Test(linpath_layers_gradcheck, performer) {
  const lp_case cases[] = {
      {"performer", {NULL}, {0}, 0, 9},                    /* m = 2 head_dim = 8: two blocks */
      {"performer", {NULL}, {0}, 1, 10},
      {"performer", {"num_features", "orthogonal"}, {6, 0}, 0, 11}, /* iid rows, m not a multiple of K */
      {"performer", {"num_features"}, {3}, 0, 9},          /* m < K */
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) check(&cases[i], 20 + (uint64_t)i);
}

/* mode: chunk 0, parallel 1; norm: groupnorm 0, rmsnorm 1; output_gate: swish 0, none 1; position: rope 0, nope 1 */
Test(linpath_layers_gradcheck, retnet) {
  const lp_case cases[] = {
      {"retnet", {NULL}, {0}, 0, 9},
      {"retnet", {NULL}, {0}, 1, 10},
      {"retnet", {"mode"}, {1}, 0, 11},
      {"retnet", {"norm", "output_gate", "expand_v"}, {1, 1, 1}, 0, 9},
      {"retnet", {"position", "norm"}, {1, 1}, 1, 11},
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) check(&cases[i], 30 + (uint64_t)i);
}
