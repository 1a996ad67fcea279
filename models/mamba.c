/* models/mamba.c: the Mamba-1 mixer (Gu & Dao, arXiv 2312.00752), the layer
 * of mamba_ssm's modules/mamba_simple.py with its selective_scan semantics.
 * I = expand d_model (inner width), N = d_state, R = dt_rank
 * (0: ceil(d_model / 16)), x [B,T,d]:
 *
 *   [xs, z] = x in_proj^T                       [B,T,I] each
 *   xc = SiLU(CausalDepthwiseConv(xs) + conv_bias)   (kernel conv_size)
 *   [dtr, Bm, Cm] = xc x_proj^T                 [B,T,R], [B,T,N], [B,T,N]
 *   dt = softplus(dtr dt_proj^T + dt_bias)      [B,T,I]   (low rank R)
 *   A  = -exp(A_log)                            [I,N]
 *   h_t = exp(dt_t A) ⊙ h_{t-1} + dt_t xc_t B_t,  y_t = C_t · h_t + D xc_t
 *   out = (y ⊙ SiLU(z)) out_proj^T              [B,T,d]
 * (the scan of ops/attention/selective_scan.c with delta_softplus and the
 * gate z inside it).
 *
 * Parameters (under layers.<i>.mamba.): in_proj [2I, d], conv [I,
 * conv_size], conv_bias [I], x_proj [R + 2N, I], dt_proj [I, R], dt_bias
 * [I], A_log [I, N], D [I], out_proj [d, I]. No bias in the projections
 * (mamba_ssm's bias = False), a bias in the conv (conv_bias = True).
 *
 * Initialisation as mamba_ssm: A_log[d, n] = log(n + 1) (S4D-Real);
 * D = 1; dt_bias = softplus^-1(dt), dt = exp(U(log 1e-3, log 1e-1)) floored
 * at 1e-4; dt_proj U(-R^-1/2, R^-1/2); in_proj, x_proj, conv and conv_bias
 * PyTorch's Linear / Conv1d default U(-f^-1/2, f^-1/2) (f the fan-in: d,
 * I, conv_size), which mamba_ssm keeps; A_log, D, dt_bias, conv_bias
 * without weight decay. out_proj N(0, init_std / sqrt(2 n_layers))
 * (attnlab's residual init; mamba_ssm rescales its default by
 * 1 / sqrt(n_layers)). The small N(0, 0.02) of attnlab's other projections
 * makes dt and B, C nearly input-independent at the start, and selective
 * copying then learned several times slower.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "models/linear_mixers.h"
#include "ops/attention/ssm.h"
#include "ops/ops.h"

extern const at_mixer_impl at_mixer_mamba;

typedef struct mamba_opts {
  at_mixer_common common;
  int64_t d_state, expand, conv_size, dt_rank, chunk_size;
} mamba_opts;

static const at_mixer_opt mamba_options[] = {
  AT_OPT_I("d_state", mamba_opts, d_state, 1, 1024, 16, "state size N per channel"),
  AT_OPT_I("expand", mamba_opts, expand, 1, 16, 2, "inner width = expand d_model"),
  AT_OPT_I("conv_size", mamba_opts, conv_size, 1, 16, 4, "kernel size of the causal depthwise conv"),
  AT_OPT_I("dt_rank", mamba_opts, dt_rank, 0, 4096, 0, "rank of the dt projection; 0 = ceil(d_model / 16)"),
  AT_OPT_I("chunk_size", mamba_opts, chunk_size, 1, 4096, 64,
           "tokens between the state checkpoints of the chunked scan"),
};

static int64_t dt_rank_of(const at_model_cfg *cfg, const mamba_opts *o) {
  return o->dt_rank > 0 ? o->dt_rank : (cfg->d_model + 15) / 16;
}

typedef struct mamba_layer {
  at_lin_layer_base base;
  int64_t d, I, N, R, K, chunk;
  at_tensor *w_in, *conv, *conv_b, *w_x, *w_dt, *dt_bias, *A_log, *D, *w_out;
} mamba_layer;

static at_status mamba_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                              void **out) {
  (void)layer_index;
  const mamba_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_mamba, mamba_opts);
  mamba_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base.impl = &at_mixer_mamba;
  L->base.form = AT_LIN_CHUNK;
  L->d = cfg->d_model;
  L->I = o->expand * cfg->d_model;
  L->N = o->d_state;
  L->R = dt_rank_of(cfg, o);
  L->K = o->conv_size;
  L->chunk = o->chunk_size;
  if (L->I < 1 || L->N < 1 || L->R < 1 || L->K < 1 || L->chunk < 1)
    return at_error(AT_E_ARG, "mamba: inner width %lld, d_state %lld, dt_rank %lld, conv_size %lld and "
                    "chunk_size %lld must be positive", (long long)L->I, (long long)L->N, (long long)L->R,
                    (long long)L->K, (long long)L->chunk);
  const int64_t d = L->d, I = L->I, N = L->N, R = L->R;
  const int nd = AT_PARAM_NO_DECAY;
  if (!(L->w_in = at_layer_weight(p, prefix, "in_proj", 2 * I, d)) ||
      !(L->conv = at_layer_weight(p, prefix, "conv", I, L->K)) ||
      !(L->conv_b = at_layer_param(p, prefix, "conv_bias", AT_SHAPE(I), nd)) ||
      !(L->w_x = at_layer_weight(p, prefix, "x_proj", R + 2 * N, I)) ||
      !(L->w_dt = at_layer_weight(p, prefix, "dt_proj", I, R)) ||
      !(L->dt_bias = at_layer_param(p, prefix, "dt_bias", AT_SHAPE(I), nd)) ||
      !(L->A_log = at_layer_param(p, prefix, "A_log", AT_SHAPE(I, N), nd)) ||
      !(L->D = at_layer_param(p, prefix, "D", AT_SHAPE(I), nd)) ||
      !(L->w_out = at_layer_weight(p, prefix, "out_proj", d, I)))
    return AT_E_ARG;
  return AT_OK;
}

static void init_uniform(at_tensor *t, uint64_t seed, double bound) {
  at_fill_uniform(t->data, t->size, seed, at_stream_of(t->name), -bound, bound);
}

static void mamba_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  mamba_layer *L = layer;
  init_uniform(L->w_in, seed, 1 / sqrt((double)L->d));
  init_uniform(L->w_x, seed, 1 / sqrt((double)L->I));
  init_uniform(L->conv, seed, 1 / sqrt((double)L->K));
  init_uniform(L->conv_b, seed, 1 / sqrt((double)L->K));
  init_uniform(L->w_dt, seed, 1 / sqrt((double)L->R));
  at_lin_init_dt_bias(L->dt_bias, seed);
  for (int64_t i = 0; i < L->I; i++)
    for (int64_t n = 0; n < L->N; n++) L->A_log->data[i * L->N + n] = (real)log((double)(n + 1));
  at_layer_init_const(L->D, 1);
  at_layer_init_out(L->w_out, cfg, seed);
}

/* The causal depthwise conv (with bias) and SiLU of xs [B,T,I]; in decoding
 * continued from `hist` [B, K-1, I], the last K-1 inputs (zeros before the
 * first token), which receives those after xs. */
static at_tensor *mamba_conv(at_ctx *c, const mamba_layer *L, at_tensor *xs, at_tensor *hist) {
  if (!hist || !xs || L->K == 1) return at_silu(c, at_conv1d_causal(c, xs, L->conv, L->conv_b));
  const int64_t B = xs->shape[0], T = xs->shape[1], I = L->I, K1 = L->K - 1;
  /* [history | xs] through the training op, keeping the rows of xs */
  at_tensor *parts[2] = {at_from(c, hist->data, AT_SHAPE(B, K1, I)), xs};
  at_tensor *xin = at_concat(c, parts, 2, 1);
  at_tensor *y = at_slice(c, at_conv1d_causal(c, xin, L->conv, L->conv_b), 1, K1, T);
  if (!xin || !y) return NULL;
  for (int64_t b = 0; b < B; b++)
    memcpy(hist->data + b * K1 * I, xin->data + (b * (T + K1) + T) * I, (size_t)(K1 * I) * sizeof(real));
  return at_silu(c, y);
}

/* The layer over x in one of three runs; s is the decoding state (NULL in
 * training): t[0] the scan state [B,I,N], t[1] (conv_size > 1) the conv's
 * last conv_size - 1 inputs [B, conv_size-1, I]. */
static at_tensor *mamba_run(at_ctx *c, mamba_layer *L, at_tensor *x, at_mixer_state *s, at_lin_run run) {
  const int64_t I = L->I, N = L->N, R = L->R;
  at_tensor *xz = at_linear(c, x, L->w_in, NULL);
  at_tensor *xs = at_slice(c, xz, 2, 0, I), *z = at_slice(c, xz, 2, I, I);
  at_tensor *xc = mamba_conv(c, L, xs, s && L->K > 1 ? s->t[1] : NULL);
  at_tensor *xd = at_linear(c, xc, L->w_x, NULL);
  at_tensor *dt = at_linear(c, at_slice(c, xd, 2, 0, R), L->w_dt, NULL);
  at_tensor *Bm = at_slice(c, xd, 2, R, N), *Cm = at_slice(c, xd, 2, R + N, N);
  at_tensor *A = at_scale(c, at_exp(c, L->A_log), -1.0);
  at_scan_opts so = {1, L->chunk, L->base.form == AT_LIN_RECURRENT ? AT_SCAN_SEQUENTIAL : AT_SCAN_CHUNKED};
  at_tensor *y;
  if (run == AT_LIN_RUN_STEP) {
    y = at_selective_scan_step(c, xc, dt, A, Bm, Cm, L->D, z, L->dt_bias, s->t[0], &so);
  } else {
    at_tensor *ht = NULL;
    y = at_selective_scan(c, xc, dt, A, Bm, Cm, L->D, z, L->dt_bias, NULL, run == AT_LIN_RUN_PREFILL ? &ht : NULL,
                          &so);
    if (y && run == AT_LIN_RUN_PREFILL) {
      if (!ht) return NULL;
      memcpy(s->t[0]->data, ht->data, (size_t)s->t[0]->size * sizeof(real));
    }
  }
  return at_linear(c, y, L->w_out, NULL);
}

static at_tensor *mamba_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  (void)io;
  mamba_layer *L = layer;
  if (!x) return NULL;
  if (x->ndim != 3 || x->shape[2] != L->d) return at_layer_bad_input(c, &at_mixer_mamba, x, L->d);
  return mamba_run(c, L, x, NULL, AT_LIN_RUN_TRAIN);
}

static at_status mamba_state_new(const void *layer, at_mixer_state *s) {
  const mamba_layer *L = layer;
  int ok = at_mixer_state_add(s, AT_SHAPE(s->batch, L->I, L->N)) != NULL;
  if (L->K > 1) ok = ok && at_mixer_state_add(s, AT_SHAPE(s->batch, L->K - 1, L->I));
  return ok ? AT_OK : at_error_prefix(AT_E_NOMEM, "mamba: decoding state");
}

static at_tensor *mamba_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  mamba_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_mamba, x, L->d, s, io, 0)) return NULL;
  return mamba_run(c, L, x, s, AT_LIN_RUN_PREFILL);
}

static at_tensor *mamba_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  mamba_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_mamba, x, L->d, s, io, 1)) return NULL;
  return mamba_run(c, L, x, s, AT_LIN_RUN_STEP);
}

/* The I x N scan state plus the last conv_size - 1 inputs of the conv. */
static int64_t mamba_state_elems(const void *layer) {
  const mamba_layer *L = layer;
  return L->I * L->N + (L->K - 1) * L->I;
}

const at_mixer_impl at_mixer_mamba = {
  .name = "mamba",
  .family = "state-space",
  .summary = "Mamba-1 (S6): selective scan h = exp(dt A) h + dt B x per channel, dt = softplus(low-rank(x) + "
             "dt_bias), B/C from x, A = -exp(A_log) [I,N], D skip, causal conv + SiLU, gate SiLU(z)",
  .opts = mamba_options,
  .n_opts = AT_ARRAY_LEN(mamba_options),
  .opts_size = sizeof(mamba_opts),
  .create = mamba_create,
  .init = mamba_init,
  .forward = mamba_forward,
  .state_elems = mamba_state_elems,
  .destroy = free,
  .state_new = mamba_state_new,
  .prefill = mamba_prefill,
  .step = mamba_step,
};
