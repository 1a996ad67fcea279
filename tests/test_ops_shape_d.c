/* ops/shape.c: gradchecks of reshape (with -1), transpose, permute, slice and
 * concat (every dim, one input, more inputs than a tape node holds); values
 * against index arithmetic; reshape shares data but not gradients; errors. */
#include <string.h>

#include "ops/ops.h"
#include "testing.h"

/* ---- reshape ----- */

static at_tensor *reshape_fn(at_ctx *c, at_tensor **in, void *u) {
  (void)u;
  /* a reshape used twice (fan-out through a view) */
  at_tensor *r = AT_RESHAPE(c, in[0], 3, -1);
  return at_mul(c, r, AT_RESHAPE(c, in[0], 3, 4));
}

Test(shape, reshape) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 2, 6);
  at_tensor *in[] = {x};
  AT_GRADCHECK(c, reshape_fn, in, 1, NULL, "reshape");
  at_tensor *y = AT_RESHAPE(c, x, -1, 1, 3);
  cr_assert(y && y->ndim == 3 && y->shape[0] == 4 && y->shape[1] == 1 && y->shape[2] == 3);
  cr_expect(y->data == x->data, "reshape shares the data");
  cr_expect(y->grad == NULL && y->requires_grad);
  cr_expect(AT_RESHAPE(c, x, 12)->shape[0] == 12);
  /* errors */
  cr_expect(AT_RESHAPE(c, x, 5, -1) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "reshape: cannot view [2,6] as [5,-1]") != NULL, "%s",
            at_errmsg());
  at_ctx_free(c);
  c = at_ctx_new(0);
  x = AT_RANDN(c, 1, 1, 2, 6);
  cr_expect(AT_RESHAPE(c, x, -1, -1) == NULL, "two free dims");
  cr_expect(AT_RESHAPE(c, x, 13) == NULL && AT_RESHAPE(c, x, 0, -1) == NULL);
  cr_expect(at_reshape(c, x, 5, (const int64_t[]){1, 1, 1, 2, 6}) == NULL, "rank 5");
  cr_expect(AT_RESHAPE(c, NULL, 2) == NULL);
  at_ctx_free(c);
}

/* ---- permute / transpose ----- */

typedef struct { int perm[4]; int d0, d1, transpose; } perm_opts;

static at_tensor *perm_fn(at_ctx *c, at_tensor **in, void *u) {
  perm_opts *o = u;
  return o->transpose ? at_transpose(c, in[0], o->d0, o->d1) : at_permute(c, in[0], o->perm);
}

Test(shape, permute_and_transpose) {
  at_ctx *c = at_ctx_new(0);
  const perm_opts ps[] = {{{0, 2, 1, 3}, 0, 0, 0}, {{3, 1, 0, 2}, 0, 0, 0},
                          {{1, 0, 2, 3}, 0, 0, 0}, {{0, 1, 2, 3}, 0, 0, 0}};
  for (int k = 0; k < AT_ARRAY_LEN(ps); k++) {
    at_tensor *x = AT_RANDN(c, k, 1, 2, 3, 1, 4);
    at_tensor *in[] = {x};
    perm_opts o = ps[k];
    AT_GRADCHECK(c, perm_fn, in, 1, &o, "permute 4-D");
    /* values: y[i0,i1,i2,i3] = x[i at perm^-1] */
    at_tensor *y = at_permute(c, x, o.perm);
    int64_t i[4];
    for (i[0] = 0; i[0] < y->shape[0]; i[0]++)
      for (i[1] = 0; i[1] < y->shape[1]; i[1]++)
        for (i[2] = 0; i[2] < y->shape[2]; i[2]++)
          for (i[3] = 0; i[3] < y->shape[3]; i[3]++) {
            int64_t xi[4];
            for (int d = 0; d < 4; d++) xi[o.perm[d]] = i[d];
            real got = y->data[((i[0] * y->shape[1] + i[1]) * y->shape[2] + i[2]) * y->shape[3] + i[3]];
            real want = x->data[((xi[0] * 3 + xi[1]) * 1 + xi[2]) * 4 + xi[3]];
            cr_expect(got == want);
          }
  }
  const int t[][2] = {{0, 1}, {-1, -2}, {0, 2}, {1, 1}};
  for (int k = 0; k < AT_ARRAY_LEN(t); k++) {
    at_tensor *in[] = {AT_RANDN(c, 10 + k, 1, 3, 2, 5)};
    perm_opts o = {{0}, t[k][0], t[k][1], 1};
    AT_GRADCHECK(c, perm_fn, in, 1, &o, "transpose 3-D");
  }
  at_tensor *in2[] = {AT_RANDN(c, 20, 1, 1, 7)};
  perm_opts o2 = {{0}, 0, 1, 1};
  AT_GRADCHECK(c, perm_fn, in2, 1, &o2, "transpose [1,7]");
  real v[] = {1, 2, 3, 4, 5, 6};
  at_tensor *m = at_transpose(c, at_from(c, v, AT_SHAPE(2, 3)), 0, 1);
  const real want[] = {1, 4, 2, 5, 3, 6};
  cr_expect(m->shape[0] == 3 && m->shape[1] == 2);
  for (int i = 0; i < 6; i++) cr_expect(m->data[i] == want[i]);
  /* errors */
  at_tensor *x = AT_RANDN(c, 1, 1, 2, 3);
  cr_expect(at_permute(c, x, (const int[]){0, 0}) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "permute: not a permutation") != NULL, "%s", at_errmsg());
  cr_expect(at_permute(c, x, (const int[]){0, 2}) == NULL);
  cr_expect(at_transpose(c, x, 0, 2) == NULL && at_transpose(c, NULL, 0, 1) == NULL);
  at_ctx_free(c);
}

/* ---- slice ----- */

typedef struct { int dim; int64_t start, len; } slice_opts;

static at_tensor *slice_fn(at_ctx *c, at_tensor **in, void *u) {
  slice_opts *o = u;
  return at_slice(c, in[0], o->dim, o->start, o->len);
}

Test(shape, slice) {
  at_ctx *c = at_ctx_new(0);
  const slice_opts os[] = {{0, 1, 2}, {1, 0, 1}, {2, 2, 3}, {-1, 0, 5}, {-2, 1, 2}, {0, 0, 3}};
  for (int k = 0; k < AT_ARRAY_LEN(os); k++) {
    at_tensor *in[] = {AT_RANDN(c, k, 1, 3, 3, 5)};
    slice_opts o = os[k];
    AT_GRADCHECK(c, slice_fn, in, 1, &o, "slice");
  }
  real v[12];
  for (int i = 0; i < 12; i++) v[i] = i;
  at_tensor *x = at_from(c, v, AT_SHAPE(2, 3, 2));
  at_tensor *y = at_slice(c, x, 1, 1, 2);
  const real want[] = {2, 3, 4, 5, 8, 9, 10, 11};
  cr_expect(y->ndim == 3 && y->shape[1] == 2);
  for (int i = 0; i < 8; i++) cr_expect(y->data[i] == want[i]);
  cr_expect(at_slice(c, x, 1, 3, 0)->size == 0, "an empty slice at the end is allowed");
  cr_expect(at_slice(c, x, 1, 2, 2) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "slice: elements 2..3 along dim 1 do not fit in [2,3,2]") != NULL,
            "%s", at_errmsg());
  cr_expect(at_slice(c, x, 3, 0, 1) == NULL && at_slice(c, x, 0, -1, 1) == NULL);
  at_ctx_free(c);
}

/* ---- concat ----- */

typedef struct { int n, dim; } cat_opts;

static at_tensor *cat_fn(at_ctx *c, at_tensor **in, void *u) {
  cat_opts *o = u;
  return at_concat(c, in, o->n, o->dim);
}

Test(shape, concat) {
  at_ctx *c = at_ctx_new(0);
  for (int dim = -3; dim < 3; dim++) {
    int d = dim < 0 ? dim + 3 : dim;
    int64_t s0[3] = {2, 3, 2}, s1[3] = {2, 3, 2}, s2[3] = {2, 3, 2};
    s0[d] = 1, s1[d] = 3, s2[d] = 2;
    at_tensor *in[] = {at_test_randn(c, 1, 1, 3, s0), at_test_randn(c, 2, 1, 3, s1),
                       at_test_randn(c, 3, 1, 3, s2)};
    cat_opts o = {3, dim};
    AT_GRADCHECK(c, cat_fn, in, 3, &o, "concat 3 inputs");
    at_tensor *y = at_concat(c, in, 3, dim);
    cr_expect(y->shape[d] == 6);
  }
  at_tensor *one[] = {AT_RANDN(c, 4, 1, 2, 2)};
  cat_opts o1 = {1, 0};
  AT_GRADCHECK(c, cat_fn, one, 1, &o1, "concat 1 input");
  /* more inputs than a node holds: concatenated in halves */
  at_tensor *many[13];
  for (int k = 0; k < 13; k++) many[k] = AT_RANDN(c, 30 + k, 1, 2, 1 + k % 2);
  cat_opts o13 = {13, 1};
  AT_GRADCHECK(c, cat_fn, many, 13, &o13, "concat 13 inputs");
  at_tensor *y = at_concat(c, many, 13, 1);
  int64_t off = 0;
  cr_assert(y && y->shape[1] == 19);
  for (int k = 0; k < 13; k++) {
    for (int r = 0; r < 2; r++)
      for (int j = 0; j < many[k]->shape[1]; j++)
        cr_expect(y->data[r * 19 + off + j] == many[k]->data[r * many[k]->shape[1] + j]);
    off += many[k]->shape[1];
  }
  /* values */
  real a[] = {1, 2, 3, 4}, b[] = {5, 6};
  at_tensor *ab[] = {at_from(c, a, AT_SHAPE(2, 2)), at_from(c, b, AT_SHAPE(2, 1))};
  at_tensor *z = at_concat(c, ab, 2, 1);
  const real want[] = {1, 2, 5, 3, 4, 6};
  for (int i = 0; i < 6; i++) cr_expect(z->data[i] == want[i]);
  /* errors */
  cr_expect(at_concat(c, ab, 2, 0) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "concat: [2,1] (input 1) does not fit [2,2] along dim 0") != NULL,
            "%s", at_errmsg());
  cr_expect(at_concat(c, ab, 0, 0) == NULL && at_concat(c, ab, 2, 2) == NULL);
  at_tensor *withnull[] = {ab[0], NULL};
  cr_expect(at_concat(c, withnull, 2, 1) == NULL);
  at_ctx_free(c);
}
