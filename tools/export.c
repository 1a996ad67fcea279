/* tools/export.c: ./export CHECKPOINT OUT_DIR
 *
 * Writes the model of a checkpoint in flash-linear-attention's conventions
 * (fla/models/<type>/configuration_*.py and modeling_*.py; layers of
 * fla/layers/):
 *
 *   OUT_DIR/model.safetensors         the weights under fla's names
 *                                     (model.layers.0.attn.q_proj.weight, ...):
 *                                     an 8-byte little-endian header length, a JSON
 *                                     header {name: {dtype, shape, data_offsets}},
 *                                     then the raw little-endian float32 tensors
 *   OUT_DIR/config.json               the fla configuration (model_type, sizes,
 *                                     options; "attn" for hybrid softmax layers)
 *   OUT_DIR/attnlab_check.safetensors input_ids [2, T] (int64) and attnlab's logits
 *                                     [2, T, V] (float32) for them, so a PyTorch model
 *                                     built from the export can be checked against
 *                                     attnlab (tests/ref/check_export.py)
 *
 * Mapped model types: transformer (full), delta_net (deltanet), gated_deltanet
 * (gdn), kda, mamba2, mamba (Mamba-1), linear_attn, retnet, mla, gla, rwkv7
 * (with RWKV's channel mix as fla's RWKV7FeedForward), and hybrids of
 * delta_net, gated_deltanet, kda, linear_attn, retnet or gla with full
 * layers (fla's "attn" layers). Everything else is refused with the reason:
 * a mixer fla has no model for (performer, dsa, s4d, the fixed sparse patterns,
 * ...) or whose fla model differs (nsa: fla compresses by mean pooling), an option fla's
 * layer does not have (KDA without its sigmoid output gate, GDN's bounded
 * gate, a NoPE softmax layer: fla's Attention always applies RoPE; GLA's
 * sigmoid output gate: fla's GLA model takes the gate's activation from
 * hidden_act, its MLP's too; a GLA gate rank or normaliser other than 16:
 * GLABlock leaves the layer's defaults; RWKV-7 with n_heads head_dim !=
 * d_model, ...), learned positions (no fla model has them), a block fla's
 * model does not build (an MLP or softmax layers in Mamba-1/2, SwiGLU in
 * RWKV-7, RWKV's channel mix anywhere else, softmax layers in RWKV-7: its
 * block takes v_first from every attention layer). attnlab models without
 * an MLP (mlp: none) are written with fla's GatedMLP (RWKV-7: its channel
 * mix) at intermediate_size 8 and all its weights zero, which adds exactly 0
 * to the residual stream.
 *
 * RWKV-7 is written at twice the width: fla's RWKV-7 blocks normalise with
 * LayerNorm, attnlab's with RMSNorm, and the export keeps the stream [h, -h]
 * (zero mean, so LayerNorm without bias is RMSNorm); see "rwkv7: the mirrored
 * stream" below.
 *
 * Exit status: 0, 2 for bad usage, an unusable checkpoint or a refused model. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "experiments/restore.h"
#include "models/linear_mixers.h"
#include "models/mla.h"

_Static_assert(sizeof(real) == sizeof(float), "the exporter writes the float build's parameters");

#define ZERO_MLP 8 /* intermediate_size of the all-zero GatedMLP of a model without MLP */

/* ---- tensors to write ------------------------------------------------------------ */

typedef struct entry {
  char name[160];
  int ndim;
  int64_t shape[4];
  int64_t n;
  float *data;  /* F32 */
  int64_t *ids; /* I64 instead */
} entry;

typedef struct out {
  entry *e;
  int n, cap;
  at_model *m;
  char why[600]; /* a refusal */
  int failed;
} out;

static int refuse(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(out *o, const char *fmt, ...) {
  if (o->why[0]) return 0;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(o->why, sizeof o->why, fmt, ap);
  va_end(ap);
  return 0;
}

/* A new zeroed float tensor `name` of the given shape; NULL on failure. */
static float *add(out *o, const char *name, int ndim, const int64_t *shape) {
  if (o->n == o->cap) {
    int cap = o->cap ? 2 * o->cap : 64;
    entry *ne = realloc(o->e, (size_t)cap * sizeof *ne);
    if (!ne) return o->failed = 1, NULL;
    o->e = ne, o->cap = cap;
  }
  entry *e = &o->e[o->n];
  memset(e, 0, sizeof *e);
  snprintf(e->name, sizeof e->name, "%s", name);
  e->ndim = ndim, e->n = 1;
  for (int i = 0; i < ndim; i++) e->shape[i] = shape[i], e->n *= shape[i];
  if (!(e->data = calloc((size_t)AT_MAX(e->n, 1), sizeof(float)))) return o->failed = 1, NULL;
  o->n++;
  return e->data;
}

/* The attnlab parameter `fmt...`, which the mapping expects to exist. */
static const at_tensor *param(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const at_tensor *param(out *o, const char *fmt, ...) {
  char name[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  at_param *p = at_params_find(o->m->params, name);
  if (!p) {
    refuse(o, "internal: parameter %s is missing", name);
    o->failed = 1;
    return NULL;
  }
  return p->t;
}

/* Copies t under `name` with its own shape, or reshaped to ndim / shape. */
static void copy_as(out *o, const char *name, const at_tensor *t, int ndim, const int64_t *shape) {
  if (!t) return;
  float *d = add(o, name, ndim ? ndim : t->ndim, ndim ? shape : t->shape);
  if (d)
    for (int64_t i = 0; i < t->size; i++) d[i] = (float)t->data[i];
}
static void copy(out *o, const char *name, const at_tensor *t) { copy_as(o, name, t, 0, NULL); }

/* The rows of several [r_i, c] tensors stacked into one [sum r_i, c]. */
static void stack_rows(out *o, const char *name, const at_tensor *const *ts, int n) {
  int64_t rows = 0, cols = ts[0] ? ts[0]->shape[1] : 0;
  for (int i = 0; i < n; i++) {
    if (!ts[i]) return;
    rows += ts[i]->shape[0];
  }
  float *d = add(o, name, AT_SHAPE(rows, cols));
  for (int i = 0, r = 0; d && i < n; r += (int)ts[i]->shape[0], i++)
    for (int64_t j = 0; j < ts[i]->size; j++) d[r * cols + j] = (float)ts[i]->data[j];
}

/* A depthwise conv weight [C, K] as fla's ShortConvolution / nn.Conv1d [C, 1, K]. */
static void conv_weight(out *o, const char *name, const at_tensor *w) {
  if (w) copy_as(o, name, w, 3, (int64_t[]){w->shape[0], 1, w->shape[1]});
}

static void name_of(char *buf, size_t n, const char *prefix, const char *leaf) { snprintf(buf, n, "%s%s", prefix, leaf); }
#define NAME(leaf) (name_of(nm, sizeof nm, pre, (leaf)), nm)

/* ---- config.json ---------------------------------------------------------------- */

typedef struct json {
  char buf[8192];
  size_t n;
} json;

static void jkey(json *j, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void jkey(json *j, const char *key, const char *fmt, ...) {
  if (j->n >= sizeof j->buf) return;
  j->n += (size_t)snprintf(j->buf + j->n, sizeof j->buf - j->n, "%s\n  \"%s\": ", j->n > 1 ? "," : "", key);
  va_list ap;
  va_start(ap, fmt);
  if (j->n < sizeof j->buf) j->n += (size_t)vsnprintf(j->buf + j->n, sizeof j->buf - j->n, fmt, ap);
  va_end(ap);
}
#define JB(b) ((b) ? "true" : "false")

/* ---- the mixers --------------------------------------------------------------------- */

typedef struct ctx {
  out *o;
  json *j;
  const at_model_cfg *cfg;
  int layer;
  const char *pre;   /* "model.layers.<i>.attn." */
  const char *ours;  /* "layers.<i>.<mixer>." */
} ctx;

static const void *opts_of(const at_model_cfg *cfg, const char *mixer) {
  return cfg->mixer[at_mixer_from_name(mixer)].bytes;
}

/* fla's Attention (transformer layers and hybrids' attn layers). */
static int softmax_ok(ctx *x) {
  const at_model_cfg *cfg = x->cfg;
  const at_mixer_impl *impl = at_mixer_impl_of(at_mixer_from_name("full"));
  if (at_layer_position(cfg, impl) != AT_POS_ROPE)
    return refuse(x->o, "layer %d (full) has no RoPE: flash-linear-attention's Attention always applies it", x->layer);
  if (at_layer_head_dim(cfg, impl) * cfg->n_heads != cfg->d_model)
    return refuse(x->o, "layer %d (full): head_dim %lld x n_heads is not d_model, which fla's Attention requires", x->layer,
                  (long long)at_layer_head_dim(cfg, impl));
  return 1;
}

static void softmax_weights(ctx *x) {
  char nm[200];
  const char *pre = x->pre;
  copy(x->o, NAME("q_proj.weight"), param(x->o, "%swq", x->ours));
  copy(x->o, NAME("k_proj.weight"), param(x->o, "%swk", x->ours));
  copy(x->o, NAME("v_proj.weight"), param(x->o, "%swv", x->ours));
  copy(x->o, NAME("o_proj.weight"), param(x->o, "%swo", x->ours));
}

static int64_t window_of(const at_model_cfg *cfg) {
  return (int64_t)at_mixer_opt_get(cfg, at_mixer_from_name("full"), "window");
}

static void transformer_config(ctx *x) {
  int64_t w = window_of(x->cfg);
  jkey(x->j, "num_heads", "%lld", (long long)x->cfg->n_heads);
  jkey(x->j, "num_kv_heads", "%lld", (long long)x->cfg->n_kv_heads);
  jkey(x->j, "qkv_bias", "false");
  jkey(x->j, "qk_norm", "false");
  if (w > 0) jkey(x->j, "window_size", "%lld", (long long)w);
  else jkey(x->j, "window_size", "null");
  jkey(x->j, "rope_theta", "%.17g", x->cfg->rope_theta);
}

/* deltanet / gdn / kda: their shared options. */
static const at_lin_mixer_opts *lin(const at_model_cfg *cfg, const char *mixer) { return opts_of(cfg, mixer); }

static void conv_weights(ctx *x, const at_lin_mixer_opts *lo) {
  if (!lo->short_conv) return;
  char nm[200];
  const char *pre = x->pre;
  conv_weight(x->o, NAME("q_conv1d.weight"), param(x->o, "%sq_conv", x->ours));
  conv_weight(x->o, NAME("k_conv1d.weight"), param(x->o, "%sk_conv", x->ours));
  conv_weight(x->o, NAME("v_conv1d.weight"), param(x->o, "%sv_conv", x->ours));
}

static int delta_family(ctx *x, const char *mixer, int first) {
  const at_model_cfg *cfg = x->cfg;
  const at_lin_mixer_opts *lo = lin(cfg, mixer);
  const at_mixer_impl *impl = at_mixer_impl_of(at_mixer_from_name(mixer));
  int kda = !strcmp(mixer, "kda"), gdn = !strcmp(mixer, "gdn");
  int64_t H = cfg->n_heads, K = at_layer_head_dim(cfg, impl), V = kda || gdn ? lo->expand_v * K : K;
  if (kda && lo->output_gate != AT_GATE_SIGMOID)
    return refuse(x->o, "kda with output_gate %s: fla's KDA layer always has its sigmoid gate",
                  lo->output_gate == AT_GATE_SWISH ? "swish" : "none");
  if (!kda && lo->output_gate == AT_GATE_SIGMOID)
    return refuse(x->o, "%s with the low-rank sigmoid output gate: fla's layer gates with swish or not at all", mixer);
  if (gdn && lo->decay_gate == AT_DECAY_BOUNDED)
    return refuse(x->o, "gdn with the bounded decay gate: fla's GatedDeltaNet has no lower bound");
  char nm[200];
  const char *pre = x->pre, *ours = x->ours;
  out *o = x->o;
  copy(o, NAME("q_proj.weight"), param(o, "%sq_proj", ours));
  copy(o, NAME("k_proj.weight"), param(o, "%sk_proj", ours));
  copy(o, NAME("v_proj.weight"), param(o, "%sv_proj", ours));
  copy(o, NAME("b_proj.weight"), param(o, "%sb_proj", ours));
  conv_weights(x, lo);
  if (kda) {
    copy(o, NAME("f_proj.0.weight"), param(o, "%sf_proj.down", ours));
    copy(o, NAME("f_proj.1.weight"), param(o, "%sf_proj.up", ours));
    copy(o, NAME("g_proj.0.weight"), param(o, "%sg_proj.down", ours));
    copy(o, NAME("g_proj.1.weight"), param(o, "%sg_proj.up", ours));
    copy(o, NAME("g_proj.1.bias"), param(o, "%sg_proj.bias", ours));
  } else if (lo->output_gate == AT_GATE_SWISH) {
    copy(o, NAME("g_proj.weight"), param(o, "%sg_proj", ours));
  }
  if (gdn) copy(o, NAME("a_proj.weight"), param(o, "%sa_proj", ours));
  if (kda || gdn) {
    copy(o, NAME("A_log"), param(o, "%sA_log", ours));
    copy(o, NAME("dt_bias"), param(o, "%sdt_bias", ours));
  }
  copy(o, NAME("o_norm.weight"), param(o, "%so_norm", ours));
  copy(o, NAME("o_proj.weight"), param(o, "%so_proj", ours));
  if (!first) return 1;
  jkey(x->j, "num_heads", "%lld", (long long)H);
  jkey(x->j, "use_short_conv", "%s", JB(lo->short_conv));
  jkey(x->j, "conv_size", "%lld", (long long)lo->conv_size);
  jkey(x->j, "allow_neg_eigval", "%s", JB(lo->allow_neg_eigval));
  if (kda || gdn) {
    jkey(x->j, "head_dim", "%lld", (long long)K);
    jkey(x->j, "expand_v", "%lld", (long long)lo->expand_v);
  } else { /* delta_net sizes by expansion of hidden_size */
    jkey(x->j, "expand_k", "%.17g", (double)(H * K) / (double)cfg->d_model);
    jkey(x->j, "expand_v", "%.17g", (double)(H * V) / (double)cfg->d_model);
    jkey(x->j, "use_beta", "true");
    jkey(x->j, "use_output_norm", "true");
    jkey(x->j, "qk_norm", "\"l2\"");
    jkey(x->j, "qk_activation", "\"silu\"");
  }
  if (!kda) jkey(x->j, "use_gate", "%s", JB(lo->output_gate == AT_GATE_SWISH));
  if (kda && lo->decay_gate == AT_DECAY_BOUNDED) jkey(x->j, "lower_bound", "%.17g", lo->lower_bound);
  if (kda && lo->decay_gate != AT_DECAY_BOUNDED) jkey(x->j, "lower_bound", "null");
  return 1;
}

static int mamba2(ctx *x, int first) {
  const at_model_cfg *cfg = x->cfg;
  const at_lin_mixer_opts *lo = lin(cfg, "mamba2");
  if (lo->output_gate != AT_GATE_SWISH)
    return refuse(x->o, "mamba2 with output_gate %s: fla's Mamba-2 gates its RMSNorm with silu(z)",
                  lo->output_gate == AT_GATE_SIGMOID ? "sigmoid" : "none");
  int64_t I = lo->expand * cfg->d_model, N = lo->d_state, P = at_layer_head_dim(cfg, at_mixer_impl_of(at_mixer_from_name("mamba2")));
  int64_t H = I / P, cs = lo->conv_size;
  char nm[200];
  const char *pre = x->pre, *ours = x->ours;
  out *o = x->o;
  /* in_proj = [z | x, B, C | dt] (fla's split: gate, xBC, dt) */
  const at_tensor *rows[5] = {param(o, "%sz_proj", ours), param(o, "%sx_proj", ours), param(o, "%sB_proj", ours),
                              param(o, "%sC_proj", ours), param(o, "%sdt_proj", ours)};
  stack_rows(o, NAME("in_proj.weight"), rows, 5);
  /* one depthwise conv over [x, B, C]; without short convs the identity kernel */
  float *cw = add(o, NAME("conv1d.weight"), AT_SHAPE(I + 2 * N, 1, cs));
  if (cw && lo->short_conv) {
    const at_tensor *cv[3] = {param(o, "%sx_conv", ours), param(o, "%sB_conv", ours), param(o, "%sC_conv", ours)};
    for (int i = 0, r = 0; i < 3 && cv[i]; r += (int)cv[i]->shape[0], i++)
      for (int64_t j = 0; j < cv[i]->size; j++) cw[r * cs + j] = (float)cv[i]->data[j];
  } else if (cw) {
    for (int64_t c = 0; c < I + 2 * N; c++) cw[c * cs + cs - 1] = 1;
  }
  copy(o, NAME("dt_bias"), param(o, "%sdt_bias", ours));
  copy(o, NAME("A_log"), param(o, "%sA_log", ours));
  copy(o, NAME("D"), param(o, "%sD", ours));
  copy(o, NAME("norm.weight"), param(o, "%snorm", ours));
  copy(o, NAME("out_proj.weight"), param(o, "%sout_proj", ours));
  if (!first) return 1;
  jkey(x->j, "head_dim", "%lld", (long long)P);
  jkey(x->j, "num_heads", "%lld", (long long)H);
  jkey(x->j, "state_size", "%lld", (long long)N);
  jkey(x->j, "expand", "%lld", (long long)lo->expand);
  jkey(x->j, "conv_kernel", "%lld", (long long)cs);
  jkey(x->j, "n_groups", "1");
  jkey(x->j, "use_bias", "false");
  jkey(x->j, "use_conv_bias", "false");
  jkey(x->j, "rmsnorm", "true");
  jkey(x->j, "norm_before_gate", "false");
  jkey(x->j, "hidden_act", "\"silu\"");
  jkey(x->j, "residual_in_fp32", "true");
  return 1;
}

/* ---- rwkv7: the mirrored stream ----------------------------------------------------
 *
 * fla's RWKV-7 blocks normalise with LayerNorm (no RMSNorm option), attnlab's
 * with RMSNorm, and RWKV7Attention's key width is hidden_size. The export is
 * the attnlab model inside an fla RWKV-7 of hidden_size 2d whose residual
 * stream is [h, -h]: it has zero mean, so LayerNorm without bias (norm_bias
 * false) is exactly attnlab's RMSNorm (same variance, same eps). Every
 * layer reads the first half (input weights [W, 0], token-shift mixes
 * [x, 0]) and writes [y, -y] (output weights [W; -W]); the 2H heads are
 * attnlab's H and H heads with zero r, k, v, gate and GroupNorm affine,
 * which output exactly 0. Embeddings [E, -E]; the final norm [w/2, w/2]
 * with the head [L, -L] (tied: L = E) gives the logits E (h w / rms). No
 * pre_norm (norm_first false). */

/* t (viewed as rows x cols, a vector as one row) times s into the row-major
 * d (rows of dcols) at row r0, column c0. */
static void put(float *d, int64_t dcols, const at_tensor *t, int64_t r0, int64_t c0, double s) {
  if (!d || !t) return;
  int64_t rows = t->ndim == 1 ? 1 : t->shape[0], cols = t->size / rows;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) d[(r0 + r) * dcols + c0 + c] = (float)(s * t->data[r * cols + c]);
}

/* A [rows, cols] tensor with t in its top-left corner (zeros elsewhere) and,
 * with mirror, -t below it: an input weight [W, 0] (mirror 0) or an
 * output weight [[W, 0], [-W, 0]]. */
static void corner(out *o, const char *name, const at_tensor *t, int64_t rows, int64_t cols, int mirror) {
  if (!t) return;
  float *d = add(o, name, t->ndim == 1 ? 1 : 2, t->ndim == 1 ? (int64_t[]){cols} : (int64_t[]){rows, cols});
  put(d, cols, t, 0, 0, 1);
  if (mirror) put(d, cols, t, t->shape[0], 0, -1);
}

/* A vector v [n] as [s1 v, s2 v] [2n]. */
static void twice(out *o, const char *name, const at_tensor *t, double s1, double s2) {
  if (!t) return;
  float *d = add(o, name, AT_SHAPE(2 * t->size));
  put(d, 2 * t->size, t, 0, 0, s1);
  put(d, 2 * t->size, t, 0, t->size, s2);
}

static void lora_of(ctx *x, const char *name, int64_t D, int bias) {
  char nm[200], leaf[64];
  const char *pre = x->pre;
  out *o = x->o;
  const at_tensor *down = param(o, "%s%s.down", x->ours, name), *up = param(o, "%s%s.up", x->ours, name);
  snprintf(leaf, sizeof leaf, "%s.lora.0.weight", name);
  if (down) corner(o, NAME(leaf), down, down->shape[0], D, 0);
  snprintf(leaf, sizeof leaf, "%s.lora.2.weight", name);
  if (up) corner(o, NAME(leaf), up, D, up->shape[1], 0);
  if (!bias) return;
  snprintf(leaf, sizeof leaf, "%s.lora.2.bias", name);
  corner(o, NAME(leaf), param(o, "%s%s.bias", x->ours, name), 1, D, 0);
}

static int64_t rank_of(out *o, int l, const char *lora) {
  at_param *p = NULL;
  char name[96];
  snprintf(name, sizeof name, "layers.%d.rwkv7.%s.down", l, lora);
  p = at_params_find(o->m->params, name);
  return p ? p->t->shape[0] : 32; /* v_lora: no layer but the first (then unused) */
}

static int rwkv7(ctx *x, int first) {
  const at_model_cfg *cfg = x->cfg;
  int64_t d = cfg->d_model, D = 2 * d, H = cfg->n_heads, K = at_layer_head_dim(cfg, at_mixer_impl_of(at_mixer_from_name("rwkv7")));
  if (H * K != d)
    return refuse(x->o, "rwkv7 with n_heads x head_dim %lld != d_model: fla's RWKV7Attention has key and value "
                  "width hidden_size", (long long)(H * K));
  char nm[200];
  const char *pre = x->pre, *ours = x->ours;
  out *o = x->o;
  static const char *const mix[] = {"x_r", "x_w", "x_k", "x_v", "x_a", "x_g"};
  for (int i = 0; i < 6; i++) {
    const at_tensor *t = param(o, "%s%s", ours, mix[i]);
    float *v = add(o, NAME(mix[i]), AT_SHAPE(1, 1, D));
    put(v, D, t, 0, 0, 1);
  }
  static const char *const sq[] = {"r_proj", "k_proj", "v_proj"};
  for (int i = 0; i < 3; i++) {
    char leaf[32];
    snprintf(leaf, sizeof leaf, "%s.weight", sq[i]);
    corner(o, NAME(leaf), param(o, "%s%s", ours, sq[i]), D, D, 0);
  }
  corner(o, NAME("o_proj.weight"), param(o, "%so_proj", ours), D, D, 1);
  lora_of(x, "w_lora", D, 1);
  lora_of(x, "a_lora", D, 1);
  if (x->layer > 0) lora_of(x, "v_lora", D, 1);
  lora_of(x, "g_lora", D, 0);
  corner(o, NAME("k_k"), param(o, "%sk_k", ours), 1, D, 0);
  corner(o, NAME("k_a"), param(o, "%sk_a", ours), 1, D, 0);
  corner(o, NAME("r_k"), param(o, "%sr_k", ours), 2 * H, K, 0);
  corner(o, NAME("g_norm.weight"), param(o, "%sg_norm.weight", ours), 1, D, 0);
  corner(o, NAME("g_norm.bias"), param(o, "%sg_norm.bias", ours), 1, D, 0);
  if (!first) return 1;
  jkey(x->j, "head_dim", "%lld", (long long)K);
  jkey(x->j, "num_heads", "%lld", (long long)(2 * H));
  jkey(x->j, "decay_low_rank_dim", "%lld", (long long)rank_of(o, x->layer, "w_lora"));
  jkey(x->j, "a_low_rank_dim", "%lld", (long long)rank_of(o, x->layer, "a_lora"));
  jkey(x->j, "v_low_rank_dim", "%lld", (long long)rank_of(o, x->layer + 1, "v_lora"));
  jkey(x->j, "gate_low_rank_dim", "%lld", (long long)rank_of(o, x->layer, "g_lora"));
  jkey(x->j, "value_dim", "null");
  jkey(x->j, "attn_mode", "\"chunk\"");
  jkey(x->j, "norm_first", "false");
  jkey(x->j, "norm_bias", "false");
  jkey(x->j, "fuse_norm", "true");
  return 1;
}

/* The block's LayerNorms and channel mix (RWKV7FeedForward; without an
 * attnlab MLP, intermediate_size ZERO_MLP of zeros). */
static void rwkv7_block(out *o, int l) {
  const at_block *b = &o->m->blocks[l];
  int64_t d = o->m->cfg.d_model;
  char nm[200];
  snprintf(nm, sizeof nm, "model.layers.%d.attn_norm.weight", l);
  twice(o, nm, b->norm1, 1, 1);
  snprintf(nm, sizeof nm, "model.layers.%d.ffn_norm.weight", l);
  if (b->norm2) {
    twice(o, nm, b->norm2, 1, 1);
  } else {
    float *w = add(o, nm, AT_SHAPE(2 * d));
    for (int64_t i = 0; w && i < 2 * d; i++) w[i] = 1;
  }
  snprintf(nm, sizeof nm, "model.layers.%d.ffn.x_k", l);
  float *xk = add(o, nm, AT_SHAPE(2 * d));
  put(xk, 2 * d, b->x_k, 0, 0, 1);
  int64_t I = b->x_k ? b->w_up->shape[0] : ZERO_MLP;
  snprintf(nm, sizeof nm, "model.layers.%d.ffn.key.weight", l);
  float *key = add(o, nm, AT_SHAPE(I, 2 * d));
  if (b->x_k) put(key, 2 * d, b->w_up, 0, 0, 1);
  snprintf(nm, sizeof nm, "model.layers.%d.ffn.value.weight", l);
  float *val = add(o, nm, AT_SHAPE(2 * d, I));
  if (b->x_k) put(val, I, b->w_down, 0, 0, 1), put(val, I, b->w_down, d, 0, -1);
}

/* linear_attn and retnet: their options as in models/linear_attn.c and
 * models/retnet.c (the structs there are private; read through the tables). */
static double opt(const at_model_cfg *cfg, const char *mixer, const char *key) {
  return at_mixer_opt_get(cfg, at_mixer_from_name(mixer), key);
}

/* mamba: fla's Mamba (Mamba-1, the layer of mamba_ssm's mamba_simple.py):
 * in_proj [x | z], conv1d with its bias, x_proj [dt, B, C], dt_proj with the
 * dt bias as its bias, A_log [I, N], D, out_proj; no bias in in_proj and
 * out_proj. */
static int mamba1(ctx *x, int first) {
  const at_model_cfg *cfg = x->cfg;
  char nm[200];
  const char *pre = x->pre, *ours = x->ours;
  out *o = x->o;
  copy(o, NAME("in_proj.weight"), param(o, "%sin_proj", ours));
  conv_weight(o, NAME("conv1d.weight"), param(o, "%sconv", ours));
  copy(o, NAME("conv1d.bias"), param(o, "%sconv_bias", ours));
  copy(o, NAME("x_proj.weight"), param(o, "%sx_proj", ours));
  const at_tensor *dt = param(o, "%sdt_proj", ours);
  copy(o, NAME("dt_proj.weight"), dt);
  copy(o, NAME("dt_proj.bias"), param(o, "%sdt_bias", ours));
  copy(o, NAME("A_log"), param(o, "%sA_log", ours));
  copy(o, NAME("D"), param(o, "%sD", ours));
  copy(o, NAME("out_proj.weight"), param(o, "%sout_proj", ours));
  if (!first || !dt) return 1;
  jkey(x->j, "state_size", "%lld", (long long)opt(cfg, "mamba", "d_state"));
  jkey(x->j, "expand", "%lld", (long long)opt(cfg, "mamba", "expand"));
  jkey(x->j, "conv_kernel", "%lld", (long long)opt(cfg, "mamba", "conv_size"));
  jkey(x->j, "dt_rank", "%lld", (long long)dt->shape[1]);
  jkey(x->j, "use_bias", "false");
  jkey(x->j, "use_conv_bias", "true");
  jkey(x->j, "hidden_act", "\"silu\"");
  jkey(x->j, "residual_in_fp32", "false");
  jkey(x->j, "fuse_norm", "true");
  return 1;
}

static int linear_attn(ctx *x, int first) {
  const at_model_cfg *cfg = x->cfg;
  static const char *const fm[] = {"elu", "relu", "identity"};
  if (opt(cfg, "linear_attn", "output_norm") != 1)
    return refuse(x->o, "linear_attn without output_norm rmsnorm: fla's LinearAttention model always normalises its "
                  "output (set model.attention.linear_attn.output_norm: rmsnorm)");
  int64_t H = cfg->n_heads, K = at_layer_head_dim(cfg, at_mixer_impl_of(at_mixer_from_name("linear_attn")));
  char nm[200];
  const char *pre = x->pre, *ours = x->ours;
  out *o = x->o;
  copy(o, NAME("q_proj.weight"), param(o, "%sq_proj", ours));
  copy(o, NAME("k_proj.weight"), param(o, "%sk_proj", ours));
  copy(o, NAME("v_proj.weight"), param(o, "%sv_proj", ours));
  copy(o, NAME("norm.weight"), param(o, "%snorm", ours));
  copy(o, NAME("o_proj.weight"), param(o, "%so_proj", ours));
  if (!first) return 1;
  jkey(x->j, "num_heads", "%lld", (long long)H);
  jkey(x->j, "expand_k", "%.17g", (double)(H * K) / (double)cfg->d_model);
  jkey(x->j, "expand_v", "%.17g", (double)(H * K) / (double)cfg->d_model);
  jkey(x->j, "feature_map", "\"%s\"", fm[(int)opt(cfg, "linear_attn", "feature_map")]);
  jkey(x->j, "norm_feature_map", "%s", JB(opt(cfg, "linear_attn", "normalize") != 0));
  jkey(x->j, "norm_q", "false");
  jkey(x->j, "norm_k", "false");
  jkey(x->j, "tie_feature_map_qk", "false");
  jkey(x->j, "elementwise_affine", "true");
  return 1;
}

static int retnet(ctx *x, int first) {
  const at_model_cfg *cfg = x->cfg;
  const at_mixer_impl *impl = at_mixer_impl_of(at_mixer_from_name("retnet"));
  if (at_layer_position(cfg, impl) != AT_POS_ROPE)
    return refuse(x->o, "retnet without RoPE: fla's MultiScaleRetention always rotates q and k");
  if (cfg->rope_theta != 10000.0)
    return refuse(x->o, "retnet with rope_theta %g: fla's MultiScaleRetention uses 10000", cfg->rope_theta);
  if (opt(cfg, "retnet", "norm") != 1)
    return refuse(x->o, "retnet with the per-head GroupNorm: fla's MultiScaleRetention normalises with RMSNorm "
                  "(set model.attention.retnet.norm: rmsnorm)");
  int gate = opt(cfg, "retnet", "output_gate") == 0;
  int64_t H = cfg->n_heads, K = at_layer_head_dim(cfg, impl), V = (int64_t)opt(cfg, "retnet", "expand_v") * K;
  char nm[200];
  const char *pre = x->pre, *ours = x->ours;
  out *o = x->o;
  copy(o, NAME("q_proj.weight"), param(o, "%sq_proj", ours));
  copy(o, NAME("k_proj.weight"), param(o, "%sk_proj", ours));
  copy(o, NAME("v_proj.weight"), param(o, "%sv_proj", ours));
  if (gate) copy(o, NAME("g_proj.weight"), param(o, "%sg_proj", ours));
  copy(o, gate ? NAME("g_norm_swish_gate.weight") : NAME("g_norm.weight"), param(o, "%sg_norm", ours));
  copy(o, NAME("o_proj.weight"), param(o, "%so_proj", ours));
  if (!first) return 1;
  jkey(x->j, "num_heads", "%lld", (long long)H);
  jkey(x->j, "expand_k", "%.17g", (double)(H * K) / (double)cfg->d_model);
  jkey(x->j, "expand_v", "%.17g", (double)(H * V) / (double)cfg->d_model);
  jkey(x->j, "use_output_gate", "%s", JB(gate));
  jkey(x->j, "feature_map", "null");
  jkey(x->j, "elementwise_affine", "true");
  return 1;
}

/* gla: fla's GatedLinearAttention as GLABlock builds it, which passes no
 * gate_low_rank_dim or gate_logit_normalizer (the layer's 16 and 16) and
 * takes the output gate's activation from hidden_act (also the MLP's). */
static int gla(ctx *x, int first) {
  const at_model_cfg *cfg = x->cfg;
  int gate = (int)opt(cfg, "gla", "output_gate"), conv = opt(cfg, "gla", "short_conv") != 0;
  if (gate == AT_GATE_SIGMOID)
    return refuse(x->o, "gla with the sigmoid output gate: fla's GLA model takes the gate's activation from "
                  "hidden_act, which is also its MLP's (swish)");
  if (opt(cfg, "gla", "gate_low_rank_dim") != 16 || opt(cfg, "gla", "gate_logit_normalizer") != 16)
    return refuse(x->o, "gla with gate_low_rank_dim %g, gate_logit_normalizer %g: fla's GLA model always builds its "
                  "layer with 16 and 16", opt(cfg, "gla", "gate_low_rank_dim"), opt(cfg, "gla", "gate_logit_normalizer"));
  char nm[200];
  const char *pre = x->pre, *ours = x->ours;
  out *o = x->o;
  copy(o, NAME("q_proj.weight"), param(o, "%sq_proj", ours));
  copy(o, NAME("k_proj.weight"), param(o, "%sk_proj", ours));
  copy(o, NAME("v_proj.weight"), param(o, "%sv_proj", ours));
  if (conv) {
    conv_weight(o, NAME("q_conv1d.weight"), param(o, "%sq_conv", ours));
    conv_weight(o, NAME("k_conv1d.weight"), param(o, "%sk_conv", ours));
    conv_weight(o, NAME("v_conv1d.weight"), param(o, "%sv_conv", ours));
  }
  copy(o, NAME("gk_proj.0.weight"), param(o, "%sgk_proj.down", ours));
  copy(o, NAME("gk_proj.1.weight"), param(o, "%sgk_proj.up", ours));
  copy(o, NAME("gk_proj.1.bias"), param(o, "%sgk_proj.bias", ours));
  if (gate == AT_GATE_SWISH) copy(o, NAME("g_proj.weight"), param(o, "%sg_proj", ours));
  /* fuse_norm with the swish gate: FusedRMSNormGated; otherwise RMSNorm */
  copy(o, gate == AT_GATE_SWISH ? NAME("g_norm_swish_gate.weight") : NAME("g_norm.weight"), param(o, "%sg_norm", ours));
  copy(o, NAME("o_proj.weight"), param(o, "%so_proj", ours));
  if (!first) return 1;
  double cm = opt(cfg, "gla", "clamp_min");
  jkey(x->j, "num_heads", "%lld", (long long)cfg->n_heads);
  jkey(x->j, "num_kv_heads", "null");
  jkey(x->j, "expand_k", "%.17g", opt(cfg, "gla", "expand_k"));
  jkey(x->j, "expand_v", "%.17g", opt(cfg, "gla", "expand_v"));
  jkey(x->j, "feature_map", "null");
  jkey(x->j, "attn_mode", "\"chunk\"");
  jkey(x->j, "use_short_conv", "%s", JB(conv));
  jkey(x->j, "conv_size", "%lld", (long long)opt(cfg, "gla", "conv_size"));
  jkey(x->j, "use_output_gate", "%s", JB(gate == AT_GATE_SWISH));
  if (cm < 0) jkey(x->j, "clamp_min", "%.17g", cm);
  else jkey(x->j, "clamp_min", "null");
  jkey(x->j, "elementwise_affine", "true");
  jkey(x->j, "use_gk", "true");
  jkey(x->j, "use_gv", "false");
  jkey(x->j, "fuse_norm", "true");
  return 1;
}

static int mla(ctx *x, int first) {
  const at_model_cfg *cfg = x->cfg;
  const at_mla *L = x->o->m->blocks[x->layer].mixer_state;
  if (L->dr == 0) return refuse(x->o, "mla without its rotary part (NoPE): fla's MLA always has qk_rope_head_dim > 0");
  if (cfg->norm_eps != 1e-5)
    return refuse(x->o, "mla with norm_eps %g: fla's MLA normalises its latents with eps 1e-5", cfg->norm_eps);
  int64_t H = L->h, hd = L->hd, dr = L->dr, dc = L->dc, qin = L->dq > 0 ? L->dq : L->d;
  char nm[200];
  const char *pre = x->pre;
  out *o = x->o;
  /* queries: attnlab's head layout [rope | nope], fla's [nope | rope] */
  float *q = add(o, L->dq > 0 ? NAME("q_proj.2.weight") : NAME("q_proj.weight"), AT_SHAPE(H * (hd + dr), qin));
  for (int64_t h = 0; q && h < H; h++)
    for (int64_t r = 0; r < hd + dr; r++) {
      int64_t src = h * (hd + dr) + (r < hd ? dr + r : r - hd);
      for (int64_t c = 0; c < qin; c++) q[(h * (hd + dr) + r) * qin + c] = (float)L->w_uq->data[src * qin + c];
    }
  if (L->dq > 0) {
    copy(o, NAME("q_proj.0.weight"), L->w_dq);
    copy(o, NAME("q_proj.1.weight"), L->q_norm);
  }
  copy(o, NAME("k_rope.weight"), L->w_kr);
  copy(o, NAME("kv_proj.0.weight"), L->w_dkv);
  copy(o, NAME("kv_proj.1.weight"), L->kv_norm);
  /* per head [k_nope | v] rows: W_UK,h then W_UV,h */
  float *kv = add(o, NAME("kv_proj.2.weight"), AT_SHAPE(H * 2 * hd, dc));
  for (int64_t h = 0; kv && h < H; h++)
    for (int64_t r = 0; r < 2 * hd; r++) {
      const at_tensor *w = r < hd ? L->w_uk : L->w_uv;
      memcpy(kv + (h * 2 * hd + r) * dc, w->data + (h * hd + r % hd) * dc, (size_t)dc * sizeof(float));
    }
  copy(o, NAME("o_proj.weight"), L->w_o);
  if (!first) return 1;
  jkey(x->j, "num_heads", "%lld", (long long)H);
  if (L->dq > 0) jkey(x->j, "q_lora_rank", "%lld", (long long)L->dq);
  else jkey(x->j, "q_lora_rank", "null");
  jkey(x->j, "qk_rope_head_dim", "%lld", (long long)dr);
  jkey(x->j, "kv_lora_rank", "%lld", (long long)dc);
  jkey(x->j, "v_head_dim", "%lld", (long long)hd);
  jkey(x->j, "qk_nope_head_dim", "%lld", (long long)hd);
  jkey(x->j, "qk_head_dim", "%lld", (long long)(hd + dr));
  jkey(x->j, "window_size", "null");
  jkey(x->j, "rope_theta", "%.17g", L->rope_theta);
  return 1;
}

/* ---- the model ---------------------------------------------------------------------- */

typedef struct fla_type {
  const char *mixer, *model_type, *arch;
  int hybrid;   /* its configuration takes "attn" for softmax layers */
  int backbone; /* Mamba's layout: backbone.layers.<i>.{norm,mixer}, no MLP, norm_f */
  int mirror;   /* RWKV-7: LayerNorm blocks, the stream [h, -h] of width 2 d_model */
} fla_type;

static const fla_type types[] = {
  {"full", "transformer", "TransformerForCausalLM", 0, 0, 0},
  {"deltanet", "delta_net", "DeltaNetForCausalLM", 1, 0, 0},
  {"gdn", "gated_deltanet", "GatedDeltaNetForCausalLM", 1, 0, 0},
  {"kda", "kda", "KDAForCausalLM", 1, 0, 0},
  {"mamba2", "mamba2", "Mamba2ForCausalLM", 0, 1, 0},
  {"linear_attn", "linear_attn", "LinearAttentionForCausalLM", 1, 0, 0},
  {"retnet", "retnet", "RetNetForCausalLM", 1, 0, 0},
  {"mla", "mla", "MLAForCausalLM", 0, 0, 0},
  {"gla", "gla", "GLAForCausalLM", 1, 0, 0},
  {"mamba", "mamba", "MambaForCausalLM", 0, 1, 0},
  {"rwkv7", "rwkv7", "RWKV7ForCausalLM", 0, 0, 1},
};

/* The fla type of a model: its one non-softmax mixer (or full), with full
 * layers only where the type takes hybrid "attn" layers. */
static const fla_type *type_of(out *o, const at_model_cfg *cfg) {
  const char *main = "full";
  int softmax = 0;
  for (int l = 0; l < cfg->n_layers; l++) {
    const char *mx = at_mixer_name(cfg->layers[l]);
    if (!strcmp(mx, "full")) {
      softmax = 1;
    } else if (strcmp(main, "full") && strcmp(main, mx)) {
      refuse(o, "layers %s and %s: an fla model has one kind of layer (and softmax attention layers)", main, mx);
      return NULL;
    } else {
      main = mx;
    }
  }
  for (int i = 0; i < AT_ARRAY_LEN(types); i++) {
    if (strcmp(types[i].mixer, main)) continue;
    if (softmax && strcmp(main, "full") && !types[i].hybrid) {
      refuse(o, "a %s model with softmax attention layers: %s", main,
             types[i].mirror ? "fla's RWKV7Block takes v_first from every attention layer, which its Attention "
                               "layer does not return"
                             : "fla's configuration of it has no hybrid layers");
      return NULL;
    }
    return &types[i];
  }
  if (!strcmp(main, "nsa")) {
    refuse(o, "mixer nsa: fla's NativeSparseAttention compresses blocks by mean pooling (no parameters, one "
              "block size for compression and selection); attnlab's nsa learns the paper's MLP compression");
    return NULL;
  }
  refuse(o, "mixer %s: flash-linear-attention has no model for it (mapped: full, deltanet, gdn, kda, mamba2, "
         "linear_attn, retnet, mla, gla, mamba, rwkv7)", main);
  return NULL;
}

static int layer(out *o, json *j, const fla_type *ty, int l, int *first) {
  const at_model_cfg *cfg = &o->m->cfg;
  const char *mx = at_mixer_name(cfg->layers[l]);
  int mamba = ty->backbone;
  char pre[96], ours[96], nm[200];
  snprintf(pre, sizeof pre, mamba ? "backbone.layers.%d.mixer." : "model.layers.%d.attn.", l);
  snprintf(ours, sizeof ours, "layers.%d.%s.", l, mx);
  ctx x = {o, j, cfg, l, pre, ours};
  if (ty->mirror) {
    int ok = rwkv7(&x, *first);
    *first = 0;
    rwkv7_block(o, l);
    return ok;
  }
  int is_main = strcmp(mx, "full") || !strcmp(ty->mixer, "full");
  int f = is_main && *first;
  int ok;
  if (!strcmp(mx, "full")) {
    ok = softmax_ok(&x);
    if (ok) softmax_weights(&x);
    if (ok && f) transformer_config(&x);
  } else if (!strcmp(mx, "mamba2")) {
    ok = mamba2(&x, f);
  } else if (!strcmp(mx, "mamba")) {
    ok = mamba1(&x, f);
  } else if (!strcmp(mx, "linear_attn")) {
    ok = linear_attn(&x, f);
  } else if (!strcmp(mx, "retnet")) {
    ok = retnet(&x, f);
  } else if (!strcmp(mx, "mla")) {
    ok = mla(&x, f);
  } else if (!strcmp(mx, "gla")) {
    ok = gla(&x, f);
  } else {
    ok = delta_family(&x, mx, f);
  }
  if (is_main) *first = 0;
  /* the block's norms and MLP */
  const char *bp = mamba ? "backbone.layers.%d.norm.weight" : "model.layers.%d.attn_norm.weight";
  snprintf(nm, sizeof nm, bp, l);
  copy(o, nm, param(o, "layers.%d.norm1", l));
  if (mamba) return ok;
  const at_block *b = &o->m->blocks[l];
  snprintf(nm, sizeof nm, "model.layers.%d.mlp_norm.weight", l);
  if (b->w_gate) {
    copy(o, nm, b->norm2);
    snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate_proj.weight", l);
    copy(o, nm, b->w_gate);
    snprintf(nm, sizeof nm, "model.layers.%d.mlp.up_proj.weight", l);
    copy(o, nm, b->w_up);
    snprintf(nm, sizeof nm, "model.layers.%d.mlp.down_proj.weight", l);
    copy(o, nm, b->w_down);
  } else { /* no MLP: fla's GatedMLP with zero weights adds 0 */
    float *w = add(o, nm, AT_SHAPE(cfg->d_model));
    for (int64_t i = 0; w && i < cfg->d_model; i++) w[i] = 1;
    static const char *const mlp[] = {"gate_proj", "up_proj"};
    for (int i = 0; i < 2; i++) {
      snprintf(nm, sizeof nm, "model.layers.%d.mlp.%s.weight", l, mlp[i]);
      add(o, nm, AT_SHAPE(ZERO_MLP, cfg->d_model));
    }
    snprintf(nm, sizeof nm, "model.layers.%d.mlp.down_proj.weight", l);
    add(o, nm, AT_SHAPE(cfg->d_model, ZERO_MLP));
  }
  return ok;
}

/* The softmax layers of a hybrid as fla's "attn" entry. */
static void hybrid_attn(json *j, const at_model_cfg *cfg) {
  char list[256] = "";
  size_t n = 0;
  for (int l = 0; l < cfg->n_layers; l++)
    if (!strcmp(at_mixer_name(cfg->layers[l]), "full")) n += (size_t)snprintf(list + n, sizeof list - n, "%s%d", n ? ", " : "", l);
  if (!n) return;
  int64_t w = window_of(cfg);
  char win[32];
  snprintf(win, sizeof win, w > 0 ? "%lld" : "null", (long long)w);
  jkey(j, "attn", "{\"layers\": [%s], \"num_heads\": %lld, \"num_kv_heads\": %lld, \"qkv_bias\": false, "
       "\"window_size\": %s, \"rope_theta\": %.17g}", list, (long long)cfg->n_heads, (long long)cfg->n_kv_heads, win,
       cfg->rope_theta);
}

static int build(out *o, json *j, const at_restored *r, const char *ckpt) {
  const at_model_cfg *cfg = &o->m->cfg;
  if (cfg->position == AT_POS_LEARNED)
    return refuse(o, "learned position embeddings: no flash-linear-attention model has them");
  const fla_type *ty = type_of(o, cfg);
  if (!ty) return 0;
  int mamba = ty->backbone;
  if (mamba && cfg->mlp != AT_MLP_NONE)
    return refuse(o, "a %s model with an MLP: fla's %s blocks have none (mlp: none exports)", ty->model_type,
                  ty->model_type);
  if (ty->mirror && cfg->mlp == AT_MLP_SWIGLU)
    return refuse(o, "a rwkv7 model with a SwiGLU MLP: fla's RWKV-7 blocks have RWKV's channel mix (mlp: rwkv_cmix "
                  "or none exports)");
  if (!ty->mirror && cfg->mlp == AT_MLP_RWKV_CMIX)
    return refuse(o, "a %s model with RWKV's channel mix (mlp: rwkv_cmix): fla's %s blocks have a GatedMLP "
                  "(mlp: swiglu or none exports)", ty->model_type, ty->model_type);
  j->n = (size_t)snprintf(j->buf, sizeof j->buf, "{");
  jkey(j, "model_type", "\"%s\"", ty->model_type);
  jkey(j, "architectures", "[\"%s\"]", ty->arch);
  jkey(j, "vocab_size", "%lld", (long long)cfg->vocab_size);
  jkey(j, "hidden_size", "%lld", (long long)(ty->mirror ? 2 : 1) * (long long)cfg->d_model);
  jkey(j, "num_hidden_layers", "%lld", (long long)cfg->n_layers);
  jkey(j, "norm_eps", "%.17g", cfg->norm_eps);
  jkey(j, "tie_word_embeddings", "%s", JB(cfg->tie_embeddings));
  jkey(j, "max_position_embeddings", "%lld", (long long)r->rc->data.seq_len);
  jkey(j, "initializer_range", "%.17g", cfg->init_std);
  if (ty->mirror) {
    jkey(j, "hidden_act", "\"sqrelu\"");
    jkey(j, "intermediate_size", "%lld", (long long)(cfg->mlp == AT_MLP_RWKV_CMIX ? cfg->mlp_hidden : ZERO_MLP));
    jkey(j, "hidden_ratio", "null");
  } else if (!mamba) {
    jkey(j, "hidden_act", "\"swish\"");
    jkey(j, "intermediate_size", "%lld", (long long)(cfg->mlp == AT_MLP_SWIGLU ? cfg->mlp_hidden : ZERO_MLP));
    jkey(j, "hidden_ratio", "null");
    if (ty->hybrid) hybrid_attn(j, cfg);
  }
  int first = 1;
  for (int l = 0; l < cfg->n_layers; l++)
    if (!layer(o, j, ty, l, &first)) return 0;
  const at_tensor *head = o->m->lm_head ? o->m->lm_head : o->m->tok_emb;
  if (ty->mirror) {
    int64_t V = cfg->vocab_size, d = cfg->d_model;
    float *e = add(o, "model.embeddings.weight", AT_SHAPE(V, 2 * d)), *h = add(o, "lm_head.weight", AT_SHAPE(V, 2 * d));
    put(e, 2 * d, o->m->tok_emb, 0, 0, 1), put(e, 2 * d, o->m->tok_emb, 0, d, -1);
    put(h, 2 * d, head, 0, 0, 1), put(h, 2 * d, head, 0, d, -1);
    twice(o, "model.norm.weight", o->m->final_norm, 0.5, 0.5);
  } else {
    copy(o, mamba ? "backbone.embeddings.weight" : "model.embeddings.weight", o->m->tok_emb);
    copy(o, mamba ? "backbone.norm_f.weight" : "model.norm.weight", o->m->final_norm);
    copy(o, "lm_head.weight", head);
  }
  jkey(j, "attnlab", "{\"checkpoint\": \"%s\", \"run\": \"%s\", \"step\": %lld, \"mlp\": \"%s\"}", ckpt, r->rc->name,
       (long long)r->ts.step, cfg->mlp == AT_MLP_SWIGLU ? "swiglu" : cfg->mlp == AT_MLP_RWKV_CMIX ? "rwkv_cmix"
       : mamba ? "none" : "none (exported as a zero MLP)");
  if (ty->mirror)
    jkey(j, "attnlab_width", "\"d_model %lld as the first half of a stream [h, -h] (LayerNorm = RMSNorm at zero "
         "mean); heads %lld to %lld output 0\"", (long long)cfg->d_model, (long long)cfg->n_heads,
         (long long)(2 * cfg->n_heads - 1));
  if (j->n + 4 >= sizeof j->buf) return refuse(o, "internal: config.json longer than %zu bytes", sizeof j->buf);
  j->n += (size_t)snprintf(j->buf + j->n, sizeof j->buf - j->n, "\n}\n");
  return !o->failed;
}

/* ---- safetensors ---------------------------------------------------------------------- */

static int write_safetensors(const char *path, const entry *e, int n) {
  size_t cap = 4096 + (size_t)n * 256, len = 0;
  char *h = malloc(cap);
  if (!h) return 0;
  len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\",\"producer\":\"attnlab\"}");
  int64_t off = 0;
  for (int i = 0; i < n; i++) {
    int64_t bytes = e[i].n * (e[i].ids ? 8 : 4);
    len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e[i].name, e[i].ids ? "I64" : "F32");
    for (int d = 0; d < e[i].ndim; d++) len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)e[i].shape[d]);
    len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%lld,%lld]}", (long long)off, (long long)(off + bytes));
    off += bytes;
  }
  len += (size_t)snprintf(h + len, cap - len, "}");
  while (len % 8) h[len++] = ' '; /* the tensors start 8-byte aligned */
  FILE *f = fopen(path, "wb");
  int ok = f != NULL;
  unsigned char n8[8];
  for (int i = 0; i < 8; i++) n8[i] = (unsigned char)((uint64_t)len >> (8 * i));
  ok = ok && fwrite(n8, 1, 8, f) == 8 && fwrite(h, 1, len, f) == len;
  for (int i = 0; ok && i < n; i++) { /* little-endian, as x86 and ARM store them */
    if (e[i].ids) ok = fwrite(e[i].ids, 8, (size_t)e[i].n, f) == (size_t)e[i].n;
    else ok = fwrite(e[i].data, 4, (size_t)e[i].n, f) == (size_t)e[i].n;
  }
  if (f && fclose(f) != 0) ok = 0;
  free(h);
  return ok;
}

/* attnlab's logits for a fixed input, beside the export. */
static int write_check(const char *path, at_model *m, int64_t T) {
  enum { B = 2 };
  int64_t V = m->cfg.vocab_size;
  at_ctx *c = at_ctx_new(0);
  at_itensor *tok = c ? at_inew(c, AT_SHAPE(B, T)) : NULL;
  entry e[2] = {{.name = "input_ids", .ndim = 2, .shape = {B, T}, .n = B * T},
                {.name = "logits", .ndim = 3, .shape = {B, T, V}, .n = B * T * V}};
  e[0].ids = malloc((size_t)(B * T) * sizeof(int64_t));
  e[1].data = malloc((size_t)(B * T * V) * sizeof(float));
  int ok = tok && e[0].ids && e[1].data;
  for (int64_t i = 0; ok && i < B * T; i++) e[0].ids[i] = tok->data[i] = (int32_t)((i * 7919 + (i * i) % 13) % V);
  at_tensor *z = NULL;
  if (ok) {
    at_no_grad_begin(c);
    z = at_model_logits(c, m, tok);
    at_no_grad_end(c);
  }
  if ((ok = ok && z))
    for (int64_t i = 0; i < z->size; i++) e[1].data[i] = (float)z->data[i];
  if (ok) ok = write_safetensors(path, e, 2);
  free(e[0].ids), free(e[1].data);
  at_ctx_free(c);
  return ok;
}

int main(int argc, char **argv) {
  if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
    printf("usage: export CHECKPOINT OUT_DIR\n\nWrites OUT_DIR/model.safetensors and config.json in "
           "flash-linear-attention's conventions,\nand attnlab's logits for a fixed input "
           "(attnlab_check.safetensors; tests/ref/check_export.py checks them).\n");
    return 0;
  }
  if (argc != 3) {
    fprintf(stderr, "usage: export CHECKPOINT OUT_DIR\n");
    return 2;
  }
  at_restored r;
  if (at_restore(argv[1], &r) != AT_OK) {
    fprintf(stderr, "export: %s\n", at_errmsg());
    return 2;
  }
  out o = {.m = r.m};
  static json j;
  int ok = build(&o, &j, &r, argv[1]);
  if (!ok) fprintf(stderr, "export: %s: cannot be exported to flash-linear-attention: %s\n", argv[1], o.why[0] ? o.why : "out of memory");
  char path[1200];
  if (ok && mkdir(argv[2], 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, "export: %s: %s\n", argv[2], strerror(errno));
    ok = 0;
  }
  if (ok) {
    snprintf(path, sizeof path, "%s/model.safetensors", argv[2]);
    if (!(ok = write_safetensors(path, o.e, o.n))) fprintf(stderr, "export: %s: cannot write\n", path);
  }
  if (ok) {
    snprintf(path, sizeof path, "%s/config.json", argv[2]);
    FILE *f = fopen(path, "w");
    ok = f && fputs(j.buf, f) >= 0;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "export: %s: cannot write\n", path);
  }
  if (ok) {
    snprintf(path, sizeof path, "%s/attnlab_check.safetensors", argv[2]);
    if (!(ok = write_check(path, r.m, AT_MIN(r.rc->data.seq_len, 64)))) fprintf(stderr, "export: %s: %s\n", path, at_errmsg());
  }
  if (ok) {
    int64_t total = 0;
    for (int i = 0; i < o.n; i++) total += o.e[i].n;
    printf("exported %s (run %s, step %lld) to %s: %d tensors, %lld values\n", argv[1], r.rc->name, (long long)r.ts.step,
           argv[2], o.n, (long long)total);
  }
  for (int i = 0; i < o.n; i++) free(o.e[i].data);
  free(o.e);
  at_restored_free(&r);
  return ok ? 0 : 2;
}
