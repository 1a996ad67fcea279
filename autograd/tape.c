/* autograd/tape.c: context, tape recording and the backward walk. */
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "core/threads.h"

at_ctx *at_ctx_new(size_t arena_bytes) {
  at_ctx *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->arena = at_arena_new(arena_bytes ? arena_bytes : (size_t)4 << 20); /* grows in the first step */
  if (!c->arena) {
    free(c);
    return NULL;
  }
  return c;
}

void at_ctx_free(at_ctx *c) {
  if (!c) return;
  at_arena_free(c->arena);
  free(c->nodes);
  free(c);
}

void at_ctx_reset(at_ctx *c) {
  at_arena_reset(c->arena);
  c->n_nodes = 0;
  c->status = AT_OK;
}

at_status at_ctx_status(const at_ctx *c) { return c->status; }

at_ctx_mark at_ctx_get_mark(const at_ctx *c) {
  at_ctx_mark m = {at_arena_get_mark(c->arena), c->n_nodes};
  return m;
}

void at_ctx_rewind(at_ctx *c, at_ctx_mark m) {
  at_arena_rewind(c->arena, m.arena);
  c->n_nodes = m.n_nodes;
}

void *at_fail(at_ctx *c, at_status s, const char *fmt, ...) {
  if (c->status == AT_OK) { /* keep the first failure's message */
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    at_error(s, "%s", msg);
    c->status = s;
  }
  return NULL;
}

static void *check_alloc(at_ctx *c, void *p) {
  if (!p && c->status == AT_OK) c->status = AT_E_NOMEM; /* message set by the arena */
  return p;
}

at_tensor *at_new(at_ctx *c, int ndim, const int64_t *shape) {
  at_tensor *t = at_tensor_alloc(c->arena, ndim, shape);
  if (!t && c->status == AT_OK) c->status = AT_E_NOMEM;
  return t;
}

at_tensor *at_zeros(at_ctx *c, int ndim, const int64_t *shape) {
  at_tensor *t = at_new(c, ndim, shape);
  if (t) memset(t->data, 0, (size_t)t->size * sizeof(real));
  return t;
}

at_tensor *at_from(at_ctx *c, const real *data, int ndim, const int64_t *shape) {
  at_tensor *t = at_new(c, ndim, shape);
  if (t) memcpy(t->data, data, (size_t)t->size * sizeof(real));
  return t;
}

at_itensor *at_inew(at_ctx *c, int ndim, const int64_t *shape) {
  return check_alloc(c, at_itensor_alloc(c->arena, ndim, shape));
}

void *at_scratch(at_ctx *c, size_t bytes) { return check_alloc(c, at_arena_alloc(c->arena, bytes)); }

void *at_scratch_zero(at_ctx *c, size_t bytes) {
  return check_alloc(c, at_arena_calloc(c->arena, bytes));
}

int at_parallel_items(at_ctx *c, int64_t n, size_t ws, at_item_fn fn, void *arg) {
  ws = (ws + 15) & ~(size_t)15; /* each thread's workspace on its own cache lines */
  int nt = at_threads_here();
  at_arena_mark m = at_arena_get_mark(c->arena);
  real *buf = at_scratch(c, (size_t)nt * ws * sizeof(real));
  if (!buf) return 0;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (int64_t i = 0; i < n; i++) fn(arg, i, buf + (size_t)omp_get_thread_num() * ws);
  at_arena_rewind(c->arena, m);
  return 1;
}

int at_needs_grad(const at_ctx *c, int n_in, at_tensor *const *in) {
  if (c->no_grad) return 0;
  for (int i = 0; i < n_in; i++)
    if (in[i] && in[i]->requires_grad) return 1;
  return 0;
}

at_node *at_record(at_ctx *c, const char *op, at_backward_fn backward, int n_in,
                   at_tensor *const *in, int n_out, at_tensor *const *out) {
  AT_ASSERT(n_in <= AT_NODE_MAX_IN && n_out <= AT_NODE_MAX_OUT);
  if (!at_needs_grad(c, n_in, in)) return NULL;
  if (c->n_nodes == c->cap_nodes) {
    /* Grows during the first step only; later steps reuse the capacity. */
    int cap = c->cap_nodes ? 2 * c->cap_nodes : 1024;
    at_node *nodes = realloc(c->nodes, (size_t)cap * sizeof *nodes);
    if (!nodes) return at_fail(c, AT_E_NOMEM, "tape: cannot grow to %d nodes", cap);
    c->nodes = nodes;
    c->cap_nodes = cap;
  }
  at_node *n = &c->nodes[c->n_nodes++];
  memset(n, 0, sizeof *n);
  n->op = op;
  n->backward = backward;
  n->n_in = n_in;
  n->n_out = n_out;
  for (int i = 0; i < n_in; i++) n->in[i] = in[i];
  for (int i = 0; i < n_out; i++) {
    n->out[i] = out[i];
    if (out[i]) out[i]->requires_grad = 1;
  }
  return n;
}

real *at_grad(at_ctx *c, at_tensor *t) {
  if (!t || !t->requires_grad) return NULL;
  if (!t->grad) t->grad = check_alloc(c, at_arena_calloc(c->arena, (size_t)t->size * sizeof(real)));
  return t->grad;
}

real *at_grad_into(at_ctx *c, at_tensor *t, int *fresh) {
  *fresh = 0;
  if (!t || !t->requires_grad) return NULL;
  if (t->grad) return t->grad;
  *fresh = 1;
  t->grad = check_alloc(c, at_arena_alloc(c->arena, (size_t)t->size * sizeof(real)));
#ifdef AT_POISON_GRADS /* sanitizer builds: an element left unwritten shows as NaN */
  if (t->grad)
    for (int64_t i = 0; i < t->size; i++) t->grad[i] = (real)NAN;
#endif
  return t->grad;
}

at_status at_backward_from_seeded(at_ctx *c) {
  if (c->status != AT_OK) return at_error_prefix(c->status, "backward after a failed forward");
  for (int i = c->n_nodes - 1; i >= 0; i--) {
    at_node *n = &c->nodes[i];
    int has = 0;
    for (int j = 0; j < n->n_out; j++) has |= n->out[j] && n->out[j]->grad;
    if (has) n->backward(c, n);
    if (c->status != AT_OK) return at_error_prefix(c->status, "backward of %s", n->op);
  }
  return AT_OK;
}

at_status at_backward(at_ctx *c, at_tensor *loss) {
  if (!loss) return at_error_prefix(c->status ? c->status : AT_E_STATE, "backward of a failed forward");
  if (loss->size != 1) return at_error(AT_E_SHAPE, "backward: the loss must be a scalar, got %lld elements", (long long)loss->size);
  if (!loss->requires_grad) return at_error(AT_E_STATE, "backward: the loss does not depend on anything that requires grad");
  real *g = at_grad(c, loss);
  if (!g) return c->status;
  g[0] += 1;
  return at_backward_from_seeded(c);
}

void at_no_grad_begin(at_ctx *c) { c->no_grad++; }
void at_no_grad_end(at_ctx *c) {
  AT_ASSERT(c->no_grad > 0);
  c->no_grad--;
}

at_tensor *at_detach(at_ctx *c, at_tensor *x) {
  if (!x) return NULL;
  at_tensor *t = at_tensor_over(c->arena, x->data, x->ndim, x->shape);
  return check_alloc(c, t);
}

at_tensor *at_leaf(at_ctx *c, const real *data, int ndim, const int64_t *shape) {
  at_tensor *t = at_from(c, data, ndim, shape);
  if (t) t->requires_grad = 1;
  return t;
}
