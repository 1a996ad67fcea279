/* tests/golden_testing.h: reading golden HDF5 files in the Criterion suites
 * (a dataset of an exact size, an integer attribute), failing the test with
 * the file's message. */
#ifndef AT_TESTS_GOLDEN_TESTING_H
#define AT_TESTS_GOLDEN_TESTING_H

#include <criterion/criterion.h>
#include <stdint.h>

#include "core/h5io.h"
#include "core/tensor.h"

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

#endif
