/* ops/unary.c: elementwise functions y = f(x), dx = g f'(x).
 *
 * Each op is a pair of inline functions, the value f(x) and the derivative
 * f'(x) (given x and y = f(x), whichever is cheaper), expanded into a forward
 * and a backward loop by UNARY_OP. <tgmath.h> picks the float or double libm
 * function for `real`. The functions that involve e^x are written so that no
 * intermediate overflows for large |x|.
 */
#include <tgmath.h>

#include "core/fastmath.h"
#include "ops/util.h"

/* sigma(x) = 1 / (1 + e^-x), evaluated without overflow on either side
 * (e = e^-|x| <= 1) and branch-free, so the loops vectorise. */
static inline real sigm(real x) {
  real e = at_expr(-fabs(x)), d = 1 / (1 + e);
  return x >= 0 ? d : e * d;
}

#define UNARY_OP(name)                                                                      \
  static void name##_backward(at_ctx *c, at_node *nd) {                                    \
    int fresh;                                                                             \
    real *dx = at_grad_into(c, nd->in[0], &fresh);                                         \
    if (!dx) return;                                                                       \
    const real *x = nd->in[0]->data, *y = nd->out[0]->data, *g = nd->out[0]->grad;         \
    real p = (real)nd->f[0];                                                               \
    int64_t n = nd->out[0]->size;                                                          \
    if (fresh) {                                                                           \
      _Pragma("omp parallel for simd schedule(static) if (n >= AT_PAR_MIN)")               \
      for (int64_t i = 0; i < n; i++) dx[i] = g[i] * name##_d(x[i], y[i], p);              \
    } else {                                                                               \
      _Pragma("omp parallel for simd schedule(static) if (n >= AT_PAR_MIN)")               \
      for (int64_t i = 0; i < n; i++) dx[i] += g[i] * name##_d(x[i], y[i], p);             \
    }                                                                                      \
  }                                                                                        \
  static at_tensor *name##_run(at_ctx *c, at_tensor *xt, double param) {                   \
    if (!xt) return NULL;                                                                  \
    at_tensor *yt = at_new(c, xt->ndim, xt->shape);                                        \
    if (!yt) return NULL;                                                                  \
    const real *x = xt->data;                                                              \
    real *y = yt->data, p = (real)param;                                                   \
    int64_t n = xt->size;                                                                  \
    _Pragma("omp parallel for simd schedule(static) if (n >= AT_PAR_MIN)")                 \
    for (int64_t i = 0; i < n; i++) y[i] = name##_f(x[i], p);                              \
    at_tensor *ins[] = {xt}, *outs[] = {yt};                                               \
    at_node *nd = AT_RECORD(c, #name, name##_backward, ins, outs);                          \
    if (nd) nd->f[0] = param;                                                              \
    return yt;                                                                             \
  }

/* parameters a function does not need */
#define U __attribute__((unused))

/* exp: y = e^x, f' = y */
static inline real exp_f(U real x, U real p) { return exp(x); }
static inline real exp_d(U real x, U real y, U real p) { return y; }
UNARY_OP(exp)

/* log: y = ln x, f' = 1/x (x <= 0 gives -inf/NaN as in libm) */
static inline real log_f(U real x, U real p) { return log(x); }
static inline real log_d(U real x, U real y, U real p) { return 1 / x; }
UNARY_OP(log)

/* sqrt: y = x^(1/2), f' = 1 / (2y) */
static inline real sqrt_f(U real x, U real p) { return sqrt(x); }
static inline real sqrt_d(U real x, U real y, U real p) { return (real)0.5 / y; }
UNARY_OP(sqrt)

/* rsqrt: y = x^(-1/2), f' = -y^3 / 2 */
static inline real rsqrt_f(U real x, U real p) { return 1 / sqrt(x); }
static inline real rsqrt_d(U real x, U real y, U real p) {
  return (real)-0.5 * y * y * y;
}
UNARY_OP(rsqrt)

/* square: y = x^2, f' = 2x */
static inline real square_f(U real x, U real p) { return x * x; }
static inline real square_d(U real x, U real y, U real p) { return 2 * x; }
UNARY_OP(square)

/* tanh: f' = 1 - y^2 */
static inline real tanh_f(U real x, U real p) { return tanh(x); }
static inline real tanh_d(U real x, U real y, U real p) { return 1 - y * y; }
UNARY_OP(tanh)

/* sigmoid: y = 1 / (1 + e^-x), f' = y (1 - y) */
static inline real sigmoid_f(U real x, U real p) { return sigm(x); }
static inline real sigmoid_d(U real x, U real y, U real p) { return y * (1 - y); }
UNARY_OP(sigmoid)

/* logsigmoid: y = log sigma(x) = min(x, 0) - log(1 + e^-|x|), f' = sigma(-x) */
static inline real logsigmoid_f(U real x, U real p) {
  return (x < 0 ? x : 0) - at_log1p_unit(at_expr(-fabs(x)));
}
static inline real logsigmoid_d(U real x, U real y, U real p) { return sigm(-x); }
UNARY_OP(logsigmoid)

/* softplus: y = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), f' = sigma(x) */
static inline real softplus_f(U real x, U real p) {
  return (x > 0 ? x : 0) + at_log1p_unit(at_expr(-fabs(x)));
}
static inline real softplus_d(U real x, U real y, U real p) { return sigm(x); }
UNARY_OP(softplus)

/* silu: y = x s, s = sigma(x); f' = s (1 + x (1 - s)) */
static inline real silu_f(U real x, U real p) { return x * sigm(x); }
static inline real silu_d(U real x, U real y, U real p) {
  real s = sigm(x);
  return s * (1 + x * (1 - s));
}
UNARY_OP(silu)

/* gelu (tanh approximation):
 *   y = x/2 (1 + tanh u) = x sigma(2u),  u = k (x + c x^3), k = sqrt(2/pi), c = 0.044715
 *   f' = s + 2 x s (1 - s) k (1 + 3 c x^2),  s = sigma(2u)
 * The sigma form avoids the cancellation in 1 + tanh u for negative x; the
 * second term is skipped when s (1 - s) is 0 (large |x|), where x^3 may be inf. */
#define GELU_K 0.7978845608028654
#define GELU_C 0.044715
static inline real gelu_f(U real x, U real p) {
  real u = (real)GELU_K * (x + (real)GELU_C * x * x * x);
  return x * sigm(2 * u);
}
static inline real gelu_d(U real x, U real y, U real p) {
  real u = (real)GELU_K * (x + (real)GELU_C * x * x * x);
  real s = sigm(2 * u), q = s * (1 - s);
  if (q == 0) return s;
  return s + 2 * x * q * (real)GELU_K * (1 + 3 * (real)GELU_C * x * x);
}
UNARY_OP(gelu)

/* elu: y = x > 0 ? x : alpha (e^x - 1), f' = x > 0 ? 1 : alpha e^x */
static inline real elu_f(U real x, U real alpha) { return x > 0 ? x : alpha * expm1(x); }
static inline real elu_d(U real x, U real y, U real alpha) {
  return x > 0 ? 1 : alpha * exp(x);
}
UNARY_OP(elu)

/* relu: y = max(x, 0), f' = [x > 0] */
static inline real relu_f(U real x, U real p) { return x > 0 ? x : 0; }
static inline real relu_d(U real x, U real y, U real p) { return x > 0 ? 1 : 0; }
UNARY_OP(relu)

at_tensor *at_exp(at_ctx *c, at_tensor *x) { return exp_run(c, x, 0); }
at_tensor *at_log(at_ctx *c, at_tensor *x) { return log_run(c, x, 0); }
at_tensor *at_sqrt(at_ctx *c, at_tensor *x) { return sqrt_run(c, x, 0); }
at_tensor *at_rsqrt(at_ctx *c, at_tensor *x) { return rsqrt_run(c, x, 0); }
at_tensor *at_square(at_ctx *c, at_tensor *x) { return square_run(c, x, 0); }
at_tensor *at_tanh(at_ctx *c, at_tensor *x) { return tanh_run(c, x, 0); }
at_tensor *at_sigmoid(at_ctx *c, at_tensor *x) { return sigmoid_run(c, x, 0); }
at_tensor *at_logsigmoid(at_ctx *c, at_tensor *x) { return logsigmoid_run(c, x, 0); }
at_tensor *at_softplus(at_ctx *c, at_tensor *x) { return softplus_run(c, x, 0); }
at_tensor *at_silu(at_ctx *c, at_tensor *x) { return silu_run(c, x, 0); }
at_tensor *at_gelu(at_ctx *c, at_tensor *x) { return gelu_run(c, x, 0); }
at_tensor *at_elu(at_ctx *c, at_tensor *x, double alpha) { return elu_run(c, x, alpha); }
at_tensor *at_relu(at_ctx *c, at_tensor *x) { return relu_run(c, x, 0); }

/* ---- silu_mul: y = silu(a) b, SwiGLU's product and the swish output gates ------
 *   da = g b silu'(a),  db = g silu(a)
 * One pass each way where silu then mul take two and keep silu(a) besides.
 * Shapes differing, or a and b one tensor: the two ops. */
#define SM_BLOCK 4096

/* One block: sg = sigma(a) once, then da and db from it, each stored when
 * fresh, else added. a != b (at_silu_mul), so da and db are distinct. */
static inline void silu_mul_block(int64_t n, const real *restrict g, const real *restrict a,
                                  const real *restrict b, real *restrict da, int fa, real *restrict db,
                                  int fb, real *restrict sg) {
  for (int64_t i = 0; i < n; i++) sg[i] = sigm(a[i]);
  if (da && fa)
    for (int64_t i = 0; i < n; i++) da[i] = g[i] * b[i] * (sg[i] * (1 + a[i] * (1 - sg[i])));
  else if (da)
    for (int64_t i = 0; i < n; i++) da[i] += g[i] * b[i] * (sg[i] * (1 + a[i] * (1 - sg[i])));
  if (db && fb)
    for (int64_t i = 0; i < n; i++) db[i] = g[i] * (a[i] * sg[i]);
  else if (db)
    for (int64_t i = 0; i < n; i++) db[i] += g[i] * (a[i] * sg[i]);
}

static void silu_mul_backward(at_ctx *c, at_node *nd) {
  const real *a = nd->in[0]->data, *b = nd->in[1]->data, *g = nd->out[0]->grad;
  int fa, fb;
  real *da = at_grad_into(c, nd->in[0], &fa), *db = at_grad_into(c, nd->in[1], &fb);
  int64_t n = nd->out[0]->size, nb = (n + SM_BLOCK - 1) / SM_BLOCK;
#pragma omp parallel for schedule(static) if (n >= AT_PAR_MIN)
  for (int64_t k = 0; k < nb; k++) {
    real sg[SM_BLOCK];
    int64_t i0 = k * SM_BLOCK, len = AT_MIN(n - i0, SM_BLOCK);
    silu_mul_block(len, g + i0, a + i0, b + i0, da ? da + i0 : NULL, fa, db ? db + i0 : NULL, fb, sg);
  }
}

at_tensor *at_silu_mul(at_ctx *c, at_tensor *a, at_tensor *b) {
  if (!a || !b) return NULL;
  if (a == b || !at_same_shape(a, b)) return at_mul(c, at_silu(c, a), b);
  at_tensor *y = at_new(c, a->ndim, a->shape);
  if (!y) return NULL;
  const real *restrict x = a->data, *restrict z = b->data;
  real *restrict out = y->data; /* y->data in the loop became a scatter */
  int64_t n = a->size;
#pragma omp parallel for simd schedule(static) if (n >= AT_PAR_MIN)
  for (int64_t i = 0; i < n; i++) out[i] = x[i] * sigm(x[i]) * z[i];
  at_tensor *ins[] = {a, b}, *outs[] = {y};
  AT_RECORD(c, "silu_mul", silu_mul_backward, ins, outs);
  return y;
}
