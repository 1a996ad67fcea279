/* core/tensor.c */
#include "core/tensor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int64_t at_shape_size(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

static int check_shape(int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > AT_MAX_DIMS) {
    at_error(AT_E_SHAPE, "tensor rank %d outside 0..%d", ndim, AT_MAX_DIMS);
    return 0;
  }
  for (int i = 0; i < ndim; i++)
    if (shape[i] < 0) {
      at_error(AT_E_SHAPE, "negative dimension %lld", (long long)shape[i]);
      return 0;
    }
  return 1;
}

at_tensor *at_tensor_over(at_arena *a, real *data, int ndim, const int64_t *shape) {
  if (!check_shape(ndim, shape)) return NULL;
  at_tensor *t = at_arena_alloc(a, sizeof *t);
  if (!t) return NULL;
  memset(t, 0, sizeof *t);
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->size = at_shape_size(ndim, shape);
  t->data = data;
  return t;
}

at_tensor *at_tensor_alloc(at_arena *a, int ndim, const int64_t *shape) {
  if (!check_shape(ndim, shape)) return NULL;
  real *data = at_arena_alloc(a, (size_t)at_shape_size(ndim, shape) * sizeof(real));
  if (!data) return NULL;
  return at_tensor_over(a, data, ndim, shape);
}

at_itensor *at_itensor_alloc(at_arena *a, int ndim, const int64_t *shape) {
  if (!check_shape(ndim, shape)) return NULL;
  at_itensor *t = at_arena_alloc(a, sizeof *t);
  if (!t) return NULL;
  memset(t, 0, sizeof *t);
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->size = at_shape_size(ndim, shape);
  t->data = at_arena_alloc(a, (size_t)t->size * sizeof(int32_t));
  return t->data ? t : NULL;
}

int at_same_shape(const at_tensor *a, const at_tensor *b) {
  if (a->ndim != b->ndim) return 0;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return 0;
  return 1;
}

char *at_shape_str(int ndim, const int64_t *shape, char *buf) {
  int n = sprintf(buf, "[");
  for (int i = 0; i < ndim; i++) n += sprintf(buf + n, i ? ",%lld" : "%lld", (long long)shape[i]);
  sprintf(buf + n, "]");
  return buf;
}

void at_fill(real *x, int64_t n, real v) {
  for (int64_t i = 0; i < n; i++) x[i] = v;
}

int at_all_finite(const real *x, int64_t n) {
  int ok = 1;
  for (int64_t i = 0; i < n; i++) ok &= isfinite(x[i]) != 0;
  return ok;
}
