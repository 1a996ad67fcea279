/* optim/schedule.c: learning-rate schedules (linear warmup, then constant,
 * cosine or warmup-stable-decay) and option checking. */
#include <math.h>

#include "optim/optim.h"

void at_optim_cfg_defaults(at_optim_cfg *cfg) {
  *cfg = (at_optim_cfg){
    .kind = AT_OPT_ADAMW,
    .lr = 1e-3,
    .beta1 = 0.9,
    .beta2 = 0.999,
    .eps = 1e-8,
    .momentum = 0.9,
    .nesterov = 0,
    .weight_decay = 0.01,
    .grad_clip = 0,
    .schedule = AT_SCHED_CONSTANT,
    .warmup_steps = 0,
    .total_steps = 0,
    .min_lr_ratio = 0,
    .decay_frac = 0.2,
  };
}

const char *at_optimizer_name(at_optimizer_kind k) {
  switch (k) {
  case AT_OPT_ADAMW: return "adamw";
  case AT_OPT_SGD: return "sgd";
  }
  return "unknown";
}

const char *at_schedule_name(at_schedule_kind k) {
  switch (k) {
  case AT_SCHED_CONSTANT: return "constant";
  case AT_SCHED_COSINE: return "cosine";
  case AT_SCHED_WSD: return "wsd";
  }
  return "unknown";
}

/* !(x >= lo) also catches NaN. */
#define RANGE(cond, name, val, what) \
  do { if (!(cond)) return at_error(AT_E_ARG, "optimizer: %s = %g %s", (name), (double)(val), (what)); } while (0)

at_status at_optim_cfg_check(const at_optim_cfg *c) {
  if (c->kind != AT_OPT_ADAMW && c->kind != AT_OPT_SGD)
    return at_error(AT_E_ARG, "optimizer: unknown kind %d", (int)c->kind);
  if (c->schedule != AT_SCHED_CONSTANT && c->schedule != AT_SCHED_COSINE && c->schedule != AT_SCHED_WSD)
    return at_error(AT_E_ARG, "optimizer: unknown schedule %d", (int)c->schedule);
  RANGE(c->lr >= 0 && isfinite(c->lr), "lr", c->lr, "must be finite and >= 0");
  RANGE(c->weight_decay >= 0 && isfinite(c->weight_decay), "weight_decay", c->weight_decay,
        "must be finite and >= 0");
  RANGE(c->grad_clip >= 0 && isfinite(c->grad_clip), "grad_clip", c->grad_clip,
        "must be finite and >= 0 (0 = off)");
  if (c->kind == AT_OPT_ADAMW) {
    RANGE(c->beta1 >= 0 && c->beta1 < 1, "beta1", c->beta1, "must be in [0, 1)");
    RANGE(c->beta2 >= 0 && c->beta2 < 1, "beta2", c->beta2, "must be in [0, 1)");
    RANGE(c->eps > 0 && isfinite(c->eps), "eps", c->eps, "must be finite and > 0");
  } else {
    RANGE(c->momentum >= 0 && c->momentum < 1, "momentum", c->momentum, "must be in [0, 1)");
    if (c->nesterov && !(c->momentum > 0))
      return at_error(AT_E_ARG, "optimizer: nesterov needs momentum > 0");
  }
  if (c->warmup_steps < 0)
    return at_error(AT_E_ARG, "optimizer: warmup_steps = %lld must be >= 0", (long long)c->warmup_steps);
  if (c->schedule != AT_SCHED_CONSTANT && c->total_steps < 1)
    return at_error(AT_E_ARG, "optimizer: the %s schedule needs total_steps >= 1 (got %lld)",
                    at_schedule_name(c->schedule), (long long)c->total_steps);
  RANGE(c->min_lr_ratio >= 0 && c->min_lr_ratio <= 1, "min_lr_ratio", c->min_lr_ratio, "must be in [0, 1]");
  RANGE(c->decay_frac >= 0 && c->decay_frac <= 1, "decay_frac", c->decay_frac, "must be in [0, 1]");
  return AT_OK;
}

/* Progress through a decay that starts at step `start` and ends at `last`:
 * 0 up to start, 1 from last on. */
static double progress(int64_t step, int64_t start, int64_t last) {
  if (step <= start) return 0;
  if (step >= last) return 1;
  return (double)(step - start) / (double)(last - start);
}

double at_schedule_lr(const at_optim_cfg *cfg, int64_t step) {
  double lr = cfg->lr;
  if (step < 0) step = 0;
  if (cfg->warmup_steps > 0 && step < cfg->warmup_steps)
    return lr * (double)(step + 1) / (double)cfg->warmup_steps;
  double floor = cfg->min_lr_ratio * lr;
  int64_t last = cfg->total_steps - 1;
  switch (cfg->schedule) {
  case AT_SCHED_CONSTANT:
    return lr;
  case AT_SCHED_COSINE: {
    double u = progress(step, cfg->warmup_steps, last);
    return floor + (lr - floor) * 0.5 * (1.0 + cos(M_PI * u));
  }
  case AT_SCHED_WSD: {
    int64_t n_decay = (int64_t)llround(cfg->decay_frac * (double)cfg->total_steps);
    if (n_decay <= 0) return lr;
    int64_t start = AT_MAX(cfg->warmup_steps, cfg->total_steps - n_decay);
    double u = progress(step, start, last);
    return lr - (lr - floor) * u;
  }
  }
  return lr;
}
