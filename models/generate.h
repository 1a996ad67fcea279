/* models/generate.h: generation from a model.
 *
 * The decoder holds one decoding state per layer (models/mixer.h: a KV
 * cache, a latent cache, recurrent states and short-conv histories) for
 * `batch` sequences of up to `max_len` tokens, all at the same position:
 *
 *   prefill(tokens [B, T])  from an empty decoder: every layer's prefill, the
 *                           training form of its mixer, leaves its state
 *                           after token T-1; the logits of the T positions
 *                           (or of the last one) equal the model's forward.
 *   step(tokens [B, 1])     the token at the next position through every
 *                           layer's step form: its logits [B, 1, V] equal
 *                           row `len` of the forward over the whole prefix.
 *
 * Everything runs without gradients in the caller's step arena (rewind it
 * between steps, as at_generate does); the states live in their own
 * memory. A model with a mixer that has no decoding functions, or with
 * learned positions shorter than max_len, is refused by at_decoder_new.
 *
 * Sampling (at_sampler): logits / temperature, then the top_k most probable
 * tokens, then the smallest most-probable set whose probability reaches
 * top_p (the token crossing the threshold included), renormalised; ties rank
 * the lower id first. Temperature 0 is greedy (argmax, ties to the lowest
 * id). Draw n uses uniform number n of the Philox stream (seed, "sample"),
 * so a seed gives the same tokens on any machine and thread count.
 */
#ifndef AT_GENERATE_H
#define AT_GENERATE_H

#include "models/model.h"

typedef struct at_decoder {
  at_model *m;
  int64_t batch, max_len;
  int64_t len;    /* tokens consumed: the next token's position */
  unsigned stage; /* stage flags the layers decode under (AT_STAGE_SPARSE: DSA's top-k) */
  at_mixer_state layer[AT_MAX_LAYERS]; /* each block's mixer state */
  at_mixer_state mlp[AT_MAX_LAYERS];   /* and its MLP's (rwkv_cmix's token shift) */
} at_decoder;

/* The first mixer of m without decoding functions, or NULL. */
const at_mixer_impl *at_model_undecodable(const at_model *m);

/* An empty decoder (AT_E_ARG naming the mixer that cannot decode, or the
 * learned positions that cannot reach max_len; AT_E_NOMEM). */
at_status at_decoder_new(at_model *m, int64_t batch, int64_t max_len, unsigned stage, at_decoder **out);
void at_decoder_free(at_decoder *d);
/* Back to empty (len 0), states rebuilt. */
at_status at_decoder_reset(at_decoder *d);
/* Bytes of every layer's decoding state. */
int64_t at_decoder_state_bytes(const at_decoder *d);

/* tokens [batch, T] from an empty decoder: logits [batch, T, V] (all != 0)
 * or of the last position [batch, 1, V]; len becomes T. NULL with the
 * context's status on failure (the decoder is then unusable until reset). */
at_tensor *at_decoder_prefill(at_ctx *c, at_decoder *d, const at_itensor *tokens, int all);
/* tokens [batch, 1] at position len < max_len: logits [batch, 1, V]; len + 1. */
at_tensor *at_decoder_step(at_ctx *c, at_decoder *d, const at_itensor *tokens);

/* ---- sampling --------------------------------------------------------------- */

typedef struct at_sample_opts {
  double temperature; /* > 0, or 0: greedy */
  int64_t top_k;      /* 0: every token */
  double top_p;       /* in (0, 1]; 1: every token */
} at_sample_opts;

typedef struct at_sample_rank {
  double z;
  int64_t id;
} at_sample_rank;

typedef struct at_sampler {
  at_sample_opts o;
  int64_t V;
  uint64_t seed, draws;  /* draws taken so far */
  double *probs;         /* [V] the last distribution drawn from */
  at_sample_rank *order; /* [V] scratch */
} at_sampler;

/* AT_E_ARG for options out of range, AT_E_NOMEM. */
at_status at_sampler_init(at_sampler *s, int64_t V, const at_sample_opts *o, uint64_t seed);
void at_sampler_free(at_sampler *s);
/* The distribution the options make of logits [V], into s->probs (zeros
 * outside the kept set; one-hot for greedy). */
void at_sample_probs(at_sampler *s, const real *logits);
/* A token drawn from at_sample_probs(logits) with the next uniform number. */
int32_t at_sample(at_sampler *s, const real *logits);

/* ---- a generation loop (batch 1) --------------------------------------------- */

typedef struct at_gen_stats {
  int64_t prompt_tokens, new_tokens;
  int64_t steps;                          /* decoder steps after the prefill */
  double prefill_seconds, decode_seconds; /* decode: those steps */
  int64_t state_bytes;                    /* the decoder's states */
} at_gen_stats;

/* Continues prompt[n_prompt] (n_prompt >= 1) by n_new sampled tokens into
 * out[n_new]: the prompt through prefill, then one step per new token but
 * the last. The decoder (batch 1, max_len >= n_prompt + n_new - 1) is reset
 * first. The context is rewound after every step. */
at_status at_generate(at_ctx *c, at_decoder *d, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                      at_sampler *s, int32_t *out, at_gen_stats *stats);

#endif
