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
