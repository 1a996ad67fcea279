/* models/retnet.c: multi-scale retention (Sun et al., "Retentive Network",
 * arXiv 2307.08621 §2), with the semantics of flash-linear-attention's
 * MultiScaleRetention layer. H = n_heads, K = head_dim, V = expand_v K,
 * x [B,T,d]:
 *
 *   q = RoPE(x Wq^T)  k = RoPE(x Wk^T)  [B,T,H,K]   (position rope: fla's
 *   v = x Wv^T                          [B,T,H,V]    rotary embedding; the
 *                                                    paper's xPos is not here)
 *   o = retention(q, k, v)   S_t = gamma_h S_{t-1} + k_t v_t^T, o_t = S_t^T q_t K^-1/2,
 *       gamma_h = 1 - 2^(-5-h)  (ops/attention/linear_attn.h; chunk form, or
 *       the parallel form ((Q K^T) ⊙ D) V with mode parallel)
 *   o = GroupNorm_head(o): per head (o - mean) / sqrt(var + eps), then a
 *       weight and bias per channel [H*V] (the paper's GroupNorm with H
 *       groups; norm groupnorm), or RMSNorm_head(o) with a weight [V] shared
 *       by the heads (fla's fused norm; norm rmsnorm)
 *   o = o ⊙ swish(x Wg^T)                (output_gate swish; none: no gate)
 *   y = o Wo^T   [B,T,d]
 *
 * Parameters (under layers.<i>.retnet.): q_proj k_proj [H*K, d], v_proj
 * g_proj [H*V, d], g_norm [V] (rmsnorm) or g_norm.weight g_norm.bias
 * [H*V] (groupnorm), o_proj [d, H*V]. Initialisation N(0, init_std), o_proj
 * as the other mixers' output projections, norm weight 1 and bias 0 (no
 * weight decay).
 */
#include <stdlib.h>

#include "models/linpath.h"
#include "ops/ops.h"

extern const at_mixer_impl at_mixer_retnet;

enum { MODE_CHUNK, MODE_PARALLEL };
enum { NORM_GROUP, NORM_RMS };
enum { GATE_SWISH, GATE_NONE };
static const char *const mode_names[] = {"chunk", "parallel", NULL};
static const char *const norm_names[] = {"groupnorm", "rmsnorm", NULL};
static const char *const gate_names[] = {"swish", "none", NULL};

typedef struct retnet_opts {
  at_mixer_common common;
  int64_t chunk_size, expand_v;
  int mode, norm, output_gate;
} retnet_opts;

static const at_mixer_opt retnet_options[] = {
  AT_OPT_E("position", retnet_opts, common.position, at_mixer_position_names, at_mixer_position_vals, AT_POS_ROPE,
           "rope (fla's rotary embedding on q, k), nope, or inherit model.position"),
  AT_OPT_HEAD_DIM(retnet_opts),
  AT_OPT_I("chunk_size", retnet_opts, chunk_size, 1, 4096, 64, "chunk length of the chunkwise training form"),
  AT_OPT_I("expand_v", retnet_opts, expand_v, 1, 16, 2, "value head dim = expand_v head_dim (fla's expand_v)"),
  AT_OPT_E("mode", retnet_opts, mode, mode_names, NULL, MODE_CHUNK,
           "training form: chunk (linear in T) or parallel (the masked decay matrix, T x T)"),
  AT_OPT_E("norm", retnet_opts, norm, norm_names, NULL, NORM_GROUP,
           "per-head output norm: groupnorm (the paper's) or rmsnorm (fla's)"),
  AT_OPT_E("output_gate", retnet_opts, output_gate, gate_names, NULL, GATE_SWISH, "swish(x Wg^T) gate or none"),
};

static at_status retnet_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  const retnet_opts *o = opts;
  int rope = o->common.position == AT_POS_ROPE || (o->common.position == AT_POS_INHERIT && cfg->position == AT_POS_ROPE);
  if (rope && o->common.head_dim % 2) {
    *bad = "head_dim";
    return at_error(AT_E_CONFIG, "RoPE needs an even head_dim, got %lld", (long long)o->common.head_dim);
  }
  return AT_OK;
}

typedef struct retnet_layer {
  at_lin_layer_base base;
  int64_t d, H, K, V, chunk;
  int mode, norm, gate;
  at_position position;
  double norm_eps, rope_theta;
  at_tensor *wq, *wk, *wv, *wg, *nw, *nb, *wo;
} retnet_layer;

static at_status retnet_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                               void **out) {
  (void)layer_index;
  const retnet_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_retnet, retnet_opts);
  retnet_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base = (at_lin_layer_base){&at_mixer_retnet, AT_LIN_CHUNK};
  L->d = cfg->d_model, L->H = cfg->n_heads, L->K = at_layer_head_dim(cfg, &at_mixer_retnet);
  L->V = o->expand_v * L->K, L->chunk = o->chunk_size;
  L->mode = o->mode, L->norm = o->norm, L->gate = o->output_gate;
  L->position = at_layer_position(cfg, &at_mixer_retnet);
  L->norm_eps = cfg->norm_eps, L->rope_theta = cfg->rope_theta;
  if (L->H < 1 || L->K < 1 || L->V < 1 || L->chunk < 1)
    return at_error(AT_E_ARG, "retnet: heads %lld, head_dim %lld, value dim %lld, chunk_size %lld must be positive",
                    (long long)L->H, (long long)L->K, (long long)L->V, (long long)L->chunk);
  if (L->position == AT_POS_ROPE && L->K % 2) return at_error(AT_E_ARG, "retnet: RoPE needs an even head dim");
  int64_t HK = L->H * L->K, HV = L->H * L->V;
  if (!(L->wq = at_layer_weight(p, prefix, "q_proj", HK, L->d)) ||
      !(L->wk = at_layer_weight(p, prefix, "k_proj", HK, L->d)) ||
      !(L->wv = at_layer_weight(p, prefix, "v_proj", HV, L->d)) ||
      (L->gate == GATE_SWISH && !(L->wg = at_layer_weight(p, prefix, "g_proj", HV, L->d))))
    return AT_E_ARG;
  if (L->norm == NORM_RMS && !(L->nw = at_layer_param(p, prefix, "g_norm", AT_SHAPE(L->V), AT_PARAM_NO_DECAY)))
    return AT_E_ARG;
  if (L->norm == NORM_GROUP &&
      (!(L->nw = at_layer_param(p, prefix, "g_norm.weight", AT_SHAPE(L->H, L->V), AT_PARAM_NO_DECAY)) ||
       !(L->nb = at_layer_param(p, prefix, "g_norm.bias", AT_SHAPE(L->H, L->V), AT_PARAM_NO_DECAY))))
    return AT_E_ARG;
  if (!(L->wo = at_layer_weight(p, prefix, "o_proj", L->d, HV))) return AT_E_ARG;
  return AT_OK;
}

static void retnet_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  retnet_layer *L = layer;
  at_tensor *normal[] = {L->wq, L->wk, L->wv, L->wg};
  for (int i = 0; i < AT_ARRAY_LEN(normal); i++)
    if (normal[i]) at_layer_init_normal(normal[i], seed, cfg->init_std);
  at_layer_init_const(L->nw, 1);
  if (L->nb) at_layer_init_const(L->nb, 0);
  at_layer_init_out(L->wo, cfg, seed);
}

/* The layer over x at positions io->pos0 .. in one of three runs
 * (at_lin_run); s is the decoding state (NULL in training): t[0] the
 * states [B,H,K,V]. */
static at_tensor *retnet_run(at_ctx *c, retnet_layer *L, at_tensor *x, at_mixer_io *io, at_mixer_state *s,
                             at_lin_run run) {
  int64_t B = x->shape[0], T = x->shape[1], H = L->H, K = L->K, V = L->V;
  at_tensor *q = AT_RESHAPE(c, at_linear(c, x, L->wq, NULL), B, T, H, K);
  at_tensor *k = AT_RESHAPE(c, at_linear(c, x, L->wk, NULL), B, T, H, K);
  at_tensor *v = AT_RESHAPE(c, at_linear(c, x, L->wv, NULL), B, T, H, V);
  if (L->position == AT_POS_ROPE) {
    q = at_rope(c, q, K, L->rope_theta, io->pos0);
    k = at_rope(c, k, K, L->rope_theta, io->pos0);
  }
  at_la_opts o = {0, L->chunk, at_linpath_form(&L->base, L->mode == MODE_PARALLEL ? AT_LA_PARALLEL : AT_LA_CHUNK), 0, 0};
  at_tensor *y;
  if (run == AT_LIN_RUN_STEP) {
    y = at_retention_step(c, q, k, v, s->t[0], &o);
  } else {
    at_tensor *ht = NULL;
    y = at_retention(c, q, k, v, NULL, run == AT_LIN_RUN_PREFILL ? &ht : NULL, &o);
    if (y && run == AT_LIN_RUN_PREFILL && !at_linpath_keep(s->t[0], ht, NULL, NULL)) return NULL;
  }
  if (L->norm == NORM_RMS) y = at_rmsnorm(c, y, L->nw, L->norm_eps);
  else y = at_add(c, at_mul(c, at_layernorm(c, y, NULL, NULL, L->norm_eps), L->nw), L->nb);
  if (L->wg) y = at_silu_mul(c, AT_RESHAPE(c, at_linear(c, x, L->wg, NULL), B, T, H, V), y);
  return at_linear(c, AT_RESHAPE(c, y, B, T, H * V), L->wo, NULL);
}

static at_tensor *retnet_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  retnet_layer *L = layer;
  if (!x) return NULL;
  if (x->ndim != 3 || x->shape[2] != L->d) return at_layer_bad_input(c, L->base.impl, x, L->d);
  return retnet_run(c, L, x, io, NULL, AT_LIN_RUN_TRAIN);
}

static at_status retnet_state_new(const void *layer, at_mixer_state *s) {
  const retnet_layer *L = layer;
  return at_mixer_state_add(s, AT_SHAPE(s->batch, L->H, L->K, L->V)) ? AT_OK
                                                                       : at_error_prefix(AT_E_NOMEM, "retnet: decoding state");
}

static at_tensor *retnet_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  retnet_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->base.impl, x, L->d, s, io, 0)) return NULL;
  return retnet_run(c, L, x, io, s, AT_LIN_RUN_PREFILL);
}

static at_tensor *retnet_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  retnet_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->base.impl, x, L->d, s, io, 1)) return NULL;
  return retnet_run(c, L, x, io, s, AT_LIN_RUN_STEP);
}

/* H states K x V. */
static int64_t retnet_state_elems(const void *layer) {
  const retnet_layer *L = layer;
  return L->H * L->K * L->V;
}

const at_mixer_impl at_mixer_retnet = {
  .name = "retnet",
  .family = "linear",
  .summary = "RetNet multi-scale retention (Sun et al. 2023): S <- gamma_h S + k v^T, gamma_h = 1 - 2^(-5-h), "
             "RoPE on q, k, per-head GroupNorm, swish gate",
  .opts = retnet_options,
  .n_opts = AT_ARRAY_LEN(retnet_options),
  .opts_size = sizeof(retnet_opts),
  .check = retnet_check,
  .create = retnet_create,
  .init = retnet_init,
  .forward = retnet_forward,
  .state_elems = retnet_state_elems,
  .destroy = free,
  .state_new = retnet_state_new,
  .prefill = retnet_prefill,
  .step = retnet_step,
};
