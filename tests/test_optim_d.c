/* optim/ in the double library: the update formulas against torch.optim
 * (float64) to 1e-12, and gradient-norm edge cases only double can reach. */
#include <math.h>
#include <string.h>

#include "testing.h"

#define REF_TOL 1e-12
#include "optim_cases.inc"

Test(optim_d, grad_norm_survives_overflowing_squares) {
  toy t = toy_new();
  memset(t.p->grad, 0, (size_t)t.p->total * sizeof(real));
  t.w->grad[0] = 3e200, t.w->grad[1] = -4e200;
  t.frozen->grad[0] = NAN; /* frozen: not part of the norm */
  double n = at_grad_norm(t.p);
  cr_expect(fabs(n - 5e200) <= 1e-14 * 5e200, "norm %g, expected 5e200", n);
  t.w->grad[2] = INFINITY;
  cr_expect(!isfinite(at_grad_norm(t.p)));
  t.w->grad[2] = NAN;
  cr_expect(isnan(at_grad_norm(t.p)));
  at_params_free(t.p);
}

Test(optim_d, clip_is_exact) {
  toy t = toy_new();
  toy_grads(&t, 3);
  double before = at_grad_norm(t.p);
  cr_assert(before > 0.25);
  cr_expect(at_clip_grad_norm(t.p, 0.25) == before);
  cr_expect(fabs(at_grad_norm(t.p) - 0.25) < 1e-15, "norm after clipping %.17g", at_grad_norm(t.p));
  cr_expect(t.frozen->grad[0] == 5, "a frozen gradient was scaled");
  at_params_free(t.p);
}
