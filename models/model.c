/* models/model.c: the decoder LM (embedding, pre-norm blocks, LM head). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "models/model.h"
#include "models/rwkv7.h"
#include "ops/ops.h"

static at_status declare(at_model *m) {
  const at_model_cfg *cfg = &m->cfg;
  at_params *p = m->params;
  int64_t d = cfg->d_model;
  if (!(m->tok_emb = at_layer_param(p, "", "tok_emb", AT_SHAPE(cfg->vocab_size, d), AT_PARAM_NO_DECAY)))
    return AT_E_ARG;
  if (cfg->position == AT_POS_LEARNED &&
      !(m->pos_emb = at_layer_param(p, "", "pos_emb", AT_SHAPE(cfg->max_seq_len, d), AT_PARAM_NO_DECAY)))
    return AT_E_ARG;
  for (int l = 0; l < cfg->n_layers; l++) {
    at_block *b = &m->blocks[l];
    char prefix[64];
    snprintf(prefix, sizeof prefix, "layers.%d.", l);
    if (!(b->norm1 = at_layer_param(p, prefix, "norm1", AT_SHAPE(d), AT_PARAM_NO_DECAY)))
      return AT_E_ARG;
    b->mixer = at_mixer_impl_of(cfg->layers[l]);
    if (!b->mixer) return at_error(AT_E_ARG, "layer %d: mixer id %d is not registered", l, cfg->layers[l]);
    char mprefix[96];
    snprintf(mprefix, sizeof mprefix, "%s%s.", prefix, b->mixer->name);
    at_status st = b->mixer->create(cfg, l, p, mprefix, &b->mixer_state);
    if (st != AT_OK) return at_error_prefix(st, "layer %d (%s)", l, b->mixer->name);
    if (cfg->mlp == AT_MLP_SWIGLU) {
      if (!(b->norm2 = at_layer_param(p, prefix, "norm2", AT_SHAPE(d), AT_PARAM_NO_DECAY)) ||
          !(b->w_gate = at_layer_weight(p, prefix, "mlp.w_gate", cfg->mlp_hidden, d)) ||
          !(b->w_up = at_layer_weight(p, prefix, "mlp.w_up", cfg->mlp_hidden, d)) ||
          !(b->w_down = at_layer_weight(p, prefix, "mlp.w_down", d, cfg->mlp_hidden)))
        return AT_E_ARG;
    } else if (cfg->mlp == AT_MLP_RWKV_CMIX) {
      if (!(b->norm2 = at_layer_param(p, prefix, "norm2", AT_SHAPE(d), AT_PARAM_NO_DECAY)) ||
          !(b->x_k = at_layer_param(p, prefix, "mlp.x_k", AT_SHAPE(d), AT_PARAM_NO_DECAY)) ||
          !(b->w_up = at_layer_weight(p, prefix, "mlp.key", cfg->mlp_hidden, d)) ||
          !(b->w_down = at_layer_weight(p, prefix, "mlp.value", d, cfg->mlp_hidden)))
        return AT_E_ARG;
    }
  }
  if (!(m->final_norm = at_layer_param(p, "", "final_norm", AT_SHAPE(d), AT_PARAM_NO_DECAY)))
    return AT_E_ARG;
  if (!cfg->tie_embeddings && !(m->lm_head = at_layer_weight(p, "", "lm_head", cfg->vocab_size, d)))
    return AT_E_ARG;
  return AT_OK;
}

/* GPT-2 style: N(0, std) weights, residual output projections scaled by
 * 1/sqrt(2 n_layers), norms at 1. Mixers initialise their own parameters. */
static void init(at_model *m, uint64_t seed) {
  const at_model_cfg *cfg = &m->cfg;
  double std = cfg->init_std;
  at_layer_init_normal(m->tok_emb, seed, std);
  if (m->pos_emb) at_layer_init_normal(m->pos_emb, seed, std);
  for (int l = 0; l < cfg->n_layers; l++) {
    at_block *b = &m->blocks[l];
    at_layer_init_const(b->norm1, 1);
    b->mixer->init(b->mixer_state, cfg, seed);
    if (b->w_gate) {
      at_layer_init_const(b->norm2, 1);
      at_layer_init_normal(b->w_gate, seed, std);
      at_layer_init_normal(b->w_up, seed, std);
      at_layer_init_out(b->w_down, cfg, seed);
    }
    if (b->x_k) {
      at_layer_init_const(b->norm2, 1);
      at_rwkv_cmix_init(b->x_k, b->w_up, b->w_down, l, cfg->n_layers, seed);
    }
  }
  at_layer_init_const(m->final_norm, 1);
  if (m->lm_head) at_layer_init_normal(m->lm_head, seed, std);
}

at_status at_model_new(const at_model_cfg *cfg, uint64_t seed, at_model **out) {
  at_status st = at_model_new_uninit(cfg, out);
  if (st == AT_OK) init(*out, seed);
  return st;
}

at_status at_model_new_uninit(const at_model_cfg *cfg, at_model **out) {
  *out = NULL;
  if (cfg->n_layers < 1 || cfg->n_layers > AT_MAX_LAYERS)
    return at_error(AT_E_ARG, "n_layers %lld outside 1..%d", (long long)cfg->n_layers, AT_MAX_LAYERS);
  at_model *m = calloc(1, sizeof *m);
  if (!m) return at_error(AT_E_NOMEM, "out of memory");
  m->cfg = *cfg;
  m->params = at_params_new();
  at_mixer_kind bad_mixer;
  const char *bad_key;
  at_status st = m->params ? at_model_cfg_resolve(&m->cfg, &bad_mixer, &bad_key)
                           : at_error(AT_E_NOMEM, "out of memory");
  if (st == AT_OK) st = declare(m);
  if (st == AT_OK) st = at_params_finalize(m->params);
  if (st != AT_OK) {
    at_model_free(m);
    return st;
  }
  *out = m;
  return AT_OK;
}

void at_model_free(at_model *m) {
  if (!m) return;
  for (int l = 0; l < m->cfg.n_layers; l++)
    if (m->blocks[l].mixer && m->blocks[l].mixer_state) m->blocks[l].mixer->destroy(m->blocks[l].mixer_state);
  at_params_free(m->params);
  free(m);
}

int64_t at_model_num_params(const at_model *m) { return m->params->total; }

/* y = W_down (silu(W_gate x) * W_up x) */
static at_tensor *swiglu(at_ctx *c, const at_block *b, at_tensor *x) {
  at_tensor *g = at_linear(c, x, b->w_gate, NULL);
  return at_linear(c, at_silu_mul(c, g, at_linear(c, x, b->w_up, NULL)), b->w_down, NULL);
}

at_tensor *at_block_mlp(at_ctx *c, at_model *m, const at_block *b, at_tensor *x, at_mixer_state *s) {
  if (b->w_gate) return at_add(c, x, swiglu(c, b, at_rmsnorm(c, x, b->norm2, m->cfg.norm_eps)));
  if (b->x_k)
    return at_add(c, x, at_rwkv_cmix(c, at_rmsnorm(c, x, b->norm2, m->cfg.norm_eps), b->x_k, b->w_up, b->w_down,
                                     s ? s->t[0] : NULL));
  return x;
}

at_status at_block_mlp_state_new(const at_model *m, const at_block *b, at_mixer_state *s) {
  if (b->x_k && !at_mixer_state_add(s, AT_SHAPE(s->batch, 1, m->cfg.d_model)))
    return at_error_prefix(AT_E_NOMEM, "rwkv_cmix: decoding state");
  return AT_OK;
}

at_tensor *at_model_embed(at_ctx *c, at_model *m, const at_itensor *tokens, int64_t pos0) {
  if (tokens->ndim != 2)
    return at_fail(c, AT_E_SHAPE, "model: tokens must be [B, T], got rank %d", tokens->ndim);
  int64_t T = tokens->shape[1];
  at_tensor *x = at_embedding(c, m->tok_emb, tokens);
  if (m->pos_emb) {
    if (pos0 + T > m->cfg.max_seq_len)
      return at_fail(c, AT_E_SHAPE, "model: positions %lld .. %lld exceed the %lld learned positions (learned "
                     "positions cannot extrapolate)", (long long)pos0, (long long)(pos0 + T - 1),
                     (long long)m->cfg.max_seq_len);
    x = at_add(c, x, at_slice(c, m->pos_emb, 0, pos0, T));
  }
  return x;
}

/* The forward up to the final norm, with a mixer io (mode in, aux losses and
 * statistics out): [B, T, d_model]. */
static at_tensor *hidden(at_ctx *c, at_model *m, const at_itensor *tokens, at_mixer_io *io) {
  const at_model_cfg *cfg = &m->cfg;
  io->step = m->step;
  at_tensor *x = at_model_embed(c, m, tokens, 0);
  for (int l = 0; l < cfg->n_layers; l++) {
    at_block *b = &m->blocks[l];
    x = at_add(c, x, b->mixer->forward(c, b->mixer_state, at_rmsnorm(c, x, b->norm1, cfg->norm_eps), io));
    x = at_block_mlp(c, m, b, x, NULL);
  }
  return at_rmsnorm(c, x, m->final_norm, cfg->norm_eps);
}

static at_tensor *head(at_ctx *c, at_model *m, at_tensor *x) {
  return at_linear(c, x, m->lm_head ? m->lm_head : m->tok_emb, NULL);
}

at_tensor *at_model_head(at_ctx *c, at_model *m, at_tensor *x) {
  return head(c, m, at_rmsnorm(c, x, m->final_norm, m->cfg.norm_eps));
}

static at_tensor *forward(at_ctx *c, at_model *m, const at_itensor *tokens, at_mixer_io *io) {
  return head(c, m, hidden(c, m, tokens, io));
}

/* The loss over the labelled positions. When at most half of them carry a
 * label (MQAR labels a few queries per sequence), only their rows go through
 * the LM head: the same loss and gradients for a fraction of the head's cost. */
static at_tensor *labelled_loss(at_ctx *c, at_model *m, at_tensor *x, const at_itensor *labels,
                                int64_t *n_labelled, int64_t *n_correct) {
  if (!x) return NULL;
  int64_t n = x->size / x->shape[x->ndim - 1], d = x->shape[x->ndim - 1], k = 0;
  if (labels->size != n) return at_cross_entropy(c, head(c, m, x), labels, AT_IGNORE_LABEL, n_labelled, n_correct);
  for (int64_t i = 0; i < n; i++) k += labels->data[i] != AT_IGNORE_LABEL;
  if (k == 0 || 2 * k > n)
    return at_cross_entropy(c, head(c, m, x), labels, AT_IGNORE_LABEL, n_labelled, n_correct);
  at_itensor *rows = at_inew(c, AT_SHAPE(k, d)), *lab = at_inew(c, AT_SHAPE(k));
  for (int64_t i = 0, j = 0; i < n; i++) {
    if (labels->data[i] == AT_IGNORE_LABEL) continue;
    for (int64_t e = 0; e < d; e++) rows->data[j * d + e] = i;
    lab->data[j++] = labels->data[i];
  }
  at_tensor *sel = at_gather(c, AT_RESHAPE(c, x, n, d), 0, rows);
  return at_cross_entropy(c, head(c, m, sel), lab, AT_IGNORE_LABEL, n_labelled, n_correct);
}

at_tensor *at_model_logits_stage(at_ctx *c, at_model *m, const at_itensor *tokens, unsigned stage) {
  at_mixer_io io = {.stage = stage};
  return forward(c, m, tokens, &io);
}

at_tensor *at_model_logits(at_ctx *c, at_model *m, const at_itensor *tokens) {
  return at_model_logits_stage(c, m, tokens, 0);
}

at_tensor *at_model_train_loss(at_ctx *c, at_model *m, const at_itensor *tokens,
                               const at_itensor *labels, unsigned stage, at_mixer_io *io,
                               double *lm_loss, int64_t *n_labelled, int64_t *n_correct) {
  at_mixer_io local;
  if (!io) io = &local;
  *io = (at_mixer_io){.stage = stage};
  at_tensor *loss = labelled_loss(c, m, hidden(c, m, tokens, io), labels, n_labelled, n_correct);
  if (lm_loss) *lm_loss = loss ? loss->data[0] : NAN;
  return io->aux_loss ? at_add(c, loss, io->aux_loss) : loss;
}

at_tensor *at_model_loss(at_ctx *c, at_model *m, const at_itensor *tokens,
                         const at_itensor *labels, int64_t *n_labelled, int64_t *n_correct) {
  return at_model_train_loss(c, m, tokens, labels, 0, NULL, NULL, n_labelled, n_correct);
}

/* Rows of the LM head per evaluation chunk: [EVAL_ROWS, V] logits at a time. */
#define EVAL_ROWS 256

/* Cross-entropy and argmax of the labelled rows among rows r0 .. r0+n-1 of
 * the final hidden states h [rows, d]. */
static void eval_rows(at_ctx *c, at_model *m, const at_tensor *h, int64_t r0, int64_t n,
                      const int32_t *labels, double *loss, uint8_t *correct) {
  int64_t d = h->shape[1], V = m->cfg.vocab_size;
  at_ctx_mark mk = at_ctx_get_mark(c);
  at_tensor *rows = at_from(c, h->data + r0 * d, AT_SHAPE(n, d));
  at_tensor *z = rows ? head(c, m, rows) : NULL;
  for (int64_t i = 0; z && i < n; i++) {
    int32_t y = labels[r0 + i];
    if (y == AT_IGNORE_LABEL) continue;
    const real *zr = z->data + i * V;
    int64_t arg = 0;
    double mx = zr[0], s = 0;
    for (int64_t j = 1; j < V; j++)
      if (zr[j] > mx) mx = zr[j], arg = j;
    for (int64_t j = 0; j < V; j++) s += exp((double)zr[j] - mx);
    loss[r0 + i] = mx + log(s) - (double)zr[y];
    correct[r0 + i] = arg == y;
  }
  at_ctx_rewind(c, mk);
}

at_status at_model_eval(at_ctx *c, at_model *m, const at_itensor *tokens, const at_itensor *labels,
                        unsigned stage, double *loss, uint8_t *correct) {
  at_no_grad_begin(c);
  at_mixer_io io = {.stage = stage};
  at_tensor *h = hidden(c, m, tokens, &io);
  if (h) {
    int64_t rows = h->size / h->shape[h->ndim - 1];
    at_tensor *h2 = AT_RESHAPE(c, h, rows, h->shape[h->ndim - 1]);
    for (int64_t r0 = 0; h2 && r0 < rows; r0 += EVAL_ROWS)
      eval_rows(c, m, h2, r0, AT_MIN(EVAL_ROWS, rows - r0), labels->data, loss, correct);
  }
  at_no_grad_end(c);
  at_status st = at_ctx_status(c);
  return st != AT_OK ? st : h ? AT_OK : AT_E_STATE;
}

int at_model_has_group(const at_model *m, int group) {
  for (int i = 0; i < m->params->n; i++)
    if (m->params->list[i].group == group) return 1;
  return 0;
}

int64_t at_model_cache_per_token(const at_model *m) {
  int64_t n = 0;
  for (int l = 0; l < m->cfg.n_layers; l++)
    if (m->blocks[l].mixer->cache_per_token) n += m->blocks[l].mixer->cache_per_token(m->blocks[l].mixer_state);
  return n;
}

int64_t at_model_state_elems(const at_model *m) {
  int64_t n = 0;
  for (int l = 0; l < m->cfg.n_layers; l++)
    if (m->blocks[l].mixer->state_elems) n += m->blocks[l].mixer->state_elems(m->blocks[l].mixer_state);
  for (int l = 0; l < m->cfg.n_layers; l++) /* rwkv_cmix: the previous token's input */
    if (m->blocks[l].x_k) n += m->cfg.d_model;
  return n;
}
