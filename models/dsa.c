/* models/dsa.c: DeepSeek Sparse Attention layer (DeepSeek-V3.2), the mixer
 * `dsa`: MLA main attention (models/mla.h) plus a lightning indexer.
 *
 * Indexer (its own parameters, group AT_GROUP_INDEXER; sparse_path §1.2):
 *   q_idx = RoPE(W_qI sg(c_Q or x))          [HI, DI]   (RoPE on the first dr dims)
 *   k_idx = RoPE(LayerNorm(W_kI sg(x)))      [DI]       one key per token for every head
 *   w     = W_w sg(x) HI^-1/2 DI^-1/2        [HI]
 *   I[t,s] = sum_j w[t,j] ReLU(q_idx[t,j] . k_idx[s])    s <= t
 * sg = stop-gradient: the indexer reads detached inputs, so its loss trains
 * the indexer alone and nothing of it reaches the main model (DeepSeek:
 * "we detach the indexer input from the computational graph").
 *
 * Forward by the stage flags (io->stage, set by the training loop):
 *   no flag     dense MLA attention (the indexer is not run unless its loss is on)
 *   AT_STAGE_SPARSE  top-k selection S_t (topk keys, shared by all heads of token t;
 *             rows with t+1 <= topk are dense), attention over S_t only
 *             (at_dsa_attention in MHA mode: q/k dim dr + hd, v dim hd);
 *             the selection is integer, so the LM loss gives the indexer no
 *             gradient
 *   AT_STAGE_AUX_LOSS  adds KL(p_t || softmax(I[t, L_t])), the mean over the
 *             B T rows, to io->aux_loss, with p_t the main attention's
 *             probabilities summed over heads and L1-normalised (a constant):
 *             L_t = every causal key (dense, DeepSeek's Eq. 3) or S_t with
 *             teacher and student renormalised over it (sparse, Eq. 4);
 *             and reports the statistics "indexer_kl" and "topk_recall" in io.
 *
 * The statistic "topk_recall" is the share of the dense attention mass (heads
 * summed, normalised) inside the top-k selection, averaged over the query
 * rows that have more causal keys than topk (the rows where the selection
 * matters: at_dsa_loss_stats.recall_tail); when no row has (T <= topk) it is
 * the mean over all rows, 1. The statistics are computed only when
 * the indexer loss is on (in the sparse stage the recall costs one extra pass of
 * q.k over all causal keys, O(T^2 H (dr+hd))).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mla.h"
#include "ops/attention/attention.h"
#include "ops/ops.h"

/* DeepSeek-V3.2's indexer LayerNorm eps. */
#define INDEX_NORM_EPS 1e-6

extern const at_mixer_impl at_mixer_dsa;

static const at_mixer_opt dsa_options[] = {
  AT_MLA_OPTS,
  AT_OPT_I("index_heads", at_mla_opts, index_heads, 1, 1024, 4, "indexer heads HI"),
  AT_OPT_I("index_dim", at_mla_opts, index_dim, 1, 4096, 16, "indexer head dim DI (>= rope_dim)"),
  AT_OPT_I("topk", at_mla_opts, topk, 1, 1 << 24, 32, "keys each token attends to in the sparse stage"),
};

static at_status dsa_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  at_status st = at_mla_check(cfg, opts, bad);
  const at_mla_opts *o = opts;
  if (st == AT_OK && o->index_dim < o->rope_dim) {
    *bad = "index_dim";
    return at_error(AT_E_CONFIG, "index_dim %lld is smaller than rope_dim %lld (the indexer rotates its "
                    "first rope_dim dimensions)", (long long)o->index_dim, (long long)o->rope_dim);
  }
  return st;
}

static at_status dsa_create(const at_model_cfg *cfg, int layer_index, at_params *p,
                            const char *prefix, void **out) {
  (void)layer_index;
  at_dsa_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  at_status st = at_mla_declare(&L->mla, cfg, &at_mixer_dsa, p, prefix);
  if (st != AT_OK) return st;
  const at_mla_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_dsa, at_mla_opts);
  L->hi = o->index_heads, L->di = o->index_dim, L->topk = o->topk;
  if (L->hi < 1 || L->di < 1 || L->topk < 1)
    return at_error(AT_E_ARG, "dsa: index_heads %lld, index_dim %lld and topk %lld must be >= 1",
                    (long long)L->hi, (long long)L->di, (long long)L->topk);
  if (L->mla.dr > L->di)
    return at_error(AT_E_ARG, "dsa: index_dim %lld is smaller than rope_dim %lld (the indexer "
                    "rotates its first rope_dim dims)", (long long)L->di, (long long)L->mla.dr);
  int64_t d = L->mla.d, qin = L->mla.dq > 0 ? L->mla.dq : d;
  const int g = AT_GROUP_INDEXER;
  if (!(L->w_qi = at_layer_param_group(p, prefix, "w_qi", AT_SHAPE(L->hi * L->di, qin), 0, g)) ||
      !(L->w_ki = at_layer_param_group(p, prefix, "w_ki", AT_SHAPE(L->di, d), 0, g)) ||
      !(L->k_norm_w = at_layer_param_group(p, prefix, "k_norm_w", AT_SHAPE(L->di), AT_PARAM_NO_DECAY, g)) ||
      !(L->k_norm_b = at_layer_param_group(p, prefix, "k_norm_b", AT_SHAPE(L->di), AT_PARAM_NO_DECAY, g)) ||
      !(L->w_wi = at_layer_param_group(p, prefix, "w_wi", AT_SHAPE(L->hi, d), 0, g)))
    return AT_E_ARG;
  return AT_OK;
}

static void dsa_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  at_dsa_layer *L = layer;
  at_mla_init(&L->mla, cfg, seed);
  at_layer_init_normal(L->w_qi, seed, cfg->init_std);
  at_layer_init_normal(L->w_ki, seed, cfg->init_std);
  at_layer_init_normal(L->w_wi, seed, cfg->init_std);
  at_layer_init_const(L->k_norm_w, 1);
  at_layer_init_const(L->k_norm_b, 0);
}

/* The indexer's queries [B,T,HI,DI], keys [B,T,DI] and head weights [B,T,HI]
 * from detached x and c_Q (cq NULL: queries from x). */
static void indexer(at_ctx *c, const at_dsa_layer *L, at_tensor *x, at_tensor *cq, int64_t pos0,
                    at_tensor **qi, at_tensor **ki, at_tensor **wi) {
  *qi = *ki = *wi = NULL;
  if (!x) return;
  int64_t B = x->shape[0], T = x->shape[1], dr = L->mla.dr;
  double theta = L->mla.rope_theta;
  at_tensor *xd = at_detach(c, x), *qin = cq ? at_detach(c, cq) : xd;
  at_tensor *q = AT_RESHAPE(c, at_linear(c, qin, L->w_qi, NULL), B, T, L->hi, L->di);
  at_tensor *k = at_layernorm(c, at_linear(c, xd, L->w_ki, NULL), L->k_norm_w, L->k_norm_b, INDEX_NORM_EPS);
  if (dr > 0) {
    q = at_rope(c, q, dr, theta, pos0);
    k = at_rope(c, k, dr, theta, pos0);
  }
  *qi = q;
  *ki = k;
  *wi = at_scale(c, at_linear(c, xd, L->w_wi, NULL), 1.0 / sqrt((double)(L->hi * L->di)));
}

/* Index keys ki [B, T, DI] (positions 0 ..) and the latent entries of p
 * into the decoding state's caches (t[0] latent, t[1] index keys). */
static void dsa_cache_put(const at_dsa_layer *L, const at_mla_qkv *p, const at_tensor *ki, at_mixer_state *s) {
  at_mla_cache_put(&L->mla, p, s->t[0], 0);
  int64_t B = ki->shape[0], T = ki->shape[1], S = s->t[1]->shape[1];
  for (int64_t b = 0; b < B; b++)
    memcpy(s->t[1]->data + b * S * L->di, ki->data + b * T * L->di, (size_t)(T * L->di) * sizeof(real));
}

/* The layer under io's stage flags; with a decoding state s (prefill) the
 * indexer runs in every stage and both caches receive every token. */
static at_tensor *dsa_apply(at_ctx *c, const at_dsa_layer *L, at_tensor *x, at_mixer_io *io, at_mixer_state *s) {
  /* The io's out fields (aux_loss, statistics) are written through it: the
   * model passes its own, writable at_mixer_io. */
  int64_t pos0 = io ? io->pos0 : 0;
  int sparse = io && (io->stage & AT_STAGE_SPARSE), want_loss = io && (io->stage & AT_STAGE_AUX_LOSS);
  at_mla_qkv p;
  at_mla_project(c, &L->mla, x, pos0, &p);
  double scale = at_mla_scale(&L->mla);
  at_tensor *qi = NULL, *ki = NULL, *wi = NULL;
  at_itensor *sel = NULL;
  if (sparse || want_loss || s) {
    indexer(c, L, x, p.cq, pos0, &qi, &ki, &wi);
    if (!qi || !ki || !wi) return NULL;
  }
  if (sparse || want_loss) {
    /* w already carries the scale, so the indexer's own scale is 1. */
    sel = at_dsa_topk(c, qi, ki, wi, L->topk, 1.0);
    if (!sel) return NULL;
  }
  if (s) {
    if (!p.ckv || (L->mla.dr > 0 && !p.kr)) return NULL;
    dsa_cache_put(L, &p, ki, s);
  }
  at_tensor *o;
  if (sparse) {
    o = at_dsa_attention(c, p.q, p.k, p.v, sel, scale);
  } else {
    at_attn_opts ao = {.scale = scale, .window = 0};
    o = at_attention(c, p.q, p.k, p.v, &ao);
  }
  if (want_loss && p.q && p.k) {
    at_dsa_loss_opts lo = {.scale = scale, .scale_idx = 1.0, .sparse = sparse};
    at_dsa_loss_stats st;
    at_tensor *kl = at_dsa_indexer_loss(c, qi, ki, wi, p.q, p.k, sel, &lo, &st);
    if (!kl) return NULL;
    io->aux_loss = io->aux_loss ? at_add(c, io->aux_loss, kl) : kl;
    at_mixer_io_stat(io, "indexer_kl", st.kl);
    at_mixer_io_stat(io, "topk_recall", st.tail_rows > 0 ? st.recall_tail : st.recall);
  }
  return at_mla_output(c, &L->mla, o);
}

static at_tensor *dsa_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  return dsa_apply(c, layer, x, io, NULL);
}

/* Decoding: the latent cache [B, max_len, dr+dc] and the index keys
 * [B, max_len, DI]; a step attends to the indexer's top-k slots when the
 * stage is sparse (at_dsa_layer_decode), else to every slot. */
static at_status dsa_state_new(const void *layer, at_mixer_state *s) {
  const at_dsa_layer *L = layer;
  if (!at_mixer_state_add(s, AT_SHAPE(s->batch, s->max_len, at_mla_cache_dim(&L->mla))) ||
      !at_mixer_state_add(s, AT_SHAPE(s->batch, s->max_len, L->di)))
    return at_error_prefix(AT_E_NOMEM, "dsa: caches");
  return AT_OK;
}

static at_tensor *dsa_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  const at_dsa_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_dsa, x, L->mla.d, s, io, 0)) return NULL;
  return dsa_apply(c, L, x, io, s);
}

static at_tensor *dsa_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  const at_dsa_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_dsa, x, L->mla.d, s, io, 1)) return NULL;
  return at_dsa_layer_decode(c, L, x, s->t[0], s->t[1], io->pos0, (io->stage & AT_STAGE_SPARSE) != 0);
}

/* MLA's latent and rotary key plus the index key: kv_rank + rope_dim + DI. */
static int64_t dsa_cache_per_token(const void *layer) {
  const at_dsa_layer *L = layer;
  return at_mla_cache_dim(&L->mla) + L->di;
}

int64_t at_dsa_layer_index_dim(const at_dsa_layer *L) { return L->di; }

at_tensor *at_dsa_layer_decode(at_ctx *c, const at_dsa_layer *L, at_tensor *x, at_tensor *cache,
                               at_tensor *index_cache, int64_t pos, int sparse) {
  if (!x || !cache || !index_cache) return NULL;
  char sx[96], si[96];
  if (x->ndim != 3 || x->shape[1] != 1 || index_cache->ndim != 3 ||
      index_cache->shape[0] != x->shape[0] || index_cache->shape[2] != L->di)
    return at_fail(c, AT_E_SHAPE, "dsa_decode: x %s must be [B, 1, d] and index_cache %s [B, S, %lld]",
                   AT_SHAPE_STR(x, sx), AT_SHAPE_STR(index_cache, si), (long long)L->di);
  int64_t B = x->shape[0], S = index_cache->shape[1];
  if (pos < 0 || pos >= S)
    return at_fail(c, AT_E_ARG, "dsa_decode: position %lld outside the index cache's %lld slots",
                   (long long)pos, (long long)S);
  at_itensor *sel = NULL;
  at_no_grad_begin(c);
  at_tensor *cq = NULL;
  if (L->mla.dq > 0) cq = at_rmsnorm(c, at_linear(c, x, L->mla.w_dq, NULL), L->mla.q_norm, L->mla.norm_eps);
  at_tensor *qi, *ki, *wi;
  indexer(c, L, x, cq, pos, &qi, &ki, &wi);
  int ok = qi && ki && wi && (cq || L->mla.dq == 0);
  if (ok) {
    for (int64_t b = 0; b < B; b++)
      memcpy(index_cache->data + (b * S + pos) * L->di, ki->data + b * L->di, (size_t)L->di * sizeof(real));
    if (sparse) ok = (sel = at_dsa_topk_decode(c, qi, index_cache, wi, pos + 1, L->topk, 1.0)) != NULL;
  }
  at_no_grad_end(c);
  if (!ok) return NULL;
  return at_mla_decode_selected(c, &L->mla, x, cache, pos, sel);
}

const at_mixer_impl at_mixer_dsa = {
  .name = "dsa",
  .family = "sparse",
  .summary = "DeepSeek sparse attention: MLA plus the lightning indexer I[t,s] = sum_j w[t,j] "
             "ReLU(q_idx[t,j] . k_idx[s]), top-k keys shared by the heads; trained by stages",
  .opts = dsa_options,
  .n_opts = AT_ARRAY_LEN(dsa_options),
  .opts_size = sizeof(at_mla_opts),
  .check = dsa_check,
  .stage_flags = AT_STAGE_SPARSE | AT_STAGE_AUX_LOSS,
  .groups = 1u << AT_GROUP_INDEXER,
  .create = dsa_create,
  .init = dsa_init,
  .forward = dsa_forward,
  .cache_per_token = dsa_cache_per_token,
  .destroy = free,
  .state_new = dsa_state_new,
  .prefill = dsa_prefill,
  .step = dsa_step,
};
