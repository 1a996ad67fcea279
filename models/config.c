/* models/config.c: mixer names and model defaults.
 *
 * The defaults are the ones documented in the experiment schema
 * (experiments/schema.c); change both together. */
#include "models/config.h"

#include <string.h>

static const char *const mixer_names[AT_MIXER_COUNT] = {
  [AT_MIXER_FULL] = "full", [AT_MIXER_DELTANET] = "deltanet", [AT_MIXER_GDN] = "gdn",
  [AT_MIXER_KDA] = "kda",   [AT_MIXER_MAMBA2] = "mamba2",     [AT_MIXER_MLA] = "mla",
  [AT_MIXER_DSA] = "dsa",
};

const char *at_mixer_name(at_mixer_kind k) {
  if ((int)k < 0 || k >= AT_MIXER_COUNT) return "unknown";
  return mixer_names[k];
}

int at_mixer_from_name(const char *name) {
  if (!name) return -1;
  for (int k = 0; k < AT_MIXER_COUNT; k++)
    if (strcmp(name, mixer_names[k]) == 0) return k;
  return -1;
}

void at_mixer_opts_defaults(at_mixer_opts *o, at_mixer_kind k) {
  memset(o, 0, sizeof *o);
  int softmax = k == AT_MIXER_FULL || k == AT_MIXER_MLA || k == AT_MIXER_DSA;
  /* Softmax mixers follow model.position; the linear family has no positions. */
  o->position = softmax ? AT_POS_INHERIT : AT_POS_NOPE;
  o->head_dim = 0;                 /* d_model / n_heads */
  o->window = 0;
  /* flash-linear-attention layer defaults (chunk 64, short conv of 4). */
  o->chunk_size = 64;
  o->short_conv = 1;
  o->conv_size = 4;
  switch (k) {
  case AT_MIXER_GDN:    o->output_gate = AT_GATE_SWISH; break;   /* fla gated_deltanet */
  case AT_MIXER_KDA:    o->output_gate = AT_GATE_SIGMOID; break; /* Kimi Linear */
  case AT_MIXER_MAMBA2: o->output_gate = AT_GATE_SWISH; break;   /* RMSNorm(y * silu(z)) */
  default:              o->output_gate = AT_GATE_NONE; break;    /* fla delta_net: no gate */
  }
  o->decay_gate = AT_DECAY_UNBOUNDED;
  o->lower_bound = -5.0;
  o->allow_neg_eigval = 0;
  o->expand_v = k == AT_MIXER_GDN ? 2 : 1;
  o->d_state = 16;                 /* Zoology's MQAR sweeps use 8..24 */
  o->expand = 2;
  o->kv_rank = 0;                  /* 4 * head_dim (DeepSeek-V2: d_c = 4 d_h) */
  o->q_rank = 0;                   /* no query compression */
  o->rope_dim = -1;                /* head_dim / 2 (DeepSeek-V2: d_R = d_h / 2) */
  o->index_heads = 4;              /* toy-scale lightning indexer */
  o->index_dim = 16;
  o->topk = 32;
}

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
  for (int i = 0; i < AT_MAX_LAYERS; i++) cfg->layers[i] = AT_MIXER_FULL;
  for (int k = 0; k < AT_MIXER_COUNT; k++) at_mixer_opts_defaults(&cfg->mixer[k], (at_mixer_kind)k);
}
