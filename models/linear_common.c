/* models/linear_common.c: what the linear-attention mixers share (the form
 * switch, the decay-parameter initialisations, the short convolution). */
#include <math.h>
#include <string.h>

#include "core/rng.h"
#include "models/linear_mixers.h"

const char *const at_lin_gate_names[] = {"sigmoid", "swish", "none", NULL};
const int at_lin_gate_vals[] = {AT_GATE_SIGMOID, AT_GATE_SWISH, AT_GATE_NONE};
const char *const at_lin_decay_names[] = {"unbounded", "bounded", NULL};

void at_linear_mixer_set_form(void *layer, at_lin_form form) {
  at_lin_layer_base *b = layer;
  AT_ASSERT(b && b->impl && (!strcmp(b->impl->family, "linear") || !strcmp(b->impl->family, "state-space")));
  b->form = form;
}

void at_lin_init_A_log(at_tensor *t, uint64_t seed) {
  at_fill_uniform(t->data, t->size, seed, at_stream_of(t->name), 1.0, 16.0);
  for (int64_t i = 0; i < t->size; i++) t->data[i] = (real)log((double)t->data[i]);
}

/* softplus^-1(y) = y + log(1 - exp(-y)) = y + log(-expm1(-y)) */
void at_lin_init_dt_bias(at_tensor *t, uint64_t seed) {
  at_fill_uniform(t->data, t->size, seed, at_stream_of(t->name), log(1e-3), log(1e-1));
  for (int64_t i = 0; i < t->size; i++) {
    double dt = fmax(exp((double)t->data[i]), 1e-4);
    t->data[i] = (real)(dt + log(-expm1(-dt)));
  }
}

void at_lin_init_dt_bias_bounded(at_tensor *dt_bias, const at_tensor *A_log, double lower_bound,
                                 uint64_t seed) {
  at_lin_init_dt_bias(dt_bias, seed);
  int64_t per = dt_bias->size / A_log->size;
  for (int64_t i = 0; i < dt_bias->size; i++) {
    double b = (double)dt_bias->data[i], a = exp((double)A_log->data[i / per]);
    double dt = b > 30 ? b : log1p(exp(b)); /* softplus */
    double s = fmin(a * dt / -lower_bound, 0.5);
    dt_bias->data[i] = (real)(log(s / (1 - s)) / a);
  }
}

at_tensor *at_lin_short_conv(at_ctx *c, at_tensor *x, at_tensor *w) {
  if (w) x = at_conv1d_causal(c, x, w, NULL);
  return at_silu(c, x);
}

at_tensor *at_lin_short_conv_cont(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *hist) {
  if (!w || !x) return at_lin_short_conv(c, x, w);
  int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2], K1 = hist->shape[1];
  if (K1 == 0) return at_lin_short_conv(c, x, w);
  /* [history | x] through the training op, keeping the rows of x */
  at_tensor *parts[2] = {at_from(c, hist->data, AT_SHAPE(B, K1, C)), x};
  at_tensor *xin = at_concat(c, parts, 2, 1);
  at_tensor *y = at_slice(c, at_conv1d_causal(c, xin, w, NULL), 1, K1, T);
  if (!xin || !y) return NULL;
  for (int64_t b = 0; b < B; b++)
    memcpy(hist->data + b * K1 * C, xin->data + (b * (T + K1) + T) * C, (size_t)(K1 * C) * sizeof(real));
  return at_silu(c, y);
}

at_tensor *at_lin_core_run(at_ctx *c, at_lin_kind kind, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                           at_tensor *beta, at_tensor *S, at_lin_run run, const at_lin_opts *opts) {
  if (run == AT_LIN_RUN_STEP) return at_lin_attn_step(c, kind, q, k, v, g, beta, S, opts);
  at_tensor *ht = NULL;
  at_tensor *o = at_lin_attn(c, kind, q, k, v, g, beta, NULL, run == AT_LIN_RUN_PREFILL ? &ht : NULL, opts);
  if (o && run == AT_LIN_RUN_PREFILL) {
    if (!ht) return NULL;
    memcpy(S->data, ht->data, (size_t)S->size * sizeof(real));
  }
  return o;
}
