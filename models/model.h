/* models/model.h: the decoder language model and its layers.
 *
 *   tokens -> embedding (+ learned positions) -> n_layers x [x += mixer(RMSNorm(x));
 *   x += MLP(RMSNorm(x))] -> RMSNorm -> LM head (optionally tied) -> logits
 *
 * The mixer of each layer is chosen by kind from a registry, so a hybrid is
 * a list of kinds (layers: [kda, kda, kda, full]). Each mixer declares its
 * parameters under "layers.<i>.<mixer>." and builds its forward from ops.
 */
#ifndef AT_MODEL_H
#define AT_MODEL_H

#include "autograd/autograd.h"
#include "models/config.h"

/* The DSA training stage (DeepSeek-V3.2): what the sparse-attention layers
 * do in this forward. Set by the training loop, read by the dsa mixer. */
typedef struct at_dsa_mode {
  int sparse;            /* 1: attend only to the indexer's top-k keys; 0: dense */
  int indexer_loss;      /* 1: add the indexer's KL alignment loss to the aux loss */
} at_dsa_mode;

/* What a mixer sees of the batch besides x, and what it reports back. */
typedef struct at_mixer_io {
  int64_t pos0;          /* position of the first token (0 in training) */
  at_dsa_mode dsa;
  /* Out: auxiliary losses added to the LM loss (NULL: none), e.g. the DSA
   * indexer's KL (its gradient reaches only the indexer: inputs detached). */
  at_tensor *aux_loss;
  /* Out: DSA statistics summed over the dsa layers of this forward. */
  int dsa_layers;
  double dsa_kl, dsa_recall;
} at_mixer_io;

/* Parameter groups (at_params_add's group): the training loop freezes or
 * trains them by stage. */
enum { AT_GROUP_MAIN = 0, AT_GROUP_INDEXER = 1 };

typedef struct at_mixer_impl {
  at_mixer_kind kind;
  /* Declares the layer's parameters under `prefix` (e.g. "layers.3.kda.")
   * and allocates its private state (*layer). Checks the options. */
  at_status (*create)(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                      void **layer);
  /* Initialises the parameters (after the store is finalized). */
  void (*init)(void *layer, const at_model_cfg *cfg, uint64_t seed);
  /* x [B, T, d_model] -> [B, T, d_model]; io: the stage in, statistics and
   * auxiliary losses out. */
  at_tensor *(*forward)(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io);
  /* Inference memory per layer: cache elements each token adds (softmax
   * attention), and fixed state elements (recurrent mixers). */
  int64_t (*cache_per_token)(const void *layer);
  int64_t (*state_elems)(const void *layer);
  void (*destroy)(void *layer);
} at_mixer_impl;

/* NULL if the kind has no implementation. */
const at_mixer_impl *at_mixer_impl_of(at_mixer_kind k);

typedef struct at_block {
  at_tensor *norm1, *norm2;          /* RMSNorm weights [d_model] */
  const at_mixer_impl *mixer;
  void *mixer_state;
  at_tensor *w_gate, *w_up, *w_down; /* SwiGLU MLP, or NULL */
} at_block;

typedef struct at_model {
  at_model_cfg cfg;
  at_params *params;
  at_tensor *tok_emb;    /* [V, d] */
  at_tensor *pos_emb;    /* [max_seq_len, d] or NULL */
  at_tensor *final_norm; /* [d] */
  at_tensor *lm_head;    /* [V, d], or NULL when tied to tok_emb */
  at_block blocks[AT_MAX_LAYERS];
} at_model;

/* Builds and initialises a model (parameter values depend only on the seed
 * and the parameter names). */
at_status at_model_new(const at_model_cfg *cfg, uint64_t seed, at_model **out);
void at_model_free(at_model *m);
int64_t at_model_num_params(const at_model *m);

/* tokens [B, T] -> logits [B, T, V]. */
at_tensor *at_model_logits(at_ctx *c, at_model *m, const at_itensor *tokens);
/* Mean cross-entropy over labelled positions (labels [B, T], AT_IGNORE_LABEL
 * elsewhere); counts of labelled and correctly predicted positions. */
at_tensor *at_model_loss(at_ctx *c, at_model *m, const at_itensor *tokens,
                         const at_itensor *labels, int64_t *n_labelled, int64_t *n_correct);

/* The training loss: the LM loss plus the mixers' auxiliary losses, with the
 * DSA stage `mode`; io (may be NULL) receives the mixers' statistics, and
 * *lm_loss (may be NULL) the LM part alone. */
at_tensor *at_model_train_loss(at_ctx *c, at_model *m, const at_itensor *tokens,
                               const at_itensor *labels, const at_dsa_mode *mode, at_mixer_io *io,
                               double *lm_loss, int64_t *n_labelled, int64_t *n_correct);
/* Logits under a DSA stage (evaluation of a sparse model). */
at_tensor *at_model_logits_mode(at_ctx *c, at_model *m, const at_itensor *tokens,
                                const at_dsa_mode *mode);
/* 1 if some layer has parameters in `group`. */
int at_model_has_group(const at_model *m, int group);

/* Inference memory per token of context summed over layers (elements), and
 * the fixed recurrent state (elements), for the run summary. */
int64_t at_model_cache_per_token(const at_model *m);
int64_t at_model_state_elems(const at_model *m);

/* ---- helpers shared by mixer implementations (models/layers.c) ---------- */

/* A weight [out, in] declared under prefix+name, initialised N(0, std). */
at_tensor *at_layer_weight(at_params *p, const char *prefix, const char *name, int64_t out,
                           int64_t in);
/* A parameter of any shape with flags (e.g. AT_PARAM_NO_DECAY), group AT_GROUP_MAIN. */
at_tensor *at_layer_param(at_params *p, const char *prefix, const char *name, int ndim,
                          const int64_t *shape, int flags);
/* The same in a parameter group (AT_GROUP_INDEXER for the DSA indexer). */
at_tensor *at_layer_param_group(at_params *p, const char *prefix, const char *name, int ndim,
                                const int64_t *shape, int flags, int group);
/* Fills a parameter with N(0, std) from its name's stream. */
void at_layer_init_normal(at_tensor *t, uint64_t seed, double std);
/* Fills a projection that writes into the residual stream (cfg->residual_init). */
void at_layer_init_out(at_tensor *t, const at_model_cfg *cfg, uint64_t seed);
void at_layer_init_const(at_tensor *t, double v);
/* Head dim of a mixer (its head_dim option or d_model / n_heads). */
int64_t at_layer_head_dim(const at_model_cfg *cfg, at_mixer_kind k);
/* The position encoding a mixer uses (its own or the model's). */
at_position at_layer_position(const at_model_cfg *cfg, at_mixer_kind k);

#endif
