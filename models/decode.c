/* models/decode.c: the decoder of models/generate.h (every layer's
 * decoding state through prefill and steps) and the generation loop. */
#include <stdlib.h>
#include <string.h>

#include "core/threads.h"
#include "models/generate.h"
#include "ops/ops.h"

const at_mixer_impl *at_model_undecodable(const at_model *m) {
  for (int l = 0; l < m->cfg.n_layers; l++) {
    const at_mixer_impl *mx = m->blocks[l].mixer;
    if (!mx->state_new || !mx->prefill || !mx->step) return mx;
  }
  return NULL;
}

static void free_states(at_decoder *d) {
  for (int l = 0; l < d->m->cfg.n_layers; l++) {
    at_mixer_state_free(&d->layer[l]);
    at_mixer_state_free(&d->mlp[l]);
  }
}

static at_status make_states(at_decoder *d) {
  for (int l = 0; l < d->m->cfg.n_layers; l++) {
    const at_block *b = &d->m->blocks[l];
    at_status st = at_mixer_state_init(&d->layer[l], d->batch, d->max_len);
    if (st == AT_OK) st = b->mixer->state_new(b->mixer_state, &d->layer[l]);
    if (st != AT_OK) return at_error_prefix(st, "layer %d (%s)", l, b->mixer->name);
    st = at_mixer_state_init(&d->mlp[l], d->batch, d->max_len);
    if (st == AT_OK) st = at_block_mlp_state_new(d->m, b, &d->mlp[l]);
    if (st != AT_OK) return at_error_prefix(st, "layer %d (mlp)", l);
  }
  d->len = 0;
  return AT_OK;
}

at_status at_decoder_new(at_model *m, int64_t batch, int64_t max_len, unsigned stage, at_decoder **out) {
  *out = NULL;
  const at_mixer_impl *bad = at_model_undecodable(m);
  if (bad) return at_error(AT_E_ARG, "mixer %s has no decoding functions (state_new, prefill, step)", bad->name);
  if (m->pos_emb && max_len > m->cfg.max_seq_len)
    return at_error(AT_E_ARG, "%lld tokens exceed the model's %lld learned positions (learned positions cannot "
                    "extrapolate)", (long long)max_len, (long long)m->cfg.max_seq_len);
  at_decoder *d = calloc(1, sizeof *d);
  if (!d) return at_error(AT_E_NOMEM, "decoder: out of memory");
  *d = (at_decoder){.m = m, .batch = batch, .max_len = max_len, .stage = stage};
  at_status st = make_states(d);
  if (st != AT_OK) {
    at_decoder_free(d);
    return st;
  }
  *out = d;
  return AT_OK;
}

void at_decoder_free(at_decoder *d) {
  if (!d) return;
  free_states(d);
  free(d);
}

at_status at_decoder_reset(at_decoder *d) {
  free_states(d);
  return make_states(d);
}

int64_t at_decoder_state_bytes(const at_decoder *d) {
  int64_t n = 0;
  for (int l = 0; l < d->m->cfg.n_layers; l++) n += at_mixer_state_bytes(&d->layer[l]) + at_mixer_state_bytes(&d->mlp[l]);
  return n;
}

/* tokens [batch, T] at positions d->len .. through every layer (prefill or
 * step), then the final norm and head over the rows asked for. */
static at_tensor *run(at_ctx *c, at_decoder *d, const at_itensor *tokens, int step, int all) {
  at_model *m = d->m;
  char sb[96];
  int64_t T = tokens->ndim == 2 ? tokens->shape[1] : 0;
  if (tokens->ndim != 2 || tokens->shape[0] != d->batch || (step ? T != 1 : T < 1) || (!step && d->len != 0) ||
      d->len + T > d->max_len)
    return at_fail(c, AT_E_SHAPE, "decoder %s: tokens %s at position %lld do not fit %lld sequences of %lld tokens%s",
                   step ? "step" : "prefill", at_shape_str(tokens->ndim, tokens->shape, sb), (long long)d->len,
                   (long long)d->batch, (long long)d->max_len, !step && d->len ? " (prefill needs an empty decoder)" : "");
  at_no_grad_begin(c);
  at_mixer_io io = {.pos0 = d->len, .stage = d->stage, .step = m->step};
  at_tensor *x = at_model_embed(c, m, tokens, d->len);
  for (int l = 0; l < m->cfg.n_layers && x; l++) {
    at_block *b = &m->blocks[l];
    at_tensor *h = at_rmsnorm(c, x, b->norm1, m->cfg.norm_eps);
    at_tensor *y = step ? b->mixer->step(c, b->mixer_state, h, &d->layer[l], &io)
                        : b->mixer->prefill(c, b->mixer_state, h, &d->layer[l], &io);
    x = at_block_mlp(c, m, b, at_add(c, x, y), &d->mlp[l]);
  }
  if (x && !all && T > 1) x = at_slice(c, x, 1, T - 1, 1);
  at_tensor *logits = x ? at_model_head(c, m, x) : NULL;
  at_no_grad_end(c);
  if (logits) d->len += T;
  return logits;
}

at_tensor *at_decoder_prefill(at_ctx *c, at_decoder *d, const at_itensor *tokens, int all) {
  return run(c, d, tokens, 0, all);
}

at_tensor *at_decoder_step(at_ctx *c, at_decoder *d, const at_itensor *tokens) { return run(c, d, tokens, 1, 1); }

at_status at_generate(at_ctx *c, at_decoder *d, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                      at_sampler *s, int32_t *out, at_gen_stats *stats) {
  at_gen_stats g = {.prompt_tokens = n_prompt};
  if (n_prompt < 1 || n_new < 0 || d->batch != 1 || n_prompt + n_new - 1 > d->max_len)
    return at_error(AT_E_ARG, "generate: a prompt of %lld tokens and %lld new ones need a decoder of batch 1 and "
                    "%lld tokens (it has batch %lld, %lld tokens)", (long long)n_prompt, (long long)n_new,
                    (long long)(n_prompt + n_new - 1), (long long)d->batch, (long long)d->max_len);
  at_status st = at_decoder_reset(d);
  if (st != AT_OK) return st;
  at_ctx_mark mk = at_ctx_get_mark(c);
  double t0 = at_now();
  at_itensor *tok = at_inew(c, AT_SHAPE(1, n_prompt));
  if (!tok) return at_ctx_status(c);
  memcpy(tok->data, prompt, (size_t)n_prompt * sizeof *prompt);
  at_tensor *z = n_new > 0 ? at_decoder_prefill(c, d, tok, 0) : NULL;
  g.prefill_seconds = at_now() - t0;
  double t1 = at_now();
  for (int64_t i = 0; i < n_new && z; i++) {
    out[i] = at_sample(s, z->data);
    g.new_tokens++;
    at_ctx_rewind(c, mk);
    if (i + 1 == n_new) break;
    at_itensor *one = at_inew(c, AT_SHAPE(1, 1));
    if (!one) break;
    one->data[0] = out[i];
    z = at_decoder_step(c, d, one);
    g.steps++;
  }
  g.decode_seconds = at_now() - t1;
  g.state_bytes = at_decoder_state_bytes(d);
  at_ctx_rewind(c, mk);
  if (stats) *stats = g;
  st = at_ctx_status(c);
  if (st == AT_OK && g.new_tokens != n_new) st = at_error(AT_E_STATE, "generate: stopped after %lld of %lld tokens",
                                                         (long long)g.new_tokens, (long long)n_new);
  return st;
}
