/* The nsa layer against an independent PyTorch NSA layer written from the
 * paper (tests/ref/gen_nsa_golden.py -> tests/golden/nsa_layer.h5, float64):
 * with the same weights and input, the output and the gradient of every
 * parameter and of the input agree. B 16, ragged T (61, 50, 57), GQA with
 * RoPE and MQA without, keys and values shared by the branches (fla) or
 * each branch's own (the paper), selections that rank blocks beyond the
 * forced ones, in float, on two threads. */
#include <string.h>

#include "core/h5io.h"
#include "core/threads.h"
#include "golden_testing.h"
#include "mixer_testing.h"
#include "models/model.h"
#include "testing.h"

static const char *const opt_keys[] = {"head_dim", "cmp_block", "cmp_stride", "sel_block", "n_select",
                                       "n_local",  "window",    "cmp_hidden"};

static at_model_cfg case_cfg(at_h5 *h, const char *grp) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = attr_int(h, grp, "d_model");
  cfg.n_heads = attr_int(h, grp, "n_heads");
  cfg.n_kv_heads = attr_int(h, grp, "n_kv_heads");
  cfg.n_layers = 1;
  cfg.mlp = AT_MLP_NONE;
  char *pos = NULL;
  cr_assert(at_h5_get_attr_str(h, grp, "position", &pos) == AT_OK);
  cfg.position = strcmp(pos, "rope") == 0 ? AT_POS_ROPE : AT_POS_NOPE;
  free(pos);
  for (int i = 0; i < AT_ARRAY_LEN(opt_keys); i++) set_opt(&cfg, MIXER(nsa), opt_keys[i], (double)attr_int(h, grp, opt_keys[i]));
  char *kv = NULL;
  cr_assert(at_h5_get_attr_str(h, grp, "kv", &kv) == AT_OK);
  set_opt(&cfg, MIXER(nsa), "kv", strcmp(kv, "shared") == 0 ? 1 : 0); /* the option's names: branches, shared */
  free(kv);
  cfg.layers[0] = MIXER(nsa);
  return cfg;
}

static void check_layer(const char *grp, int n_params) {
  at_set_threads(2);
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/nsa_layer.h5", AT_SOURCE_DIR);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  at_model_cfg cfg = case_cfg(h, grp);
  const at_mixer_impl *impl = at_mixer_impl_of(MIXER(nsa));
  at_mixer_kind bad;
  const char *key;
  cr_assert(at_model_cfg_resolve(&cfg, &bad, &key) == AT_OK, "%s", at_errmsg());
  at_params *p = at_params_new();
  void *layer = NULL;
  cr_assert(impl->create(&cfg, 0, p, "mix.", &layer) == AT_OK, "%s", at_errmsg());
  cr_assert(at_params_finalize(p) == AT_OK);
  golden_load_params(h, grp, p, strlen("mix."));
  golden_check_layer(h, grp, impl, layer, p, strlen("mix."), 1e-5);
  cr_expect(p->n == n_params, "%s: %d parameters, the file has %d", grp, p->n, n_params);
  impl->destroy(layer);
  at_params_free(p);
  at_h5_close(h);
}

Test(nsa_golden, layer_rope_gqa_ragged) { check_layer("layer_rope_gqa", 11); }
Test(nsa_golden, layer_nope_mqa) { check_layer("layer_nope_mqa", 11); }
Test(nsa_golden, layer_branches_rope_gqa) { check_layer("layer_branches_rope_gqa", 15); }
