/* models/linear_attn.c: linear attention (Katharopoulos et al., "Transformers
 * are RNNs", arXiv 2006.16236), with the semantics of flash-linear-
 * attention's LinearAttention layer. H = n_heads, K = head_dim, x [B,T,d]:
 *
 *   q = phi(x Wq^T)   k = phi(x Wk^T)   [B,T,H,K]      phi: elu + 1 (the paper),
 *   v = x Wv^T                          [B,T,H,K]           relu or identity
 *   o = linear_attn(q, k, v; normalize)  (ops/attention/linear_attn.h, chunk form,
 *       o_t = S_t^T q_t / (q_t . z_t), S_t = sum_{s<=t} k_s v_s^T, z_t = sum k_s;
 *       normalize off: o_t = S_t^T q_t K^-1/2, fla's scale)
 *   o = RMSNorm_head(o) (weight [K] shared by the heads)   (output_norm rmsnorm)
 *   y = o Wo^T   [B,T,d]
 *
 * Defaults are the paper's (elu + 1 with the normaliser, no output norm);
 * flash-linear-attention's layer defaults to normalize off and an RMSNorm
 * (its `do_feature_map_norm`, `output_norm`). The normaliser's eps is fla's
 * 1e-10 (the paper's code uses 1e-6; with elu + 1 features q . z >= ~t e^-|x|).
 *
 * Parameters (under layers.<i>.linear_attn.): q_proj k_proj v_proj [H*K, d],
 * norm [K] (output_norm rmsnorm), o_proj [d, H*K]. Initialisation
 * N(0, init_std), o_proj as the other mixers' output projections, norm 1
 * (no weight decay).
 */
#include <stdlib.h>

#include "models/linpath.h"
#include "ops/ops.h"

extern const at_mixer_impl at_mixer_linear_attn;

enum { FM_ELU, FM_RELU, FM_IDENTITY };
enum { ON_NONE, ON_RMSNORM };
static const char *const fm_names[] = {"elu", "relu", "identity", NULL};
static const char *const on_names[] = {"none", "rmsnorm", NULL};

typedef struct linattn_opts {
  at_mixer_common common;
  int64_t chunk_size;
  int feature_map, normalize, output_norm;
} linattn_opts;

static const at_mixer_opt linattn_options[] = {
  AT_OPT_HEAD_DIM(linattn_opts),
  AT_OPT_I("chunk_size", linattn_opts, chunk_size, 1, 4096, 64, "chunk length of the chunkwise training form"),
  AT_OPT_E("feature_map", linattn_opts, feature_map, fm_names, NULL, FM_ELU,
           "phi on q and k: elu (elu(x) + 1, the paper's), relu, identity"),
  AT_OPT_B("normalize", linattn_opts, normalize, 1, "divide by phi(q) . sum phi(k) (fla's normalize)"),
  AT_OPT_E("output_norm", linattn_opts, output_norm, on_names, NULL, ON_NONE,
           "per-head RMSNorm on the output (fla's default) or none (the paper's)"),
};

typedef struct linattn_layer {
  at_lin_layer_base base;
  int64_t d, H, K, chunk;
  int fm, normalize, out_norm;
  double norm_eps;
  at_tensor *wq, *wk, *wv, *norm, *wo;
} linattn_layer;

static at_status linattn_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                                void **out) {
  (void)layer_index;
  const linattn_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_linear_attn, linattn_opts);
  linattn_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base = (at_lin_layer_base){&at_mixer_linear_attn, AT_LIN_CHUNK};
  L->d = cfg->d_model, L->H = cfg->n_heads, L->K = at_layer_head_dim(cfg, &at_mixer_linear_attn);
  L->chunk = o->chunk_size, L->fm = o->feature_map, L->normalize = o->normalize, L->out_norm = o->output_norm;
  L->norm_eps = cfg->norm_eps;
  if (L->H < 1 || L->K < 1 || L->chunk < 1)
    return at_error(AT_E_ARG, "linear_attn: heads %lld, head_dim %lld and chunk_size %lld must be positive",
                    (long long)L->H, (long long)L->K, (long long)L->chunk);
  int64_t HK = L->H * L->K;
  if (!(L->wq = at_layer_weight(p, prefix, "q_proj", HK, L->d)) ||
      !(L->wk = at_layer_weight(p, prefix, "k_proj", HK, L->d)) ||
      !(L->wv = at_layer_weight(p, prefix, "v_proj", HK, L->d)) ||
      (L->out_norm == ON_RMSNORM && !(L->norm = at_layer_param(p, prefix, "norm", AT_SHAPE(L->K), AT_PARAM_NO_DECAY))) ||
      !(L->wo = at_layer_weight(p, prefix, "o_proj", L->d, HK)))
    return AT_E_ARG;
  return AT_OK;
}

static void linattn_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  linattn_layer *L = layer;
  at_layer_init_normal(L->wq, seed, cfg->init_std);
  at_layer_init_normal(L->wk, seed, cfg->init_std);
  at_layer_init_normal(L->wv, seed, cfg->init_std);
  if (L->norm) at_layer_init_const(L->norm, 1);
  at_layer_init_out(L->wo, cfg, seed);
}

static at_tensor *feature_map(at_ctx *c, int fm, at_tensor *x) {
  if (fm == FM_ELU) return at_affine(c, at_elu(c, x, 1.0), 1.0, 1.0);
  if (fm == FM_RELU) return at_relu(c, x);
  return x;
}

/* The layer over x in one of three runs (at_lin_run); s is the decoding
 * state (NULL in training): t[0] the states [B,H,K,K], t[1] the
 * normalisers [B,H,K] (normalize only). */
static at_tensor *linattn_run(at_ctx *c, linattn_layer *L, at_tensor *x, at_mixer_state *s, at_lin_run run) {
  int64_t B = x->shape[0], T = x->shape[1], H = L->H, K = L->K;
  at_tensor *q = feature_map(c, L->fm, AT_RESHAPE(c, at_linear(c, x, L->wq, NULL), B, T, H, K));
  at_tensor *k = feature_map(c, L->fm, AT_RESHAPE(c, at_linear(c, x, L->wk, NULL), B, T, H, K));
  at_tensor *v = AT_RESHAPE(c, at_linear(c, x, L->wv, NULL), B, T, H, K);
  at_la_opts o = {0, L->chunk, at_linpath_form(&L->base, AT_LA_CHUNK), L->normalize, 0};
  at_tensor *S = s ? s->t[0] : NULL, *z = s && L->normalize ? s->t[1] : NULL, *y;
  if (run == AT_LIN_RUN_STEP) {
    y = at_la_step(c, AT_LA_DECAY_NONE, q, k, v, NULL, S, z, &o);
  } else {
    at_tensor *ht = NULL, *zt = NULL;
    int pre = run == AT_LIN_RUN_PREFILL;
    y = at_linear_attn(c, q, k, v, NULL, NULL, pre ? &ht : NULL, pre && z ? &zt : NULL, &o);
    if (y && pre && !at_linpath_keep(S, ht, z, zt)) return NULL;
  }
  if (L->norm) y = at_rmsnorm(c, y, L->norm, L->norm_eps);
  return at_linear(c, AT_RESHAPE(c, y, B, T, H * K), L->wo, NULL);
}

static at_tensor *linattn_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  (void)io;
  linattn_layer *L = layer;
  if (!x) return NULL;
  if (x->ndim != 3 || x->shape[2] != L->d) return at_layer_bad_input(c, L->base.impl, x, L->d);
  return linattn_run(c, L, x, NULL, AT_LIN_RUN_TRAIN);
}

static at_status linattn_state_new(const void *layer, at_mixer_state *s) {
  const linattn_layer *L = layer;
  int ok = at_mixer_state_add(s, AT_SHAPE(s->batch, L->H, L->K, L->K)) &&
           (!L->normalize || at_mixer_state_add(s, AT_SHAPE(s->batch, L->H, L->K)));
  return ok ? AT_OK : at_error_prefix(AT_E_NOMEM, "linear_attn: decoding state");
}

static at_tensor *linattn_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  linattn_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->base.impl, x, L->d, s, io, 0)) return NULL;
  return linattn_run(c, L, x, s, AT_LIN_RUN_PREFILL);
}

static at_tensor *linattn_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  linattn_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->base.impl, x, L->d, s, io, 1)) return NULL;
  return linattn_run(c, L, x, s, AT_LIN_RUN_STEP);
}

/* H states K x K, and the normalisers H x K. */
static int64_t linattn_state_elems(const void *layer) {
  const linattn_layer *L = layer;
  return L->H * L->K * L->K + (L->normalize ? L->H * L->K : 0);
}

const at_mixer_impl at_mixer_linear_attn = {
  .name = "linear_attn",
  .family = "linear",
  .summary = "linear attention (Katharopoulos et al. 2020): o_t = phi(q_t)^T S_t / phi(q_t)^T z_t, "
             "S_t = sum phi(k_s) v_s^T, z_t = sum phi(k_s), phi = elu + 1",
  .opts = linattn_options,
  .n_opts = AT_ARRAY_LEN(linattn_options),
  .opts_size = sizeof(linattn_opts),
  .create = linattn_create,
  .init = linattn_init,
  .forward = linattn_forward,
  .state_elems = linattn_state_elems,
  .destroy = free,
  .state_new = linattn_state_new,
  .prefill = linattn_prefill,
  .step = linattn_step,
};
