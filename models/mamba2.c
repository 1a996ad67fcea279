/* models/mamba2.c: the Mamba-2 mixer (SSD, Dao & Gu arXiv 2405.21060), with
 * the semantics of flash-linear-attention's Mamba2 layer (n_groups = 1).
 * I = expand d_model (inner width), P = head_dim, H = I / P heads,
 * N = d_state, x [B,T,d]:
 *
 *   z  = x Wz^T                                 [B,T,I]   (the output gate)
 *   xs = SiLU(ShortConv(x Wx^T))                [B,T,H,P]
 *   Bm = SiLU(ShortConv(x WB^T))                [B,T,N]   (shared by the heads)
 *   Cm = SiLU(ShortConv(x WC^T))                [B,T,N]
 *   dt = softplus(x Wdt^T + dt_bias)            [B,T,H]
 *   A  = -exp(A_log)                            [H]
 *   y  = SSD(q = Cm, k = Bm, v = dt xs, g = dt A) + D xs
 *        = simple_gla with scale 1: S <- exp(dt A) S + Bm (dt xs)^T, y = S^T Cm
 *   y  = RMSNorm(y ⊙ silu(z))  over I            (output_gate swish, the
 *        default: Mamba-2's gated RMSNorm with norm_before_gate = False;
 *        sigmoid: RMSNorm(y ⊙ sigmoid(z)); none: RMSNorm(y), no z)
 *   out = y Wo^T                                [B,T,d]
 *
 * The conv of x, B and C is depthwise, so Mamba-2's single conv over the
 * concatenation [x, B, C] is the three convs here (and its single in_proj the
 * separate projections). short_conv off: SiLU only. No biases in the
 * projections or the conv (Mamba-2 without bias; flash-linear-attention's
 * conv has none either), no dt limit.
 *
 * Parameters (under layers.<i>.mamba2.): z_proj [I, d], x_proj [I, d],
 * B_proj [N, d], C_proj [N, d], dt_proj [H, d], x_conv [I, conv_size],
 * B_conv C_conv [N, conv_size], A_log [H], dt_bias [H], D [H], norm [I],
 * out_proj [d, I].
 *
 * Initialisation: A_log = log U(1, 16); dt_bias = softplus^-1(dt),
 * dt = exp(U(log 1e-3, log 1e-1)) floored at 1e-4; D = 1, norm = 1; these
 * four without weight decay. Other weights N(0, init_std), out_proj
 * N(0, init_std / sqrt(2 n_layers)).
 */
#include <math.h>
#include <stdlib.h>

#include "models/linear_mixers.h"
#include "ops/ops.h"

extern const at_mixer_impl at_mixer_mamba2;

static const at_mixer_opt mamba2_options[] = {
  AT_OPT_I("head_dim", at_lin_mixer_opts, common.head_dim, 0, 4096, 0,
           "head dim P of the inner width (heads = expand d_model / P); 0 = d_model / n_heads"),
  AT_LIN_OPT_CHUNK,
  AT_LIN_OPT_GATE(AT_GATE_SWISH),
  AT_OPT_I("d_state", at_lin_mixer_opts, d_state, 1, 4096, 16, "state size N (B and C dims)"),
  AT_OPT_I("expand", at_lin_mixer_opts, expand, 1, 16, 2, "inner width = expand d_model"),
};

static at_status mamba2_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  const at_lin_mixer_opts *o = opts;
  if ((o->expand * cfg->d_model) % o->common.head_dim) {
    *bad = "head_dim";
    return at_error(AT_E_CONFIG, "expand * d_model = %lld is not divisible by head_dim %lld",
                    (long long)(o->expand * cfg->d_model), (long long)o->common.head_dim);
  }
  return AT_OK;
}

typedef struct mamba2_layer {
  at_lin_layer_base base;
  int64_t d, I, P, H, N, conv_size, chunk;
  int short_conv;
  at_out_gate out_gate;
  double norm_eps;
  at_tensor *wz, *wx, *wB, *wC, *wdt, *cx, *cB, *cC;
  at_tensor *A_log, *dt_bias, *D, *norm, *wo;
} mamba2_layer;

static at_tensor *vec(at_params *p, const char *prefix, const char *name, int64_t n) {
  return at_layer_param(p, prefix, name, AT_SHAPE(n), AT_PARAM_NO_DECAY);
}

static at_status mamba2_create(const at_model_cfg *cfg, int layer_index, at_params *p,
                               const char *prefix, void **out) {
  (void)layer_index;
  const at_lin_mixer_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_mamba2, at_lin_mixer_opts);
  mamba2_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base.impl = &at_mixer_mamba2;
  L->base.form = AT_LIN_CHUNK;
  L->d = cfg->d_model;
  L->I = o->expand * cfg->d_model;
  L->P = at_layer_head_dim(cfg, &at_mixer_mamba2);
  L->N = o->d_state;
  L->conv_size = o->conv_size;
  L->chunk = o->chunk_size;
  L->short_conv = o->short_conv;
  L->out_gate = o->output_gate;
  L->norm_eps = cfg->norm_eps;
  if (L->I < 1 || L->P < 1 || L->N < 1 || L->I % L->P)
    return at_error(AT_E_ARG, "mamba2: inner width expand * d_model = %lld must be a positive multiple "
                    "of head_dim %lld, and d_state %lld positive", (long long)L->I, (long long)L->P,
                    (long long)L->N);
  if (L->short_conv && (L->conv_size < 1 || L->conv_size > 64))
    return at_error(AT_E_ARG, "mamba2: conv_size %lld outside 1..64", (long long)L->conv_size);
  if (L->chunk < 1) return at_error(AT_E_ARG, "mamba2: chunk_size must be positive");
  L->H = L->I / L->P;
  int64_t d = L->d, I = L->I, N = L->N, H = L->H;
  if ((L->out_gate != AT_GATE_NONE && !(L->wz = at_layer_weight(p, prefix, "z_proj", I, d))) ||
      !(L->wx = at_layer_weight(p, prefix, "x_proj", I, d)) ||
      !(L->wB = at_layer_weight(p, prefix, "B_proj", N, d)) ||
      !(L->wC = at_layer_weight(p, prefix, "C_proj", N, d)) ||
      !(L->wdt = at_layer_weight(p, prefix, "dt_proj", H, d)))
    return AT_E_ARG;
  if (L->short_conv && (!(L->cx = at_layer_weight(p, prefix, "x_conv", I, L->conv_size)) ||
                        !(L->cB = at_layer_weight(p, prefix, "B_conv", N, L->conv_size)) ||
                        !(L->cC = at_layer_weight(p, prefix, "C_conv", N, L->conv_size))))
    return AT_E_ARG;
  if (!(L->A_log = vec(p, prefix, "A_log", H)) || !(L->dt_bias = vec(p, prefix, "dt_bias", H)) ||
      !(L->D = vec(p, prefix, "D", H)) || !(L->norm = vec(p, prefix, "norm", I)) ||
      !(L->wo = at_layer_weight(p, prefix, "out_proj", d, I)))
    return AT_E_ARG;
  return AT_OK;
}

static void mamba2_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  mamba2_layer *L = layer;
  double std = cfg->init_std;
  at_tensor *normal[] = {L->wz, L->wx, L->wB, L->wC, L->wdt, L->cx, L->cB, L->cC};
  for (int i = 0; i < AT_ARRAY_LEN(normal); i++)
    if (normal[i]) at_layer_init_normal(normal[i], seed, std);
  at_lin_init_A_log(L->A_log, seed);
  at_lin_init_dt_bias(L->dt_bias, seed);
  at_layer_init_const(L->D, 1);
  at_layer_init_const(L->norm, 1);
  at_layer_init_out(L->wo, cfg, seed);
}

/* [B,T,N] -> [B,T,H,N], the same vector for every head. */
static at_tensor *repeat_heads(at_ctx *c, at_tensor *x, int64_t H) {
  if (!x) return NULL;
  int64_t B = x->shape[0], T = x->shape[1], N = x->shape[2];
  at_tensor *x1 = AT_RESHAPE(c, x, B, T, 1, N);
  if (H == 1) return x1;
  at_tensor **xs = at_scratch(c, (size_t)H * sizeof *xs);
  if (!xs) return NULL;
  for (int64_t h = 0; h < H; h++) xs[h] = x1;
  return at_concat(c, xs, (int)H, 2);
}

/* The layer over x in one of three runs (at_lin_run); s is the decoding
 * state (NULL in training): t[0] the N x P states [B,H,N,P], then with
 * short convs the last conv_size - 1 inputs of the x, B and C convs. */
static at_tensor *mamba2_run(at_ctx *c, mamba2_layer *L, at_tensor *x, at_mixer_state *s, at_lin_run run) {
  int64_t B = x->shape[0], T = x->shape[1], H = L->H, P = L->P;
  at_tensor *hx = s && L->short_conv ? s->t[1] : NULL, *hB = hx ? s->t[2] : NULL, *hC = hx ? s->t[3] : NULL;
  at_tensor *xs = at_lin_conv_run(c, at_linear(c, x, L->wx, NULL), L->cx, hx, run);
  xs = AT_RESHAPE(c, xs, B, T, H, P);
  at_tensor *Bm = repeat_heads(c, at_lin_conv_run(c, at_linear(c, x, L->wB, NULL), L->cB, hB, run), H);
  at_tensor *Cm = repeat_heads(c, at_lin_conv_run(c, at_linear(c, x, L->wC, NULL), L->cC, hC, run), H);
  at_tensor *dt = at_softplus(c, at_add(c, at_linear(c, x, L->wdt, NULL), L->dt_bias)); /* [B,T,H] */
  at_tensor *g = at_mul(c, dt, at_scale(c, at_exp(c, L->A_log), -1.0));
  at_tensor *v = at_mul(c, xs, AT_RESHAPE(c, dt, B, T, H, 1));
  at_lin_opts opts = {.scale = 1.0, .chunk_size = L->chunk, .form = L->base.form};
  at_tensor *y = at_lin_core_run(c, AT_LIN_SIMPLE_GLA, Cm, Bm, v, g, NULL, s ? s->t[0] : NULL, run, &opts);
  y = at_add(c, y, at_mul(c, xs, AT_RESHAPE(c, L->D, H, 1)));
  y = AT_RESHAPE(c, y, B, T, L->I);
  if (L->out_gate == AT_GATE_SWISH) y = at_silu_mul(c, at_linear(c, x, L->wz, NULL), y);
  else if (L->out_gate == AT_GATE_SIGMOID) y = at_mul(c, y, at_sigmoid(c, at_linear(c, x, L->wz, NULL)));
  y = at_rmsnorm(c, y, L->norm, L->norm_eps);
  return at_linear(c, y, L->wo, NULL);
}

static at_tensor *mamba2_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  (void)io;
  mamba2_layer *L = layer;
  if (!x) return NULL;
  if (x->ndim != 3 || x->shape[2] != L->d) return at_layer_bad_input(c, &at_mixer_mamba2, x, L->d);
  return mamba2_run(c, L, x, NULL, AT_LIN_RUN_TRAIN);
}

static at_status mamba2_state_new(const void *layer, at_mixer_state *s) {
  const mamba2_layer *L = layer;
  int64_t B = s->batch, cs = L->conv_size - 1;
  int ok = at_mixer_state_add(s, AT_SHAPE(B, L->H, L->N, L->P)) != NULL;
  if (L->short_conv)
    ok = ok && at_mixer_state_add(s, AT_SHAPE(B, cs, L->I)) && at_mixer_state_add(s, AT_SHAPE(B, cs, L->N)) &&
         at_mixer_state_add(s, AT_SHAPE(B, cs, L->N));
  return ok ? AT_OK : at_error_prefix(AT_E_NOMEM, "mamba2: decoding state");
}

static at_tensor *mamba2_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  mamba2_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_mamba2, x, L->d, s, io, 0)) return NULL;
  return mamba2_run(c, L, x, s, AT_LIN_RUN_PREFILL);
}

static at_tensor *mamba2_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  mamba2_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_mamba2, x, L->d, s, io, 1)) return NULL;
  return mamba2_run(c, L, x, s, AT_LIN_RUN_STEP);
}

/* H state matrices N x P plus the last conv_size - 1 inputs of the convs. */
static int64_t mamba2_state_elems(const void *layer) {
  const mamba2_layer *L = layer;
  int64_t n = L->H * L->N * L->P;
  if (L->short_conv) n += (L->conv_size - 1) * (L->I + 2 * L->N);
  return n;
}

const at_mixer_impl at_mixer_mamba2 = {
  .name = "mamba2",
  .family = "state-space",
  .summary = "Mamba-2 (SSD): scalar-decay selective state space, A = -exp(A_log), dt = softplus(.), "
             "B/C projections, short conv, gated RMSNorm",
  .opts = mamba2_options,
  .n_opts = AT_ARRAY_LEN(mamba2_options),
  .opts_size = sizeof(at_lin_mixer_opts),
  .check = mamba2_check,
  .create = mamba2_create,
  .init = mamba2_init,
  .forward = mamba2_forward,
  .state_elems = mamba2_state_elems,
  .destroy = free,
  .state_new = mamba2_state_new,
  .prefill = mamba2_prefill,
  .step = mamba2_step,
};
