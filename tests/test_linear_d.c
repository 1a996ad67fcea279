/* ops/linear.c: gradchecks of matmul (every transpose pair, batched and
 * shared right operand) and linear (with and without bias). */
#include "ops/ops.h"
#include "testing.h"

typedef struct { at_trans ta, tb; } mm_opts;

static at_tensor *mm_fn(at_ctx *c, at_tensor **in, void *u) {
  mm_opts *o = u;
  return at_matmul(c, in[0], in[1], o->ta, o->tb);
}

Test(matmul, gradcheck_all_transposes) {
  at_ctx *c = at_ctx_new(0);
  const int64_t m = 3, n = 4, k = 5;
  for (int shared = 0; shared < 2; shared++)
    for (int ta = 0; ta < 2; ta++)
      for (int tb = 0; tb < 2; tb++) {
        at_tensor *a = ta ? AT_RANDN(c, 1, 1, 2, 3, k, m) : AT_RANDN(c, 1, 1, 2, 3, m, k);
        at_tensor *b = shared ? (tb ? AT_RANDN(c, 2, 1, n, k) : AT_RANDN(c, 2, 1, k, n))
                              : (tb ? AT_RANDN(c, 2, 1, 2, 3, n, k) : AT_RANDN(c, 2, 1, 2, 3, k, n));
        mm_opts o = {(at_trans)ta, (at_trans)tb};
        at_tensor *in[] = {a, b};
        char what[64];
        snprintf(what, sizeof what, "matmul ta=%d tb=%d shared=%d", ta, tb, shared);
        AT_GRADCHECK(c, mm_fn, in, 2, &o, what);
      }
  at_ctx_free(c);
}

Test(matmul, values_and_edges) {
  at_ctx *c = at_ctx_new(0);
  real av[] = {1, 2, 3, 4, 5, 6}, bv[] = {1, 0, 0, 1, 1, 1};
  at_tensor *a = at_from(c, av, AT_SHAPE(2, 3)), *b = at_from(c, bv, AT_SHAPE(3, 2));
  at_tensor *o = at_matmul(c, a, b, AT_N, AT_N);
  real want[] = {4, 5, 10, 11};
  for (int i = 0; i < 4; i++) cr_expect(o->data[i] == want[i]);
  /* M = 1, K = 1 */
  at_tensor *x = AT_RANDN(c, 3, 1, 1, 1), *y = AT_RANDN(c, 4, 1, 1, 7);
  at_tensor *in[] = {x, y};
  mm_opts opt = {AT_N, AT_N};
  AT_GRADCHECK(c, mm_fn, in, 2, &opt, "matmul 1x1x7");
  at_ctx_free(c);
}

Test(matmul, shape_errors_are_reported) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *a = AT_RANDN(c, 1, 1, 2, 3), *b = AT_RANDN(c, 2, 1, 4, 2);
  cr_expect(at_matmul(c, a, b, AT_N, AT_N) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "[2,3] times [4,2]") != NULL, "message: %s", at_errmsg());
  cr_expect(at_matmul(c, NULL, b, AT_N, AT_N) == NULL);
  at_ctx_free(c);
}

static at_tensor *linear_fn(at_ctx *c, at_tensor **in, void *u) {
  return at_linear(c, in[0], in[1], u ? in[2] : NULL);
}

Test(linear, gradcheck) {
  at_ctx *c = at_ctx_new(0);
  const int64_t shapes[][3] = {{1, 1, 1}, {2, 5, 3}, {3, 7, 4}};
  for (int s = 0; s < 3; s++)
    for (int bias = 0; bias < 2; bias++) {
      int64_t rows = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
      at_tensor *t[] = {AT_RANDN(c, 10 + s, 1, 2, rows, in), AT_RANDN(c, 20 + s, 1, out, in),
                        AT_RANDN(c, 30 + s, 1, out)};
      AT_GRADCHECK(c, linear_fn, t, bias ? 3 : 2, bias ? c : NULL, "linear");
    }
  at_ctx_free(c);
}
