/* models/rwkv7.c: the RWKV-7 "Goose" time mix (Peng et al., arXiv
 * 2503.14456), as flash-linear-attention's RWKV7Attention layer
 * (fla/layers/rwkv7.py, fuse_norm as in its model config) defines it, and
 * RWKV's channel mix (models/rwkv7.h). H = n_heads, K = head_dim (value
 * heads of K too), x [B,T,d], delta = shift(x) - x (shift(x)_t = x_{t-1}):
 *
 *   x_c = x + delta ⊙ x_c      for c in r, w, k, v, a, g    (token shift with
 *                                                           learned mixing)
 *   r = x_r Wr^T,  k = x_k Wk^T,  v = x_v Wv^T
 *   w = -e^-0.5 sigmoid(LoRA_w(x_w)),  LoRA_w(x) = tanh(x D_w^T) U_w^T + b_w
 *       (per key channel; per-token decay exp(w) in (0.545, 1))
 *   v = v + (v_first - v) ⊙ sigmoid(LoRA_v(x_v))     (value residual, every
 *       rwkv7 layer but the first; v_first: the first one's v)
 *   alpha = sigmoid(LoRA_a(x_a))                     (in-context learning rate)
 *   gate  = sigmoid(x_g D_g^T) U_g^T
 *   kappa = L2Norm_head(k ⊙ k_k),   k = k ⊙ (1 + (alpha - 1) ⊙ k_a)
 *   o = dplr(q = r, k, v, a = -kappa, b = kappa ⊙ alpha, gk = w), scale 1:
 *       S_t = diag(exp w_t) S_{t-1} - (kappa_t ⊙ alpha_t)(kappa_t^T S_{t-1}) + k_t v_t^T,
 *       o_t = S_t^T r_t
 *   o = (GroupNorm_head(o) + (sum_K r ⊙ k ⊙ r_k) v) ⊙ gate    (the bonus term)
 *   y = o Wo^T   [B,T,d]
 * (LoRA_v and LoRA_a: x D^T U^T + b, no activation.) GroupNorm: per head
 * over its K channels, eps = K norm_eps, affine per channel.
 *
 * The value residual: the first rwkv7 layer of the model stores its v in
 * at_mixer_io.v_first, which the later rwkv7 layers read.
 *
 * Parameters (under layers.<i>.rwkv7.): x_r x_w x_k x_v x_a x_g [d];
 * r_proj k_proj v_proj [HK, d]; w_lora.down [Rw, d], w_lora.up [HK, Rw],
 * w_lora.bias [HK]; a_lora.* likewise (Ra); v_lora.down [Rv, d], v_lora.up
 * [HK, Rv], v_lora.bias [HK] (not in the first rwkv7 layer); g_lora.down
 * [Rg, d], g_lora.up [HK, Rg]; k_k, k_a [HK]; r_k [H, K]; g_norm.weight,
 * g_norm.bias [HK]; o_proj [d, HK]. Low ranks (options; 0: fla's rule with
 * f = K / 64): Rw = Ra = max(32, 32 round(2.5 sqrt(d) f / 32)),
 * Rv = max(32, 32 round(1.7 sqrt(d) f / 32)), Rg = max(32, 32 round(5 sqrt(d) / 32)).
 *
 * Initialisation (fla's, from RWKV-LM), layer l of L, r0 = l / (L - 1),
 * r1 = 1 - l / L, over channel n of N: x_r, x_g = 1 - (n/d)^(0.2 r1), x_w,
 * x_a = 1 - (n/d)^(0.9 r1), x_k, x_v = 1 - (n/d)^(0.7 r1); k_k = 0.71 - 0.1 lin,
 * k_a = 1.02, r_k = -0.04; w_lora.bias = -6 + 6 (n/(N-1))^(1 + r0^0.3) + 0.5
 * + 2.5 zig, a_lora.bias = -0.19 + 0.3 zig + 0.4 lin, v_lora.bias = 0.73 - 0.4 lin
 * (lin = n/(N-1) - 1/2, zig = z |z| with z = ((n mod K) - (K-1)/2) / ((K-1)/2));
 * LoRA down-projections 0, up-projections 0.1 x orthogonal; r_proj, v_proj
 * orthogonal, k_proj 0.1 x orthogonal, o_proj 0; g_norm.weight
 * ((l+1)/L)^0.7, g_norm.bias 0. Vectors (x_*, k_k, k_a, r_k, biases, the
 * norm) without weight decay.
 */
#include "models/rwkv7.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "models/linear_mixers.h"
#include "models/linpath.h"
#include "ops/attention/dplr.h"
#include "ops/ops.h"

extern const at_mixer_impl at_mixer_rwkv7;

typedef struct rwkv7_opts {
  at_mixer_common common;
  int64_t chunk_size;
  int64_t decay_low_rank_dim, a_low_rank_dim, v_low_rank_dim, gate_low_rank_dim;
} rwkv7_opts;

static const at_mixer_opt rwkv7_options[] = {
  AT_OPT_HEAD_DIM(rwkv7_opts),
  AT_OPT_I("chunk_size", rwkv7_opts, chunk_size, 1, 4096, 64, "chunk length of the chunkwise training form"),
  AT_OPT_I("decay_low_rank_dim", rwkv7_opts, decay_low_rank_dim, 0, 4096, 0,
           "rank of the decay LoRA; 0 = max(32, 32 round(2.5 sqrt(d_model) head_dim / 2048))"),
  AT_OPT_I("a_low_rank_dim", rwkv7_opts, a_low_rank_dim, 0, 4096, 0,
           "rank of the in-context learning rate LoRA; 0 = as decay_low_rank_dim"),
  AT_OPT_I("v_low_rank_dim", rwkv7_opts, v_low_rank_dim, 0, 4096, 0,
           "rank of the value-residual LoRA; 0 = max(32, 32 round(1.7 sqrt(d_model) head_dim / 2048))"),
  AT_OPT_I("gate_low_rank_dim", rwkv7_opts, gate_low_rank_dim, 0, 4096, 0,
           "rank of the output gate LoRA; 0 = max(32, 32 round(5 sqrt(d_model) / 32))"),
};

#define RWKV7_W_SCALE 0.6065306597126334 /* e^-0.5 */

typedef struct lora {
  at_tensor *down, *up, *bias;
} lora;

typedef struct rwkv7_layer {
  at_lin_layer_base base;
  int64_t d, H, K, chunk, Rw, Ra, Rv, Rg;
  int index, first; /* layer index; 1: the first rwkv7 layer (makes v_first) */
  double norm_eps;
  at_tensor *mix[6]; /* x_r x_w x_k x_v x_a x_g */
  at_tensor *wr, *wk, *wv, *wo, *k_k, *k_a, *r_k, *gn_w, *gn_b;
  lora w, a, v, g;
} rwkv7_layer;

enum { MIX_R, MIX_W, MIX_K, MIX_V, MIX_A, MIX_G };

/* fla's default rank: max(32, 32 round(x / 32)), round half to even like Python. */
static int64_t lora_rank(int64_t opt, double x) {
  if (opt > 0) return opt;
  int64_t r = 32 * (int64_t)nearbyint(x / 32);
  return r > 32 ? r : 32;
}

static at_status add_lora(at_params *p, const char *prefix, const char *name, int64_t in,
                          int64_t rank, int64_t out, int bias, lora *l) {
  char n[64];
  snprintf(n, sizeof n, "%s.down", name);
  if (!(l->down = at_layer_weight(p, prefix, n, rank, in))) return AT_E_ARG;
  snprintf(n, sizeof n, "%s.up", name);
  if (!(l->up = at_layer_weight(p, prefix, n, out, rank))) return AT_E_ARG;
  snprintf(n, sizeof n, "%s.bias", name);
  if (bias && !(l->bias = at_layer_param(p, prefix, n, AT_SHAPE(out), AT_PARAM_NO_DECAY))) return AT_E_ARG;
  return AT_OK;
}

static int first_rwkv7_layer(const at_model_cfg *cfg) {
  for (int i = 0; i < cfg->n_layers; i++)
    if (at_mixer_impl_of(cfg->layers[i]) == &at_mixer_rwkv7) return i;
  return 0; /* a layer built on its own */
}

static at_status rwkv7_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                              void **out) {
  const rwkv7_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_rwkv7, rwkv7_opts);
  rwkv7_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base.impl = &at_mixer_rwkv7;
  L->base.form = AT_LIN_CHUNK;
  L->d = cfg->d_model;
  L->H = cfg->n_heads;
  L->K = at_layer_head_dim(cfg, &at_mixer_rwkv7);
  L->chunk = o->chunk_size;
  L->index = layer_index;
  L->first = layer_index <= first_rwkv7_layer(cfg);
  L->norm_eps = cfg->norm_eps;
  if (L->H < 1 || L->K < 1 || L->chunk < 1)
    return at_error(AT_E_ARG, "rwkv7: heads %lld, head_dim %lld and chunk_size %lld must be positive",
                    (long long)L->H, (long long)L->K, (long long)L->chunk);
  double sd = sqrt((double)L->d), f = (double)L->K / 64;
  L->Rw = lora_rank(o->decay_low_rank_dim, 2.5 * sd * f);
  L->Ra = lora_rank(o->a_low_rank_dim, 2.5 * sd * f);
  L->Rv = lora_rank(o->v_low_rank_dim, 1.7 * sd * f);
  L->Rg = lora_rank(o->gate_low_rank_dim, 5 * sd);
  int64_t d = L->d, HK = L->H * L->K;
  static const char *const mix_names[6] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
  for (int i = 0; i < 6; i++)
    if (!(L->mix[i] = at_layer_param(p, prefix, mix_names[i], AT_SHAPE(d), AT_PARAM_NO_DECAY)))
      return AT_E_ARG;
  if (!(L->wr = at_layer_weight(p, prefix, "r_proj", HK, d)) ||
      !(L->wk = at_layer_weight(p, prefix, "k_proj", HK, d)) ||
      !(L->wv = at_layer_weight(p, prefix, "v_proj", HK, d)) ||
      add_lora(p, prefix, "w_lora", d, L->Rw, HK, 1, &L->w) != AT_OK ||
      add_lora(p, prefix, "a_lora", d, L->Ra, HK, 1, &L->a) != AT_OK ||
      (!L->first && add_lora(p, prefix, "v_lora", d, L->Rv, HK, 1, &L->v) != AT_OK) ||
      add_lora(p, prefix, "g_lora", d, L->Rg, HK, 0, &L->g) != AT_OK ||
      !(L->k_k = at_layer_param(p, prefix, "k_k", AT_SHAPE(HK), AT_PARAM_NO_DECAY)) ||
      !(L->k_a = at_layer_param(p, prefix, "k_a", AT_SHAPE(HK), AT_PARAM_NO_DECAY)) ||
      !(L->r_k = at_layer_param(p, prefix, "r_k", AT_SHAPE(L->H, L->K), AT_PARAM_NO_DECAY)) ||
      !(L->gn_w = at_layer_param(p, prefix, "g_norm.weight", AT_SHAPE(HK), AT_PARAM_NO_DECAY)) ||
      !(L->gn_b = at_layer_param(p, prefix, "g_norm.bias", AT_SHAPE(HK), AT_PARAM_NO_DECAY)) ||
      !(L->wo = at_layer_weight(p, prefix, "o_proj", d, HK)))
    return AT_E_ARG;
  return AT_OK;
}

/* ---- initialisation ------------------------------------------------------------- */

/* t [rows, cols] = gain x a (semi-)orthogonal matrix: a Gaussian matrix with
 * its rows (rows <= cols) or columns orthonormalised by Gram-Schmidt, the
 * distribution of torch.nn.init.orthogonal_. From the name's stream. */
static void init_orthogonal(at_tensor *t, uint64_t seed, double gain) {
  int64_t R = t->shape[0], C = t->shape[1];
  int cols = R > C; /* orthonormalise the columns */
  int64_t n = cols ? C : R, m = cols ? R : C; /* n vectors of length m */
  at_fill_normal(t->data, t->size, seed, at_stream_of(t->name), 0.0, 1.0);
  double *a = malloc((size_t)(n * m) * sizeof *a);
  AT_ASSERT(a != NULL);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < m; j++) a[i * m + j] = t->data[cols ? j * C + i : i * C + j];
  for (int64_t i = 0; i < n; i++) {
    double *ai = a + i * m;
    for (int64_t k = 0; k < i; k++) {
      const double *ak = a + k * m;
      double s = 0;
      for (int64_t j = 0; j < m; j++) s += ai[j] * ak[j];
      for (int64_t j = 0; j < m; j++) ai[j] -= s * ak[j];
    }
    double s = 0;
    for (int64_t j = 0; j < m; j++) s += ai[j] * ai[j];
    for (int64_t j = 0; j < m; j++) ai[j] /= sqrt(s);
  }
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < m; j++) t->data[cols ? j * C + i : i * C + j] = (real)(gain * a[i * m + j]);
  free(a);
}

/* 1 - (n / N)^e for the N entries of t. */
static void init_mix(at_tensor *t, double e) {
  for (int64_t n = 0; n < t->size; n++) t->data[n] = (real)(1 - pow((double)n / (double)t->size, e));
}

static double lin_of(int64_t n, int64_t N) { return N > 1 ? (double)n / (double)(N - 1) - 0.5 : 0; }

static double zig_of(int64_t n, int64_t K) {
  if (K < 2) return 0;
  double h = (double)(K - 1) / 2, z = ((double)(n % K) - h) / h;
  return z * fabs(z);
}

static void init_lora(lora *l, uint64_t seed) {
  at_layer_init_const(l->down, 0);
  int64_t out = l->up->shape[0], rank = l->up->shape[1];
  init_orthogonal(l->up, seed, 0.1 * (rank > out ? sqrt((double)rank / (double)out) : 1));
}

static void rwkv7_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  rwkv7_layer *L = layer;
  double nl = (double)cfg->n_layers, l = L->index;
  double r0 = cfg->n_layers > 1 ? l / (nl - 1) : 0, r1 = 1 - l / nl;
  static const double mix_pow[6] = {0.2, 0.9, 0.7, 0.7, 0.9, 0.2};
  for (int i = 0; i < 6; i++) init_mix(L->mix[i], mix_pow[i] * r1);
  const int64_t N = L->H * L->K;
  for (int64_t n = 0; n < N; n++) {
    double lin = lin_of(n, N), zig = zig_of(n, L->K);
    double www = -6 + 6 * pow(N > 1 ? (double)n / (double)(N - 1) : 0, 1 + pow(r0, 0.3));
    L->k_k->data[n] = (real)(0.71 - 0.1 * lin);
    L->w.bias->data[n] = (real)(www + 0.5 + 2.5 * zig);
    L->a.bias->data[n] = (real)(-0.19 + 0.3 * zig + 0.4 * lin);
    if (L->v.bias) L->v.bias->data[n] = (real)(0.73 - 0.4 * lin);
  }
  at_layer_init_const(L->k_a, 1.02);
  at_layer_init_const(L->r_k, -0.04);
  lora *loras[] = {&L->w, &L->a, &L->v, &L->g};
  for (int i = 0; i < 4; i++)
    if (loras[i]->down) init_lora(loras[i], seed);
  init_orthogonal(L->wr, seed, 1);
  init_orthogonal(L->wk, seed, 0.1);
  init_orthogonal(L->wv, seed, 1);
  at_layer_init_const(L->wo, 0);
  at_layer_init_const(L->gn_w, pow((l + 1) / nl, 0.7));
  at_layer_init_const(L->gn_b, 0);
}

/* ---- forward ------------------------------------------------------------------- */

at_tensor *at_rwkv_token_delta(at_ctx *c, at_tensor *x, at_tensor *prev) {
  if (!x) return NULL;
  int64_t B = x->shape[0], T = x->shape[1], d = x->shape[2];
  if (!prev && T == 1) return at_scale(c, x, -1.0);
  at_tensor *first = prev ? at_from(c, prev->data, AT_SHAPE(B, 1, d)) : AT_ZEROS(c, B, 1, d);
  at_tensor *shifted = first;
  if (T > 1) {
    at_tensor *parts[] = {first, at_slice(c, x, 1, 0, T - 1)};
    shifted = at_concat(c, parts, 2, 1);
  }
  at_tensor *delta = at_sub(c, shifted, x);
  if (delta && prev) /* the last token is the next call's x_{t-1} */
    for (int64_t b = 0; b < B; b++) memcpy(prev->data + b * d, x->data + (b * T + T - 1) * d, (size_t)d * sizeof(real));
  return delta;
}

/* x D^T, its activation (tanh, sigmoid or none), then U^T + bias. */
typedef enum { ACT_NONE, ACT_TANH, ACT_SIGMOID } lora_act;
static at_tensor *lora_fwd(at_ctx *c, const lora *l, at_tensor *x, lora_act act) {
  at_tensor *h = at_linear(c, x, l->down, NULL);
  if (act == ACT_TANH) h = at_tanh(c, h);
  if (act == ACT_SIGMOID) h = at_sigmoid(c, h);
  return at_linear(c, h, l->up, l->bias);
}

static at_tensor *heads(at_ctx *c, at_tensor *x, int64_t H) {
  return x ? AT_RESHAPE(c, x, x->shape[0], x->shape[1], H, x->shape[2] / H) : NULL;
}

/* The value: the first rwkv7 layer stores it in io, the others mix it in. */
static at_tensor *value_residual(at_ctx *c, const rwkv7_layer *L, at_tensor *v, at_tensor *xv,
                                 at_mixer_io *io) {
  if (!v) return NULL;
  if (L->first) {
    io->v_first = v;
    return v;
  }
  if (!io->v_first || !at_same_shape(io->v_first, v)) {
    char s[96];
    return at_fail(c, AT_E_STATE, "rwkv7 (layer %d): the value residual needs the first rwkv7 layer's v "
                   "%s in the mixer io (v_first), got %s", L->index, AT_SHAPE_STR(v, s),
                   io->v_first ? "another shape" : "none");
  }
  at_tensor *s = at_sigmoid(c, lora_fwd(c, &L->v, xv, ACT_NONE));
  return at_add(c, v, at_mul(c, at_sub(c, io->v_first, v), s));
}

/* The layer over x in one of three runs (at_lin_run); s is the decoding
 * state (NULL in training): t[0] the K x K states [B,H,K,K], t[1] the last
 * input token [B,1,d] (the token shift's x_{t-1}). */
static at_tensor *rwkv7_run(at_ctx *c, rwkv7_layer *L, at_tensor *x, at_mixer_io *io, at_mixer_state *s,
                            at_lin_run run) {
  int64_t B = x->shape[0], T = x->shape[1], H = L->H, K = L->K;
  at_tensor *delta = at_rwkv_token_delta(c, x, s ? s->t[1] : NULL), *xm[6];
  for (int i = 0; i < 6; i++) xm[i] = at_add(c, x, at_mul(c, delta, L->mix[i]));
  at_tensor *r = at_linear(c, xm[MIX_R], L->wr, NULL);
  at_tensor *w = at_scale(c, at_sigmoid(c, lora_fwd(c, &L->w, xm[MIX_W], ACT_TANH)), -RWKV7_W_SCALE);
  at_tensor *k = at_linear(c, xm[MIX_K], L->wk, NULL);
  at_tensor *v = value_residual(c, L, at_linear(c, xm[MIX_V], L->wv, NULL), xm[MIX_V], io);
  at_tensor *alpha = at_sigmoid(c, lora_fwd(c, &L->a, xm[MIX_A], ACT_NONE));
  at_tensor *gate = lora_fwd(c, &L->g, xm[MIX_G], ACT_SIGMOID);
  at_tensor *kappa = at_l2norm(c, heads(c, at_mul(c, k, L->k_k), H), 1e-6);
  /* k (1 + (alpha - 1) k_a) */
  k = at_mul(c, k, at_affine(c, at_mul(c, at_affine(c, alpha, 1, -1), L->k_a), 1, 1));
  r = heads(c, r, H), k = heads(c, k, H), v = heads(c, v, H), alpha = heads(c, alpha, H);
  at_lin_opts opts = {.scale = 1.0, .chunk_size = L->chunk, .form = L->base.form};
  at_tensor *a = at_scale(c, kappa, -1.0), *b = at_mul(c, kappa, alpha), *o;
  if (run == AT_LIN_RUN_STEP) {
    o = at_dplr_step(c, r, k, v, a, b, heads(c, w, H), s->t[0], &opts);
  } else {
    at_tensor *ht = NULL;
    o = at_dplr(c, r, k, v, a, b, heads(c, w, H), NULL, run == AT_LIN_RUN_PREFILL ? &ht : NULL, &opts);
    if (o && run == AT_LIN_RUN_PREFILL && !at_linpath_keep(s->t[0], ht, NULL, NULL)) return NULL;
  }
  /* GroupNorm per head, then the bonus (sum_K r k r_k) v and the gate */
  o = at_layernorm(c, o, NULL, NULL, (double)K * L->norm_eps);
  o = at_add(c, at_mul(c, o, AT_RESHAPE(c, L->gn_w, H, K)), AT_RESHAPE(c, L->gn_b, H, K));
  at_tensor *bonus = at_sum(c, at_mul(c, at_mul(c, r, k), L->r_k), -1, 1);
  o = at_mul(c, at_add(c, o, at_mul(c, bonus, v)), heads(c, gate, H));
  return at_linear(c, AT_RESHAPE(c, o, B, T, H * K), L->wo, NULL);
}

static at_tensor *rwkv7_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  rwkv7_layer *L = layer;
  if (!x) return NULL;
  if (x->ndim != 3 || x->shape[2] != L->d) return at_layer_bad_input(c, &at_mixer_rwkv7, x, L->d);
  return rwkv7_run(c, L, x, io, NULL, AT_LIN_RUN_TRAIN);
}

static at_status rwkv7_state_new(const void *layer, at_mixer_state *s) {
  const rwkv7_layer *L = layer;
  int ok = at_mixer_state_add(s, AT_SHAPE(s->batch, L->H, L->K, L->K)) && at_mixer_state_add(s, AT_SHAPE(s->batch, 1, L->d));
  return ok ? AT_OK : at_error_prefix(AT_E_NOMEM, "rwkv7: decoding state");
}

static at_tensor *rwkv7_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  rwkv7_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_rwkv7, x, L->d, s, io, 0)) return NULL;
  return rwkv7_run(c, L, x, io, s, AT_LIN_RUN_PREFILL);
}

static at_tensor *rwkv7_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  rwkv7_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_rwkv7, x, L->d, s, io, 1)) return NULL;
  return rwkv7_run(c, L, x, io, s, AT_LIN_RUN_STEP);
}

/* H K x K state matrices plus the previous token's x (the token shift). */
static int64_t rwkv7_state_elems(const void *layer) {
  const rwkv7_layer *L = layer;
  return L->H * L->K * L->K + L->d;
}

const at_mixer_impl at_mixer_rwkv7 = {
  .name = "rwkv7",
  .family = "linear",
  .summary = "RWKV-7 time mix: S <- S (diag(w) - kappa^T (alpha kappa)) + v k^T (dplr), token shift with "
             "learned mixing, LoRA decay / learning rate / value residual / gate, bonus term, GroupNorm",
  .opts = rwkv7_options,
  .n_opts = AT_ARRAY_LEN(rwkv7_options),
  .opts_size = sizeof(rwkv7_opts),
  .create = rwkv7_create,
  .init = rwkv7_init,
  .forward = rwkv7_forward,
  .state_elems = rwkv7_state_elems,
  .destroy = free,
  .state_new = rwkv7_state_new,
  .prefill = rwkv7_prefill,
  .step = rwkv7_step,
};

/* ---- the channel mix (models/rwkv7.h) --------------------------------------------- */

at_tensor *at_rwkv_cmix(at_ctx *c, at_tensor *x, at_tensor *x_k, at_tensor *key, at_tensor *value, at_tensor *prev) {
  at_tensor *xk = at_add(c, x, at_mul(c, at_rwkv_token_delta(c, x, prev), x_k));
  return at_linear(c, at_square(c, at_relu(c, at_linear(c, xk, key, NULL))), value, NULL);
}

void at_rwkv_cmix_init(at_tensor *x_k, at_tensor *key, at_tensor *value, int layer, int64_t n_layers,
                       uint64_t seed) {
  double r1 = 1 - (double)layer / (double)n_layers;
  init_mix(x_k, pow(r1, 4));
  init_orthogonal(key, seed, 1);
  at_layer_init_const(value, 0);
}
