/* models/config.h: what a model is made of (filled by the experiment
 * loader, read by models/). A hybrid is a list of mixer kinds, one per layer. */
#ifndef AT_MODEL_CONFIG_H
#define AT_MODEL_CONFIG_H

#include "core/base.h"

#define AT_MAX_LAYERS 32

typedef enum at_mixer_kind {
  AT_MIXER_FULL,     /* softmax attention, MHA/GQA/MQA, optional sliding window */
  AT_MIXER_DELTANET, /* DeltaNet */
  AT_MIXER_GDN,      /* Gated DeltaNet */
  AT_MIXER_KDA,      /* Kimi Delta Attention */
  AT_MIXER_MAMBA2,   /* Mamba-2 (SSD) */
  AT_MIXER_MLA,      /* DeepSeek multi-head latent attention */
  AT_MIXER_DSA,      /* DeepSeek sparse attention (MLA/GQA + lightning indexer) */
  AT_MIXER_COUNT
} at_mixer_kind;

const char *at_mixer_name(at_mixer_kind k);
int at_mixer_from_name(const char *name); /* -1 if unknown */

typedef enum at_position { AT_POS_INHERIT = -1, AT_POS_ROPE, AT_POS_NOPE, AT_POS_LEARNED } at_position;
typedef enum at_mlp_kind { AT_MLP_NONE, AT_MLP_SWIGLU } at_mlp_kind;
typedef enum at_out_gate { AT_GATE_SIGMOID, AT_GATE_SWISH, AT_GATE_NONE } at_out_gate;
typedef enum at_decay_gate { AT_DECAY_UNBOUNDED, AT_DECAY_BOUNDED } at_decay_gate;
/* Initial std of the projections that write into the residual stream (mixer
 * outputs, MLP down): init_std / sqrt(2 n_layers) (GPT-2, fla) or init_std. */
typedef enum at_residual_init { AT_RESID_SCALED, AT_RESID_PLAIN } at_residual_init;

/* Options of one mixer kind (model.attention.<mixer>: {...}); each kind
 * reads the fields that concern it. */
typedef struct at_mixer_opts {
  at_position position;    /* AT_POS_INHERIT: model.position (the loader resolves it to
                              rope or nope; linear mixers: nope) */
  int64_t head_dim;        /* 0: d_model / n_heads */
  /* full */
  int64_t window;          /* sliding window in keys including self; 0 = none */
  /* linear family (deltanet, gdn, kda, mamba2) */
  int64_t chunk_size;      /* chunkwise training form; default 64 */
  int short_conv;          /* causal depthwise conv + SiLU on q, k, v */
  int64_t conv_size;       /* its kernel size (2..4) */
  at_out_gate output_gate; /* output gate activation */
  at_decay_gate decay_gate;/* gdn/kda: -exp(A_log) softplus(.) or lower_bound sigmoid(.) */
  double lower_bound;      /* bounded gate's lower bound, in (-inf, 0) */
  int allow_neg_eigval;    /* beta in (0, 2) */
  int64_t expand_v;        /* value dim = expand_v * head_dim */
  /* mamba2 */
  int64_t d_state;
  int64_t expand;          /* inner width = expand * d_model */
  /* mla */
  int64_t kv_rank;         /* latent c_KV dim (0: 4 * head_dim) */
  int64_t q_rank;          /* query latent dim (0: no query compression) */
  int64_t rope_dim;        /* decoupled RoPE dim per head (0: NoPE; -1: head_dim / 2
                              rounded down to even, or 0 when the mixer's position is nope) */
  /* dsa */
  int64_t index_heads;
  int64_t index_dim;
  int64_t topk;
} at_mixer_opts;

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
  at_mixer_opts mixer[AT_MIXER_COUNT]; /* options per mixer kind */
} at_model_cfg;

/* Defaults: the values named in the experiment-file documentation
 * (experiments/schema.c). Values derived from other keys are resolved by the
 * loader: at_model_cfg_defaults gives those of the default sizes. */
void at_model_cfg_defaults(at_model_cfg *cfg);
void at_mixer_opts_defaults(at_mixer_opts *o, at_mixer_kind k);

#endif
