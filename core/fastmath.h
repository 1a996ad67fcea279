/* core/fastmath.h: an exp that the compiler can vectorise.
 *
 * libm's expf is a call per element, which keeps softmax, SiLU and sigmoid
 * loops scalar (about a tenth of a training step went into it). at_expr is
 * inline and branch-free: exp(x) = 2^n e^r with n = round(x / ln 2) and
 * |r| <= ln2 / 2, e^r by its Taylor series to degree 7 (truncation below
 * 6e-9 relative, under float's rounding), 2^n built in the exponent bits.
 * Below -87.3 (e^x under the smallest normal float) it returns 0, so a
 * masked -INFINITY gives exactly 0; inputs above 88 give e^88 (about 1.7e38);
 * NaN gives NaN.
 * In the double library it is libm's exp, so gradient checks see exact
 * arithmetic; the same holds for at_log1p_unit below.
 */
#ifndef AT_FASTMATH_H
#define AT_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/base.h"

#ifdef AT_DOUBLE
static inline real at_expr(real x) { return exp(x); }
static inline real at_log1p_unit(real u) { return log1p(u); }
#else
static inline real at_expr(real x) {
  const float lo = -87.3f, hi = 88.0f; /* 2^n stays finite: n <= 127 */
  float xc = x >= lo ? (x <= hi ? x : hi) : lo; /* NaN takes lo: n stays in range */
  /* round to nearest with the 1.5 * 2^23 trick (|x / ln2| < 2^22 here) */
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = (xc - n * 0.693145751953125f) - n * 1.42860682030941723e-6f; /* ln2 in two parts */
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t e = (uint32_t)((int32_t)n + 127) << 23;
  float s;
  memcpy(&s, &e, sizeof s);
  return x < lo ? 0.0f : (x == x ? p * s : x); /* NaN propagates */
}

/* log(1 + u) for 0 <= u <= 1 (softplus and log-sigmoid take u = e^-|x|):
 * 2 atanh(s) with s = u / (2 + u) <= 1/3, by its odd series to s^15
 * (truncation below 1e-9 relative); inline and branch-free, so the loops
 * vectorise where libm's log1pf is a call per element. NaN gives NaN. */
static inline real at_log1p_unit(real u) {
  float s = u / (2.0f + u), z = s * s;
  float p = 1.0f / 15;
  p = p * z + 1.0f / 13;
  p = p * z + 1.0f / 11;
  p = p * z + 1.0f / 9;
  p = p * z + 1.0f / 7;
  p = p * z + 1.0f / 5;
  p = p * z + 1.0f / 3;
  p = p * z + 1.0f;
  return 2.0f * s * p;
}
#endif

#endif
