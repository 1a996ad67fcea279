/* models/nsa.c: Native Sparse Attention layer (DeepSeek, arXiv 2502.11089),
 * the mixer `nsa`: three attention branches per query mixed by gates.
 *
 *   q = x Wq^T [B,T,HQ,hd]; per branch c in {cmp, slc, swa}: k_c = x Wk_c^T, v_c = x Wv_c^T [B,T,H,hd]
 *                                           (GQA: G = HQ / H; kv: shared gives the three one Wk, Wv)
 *   q, k_c = RoPE(q), RoPE(k_c)             (position: rope; before every branch)
 *   k~, v~ = phi_k(k_cmp), phi_v(v_cmp)     compressed blocks of l with stride d (ops/attention/nsa.h:
 *                                           X_i = k[i d .. i d + l - 1] + E, k~_i = W2 silu(W1 vec X_i))
 *   o_cmp = softmax(q k~^T / sqrt(hd)) v~   over the blocks ending at or before t (0 if none)
 *   I_t   = top-n selection blocks of l' by the compressed probabilities mapped by overlap and
 *           summed over the G heads of a group (shared by the group; current, first and local
 *           blocks forced; no gradient)
 *   o_slc = attention over k_slc, v_slc of the blocks I_t (causal) (fused, at_attn_layout_selected)
 *   o_swa = attention over k_swa, v_swa at t-w+1 .. t               (fused, window w; w = 0: no branch)
 *   [g_cmp, g_slc, g_swa] = sigmoid(x Wg^T) [B,T,HQ,3]
 *   y = (g_cmp o_cmp + g_slc o_slc + g_swa o_swa) Wo^T
 *
 * The branches share q; `kv: branches` (the paper's "independent keys and
 * values for three branches", against shortcuts from the local branch) gives
 * each its own keys and values, `kv: shared` one set for all three (as
 * flash-linear-attention's NSA).
 *
 * Decoding: caches of each branch's keys and values [B, max_len, H, hd]
 * (one set when shared), and of the compressed keys and values (block i in
 * slot i, computed when its last token arrives). A step attends to the
 * complete compressed blocks, selects as the forward does, and reads the
 * selected blocks and the window from their branches' caches.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/mixer.h"
#include "ops/attention/attention.h"
#include "ops/attention/nsa.h"
#include "ops/ops.h"

typedef struct nsa_opts {
  at_mixer_common common;
  int64_t cmp_block, cmp_stride, sel_block, n_select, n_local, window, cmp_hidden;
  int kv;
} nsa_opts;

enum { KV_BRANCHES, KV_SHARED };
static const char *const kv_names[] = {"branches", "shared", NULL};

static const at_mixer_opt nsa_options[] = {
  AT_OPT_POSITION(nsa_opts),
  AT_OPT_HEAD_DIM(nsa_opts),
  AT_OPT_I("cmp_block", nsa_opts, cmp_block, 1, 1 << 16, 16, "compression block length l"),
  AT_OPT_I("cmp_stride", nsa_opts, cmp_stride, 1, 1 << 16, 8, "compression stride d (<= cmp_block)"),
  AT_OPT_I("sel_block", nsa_opts, sel_block, 1, 1 << 16, 32, "selection block length l'"),
  AT_OPT_I("n_select", nsa_opts, n_select, 1, 1 << 16, 4,
           "selected blocks per query n (the forced blocks included)"),
  AT_OPT_I("n_local", nsa_opts, n_local, 0, 1 << 16, 2,
           "local blocks always selected, the current one included (block 0 is always selected too)"),
  AT_OPT_I("window", nsa_opts, window, 0, 1 << 24, 64,
           "sliding-window branch: query t sees keys t-w+1 .. t; 0 = no window branch"),
  AT_OPT_I("cmp_hidden", nsa_opts, cmp_hidden, 0, 1 << 16, 0,
           "hidden width of the compression MLPs; 0 = 2 head_dim"),
  AT_OPT_E("kv", nsa_opts, kv, kv_names, NULL, KV_BRANCHES,
           "branches: each branch its own key and value projections (the paper); shared: one set (fla)"),
};

extern const at_mixer_impl at_mixer_nsa;

static at_status nsa_check(const at_model_cfg *cfg, void *opts, const char **bad) {
  const nsa_opts *o = opts;
  if (o->common.position == AT_POS_ROPE && o->common.head_dim % 2) {
    *bad = "head_dim";
    return at_error(AT_E_CONFIG, "RoPE needs an even head_dim, got %lld%s", (long long)o->common.head_dim,
                    o->common.head_dim == cfg->d_model / cfg->n_heads ? " (d_model / n_heads)" : "");
  }
  if (o->cmp_stride > o->cmp_block) {
    *bad = "cmp_stride";
    return at_error(AT_E_CONFIG, "cmp_stride %lld is larger than cmp_block %lld (blocks would skip tokens)",
                    (long long)o->cmp_stride, (long long)o->cmp_block);
  }
  return AT_OK;
}

enum { CMP, SLC, SWA };

typedef struct nsa_layer {
  at_tensor *wq, *wo, *wg;
  at_tensor *wk[3], *wv[3]; /* per branch (CMP, SLC, SWA); shared: the same tensors; no window: SWA NULL */
  int shared;
  at_tensor *k_pe, *k_w1, *k_w2, *v_pe, *v_w1, *v_w2;
  int64_t hq, h, hd, window, hidden;
  at_nsa_blocks blk;
  at_position position;
  double rope_theta;
} nsa_layer;

/* The key and value projections: wk, wv (shared), else wk_cmp, wv_cmp,
 * wk_slc, wv_slc and, with a window, wk_swa, wv_swa. */
static int nsa_create_kv(nsa_layer *L, at_params *p, const char *prefix, int64_t d) {
  static const char *const kn[3] = {"wk_cmp", "wk_slc", "wk_swa"}, *const vn[3] = {"wv_cmp", "wv_slc", "wv_swa"};
  int64_t n = L->h * L->hd;
  for (int b = 0; b < 3; b++) {
    if (b == SWA && L->window == 0) continue;
    if (L->shared && b > CMP) {
      L->wk[b] = L->wk[CMP], L->wv[b] = L->wv[CMP];
      continue;
    }
    if (!(L->wk[b] = at_layer_weight(p, prefix, L->shared ? "wk" : kn[b], n, d)) ||
        !(L->wv[b] = at_layer_weight(p, prefix, L->shared ? "wv" : vn[b], n, d)))
      return 0;
  }
  return 1;
}

static at_status nsa_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                            void **out) {
  (void)layer_index;
  const nsa_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_nsa, nsa_opts);
  nsa_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->hq = cfg->n_heads, L->h = cfg->n_kv_heads;
  L->hd = at_layer_head_dim(cfg, &at_mixer_nsa);
  L->window = o->window;
  L->hidden = o->cmp_hidden > 0 ? o->cmp_hidden : 2 * L->hd;
  L->blk = (at_nsa_blocks){.cmp_block = o->cmp_block, .cmp_stride = o->cmp_stride,
                           .sel_block = o->sel_block, .n_select = o->n_select, .n_local = o->n_local};
  L->position = at_layer_position(cfg, &at_mixer_nsa);
  L->rope_theta = cfg->rope_theta;
  L->shared = o->kv == KV_SHARED;
  if (L->h < 1 || L->hq % L->h != 0)
    return at_error(AT_E_ARG, "n_heads %lld is not a multiple of n_kv_heads %lld", (long long)L->hq,
                    (long long)L->h);
  if (L->position == AT_POS_ROPE && L->hd % 2 != 0)
    return at_error(AT_E_ARG, "RoPE needs an even head dim, got %lld", (long long)L->hd);
  if (L->blk.cmp_stride < 1 || L->blk.cmp_stride > L->blk.cmp_block || L->blk.sel_block < 1 || L->blk.n_select < 1)
    return at_error(AT_E_ARG, "nsa: need 1 <= cmp_stride <= cmp_block, sel_block >= 1, n_select >= 1");
  int64_t d = cfg->d_model, l = L->blk.cmp_block, hd = L->hd, F = L->hidden;
  if (!(L->wq = at_layer_weight(p, prefix, "wq", L->hq * hd, d)) || !nsa_create_kv(L, p, prefix, d) ||
      !(L->wg = at_layer_weight(p, prefix, "wg", 3 * L->hq, d)) ||
      !(L->wo = at_layer_weight(p, prefix, "wo", d, L->hq * hd)) ||
      !(L->k_pe = at_layer_param(p, prefix, "k_pe", AT_SHAPE(l, hd), 0)) ||
      !(L->k_w1 = at_layer_weight(p, prefix, "k_w1", F, l * hd)) ||
      !(L->k_w2 = at_layer_weight(p, prefix, "k_w2", hd, F)) ||
      !(L->v_pe = at_layer_param(p, prefix, "v_pe", AT_SHAPE(l, hd), 0)) ||
      !(L->v_w1 = at_layer_weight(p, prefix, "v_w1", F, l * hd)) ||
      !(L->v_w2 = at_layer_weight(p, prefix, "v_w2", hd, F)))
    return AT_E_ARG;
  return AT_OK;
}

/* Projections N(0, init_std); the compression MLPs N(0, fan_in^-1/2), so a
 * compressed key starts at the scale of the keys. */
static void nsa_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  nsa_layer *L = layer;
  double std = cfg->init_std;
  at_tensor *proj[] = {L->wq, L->wg, L->k_pe, L->v_pe};
  for (int i = 0; i < AT_ARRAY_LEN(proj); i++) at_layer_init_normal(proj[i], seed, std);
  for (int b = 0; b < (L->shared ? 1 : 3); b++)
    if (L->wk[b]) at_layer_init_normal(L->wk[b], seed, std), at_layer_init_normal(L->wv[b], seed, std);
  at_tensor *mlp[] = {L->k_w1, L->k_w2, L->v_w1, L->v_w2};
  for (int i = 0; i < AT_ARRAY_LEN(mlp); i++) at_layer_init_normal(mlp[i], seed, 1 / sqrt((double)mlp[i]->shape[1]));
  at_layer_init_out(L->wo, cfg, seed);
}

/* Keys and values of a branch's projections. */
typedef struct nsa_kv {
  at_tensor *k[3], *v[3];
} nsa_kv;

/* q [B,T,HQ,hd] and each branch's k, v [B,T,H,hd] of x at positions pos0
 * .. pos0+T-1 (computed once when shared); 0 if out of memory. */
static int nsa_qkv(at_ctx *c, const nsa_layer *L, at_tensor *x, int64_t pos0, at_tensor **q, nsa_kv *kv) {
  int64_t B = x->shape[0], T = x->shape[1];
  *q = AT_RESHAPE(c, at_linear(c, x, L->wq, NULL), B, T, L->hq, L->hd);
  if (L->position == AT_POS_ROPE) *q = at_rope(c, *q, L->hd, L->rope_theta, pos0);
  int ok = *q != NULL;
  for (int b = 0; b < 3; b++) {
    kv->k[b] = kv->v[b] = NULL;
    if (!L->wk[b]) continue;
    if (L->shared && b > CMP) {
      kv->k[b] = kv->k[CMP], kv->v[b] = kv->v[CMP];
      continue;
    }
    kv->k[b] = AT_RESHAPE(c, at_linear(c, x, L->wk[b], NULL), B, T, L->h, L->hd);
    kv->v[b] = AT_RESHAPE(c, at_linear(c, x, L->wv[b], NULL), B, T, L->h, L->hd);
    if (L->position == AT_POS_ROPE) kv->k[b] = at_rope(c, kv->k[b], L->hd, L->rope_theta, pos0);
    ok &= kv->k[b] && kv->v[b];
  }
  return ok;
}

/* (sum_c g_c o_c) Wo^T with g = sigmoid(x Wg^T) [B,T,HQ,3]; NULL branches
 * are absent (zero). The sum runs as one batched product per (b, t, hq):
 * [1, 3] g times [3, hd] (o_cmp; o_slc; o_swa). */
static at_tensor *nsa_mix(at_ctx *c, const nsa_layer *L, at_tensor *x, at_tensor *const o[3]) {
  int64_t B = x->shape[0], T = x->shape[1], n = B * T * L->hq;
  at_tensor *g = AT_RESHAPE(c, at_sigmoid(c, at_linear(c, x, L->wg, NULL)), n, 1, 3), *os[3];
  for (int b = 0; b < 3; b++) os[b] = o[b] ? o[b] : at_zeros(c, AT_SHAPE(B, T, L->hq, L->hd));
  at_tensor *stack = AT_RESHAPE(c, at_concat(c, os, 3, 3), n, 3, L->hd);
  at_tensor *y = at_matmul(c, g, stack, AT_N, AT_N); /* [n, 1, hd] */
  return at_linear(c, AT_RESHAPE(c, y, B, T, L->hq * L->hd), L->wo, NULL);
}

/* The selected and window branches over their keys and values (the
 * forward's, or decoding caches of len positions when decode) given the
 * selection. */
static void nsa_sparse_branches(at_ctx *c, const nsa_layer *L, at_tensor *q, const nsa_kv *kv,
                                const at_itensor *sel, int64_t len, int decode, at_tensor **o_slc,
                                at_tensor **o_swa) {
  at_attn_layout *lay = at_attn_layout_selected(c, len, 1, L->blk.sel_block, sel, L->hq / L->h);
  at_attn_opts so = {.layout = lay}, wo = {.window = L->window};
  at_tensor *k = kv->k[SLC], *v = kv->v[SLC];
  *o_slc = !lay ? NULL : decode ? at_attention_decode(c, q, k, v, len, &so) : at_attention(c, q, k, v, &so);
  *o_swa = NULL;
  k = kv->k[SWA], v = kv->v[SWA];
  if (L->window > 0) *o_swa = decode ? at_attention_decode(c, q, k, v, len, &wo) : at_attention(c, q, k, v, &wo);
}

/* The compressed branch for q at pos0 .. over C >= 0 blocks kc, vc, and
 * the selection it implies (rows 0 .. pos0 + Tq - 1). */
static at_tensor *nsa_cmp_branch(at_ctx *c, const nsa_layer *L, at_tensor *q, at_tensor *kc, at_tensor *vc,
                                 int64_t pos0, at_itensor **sel) {
  if (kc) return at_nsa_cmp_attention(c, q, kc, vc, &L->blk, pos0, 0, sel);
  *sel = at_nsa_select(c, NULL, q->shape[0], L->h, L->hq / L->h, q->shape[1], pos0, &L->blk);
  return NULL;
}

/* ---- decoding caches ---------------------------------------------------------------
 * t[0], t[1]: the compressed branch's keys and values [B, max_len, H, hd],
 * position p in slot p (every branch's when shared); t[2], t[3]: compressed
 * keys and values, block i in slot i; t[4], t[5]: the selected branch's keys
 * and values, t[6], t[7] the window's (not shared). */
static int kv_slot(const nsa_layer *L, int b) { return L->shared || b == CMP ? 0 : b == SLC ? 4 : 6; }

static int n_caches(const nsa_layer *L) { return L->shared ? 4 : L->window > 0 ? 8 : 6; }

/* Each branch's key and value caches (whole; a step reads its first positions). */
static nsa_kv cached_kv(const nsa_layer *L, at_mixer_state *s) {
  nsa_kv kv = {{NULL}, {NULL}};
  for (int b = 0; b < 3; b++)
    if (L->wk[b]) kv.k[b] = s->t[kv_slot(L, b)], kv.v[b] = s->t[kv_slot(L, b) + 1];
  return kv;
}

/* Rows 0 .. rows-1 of src [B, rows, H, hd] into the cache dst [B, S, H, hd]. */
static void cache_rows(const nsa_layer *L, at_tensor *dst, const at_tensor *src, int64_t rows) {
  int64_t row = L->h * L->hd, S = dst->shape[1];
  for (int64_t b = 0; b < src->shape[0] && rows > 0; b++)
    memcpy(dst->data + b * S * row, src->data + b * rows * row, (size_t)(rows * row) * sizeof(real));
}

/* The training form at positions 0 .. T-1; with s (prefill) the caches
 * receive the keys, values and compressed blocks. */
static at_tensor *nsa_apply(at_ctx *c, const nsa_layer *L, at_tensor *x, at_mixer_state *s) {
  if (!x) return NULL;
  int64_t T = x->shape[1], C = at_nsa_n_cmp(&L->blk, T);
  at_tensor *q, *kc = NULL, *vc = NULL, *o[3];
  nsa_kv kv;
  if (!nsa_qkv(c, L, x, 0, &q, &kv)) return NULL;
  if (C > 0) {
    kc = at_nsa_compress(c, kv.k[CMP], L->k_pe, L->k_w1, L->k_w2, &L->blk);
    vc = at_nsa_compress(c, kv.v[CMP], L->v_pe, L->v_w1, L->v_w2, &L->blk);
    if (!kc || !vc) return NULL;
  }
  at_itensor *sel;
  o[0] = nsa_cmp_branch(c, L, q, kc, vc, 0, &sel);
  if (!sel || (C > 0 && !o[0])) return NULL;
  nsa_sparse_branches(c, L, q, &kv, sel, T, 0, &o[1], &o[2]);
  if (!o[1] || (L->window > 0 && !o[2])) return NULL;
  if (s) {
    for (int b = 0; b < 3; b++)
      if (kv.k[b]) cache_rows(L, s->t[kv_slot(L, b)], kv.k[b], T), cache_rows(L, s->t[kv_slot(L, b) + 1], kv.v[b], T);
    if (C > 0) cache_rows(L, s->t[2], kc, C), cache_rows(L, s->t[3], vc, C);
  }
  return nsa_mix(c, L, x, o);
}

static at_tensor *nsa_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  (void)io;
  return nsa_apply(c, layer, x, NULL);
}

static at_status nsa_state_new(const void *layer, at_mixer_state *s) {
  const nsa_layer *L = layer;
  for (int t = 0; t < n_caches(L); t++)
    if (!at_mixer_state_add(s, AT_SHAPE(s->batch, s->max_len, L->h, L->hd)))
      return at_error_prefix(AT_E_NOMEM, "nsa: caches");
  return AT_OK;
}

static at_tensor *nsa_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  nsa_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_nsa, x, L->wq->shape[1], s, io, 0)) return NULL;
  return nsa_apply(c, L, x, s);
}

/* Row t of src [B, T, H, hd] into slot `slot` of the cache dst. */
static void cache_row(const nsa_layer *L, at_tensor *dst, int64_t slot, const at_tensor *src, int64_t t) {
  int64_t row = L->h * L->hd, S = dst->shape[1], T = src->shape[1];
  for (int64_t b = 0; b < src->shape[0]; b++)
    memcpy(dst->data + (b * S + slot) * row, src->data + (b * T + t) * row, (size_t)row * sizeof(real));
}

/* The block that ends at pos (if one does) into the compressed caches. */
static int compress_new_block(at_ctx *c, const nsa_layer *L, at_mixer_state *s, int64_t pos) {
  int64_t start = pos - L->blk.cmp_block + 1;
  if (start < 0 || start % L->blk.cmp_stride) return 1;
  at_tensor *kb = at_slice(c, s->t[0], 1, start, L->blk.cmp_block), *vb = at_slice(c, s->t[1], 1, start, L->blk.cmp_block);
  at_tensor *kc = at_nsa_compress(c, kb, L->k_pe, L->k_w1, L->k_w2, &L->blk);
  at_tensor *vc = at_nsa_compress(c, vb, L->v_pe, L->v_w1, L->v_w2, &L->blk);
  if (!kc || !vc) return 0;
  cache_row(L, s->t[2], start / L->blk.cmp_stride, kc, 0);
  cache_row(L, s->t[3], start / L->blk.cmp_stride, vc, 0);
  return 1;
}

static at_tensor *nsa_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  nsa_layer *L = layer;
  if (!at_mixer_decode_fits(c, &at_mixer_nsa, x, L->wq->shape[1], s, io, 1)) return NULL;
  int64_t pos = io->pos0, C = at_nsa_n_cmp(&L->blk, pos + 1);
  at_tensor *q, *o[3];
  nsa_kv kv;
  if (!nsa_qkv(c, L, x, pos, &q, &kv)) return NULL;
  for (int b = 0; b < 3; b++)
    if (kv.k[b]) cache_row(L, s->t[kv_slot(L, b)], pos, kv.k[b], 0), cache_row(L, s->t[kv_slot(L, b) + 1], pos, kv.v[b], 0);
  if (!compress_new_block(c, L, s, pos)) return NULL;
  at_tensor *kc = C > 0 ? at_slice(c, s->t[2], 1, 0, C) : NULL, *vc = C > 0 ? at_slice(c, s->t[3], 1, 0, C) : NULL;
  if (C > 0 && (!kc || !vc)) return NULL;
  at_itensor *sel;
  o[0] = nsa_cmp_branch(c, L, q, kc, vc, pos, &sel);
  if (!sel || (C > 0 && !o[0])) return NULL;
  nsa_kv past = cached_kv(L, s);
  nsa_sparse_branches(c, L, q, &past, sel, pos + 1, 1, &o[1], &o[2]);
  if (!o[1] || (L->window > 0 && !o[2])) return NULL;
  return nsa_mix(c, L, x, o);
}

/* Keys and values, and the compressed cache's slot per token. */
static int64_t nsa_cache_per_token(const void *layer) {
  const nsa_layer *L = layer;
  return n_caches(L) * L->h * L->hd;
}

const at_mixer_impl at_mixer_nsa = {
  .name = "nsa",
  .family = "sparse",
  .summary = "native sparse attention: gated sum of attention over MLP-compressed blocks, over the "
             "top-n blocks they rank (shared by a GQA group) and over a sliding window",
  .opts = nsa_options,
  .n_opts = AT_ARRAY_LEN(nsa_options),
  .opts_size = sizeof(nsa_opts),
  .check = nsa_check,
  .create = nsa_create,
  .init = nsa_init,
  .forward = nsa_forward,
  .cache_per_token = nsa_cache_per_token,
  .destroy = free,
  .state_new = nsa_state_new,
  .prefill = nsa_prefill,
  .step = nsa_step,
};
