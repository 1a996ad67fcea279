/* models/mixers.c: the registry of mixer implementations by kind. */
#include "models/model.h"

extern const at_mixer_impl at_mixer_full;
extern const at_mixer_impl at_mixer_mla;
extern const at_mixer_impl at_mixer_dsa;

const at_mixer_impl *at_mixer_impl_of(at_mixer_kind k) {
  switch (k) {
    case AT_MIXER_FULL: return &at_mixer_full;
    case AT_MIXER_MLA: return &at_mixer_mla;
    case AT_MIXER_DSA: return &at_mixer_dsa;
    default: return NULL;
  }
}
