/* bench/bench_util.h: small helpers the op benchmarks share. */
#ifndef AT_BENCH_UTIL_H
#define AT_BENCH_UTIL_H

#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"

/* The integer after `name` on the command line, or dflt. */
static inline int64_t bench_arg_int(int argc, char **argv, const char *name, int64_t dflt) {
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return strtoll(argv[i + 1], NULL, 10);
  return dflt;
}

/* Seeds d(out) = 1 and runs the tape backwards; 0 on failure. */
static inline int bench_backward_ones(at_ctx *c, at_tensor *out) {
  real *g = at_grad(c, out);
  if (!g) return 0;
  for (int64_t i = 0; i < out->size; i++) g[i] = 1;
  return at_backward_from_seeded(c) == AT_OK;
}

#endif
