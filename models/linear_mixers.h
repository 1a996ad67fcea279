/* models/linear_mixers.h: the linear-attention mixers (deltanet, gdn, kda in
 * models/delta_layers.c; mamba2 in models/mamba2.c) and what they share.
 *
 * Each is an at_mixer_impl (models/model.h) registered in models/mixers.c.
 * Their layers hold their parameters under "layers.<i>.<mixer>." and run the
 * ops of ops/attention/delta.h in the chunk form (the training form); a test
 * can switch a layer to the token-by-token recurrent form (the reference)
 * with at_linear_mixer_set_form. Equations, parameter names and
 * initialisations are documented at the top of each file.
 */
#ifndef AT_LINEAR_MIXERS_H
#define AT_LINEAR_MIXERS_H

#include "models/model.h"
#include "ops/attention/delta.h"

/* Every linear layer's private state starts with this header. */
typedef struct at_lin_layer_base {
  at_mixer_kind kind;
  at_lin_form form;      /* AT_LIN_CHUNK unless a test changes it */
} at_lin_layer_base;

/* Selects the op form a linear mixer layer (deltanet, gdn, kda, mamba2)
 * uses in its forward. `layer` is the mixer state (at_block.mixer_state). */
void at_linear_mixer_set_form(void *layer, at_lin_form form);

/* ---- helpers shared by the linear mixers (models/linear_common.c) ---------- */

/* A_log = log(a) with a ~ U(1, 16) (Mamba-2 / GDN / KDA), from the
 * parameter name's stream. */
void at_lin_init_A_log(at_tensor *t, uint64_t seed);
/* dt_bias = softplus^-1(dt) with dt = exp(U(log 1e-3, log 1e-1)) floored at
 * 1e-4 (Mamba-2's time-step initialisation). */
void at_lin_init_dt_bias(at_tensor *t, uint64_t seed);
/* dt_bias for the bounded gate g = lower_bound sigmoid(exp(A_log) (f + dt_bias)):
 * the same initial decays as the unbounded gate has with at_lin_init_dt_bias
 * (at f = 0: lower_bound sigmoid(a b) = -a dt, a = exp(A_log_h), the sigmoid
 * capped at 1/2), so the gate starts in its sensitive range instead of
 * saturated at 0. A_log [H] must be initialised; dt_bias holds H equal
 * groups (one per head). */
void at_lin_init_dt_bias_bounded(at_tensor *dt_bias, const at_tensor *A_log, double lower_bound,
                                 uint64_t seed);
/* The short convolution of the linear mixers on x [B, T, C]: a causal
 * depthwise conv (weight [C, conv_size], no bias) when w is given, then
 * SiLU; without w only the SiLU. */
at_tensor *at_lin_short_conv(at_ctx *c, at_tensor *x, at_tensor *w);

#endif
