/* models/mla.c: multi-head latent attention (DeepSeek-V2), the mixer `mla`.
 * The equations, the explicit (training) and absorbed (generation) forms
 * are in models/mla.h. */
#include "models/mla.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops/attention/attention.h"
#include "ops/ops.h"

/* ---- sizes and parameters (shared with the DSA layer) ------------------------- */

extern const at_mixer_impl at_mixer_mla;

static const at_mixer_opt mla_options[] = {AT_MLA_OPTS};

/* kv_rank 0 -> 4 head_dim (DeepSeek-V2: d_c = 4 d_h); rope_dim -1 -> d_R =
 * d_h / 2 rounded down to even with RoPE, 0 without. */
at_status at_mla_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  (void)cfg;
  at_mla_opts *o = opts;
  int rope = o->common.position == AT_POS_ROPE;
  if (o->kv_rank == 0) o->kv_rank = 4 * o->common.head_dim;
  if (o->rope_dim < 0) o->rope_dim = rope ? AT_MAX(2, o->common.head_dim / 2 / 2 * 2) : 0;
  *bad = "rope_dim";
  if (rope && o->rope_dim == 0)
    return at_error(AT_E_CONFIG, "rope_dim 0 means no RoPE, but its position is rope (set position: "
                    "nope, or rope_dim > 0)");
  if (!rope && o->rope_dim > 0)
    return at_error(AT_E_CONFIG, "rope_dim %lld needs position rope (its position is nope)",
                    (long long)o->rope_dim);
  if (o->rope_dim % 2) return at_error(AT_E_CONFIG, "rope_dim must be even (got %lld)", (long long)o->rope_dim);
  *bad = NULL;
  return AT_OK;
}

at_status at_mla_declare(at_mla *L, const at_model_cfg *cfg, const at_mixer_impl *impl, at_params *p,
                         const char *prefix) {
  const at_mla_opts *o = AT_MIXER_OPTS(cfg, impl, at_mla_opts);
  const char *kind = impl->name;
  at_position pos = at_layer_position(cfg, impl);
  memset(L, 0, sizeof *L);
  L->d = cfg->d_model;
  L->h = cfg->n_heads;
  L->hd = at_layer_head_dim(cfg, impl);
  L->dc = o->kv_rank;
  L->dr = o->rope_dim;
  L->dq = o->q_rank;
  L->rope_theta = cfg->rope_theta;
  L->norm_eps = cfg->norm_eps;
  if (L->h < 1 || L->hd < 1 || L->dq < 0)
    return at_error(AT_E_ARG, "%s: n_heads %lld, head_dim %lld and q_rank %lld must be positive "
                    "(q_rank may be 0)", kind, (long long)L->h, (long long)L->hd,
                    (long long)L->dq);
  if (pos == AT_POS_ROPE && L->dr == 0)
    return at_error(AT_E_ARG, "%s: position rope needs rope_dim > 0 (rope_dim 0 is NoPE: set "
                    "position: nope)", kind);
  if (pos != AT_POS_ROPE && L->dr > 0)
    return at_error(AT_E_ARG, "%s: rope_dim %lld needs position rope", kind,
                    (long long)L->dr);
  if (L->dr % 2)
    return at_error(AT_E_ARG, "%s: rope_dim must be even, got %lld", kind,
                    (long long)L->dr);
  int64_t d = L->d, qk = L->dr + L->hd;
  if (L->dq > 0) {
    if (!(L->w_dq = at_layer_weight(p, prefix, "w_dq", L->dq, d)) ||
        !(L->q_norm = at_layer_param(p, prefix, "q_norm", AT_SHAPE(L->dq), AT_PARAM_NO_DECAY)) ||
        !(L->w_uq = at_layer_weight(p, prefix, "w_uq", L->h * qk, L->dq)))
      return AT_E_ARG;
  } else if (!(L->w_uq = at_layer_weight(p, prefix, "w_q", L->h * qk, d))) {
    return AT_E_ARG;
  }
  if (!(L->w_dkv = at_layer_weight(p, prefix, "w_dkv", L->dc, d)) ||
      !(L->kv_norm = at_layer_param(p, prefix, "kv_norm", AT_SHAPE(L->dc), AT_PARAM_NO_DECAY)) ||
      (L->dr > 0 && !(L->w_kr = at_layer_weight(p, prefix, "w_kr", L->dr, d))) ||
      !(L->w_uk = at_layer_weight(p, prefix, "w_uk", L->h * L->hd, L->dc)) ||
      !(L->w_uv = at_layer_weight(p, prefix, "w_uv", L->h * L->hd, L->dc)) ||
      !(L->w_o = at_layer_weight(p, prefix, "w_o", d, L->h * L->hd)))
    return AT_E_ARG;
  return AT_OK;
}

/* GPT-2 style like the full mixer: N(0, std), the output projection scaled
 * by 1/sqrt(2 n_layers), RMSNorm weights at 1. */
void at_mla_init(at_mla *L, const at_model_cfg *cfg, uint64_t seed) {
  double std = cfg->init_std;
  at_tensor *w[] = {L->w_dq, L->w_uq, L->w_dkv, L->w_kr, L->w_uk, L->w_uv};
  for (int i = 0; i < AT_ARRAY_LEN(w); i++)
    if (w[i]) at_layer_init_normal(w[i], seed, std);
  at_layer_init_out(L->w_o, cfg, seed);
  if (L->q_norm) at_layer_init_const(L->q_norm, 1);
  at_layer_init_const(L->kv_norm, 1);
}

double at_mla_scale(const at_mla *L) { return 1.0 / sqrt((double)(L->dr + L->hd)); }

int64_t at_mla_cache_dim(const at_mla *L) { return L->dr + L->dc; }

/* ---- the explicit form ----------------------------------------------------------- */

void at_mla_project(at_ctx *c, const at_mla *L, at_tensor *x, int64_t pos0, at_mla_qkv *out) {
  memset(out, 0, sizeof *out);
  if (!x) return;
  if (x->ndim != 3 || x->shape[2] != L->d) {
    char sx[96];
    at_fail(c, AT_E_SHAPE, "mla: input %s is not [B, T, %lld]", AT_SHAPE_STR(x, sx), (long long)L->d);
    return;
  }
  int64_t B = x->shape[0], T = x->shape[1], H = L->h, hd = L->hd, dr = L->dr;
  at_tensor *cq = NULL;
  if (L->dq > 0) cq = at_rmsnorm(c, at_linear(c, x, L->w_dq, NULL), L->q_norm, L->norm_eps);
  at_tensor *q = AT_RESHAPE(c, at_linear(c, cq ? cq : x, L->w_uq, NULL), B, T, H, dr + hd);
  at_tensor *ckv = at_rmsnorm(c, at_linear(c, x, L->w_dkv, NULL), L->kv_norm, L->norm_eps);
  at_tensor *k = AT_RESHAPE(c, at_linear(c, ckv, L->w_uk, NULL), B, T, H, hd);
  at_tensor *v = AT_RESHAPE(c, at_linear(c, ckv, L->w_uv, NULL), B, T, H, hd);
  at_tensor *kr = NULL;
  if (dr > 0) {
    q = at_rope(c, q, dr, L->rope_theta, pos0);
    kr = AT_RESHAPE(c, at_linear(c, x, L->w_kr, NULL), B, T, 1, dr);
    kr = at_rope(c, kr, dr, L->rope_theta, pos0);
    /* The one rotary key, broadcast to every head (its gradient sums over them). */
    at_tensor *parts[2] = {at_add(c, AT_ZEROS(c, B, T, H, dr), kr), k};
    k = at_concat(c, parts, 2, 3);
  }
  out->q = q, out->k = k, out->v = v, out->cq = cq, out->ckv = ckv, out->kr = kr;
}

void at_mla_cache_put(const at_mla *L, const at_mla_qkv *p, at_tensor *cache, int64_t pos0) {
  int64_t B = p->ckv->shape[0], T = p->ckv->shape[1], S = cache->shape[1], dr = L->dr, dc = L->dc;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      real *e = cache->data + (b * S + pos0 + t) * (dr + dc);
      if (dr > 0) memcpy(e, p->kr->data + (b * T + t) * dr, (size_t)dr * sizeof(real));
      memcpy(e + dr, p->ckv->data + (b * T + t) * dc, (size_t)dc * sizeof(real));
    }
}

at_tensor *at_mla_output(at_ctx *c, const at_mla *L, at_tensor *o) {
  if (!o) return NULL;
  return at_linear(c, AT_RESHAPE(c, o, o->shape[0], o->shape[1], L->h * L->hd), L->w_o, NULL);
}

/* ---- the absorbed form (generation) ----------------------------------------------- */

at_tensor *at_mla_decode(at_ctx *c, const at_mla *L, at_tensor *x, at_tensor *cache, int64_t pos) {
  return at_mla_decode_selected(c, L, x, cache, pos, NULL);
}

/* Softmax of one row in place, in double. */
static void softmax_row(real *s, int64_t n) {
  double m = -INFINITY, sum = 0;
  for (int64_t j = 0; j < n; j++) m = fmax(m, (double)s[j]);
  for (int64_t j = 0; j < n; j++) {
    double e = exp((double)s[j] - m);
    s[j] = (real)e;
    sum += e;
  }
  for (int64_t j = 0; j < n; j++) s[j] = (real)((double)s[j] / sum);
}

at_tensor *at_mla_decode_selected(at_ctx *c, const at_mla *L, at_tensor *x, at_tensor *cache,
                                  int64_t pos, const at_itensor *indices) {
  if (!x || !cache) return NULL;
  char sx[96], sc[96];
  int64_t H = L->h, hd = L->hd, dr = L->dr, dc = L->dc, dk = dr + dc;
  if (x->ndim != 3 || x->shape[1] != 1 || x->shape[2] != L->d || cache->ndim != 3 ||
      cache->shape[0] != x->shape[0] || cache->shape[2] != dk)
    return at_fail(c, AT_E_SHAPE, "mla_decode: x %s must be [B, 1, %lld] and cache %s [B, S, %lld]",
                   AT_SHAPE_STR(x, sx), (long long)L->d, AT_SHAPE_STR(cache, sc), (long long)dk);
  int64_t B = x->shape[0], S = cache->shape[1], K = 0;
  if (pos < 0 || pos >= S)
    return at_fail(c, AT_E_ARG, "mla_decode: position %lld outside the cache's %lld slots",
                   (long long)pos, (long long)S);
  if (indices) {
    if (indices->ndim != 3 || indices->shape[0] != B || indices->shape[1] != 1)
      return at_fail(c, AT_E_SHAPE, "mla_decode: indices %s must be [%lld, 1, K]",
                     at_shape_str(indices->ndim, indices->shape, sx), (long long)B);
    K = indices->shape[2];
    unsigned char *seen = at_scratch(c, (size_t)(pos + 1));
    if (!seen) return at_fail(c, AT_E_NOMEM, "mla_decode: out of step memory");
    for (int64_t b = 0; b < B; b++) {
      memset(seen, 0, (size_t)(pos + 1));
      for (int64_t j = 0; j < K; j++) {
        int32_t s = indices->data[b * K + j];
        if (s < -1 || s > pos)
          return at_fail(c, AT_E_ARG, "mla_decode: selected slot %d is not a causal key of position %lld",
                         s, (long long)pos);
        if (s >= 0 && seen[s]++)
          return at_fail(c, AT_E_ARG, "mla_decode: slot %d is selected twice", s);
      }
    }
  }
  at_tensor *y = NULL;
  at_no_grad_begin(c);
  /* This token's cache entry [k_R | c_KV]. */
  at_tensor *ckv = at_rmsnorm(c, at_linear(c, x, L->w_dkv, NULL), L->kv_norm, L->norm_eps);
  at_tensor *kr = NULL;
  if (dr > 0)
    kr = at_rope(c, AT_RESHAPE(c, at_linear(c, x, L->w_kr, NULL), B, 1, 1, dr), dr, L->rope_theta, pos);
  at_tensor *qin = x;
  if (L->dq > 0) qin = at_rmsnorm(c, at_linear(c, x, L->w_dq, NULL), L->q_norm, L->norm_eps);
  at_tensor *q = AT_RESHAPE(c, at_linear(c, qin, L->w_uq, NULL), B, 1, H, dr + hd);
  if (dr > 0) q = at_rope(c, q, dr, L->rope_theta, pos);
  int64_t nmax = indices ? K : pos + 1;
  at_tensor *o = AT_ZEROS(c, B, 1, H, hd);
  real *qa = at_scratch(c, (size_t)(H * dk) * sizeof(real));
  real *sc_buf = at_scratch(c, (size_t)(H * nmax) * sizeof(real));
  real *olat = at_scratch(c, (size_t)(H * dc) * sizeof(real));
  real *rows = indices ? at_scratch(c, (size_t)(K * dk) * sizeof(real)) : NULL;
  if (ckv && (kr || dr == 0) && q && o && qa && sc_buf && olat && (rows || !indices)) {
    double scale = at_mla_scale(L);
    for (int64_t b = 0; b < B; b++) {
      real *cb = cache->data + b * S * dk, *entry = cb + pos * dk;
      if (dr > 0) memcpy(entry, kr->data + b * dr, (size_t)dr * sizeof(real));
      memcpy(entry + dr, ckv->data + b * dc, (size_t)dc * sizeof(real));
      /* Absorbed queries [q_R,i | W_UK,i^T q_C,i] per head. */
      for (int64_t i = 0; i < H; i++) {
        const real *qi = q->data + (b * H + i) * (dr + hd);
        memcpy(qa + i * dk, qi, (size_t)dr * sizeof(real));
        at_gemm(AT_T, AT_N, dc, 1, hd, 1, L->w_uk->data + i * hd * dc, dc, qi + dr, 1, 0,
                qa + i * dk + dr, 1);
      }
      /* The keys read: every slot 0..pos, or the selected ones gathered. */
      const real *kv = cb;
      int64_t n = pos + 1;
      if (indices) {
        n = 0;
        for (int64_t j = 0; j < K; j++) {
          int32_t s = indices->data[b * K + j];
          if (s >= 0) memcpy(rows + n++ * dk, cb + s * dk, (size_t)dk * sizeof(real));
        }
        kv = rows;
      }
      if (n == 0) continue; /* no key: o = 0 */
      /* MQA over the latent cache: scores [H, n], softmax, o_lat = P c_KV [H, dc]. */
      at_gemm(AT_N, AT_T, H, n, dk, (real)scale, qa, dk, kv, dk, 0, sc_buf, n);
      for (int64_t i = 0; i < H; i++) softmax_row(sc_buf + i * n, n);
      at_gemm(AT_N, AT_N, H, dc, n, 1, sc_buf, n, kv + dr, dk, 0, olat, dc);
      /* W_UV,i after the attention. */
      for (int64_t i = 0; i < H; i++)
        at_gemm(AT_N, AT_N, hd, 1, dc, 1, L->w_uv->data + i * hd * dc, dc, olat + i * dc, 1, 0,
                o->data + (b * H + i) * hd, 1);
    }
    y = at_mla_output(c, L, o);
  }
  at_no_grad_end(c);
  if (!y && at_ctx_status(c) == AT_OK) return at_fail(c, AT_E_NOMEM, "mla_decode: out of step memory");
  return y;
}

/* ---- the mixer ------------------------------------------------------------------------ */

static at_status mla_create(const at_model_cfg *cfg, int layer_index, at_params *p,
                            const char *prefix, void **out) {
  (void)layer_index;
  at_mla *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  return at_mla_declare(L, cfg, &at_mixer_mla, p, prefix);
}

static void mla_init(void *layer, const at_model_cfg *cfg, uint64_t seed) { at_mla_init(layer, cfg, seed); }

/* The explicit form's attention and output projection. */
static at_tensor *mla_attend(at_ctx *c, const at_mla *L, const at_mla_qkv *p) {
  at_attn_opts ao = {.scale = at_mla_scale(L), .window = 0};
  return at_mla_output(c, L, at_attention(c, p->q, p->k, p->v, &ao));
}

static at_tensor *mla_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  const at_mla *L = layer;
  at_mla_qkv p;
  at_mla_project(c, L, x, io ? io->pos0 : 0, &p);
  return mla_attend(c, L, &p);
}

/* The latent and the rotary key: kv_rank + rope_dim elements per token. */
static int64_t mla_cache_per_token(const void *layer) { return at_mla_cache_dim(layer); }

/* Decoding: the latent cache [B, max_len, dr+dc]; prefill runs the explicit
 * form and caches what the absorbed steps read. */
static at_status mla_state_new(const void *layer, at_mixer_state *s) {
  const at_mla *L = layer;
  return at_mixer_state_add(s, AT_SHAPE(s->batch, s->max_len, at_mla_cache_dim(L))) ? AT_OK
                                                                                       : at_error_prefix(AT_E_NOMEM, "mla: latent cache");
}

static at_tensor *mla_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  const at_mla *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_mla, x, L->d, s, io, 0)) return NULL;
  at_mla_qkv p;
  at_mla_project(c, L, x, 0, &p);
  if (!p.q || !p.ckv || (L->dr > 0 && !p.kr)) return NULL;
  at_mla_cache_put(L, &p, s->t[0], 0);
  return mla_attend(c, L, &p);
}

static at_tensor *mla_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  const at_mla *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_mla, x, L->d, s, io, 1)) return NULL;
  return at_mla_decode(c, L, x, s->t[0], io->pos0);
}

const at_mixer_impl at_mixer_mla = {
  .name = "mla",
  .family = "latent",
  .summary = "DeepSeek-V2 multi-head latent attention: KV down-projection to c_KV (RMSNorm), "
             "up-projections, optional query compression, decoupled RoPE; absorbed decode",
  .opts = mla_options,
  .n_opts = AT_ARRAY_LEN(mla_options),
  .opts_size = sizeof(at_mla_opts),
  .check = at_mla_check,
  .create = mla_create,
  .init = mla_init,
  .forward = mla_forward,
  .cache_per_token = mla_cache_per_token,
  .destroy = free,
  .state_new = mla_state_new,
  .prefill = mla_prefill,
  .step = mla_step,
};
