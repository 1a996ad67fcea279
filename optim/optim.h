/* optim/optim.h: optimisers, learning-rate schedules, clipping.
 *
 * An optimiser updates an at_params store in place from its flat gradient
 * buffer; its state (AdamW moments, SGD momentum) is flat too, with the
 * parameters' offsets, so a checkpoint stores it per parameter name. Only
 * parameters whose tensor requires grad are updated (frozen ones are left
 * exactly as they are, and so is their optimiser state).
 *
 * Updates are element-wise (computed in double, stored as `real`), so they
 * do not depend on the thread count; the gradient norm is a sequential
 * double sum.
 */
#ifndef AT_OPTIM_H
#define AT_OPTIM_H

#include "autograd/autograd.h"

typedef enum at_optimizer_kind { AT_OPT_ADAMW, AT_OPT_SGD } at_optimizer_kind;
typedef enum at_schedule_kind {
  AT_SCHED_CONSTANT,
  AT_SCHED_COSINE,  /* warmup, then cosine from lr to min_lr_ratio * lr at the last step */
  AT_SCHED_WSD      /* warmup, stable, then linear decay to min_lr_ratio * lr over the
                       last decay_frac of the steps */
} at_schedule_kind;

typedef struct at_optim_cfg {
  at_optimizer_kind kind;
  double lr;
  double beta1, beta2, eps;   /* AdamW */
  double momentum;            /* SGD */
  int nesterov;               /* SGD */
  double weight_decay;        /* decoupled; parameters flagged AT_PARAM_NO_DECAY are exempt */
  double grad_clip;           /* global 2-norm; 0 = off */
  at_schedule_kind schedule;
  int64_t warmup_steps;
  int64_t total_steps;
  double min_lr_ratio;        /* the floor of cosine and wsd, as a fraction of lr */
  double decay_frac;          /* wsd */
} at_optim_cfg;

/* AdamW, lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight decay 0.01 (PyTorch's
 * AdamW defaults); SGD momentum 0.9 without Nesterov; no clipping; constant
 * schedule, no warmup, total_steps 0; min_lr_ratio 0; decay_frac 0.2. */
void at_optim_cfg_defaults(at_optim_cfg *cfg);
/* AT_E_ARG with a message naming the option when a value is out of range:
 * lr >= 0, 0 <= beta1, beta2 < 1, eps > 0, 0 <= momentum < 1 (Nesterov needs
 * momentum > 0), weight_decay >= 0, grad_clip >= 0, warmup_steps >= 0,
 * total_steps >= 1 for cosine and wsd, min_lr_ratio and decay_frac in [0, 1]. */
at_status at_optim_cfg_check(const at_optim_cfg *cfg);
const char *at_optimizer_name(at_optimizer_kind k);   /* "adamw", "sgd" */
const char *at_schedule_name(at_schedule_kind k);     /* "constant", "cosine", "wsd" */

/* Learning rate at step (0-based) of total_steps. Let W = warmup_steps and
 * N = total_steps:
 *   step < W:   lr * (step + 1) / W          (reaches lr at step W - 1)
 *   constant:   lr
 *   cosine:     floor + (lr - floor) (1 + cos(pi u)) / 2,
 *               u = (step - W) / (N - 1 - W): lr at step W, floor at step N - 1
 *   wsd:        lr until the decay starts at S = max(W, N - round(decay_frac N)),
 *               then linear, u = (step - S) / (N - 1 - S): floor at step N - 1
 * where floor = min_lr_ratio * lr; u is clamped to [0, 1], so steps past the
 * end stay at the floor. */
double at_schedule_lr(const at_optim_cfg *cfg, int64_t step);

typedef struct at_optim at_optim;
/* `p` must be finalized; the optimiser keeps a pointer to it. State starts
 * at zero. AT_E_ARG (from at_optim_cfg_check), AT_E_STATE or AT_E_NOMEM. */
at_status at_optim_new(const at_optim_cfg *cfg, at_params *p, at_optim **out);
void at_optim_free(at_optim *o);
const at_optim_cfg *at_optim_config(const at_optim *o);
at_params *at_optim_params(const at_optim *o);

/* Global 2-norm of the trainable gradients (computed in double). NaN or Inf
 * if any of them is not finite. */
double at_grad_norm(const at_params *p);
/* Scales the trainable gradients so their global norm is max_norm when it
 * is larger; returns the norm before clipping. Nothing changes when the norm
 * is not finite or max_norm <= 0. */
double at_clip_grad_norm(at_params *p, double max_norm);

typedef struct at_step_info {
  double lr, grad_norm;       /* grad_norm: before clipping */
  int skipped;                /* 1: non-finite gradient, nothing changed */
  double clip_scale;          /* factor applied to the gradients (1: not clipped) */
} at_step_info;
/* Clips, then updates with the scheduled lr for the optimiser's current
 * step and advances the step. A NaN/Inf gradient skips the update (params
 * and state unchanged, step not advanced) and reports it in info (status
 * stays AT_OK). The gradients themselves are never modified (the clipping
 * factor is folded into the update). `info` may be NULL.
 *
 * AdamW (as torch.optim.AdamW), t = steps done + 1, g = clip_scale * grad:
 *   w <- w (1 - lr wd)                      (unless AT_PARAM_NO_DECAY)
 *   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
 *   w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * SGD (as torch.optim.SGD with dampening 0, but with decoupled decay):
 *   w <- w (1 - lr wd);  b <- mu b + g;  w <- w - lr (nesterov ? g + mu b : b)
 *   (with momentum 0 there is no buffer and the step is w <- w - lr g). */
at_status at_optim_step(at_optim *o, at_step_info *info);
int64_t at_optim_steps_done(const at_optim *o);

/* State for checkpoints: named flat buffers ("m", "v" for AdamW, "momentum"
 * for SGD with momentum > 0) with the parameters' layout, plus the step
 * counter. */
int at_optim_num_buffers(const at_optim *o);
const char *at_optim_buffer_name(const at_optim *o, int i);
real *at_optim_buffer(const at_optim *o, int i);
void at_optim_set_steps_done(at_optim *o, int64_t steps);

#endif
