/* models/gla.c: the gated linear attention mixer (Yang et al., arXiv
 * 2312.06635), as flash-linear-attention's GatedLinearAttention layer
 * (fla/layers/gla.py) defines it. H = n_heads, key dim HK = expand_k d,
 * value dim HV = expand_v d, K = HK / H, V = HV / H, x [B,T,d]:
 *
 *   q = x Wq^T, k = x Wk^T, v = x Wv^T        (short_conv: each through a
 *                                              causal depthwise conv + SiLU)
 *   gk = logsigmoid((x Wgk_down^T) Wgk_up^T + gk_bias) / gate_logit_normalizer
 *        (per key channel, rank gate_low_rank_dim; clamp_min < 0: gk >= clamp_min)
 *   o = gla(q, k, v, gk)   (chunk form, scale K^-1/2):
 *       S_t = diag(exp gk_t) S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t K^-1/2
 *   o = RMSNorm_head(o) (weight [V] shared by the heads) times the output gate
 *       swish (fla's default): silu(x Wg^T);  sigmoid: sigmoid(x Wg^T);  none: 1
 *   y = o Wo^T   [B,T,d]
 *
 * fla's defaults are the options' defaults: expand_k 0.5, expand_v 1,
 * gate_low_rank_dim 16, gate_logit_normalizer 16, no short conv, swish gate.
 *
 * Parameters (under layers.<i>.gla.): q_proj k_proj [HK, d], v_proj [HV, d],
 * q_conv k_conv [HK, conv_size], v_conv [HV, conv_size], gk_proj.down [R, d],
 * gk_proj.up [HK, R], gk_proj.bias [HK], g_proj [HV, d], g_norm [V],
 * o_proj [d, HV].
 *
 * Initialisation as fla's GLA model: every weight N(0, init_std), o_proj
 * N(0, init_std / sqrt(2 n_layers)) (residual_init), gk_proj.bias 0, g_norm
 * 1; the bias and g_norm without weight decay. At init the gate logit is
 * ~0, so gk ~ log(1/2) / 16 = -0.043 per token (a memory of ~23 tokens).
 *
 * The normaliser keeps gk >= logsigmoid(.)/16, but the op takes any gk <= 0
 * (even -inf) and logsigmoid is evaluated stably, so saturated gates stay
 * finite.
 */
#include <math.h>
#include <stdlib.h>

#include "models/linear_mixers.h"
#include "models/linpath.h"
#include "ops/attention/dplr.h"
#include "ops/ops.h"

extern const at_mixer_impl at_mixer_gla;

typedef struct gla_opts {
  at_mixer_common common; /* head dims follow from expand_k, expand_v */
  int64_t chunk_size;
  int short_conv;
  int64_t conv_size;
  int output_gate; /* at_out_gate */
  double expand_k, expand_v;
  int64_t gate_low_rank_dim;
  double gate_logit_normalizer;
  double clamp_min; /* 0: none */
} gla_opts;

static const at_mixer_opt gla_options[] = {
  AT_OPT_I("chunk_size", gla_opts, chunk_size, 1, 4096, 64, "chunk length of the chunkwise training form"),
  AT_OPT_B("short_conv", gla_opts, short_conv, 0, "causal depthwise convolution (then SiLU) on q, k, v"),
  AT_OPT_I("conv_size", gla_opts, conv_size, 2, 4, 4, "its kernel size"),
  AT_OPT_E("output_gate", gla_opts, output_gate, at_lin_gate_names, at_lin_gate_vals, AT_GATE_SWISH,
           "the output gate's activation"),
  AT_OPT_R("expand_k", gla_opts, expand_k, 0, 16, 1, 0, 0.5, "key dim = expand_k d_model (split over the heads)"),
  AT_OPT_R("expand_v", gla_opts, expand_v, 0, 16, 1, 0, 1, "value dim = expand_v d_model (split over the heads)"),
  AT_OPT_I("gate_low_rank_dim", gla_opts, gate_low_rank_dim, 1, 4096, 16, "rank of the decay gate's projection"),
  AT_OPT_R("gate_logit_normalizer", gla_opts, gate_logit_normalizer, 0, INFINITY, 1, 1, 16,
           "gk = logsigmoid(logit) / gate_logit_normalizer"),
  AT_OPT_R("clamp_min", gla_opts, clamp_min, -INFINITY, 0, 1, 0, 0,
           "lower bound of gk per token (0 = none)"),
};

/* A dim of d_model scaled by `expand` that splits evenly over the heads. */
static int64_t split_dim(const at_model_cfg *cfg, double expand, int64_t *out) {
  double x = expand * (double)cfg->d_model;
  *out = (int64_t)x;
  return x == (double)*out && *out >= cfg->n_heads && *out % cfg->n_heads == 0;
}

static at_status gla_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  const gla_opts *o = opts;
  int64_t n;
  const char *keys[] = {"expand_k", "expand_v"};
  const double vals[] = {o->expand_k, o->expand_v};
  for (int i = 0; i < 2; i++)
    if (!split_dim(cfg, vals[i], &n)) {
      *bad = keys[i];
      return at_error(AT_E_CONFIG, "%s * d_model = %g * %lld is not a multiple of n_heads %lld", keys[i],
                      vals[i], (long long)cfg->d_model, (long long)cfg->n_heads);
    }
  return AT_OK;
}

typedef struct gla_layer {
  at_lin_layer_base base;
  int64_t d, H, K, V, R, conv_size, chunk;
  int short_conv;
  at_out_gate out_gate;
  double normalizer, clamp_min, norm_eps;
  at_tensor *wq, *wk, *wv, *cq, *ck, *cv;
  at_tensor *gk_down, *gk_up, *gk_bias, *wg, *g_norm, *wo;
} gla_layer;

static at_status gla_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                            void **out) {
  (void)layer_index;
  const gla_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_gla, gla_opts);
  gla_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base.impl = &at_mixer_gla;
  L->base.form = AT_LIN_CHUNK;
  int64_t HK, HV;
  if (!split_dim(cfg, o->expand_k, &HK) || !split_dim(cfg, o->expand_v, &HV))
    return at_error(AT_E_ARG, "gla: expand_k d_model and expand_v d_model must be multiples of n_heads");
  L->d = cfg->d_model;
  L->H = cfg->n_heads;
  L->K = HK / L->H;
  L->V = HV / L->H;
  L->R = o->gate_low_rank_dim;
  L->conv_size = o->conv_size;
  L->chunk = o->chunk_size;
  L->short_conv = o->short_conv;
  L->out_gate = o->output_gate;
  L->normalizer = o->gate_logit_normalizer;
  L->clamp_min = o->clamp_min;
  L->norm_eps = cfg->norm_eps;
  if (L->chunk < 1 || L->R < 1 || !(L->normalizer > 0) || !(L->clamp_min <= 0))
    return at_error(AT_E_ARG, "gla: chunk_size %lld, gate_low_rank_dim %lld must be positive, "
                    "gate_logit_normalizer %g > 0, clamp_min %g <= 0", (long long)L->chunk,
                    (long long)L->R, L->normalizer, L->clamp_min);
  int64_t d = L->d;
  if (!(L->wq = at_layer_weight(p, prefix, "q_proj", HK, d)) ||
      !(L->wk = at_layer_weight(p, prefix, "k_proj", HK, d)) ||
      !(L->wv = at_layer_weight(p, prefix, "v_proj", HV, d)) ||
      !(L->gk_down = at_layer_weight(p, prefix, "gk_proj.down", L->R, d)) ||
      !(L->gk_up = at_layer_weight(p, prefix, "gk_proj.up", HK, L->R)) ||
      !(L->gk_bias = at_layer_param(p, prefix, "gk_proj.bias", AT_SHAPE(HK), AT_PARAM_NO_DECAY)))
    return AT_E_ARG;
  if (L->short_conv && (!(L->cq = at_layer_weight(p, prefix, "q_conv", HK, L->conv_size)) ||
                        !(L->ck = at_layer_weight(p, prefix, "k_conv", HK, L->conv_size)) ||
                        !(L->cv = at_layer_weight(p, prefix, "v_conv", HV, L->conv_size))))
    return AT_E_ARG;
  if (L->out_gate != AT_GATE_NONE && !(L->wg = at_layer_weight(p, prefix, "g_proj", HV, d)))
    return AT_E_ARG;
  if (!(L->g_norm = at_layer_param(p, prefix, "g_norm", AT_SHAPE(L->V), AT_PARAM_NO_DECAY)) ||
      !(L->wo = at_layer_weight(p, prefix, "o_proj", d, HV)))
    return AT_E_ARG;
  return AT_OK;
}

static void gla_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  gla_layer *L = layer;
  at_tensor *normal[] = {L->wq, L->wk, L->wv, L->cq, L->ck, L->cv, L->gk_down, L->gk_up, L->wg};
  for (int i = 0; i < AT_ARRAY_LEN(normal); i++)
    if (normal[i]) at_layer_init_normal(normal[i], seed, cfg->init_std);
  at_layer_init_const(L->gk_bias, 0);
  at_layer_init_const(L->g_norm, 1);
  at_layer_init_out(L->wo, cfg, seed);
}

/* A projection, through the short conv + SiLU when the layer has one (fla's
 * GLA applies no SiLU without it, unlike the delta layers). */
static at_tensor *proj(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *conv, at_tensor *hist, at_lin_run run) {
  at_tensor *y = at_linear(c, x, w, NULL);
  return conv ? at_lin_conv_run(c, y, conv, hist, run) : y;
}

/* The layer over x in one of three runs (at_lin_run); s is the decoding
 * state (NULL in training): t[0] the K x V states [B,H,K,V], then with
 * short convs the last conv_size - 1 inputs of the q, k and v convs. */
static at_tensor *gla_run(at_ctx *c, gla_layer *L, at_tensor *x, at_mixer_state *s, at_lin_run run) {
  int64_t B = x->shape[0], T = x->shape[1], H = L->H, K = L->K, V = L->V;
  at_tensor *hq = s && L->short_conv ? s->t[1] : NULL, *hk = hq ? s->t[2] : NULL, *hv = hq ? s->t[3] : NULL;
  at_tensor *q = AT_RESHAPE(c, proj(c, x, L->wq, L->cq, hq, run), B, T, H, K);
  at_tensor *k = AT_RESHAPE(c, proj(c, x, L->wk, L->ck, hk, run), B, T, H, K);
  at_tensor *v = AT_RESHAPE(c, proj(c, x, L->wv, L->cv, hv, run), B, T, H, V);
  at_tensor *gk = at_linear(c, at_linear(c, x, L->gk_down, NULL), L->gk_up, L->gk_bias);
  gk = at_scale(c, at_logsigmoid(c, gk), 1.0 / L->normalizer);
  if (L->clamp_min < 0) /* max(gk, m) = m + relu(gk - m) */
    gk = at_affine(c, at_relu(c, at_affine(c, gk, 1.0, -L->clamp_min)), 1.0, L->clamp_min);
  gk = AT_RESHAPE(c, gk, B, T, H, K);
  at_lin_opts opts = {.scale = 0, .chunk_size = L->chunk, .form = L->base.form};
  at_tensor *o;
  if (run == AT_LIN_RUN_STEP) {
    o = at_gla_step(c, q, k, v, gk, s->t[0], &opts);
  } else {
    at_tensor *ht = NULL;
    o = at_gla(c, q, k, v, gk, NULL, run == AT_LIN_RUN_PREFILL ? &ht : NULL, &opts);
    if (o && run == AT_LIN_RUN_PREFILL && !at_linpath_keep(s->t[0], ht, NULL, NULL)) return NULL;
  }
  o = at_rmsnorm(c, o, L->g_norm, L->norm_eps);
  if (L->out_gate != AT_GATE_NONE) {
    at_tensor *g = AT_RESHAPE(c, at_linear(c, x, L->wg, NULL), B, T, H, V);
    o = L->out_gate == AT_GATE_SWISH ? at_silu_mul(c, g, o) : at_mul(c, o, at_sigmoid(c, g));
  }
  return at_linear(c, AT_RESHAPE(c, o, B, T, H * V), L->wo, NULL);
}

static at_tensor *gla_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  (void)io;
  gla_layer *L = layer;
  if (!x) return NULL;
  if (x->ndim != 3 || x->shape[2] != L->d) return at_layer_bad_input(c, &at_mixer_gla, x, L->d);
  return gla_run(c, L, x, NULL, AT_LIN_RUN_TRAIN);
}

static at_status gla_state_new(const void *layer, at_mixer_state *s) {
  const gla_layer *L = layer;
  int64_t B = s->batch, cs = L->conv_size - 1;
  int ok = at_mixer_state_add(s, AT_SHAPE(B, L->H, L->K, L->V)) != NULL;
  if (L->short_conv)
    ok = ok && at_mixer_state_add(s, AT_SHAPE(B, cs, L->H * L->K)) && at_mixer_state_add(s, AT_SHAPE(B, cs, L->H * L->K)) &&
         at_mixer_state_add(s, AT_SHAPE(B, cs, L->H * L->V));
  return ok ? AT_OK : at_error_prefix(AT_E_NOMEM, "gla: decoding state");
}

static at_tensor *gla_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  gla_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_gla, x, L->d, s, io, 0)) return NULL;
  return gla_run(c, L, x, s, AT_LIN_RUN_PREFILL);
}

static at_tensor *gla_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  gla_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_gla, x, L->d, s, io, 1)) return NULL;
  return gla_run(c, L, x, s, AT_LIN_RUN_STEP);
}

/* H K x V matrices plus the last conv_size - 1 inputs of each short conv. */
static int64_t gla_state_elems(const void *layer) {
  const gla_layer *L = layer;
  int64_t n = L->H * L->K * L->V;
  if (L->short_conv) n += (L->conv_size - 1) * L->H * (2 * L->K + L->V);
  return n;
}

const at_mixer_impl at_mixer_gla = {
  .name = "gla",
  .family = "linear",
  .summary = "Gated linear attention: S <- diag(exp gk) S + k v^T, per-channel decay "
             "gk = logsigmoid(low-rank(x)) / 16, RMSNorm and swish output gate",
  .opts = gla_options,
  .n_opts = AT_ARRAY_LEN(gla_options),
  .opts_size = sizeof(gla_opts),
  .check = gla_check,
  .create = gla_create,
  .init = gla_init,
  .forward = gla_forward,
  .state_elems = gla_state_elems,
  .destroy = free,
  .state_new = gla_state_new,
  .prefill = gla_prefill,
  .step = gla_step,
};
