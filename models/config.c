/* models/config.c: model defaults and the resolution of mixer options.
 *
 * The defaults are the ones documented in the experiment schema
 * (experiments/schema.c); change both together. */
#include "models/config.h"

#include <string.h>

#include "models/mixer.h"

void at_model_cfg_defaults(at_model_cfg *cfg) {
  memset(cfg, 0, sizeof *cfg);
  cfg->d_model = 64;
  cfg->n_layers = 2;
  cfg->n_heads = 2;
  cfg->n_kv_heads = 2;
  cfg->mlp = AT_MLP_SWIGLU;
  cfg->mlp_hidden = 176;           /* 8/3 d_model rounded up to a multiple of 16 */
  cfg->position = AT_POS_ROPE;
  cfg->rope_theta = 10000.0;
  cfg->norm_eps = 1e-5;
  cfg->init_std = 0.02;
  cfg->residual_init = AT_RESID_SCALED;
  cfg->tie_embeddings = 0;
  int full = at_mixer_from_name("full");
  for (int i = 0; i < AT_MAX_LAYERS; i++) cfg->layers[i] = full;
  for (int k = 0; k < at_mixer_count(); k++) at_mixer_opts_defaults(at_mixer_impl_of(k), cfg->mixer[k].bytes);
}

at_status at_model_cfg_resolve(at_model_cfg *cfg, at_mixer_kind *bad_mixer, const char **bad_key) {
  *bad_mixer = -1;
  *bad_key = NULL;
  for (int k = 0; k < at_mixer_count(); k++) {
    at_mixer_common *o = (at_mixer_common *)(void *)cfg->mixer[k].bytes;
    if (o->head_dim == 0 && cfg->n_heads > 0) o->head_dim = cfg->d_model / cfg->n_heads;
    if (o->position == AT_POS_INHERIT) o->position = cfg->position == AT_POS_ROPE ? AT_POS_ROPE : AT_POS_NOPE;
  }
  for (int k = 0; k < at_mixer_count(); k++) {
    const at_mixer_impl *impl = at_mixer_impl_of(k);
    if (!at_mixer_used(cfg, k) || !impl->check) continue;
    at_status st = impl->check(cfg, cfg->mixer[k].bytes, bad_key);
    if (st != AT_OK) {
      *bad_mixer = k;
      return st;
    }
  }
  return AT_OK;
}
