/* models/full.c: softmax attention mixer (MHA / GQA / MQA, optional sliding
 * window, RoPE or NoPE).
 *
 *   q = x Wq^T [B,T,HQ,hd], k = x Wk^T, v = x Wv^T [B,T,H,hd]
 *   q, k = RoPE(q), RoPE(k)                    (position: rope)
 *   o = FlashAttention(q, k, v; causal, window)
 *   y = o Wo^T
 *
 * The projections, RoPE and the key/value cache (a rolling buffer of W
 * slots with a window) are models/softmax_layer.h's.
 */
#include <stdlib.h>

#include "models/softmax_layer.h"

typedef struct full_opts {
  at_mixer_common common;
  int64_t window;
} full_opts;

static const at_mixer_opt full_options[] = {
  AT_OPT_POSITION(full_opts),
  AT_OPT_HEAD_DIM(full_opts),
  AT_OPT_I("window", full_opts, window, 0, 1 << 24, 0,
           "sliding window: query i sees keys i-W+1 .. i; 0 = none"),
};

extern const at_mixer_impl at_mixer_full;

static at_status full_create(const at_model_cfg *cfg, int layer_index, at_params *p,
                             const char *prefix, void **out) {
  (void)layer_index;
  at_softmax_layer *L = calloc(1, sizeof *L);
  if (!L) return at_error(AT_E_NOMEM, "out of memory");
  *out = L;
  L->window = AT_MIXER_OPTS(cfg, &at_mixer_full, full_opts)->window;
  return at_softmax_declare(L, &at_mixer_full, cfg, p, prefix);
}

static void full_init(void *layer, const at_model_cfg *cfg, uint64_t seed) {
  at_softmax_init(layer, cfg, seed);
}

const at_mixer_impl at_mixer_full = {
  .name = "full",
  .family = "softmax",
  .summary = "causal softmax attention (MHA / GQA / MQA by n_kv_heads, optional sliding window), "
             "FlashAttention-2 tiling in O(T) memory",
  .opts = full_options,
  .n_opts = AT_ARRAY_LEN(full_options),
  .opts_size = sizeof(full_opts),
  .check = at_softmax_check,
  .create = full_create,
  .init = full_init,
  .forward = at_softmax_forward,
  .cache_per_token = at_softmax_cache_per_token,
  .destroy = free,
  .state_new = at_softmax_state_new,
  .prefill = at_softmax_prefill,
  .step = at_softmax_step,
};
