/* models/rwkv7.h: what models/model.c uses of models/rwkv7.c: RWKV's
 * channel mix, the `mlp: rwkv_cmix` block MLP (RWKV-7 "Goose", Peng et al.
 * 2025; flash-linear-attention's RWKV7FeedForward):
 *
 *   y = relu(mix(x) W_key^T)^2 W_value^T,   mix(x) = x + (shift(x) - x) ⊙ x_k
 *
 * shift(x)_t = x_{t-1} (zero at t = 0). Parameters (under layers.<i>.mlp.):
 * x_k [d] (no weight decay), key [hidden, d], value [d, hidden].
 */
#ifndef AT_MODELS_RWKV7_H
#define AT_MODELS_RWKV7_H

#include "autograd/autograd.h"

/* The token shift of x [B, T, d]: shift(x) - x. prev NULL (training):
 * shift(x)_0 = 0; else (decoding) prev [B, 1, d] holds the token before x
 * (zeros at the start) and receives x's last token. */
at_tensor *at_rwkv_token_delta(at_ctx *c, at_tensor *x, at_tensor *prev);

/* The channel mix on x; prev as in at_rwkv_token_delta. */
at_tensor *at_rwkv_cmix(at_ctx *c, at_tensor *x, at_tensor *x_k, at_tensor *key, at_tensor *value, at_tensor *prev);

/* fla's initialisation of layer `layer` of n_layers: x_k = 1 - (i/d)^(r^4)
 * with r = 1 - layer / n_layers, key orthogonal, value zero. */
void at_rwkv_cmix_init(at_tensor *x_k, at_tensor *key, at_tensor *value, int layer, int64_t n_layers,
                       uint64_t seed);

#endif
