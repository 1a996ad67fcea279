/* models/layers.c: parameter helpers shared by the mixer implementations. */
#include <math.h>
#include <stdio.h>
#include <string.h>

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

/* ---- decoding states ----------------------------------------------------------- */

at_status at_mixer_state_init(at_mixer_state *s, int64_t batch, int64_t max_len) {
  memset(s, 0, sizeof *s);
  if (batch < 1 || max_len < 1)
    return at_error(AT_E_ARG, "decoding state: batch %lld and max_len %lld must be positive", (long long)batch,
                    (long long)max_len);
  s->batch = batch, s->max_len = max_len;
  if (!(s->arena = at_arena_new((size_t)1 << 16))) return at_error(AT_E_NOMEM, "decoding state: out of memory");
  return AT_OK;
}

at_tensor *at_mixer_state_add(at_mixer_state *s, int ndim, const int64_t *shape) {
  if (s->n == AT_MIXER_STATE_MAX) {
    at_error(AT_E_ARG, "decoding state: more than %d tensors", AT_MIXER_STATE_MAX);
    return NULL;
  }
  at_tensor *t = at_tensor_alloc(s->arena, ndim, shape);
  if (!t) return NULL;
  memset(t->data, 0, (size_t)t->size * sizeof(real));
  return s->t[s->n++] = t;
}

int64_t at_mixer_state_bytes(const at_mixer_state *s) {
  int64_t n = 0;
  for (int i = 0; i < s->n; i++) n += s->t[i]->size * (int64_t)sizeof(real);
  return n;
}

void at_mixer_state_free(at_mixer_state *s) {
  at_arena_free(s->arena);
  memset(s, 0, sizeof *s);
}

int at_mixer_decode_fits(at_ctx *c, const at_mixer_impl *impl, const at_tensor *x, int64_t d,
                         const at_mixer_state *s, const at_mixer_io *io, int step) {
  if (!x) return 0;
  char b[96];
  int shape = x->ndim == 3 && x->shape[0] == s->batch && x->shape[2] == d;
  if (step ? shape && x->shape[1] == 1 && io->pos0 >= 0 && io->pos0 < s->max_len
           : shape && x->shape[1] <= s->max_len && io->pos0 == 0)
    return 1;
  at_fail(c, AT_E_SHAPE, "%s %s: x %s at position %lld does not fit a state of %lld sequences of %lld tokens "
          "(x must be [%lld, %s, %lld])", impl->name, step ? "step" : "prefill", AT_SHAPE_STR(x, b),
          (long long)io->pos0, (long long)s->batch, (long long)s->max_len, (long long)s->batch,
          step ? "1" : "T <= max_len", (long long)d);
  return 0;
}
