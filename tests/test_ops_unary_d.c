/* ops/unary.c: gradchecks of every unary op on several shapes and seeds
 * (inputs kept away from kinks and outside the domain), values and
 * derivatives against PyTorch 1.13 (float64, pasted as literals), and the
 * behaviour at large |x| (no overflow, no NaN). */
#include "ops/ops.h"
#include "testing.h"

enum { U_EXP, U_LOG, U_SQRT, U_RSQRT, U_SQUARE, U_TANH, U_SIGMOID, U_LOGSIGMOID, U_SOFTPLUS,
       U_SILU, U_GELU, U_ELU, U_RELU, U_COUNT };
static const char *const names[U_COUNT] = {"exp", "log", "sqrt", "rsqrt", "square", "tanh",
                                           "sigmoid", "logsigmoid", "softplus", "silu", "gelu",
                                           "elu", "relu"};

static at_tensor *apply(at_ctx *c, int op, at_tensor *x) {
  switch (op) {
  case U_EXP: return at_exp(c, x);
  case U_LOG: return at_log(c, x);
  case U_SQRT: return at_sqrt(c, x);
  case U_RSQRT: return at_rsqrt(c, x);
  case U_SQUARE: return at_square(c, x);
  case U_TANH: return at_tanh(c, x);
  case U_SIGMOID: return at_sigmoid(c, x);
  case U_LOGSIGMOID: return at_logsigmoid(c, x);
  case U_SOFTPLUS: return at_softplus(c, x);
  case U_SILU: return at_silu(c, x);
  case U_GELU: return at_gelu(c, x);
  case U_ELU: return at_elu(c, x, 0.7);
  default: return at_relu(c, x);
  }
}

static at_tensor *unary_fn(at_ctx *c, at_tensor **in, void *u) {
  return apply(c, *(int *)u, in[0]);
}

/* Inputs: positive for log/sqrt/rsqrt, at least 0.05 away from 0 for
 * relu/elu, wide normal values for the rest. */
static at_tensor *input_for(at_ctx *c, int op, uint64_t seed, int ndim, const int64_t *shape) {
  if (op == U_LOG || op == U_SQRT || op == U_RSQRT) return at_test_rand(c, seed, 0.3, 3, ndim, shape);
  at_tensor *x = at_test_randn(c, seed, 2, ndim, shape);
  for (int64_t i = 0; i < x->size; i++)
    if (fabs(x->data[i]) < 0.05) x->data[i] = x->data[i] < 0 ? -0.05 - x->data[i] : 0.05 + x->data[i];
  return x;
}

Test(unary, gradcheck_every_op_shapes_and_seeds) {
  at_ctx *c = at_ctx_new(0);
  const int64_t shapes[][5] = {{2, 3, 5}, {1, 1}, {3, 2, 1, 3}, {2, 7, 1}, {4, 1, 2, 1, 3}};
  for (int op = 0; op < U_COUNT; op++)
    for (int s = 0; s < AT_ARRAY_LEN(shapes); s++) {
      at_tensor *x = input_for(c, op, 100 * op + s, (int)shapes[s][0], shapes[s] + 1);
      at_tensor *in[] = {x};
      char what[64];
      snprintf(what, sizeof what, "%s shape %d", names[op], s);
      AT_GRADCHECK(c, unary_fn, in, 1, &op, what);
    }
  at_ctx_free(c);
}

/* PyTorch 1.13, float64 (softplus with threshold=1000, gelu approximate='tanh', elu alpha 0.7). */
static const double ux[] = {-30, -5, -1, -0.10000000000000001, 0.29999999999999999, 1, 5, 30};
static const double want_sigmoid[] = {9.3576229688392989e-14, 0.0066928509242848554, 0.2689414213699951, 0.47502081252105999, 0.57444251681165903, 0.7310585786300049, 0.99330714907571527, 0.99999999999990652};
static const double want_logsigmoid[] = {-30.000000000000092, -5.0067153484891183, -1.3132616875182228, -0.74439666007357086, -0.55435524446852713, -0.31326168751822286, -0.0067153484891180684, -9.3576229688397368e-14};
static const double want_softplus[] = {9.3576229688397368e-14, 0.0067153484891180684, 0.31326168751822286, 0.64439666007357088, 0.85435524446852718, 1.3132616875182228, 5.0067153484891183, 30.000000000000092};
static const double want_silu[] = {-2.8072868906517896e-12, -0.033464254621424279, -0.2689414213699951, -0.047502081252106004, 0.17233275504349771, 0.7310585786300049, 4.9665357453785761, 29.999999999997197};
static const double want_gelu[] = {-0, -2.2917961972623857e-07, -0.15880800939172329, -0.046017248954564841, 0.18537092354275922, 0.84119199060827676, 4.9999997708203807, 30};
static const double want_elu[] = {-0.69999999999993445, -0.69528343710064011, -0.44248439117999033, -0.066613807374828332, 0.29999999999999999, 1, 5, 30};
static const double want_tanh[] = {-1, -0.99990920426259511, -0.76159415595576485, -0.099667994624955819, 0.2913126124515909, 0.76159415595576485, 0.99990920426259511, 1};
static const double dwant_sigmoid[] = {9.3576229688384229e-14, 0.0066480566707901546, 0.19661193324148185, 0.24937604019289197, 0.24445831169074586, 0.19661193324148185, 0.0066480566707900332, 9.3480778673429446e-14};
static const double dwant_logsigmoid[] = {0.99999999999990641, 0.99330714907571516, 0.7310585786300049, 0.52497918747894001, 0.42555748318834102, 0.2689414213699951, 0.0066928509242848563, 9.3576229688393001e-14};
static const double dwant_softplus[] = {9.3576229688393001e-14, 0.0066928509242848563, 0.2689414213699951, 0.47502081252105999, 0.57444251681165903, 0.7310585786300049, 0.99330714907571516, 0.99999999999990641};
static const double dwant_silu[] = {-2.7137106609631341e-12, -0.026547432429665917, 0.072329488128513253, 0.4500832085017708, 0.64778001031888288, 0.92767051187148686, 1.0265474324296655, 1.0000000000027109};
static const double dwant_gelu[] = {0, -1.5463619879596227e-06, -0.082964083845782577, 0.42047821072824332, 0.73229545163880183, 1.0829640838457826, 1.000001546361988, 1};
static const double dwant_elu[] = {6.5503360781881215e-14, 0.0047165628993598267, 0.25751560882000962, 0.6333861926251716, 1, 1, 1, 1};

/* |got - want| <= rtol |want| + atol, element by element. */
static void expect_vals(const real *got, const double *want, int n, double rtol, double atol,
                        const char *what) {
  for (int i = 0; i < n; i++)
    cr_expect(fabs(got[i] - want[i]) <= rtol * fabs(want[i]) + atol,
              "%s[%d]: got %.17g, want %.17g", what, i, (double)got[i], want[i]);
}

Test(unary, values_and_derivatives_match_torch) {
  at_ctx *c = at_ctx_new(0);
  const int n = AT_ARRAY_LEN(ux);
  real xv[AT_ARRAY_LEN(ux)];
  for (int i = 0; i < n; i++) xv[i] = ux[i];
  const struct { int op; const double *y, *dy; double rtol; } cases[] = {
    {U_SIGMOID, want_sigmoid, dwant_sigmoid, 1e-13},
    {U_LOGSIGMOID, want_logsigmoid, dwant_logsigmoid, 1e-13},
    {U_SOFTPLUS, want_softplus, dwant_softplus, 1e-13},
    {U_SILU, want_silu, dwant_silu, 1e-13},
    /* torch evaluates 1 + tanh(u), which cancels for negative x: ~1e-9 there */
    {U_GELU, want_gelu, dwant_gelu, 1e-8},
    {U_ELU, want_elu, dwant_elu, 1e-13},
    {U_TANH, want_tanh, NULL, 1e-13},
  };
  for (int k = 0; k < AT_ARRAY_LEN(cases); k++) {
    at_tensor *x = at_leaf(c, xv, AT_SHAPE(n));
    at_tensor *y = apply(c, cases[k].op, x);
    cr_assert(y);
    expect_vals(y->data, cases[k].y, n, cases[k].rtol, 1e-300, names[cases[k].op]);
    if (cases[k].dy) {
      for (int i = 0; i < n; i++) at_grad(c, y)[i] = 1;
      cr_assert(at_backward_from_seeded(c) == AT_OK);
      char what[64];
      snprintf(what, sizeof what, "d %s", names[cases[k].op]);
      expect_vals(x->grad, cases[k].dy, n, cases[k].rtol, 1e-300, what);
    }
    at_ctx_reset(c);
  }
  /* the simple ones, by hand */
  real pv[] = {0.25, 1, 4, 9};
  at_tensor *p = at_leaf(c, pv, AT_SHAPE(4));
  const double sq[] = {0.5, 1, 2, 3}, rs[] = {2, 1, 0.5, 1.0 / 3}, sqr[] = {0.0625, 1, 16, 81};
  const double lg[] = {log(0.25), 0, log(4), log(9)}, ex[] = {exp(0.25), exp(1), exp(4), exp(9)};
  expect_vals(at_sqrt(c, p)->data, sq, 4, 1e-15, 0, "sqrt");
  expect_vals(at_rsqrt(c, p)->data, rs, 4, 1e-15, 0, "rsqrt");
  expect_vals(at_square(c, p)->data, sqr, 4, 0, 0, "square");
  expect_vals(at_log(c, p)->data, lg, 4, 1e-15, 0, "log");
  expect_vals(at_exp(c, p)->data, ex, 4, 1e-15, 0, "exp");
  real rv[] = {-2, -0.5, 0.5, 3};
  const double rl[] = {0, 0, 0.5, 3};
  expect_vals(at_relu(c, at_leaf(c, rv, AT_SHAPE(4)))->data, rl, 4, 0, 0, "relu");
  at_ctx_free(c);
}

Test(unary, large_inputs_stay_finite) {
  at_ctx *c = at_ctx_new(0);
  real xv[] = {-1e6, -800, -100, 100, 800, 1e6};
  const int n = AT_ARRAY_LEN(xv);
  const int ops[] = {U_SIGMOID, U_LOGSIGMOID, U_SOFTPLUS, U_SILU, U_GELU, U_ELU, U_TANH};
  for (int k = 0; k < AT_ARRAY_LEN(ops); k++) {
    at_tensor *x = at_leaf(c, xv, AT_SHAPE(n));
    at_tensor *y = apply(c, ops[k], x);
    for (int i = 0; i < n; i++) at_grad(c, y)[i] = 1;
    cr_assert(at_backward_from_seeded(c) == AT_OK);
    cr_expect(at_all_finite(y->data, n), "%s: non-finite value", names[ops[k]]);
    cr_expect(at_all_finite(x->grad, n), "%s: non-finite derivative", names[ops[k]]);
    at_ctx_reset(c);
  }
  /* exact limits */
  at_tensor *x = at_leaf(c, xv, AT_SHAPE(n));
  at_tensor *sp = at_softplus(c, x), *ls = at_logsigmoid(c, x), *ge = at_gelu(c, x);
  for (int i = 0; i < n; i++) {
    double v = xv[i];
    /* the correction log(1 + e^-|x|) is below 1e-43 here */
    cr_expect(fabs(sp->data[i] - (v > 0 ? v : 0)) < 1e-40, "softplus(%g) = %g", v, sp->data[i]);
    cr_expect(fabs(ls->data[i] - (v < 0 ? v : 0)) < 1e-40, "logsigmoid(%g) = %g", v, ls->data[i]);
    cr_expect(ge->data[i] == (v > 0 ? v : 0), "gelu(%g) = %g", v, ge->data[i]);
  }
  at_ctx_free(c);
}

Test(unary, null_input_gives_null) {
  at_ctx *c = at_ctx_new(0);
  for (int op = 0; op < U_COUNT; op++) cr_expect(apply(c, op, NULL) == NULL, "%s", names[op]);
  cr_expect(at_ctx_status(c) == AT_OK, "a NULL input is not a new failure");
  at_ctx_free(c);
}

static at_tensor *silu_mul_fn(at_ctx *c, at_tensor **in, void *u) {
  return *(int *)u ? at_silu_mul(c, in[0], in[0]) : at_silu_mul(c, in[0], in[1]);
}

static at_tensor *silu_then_mul_fn(at_ctx *c, at_tensor **in, void *u) {
  return *(int *)u ? at_mul(c, at_silu(c, in[0]), in[0]) : at_mul(c, at_silu(c, in[0]), in[1]);
}

/* The fused silu(a) b: gradchecks (both operands, one frozen, one tensor on
 * both sides, a broadcast b through the fallback) and the same values and
 * gradients as silu then mul. */
Test(unary, silu_mul_gradcheck_and_matches_silu_then_mul) {
  at_ctx *c = at_ctx_new(0);
  const int64_t sa[] = {3, 4, 5}, sb_bcast[] = {5};
  for (int same = 0; same <= 1; same++)
    for (int frozen = 0; frozen <= 1; frozen++) {
      at_tensor *in[] = {input_for(c, U_SILU, 7 + same, 3, sa), at_test_randn(c, 9, 1, 3, sa)};
      if (frozen) in[1]->requires_grad = 0;
      AT_GRADCHECK(c, silu_mul_fn, in, 2, &same, same ? "silu_mul(a, a)" : "silu_mul(a, b)");
      at_tensor *y1 = silu_mul_fn(c, in, &same), *y2 = silu_then_mul_fn(c, in, &same);
      for (int64_t i = 0; i < y1->size; i++) cr_expect(fabs(y1->data[i] - y2->data[i]) <= 1e-15 * fabs(y2->data[i]));
      at_ctx_reset(c);
    }
  int zero = 0;
  at_tensor *in[] = {input_for(c, U_SILU, 11, 3, sa), at_test_randn(c, 12, 1, 1, sb_bcast)};
  AT_GRADCHECK(c, silu_mul_fn, in, 2, &zero, "silu_mul broadcast b");
  at_ctx_free(c);
}
