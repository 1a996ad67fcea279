/* optim/optim.h: optimisers, learning-rate schedules, clipping.
 *
 * An optimiser updates an at_params store in place from its flat gradient
 * buffer; its state (AdamW moments, SGD momentum) is flat too, with the
 * parameters' offsets, so a checkpoint stores it per parameter name. Only
 * parameters whose tensor requires grad are updated (frozen ones are left
 * exactly as they are).
 */
#ifndef AT_OPTIM_H
#define AT_OPTIM_H

#include "autograd/autograd.h"

typedef enum at_optimizer_kind { AT_OPT_ADAMW, AT_OPT_SGD } at_optimizer_kind;
typedef enum at_schedule_kind {
  AT_SCHED_CONSTANT,
  AT_SCHED_COSINE,  /* warmup, then cosine from lr to min_lr_ratio * lr at the last step */
  AT_SCHED_WSD      /* warmup, stable, then linear decay over the last decay_frac of steps */
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
  double min_lr_ratio;        /* cosine floor */
  double decay_frac;          /* wsd */
} at_optim_cfg;

void at_optim_cfg_defaults(at_optim_cfg *cfg);
/* Learning rate at step (0-based) of total_steps. */
double at_schedule_lr(const at_optim_cfg *cfg, int64_t step);

typedef struct at_optim at_optim;
at_status at_optim_new(const at_optim_cfg *cfg, at_params *p, at_optim **out);
void at_optim_free(at_optim *o);

/* Global 2-norm of the trainable gradients (computed in double). */
double at_grad_norm(const at_params *p);

typedef struct at_step_info {
  double lr, grad_norm;
  int skipped;                /* 1: non-finite gradient, nothing changed */
} at_step_info;
/* Clips, then updates with the scheduled lr for the optimiser's current
 * step and advances the step. A NaN/Inf gradient skips the update (params
 * and state unchanged, step not advanced) and reports it in info. */
at_status at_optim_step(at_optim *o, at_step_info *info);
int64_t at_optim_steps_done(const at_optim *o);

/* State for checkpoints: named flat buffers ("m", "v" for AdamW, "momentum"
 * for SGD) with the parameters' layout, plus the step counter. */
int at_optim_num_buffers(const at_optim *o);
const char *at_optim_buffer_name(const at_optim *o, int i);
real *at_optim_buffer(at_optim *o, int i);
void at_optim_set_steps_done(at_optim *o, int64_t steps);

#endif
