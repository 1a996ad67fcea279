/* tests/mixer_testing.h: mixers by name and their options by key, for the
 * suites that build layers and models by hand. */
#ifndef AT_MIXER_TESTING_H
#define AT_MIXER_TESTING_H

#include <criterion/criterion.h>

#include "models/mixer.h"

/* The registry id of a mixer named by a bare word: MIXER(kda). */
#define MIXER(name) mixer_id(#name)

static inline at_mixer_kind mixer_id(const char *name) {
  int k = at_mixer_from_name(name);
  cr_assert(k >= 0, "mixer %s is not registered", name);
  return k;
}

/* Sets option `key` of mixer `id` in cfg (asserting it exists and fits). */
static inline void set_opt(at_model_cfg *cfg, at_mixer_kind id, const char *key, double v) {
  cr_assert(at_mixer_opt_set(cfg, id, key, v) == AT_OK, "%s", at_errmsg());
}

/* The common options (position, head_dim) of mixer k in cfg. */
#define MIXER_COMMON(cfg, k) ((const at_mixer_common *)(const void *)(cfg)->mixer[k].bytes)

static inline double get_opt(const at_model_cfg *cfg, at_mixer_kind id, const char *key) {
  return at_mixer_opt_get(cfg, id, key);
}

#endif
