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

#include "models/mixer.h"

typedef struct at_block {
  at_tensor *norm1, *norm2;          /* RMSNorm weights [d_model] */
  const at_mixer_impl *mixer;
  void *mixer_state;
  at_tensor *w_gate, *w_up, *w_down; /* SwiGLU MLP, or NULL */
  at_tensor *x_k;                    /* rwkv_cmix: token-shift mix (w_up = key, w_down = value) */
} at_block;

typedef struct at_model {
  at_model_cfg cfg;
  at_params *params;
  at_tensor *tok_emb;    /* [V, d] */
  at_tensor *pos_emb;    /* [max_seq_len, d] or NULL */
  at_tensor *final_norm; /* [d] */
  at_tensor *lm_head;    /* [V, d], or NULL when tied to tok_emb */
  at_block blocks[AT_MAX_LAYERS];
  int64_t step;          /* the training step being taken or last taken (the trainer sets it;
                            every forward passes it to the mixers as at_mixer_io.step) */
} at_model;

/* Builds and initialises a model (parameter values depend only on the seed
 * and the parameter names). */
at_status at_model_new(const at_model_cfg *cfg, uint64_t seed, at_model **out);
/* The same model with its parameters allocated but not initialised: its
 * shapes, counts and memory figures without the cost of drawing them. */
at_status at_model_new_uninit(const at_model_cfg *cfg, at_model **out);
void at_model_free(at_model *m);
int64_t at_model_num_params(const at_model *m);

/* tokens [B, T] -> logits [B, T, V] (stage flags 0). */
at_tensor *at_model_logits(at_ctx *c, at_model *m, const at_itensor *tokens);
/* Logits under stage flags (AT_STAGE_*; e.g. a sparse DSA model). */
at_tensor *at_model_logits_stage(at_ctx *c, at_model *m, const at_itensor *tokens, unsigned stage);
/* Mean cross-entropy over labelled positions (labels [B, T], AT_IGNORE_LABEL
 * elsewhere); counts of labelled and correctly predicted positions. */
at_tensor *at_model_loss(at_ctx *c, at_model *m, const at_itensor *tokens,
                         const at_itensor *labels, int64_t *n_labelled, int64_t *n_correct);

/* The training loss: the LM loss plus the mixers' auxiliary losses, under
 * stage flags `stage`; io (may be NULL) receives the mixers' statistics, and
 * *lm_loss (may be NULL) the LM part alone. */
at_tensor *at_model_train_loss(at_ctx *c, at_model *m, const at_itensor *tokens,
                               const at_itensor *labels, unsigned stage, at_mixer_io *io,
                               double *lm_loss, int64_t *n_labelled, int64_t *n_correct);

/* Evaluation without gradients in memory linear in B*T (never [B*T, V]): the
 * LM head runs over chunks of rows. Per labelled position p (labels[p] !=
 * AT_IGNORE_LABEL): loss[p] = -log softmax(logits_p)[label], correct[p] =
 * argmax == label (ties: the lowest index); both arrays [B*T] (unlabelled
 * positions untouched). Returns the context's status. */
at_status at_model_eval(at_ctx *c, at_model *m, const at_itensor *tokens, const at_itensor *labels,
                        unsigned stage, double *loss, uint8_t *correct);

/* Pieces of the forward, for the decoder (models/generate.h): the input of
 * the first block for tokens [B, T] at positions pos0 .. pos0+T-1 (learned
 * positions checked); x plus a block's MLP on it (x itself without an
 * MLP), with s the MLP's decoding state (NULL in training; rwkv_cmix keeps
 * its last input token for the token shift); the final norm and the LM head. */
at_tensor *at_model_embed(at_ctx *c, at_model *m, const at_itensor *tokens, int64_t pos0);
at_tensor *at_block_mlp(at_ctx *c, at_model *m, const at_block *b, at_tensor *x, at_mixer_state *s);
/* Adds a block MLP's decoding tensors to s (none for swiglu; AT_E_NOMEM). */
at_status at_block_mlp_state_new(const at_model *m, const at_block *b, at_mixer_state *s);
at_tensor *at_model_head(at_ctx *c, at_model *m, at_tensor *x);

/* 1 if some layer has parameters in `group`. */
int at_model_has_group(const at_model *m, int group);

/* Inference memory per token of context summed over layers (elements), and
 * the fixed recurrent state (elements), for the run summary. */
int64_t at_model_cache_per_token(const at_model *m);
int64_t at_model_state_elems(const at_model *m);

#endif
