/* ops/util.h: small helpers shared by the files of ops/ (all static inline,
 * so nothing here becomes a global symbol). */
#ifndef AT_OPS_UTIL_H
#define AT_OPS_UTIL_H

#include "ops/ops.h"

/* Below this many elements a loop stays on one thread: starting a team costs
 * more than the work. */
#define AT_PAR_MIN ((int64_t)1 << 15)

/* dim counted from the end when negative; -1 when outside the rank. */
static inline int at_ops_dim(int dim, int ndim) {
  if (dim < 0) dim += ndim;
  return dim >= 0 && dim < ndim ? dim : -1;
}

/* The shape seen as [outer, n, inner] around dim. */
static inline void at_ops_split(const at_tensor *x, int dim, int64_t *outer, int64_t *n,
                                int64_t *inner) {
  *outer = at_shape_size(dim, x->shape);
  *n = x->shape[dim];
  *inner = at_shape_size(x->ndim - dim - 1, x->shape + dim + 1);
}

/* The shape left-padded with 1s to AT_MAX_DIMS dims. */
static inline void at_ops_pad4(int ndim, const int64_t *shape, int64_t out[AT_MAX_DIMS]) {
  int pad = AT_MAX_DIMS - ndim;
  for (int i = 0; i < AT_MAX_DIMS; i++) out[i] = i < pad ? 1 : shape[i - pad];
}

/* Row-major strides of a padded shape, 0 where the size is 1 (so a size-1 dim
 * stretches when indexed with the coordinates of a larger shape). */
static inline void at_ops_bstrides(const int64_t shape[AT_MAX_DIMS], int64_t st[AT_MAX_DIMS]) {
  int64_t s = 1;
  for (int i = AT_MAX_DIMS - 1; i >= 0; i--) {
    st[i] = shape[i] == 1 ? 0 : s;
    s *= shape[i];
  }
}

#endif
