/* models/linpath.h: what the linear path's mixers (linear_attn in
 * models/linear_attn.c, performer in models/performer.c, retnet in
 * models/retnet.c) share and expose beyond the registry.
 *
 * Their layers start with at_lin_layer_base, so a test can switch one to the
 * token-by-token form with at_linear_mixer_set_form (models/linear_mixers.h).
 */
#ifndef AT_LINPATH_H
#define AT_LINPATH_H

#include <string.h>

#include "models/linear_mixers.h"
#include "ops/attention/linear_attn.h"

/* The op form a linear-path layer runs: its own training form, or the
 * recurrent reference when a test asked for it. */
static inline at_la_form at_linpath_form(const at_lin_layer_base *b, at_la_form training) {
  return b->form == AT_LIN_RECURRENT ? AT_LA_RECURRENT : training;
}

/* Prefill: copies the op's final state ht (and normaliser zt, if z) into
 * the decoding state's S (and z); 0 if the op gave none. */
static inline int at_linpath_keep(at_tensor *S, const at_tensor *ht, at_tensor *z, const at_tensor *zt) {
  if (!ht || (z && !zt)) return 0;
  memcpy(S->data, ht->data, (size_t)S->size * sizeof(real));
  if (z) memcpy(z->data, zt->data, (size_t)z->size * sizeof(real));
  return 1;
}

/* Performer: the random features of the layer (m x K, row-major), and the
 * number of the draw they come from (-1 when pinned). */
const real *at_performer_features(const void *layer, int64_t *m, int64_t *K, int64_t *draw);
/* Pins the features to omega (m x K, the layer's sizes) and stops redraws:
 * for cross-checks against another implementation with the same features. */
void at_performer_pin_features(void *layer, const real *omega);

#endif
