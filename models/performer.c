/* models/performer.c: Performer (Choromanski et al., "Rethinking Attention
 * with Performers", arXiv 2009.14794): softmax attention replaced by its
 * FAVOR+ estimate (ops/attention/favor.h), causal. H = n_heads, K =
 * head_dim, m = num_features, x [B,T,d]:
 *
 *   q = x Wq^T, k = x Wk^T, v = x Wv^T     [B,T,H,K]
 *   o = FAVOR+(q, k, v; Omega)            (positive orthogonal random features
 *       phi(x) = exp(Omega x^ - |x^|^2/2)/sqrt(m), x^ = x K^-1/4, max-stabilised;
 *       causal prefix sums with the normaliser: the linear-attention op)
 *   y = o Wo^T   [B,T,d]
 *
 * The features Omega [m, K] (shared by the heads of a layer; orthogonal blocks
 * with chi-distributed row lengths, or iid) are not parameters: they are
 * drawn from the counter-based stream of (model seed, "layers.<i>.performer.
 * features", draw), with draw = floor(step / redraw_every) for the training
 * step being taken (at_mixer_io.step; 0 when redraw_every is 0). Evaluation
 * sees the last training step, so it uses the features that step used, and
 * a resumed run redraws exactly what the uninterrupted run drew: nothing of
 * them is saved, nothing depends on the history of calls.
 *
 * Parameters (under layers.<i>.performer.): q_proj k_proj v_proj [H*K, d],
 * o_proj [d, H*K]; initialisation N(0, init_std), o_proj as the other
 * mixers' output projections.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "models/linpath.h"
#include "ops/attention/favor.h"
#include "ops/ops.h"

extern const at_mixer_impl at_mixer_performer;

typedef struct performer_opts {
  at_mixer_common common;
  int64_t chunk_size, num_features, redraw_every;
  int orthogonal;
} performer_opts;

static const at_mixer_opt performer_options[] = {
  AT_OPT_HEAD_DIM(performer_opts),
  AT_OPT_I("chunk_size", performer_opts, chunk_size, 1, 4096, 64, "chunk length of the chunkwise training form"),
  AT_OPT_I("num_features", performer_opts, num_features, 0, 1 << 16, 0,
           "random features m per head; 0 = 2 head_dim"),
  AT_OPT_I("redraw_every", performer_opts, redraw_every, 0, 1e9, 1000,
           "draw new features every this many training steps; 0 = never"),
  AT_OPT_B("orthogonal", performer_opts, orthogonal, 1,
           "orthogonal blocks with chi row lengths (FAVOR+) instead of iid Gaussian rows"),
};

typedef struct performer_layer {
  at_lin_layer_base base;
  int64_t d, H, K, m, chunk, redraw_every;
  int orthogonal, pinned;
  uint64_t seed, stream;
  int64_t draw; /* the draw in omega; -1: none yet */
  real *omega;  /* m x K */
  at_tensor *wq, *wk, *wv, *wo;
} performer_layer;

static void performer_destroy(void *layer) {
  performer_layer *L = layer;
  if (L) free(L->omega);
  free(L);
}

static at_status performer_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                                  void **out) {
  (void)layer_index;
  const performer_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_performer, performer_opts);
  performer_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base = (at_lin_layer_base){&at_mixer_performer, AT_LIN_CHUNK};
  L->d = cfg->d_model, L->H = cfg->n_heads, L->K = at_layer_head_dim(cfg, &at_mixer_performer);
  L->m = o->num_features ? o->num_features : 2 * L->K;
  L->chunk = o->chunk_size, L->redraw_every = o->redraw_every, L->orthogonal = o->orthogonal;
  L->draw = -1;
  if (L->H < 1 || L->K < 1 || L->chunk < 1)
    return at_error(AT_E_ARG, "performer: heads %lld, head_dim %lld and chunk_size %lld must be positive",
                    (long long)L->H, (long long)L->K, (long long)L->chunk);
  char name[160];
  snprintf(name, sizeof name, "%sfeatures", prefix);
  L->stream = at_stream_of(name);
  if (!(L->omega = malloc((size_t)(L->m * L->K) * sizeof(real)))) return at_error(AT_E_NOMEM, "out of memory");
  int64_t HK = L->H * L->K;
  if (!(L->wq = at_layer_weight(p, prefix, "q_proj", HK, L->d)) ||
      !(L->wk = at_layer_weight(p, prefix, "k_proj", HK, L->d)) ||
      !(L->wv = at_layer_weight(p, prefix, "v_proj", HK, L->d)) ||
      !(L->wo = at_layer_weight(p, prefix, "o_proj", L->d, HK)))
    return AT_E_ARG;
  return AT_OK;
}

static void set_draw(performer_layer *L, int64_t draw) {
  if (L->pinned || draw == L->draw) return;
  at_favor_draw(L->omega, L->m, L->K, L->orthogonal, L->seed, L->stream, (uint64_t)draw);
  L->draw = draw;
}

static void performer_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  performer_layer *L = layer;
  at_layer_init_normal(L->wq, seed, cfg->init_std);
  at_layer_init_normal(L->wk, seed, cfg->init_std);
  at_layer_init_normal(L->wv, seed, cfg->init_std);
  at_layer_init_out(L->wo, cfg, seed);
  L->seed = seed;
  L->draw = -1;
  set_draw(L, 0);
}

/* The layer over x in one of three runs (at_lin_run); s is the decoding
 * state (NULL in training): t[0] the states [B,H,m,K], t[1] the
 * normalisers [B,H,m], t[2] the keys' running maxima [B,H] (-inf: none yet). */
static at_tensor *performer_run(at_ctx *c, performer_layer *L, at_tensor *x, at_mixer_io *io, at_mixer_state *s,
                                at_lin_run run) {
  set_draw(L, L->redraw_every > 0 ? AT_MAX(io->step, 0) / L->redraw_every : 0);
  int64_t B = x->shape[0], T = x->shape[1], H = L->H, K = L->K;
  at_tensor *q = AT_RESHAPE(c, at_linear(c, x, L->wq, NULL), B, T, H, K);
  at_tensor *k = AT_RESHAPE(c, at_linear(c, x, L->wk, NULL), B, T, H, K);
  at_tensor *v = AT_RESHAPE(c, at_linear(c, x, L->wv, NULL), B, T, H, K);
  at_tensor *W = at_from(c, L->omega, AT_SHAPE(L->m, K)); /* this step's copy: the tape may outlive a redraw */
  at_la_opts o = {0, L->chunk, at_linpath_form(&L->base, AT_LA_CHUNK), 0, 0};
  at_tensor *y;
  if (run == AT_LIN_RUN_STEP) {
    y = at_performer_step(c, q, k, v, W, s->t[0], s->t[1], s->t[2], &o);
  } else if (run == AT_LIN_RUN_PREFILL) {
    at_tensor *ht = NULL, *zt = NULL, *MT = NULL;
    y = at_performer(c, q, k, v, W, NULL, NULL, NULL, &ht, &zt, &MT, &o);
    if (y && (!MT || !at_linpath_keep(s->t[0], ht, s->t[1], zt))) return NULL;
    if (y) memcpy(s->t[2]->data, MT->data, (size_t)MT->size * sizeof(real));
  } else {
    y = at_performer(c, q, k, v, W, NULL, NULL, NULL, NULL, NULL, NULL, &o);
  }
  return at_linear(c, AT_RESHAPE(c, y, B, T, H * K), L->wo, NULL);
}

static at_tensor *performer_forward(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io) {
  performer_layer *L = layer;
  if (!x) return NULL;
  if (x->ndim != 3 || x->shape[2] != L->d) return at_layer_bad_input(c, L->base.impl, x, L->d);
  return performer_run(c, L, x, io, NULL, AT_LIN_RUN_TRAIN);
}

static at_status performer_state_new(const void *layer, at_mixer_state *s) {
  const performer_layer *L = layer;
  at_tensor *M = NULL;
  int ok = at_mixer_state_add(s, AT_SHAPE(s->batch, L->H, L->m, L->K)) && at_mixer_state_add(s, AT_SHAPE(s->batch, L->H, L->m)) &&
           (M = at_mixer_state_add(s, AT_SHAPE(s->batch, L->H)));
  if (!ok) return at_error_prefix(AT_E_NOMEM, "performer: decoding state");
  at_fill(M->data, M->size, -INFINITY);
  return AT_OK;
}

static at_tensor *performer_prefill(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  performer_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->base.impl, x, L->d, s, io, 0)) return NULL;
  return performer_run(c, L, x, io, s, AT_LIN_RUN_PREFILL);
}

static at_tensor *performer_step(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io) {
  performer_layer *L = layer;
  if (!at_mixer_decode_fits(c, L->base.impl, x, L->d, s, io, 1)) return NULL;
  return performer_run(c, L, x, io, s, AT_LIN_RUN_STEP);
}

/* Per head the state m x V, the normaliser m and the running maximum. */
static int64_t performer_state_elems(const void *layer) {
  const performer_layer *L = layer;
  return L->H * (L->m * L->K + L->m + 1);
}

const real *at_performer_features(const void *layer, int64_t *m, int64_t *K, int64_t *draw) {
  const performer_layer *L = layer;
  AT_ASSERT(L && L->base.impl == &at_mixer_performer);
  if (m) *m = L->m;
  if (K) *K = L->K;
  if (draw) *draw = L->pinned ? -1 : L->draw;
  return L->omega;
}

void at_performer_pin_features(void *layer, const real *omega) {
  performer_layer *L = layer;
  AT_ASSERT(L && L->base.impl == &at_mixer_performer);
  memcpy(L->omega, omega, (size_t)(L->m * L->K) * sizeof(real));
  L->pinned = 1;
}

const at_mixer_impl at_mixer_performer = {
  .name = "performer",
  .family = "linear",
  .summary = "Performer (Choromanski et al. 2021): causal FAVOR+ softmax-kernel estimate with positive orthogonal "
             "random features, redrawn every redraw_every steps",
  .opts = performer_options,
  .n_opts = AT_ARRAY_LEN(performer_options),
  .opts_size = sizeof(performer_opts),
  .create = performer_create,
  .init = performer_init,
  .forward = performer_forward,
  .state_elems = performer_state_elems,
  .destroy = performer_destroy,
  .state_new = performer_state_new,
  .prefill = performer_prefill,
  .step = performer_step,
};
