/* The fixed-pattern sparse layers (sparse_transformer, longformer, bigbird)
 * against an independent PyTorch model written from the papers as dense
 * masks (tests/ref/gen_sparse_layers.py -> tests/golden/sparse_layers.h5):
 * with the same weights and input, the output and the gradients of the input
 * and of every parameter agree, at B 16, T 75 (ragged against the tiles), 4
 * query heads on 2 kv heads, RoPE, in float on two threads. BigBird's case
 * has no random blocks (their draw is the counter RNG's; test_sparse_layers
 * checks it). */
#include "core/h5io.h"
#include "core/threads.h"
#include "golden_testing.h"
#include "sparse_testing.h"

static at_h5 *open_golden(void) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/sparse_layers.h5", AT_SOURCE_DIR);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  return h;
}

/* The case's config, its sizes and options from the file's attributes. */
static const char *const keys[] = {"pattern", "stride", "summary", "combine", "distinct", "window", "window_top",
                                   "dilation", "dilated_heads", "n_global", "block", "window_blocks",
                                   "global_blocks", "random_blocks", NULL};

static sp_case case_of(at_h5 *h, const char *grp, char *mixer) {
  char *m = NULL;
  cr_assert(at_h5_get_attr_str(h, grp, "mixer", &m) == AT_OK, "%s", at_errmsg());
  snprintf(mixer, 64, "%s", m);
  free(m);
  sp_case k = {grp, mixer, (int)attr_int(h, grp, "layer_index"), (int)attr_int(h, grp, "n_layers"), {{0}}};
  int n = 0;
  for (int i = 0; keys[i]; i++) {
    int64_t v;
    if (at_h5_get_attr_int(h, grp, keys[i], &v) != AT_OK) continue;
    cr_assert(n < 6, "%s: too many options", grp);
    k.opts[n++] = (sp_opt){keys[i], (double)v};
  }
  return k;
}

static void check(const char *grp, int want_params) {
  at_set_threads(2);
  at_h5 *h = open_golden();
  char mixer[64];
  sp_case k = case_of(h, grp, mixer);
  at_model_cfg cfg = sp_cfg(&k, attr_int(h, grp, "d_model"), attr_int(h, grp, "n_heads"),
                            attr_int(h, grp, "n_kv_heads"), attr_int(h, grp, "head_dim"));
  sp_layer L = sp_layer_new(&cfg, k.layer_index, 0);
  cr_assert_eq(L.p->n, want_params, "%s: %d parameters", grp, L.p->n);
  golden_load_params(h, grp, L.p, 2); /* after "l." */
  golden_check_layer(h, grp, L.impl, L.state, L.p, 2, 1e-5);
  sp_layer_free(&L);
  at_h5_close(h);
}

Test(sparse_golden, sparse_transformer_strided_heads) { check("st_strided_heads", 4); }
Test(sparse_golden, sparse_transformer_fixed_merged_distinct) { check("st_fixed_merged", 4); }
Test(sparse_golden, sparse_transformer_fixed_layers_odd_layer) { check("st_fixed_layers_odd", 4); }
Test(sparse_golden, longformer_dilated_growing_window_globals) { check("lf_dilated_global", 7); }
Test(sparse_golden, bigbird_window_and_global_blocks) { check("bb_window_global", 4); }
