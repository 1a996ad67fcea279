/* The linear mixer layers against an independent PyTorch implementation of
 * the same definitions (bench/torch_lm.py, via tests/ref/gen_linear_layers.py
 * -> tests/golden/linear_layers.h5): with the same weights and input, the
 * output and the gradients of every parameter and of the input agree.
 * Cases: kda (default; bounded gate + swish gate + no conv + negative
 * eigenvalues), gdn (default; bounded + sigmoid gate, conv 3), deltanet,
 * mamba2 (default; no conv, no gate); d_model 16, 2 heads of 8, T 21 with
 * chunk 8 (a ragged tail), batch 2. */
#include <string.h>

#include "core/h5io.h"
#include "golden_testing.h"
#include "linlayer_testing.h"

static void check_case(at_h5 *h, const char *grp) {
  char *mixer = NULL, *gate = NULL;
  cr_assert(at_h5_get_attr_str(h, grp, "mixer", &mixer) == AT_OK);
  cr_assert(at_h5_get_attr_str(h, grp, "gate", &gate) == AT_OK);
  int kind = at_mixer_from_name(mixer);
  cr_assert(kind >= 0, "%s: mixer %s", grp, mixer);
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = attr_int(h, grp, "d_model");
  cfg.n_heads = cfg.n_kv_heads = attr_int(h, grp, "n_heads");
  cfg.n_layers = 1;
  cfg.layers[0] = kind;
  at_lin_mixer_opts *o = LIN_OPTS(&cfg, kind);
  o->common.head_dim = attr_int(h, grp, "head_dim");
  o->expand_v = attr_int(h, grp, "expand_v");
  o->chunk_size = attr_int(h, grp, "chunk");
  o->conv_size = attr_int(h, grp, "conv");
  o->short_conv = o->conv_size > 0;
  if (!o->short_conv) o->conv_size = 4;
  o->output_gate = strcmp(gate, "sigmoid") == 0 ? AT_GATE_SIGMOID
                   : strcmp(gate, "swish") == 0 ? AT_GATE_SWISH : AT_GATE_NONE;
  o->decay_gate = attr_int(h, grp, "bounded") ? AT_DECAY_BOUNDED : AT_DECAY_UNBOUNDED;
  cr_assert(at_h5_get_attr_double(h, grp, "lower_bound", &o->lower_bound) == AT_OK);
  o->allow_neg_eigval = (int)attr_int(h, grp, "neg_eig");
  o->d_state = attr_int(h, grp, "d_state");
  o->expand = attr_int(h, grp, "expand");
  one_layer L;
  layer_build(&L, &cfg, kind, 1);

  /* every parameter of ours is in the file, and nothing else */
  char path[256];
  snprintf(path, sizeof path, "%s/params", grp);
  char **names;
  int n_names;
  cr_assert(at_h5_list(h, path, &names, &n_names) == AT_OK, "%s", at_errmsg());
  cr_expect_eq(n_names, L.p->n, "%s: %d parameters in the file, %d in the layer", grp, n_names, L.p->n);
  at_h5_free_list(names, n_names);
  for (int i = 0; i < L.p->n; i++) {
    at_tensor *t = L.p->list[i].t;
    snprintf(path, sizeof path, "%s/params/%s", grp, L.p->list[i].name + strlen("mix."));
    cr_assert(at_h5_exists(h, path), "%s: no %s in the file", grp, path);
    real *v = read_exact(h, path, t->size);
    memcpy(t->data, v, (size_t)t->size * sizeof(real));
    free(v);
  }

  int nd;
  int64_t xs[4];
  snprintf(path, sizeof path, "%s/x", grp);
  cr_assert(at_h5_shape(h, path, &nd, xs) == AT_OK && nd == 3);
  at_ctx *c = at_ctx_new(16 << 20);
  real *xv = read_exact(h, path, xs[0] * xs[1] * xs[2]);
  at_tensor *x = at_from(c, xv, 3, xs);
  x->requires_grad = 1;
  at_params_zero_grad(L.p);
  at_tensor *y = layer_forward(c, &L, x);
  cr_assert(y != NULL, "%s: %s", grp, at_errmsg());
  snprintf(path, sizeof path, "%s/y", grp);
  real *yref = read_exact(h, path, y->size);
  char what[160];
  snprintf(what, sizeof what, "%s output", grp);
  AT_EXPECT_CLOSE(y->data, yref, y->size, 1e-5, what); /* measured <= 2e-6 (all checks) */
  snprintf(path, sizeof path, "%s/dy", grp);
  real *dy = read_exact(h, path, y->size);
  memcpy(at_grad(c, y), dy, (size_t)y->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  snprintf(path, sizeof path, "%s/dx", grp);
  real *dx = read_exact(h, path, x->size);
  snprintf(what, sizeof what, "%s dx", grp);
  AT_EXPECT_CLOSE(x->grad, dx, x->size, 1e-5, what);
  for (int i = 0; i < L.p->n; i++) {
    at_tensor *t = L.p->list[i].t;
    snprintf(path, sizeof path, "%s/grads/%s", grp, L.p->list[i].name + strlen("mix."));
    real *gref = read_exact(h, path, t->size);
    snprintf(what, sizeof what, "%s d%s", grp, L.p->list[i].name);
    AT_EXPECT_CLOSE(t->grad, gref, t->size, 1e-5, what);
    free(gref);
  }
  free(xv), free(yref), free(dy), free(dx);
  free(mixer), free(gate);
  at_ctx_free(c);
  layer_free(&L);
}

Test(linear_layers_golden, matches_pytorch) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/linear_layers.h5", AT_SOURCE_DIR);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  char **cases;
  int n;
  cr_assert(at_h5_list(h, "/", &cases, &n) == AT_OK, "%s", at_errmsg());
  cr_expect_eq(n, 7, "%d cases in %s", n, path);
  for (int i = 0; i < n; i++) check_case(h, cases[i]);
  at_h5_free_list(cases, n);
  at_h5_close(h);
}
