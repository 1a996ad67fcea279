/* The full-attention layer and a whole 2-layer LM with it against an
 * independent PyTorch model written from the papers (tests/ref/
 * gen_full_attention.py -> tests/golden/full_attention.h5): with the same
 * weights and input, the output (or loss and accuracy) and the gradient of
 * every parameter and of the input agree. Shapes are those of training
 * (kda_vs_full's full run: B 32, T 97, d 64, 2 heads of 32, RoPE; GQA with a
 * window at a ragged T), in float, on two threads. */
#include <string.h>

#include "core/h5io.h"
#include "golden_testing.h"
#include "core/threads.h"
#include "mixer_testing.h"
#include "models/model.h"
#include "testing.h"

static at_h5 *open_golden(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/full_attention.h5", AT_SOURCE_DIR);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  return h;
}

static at_model_cfg case_cfg(at_h5 *h, const char *grp, int n_layers) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = attr_int(h, grp, "d_model");
  cfg.n_heads = attr_int(h, grp, "n_heads");
  cfg.n_kv_heads = attr_int(h, grp, "n_kv_heads");
  cfg.n_layers = n_layers;
  cfg.mlp = AT_MLP_NONE;
  char *pos = NULL;
  cr_assert(at_h5_get_attr_str(h, grp, "position", &pos) == AT_OK);
  cfg.position = strcmp(pos, "rope") == 0 ? AT_POS_ROPE : AT_POS_NOPE;
  free(pos);
  set_opt(&cfg, MIXER(full), "head_dim", (double)attr_int(h, grp, "head_dim"));
  set_opt(&cfg, MIXER(full), "window", (double)attr_int(h, grp, "window"));
  for (int l = 0; l < n_layers; l++) cfg.layers[l] = MIXER(full);
  return cfg;
}


static void check_layer(const char *grp) {
  at_set_threads(2);
  at_h5 *h = open_golden();
  at_model_cfg cfg = case_cfg(h, grp, 1);
  const at_mixer_impl *impl = at_mixer_impl_of(MIXER(full));
  at_mixer_kind bad;
  const char *key;
  cr_assert(at_model_cfg_resolve(&cfg, &bad, &key) == AT_OK, "%s", at_errmsg());
  at_params *p = at_params_new();
  void *layer = NULL;
  cr_assert(impl->create(&cfg, 0, p, "mix.", &layer) == AT_OK, "%s", at_errmsg());
  cr_assert(at_params_finalize(p) == AT_OK);
  golden_load_params(h, grp, p, strlen("mix."));
  golden_check_layer(h, grp, impl, layer, p, strlen("mix."), 1e-5);
  impl->destroy(layer);
  at_params_free(p);
  at_h5_close(h);
}

static void check_model(const char *grp) {
  at_set_threads(2);
  at_h5 *h = open_golden();
  at_model_cfg cfg = case_cfg(h, grp, (int)attr_int(h, grp, "n_layers"));
  cfg.vocab_size = attr_int(h, grp, "vocab_size");
  char path[256];
  int nd;
  int64_t ts[4];
  snprintf(path, sizeof path, "%s/tokens", grp);
  cr_assert(at_h5_shape(h, path, &nd, ts) == AT_OK && nd == 2);
  cfg.max_seq_len = ts[1];
  at_model *m;
  cr_assert(at_model_new(&cfg, 0, &m) == AT_OK, "%s", at_errmsg());
  golden_load_params(h, grp, m->params, 0);
  at_ctx *c = at_ctx_new(256 << 20);
  at_itensor *tok = at_inew(c, 2, ts), *lab = at_inew(c, 2, ts);
  cr_assert(at_h5_read_int(h, path, 2, ts, tok->data) == AT_OK, "%s", at_errmsg());
  snprintf(path, sizeof path, "%s/labels", grp);
  cr_assert(at_h5_read_int(h, path, 2, ts, lab->data) == AT_OK, "%s", at_errmsg());
  for (int64_t i = 0; i < lab->size; i++)
    if (lab->data[i] == -100) lab->data[i] = AT_IGNORE_LABEL;
  at_params_zero_grad(m->params);
  int64_t n_lab = 0, n_ok = 0;
  at_tensor *loss = at_model_loss(c, m, tok, lab, &n_lab, &n_ok);
  cr_assert(loss != NULL, "%s: %s", grp, at_errmsg());
  double ref_loss;
  cr_assert(at_h5_get_attr_double(h, grp, "loss", &ref_loss) == AT_OK, "%s", at_errmsg());
  int64_t ref_ok = attr_int(h, grp, "n_correct");
  cr_expect(fabs(loss->data[0] - ref_loss) <= 1e-5 * fabs(ref_loss), "%s: loss %.9g vs %.9g", grp,
            (double)loss->data[0], ref_loss);
  cr_expect(llabs(n_ok - ref_ok) <= 1, "%s: %lld correct vs %lld", grp, (long long)n_ok,
            (long long)ref_ok);
  cr_assert(at_backward(c, loss) == AT_OK, "%s", at_errmsg());
  golden_expect_grads(h, grp, m->params, 0, 2e-5);
  at_ctx_free(c);
  at_model_free(m);
  at_h5_close(h);
}

Test(full_golden, layer_rope_training_shape) { check_layer("layer_rope"); }
Test(full_golden, layer_gqa_window_ragged) { check_layer("layer_gqa_window"); }
Test(full_golden, layer_nope_mqa) { check_layer("layer_nope"); }
Test(full_golden, model_palindrome_rope) { check_model("model_rope"); }
Test(full_golden, model_gqa_window) { check_model("model_gqa_window"); }
