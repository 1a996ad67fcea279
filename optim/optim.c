/* optim/optim.c: AdamW and SGD over the flat parameter store, global-norm
 * clipping, and the non-finite-gradient guard.
 *
 * Each update is element-wise: element i of a parameter, its gradient and
 * its state are read and written by one iteration, so splitting a
 * parameter across OpenMP threads cannot change the result. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"

#define MAX_BUFFERS 2
/* Parameters smaller than this are updated by one thread. */
#define PAR_MIN 32768

struct at_optim {
  at_optim_cfg cfg;
  at_params *p;
  int64_t steps;
  int n_buf;
  const char *buf_name[MAX_BUFFERS];
  real *buf[MAX_BUFFERS];
};

at_status at_optim_new(const at_optim_cfg *cfg, at_params *p, at_optim **out) {
  *out = NULL;
  at_status st = at_optim_cfg_check(cfg);
  if (st != AT_OK) return st;
  if (!p || !p->finalized) return at_error(AT_E_STATE, "optimizer: the parameter store is not finalized");
  at_optim *o = calloc(1, sizeof *o);
  if (!o) return at_error(AT_E_NOMEM, "optimizer: out of memory");
  o->cfg = *cfg;
  o->p = p;
  if (cfg->kind == AT_OPT_ADAMW) {
    o->n_buf = 2;
    o->buf_name[0] = "m";
    o->buf_name[1] = "v";
  } else if (cfg->momentum > 0) {
    o->n_buf = 1;
    o->buf_name[0] = "momentum";
  }
  size_t n = (size_t)(p->total ? p->total : 1);
  for (int i = 0; i < o->n_buf; i++) {
    o->buf[i] = calloc(n, sizeof(real));
    if (!o->buf[i]) {
      at_optim_free(o);
      return at_error(AT_E_NOMEM, "optimizer: out of memory for %lld state values",
                      (long long)p->total);
    }
  }
  *out = o;
  return AT_OK;
}

void at_optim_free(at_optim *o) {
  if (!o) return;
  for (int i = 0; i < o->n_buf; i++) free(o->buf[i]);
  free(o);
}

const at_optim_cfg *at_optim_config(const at_optim *o) { return &o->cfg; }
at_params *at_optim_params(const at_optim *o) { return o->p; }
int64_t at_optim_steps_done(const at_optim *o) { return o->steps; }
void at_optim_set_steps_done(at_optim *o, int64_t steps) { o->steps = steps; }
int at_optim_num_buffers(const at_optim *o) { return o->n_buf; }

const char *at_optim_buffer_name(const at_optim *o, int i) {
  AT_ASSERT(i >= 0 && i < o->n_buf);
  return o->buf_name[i];
}

real *at_optim_buffer(const at_optim *o, int i) {
  AT_ASSERT(i >= 0 && i < o->n_buf);
  return o->buf[i];
}

/* ---- gradient norm and clipping ---------------------------------------------- */

/* Sum of squares in double with four accumulators (fixed order). */
static double sum_sq(const real *g, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += (double)g[i] * g[i];
    s1 += (double)g[i + 1] * g[i + 1];
    s2 += (double)g[i + 2] * g[i + 2];
    s3 += (double)g[i + 3] * g[i + 3];
  }
  for (; i < n; i++) s0 += (double)g[i] * g[i];
  return (s0 + s1) + (s2 + s3);
}

/* The norm again with every value divided by the largest magnitude, for
 * finite gradients whose squares overflow (possible only in the double
 * build). */
static double scaled_norm(const at_params *p) {
  double mx = 0;
  for (int k = 0; k < p->n; k++) {
    const at_param *e = &p->list[k];
    if (!e->t->requires_grad) continue;
    const real *g = p->grad + e->offset;
    for (int64_t i = 0; i < e->t->size; i++) {
      double a = fabs((double)g[i]);
      if (!(a <= mx)) mx = a; /* NaN propagates */
    }
  }
  if (!isfinite(mx) || mx == 0) return mx;
  double s = 0;
  for (int k = 0; k < p->n; k++) {
    const at_param *e = &p->list[k];
    if (!e->t->requires_grad) continue;
    const real *g = p->grad + e->offset;
    for (int64_t i = 0; i < e->t->size; i++) {
      double x = (double)g[i] / mx;
      s += x * x;
    }
  }
  return mx * sqrt(s);
}

double at_grad_norm(const at_params *p) {
  if (!p->finalized) return 0;
  double s = 0;
  for (int k = 0; k < p->n; k++) {
    const at_param *e = &p->list[k];
    if (e->t->requires_grad) s += sum_sq(p->grad + e->offset, e->t->size);
  }
  if (isinf(s)) return scaled_norm(p);
  return sqrt(s);
}

double at_clip_grad_norm(at_params *p, double max_norm) {
  double norm = at_grad_norm(p);
  if (!(max_norm > 0) || !isfinite(norm) || norm <= max_norm) return norm;
  double scale = max_norm / norm;
  for (int k = 0; k < p->n; k++) {
    at_param *e = &p->list[k];
    if (!e->t->requires_grad) continue;
    real *g = p->grad + e->offset;
    for (int64_t i = 0; i < e->t->size; i++) g[i] = (real)((double)g[i] * scale);
  }
  return norm;
}

/* ---- updates ------------------------------------------------------------------ */

static void adamw_update(real *w, const real *grad, real *m, real *v, int64_t n, double scale,
                         double lr, double decay, const at_optim_cfg *c, double bc1, double bc2_sqrt) {
  const double b1 = c->beta1, b2 = c->beta2, eps = c->eps;
  const double step_size = lr / bc1, keep = 1.0 - lr * decay;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    double g = (double)grad[i] * scale;
    double wi = (double)w[i] * keep;
    double mi = b1 * (double)m[i] + (1.0 - b1) * g;
    double vi = b2 * (double)v[i] + (1.0 - b2) * g * g;
    m[i] = (real)mi;
    v[i] = (real)vi;
    w[i] = (real)(wi - step_size * mi / (sqrt(vi) / bc2_sqrt + eps));
  }
}

static void sgd_update(real *w, const real *grad, real *buf, int64_t n, double scale, double lr,
                       double decay, const at_optim_cfg *c) {
  const double mu = c->momentum, keep = 1.0 - lr * decay;
  const int nesterov = c->nesterov;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    double g = (double)grad[i] * scale;
    double d = g;
    if (buf) {
      double b = mu * (double)buf[i] + g;
      buf[i] = (real)b;
      d = nesterov ? g + mu * b : b;
    }
    w[i] = (real)((double)w[i] * keep - lr * d);
  }
}

at_status at_optim_step(at_optim *o, at_step_info *info) {
  at_params *p = o->p;
  const at_optim_cfg *c = &o->cfg;
  at_step_info inf = {.lr = at_schedule_lr(c, o->steps), .clip_scale = 1.0};
  inf.grad_norm = at_grad_norm(p);
  if (!isfinite(inf.grad_norm)) {
    inf.skipped = 1;
    if (info) *info = inf;
    return AT_OK;
  }
  if (c->grad_clip > 0 && inf.grad_norm > c->grad_clip) inf.clip_scale = c->grad_clip / inf.grad_norm;

  const double t = (double)(o->steps + 1);
  const double bc1 = 1.0 - pow(c->beta1, t), bc2_sqrt = sqrt(1.0 - pow(c->beta2, t));
  for (int k = 0; k < p->n; k++) {
    at_param *e = &p->list[k];
    if (!e->t->requires_grad) continue;
    int64_t off = e->offset, n = e->t->size;
    double decay = (e->flags & AT_PARAM_NO_DECAY) ? 0.0 : c->weight_decay;
    if (c->kind == AT_OPT_ADAMW)
      adamw_update(p->data + off, p->grad + off, o->buf[0] + off, o->buf[1] + off, n, inf.clip_scale,
                   inf.lr, decay, c, bc1, bc2_sqrt);
    else
      sgd_update(p->data + off, p->grad + off, o->n_buf ? o->buf[0] + off : NULL, n, inf.clip_scale,
                 inf.lr, decay, c);
  }
  o->steps++;
  if (info) *info = inf;
  return AT_OK;
}
