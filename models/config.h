/* models/config.h: what a model is made of (filled by the experiment
 * loader, read by models/). A hybrid is a list of mixer kinds, one per layer. */
#ifndef AT_MODEL_CONFIG_H
#define AT_MODEL_CONFIG_H

#include "core/base.h"

#define AT_MAX_LAYERS 32

/* A mixer by its index in the registry (models/mixers.c; models/mixer.h). */
typedef int at_mixer_kind;

/* Registered mixers at most, and bytes of one mixer's options struct. */
#define AT_MAX_MIXERS 32
#define AT_MIXER_OPTS_BYTES 256

const char *at_mixer_name(at_mixer_kind k); /* "unknown" outside the registry */
int at_mixer_from_name(const char *name);   /* -1 if unknown */

typedef enum at_position { AT_POS_INHERIT = -1, AT_POS_ROPE, AT_POS_NOPE, AT_POS_LEARNED } at_position;
typedef enum at_mlp_kind { AT_MLP_NONE, AT_MLP_SWIGLU, AT_MLP_RWKV_CMIX } at_mlp_kind;
/* Initial std of the projections that write into the residual stream (mixer
 * outputs, MLP down): init_std / sqrt(2 n_layers) (GPT-2, fla) or init_std. */
typedef enum at_residual_init { AT_RESID_SCALED, AT_RESID_PLAIN } at_residual_init;

/* One mixer's options (model.attention.<mixer>), read by the mixer as its own
 * struct (models/mixer.h). */
typedef struct at_mixer_optbuf {
  _Alignas(16) unsigned char bytes[AT_MIXER_OPTS_BYTES];
} at_mixer_optbuf;

typedef struct at_model_cfg {
  int64_t vocab_size;      /* from the task */
  int64_t max_seq_len;     /* from the task (learned positions) */
  int64_t d_model, n_layers, n_heads, n_kv_heads;
  at_mlp_kind mlp;
  int64_t mlp_hidden;
  at_position position;    /* rope, nope or learned (absolute, added to embeddings) */
  double rope_theta;
  double norm_eps;
  double init_std;
  at_residual_init residual_init;
  int tie_embeddings;
  at_mixer_kind layers[AT_MAX_LAYERS]; /* n_layers entries */
  at_mixer_optbuf mixer[AT_MAX_MIXERS]; /* options per registered mixer */
} at_model_cfg;

/* Defaults: the values named in the experiment-file documentation
 * (experiments/schema.c). Values derived from other keys are resolved by the
 * loader: at_model_cfg_defaults gives those of the default sizes. */
void at_model_cfg_defaults(at_model_cfg *cfg);

#endif
