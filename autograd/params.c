/* autograd/params.c: the parameter store (flat data and gradient buffers). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"

at_params *at_params_new(void) {
  at_params *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->arena = at_arena_new(1 << 16);
  if (!p->arena) {
    free(p);
    return NULL;
  }
  return p;
}

void at_params_free(at_params *p) {
  if (!p) return;
  free(p->data);
  free(p->grad);
  free(p->list);
  at_arena_free(p->arena);
  free(p);
}

at_param *at_params_find(at_params *p, const char *name) {
  for (int i = 0; i < p->n; i++)
    if (strcmp(p->list[i].name, name) == 0) return &p->list[i];
  return NULL;
}

at_tensor *at_params_add(at_params *p, const char *name, int ndim, const int64_t *shape,
                         int flags, int group) {
  if (p->finalized) {
    at_error(AT_E_STATE, "parameter %s declared after the store was finalized", name);
    return NULL;
  }
  if (strlen(name) >= sizeof p->list[0].name) {
    at_error(AT_E_ARG, "parameter name too long: %s", name);
    return NULL;
  }
  if (at_params_find(p, name)) {
    at_error(AT_E_ARG, "parameter %s declared twice", name);
    return NULL;
  }
  if (p->n == p->cap) {
    int cap = p->cap ? 2 * p->cap : 64;
    at_param *l = realloc(p->list, (size_t)cap * sizeof *l);
    if (!l) {
      at_error(AT_E_NOMEM, "out of memory declaring parameters");
      return NULL;
    }
    p->list = l;
    p->cap = cap;
  }
  at_tensor *t = at_tensor_over(p->arena, NULL, ndim, shape);
  if (!t) return NULL;
  at_param *e = &p->list[p->n++];
  memset(e, 0, sizeof *e);
  snprintf(e->name, sizeof e->name, "%s", name);
  e->t = t;
  e->offset = p->total;
  e->flags = flags;
  e->group = group;
  t->requires_grad = 1;
  p->total += t->size;
  return t;
}

at_status at_params_finalize(at_params *p) {
  if (p->finalized) return AT_OK;
  size_t bytes = (size_t)(p->total ? p->total : 1) * sizeof(real);
  p->data = calloc(1, bytes);
  p->grad = calloc(1, bytes);
  if (!p->data || !p->grad)
    return at_error(AT_E_NOMEM, "out of memory for %lld parameters", (long long)p->total);
  for (int i = 0; i < p->n; i++) {
    at_param *e = &p->list[i];
    e->t->data = p->data + e->offset;
    e->t->grad = p->grad + e->offset;
    e->t->name = e->name; /* list no longer moves */
  }
  p->finalized = 1;
  return AT_OK;
}

void at_params_zero_grad(at_params *p) {
  if (p->grad) memset(p->grad, 0, (size_t)p->total * sizeof(real));
}

void at_params_set_trainable(at_params *p, int group, int trainable) {
  for (int i = 0; i < p->n; i++)
    if (group < 0 || p->list[i].group == group) p->list[i].t->requires_grad = trainable;
}
