/* models/s4d.c: the S4D mixer (Gu, Gupta, Goel, Ré, "On the Parameterization
 * and Initialization of Diagonal State Space Models", NeurIPS 2022), the
 * block of the paper's reference model (state-spaces/s4, models/s4/s4d.py):
 * per channel h of x [B,T,d] (H = d channels, M = d_state / 2 complex
 * modes in conjugate pairs),
 *
 *   Abar, Bbar = ZOH(dt = exp(log_dt), A = -exp(log_A_real) + i A_imag, B)
 *   y  = SSM(x) + D ⊙ x,  SSM(x)_t = sum_{j<=t} K_j x_{t-j},
 *        K_l = 2 Re sum_m C_m Bbar_m Abar_m^l    (= the recurrence
 *        s_t = Abar s_{t-1} + Bbar x_t, y_t = 2 Re C·s_t)
 *   y  = GELU(y)
 *   [a, g] = y out_proj^T + out_bias             [B,T,d] each
 *   out = a ⊙ sigmoid(g)                         (the GLU output linear)
 *
 * Training runs the convolution form (kernel by the Vandermonde product,
 * direct causal convolution: O(T^2 d) per sequence, see
 * ops/attention/s4d.c); the recurrent form (at_linear_mixer_set_form) is the
 * reference, and the state for generation is M complex numbers per channel.
 * Choices against the reference code: B is a trained parameter (as in the
 * paper; the minimal s4d.py folds it into C); GELU is attnlab's tanh
 * approximation (s4d.py's nn.GELU is the erf form); no dropout; the
 * reference's smaller learning rate (1e-3) for the SSM parameters is not
 * applied (one learning rate), but they are excluded from weight decay.
 *
 * Parameters (under layers.<i>.s4d.): log_dt [H], log_A_real [H,M], A_imag
 * [H,M], B [H,M,2], C [H,M,2] (complex as (re, im) pairs), D [H], out_proj
 * [2H, H], out_bias [2H].
 *
 * Initialisation (S4D-Lin): A_m = -1/2 + i pi m; log_dt ~ U(log dt_min,
 * log dt_max); B = 1; C complex standard normal (each part N(0, 1/2));
 * D ~ N(0, 1); out_proj N(0, init_std / sqrt(2 n_layers)), out_bias 0.
 * log_dt, log_A_real, A_imag, B without weight decay.
 */
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"
#include "models/linear_mixers.h"
#include "ops/attention/ssm.h"
#include "ops/ops.h"

extern const at_mixer_impl at_mixer_s4d;

typedef struct s4d_opts {
  at_mixer_common common;
  int64_t d_state;
  double dt_min, dt_max;
} s4d_opts;

static const at_mixer_opt s4d_options[] = {
  AT_OPT_I("d_state", s4d_opts, d_state, 2, 4096, 64, "state size N per channel (N/2 complex modes; even)"),
  AT_OPT_R("dt_min", s4d_opts, dt_min, 0, INFINITY, 1, 0, 1e-3, "smallest initial step dt"),
  AT_OPT_R("dt_max", s4d_opts, dt_max, 0, INFINITY, 1, 0, 1e-1, "largest initial step dt"),
};

static at_status s4d_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  (void)cfg;
  const s4d_opts *o = opts;
  if (o->d_state % 2) {
    *bad = "d_state";
    return at_error(AT_E_CONFIG, "d_state %lld must be even (conjugate pairs of modes)", (long long)o->d_state);
  }
  if (!(o->dt_min <= o->dt_max)) {
    *bad = "dt_max";
    return at_error(AT_E_CONFIG, "dt_max %g must be at least dt_min %g", o->dt_max, o->dt_min);
  }
  return AT_OK;
}

typedef struct s4d_layer {
  at_lin_layer_base base;
  int64_t H, M;
  double dt_min, dt_max;
  at_tensor *log_dt, *log_A_real, *A_imag, *B, *C, *D, *w_out, *b_out;
} s4d_layer;

static at_status s4d_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                            void **out) {
  (void)layer_index;
  const s4d_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_s4d, s4d_opts);
  s4d_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base.impl = &at_mixer_s4d;
  L->base.form = AT_LIN_CHUNK;
  L->H = cfg->d_model;
  L->M = o->d_state / 2;
  L->dt_min = o->dt_min, L->dt_max = o->dt_max;
  if (L->H < 1 || L->M < 1 || o->d_state % 2 || !(o->dt_min > 0 && o->dt_min <= o->dt_max))
    return at_error(AT_E_ARG, "s4d: d_state %lld must be even and positive, 0 < dt_min %g <= dt_max %g",
                    (long long)o->d_state, o->dt_min, o->dt_max);
  const int64_t H = L->H, M = L->M;
  const int nd = AT_PARAM_NO_DECAY;
  if (!(L->log_dt = at_layer_param(p, prefix, "log_dt", AT_SHAPE(H), nd)) ||
      !(L->log_A_real = at_layer_param(p, prefix, "log_A_real", AT_SHAPE(H, M), nd)) ||
      !(L->A_imag = at_layer_param(p, prefix, "A_imag", AT_SHAPE(H, M), nd)) ||
      !(L->B = at_layer_param(p, prefix, "B", AT_SHAPE(H, M, 2), nd)) ||
      !(L->C = at_layer_param(p, prefix, "C", AT_SHAPE(H, M, 2), 0)) ||
      !(L->D = at_layer_param(p, prefix, "D", AT_SHAPE(H), 0)) ||
      !(L->w_out = at_layer_weight(p, prefix, "out_proj", 2 * H, H)) ||
      !(L->b_out = at_layer_param(p, prefix, "out_bias", AT_SHAPE(2 * H), nd)))
    return AT_E_ARG;
  return AT_OK;
}

static void s4d_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  s4d_layer *L = layer;
  at_fill_uniform(L->log_dt->data, L->H, seed, at_stream_of(L->log_dt->name), log(L->dt_min), log(L->dt_max));
  for (int64_t h = 0; h < L->H; h++)
    for (int64_t m = 0; m < L->M; m++) {
      const int64_t i = h * L->M + m;
      L->log_A_real->data[i] = (real)log(0.5);
      L->A_imag->data[i] = (real)(M_PI * (double)m);
      L->B->data[2 * i] = 1, L->B->data[2 * i + 1] = 0;
    }
  at_layer_init_normal(L->C, seed, sqrt(0.5));
  at_layer_init_normal(L->D, seed, 1.0);
  at_layer_init_out(L->w_out, cfg, seed);
  at_layer_init_const(L->b_out, 0);
}

/* The SSM's y [B,T,H] in one of three runs; state [B,H,M,2] (NULL in
 * training). The prefill computes y by the training form and then the state
 * after the last token by the recurrence's step form from the zero state
 * (O(T H M), less than the convolution's O(T^2 H); its outputs, equal to y
 * to rounding, are dropped). */
static at_tensor *s4d_ssm(at_ctx *c, s4d_layer *L, at_tensor *x, at_tensor *state, at_lin_run run) {
  at_tensor *Bbar = NULL;
  at_tensor *Abar = at_s4d_discretize(c, L->log_dt, L->log_A_real, L->A_imag, L->B, &Bbar);
  if (run == AT_LIN_RUN_STEP) return at_s4d_step(c, x, Abar, Bbar, L->C, state);
  at_tensor *y = L->base.form == AT_LIN_RECURRENT
                     ? at_s4d_recurrence(c, x, Abar, Bbar, L->C, NULL, NULL)
                     : at_s4d_conv(c, x, at_s4d_kernel(c, Abar, Bbar, L->C, x->shape[1]));
  if (y && run == AT_LIN_RUN_PREFILL && !at_s4d_step(c, x, Abar, Bbar, L->C, state)) return NULL;
  return y;
}

/* The layer over x; s is the decoding state (NULL in training): t[0] the
 * M complex modes of each channel [B,H,M,2]. */
static at_tensor *s4d_run(at_ctx *c, s4d_layer *L, at_tensor *x, at_mixer_state *s, at_lin_run run) {
  at_tensor *y = s4d_ssm(c, L, x, s ? s->t[0] : NULL, run);
  y = at_gelu(c, at_add(c, y, at_mul(c, x, L->D)));
  at_tensor *g = at_linear(c, y, L->w_out, L->b_out);
  return at_mul(c, at_slice(c, g, 2, 0, L->H), at_sigmoid(c, at_slice(c, g, 2, L->H, L->H)));
}

static at_tensor *s4d_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  (void)io;
  s4d_layer *L = layer;
  if (!x) return NULL;
  if (x->ndim != 3 || x->shape[2] != L->H) return at_layer_bad_input(c, &at_mixer_s4d, x, L->H);
  return s4d_run(c, L, x, NULL, AT_LIN_RUN_TRAIN);
}

static at_status s4d_state_new(const void *layer, at_mixer_state *s) {
  const s4d_layer *L = layer;
  return at_mixer_state_add(s, AT_SHAPE(s->batch, L->H, L->M, 2)) ? AT_OK
                                                                   : at_error_prefix(AT_E_NOMEM, "s4d: decoding state");
}

static at_tensor *s4d_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  s4d_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_s4d, x, L->H, s, io, 0)) return NULL;
  return s4d_run(c, L, x, s, AT_LIN_RUN_PREFILL);
}

static at_tensor *s4d_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  s4d_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_s4d, x, L->H, s, io, 1)) return NULL;
  return s4d_run(c, L, x, s, AT_LIN_RUN_STEP);
}

/* M complex numbers per channel. */
static int64_t s4d_state_elems(const void *layer) {
  const s4d_layer *L = layer;
  return L->H * L->M * 2;
}

const at_mixer_impl at_mixer_s4d = {
  .name = "s4d",
  .family = "state-space",
  .summary = "S4D: per-channel diagonal complex SSM (S4D-Lin A = -1/2 + i pi n, ZOH, learned dt), trained "
             "as a causal convolution with the kernel 2 Re(C Bbar Abar^l); D skip, GELU, GLU output",
  .opts = s4d_options,
  .n_opts = AT_ARRAY_LEN(s4d_options),
  .opts_size = sizeof(s4d_opts),
  .check = s4d_check,
  .create = s4d_create,
  .init = s4d_init,
  .forward = s4d_forward,
  .state_elems = s4d_state_elems,
  .destroy = free,
  .state_new = s4d_state_new,
  .prefill = s4d_prefill,
  .step = s4d_step,
};
