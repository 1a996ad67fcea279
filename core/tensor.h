/* core/tensor.h: contiguous row-major tensors of up to 4 dims.
 *
 * Attention inputs use the layout [B, T, H, D] (flash-linear-attention's).
 * A tensor owns no memory: its header and data live in an arena (or, for
 * parameters, in the parameter store's flat buffers). `grad` is NULL until a
 * backward pass first accumulates into it.
 */
#ifndef AT_TENSOR_H
#define AT_TENSOR_H

#include "core/arena.h"

#define AT_MAX_DIMS 4

typedef struct at_tensor {
  real *data;
  real *grad;               /* same shape as data, or NULL */
  int64_t shape[AT_MAX_DIMS];
  int64_t size;             /* product of shape */
  int ndim;
  int requires_grad;        /* gradients flow into this tensor */
  const char *name;         /* parameters only */
} at_tensor;

/* Integer tensors: token ids, labels, selected indices. */
typedef struct at_itensor {
  int32_t *data;
  int64_t shape[AT_MAX_DIMS];
  int64_t size;
  int ndim;
} at_itensor;

/* Shape literal: AT_SHAPE(2, 3) -> ndim 2, (const int64_t[]){2, 3}. */
#define AT_SHAPE(...) \
  (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]){__VA_ARGS__}

int64_t at_shape_size(int ndim, const int64_t *shape);
/* NULL (AT_E_NOMEM / AT_E_SHAPE message) on failure. Data uninitialised. */
at_tensor *at_tensor_alloc(at_arena *a, int ndim, const int64_t *shape);
/* A header over existing memory. */
at_tensor *at_tensor_over(at_arena *a, real *data, int ndim, const int64_t *shape);
at_itensor *at_itensor_alloc(at_arena *a, int ndim, const int64_t *shape);

int at_same_shape(const at_tensor *a, const at_tensor *b);
/* "[2,37,4,16]" into buf (at least 96 bytes); returns buf. */
char *at_shape_str(int ndim, const int64_t *shape, char *buf);
#define AT_SHAPE_STR(t, buf) at_shape_str((t)->ndim, (t)->shape, (buf))

void at_fill(real *x, int64_t n, real v);
/* 1 if every element is finite. */
int at_all_finite(const real *x, int64_t n);

#endif
