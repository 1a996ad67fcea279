/* ops/reduce.c: gradchecks of sum/mean over every dim (negative dims,
 * keepdim on and off, size-1 dims) and of sum_all/mean_all; values and
 * output shapes by hand; errors. */
#include <string.h>

#include "ops/ops.h"
#include "testing.h"

typedef struct { int mean, dim, keepdim; } red_opts;

static at_tensor *red_fn(at_ctx *c, at_tensor **in, void *u) {
  red_opts *o = u;
  return o->mean ? at_mean(c, in[0], o->dim, o->keepdim) : at_sum(c, in[0], o->dim, o->keepdim);
}

static at_tensor *all_fn(at_ctx *c, at_tensor **in, void *u) {
  return *(int *)u ? at_mean_all(c, in[0]) : at_sum_all(c, in[0]);
}

Test(reduce, gradcheck_every_dim) {
  at_ctx *c = at_ctx_new(0);
  const int64_t shapes[][5] = {{3, 2, 3, 4}, {2, 1, 5}, {1, 7}, {4, 2, 1, 3, 2}};
  for (int s = 0; s < AT_ARRAY_LEN(shapes); s++) {
    int nd = (int)shapes[s][0];
    for (int mean = 0; mean < 2; mean++)
      for (int dim = -nd; dim < nd; dim++)
        for (int keep = 0; keep < 2; keep++) {
          at_tensor *in[] = {at_test_randn(c, 10 * s + dim + 5, 1, nd, shapes[s] + 1)};
          red_opts o = {mean, dim, keep};
          char what[64];
          snprintf(what, sizeof what, "%s shape %d dim %d keep %d", mean ? "mean" : "sum", s,
                   dim, keep);
          AT_GRADCHECK(c, red_fn, in, 1, &o, what);
        }
    for (int mean = 0; mean < 2; mean++) {
      at_tensor *in[] = {at_test_randn(c, 50 + s, 1, nd, shapes[s] + 1)};
      AT_GRADCHECK(c, all_fn, in, 1, &mean, mean ? "mean_all" : "sum_all");
    }
  }
  at_ctx_free(c);
}

Test(reduce, values_and_shapes) {
  at_ctx *c = at_ctx_new(0);
  real v[] = {1, 2, 3, 4, 5, 6};
  at_tensor *x = at_from(c, v, AT_SHAPE(2, 3));
  at_tensor *s0 = at_sum(c, x, 0, 0), *s1 = at_sum(c, x, -1, 1), *m1 = at_mean(c, x, 1, 0);
  cr_expect(s0->ndim == 1 && s0->shape[0] == 3);
  cr_expect(s0->data[0] == 5 && s0->data[1] == 7 && s0->data[2] == 9);
  cr_expect(s1->ndim == 2 && s1->shape[0] == 2 && s1->shape[1] == 1);
  cr_expect(s1->data[0] == 6 && s1->data[1] == 15);
  cr_expect(m1->ndim == 1 && m1->data[0] == 2 && m1->data[1] == 5);
  at_tensor *sa = at_sum_all(c, x), *ma = at_mean_all(c, x);
  cr_expect(sa->ndim == 1 && sa->shape[0] == 1 && sa->data[0] == 21);
  cr_expect(ma->ndim == 1 && ma->shape[0] == 1 && ma->data[0] == 3.5);
  /* a 1-D input reduced without keepdim is a [1] scalar */
  at_tensor *r = at_sum(c, at_from(c, v, AT_SHAPE(6)), 0, 0);
  cr_expect(r->ndim == 1 && r->shape[0] == 1 && r->data[0] == 21);
  /* the middle dim of [2,3,2] */
  real w[12];
  for (int i = 0; i < 12; i++) w[i] = i;
  at_tensor *m = at_mean(c, at_from(c, w, AT_SHAPE(2, 3, 2)), 1, 0);
  cr_expect(m->ndim == 2 && m->shape[0] == 2 && m->shape[1] == 2);
  cr_expect(m->data[0] == 2 && m->data[1] == 3 && m->data[2] == 8 && m->data[3] == 9);
  /* backward of mean spreads 1/n */
  at_tensor *l = at_leaf(c, v, AT_SHAPE(2, 3));
  cr_assert(at_backward(c, at_mean_all(c, l)) == AT_OK);
  for (int i = 0; i < 6; i++) cr_expect(fabs(l->grad[i] - 1.0 / 6) < 1e-16);
  /* a sum of many elements (several chunks) is exact for small integers */
  at_tensor *big = AT_NEW(c, 10001);
  for (int i = 0; i < 10001; i++) big->data[i] = i;
  cr_expect(at_sum_all(c, big)->data[0] == 50005000.0);
  at_ctx_free(c);
}

Test(reduce, errors) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 2, 3);
  cr_expect(at_sum(c, x, 2, 0) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "sum: dim 2 outside the rank of [2,3]") != NULL, "%s",
            at_errmsg());
  cr_expect(at_mean(c, x, -3, 1) == NULL);
  cr_expect(at_sum(c, NULL, 0, 0) == NULL && at_sum_all(c, NULL) == NULL &&
            at_mean_all(c, NULL) == NULL);
  at_ctx_free(c);
}
