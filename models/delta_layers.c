/* models/delta_layers.c: the delta-rule mixers DeltaNet, Gated DeltaNet and
 * Kimi Delta Attention, as the Kimi Linear paper (arXiv 2510.26692 §4) and
 * flash-linear-attention's layers (delta_net, gated_deltanet, kda) define
 * them. H = n_heads, K = head_dim, V = expand_v K (deltanet: V = K), x [B,T,d]:
 *
 *   q = L2Norm(SiLU(ShortConv(x Wq^T)))  [B,T,H,K]     (ShortConv: causal
 *   k = L2Norm(SiLU(ShortConv(x Wk^T)))  [B,T,H,K]      depthwise, kernel
 *   v = SiLU(ShortConv(x Wv^T))          [B,T,H,V]      conv_size; short_conv
 *   beta = sigmoid(x Wb^T)               [B,T,H]        off: SiLU only)
 *          (x 2 with allow_neg_eigval: beta in (0, 2))
 *   decay gate (log space, g <= 0):
 *     kda  per channel, f = (x Wf_down^T) Wf_up^T + dt_bias    [B,T,H,K]
 *     gdn  per head,    f = x Wa^T + dt_bias                    [B,T,H]
 *     unbounded: g = -exp(A_log_h) softplus(f)
 *     bounded:   g = lower_bound sigmoid(exp(A_log_h) f)
 *   o = op(q, k, v, g, beta)  (delta_rule / gated_delta_rule / kda, chunk form,
 *                              scale K^-1/2)
 *   o = RMSNorm_head(o) (weight [V] shared by the heads) times the output gate
 *     sigmoid: sigmoid((x Wg_down^T) Wg_up^T + g_bias)   (Kimi; low rank V)
 *     swish:   silu(x Wg^T)                              (GDN's default)
 *     none:    1                                         (DeltaNet's default)
 *   y = o Wo^T   [B,T,d]
 *
 * Parameters (under layers.<i>.<mixer>.): q_proj k_proj v_proj [H*K|H*V, d],
 * q_conv k_conv v_conv [channels, conv_size], b_proj [H, d]; kda: f_proj.down
 * [V, d], f_proj.up [H*K, V], dt_bias [H*K]; gdn: a_proj [H, d], dt_bias [H];
 * A_log [H] (gdn, kda); g_proj.down [V, d], g_proj.up [H*V, V], g_proj.bias
 * [H*V] (sigmoid gate) or g_proj [H*V, d] (swish gate); o_norm [V];
 * o_proj [d, H*V]. The low rank of the gates is the value head dim, as in
 * flash-linear-attention (= head_dim with KDA's expand_v 1, the paper's).
 *
 * Initialisation: A_log = log U(1, 16); dt_bias = softplus^-1(dt),
 * dt = exp(U(log 1e-3, log 1e-1)) floored at 1e-4 (the bounded gate: the
 * dt_bias giving the same initial decays -exp(A_log) dt, see
 * at_lin_init_dt_bias_bounded; with the unbounded gate's dt_bias most of its
 * sigmoids would start saturated at 0, gradient ~e^-40); A_log, dt_bias, o_norm
 * (ones) and g_proj.bias (zeros) without weight decay; every other weight,
 * the conv kernels included (as flash-linear-attention's model init),
 * N(0, init_std), o_proj N(0, init_std / sqrt(2 n_layers)) like models/full.c.
 *
 * Gates that underflow are safe: the ops take any g <= 0 (even -inf) and
 * never exponentiate a positive sum, softplus and sigmoid are evaluated
 * stably, so the layer stays finite where flash-linear-attention's reference
 * chunk op with the unbounded gate turned NaN.
 */
#include <math.h>
#include <stdlib.h>

#include "models/linear_mixers.h"
#include "ops/ops.h"

extern const at_mixer_impl at_mixer_deltanet, at_mixer_gdn, at_mixer_kda;

static const at_mixer_opt deltanet_options[] = {
  AT_OPT_HEAD_DIM(at_lin_mixer_opts), AT_LIN_OPT_CHUNK_AUTO, AT_LIN_OPT_GATE(AT_GATE_NONE), AT_LIN_OPT_NEG_EIG,
};
static const at_mixer_opt gdn_options[] = {
  AT_OPT_HEAD_DIM(at_lin_mixer_opts), AT_LIN_OPT_CHUNK_AUTO, AT_LIN_OPT_GATE(AT_GATE_SWISH),
  AT_LIN_OPT_DECAY, AT_LIN_OPT_NEG_EIG,
  AT_OPT_I("expand_v", at_lin_mixer_opts, expand_v, 1, 16, 2, "value head dim = expand_v head_dim"),
};
static const at_mixer_opt kda_options[] = {
  AT_OPT_HEAD_DIM(at_lin_mixer_opts), AT_LIN_OPT_CHUNK_AUTO, AT_LIN_OPT_GATE(AT_GATE_SIGMOID),
  AT_LIN_OPT_DECAY, AT_LIN_OPT_NEG_EIG,
  AT_OPT_I("expand_v", at_lin_mixer_opts, expand_v, 1, 16, 1, "value head dim = expand_v head_dim"),
};

typedef struct delta_layer {
  at_lin_layer_base base;
  int64_t d, H, K, V, conv_size, chunk;
  int short_conv, neg_eig;
  at_out_gate out_gate;
  at_decay_gate decay;
  double lower_bound, norm_eps;
  at_tensor *wq, *wk, *wv, *cq, *ck, *cv, *wb;
  at_tensor *f_down, *f_up, *wa, *A_log, *dt_bias; /* decay gate (gdn, kda) */
  at_tensor *g_down, *g_up, *g_bias, *wg;          /* output gate */
  at_tensor *o_norm, *wo;
} delta_layer;

static at_tensor *param(at_params *p, const char *prefix, const char *name, int64_t n, int flags) {
  return at_layer_param(p, prefix, name, AT_SHAPE(n), flags);
}

static at_status delta_create(const at_model_cfg *cfg, int layer_index, at_params *p,
                              const char *prefix, void **out, const at_mixer_impl *kind) {
  (void)layer_index;
  const at_lin_mixer_opts *o = AT_MIXER_OPTS(cfg, kind, at_lin_mixer_opts);
  delta_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base.impl = kind;
  L->base.form = AT_LIN_CHUNK;
  L->d = cfg->d_model;
  L->H = cfg->n_heads;
  L->K = at_layer_head_dim(cfg, kind);
  L->V = (kind == &at_mixer_deltanet ? 1 : o->expand_v) * L->K;
  L->conv_size = o->conv_size;
  L->chunk = o->chunk_size ? o->chunk_size : at_lin_auto_chunk(L->K);
  L->short_conv = o->short_conv;
  L->neg_eig = o->allow_neg_eigval;
  L->out_gate = o->output_gate;
  L->decay = o->decay_gate;
  L->lower_bound = o->lower_bound;
  L->norm_eps = cfg->norm_eps;
  if (L->H < 1 || L->K < 1 || L->V < 1)
    return at_error(AT_E_ARG, "%s: heads %lld, head_dim %lld and value dim %lld must be positive",
                    kind->name, (long long)L->H, (long long)L->K, (long long)L->V);
  if (L->short_conv && (L->conv_size < 1 || L->conv_size > 64))
    return at_error(AT_E_ARG, "%s: conv_size %lld outside 1..64", kind->name,
                    (long long)L->conv_size);
  if (L->chunk < 1) return at_error(AT_E_ARG, "%s: chunk_size must be positive", kind->name);
  if (kind != &at_mixer_deltanet && L->decay == AT_DECAY_BOUNDED && !(L->lower_bound < 0))
    return at_error(AT_E_ARG, "%s: the bounded gate needs lower_bound < 0, got %g", kind->name,
                    L->lower_bound);
  int64_t d = L->d, HK = L->H * L->K, HV = L->H * L->V;
  if (!(L->wq = at_layer_weight(p, prefix, "q_proj", HK, d)) ||
      !(L->wk = at_layer_weight(p, prefix, "k_proj", HK, d)) ||
      !(L->wv = at_layer_weight(p, prefix, "v_proj", HV, d)) ||
      !(L->wb = at_layer_weight(p, prefix, "b_proj", L->H, d)))
    return AT_E_ARG;
  if (L->short_conv &&
      (!(L->cq = at_layer_weight(p, prefix, "q_conv", HK, L->conv_size)) ||
       !(L->ck = at_layer_weight(p, prefix, "k_conv", HK, L->conv_size)) ||
       !(L->cv = at_layer_weight(p, prefix, "v_conv", HV, L->conv_size))))
    return AT_E_ARG;
  if (kind == &at_mixer_kda &&
      (!(L->f_down = at_layer_weight(p, prefix, "f_proj.down", L->V, d)) ||
       !(L->f_up = at_layer_weight(p, prefix, "f_proj.up", HK, L->V)) ||
       !(L->dt_bias = param(p, prefix, "dt_bias", HK, AT_PARAM_NO_DECAY))))
    return AT_E_ARG;
  if (kind == &at_mixer_gdn && (!(L->wa = at_layer_weight(p, prefix, "a_proj", L->H, d)) ||
                               !(L->dt_bias = param(p, prefix, "dt_bias", L->H, AT_PARAM_NO_DECAY))))
    return AT_E_ARG;
  if (kind != &at_mixer_deltanet && !(L->A_log = param(p, prefix, "A_log", L->H, AT_PARAM_NO_DECAY)))
    return AT_E_ARG;
  if (L->out_gate == AT_GATE_SIGMOID &&
      (!(L->g_down = at_layer_weight(p, prefix, "g_proj.down", L->V, d)) ||
       !(L->g_up = at_layer_weight(p, prefix, "g_proj.up", HV, L->V)) ||
       !(L->g_bias = param(p, prefix, "g_proj.bias", HV, AT_PARAM_NO_DECAY))))
    return AT_E_ARG;
  if (L->out_gate == AT_GATE_SWISH && !(L->wg = at_layer_weight(p, prefix, "g_proj", HV, d)))
    return AT_E_ARG;
  if (!(L->o_norm = param(p, prefix, "o_norm", L->V, AT_PARAM_NO_DECAY)) ||
      !(L->wo = at_layer_weight(p, prefix, "o_proj", d, HV)))
    return AT_E_ARG;
  return AT_OK;
}

static at_status deltanet_create(const at_model_cfg *cfg, int li, at_params *p, const char *prefix,
                                 void **out) {
  return delta_create(cfg, li, p, prefix, out, &at_mixer_deltanet);
}
static at_status gdn_create(const at_model_cfg *cfg, int li, at_params *p, const char *prefix,
                            void **out) {
  return delta_create(cfg, li, p, prefix, out, &at_mixer_gdn);
}
static at_status kda_create(const at_model_cfg *cfg, int li, at_params *p, const char *prefix,
                            void **out) {
  return delta_create(cfg, li, p, prefix, out, &at_mixer_kda);
}

static void delta_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  delta_layer *L = layer;
  double std = cfg->init_std;
  at_tensor *normal[] = {L->wq, L->wk, L->wv, L->wb, L->cq,   L->ck, L->cv,
                         L->f_down, L->f_up, L->wa, L->g_down, L->g_up, L->wg};
  for (int i = 0; i < AT_ARRAY_LEN(normal); i++)
    if (normal[i]) at_layer_init_normal(normal[i], seed, std);
  if (L->A_log) at_lin_init_A_log(L->A_log, seed);
  if (L->dt_bias && L->decay == AT_DECAY_BOUNDED)
    at_lin_init_dt_bias_bounded(L->dt_bias, L->A_log, L->lower_bound, seed);
  else if (L->dt_bias)
    at_lin_init_dt_bias(L->dt_bias, seed);
  if (L->g_bias) at_layer_init_const(L->g_bias, 0);
  at_layer_init_const(L->o_norm, 1);
  at_layer_init_out(L->wo, cfg, seed);
}

/* The log-decay g <= 0 from f = (pre-activation + dt_bias) [B,T,H(,K)] and
 * A_log [H] viewed as a_shape (broadcast against f's head axis). */
static at_tensor *decay_gate(at_ctx *c, const delta_layer *L, at_tensor *f, int ndim,
                             const int64_t *a_shape) {
  at_tensor *A = at_exp(c, at_reshape(c, L->A_log, ndim, a_shape));
  if (L->decay == AT_DECAY_BOUNDED) return at_scale(c, at_sigmoid(c, at_mul(c, f, A)), L->lower_bound);
  return at_mul(c, at_softplus(c, f), at_scale(c, A, -1.0));
}

/* The layer over x in one of three runs (at_lin_run); s is the decoding
 * state (NULL in training): t[0] the K x V states [B,H,K,V], then with
 * short convs the last conv_size - 1 inputs of the q, k and v convs. */
static at_tensor *delta_run(at_ctx *c, delta_layer *L, at_tensor *x, at_mixer_state *s, at_lin_run run) {
  int64_t B = x->shape[0], T = x->shape[1], H = L->H, K = L->K, V = L->V;
  at_tensor *hq = s && L->short_conv ? s->t[1] : NULL, *hk = hq ? s->t[2] : NULL, *hv = hq ? s->t[3] : NULL;
  at_tensor *q = at_lin_conv_run(c, at_linear(c, x, L->wq, NULL), L->cq, hq, run);
  at_tensor *k = at_lin_conv_run(c, at_linear(c, x, L->wk, NULL), L->ck, hk, run);
  at_tensor *v = at_lin_conv_run(c, at_linear(c, x, L->wv, NULL), L->cv, hv, run);
  q = at_l2norm(c, AT_RESHAPE(c, q, B, T, H, K), 1e-6);
  k = at_l2norm(c, AT_RESHAPE(c, k, B, T, H, K), 1e-6);
  v = AT_RESHAPE(c, v, B, T, H, V);
  at_tensor *beta = at_sigmoid(c, at_linear(c, x, L->wb, NULL));
  if (L->neg_eig) beta = at_scale(c, beta, 2.0);
  at_lin_opts opts = {.scale = 0, .chunk_size = L->chunk, .form = L->base.form};
  at_lin_kind kind = AT_LIN_DELTA_RULE;
  at_tensor *g = NULL;
  if (L->base.impl == &at_mixer_kda) {
    at_tensor *f = at_linear(c, at_linear(c, x, L->f_down, NULL), L->f_up, NULL);
    f = AT_RESHAPE(c, at_add(c, f, L->dt_bias), B, T, H, K);
    g = decay_gate(c, L, f, AT_SHAPE(H, 1));
    kind = AT_LIN_KDA;
  } else if (L->base.impl == &at_mixer_gdn) {
    at_tensor *f = at_add(c, at_linear(c, x, L->wa, NULL), L->dt_bias);
    g = decay_gate(c, L, f, AT_SHAPE(H));
    kind = AT_LIN_GATED_DELTA_RULE;
  }
  at_tensor *o = at_lin_core_run(c, kind, q, k, v, g, beta, s ? s->t[0] : NULL, run, &opts);
  o = at_rmsnorm(c, o, L->o_norm, L->norm_eps);
  if (L->out_gate == AT_GATE_SIGMOID) {
    at_tensor *gt = at_linear(c, at_linear(c, x, L->g_down, NULL), L->g_up, L->g_bias);
    o = at_mul(c, o, at_sigmoid(c, AT_RESHAPE(c, gt, B, T, H, V)));
  } else if (L->out_gate == AT_GATE_SWISH) {
    o = at_silu_mul(c, AT_RESHAPE(c, at_linear(c, x, L->wg, NULL), B, T, H, V), o);
  }
  return at_linear(c, AT_RESHAPE(c, o, B, T, H * V), L->wo, NULL);
}

static at_tensor *delta_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  (void)io;
  delta_layer *L = layer;
  if (!x) return NULL;
  if (x->ndim != 3 || x->shape[2] != L->d) return at_layer_bad_input(c, L->base.impl, x, L->d);
  return delta_run(c, L, x, NULL, AT_LIN_RUN_TRAIN);
}

static at_status delta_state_new(const void *layer, at_mixer_state *s) {
  const delta_layer *L = layer;
  int64_t B = s->batch, cs = L->conv_size - 1;
  int ok = at_mixer_state_add(s, AT_SHAPE(B, L->H, L->K, L->V)) != NULL;
  if (L->short_conv)
    ok = ok && at_mixer_state_add(s, AT_SHAPE(B, cs, L->H * L->K)) && at_mixer_state_add(s, AT_SHAPE(B, cs, L->H * L->K)) &&
         at_mixer_state_add(s, AT_SHAPE(B, cs, L->H * L->V));
  return ok ? AT_OK : at_error_prefix(AT_E_NOMEM, "%s: decoding state", L->base.impl->name);
}

static at_tensor *delta_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  delta_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->base.impl, x, L->d, s, io, 0)) return NULL;
  return delta_run(c, L, x, s, AT_LIN_RUN_PREFILL);
}

static at_tensor *delta_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  delta_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->base.impl, x, L->d, s, io, 1)) return NULL;
  return delta_run(c, L, x, s, AT_LIN_RUN_STEP);
}

/* Recurrent state per layer: H K x V matrices plus the last conv_size - 1
 * inputs of each short conv. */
static int64_t delta_state_elems(const void *layer) {
  const delta_layer *L = layer;
  int64_t n = L->H * L->K * L->V;
  if (L->short_conv) n += (L->conv_size - 1) * L->H * (2 * L->K + L->V);
  return n;
}

#define DELTA_IMPL(n, table, text)                                 \
  const at_mixer_impl at_mixer_##n = {                            \
    .name = #n,                                                   \
    .family = "linear",                                           \
    .summary = text,                                              \
    .opts = table,                                                \
    .n_opts = AT_ARRAY_LEN(table),                                \
    .opts_size = sizeof(at_lin_mixer_opts),                       \
    .create = n##_create,                                         \
    .init = delta_init,                                           \
    .forward = delta_forward,                                     \
    .state_elems = delta_state_elems,                             \
    .destroy = free,                                              \
    .state_new = delta_state_new,                                 \
    .prefill = delta_prefill,                                     \
    .step = delta_step,                                           \
  };

DELTA_IMPL(deltanet, deltanet_options,
           "DeltaNet: S <- S + beta k (v - S^T k)^T, o = S^T q (L2-normalised q, k; short convs)")
DELTA_IMPL(gdn, gdn_options,
           "Gated DeltaNet: S <- exp(g) S, then the delta update; scalar decay per head, swish output gate")
DELTA_IMPL(kda, kda_options,
           "Kimi Delta Attention: per-channel decay diag(exp g) (low-rank gate), delta update, "
           "sigmoid output gate")
