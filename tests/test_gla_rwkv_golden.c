/* The gla and rwkv7 layers, and 2-layer LMs with them (rwkv7 with RWKV's
 * channel mix `mlp: rwkv_cmix`, gla with SwiGLU and tied embeddings),
 * against the independent PyTorch implementation of bench/torch_gla_rwkv.py
 * (tests/ref/gen_gla_rwkv_layers.py -> tests/golden/gla_rwkv_layers.h5, whose
 * cores are held against flash-linear-attention's naive ops): with the same
 * weights and input, the output (or loss and accuracy) and the gradient of
 * every parameter and of the input (and of v_first for an rwkv7 layer after
 * the first) agree. Training shapes: B 16, T 77 (ragged against chunks of 64
 * and 16), d_model 32, 2 heads, float, two threads. */
#include <string.h>

#include "core/h5io.h"
#include "golden_testing.h"
#include "core/threads.h"
#include "gla_rwkv_testing.h"

static char *attr_str(at_h5 *h, const char *grp, const char *name) {
  char *s = NULL;
  cr_assert(at_h5_get_attr_str(h, grp, name, &s) == AT_OK, "%s/%s: %s", grp, name, at_errmsg());
  return s;
}

static at_h5 *open_golden(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/gla_rwkv_layers.h5", AT_SOURCE_DIR);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  return h;
}

/* The options opt_<key> of grp, set on mixer `kind`. */
static void set_file_opts(at_h5 *h, const char *grp, at_model_cfg *cfg, at_mixer_kind kind) {
  const char *keys[] = {"chunk_size", "short_conv", "conv_size", "output_gate", "expand_k", "expand_v",
                        "gate_low_rank_dim", "gate_logit_normalizer", "clamp_min", "head_dim",
                        "decay_low_rank_dim", "a_low_rank_dim", "v_low_rank_dim"};
  for (int i = 0; i < AT_ARRAY_LEN(keys); i++) {
    char a[64];
    snprintf(a, sizeof a, "opt_%s", keys[i]);
    if (!at_h5_has_attr(h, grp, a)) continue;
    double v;
    cr_assert(at_h5_get_attr_double(h, grp, a, &v) == AT_OK);
    set_opt(cfg, kind, keys[i], v);
  }
}

/* Copies grp/params/<name minus prefix> into every parameter (all must be
 * there, and nothing else). */
static void load_params(at_h5 *h, const char *grp, at_params *p, size_t skip) {
  char path[256];
  for (int i = 0; i < p->n; i++) {
    at_tensor *t = p->list[i].t;
    snprintf(path, sizeof path, "%s/params/%s", grp, p->list[i].name + skip);
    cr_assert(at_h5_exists(h, path), "%s: no %s in the file", grp, path);
    real *v = read_exact(h, path, t->size);
    memcpy(t->data, v, (size_t)t->size * sizeof(real));
    free(v);
  }
  int64_t total = 0;
  snprintf(path, sizeof path, "%s/params", grp);
  char **names;
  int n;
  cr_assert(at_h5_list(h, path, &names, &n) == AT_OK, "%s", at_errmsg());
  at_h5_free_list(names, n);
  for (int i = 0; i < p->n; i++) total += p->list[i].t->size;
  cr_expect(total == p->total && n >= 1, "%s: parameters", grp);
}

static void expect_grads(at_h5 *h, const char *grp, at_params *p, size_t skip, double tol) {
  char path[256], what[200];
  for (int i = 0; i < p->n; i++) {
    at_tensor *t = p->list[i].t;
    snprintf(path, sizeof path, "%s/grads/%s", grp, p->list[i].name + skip);
    real *g = read_exact(h, path, t->size);
    snprintf(what, sizeof what, "%s d%s", grp, p->list[i].name);
    AT_EXPECT_CLOSE(t->grad, g, t->size, tol, what);
    free(g);
  }
}

static at_tensor *read_tensor(at_ctx *c, at_h5 *h, const char *grp, const char *name) {
  char path[256];
  int nd;
  int64_t s[4];
  snprintf(path, sizeof path, "%s/%s", grp, name);
  cr_assert(at_h5_shape(h, path, &nd, s) == AT_OK, "%s: %s", path, at_errmsg());
  real *v = read_exact(h, path, at_shape_size(nd, s));
  at_tensor *t = at_from(c, v, nd, s);
  free(v);
  t->requires_grad = 1;
  return t;
}

static void expect_data(at_h5 *h, const char *grp, const char *name, const real *got, int64_t n, double tol) {
  char path[256], what[200];
  snprintf(path, sizeof path, "%s/%s", grp, name);
  real *want = read_exact(h, path, n);
  snprintf(what, sizeof what, "%s %s", grp, name);
  AT_EXPECT_CLOSE(got, want, n, tol, what);
  free(want);
}

static void check_layer(const char *grp, double tol) {
  at_set_threads(2);
  at_h5 *h = open_golden();
  char *mixer = attr_str(h, grp, "mixer");
  at_mixer_kind kind = mixer_id(mixer);
  int index = (int)attr_int(h, grp, "layer");
  at_model_cfg cfg = gr_cfg(kind, attr_int(h, grp, "d_model"), attr_int(h, grp, "n_heads"), index + 1);
  set_file_opts(h, grp, &cfg, kind);
  gr_layer L;
  gr_build(&L, &cfg, index, 1);
  load_params(h, grp, L.p, strlen("mix."));
  at_ctx *c = at_ctx_new(256 << 20);
  at_tensor *x = read_tensor(c, h, grp, "x");
  if (index > 0) L.v_first = read_tensor(c, h, grp, "v_first");
  at_params_zero_grad(L.p);
  at_tensor *y = gr_forward(c, &L, x);
  cr_assert(y != NULL, "%s: %s", grp, at_errmsg());
  expect_data(h, grp, "y", y->data, y->size, tol);
  at_tensor *dy = read_tensor(c, h, grp, "dy");
  memcpy(at_grad(c, y), dy->data, (size_t)y->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  expect_data(h, grp, "dx", x->grad, x->size, tol);
  if (index > 0) expect_data(h, grp, "dv_first", L.v_first->grad, L.v_first->size, tol);
  expect_grads(h, grp, L.p, strlen("mix."), tol);
  free(mixer);
  at_ctx_free(c);
  gr_free(&L);
  at_h5_close(h);
}

static void check_model(const char *grp, double tol) {
  at_set_threads(2);
  at_h5 *h = open_golden();
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.vocab_size = attr_int(h, grp, "vocab_size");
  cfg.d_model = attr_int(h, grp, "d_model");
  cfg.n_heads = cfg.n_kv_heads = attr_int(h, grp, "n_heads");
  cfg.n_layers = attr_int(h, grp, "n_layers");
  cfg.position = AT_POS_NOPE;
  cfg.tie_embeddings = (int)attr_int(h, grp, "tie");
  cfg.mlp_hidden = attr_int(h, grp, "mlp_hidden");
  char *mlp = attr_str(h, grp, "mlp"), *layers = attr_str(h, grp, "layers");
  cfg.mlp = !strcmp(mlp, "rwkv_cmix") ? AT_MLP_RWKV_CMIX : !strcmp(mlp, "swiglu") ? AT_MLP_SWIGLU : AT_MLP_NONE;
  int l = 0;
  for (char *s = strtok(layers, ","); s; s = strtok(NULL, ",")) cfg.layers[l++] = mixer_id(s);
  cr_assert(l == cfg.n_layers);
  set_file_opts(h, grp, &cfg, cfg.layers[0]);
  char path[256];
  int nd;
  int64_t ts[4];
  snprintf(path, sizeof path, "%s/tokens", grp);
  cr_assert(at_h5_shape(h, path, &nd, ts) == AT_OK && nd == 2);
  cfg.max_seq_len = ts[1];
  at_model *m;
  cr_assert(at_model_new(&cfg, 0, &m) == AT_OK, "%s", at_errmsg());
  load_params(h, grp, m->params, 0);
  at_ctx *c = at_ctx_new(256 << 20);
  at_itensor *tok = at_inew(c, 2, ts), *lab = at_inew(c, 2, ts);
  cr_assert(at_h5_read_int(h, path, 2, ts, tok->data) == AT_OK, "%s", at_errmsg());
  snprintf(path, sizeof path, "%s/labels", grp);
  cr_assert(at_h5_read_int(h, path, 2, ts, lab->data) == AT_OK, "%s", at_errmsg());
  at_params_zero_grad(m->params);
  int64_t n_lab = 0, n_ok = 0;
  at_tensor *loss = at_model_loss(c, m, tok, lab, &n_lab, &n_ok);
  cr_assert(loss != NULL, "%s: %s", grp, at_errmsg());
  double ref_loss;
  cr_assert(at_h5_get_attr_double(h, grp, "loss", &ref_loss) == AT_OK, "%s", at_errmsg());
  cr_expect(fabs(loss->data[0] - ref_loss) <= 1e-5 * fabs(ref_loss), "%s: loss %.9g vs %.9g", grp,
            (double)loss->data[0], ref_loss);
  cr_expect(llabs(n_ok - attr_int(h, grp, "n_correct")) <= 1, "%s: %lld correct", grp, (long long)n_ok);
  cr_assert(at_backward(c, loss) == AT_OK, "%s", at_errmsg());
  expect_grads(h, grp, m->params, 0, tol);
  free(mlp), free(layers);
  at_ctx_free(c);
  at_model_free(m);
  at_h5_close(h);
}

Test(gla_rwkv_golden, gla_default) { check_layer("layer_gla", 1e-5); }
Test(gla_rwkv_golden, gla_conv_sigmoid_clamp) { check_layer("layer_gla_conv_sigmoid_clamp", 1e-5); }
Test(gla_rwkv_golden, gla_no_gate) { check_layer("layer_gla_nogate", 1e-5); }
Test(gla_rwkv_golden, rwkv7_first_layer) { check_layer("layer_rwkv7_first", 1e-5); }
Test(gla_rwkv_golden, rwkv7_later_layer_value_residual) { check_layer("layer_rwkv7_later", 1e-5); }
Test(gla_rwkv_golden, model_rwkv7_cmix) { check_model("model_rwkv7_cmix", 2e-5); }
Test(gla_rwkv_golden, model_gla_swiglu_tied) { check_model("model_gla_swiglu_tied", 2e-5); }
