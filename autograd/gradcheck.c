/* autograd/gradcheck.c: central finite differences against the tape.
 *
 *   L(x) = sum_i out_i(x) * w_i        (w fixed, random)
 *   numeric dL/dx_j = (L(x + eps e_j) - L(x - eps e_j)) / (2 eps)
 *
 * Meant for the double library (real = double), small shapes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "core/rng.h"

static double weighted_sum(const at_tensor *out, const double *w) {
  double s = 0;
  for (int64_t i = 0; i < out->size; i++) s += (double)out->data[i] * w[i];
  return s;
}

static int eval_loss(at_ctx *c, at_gc_fn f, at_tensor **inputs, void *user, const double *w,
                     int64_t n_out, double *loss) {
  at_ctx_mark m = at_ctx_get_mark(c);
  at_no_grad_begin(c);
  at_tensor *out = f(c, inputs, user);
  at_no_grad_end(c);
  int ok = out && out->size == n_out;
  if (ok) *loss = weighted_sum(out, w);
  at_ctx_rewind(c, m);
  return ok;
}

at_status at_gradcheck(at_ctx *c, at_gc_fn f, at_tensor **inputs, int n_inputs, void *user,
                       double eps, at_gc_result *res) {
  memset(res, 0, sizeof *res);
  res->worst_input = -1;
  at_ctx_mark m0 = at_ctx_get_mark(c);
  for (int i = 0; i < n_inputs; i++) inputs[i]->grad = NULL;

  /* Analytic gradients. */
  at_tensor *out = f(c, inputs, user);
  if (!out) return at_error_prefix(c->status ? c->status : AT_E_STATE, "gradcheck: forward failed");
  if (!out->requires_grad) return at_error(AT_E_STATE, "gradcheck: output does not require grad");
  int64_t n_out = out->size;
  double *w = malloc((size_t)n_out * sizeof *w);
  double **analytic = calloc((size_t)n_inputs, sizeof *analytic);
  at_status st = AT_OK;
  if (!w || !analytic) {
    st = at_error(AT_E_NOMEM, "gradcheck: out of memory");
    goto done;
  }
  at_rng rng = at_rng_make(12345, 777);
  for (int64_t i = 0; i < n_out; i++) w[i] = 2 * at_rng_uniform(&rng) - 1;
  real *g = at_grad(c, out);
  if (!g) {
    st = c->status;
    goto done;
  }
  for (int64_t i = 0; i < n_out; i++) g[i] = (real)w[i];
  st = at_backward_from_seeded(c);
  if (st != AT_OK) goto done;
  for (int k = 0; k < n_inputs; k++) {
    at_tensor *x = inputs[k];
    if (!x->requires_grad) continue;
    analytic[k] = calloc((size_t)x->size, sizeof(double));
    if (!analytic[k]) {
      st = at_error(AT_E_NOMEM, "gradcheck: out of memory");
      goto done;
    }
    if (x->grad)
      for (int64_t j = 0; j < x->size; j++) analytic[k][j] = x->grad[j];
  }
  at_ctx_rewind(c, m0);
  for (int i = 0; i < n_inputs; i++) inputs[i]->grad = NULL;

  /* Numeric gradients, compared per input tensor. */
  for (int k = 0; k < n_inputs; k++) {
    at_tensor *x = inputs[k];
    if (!analytic[k]) continue;
    double diff2 = 0, num2 = 0, ana2 = 0;
    for (int64_t j = 0; j < x->size; j++) {
      real saved = x->data[j];
      double lp, lm;
      x->data[j] = saved + (real)eps;
      int ok = eval_loss(c, f, inputs, user, w, n_out, &lp);
      x->data[j] = saved - (real)eps;
      ok &= eval_loss(c, f, inputs, user, w, n_out, &lm);
      x->data[j] = saved;
      if (!ok) {
        st = at_error_prefix(c->status ? c->status : AT_E_STATE, "gradcheck: perturbed forward failed");
        goto done;
      }
      double num = (lp - lm) / (2 * eps), ana = analytic[k][j];
      diff2 += (num - ana) * (num - ana);
      num2 += num * num;
      ana2 += ana * ana;
      res->n_checked++;
    }
    /* Relative to the larger of the two norms; a gradient that is zero in
     * exact arithmetic (both below 1e-8) is compared absolutely. */
    double rel = sqrt(diff2) / fmax(fmax(sqrt(num2), sqrt(ana2)), 1e-8);
    if (!isfinite(rel)) rel = INFINITY;
    if (rel > res->max_rel_err || res->worst_input < 0) {
      res->max_rel_err = rel;
      res->worst_input = k;
      res->analytic_norm = sqrt(ana2);
      res->numeric_norm = sqrt(num2);
    }
  }
done:
  if (analytic)
    for (int k = 0; k < n_inputs; k++) free(analytic[k]);
  free(analytic);
  free(w);
  at_ctx_rewind(c, m0);
  for (int i = 0; i < n_inputs; i++) inputs[i]->grad = NULL;
  return st;
}
