/* optim/: AdamW and SGD (float library, against torch.optim), decay
 * exemptions, frozen parameters, schedules, clipping, the non-finite guard,
 * option checks, and convergence on a small quadratic. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testing.h"

#define REF_TOL 2e-5
#include "optim_cases.inc"

static at_optim_cfg adamw_cfg(double lr, double wd) {
  at_optim_cfg c;
  at_optim_cfg_defaults(&c);
  c.lr = lr, c.weight_decay = wd;
  return c;
}

/* ---- weight decay exemptions and frozen parameters ------------------------------ */

Test(optim, decay_is_decoupled_and_skips_no_decay_params) {
  /* zero gradient: AdamW's moments stay 0, so only the decay acts */
  for (int kind = 0; kind < 2; kind++) {
    toy t = toy_new();
    at_optim_cfg c = adamw_cfg(0.1, 0.5);
    if (kind) c.kind = AT_OPT_SGD, c.momentum = 0.9;
    at_optim *o;
    cr_assert(at_optim_new(&c, t.p, &o) == AT_OK);
    real w0[6], b0[3];
    memcpy(w0, t.w->data, sizeof w0);
    memcpy(b0, t.b->data, sizeof b0);
    at_params_zero_grad(t.p);
    cr_assert(at_optim_step(o, NULL) == AT_OK);
    for (int i = 0; i < 6; i++)
      cr_expect(t.w->data[i] == (real)((double)w0[i] * (1 - 0.1 * 0.5)), "%s: w[%d] = %g, expected %g",
                at_optimizer_name(c.kind), i, t.w->data[i], w0[i] * 0.95);
    cr_expect(memcmp(b0, t.b->data, sizeof b0) == 0, "%s: a no-decay parameter decayed",
              at_optimizer_name(c.kind));
    cr_expect(t.frozen->data[0] == 1 && t.frozen->data[1] == 2);
    at_optim_free(o);
    at_params_free(t.p);
  }
}

Test(optim, frozen_parameters_and_their_state_never_change) {
  toy t = toy_new();
  at_optim_cfg c = adamw_cfg(0.1, 0.1);
  at_optim *o;
  cr_assert(at_optim_new(&c, t.p, &o) == AT_OK);
  for (int s = 0; s < 3; s++) {
    toy_grads(&t, s);
    cr_assert(at_optim_step(o, NULL) == AT_OK);
  }
  int64_t off = at_params_find(t.p, "frozen")->offset;
  cr_expect(t.frozen->data[0] == 1 && t.frozen->data[1] == 2);
  for (int k = 0; k < 2; k++)
    cr_expect(at_optim_buffer(o, k)[off] == 0 && at_optim_buffer(o, k)[off + 1] == 0);
  /* unfreeze: now it moves */
  at_params_set_trainable(t.p, 1, 1);
  toy_grads(&t, 3);
  cr_assert(at_optim_step(o, NULL) == AT_OK);
  cr_expect(t.frozen->data[0] < 1, "an unfrozen parameter with gradient 5 did not move");
  at_optim_free(o);
  at_params_free(t.p);
}

/* ---- schedules --------------------------------------------------------------------- */

#define EXPECT_LR(cfg, step, want)                                                           \
  do {                                                                                       \
    double got_ = at_schedule_lr(&(cfg), (step));                                            \
    cr_expect(fabs(got_ - (want)) <= 1e-15 * fabs(want) + 1e-300, "%s step %d: lr %.17g, expected %.17g", \
              at_schedule_name((cfg).schedule), (int)(step), got_, (double)(want));          \
  } while (0)

Test(schedule, constant_with_warmup) {
  at_optim_cfg c = adamw_cfg(0.4, 0);
  EXPECT_LR(c, 0, 0.4);
  EXPECT_LR(c, 1000000, 0.4);
  c.warmup_steps = 4;
  EXPECT_LR(c, 0, 0.1);
  EXPECT_LR(c, 1, 0.2);
  EXPECT_LR(c, 3, 0.4);
  EXPECT_LR(c, 4, 0.4);
  EXPECT_LR(c, 50, 0.4);
}

Test(schedule, cosine) {
  at_optim_cfg c = adamw_cfg(1.0, 0);
  c.schedule = AT_SCHED_COSINE, c.warmup_steps = 10, c.total_steps = 111, c.min_lr_ratio = 0.1;
  EXPECT_LR(c, 0, 0.1);               /* warmup start */
  EXPECT_LR(c, 9, 1.0);               /* warmup end */
  EXPECT_LR(c, 10, 1.0);              /* cosine start */
  EXPECT_LR(c, 60, 0.55);             /* midpoint: (lr + floor) / 2 */
  EXPECT_LR(c, 35, 0.1 + 0.9 * 0.5 * (1 + cos(M_PI / 4)));
  EXPECT_LR(c, 110, 0.1);             /* last step: the floor */
  EXPECT_LR(c, 500, 0.1);             /* past the end */
  for (int s = 10; s < 110; s++)
    cr_expect(at_schedule_lr(&c, s + 1) < at_schedule_lr(&c, s), "cosine not decreasing at %d", s);
  c.warmup_steps = 0, c.min_lr_ratio = 0;
  EXPECT_LR(c, 0, 1.0);
  EXPECT_LR(c, 110, 0.0);
}

Test(schedule, warmup_stable_decay) {
  at_optim_cfg c = adamw_cfg(2.0, 0);
  c.schedule = AT_SCHED_WSD, c.warmup_steps = 5, c.total_steps = 101, c.decay_frac = 0.2;
  c.min_lr_ratio = 0;
  /* 20 decay steps: the decay starts at step 81 and reaches 0 at step 100 */
  EXPECT_LR(c, 0, 0.4);
  EXPECT_LR(c, 4, 2.0);
  EXPECT_LR(c, 5, 2.0);
  EXPECT_LR(c, 80, 2.0);
  EXPECT_LR(c, 81, 2.0);              /* decay start */
  EXPECT_LR(c, 82, 2.0 - 2.0 / 19);
  EXPECT_LR(c, 90, 2.0 * (1 - 9.0 / 19));
  EXPECT_LR(c, 100, 0.0);             /* decay end */
  EXPECT_LR(c, 1000, 0.0);
  c.min_lr_ratio = 0.25;
  EXPECT_LR(c, 100, 0.5);
  c.decay_frac = 0;                   /* no decay phase */
  EXPECT_LR(c, 100, 2.0);
  c.decay_frac = 1, c.min_lr_ratio = 0; /* decay cannot start before warmup ends */
  EXPECT_LR(c, 4, 2.0);
  EXPECT_LR(c, 5, 2.0);
  EXPECT_LR(c, 100, 0.0);
}

/* ---- clipping and the non-finite guard ----------------------------------------------- */

Test(optim, clip_scales_to_the_max_norm) {
  toy t = toy_new();
  toy_grads(&t, 2);
  real before[13];
  memcpy(before, t.p->grad, sizeof before);
  double n0 = at_grad_norm(t.p);
  /* the norm, in double from the float values */
  double s = 0;
  for (int i = 0; i < 11; i++) s += (double)before[i] * before[i];
  cr_expect(n0 == sqrt(s) || fabs(n0 - sqrt(s)) < 1e-15 * n0, "norm %.17g vs %.17g", n0, sqrt(s));
  /* below the maximum: untouched */
  cr_expect(at_clip_grad_norm(t.p, 2 * n0) == n0);
  cr_expect(memcmp(before, t.p->grad, sizeof before) == 0);
  cr_expect(at_clip_grad_norm(t.p, 0) == n0);
  cr_expect(memcmp(before, t.p->grad, sizeof before) == 0);
  /* above: scaled to the maximum */
  cr_expect(at_clip_grad_norm(t.p, 0.5) == n0);
  double n1 = at_grad_norm(t.p);
  cr_expect(fabs(n1 - 0.5) < 1e-7, "norm after clipping to 0.5: %.9g", n1);
  for (int i = 0; i < 11; i++)
    cr_expect(fabs(t.p->grad[i] - before[i] * 0.5 / n0) <= 1e-7 * fabs(before[i]));
  cr_expect(t.frozen->grad[0] == 5 && t.frozen->grad[1] == 5, "frozen gradients were scaled");
  at_params_free(t.p);
}

Test(optim, step_clips_without_touching_the_gradients) {
  /* a clipped step equals an unclipped step on pre-clipped gradients */
  toy a = toy_new(), b = toy_new();
  at_optim_cfg c = adamw_cfg(0.01, 0.1);
  c.grad_clip = 0.3;
  at_optim_cfg c2 = c;
  c2.grad_clip = 0;
  at_optim *oa, *ob;
  cr_assert(at_optim_new(&c, a.p, &oa) == AT_OK);
  cr_assert(at_optim_new(&c2, b.p, &ob) == AT_OK);
  for (int s = 0; s < 3; s++) {
    toy_grads(&a, s);
    toy_grads(&b, s);
    real g[13];
    memcpy(g, a.p->grad, sizeof g);
    double n = at_clip_grad_norm(b.p, 0.3);
    at_step_info ia, ib;
    cr_assert(at_optim_step(oa, &ia) == AT_OK);
    cr_assert(at_optim_step(ob, &ib) == AT_OK);
    cr_expect(memcmp(g, a.p->grad, sizeof g) == 0, "the step modified the gradients");
    cr_expect(ia.grad_norm == n && ia.clip_scale < 1 && fabs(ia.clip_scale - 0.3 / n) < 1e-15);
    cr_expect(ib.clip_scale == 1);
    AT_EXPECT_CLOSE(a.p->data, b.p->data, 13, 1e-6, "clipped step vs step on clipped gradients");
  }
  at_optim_free(oa);
  at_optim_free(ob);
  at_params_free(a.p);
  at_params_free(b.p);
}

static void check_skip(at_optimizer_kind kind, real bad, int where) {
  toy t = toy_new();
  at_optim_cfg c = adamw_cfg(0.01, 0.1);
  c.kind = kind, c.grad_clip = 1.0;
  at_optim *o;
  cr_assert(at_optim_new(&c, t.p, &o) == AT_OK);
  for (int s = 0; s < 2; s++) { /* some state first */
    toy_grads(&t, s);
    cr_assert(at_optim_step(o, NULL) == AT_OK);
  }
  toy_grads(&t, 2);
  t.p->grad[where] = bad;
  real params[13], grads[13], bufs[2][13];
  memcpy(params, t.p->data, sizeof params);
  memcpy(grads, t.p->grad, sizeof grads);
  int nb = at_optim_num_buffers(o);
  for (int k = 0; k < nb; k++) memcpy(bufs[k], at_optim_buffer(o, k), sizeof bufs[k]);
  at_step_info info;
  cr_assert(at_optim_step(o, &info) == AT_OK);
  cr_expect(info.skipped == 1, "%s: a gradient %g at %d did not skip the step", at_optimizer_name(kind),
            (double)bad, where);
  cr_expect(!isfinite(info.grad_norm));
  cr_expect(at_optim_steps_done(o) == 2, "the step counter advanced on a skipped step");
  cr_expect(memcmp(params, t.p->data, sizeof params) == 0, "parameters changed on a skipped step");
  cr_expect(memcmp(grads, t.p->grad, sizeof grads) == 0 || isnan(bad), "gradients changed");
  for (int k = 0; k < nb; k++)
    cr_expect(memcmp(bufs[k], at_optim_buffer(o, k), sizeof bufs[k]) == 0, "state %s changed",
              at_optim_buffer_name(o, k));
  /* the next good step goes through with the next step's lr and bias correction */
  toy_grads(&t, 2);
  cr_assert(at_optim_step(o, &info) == AT_OK);
  cr_expect(!info.skipped && at_optim_steps_done(o) == 3);
  at_optim_free(o);
  at_params_free(t.p);
}

Test(optim, non_finite_gradient_skips_the_step) {
  check_skip(AT_OPT_ADAMW, NAN, 0);
  check_skip(AT_OPT_ADAMW, INFINITY, 7);
  check_skip(AT_OPT_ADAMW, -INFINITY, 10);
  check_skip(AT_OPT_SGD, NAN, 4);
  check_skip(AT_OPT_SGD, INFINITY, 9);
}

Test(optim, non_finite_gradient_of_a_frozen_parameter_is_ignored) {
  toy t = toy_new();
  at_optim_cfg c = adamw_cfg(0.01, 0.1);
  at_optim *o;
  cr_assert(at_optim_new(&c, t.p, &o) == AT_OK);
  toy_grads(&t, 0);
  t.frozen->grad[1] = NAN;
  at_step_info info;
  cr_assert(at_optim_step(o, &info) == AT_OK);
  cr_expect(!info.skipped && isfinite(info.grad_norm) && at_optim_steps_done(o) == 1);
  cr_expect(t.frozen->data[1] == 2);
  at_optim_free(o);
  at_params_free(t.p);
}

/* ---- option checks ------------------------------------------------------------------------ */

static void expect_refused(at_optim_cfg c, const char *word) {
  at_params *p = at_params_new();
  cr_assert(at_params_add(p, "x", AT_SHAPE(2), 0, 0));
  cr_assert(at_params_finalize(p) == AT_OK);
  at_optim *o = (at_optim *)1;
  cr_expect(at_optim_new(&c, p, &o) == AT_E_ARG, "options with a bad %s accepted", word);
  cr_expect(o == NULL);
  cr_expect(strstr(at_errmsg(), word) != NULL, "message '%s' does not name %s", at_errmsg(), word);
  at_params_free(p);
}

Test(optim, bad_options_are_refused_with_their_name) {
  at_optim_cfg c = adamw_cfg(1e-3, 0.1), d;
  d = c, d.lr = -1, expect_refused(d, "lr");
  d = c, d.lr = NAN, expect_refused(d, "lr");
  d = c, d.beta1 = 1, expect_refused(d, "beta1");
  d = c, d.beta2 = -0.1, expect_refused(d, "beta2");
  d = c, d.eps = 0, expect_refused(d, "eps");
  d = c, d.weight_decay = -1, expect_refused(d, "weight_decay");
  d = c, d.grad_clip = -1, expect_refused(d, "grad_clip");
  d = c, d.warmup_steps = -1, expect_refused(d, "warmup_steps");
  d = c, d.schedule = AT_SCHED_COSINE, d.total_steps = 0, expect_refused(d, "total_steps");
  d = c, d.min_lr_ratio = 2, expect_refused(d, "min_lr_ratio");
  d = c, d.decay_frac = -0.5, expect_refused(d, "decay_frac");
  d = c, d.kind = AT_OPT_SGD, d.momentum = 1, expect_refused(d, "momentum");
  d = c, d.kind = AT_OPT_SGD, d.momentum = 0, d.nesterov = 1, expect_refused(d, "nesterov");
  cr_expect(at_optim_cfg_check(&c) == AT_OK);
}

Test(optim, needs_a_finalized_store) {
  at_params *p = at_params_new();
  cr_assert(at_params_add(p, "x", AT_SHAPE(2), 0, 0));
  at_optim_cfg c = adamw_cfg(1e-3, 0);
  at_optim *o;
  cr_expect(at_optim_new(&c, p, &o) == AT_E_STATE);
  cr_expect(strstr(at_errmsg(), "finalized") != NULL, "%s", at_errmsg());
  at_params_free(p);
}

/* ---- convergence ---------------------------------------------------------------------------- */

/* L = 1/2 sum_i a_i (x_i - t_i)^2 over a [4,8] matrix and an [8] bias,
 * condition number 100. Returns the loss and sets the gradient. */
static double quad(at_params *p) {
  double L = 0;
  for (int64_t i = 0; i < p->total; i++) {
    double a = 0.01 + (double)(i % 7) / 6.0 * 0.99, t = sin(1.0 + (double)i);
    double d = (double)p->data[i] - t;
    L += 0.5 * a * d * d;
    p->grad[i] = (real)(a * d);
  }
  return L;
}

static void converge(at_optim_cfg c, int steps, double factor) {
  at_params *p = at_params_new();
  cr_assert(at_params_add(p, "m", AT_SHAPE(4, 8), 0, 0));
  cr_assert(at_params_add(p, "bias", AT_SHAPE(8), AT_PARAM_NO_DECAY, 0));
  cr_assert(at_params_finalize(p) == AT_OK);
  at_fill_normal(p->data, p->total, 1, 2, 0.0, 1.0);
  at_optim *o;
  cr_assert(at_optim_new(&c, p, &o) == AT_OK, "%s", at_errmsg());
  double L0 = quad(p), L = L0;
  for (int s = 0; s < steps; s++) {
    cr_assert(at_optim_step(o, NULL) == AT_OK);
    L = quad(p);
  }
  cr_expect(L < factor * L0, "%s%s (%s): loss %.4g -> %.4g after %d steps", at_optimizer_name(c.kind),
            c.nesterov ? " nesterov" : "", at_schedule_name(c.schedule), L0, L, steps);
  at_optim_free(o);
  at_params_free(p);
}

Test(optim, quadratic_converges) {
  at_optim_cfg c = adamw_cfg(0.05, 0);
  c.schedule = AT_SCHED_COSINE, c.warmup_steps = 10, c.total_steps = 400, c.grad_clip = 1.0;
  converge(c, 400, 1e-4);
  c.schedule = AT_SCHED_WSD, c.decay_frac = 0.3;
  converge(c, 400, 1e-4);
  at_optim_cfg s = adamw_cfg(0.5, 0);
  s.kind = AT_OPT_SGD, s.momentum = 0.9;
  converge(s, 400, 1e-4);
  s.nesterov = 1;
  converge(s, 400, 1e-4);
  s.momentum = 0, s.nesterov = 0, s.lr = 1.0;
  converge(s, 400, 1e-1); /* plain gradient descent on condition number 100: slow but falling */
}
