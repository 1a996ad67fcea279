/* models/mixers.c: the registry of mixer implementations by kind. */
#include "models/model.h"

extern const at_mixer_impl at_mixer_full;

const at_mixer_impl *at_mixer_impl_of(at_mixer_kind k) {
  switch (k) {
    case AT_MIXER_FULL: return &at_mixer_full;
    default: return NULL;
  }
}
