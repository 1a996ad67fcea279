/* ops/arith.c: gradchecks of add/sub/mul/div on every kernel (equal shapes,
 * suffix operand on either side, general broadcast in each direction, 4-D,
 * size-1 dims, scalars), the same tensor on both sides, affine; forward
 * values against a naive broadcasting loop and hand-computed cases; shape
 * errors. */
#include <string.h>

#include "ops/ops.h"
#include "testing.h"

enum { B_ADD, B_SUB, B_MUL, B_DIV };
static const char *const names[] = {"add", "sub", "mul", "div"};

static at_tensor *apply(at_ctx *c, int op, at_tensor *a, at_tensor *b) {
  switch (op) {
  case B_ADD: return at_add(c, a, b);
  case B_SUB: return at_sub(c, a, b);
  case B_MUL: return at_mul(c, a, b);
  default: return at_div(c, a, b);
  }
}

static at_tensor *bin_fn(at_ctx *c, at_tensor **in, void *u) {
  return apply(c, *(int *)u, in[0], in[1]);
}

/* Independent reference: out[i] = a[...] op b[...] with explicit index math. */
static void reference(int op, const at_tensor *a, const at_tensor *b, const at_tensor *out,
                      double *want) {
  int nd = out->ndim;
  for (int64_t e = 0; e < out->size; e++) {
    int64_t rem = e, ia = 0, ib = 0, sa = 1, sb = 1;
    for (int d = nd - 1; d >= 0; d--) {
      int64_t i = rem % out->shape[d];
      rem /= out->shape[d];
      int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
      if (da >= 0) {
        if (a->shape[da] > 1) ia += i * sa;
        sa *= a->shape[da];
      }
      if (db >= 0) {
        if (b->shape[db] > 1) ib += i * sb;
        sb *= b->shape[db];
      }
    }
    double x = a->data[ia], y = b->data[ib];
    want[e] = op == B_ADD ? x + y : op == B_SUB ? x - y : op == B_MUL ? x * y : x / y;
  }
}

/* Shape pairs covering each kernel and both broadcast directions. */
typedef struct { int na; int64_t a[4]; int nb; int64_t b[4]; } pair;
static const pair pairs[] = {
  {3, {2, 3, 4}, 3, {2, 3, 4}},     /* same */
  {1, {1}, 1, {1}},                 /* same, one element */
  {3, {2, 3, 4}, 1, {4}},           /* suffix b */
  {1, {5}, 3, {2, 3, 5}},           /* suffix a */
  {3, {3, 1, 4}, 2, {1, 4}},        /* suffix b with a leading 1 */
  {2, {2, 3}, 1, {1}},              /* scalar b */
  {1, {1}, 3, {2, 1, 3}},           /* scalar a */
  {3, {2, 1, 4}, 2, {3, 1}},        /* general: both stretch */
  {3, {2, 3, 1}, 3, {2, 1, 4}},     /* general, same rank */
  {4, {2, 1, 3, 1}, 4, {1, 4, 1, 5}}, /* general 4-D, alternating */
  {4, {2, 3, 2, 5}, 4, {2, 1, 2, 1}}, /* b stretched inside (gate per row) */
  {3, {1, 3, 1}, 4, {2, 3, 3, 1}},  /* a stretched, lower rank */
  {3, {1, 1, 7}, 3, {1, 5, 1}},     /* T = 1 style */
};

static at_tensor *operand(at_ctx *c, int op, int is_b, uint64_t seed, int nd, const int64_t *s) {
  if (op == B_DIV && is_b) { /* |b| in [0.5, 1.5], either sign */
    at_tensor *t = at_test_rand(c, seed, 0.5, 1.5, nd, s);
    for (int64_t i = 0; i < t->size; i += 2) t->data[i] = -t->data[i];
    return t;
  }
  return at_test_randn(c, seed, 1, nd, s);
}

Test(arith, gradcheck_every_kernel_and_direction) {
  at_ctx *c = at_ctx_new(0);
  for (int op = 0; op < 4; op++)
    for (int p = 0; p < AT_ARRAY_LEN(pairs); p++)
      for (uint64_t seed = 1; seed <= 2; seed++) {
        at_tensor *in[] = {operand(c, op, 0, seed * 10 + p, pairs[p].na, pairs[p].a),
                           operand(c, op, 1, seed * 20 + p, pairs[p].nb, pairs[p].b)};
        char what[64];
        snprintf(what, sizeof what, "%s pair %d seed %d", names[op], p, (int)seed);
        AT_GRADCHECK(c, bin_fn, in, 2, &op, what);
        /* one side frozen: only the other gets a gradient */
        in[0]->requires_grad = 0;
        AT_GRADCHECK(c, bin_fn, in, 2, &op, what);
      }
  at_ctx_free(c);
}

Test(arith, forward_matches_naive_broadcast) {
  at_ctx *c = at_ctx_new(0);
  for (int op = 0; op < 4; op++)
    for (int p = 0; p < AT_ARRAY_LEN(pairs); p++) {
      at_tensor *a = operand(c, op, 0, 7 + p, pairs[p].na, pairs[p].a);
      at_tensor *b = operand(c, op, 1, 8 + p, pairs[p].nb, pairs[p].b);
      at_tensor *y = apply(c, op, a, b);
      cr_assert(y, "%s pair %d: %s", names[op], p, at_errmsg());
      int nd = AT_MAX(a->ndim, b->ndim);
      cr_expect(y->ndim == nd);
      double *want = malloc((size_t)y->size * sizeof *want);
      reference(op, a, b, y, want);
      for (int64_t i = 0; i < y->size; i++)
        cr_expect(y->data[i] == want[i], "%s pair %d at %lld: %.17g vs %.17g", names[op], p,
                  (long long)i, y->data[i], want[i]);
      free(want);
    }
  at_ctx_free(c);
}

Test(arith, hand_computed_values) {
  at_ctx *c = at_ctx_new(0);
  real av[] = {1, 2}, bv[] = {10, 20, 40};
  at_tensor *a = at_from(c, av, AT_SHAPE(2, 1)), *b = at_from(c, bv, AT_SHAPE(3));
  const real add[] = {11, 21, 41, 12, 22, 42}, sub[] = {-9, -19, -39, -8, -18, -38};
  const real mul[] = {10, 20, 40, 20, 40, 80}, dv[] = {0.1, 0.05, 0.025, 0.2, 0.1, 0.05};
  const real *want[] = {add, sub, mul, dv};
  for (int op = 0; op < 4; op++) {
    at_tensor *y = apply(c, op, a, b);
    cr_assert(y && y->ndim == 2 && y->shape[0] == 2 && y->shape[1] == 3);
    for (int i = 0; i < 6; i++)
      cr_expect(fabs(y->data[i] - want[op][i]) < 1e-15, "%s[%d] = %g", names[op], i, y->data[i]);
  }
  /* gradients summed over the stretched dims: d(sum(a * b))/da = sum(b), /db = sum(a) */
  at_tensor *x = at_leaf(c, av, AT_SHAPE(2, 1)), *w = at_leaf(c, bv, AT_SHAPE(3));
  cr_assert(at_backward(c, at_sum_all(c, at_mul(c, x, w))) == AT_OK);
  cr_expect(x->grad[0] == 70 && x->grad[1] == 70);
  cr_expect(w->grad[0] == 3 && w->grad[1] == 3 && w->grad[2] == 3);
  at_ctx_free(c);
}

static at_tensor *square_by_mul(at_ctx *c, at_tensor **in, void *u) {
  (void)u;
  return at_div(c, at_mul(c, in[0], in[0]), at_add(c, in[0], in[0]));
}

Test(arith, same_tensor_on_both_sides) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RAND(c, 3, 0.5, 2, 3, 4);
  at_tensor *in[] = {x};
  AT_GRADCHECK(c, square_by_mul, in, 1, NULL, "x*x / (x+x)");
  at_ctx_free(c);
}

static at_tensor *affine_fn(at_ctx *c, at_tensor **in, void *u) {
  (void)u;
  return at_affine(c, in[0], -1.75, 0.5);
}

Test(arith, affine) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 5, 1, 2, 3, 1, 5);
  at_tensor *in[] = {x};
  AT_GRADCHECK(c, affine_fn, in, 1, NULL, "affine");
  real v[] = {1, -2, 4};
  at_tensor *y = at_affine(c, at_from(c, v, AT_SHAPE(3)), 3, -1);
  cr_expect(y->data[0] == 2 && y->data[1] == -7 && y->data[2] == 11);
  at_tensor *s = at_scale(c, at_from(c, v, AT_SHAPE(3)), 0.5);
  cr_expect(s->data[0] == 0.5 && s->data[1] == -1 && s->data[2] == 2);
  at_ctx_free(c);
}

Test(arith, shape_errors) {
  for (int op = 0; op < 4; op++) {
    at_ctx *c = at_ctx_new(0);
    at_tensor *a = AT_RANDN(c, 1, 1, 2, 3), *b = AT_RANDN(c, 2, 1, 4, 3);
    cr_expect(apply(c, op, a, b) == NULL);
    cr_expect(at_ctx_status(c) == AT_E_SHAPE);
    char want[64];
    snprintf(want, sizeof want, "%s: shapes [2,3] and [4,3] do not broadcast", names[op]);
    cr_expect(strstr(at_errmsg(), want) != NULL, "message: %s", at_errmsg());
    cr_expect(apply(c, op, NULL, b) == NULL && apply(c, op, a, NULL) == NULL);
    at_ctx_free(c);
  }
  at_ctx *c = at_ctx_new(0);
  cr_expect(at_add(c, AT_RANDN(c, 1, 1, 3, 2), AT_RANDN(c, 1, 1, 3)) == NULL,
            "[3,2] + [3] must not broadcast (right alignment)");
  cr_expect(at_affine(c, NULL, 1, 0) == NULL);
  at_ctx_free(c);
}
