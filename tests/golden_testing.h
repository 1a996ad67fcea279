/* tests/golden_testing.h: reading golden HDF5 files in the Criterion suites
 * (a dataset of an exact size, an integer attribute), failing the test with
 * the file's message; loading a layer's parameters from a case and holding
 * its output, input gradient and every parameter gradient against the file. */
#ifndef AT_TESTS_GOLDEN_TESTING_H
#define AT_TESTS_GOLDEN_TESTING_H

#include <criterion/criterion.h>
#include <stdint.h>

#include <string.h>

#include "core/h5io.h"
#include "core/tensor.h"
#include "models/mixer.h"
#include "testing.h"

/* Dataset `name` of n reals (malloc'ed). */
static inline real *read_exact(at_h5 *h, const char *name, int64_t n) {
  int nd;
  int64_t shape[4];
  real *x = NULL;
  cr_assert(at_h5_read_real_alloc(h, name, &nd, shape, &x) == AT_OK, "%s", at_errmsg());
  cr_assert(at_shape_size(nd, shape) == n, "%s: %lld elements, expected %lld", name,
            (long long)at_shape_size(nd, shape), (long long)n);
  return x;
}

static inline int64_t attr_int(at_h5 *h, const char *grp, const char *name) {
  int64_t v;
  cr_assert(at_h5_get_attr_int(h, grp, name, &v) == AT_OK, "%s/%s: %s", grp, name, at_errmsg());
  return v;
}

/* Every parameter of p, named prefix + its name in the file, from
 * grp/params/<name> (each must be there). */
static inline void golden_load_params(at_h5 *h, const char *grp, at_params *p, size_t prefix_len) {
  char path[256];
  for (int i = 0; i < p->n; i++) {
    at_tensor *t = p->list[i].t;
    snprintf(path, sizeof path, "%s/params/%s", grp, p->list[i].name + prefix_len);
    cr_assert(at_h5_exists(h, path), "%s: no %s in the file", grp, path);
    real *v = read_exact(h, path, t->size);
    memcpy(t->data, v, (size_t)t->size * sizeof(real));
    free(v);
  }
}

/* Every parameter's gradient against grp/grads/<name>. */
static inline void golden_expect_grads(at_h5 *h, const char *grp, at_params *p, size_t prefix_len, double tol) {
  char path[256], what[200];
  for (int i = 0; i < p->n; i++) {
    at_tensor *t = p->list[i].t;
    snprintf(path, sizeof path, "%s/grads/%s", grp, p->list[i].name + prefix_len);
    real *g = read_exact(h, path, t->size);
    snprintf(what, sizeof what, "%s d%s", grp, p->list[i].name);
    AT_EXPECT_CLOSE(t->grad, g, t->size, tol, what);
    free(g);
  }
}

/* One layer against case grp: input grp/x [B >= 16, T, d], output grp/y,
 * the output's gradient grp/dy seeded, then dx against grp/dx and every
 * parameter gradient against grp/grads (parameters already loaded). */
static inline void golden_check_layer(at_h5 *h, const char *grp, const at_mixer_impl *impl, void *layer,
                                      at_params *p, size_t prefix_len, double tol) {
  char path[256], what[200];
  int nd;
  int64_t xs[4];
  snprintf(path, sizeof path, "%s/x", grp);
  cr_assert(at_h5_shape(h, path, &nd, xs) == AT_OK && nd == 3 && xs[0] >= 16, "%s: x is not [B >= 16, T, d]", grp);
  at_ctx *c = at_ctx_new(256 << 20);
  real *xv = read_exact(h, path, xs[0] * xs[1] * xs[2]);
  at_tensor *x = at_from(c, xv, 3, xs);
  x->requires_grad = 1;
  at_params_zero_grad(p);
  at_mixer_io io = {0};
  at_tensor *y = impl->forward(c, layer, x, &io);
  cr_assert(y != NULL, "%s: %s", grp, at_errmsg());
  snprintf(path, sizeof path, "%s/y", grp);
  real *yref = read_exact(h, path, y->size);
  snprintf(what, sizeof what, "%s output", grp);
  AT_EXPECT_CLOSE(y->data, yref, y->size, tol, what);
  snprintf(path, sizeof path, "%s/dy", grp);
  real *dy = read_exact(h, path, y->size);
  memcpy(at_grad(c, y), dy, (size_t)y->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  snprintf(path, sizeof path, "%s/dx", grp);
  real *dx = read_exact(h, path, x->size);
  snprintf(what, sizeof what, "%s dx", grp);
  AT_EXPECT_CLOSE(x->grad, dx, x->size, tol, what);
  golden_expect_grads(h, grp, p, prefix_len, tol);
  free(xv), free(yref), free(dy), free(dx);
  at_ctx_free(c);
}

#endif
