/* models/bigbird.c: BigBird block-sparse attention for causal LMs (Zaheer et
 * al. 2020, arXiv 2007.14062), the mixer `bigbird`.
 *
 *   blocks of b positions (block), query block r = floor(i / b), key block s = floor(j / b)
 *   key blocks of query block r, head h:
 *     window  s in {r - w .. r}                          (w = window_blocks earlier blocks)
 *     global  s < g, and every block s sees all earlier blocks if r < g   (g = global_blocks)
 *     random  R(h, r): min(random_blocks, m) distinct blocks drawn uniformly from the
 *             m = r - w - g blocks in between, g .. r - w - 1 (causal: only earlier blocks)
 *   visible(i, j) = j <= i and s is one of them
 *   q, k, v, RoPE, o_i = sum_{j visible} softmax_j(q_i . k_j / sqrt(hd)) v_j, y = o Wo^T as
 *   `full` (models/softmax_layer.h; GQA by n_kv_heads)
 *
 * The random blocks are a pure function of (layer seed, h, r) by the counter RNG
 * (ops/attention/layout.h at_attn_layout_bigbird, Floyd's sampling), the layer seed
 * itself of (the model seed, the layer index): drawn once per layer in effect (every
 * forward and every decoding step sees the same blocks, for any T), and saved with
 * the model by construction (a checkpoint's run config holds the model seed; no
 * table is stored). The paper's encoder window (one block on each side) becomes the
 * query block and w earlier ones; its global blocks (first and last) become the
 * first g blocks, the only ones a causal model can make global.
 */
#include <stdlib.h>

#include "core/rng.h"
#include "models/softmax_layer.h"

typedef struct bb_opts {
  at_mixer_common common;
  int64_t block, window_blocks, global_blocks, random_blocks;
} bb_opts;

static const at_mixer_opt bb_options[] = {
  AT_OPT_POSITION(bb_opts),
  AT_OPT_HEAD_DIM(bb_opts),
  AT_OPT_I("block", bb_opts, block, 1, 1 << 20, 16, "b: block length (queries and keys; the kernel's tiles)"),
  AT_OPT_I("window_blocks", bb_opts, window_blocks, 0, 1 << 20, 1, "w: earlier blocks in each query block's window"),
  AT_OPT_I("global_blocks", bb_opts, global_blocks, 0, 1 << 20, 1, "g: the first g blocks are global"),
  AT_OPT_I("random_blocks", bb_opts, random_blocks, 0, 1 << 20, 1,
           "r: random earlier blocks per query block and head (fixed per layer by the model seed)"),
};

extern const at_mixer_impl at_mixer_bigbird;

typedef struct bb_layer {
  at_softmax_layer base;
  int64_t block, w, g, r;
  int layer_index;
  uint64_t seed; /* the layer's: from the model seed and the layer index */
} bb_layer;

static at_attn_layout *bb_layout(at_ctx *c, const void *layer, int64_t T) {
  const bb_layer *L = layer;
  return at_attn_layout_bigbird(c, T, L->block, L->w, L->g, L->r, L->base.hq, L->seed);
}

static at_status bb_create(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                           void **out) {
  const bb_opts *o = AT_MIXER_OPTS(cfg, &at_mixer_bigbird, bb_opts);
  bb_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->base.layout = bb_layout;
  L->block = o->block, L->w = o->window_blocks, L->g = o->global_blocks, L->r = o->random_blocks;
  L->layer_index = layer_index;
  if (L->block < 1 || L->w < 0 || L->g < 0 || L->r < 0)
    return at_error(AT_E_ARG, "bigbird: block %lld must be positive, window_blocks %lld, global_blocks %lld, "
                    "random_blocks %lld not negative", (long long)L->block, (long long)L->w, (long long)L->g,
                    (long long)L->r);
  return at_softmax_declare(&L->base, &at_mixer_bigbird, cfg, p, prefix);
}

static void bb_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  bb_layer *L = layer;
  at_softmax_init(&L->base, cfg, seed);
  at_rng rng = at_rng_make(seed, at_stream_of("bigbird.random_blocks") + (uint64_t)L->layer_index);
  L->seed = at_rng_u64(&rng);
}

const at_mixer_impl at_mixer_bigbird = {
  .name = "bigbird",
  .family = "sparse",
  .summary = "BigBird block-sparse attention, causal (Zaheer et al. 2020): window, global and random "
             "earlier blocks per query block and head",
  .opts = bb_options,
  .n_opts = AT_ARRAY_LEN(bb_options),
  .opts_size = sizeof(bb_opts),
  .check = at_softmax_check,
  .create = bb_create,
  .init = bb_init,
  .forward = at_softmax_forward,
  .cache_per_token = at_softmax_cache_per_token,
  .destroy = free,
  .state_new = at_softmax_state_new,
  .prefill = at_softmax_prefill,
  .step = at_softmax_step,
};
