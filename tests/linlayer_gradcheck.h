/* tests/linlayer_gradcheck.h: the double gradient check of one whole
 * linear-attention mixer layer (test_linear_layers_d.c,
 * test_linear_layers2_d.c): the layer forward (projections, short convs,
 * norms, gates, the op, output projection) against central differences, for
 * every parameter and the input. d_model 8, 2 heads, chunk 4 with T 9..11
 * (full chunks and a ragged tail), batch 2. */
#ifndef AT_LINLAYER_GRADCHECK_H
#define AT_LINLAYER_GRADCHECK_H

#include "linlayer_testing.h"

typedef struct lcase {
  const char *mixer;
  int short_conv;
  at_out_gate gate;
  at_decay_gate decay;
  int neg_eig;
  at_lin_form form;
  int64_t T;
} lcase;

static inline at_tensor *gc_layer(at_ctx *c, at_tensor **in, void *u) {
  one_layer *L = u;
  return layer_forward(c, L, in[L->p->n]);
}

static inline void check_case(const lcase *k, uint64_t seed) {
  at_mixer_kind kind = mixer_id(k->mixer);
  at_model_cfg cfg = layer_cfg(kind, 8);
  at_lin_mixer_opts *o = LIN_OPTS(&cfg, kind);
  o->short_conv = k->short_conv;
  o->output_gate = k->gate;
  o->decay_gate = k->decay;
  o->lower_bound = -3.0;
  o->allow_neg_eigval = k->neg_eig;
  if (kind == MIXER(gdn)) o->expand_v = 2;
  if (kind == MIXER(mamba2)) o->d_state = 4;
  one_layer L;
  layer_build(&L, &cfg, kind, seed);
  at_linear_mixer_set_form(L.layer, k->form);
  layer_randomize(&L, seed + 7, 0.5);
  at_ctx *c = at_ctx_new(1 << 22);
  at_tensor **in = calloc((size_t)L.p->n + 1, sizeof *in);
  for (int i = 0; i < L.p->n; i++) in[i] = L.p->list[i].t;
  in[L.p->n] = AT_RANDN(c, seed + 3, 1.0, 2, k->T, 8);
  char what[160];
  snprintf(what, sizeof what, "%s conv=%d gate=%d decay=%d neg=%d form=%d T=%lld (%d params)",
           k->mixer, k->short_conv, (int)k->gate, (int)k->decay, k->neg_eig,
           (int)k->form, (long long)k->T, L.p->n);
  at_gc_result r;
  at_status s = at_gradcheck(c, gc_layer, in, L.p->n + 1, &L, 1e-6, &r);
  cr_assert(s == AT_OK, "%s: gradcheck failed to run: %s", what, at_errmsg());
  cr_expect(r.max_rel_err < 1e-6, "%s: gradient relative error %.3g on input %d (%s)", what,
            r.max_rel_err, r.worst_input,
            r.worst_input >= 0 && r.worst_input < L.p->n ? L.p->list[r.worst_input].name : "x");
  cr_expect(r.n_checked == L.p->total + 2 * k->T * 8, "%s: checked %lld of %lld elements", what,
            (long long)r.n_checked, (long long)(L.p->total + 2 * k->T * 8));
  free(in);
  at_ctx_free(c);
  layer_free(&L);
}

#define CHUNK AT_LIN_CHUNK
#define REC AT_LIN_RECURRENT
#define UNB AT_DECAY_UNBOUNDED
#define BND AT_DECAY_BOUNDED

#endif
