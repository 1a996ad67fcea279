/* models/mixers.c: the registry of mixer implementations by kind. */
#include "models/model.h"

extern const at_mixer_impl at_mixer_full;
extern const at_mixer_impl at_mixer_deltanet; /* models/delta_layers.c */
extern const at_mixer_impl at_mixer_gdn;
extern const at_mixer_impl at_mixer_kda;
extern const at_mixer_impl at_mixer_mamba2;   /* models/mamba2.c */
extern const at_mixer_impl at_mixer_mla;
extern const at_mixer_impl at_mixer_dsa;

const at_mixer_impl *at_mixer_impl_of(at_mixer_kind k) {
  switch (k) {
    case AT_MIXER_FULL: return &at_mixer_full;
    case AT_MIXER_DELTANET: return &at_mixer_deltanet;
    case AT_MIXER_GDN: return &at_mixer_gdn;
    case AT_MIXER_KDA: return &at_mixer_kda;
    case AT_MIXER_MAMBA2: return &at_mixer_mamba2;
    case AT_MIXER_MLA: return &at_mixer_mla;
    case AT_MIXER_DSA: return &at_mixer_dsa;
    default: return NULL;
  }
}
