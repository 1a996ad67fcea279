/* models/layers.c: parameter helpers shared by the mixer implementations. */
#include <math.h>
#include <stdio.h>

#include "core/rng.h"
#include "models/mixer.h"

at_tensor *at_layer_param_group(at_params *p, const char *prefix, const char *name, int ndim,
                                const int64_t *shape, int flags, int group) {
  char full[160];
  snprintf(full, sizeof full, "%s%s", prefix, name);
  return at_params_add(p, full, ndim, shape, flags, group);
}

at_tensor *at_layer_param(at_params *p, const char *prefix, const char *name, int ndim,
                          const int64_t *shape, int flags) {
  return at_layer_param_group(p, prefix, name, ndim, shape, flags, AT_GROUP_MAIN);
}

at_tensor *at_layer_weight(at_params *p, const char *prefix, const char *name, int64_t out,
                           int64_t in) {
  return at_layer_param(p, prefix, name, AT_SHAPE(out, in), 0);
}

void at_layer_init_normal(at_tensor *t, uint64_t seed, double std) {
  at_fill_normal(t->data, t->size, seed, at_stream_of(t->name), 0.0, std);
}

void at_layer_init_out(at_tensor *t, const at_model_cfg *cfg, uint64_t seed) {
  double std = cfg->init_std;
  if (cfg->residual_init == AT_RESID_SCALED) std /= sqrt(2.0 * (double)cfg->n_layers);
  at_layer_init_normal(t, seed, std);
}

void at_layer_init_const(at_tensor *t, double v) { at_fill(t->data, t->size, (real)v); }

const at_mixer_common *at_layer_common(const at_model_cfg *cfg, const at_mixer_impl *impl) {
  return AT_MIXER_OPTS(cfg, impl, at_mixer_common);
}

int64_t at_layer_head_dim(const at_model_cfg *cfg, const at_mixer_impl *impl) {
  int64_t hd = at_layer_common(cfg, impl)->head_dim;
  return hd > 0 ? hd : cfg->d_model / cfg->n_heads;
}

at_position at_layer_position(const at_model_cfg *cfg, const at_mixer_impl *impl) {
  at_position p = (at_position)at_layer_common(cfg, impl)->position;
  if (p == AT_POS_INHERIT) return cfg->position == AT_POS_ROPE ? AT_POS_ROPE : AT_POS_NOPE;
  return p;
}

at_tensor *at_layer_bad_input(at_ctx *c, const at_mixer_impl *impl, const at_tensor *x, int64_t d) {
  char b[96];
  return at_fail(c, AT_E_SHAPE, "%s: x must be [B, T, %lld], got %s", impl->name, (long long)d,
                 AT_SHAPE_STR(x, b));
}
