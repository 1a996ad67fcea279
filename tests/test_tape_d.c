/* autograd/: fan-out accumulation, no-grad scopes, stop-gradient, frozen
 * parameters, arenas reused over many steps without growth, failures. */
#include <string.h>

#include "ops/ops.h"
#include "testing.h"

Test(tape, fan_out_accumulates) {
  /* y = x W^T used twice: L = sum(y (.) y') with y' = y W2^T ... kept to
   * linear ops: z = matmul(x, A) + matmul(x, B) as two uses of x. */
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 3, 4), *a = AT_RANDN(c, 2, 1, 4, 2);
  at_tensor *y1 = at_matmul(c, x, a, AT_N, AT_N);
  at_tensor *y2 = at_matmul(c, x, a, AT_N, AT_N);
  /* seed both outputs with 1: dx = 2 * 1 A^T */
  for (int i = 0; i < 6; i++) at_grad(c, y1)[i] = 1, at_grad(c, y2)[i] = 1;
  cr_assert(at_backward_from_seeded(c) == AT_OK);
  for (int r = 0; r < 3; r++)
    for (int j = 0; j < 4; j++) {
      double want = 2 * (a->data[j * 2] + a->data[j * 2 + 1]);
      cr_expect(fabs(x->grad[r * 4 + j] - want) < 1e-12);
    }
  at_ctx_free(c);
}

Test(tape, no_grad_records_nothing) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 3, 4), *w = AT_RANDN(c, 2, 1, 5, 4);
  at_no_grad_begin(c);
  at_tensor *y = at_linear(c, x, w, NULL);
  at_no_grad_end(c);
  cr_expect(c->n_nodes == 0);
  cr_expect(!y->requires_grad);
  at_tensor *y2 = at_linear(c, x, w, NULL);
  cr_expect(c->n_nodes == 1 && y2->requires_grad);
  at_ctx_free(c);
}

Test(tape, detach_stops_gradient) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 2, 3), *w = AT_RANDN(c, 2, 1, 3, 3);
  at_tensor *h = at_linear(c, x, w, NULL);
  at_tensor *hd = at_detach(c, h);
  at_tensor *w2 = AT_RANDN(c, 3, 1, 1, 3);
  at_tensor *y = at_linear(c, hd, w2, NULL); /* [2,1] */
  for (int i = 0; i < 2; i++) at_grad(c, y)[i] = 1;
  cr_assert(at_backward_from_seeded(c) == AT_OK);
  cr_expect(w2->grad != NULL);
  cr_expect(x->grad == NULL && w->grad == NULL, "nothing flows through a detach");
  cr_expect(hd->data == h->data, "detach shares data");
  at_ctx_free(c);
}

Test(tape, frozen_parameters_get_no_gradient) {
  at_params *p = at_params_new();
  at_tensor *w1 = at_params_add(p, "a.w", AT_SHAPE(3, 3), 0, 0);
  at_tensor *w2 = at_params_add(p, "b.w", AT_SHAPE(1, 3), 0, 1);
  cr_assert(at_params_finalize(p) == AT_OK);
  at_fill_normal(p->data, p->total, 1, 1, 0, 1);
  at_params_set_trainable(p, 0, 0);
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 4, 1, 2, 3);
  at_tensor *y = at_linear(c, at_linear(c, x, w1, NULL), w2, NULL);
  at_tensor *s = at_matmul(c, y, AT_RANDN(c, 5, 1, 2, 1), AT_T, AT_N); /* [1,1] */
  cr_assert(at_backward(c, s) == AT_OK, "%s", at_errmsg());
  for (int i = 0; i < 9; i++) cr_expect(p->grad[i] == 0, "frozen group untouched");
  int moved = 0;
  for (int i = 9; i < 12; i++) moved |= p->grad[i] != 0;
  cr_expect(moved, "trainable group gets its gradient");
  at_ctx_free(c);
  at_params_free(p);
}

Test(tape, many_steps_reuse_the_arena) {
  at_params *p = at_params_new();
  at_tensor *w = at_params_add(p, "w", AT_SHAPE(16, 16), 0, 0);
  cr_assert(at_params_finalize(p) == AT_OK);
  at_fill_normal(w->data, w->size, 1, 2, 0, 0.2);
  at_ctx *c = at_ctx_new(4096); /* small: the first step must grow it */
  size_t allocs_after_first = 0;
  for (int step = 0; step < 50; step++) {
    at_tensor *x = AT_RANDN(c, (uint64_t)step, 1, 8, 16);
    x->requires_grad = 0;
    at_tensor *h = x;
    for (int l = 0; l < 4; l++) h = at_linear(c, h, w, NULL);
    for (int64_t i = 0; i < h->size; i++) at_grad(c, h)[i] = 1;
    cr_assert(at_backward_from_seeded(c) == AT_OK);
    at_ctx_reset(c);
    if (step == 1) allocs_after_first = at_arena_block_allocs(c->arena);
  }
  cr_expect(at_arena_block_allocs(c->arena) == allocs_after_first,
            "arena grew after the first steps: %zu -> %zu", allocs_after_first,
            at_arena_block_allocs(c->arena));
  at_ctx_free(c);
  at_params_free(p);
}

Test(tape, backward_errors) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 2, 3);
  cr_expect(at_backward(c, x) == AT_E_SHAPE, "non-scalar loss");
  cr_expect(at_backward(c, NULL) != AT_OK);
  at_tensor *k = AT_RANDN(c, 1, 1, 1);
  k->requires_grad = 0;
  cr_expect(at_backward(c, k) == AT_E_STATE);
  at_ctx_free(c);
}

Test(params, registry) {
  at_params *p = at_params_new();
  cr_assert(at_params_add(p, "x", AT_SHAPE(2), AT_PARAM_NO_DECAY, 0));
  cr_expect(at_params_add(p, "x", AT_SHAPE(2), 0, 0) == NULL, "duplicate name refused");
  cr_assert(at_params_add(p, "y", AT_SHAPE(3, 2), 0, 0));
  cr_assert(at_params_finalize(p) == AT_OK);
  cr_expect(p->total == 8);
  at_param *y = at_params_find(p, "y");
  cr_assert(y);
  cr_expect(y->offset == 2 && y->t->data == p->data + 2 && y->t->grad == p->grad + 2);
  cr_expect(at_params_add(p, "z", AT_SHAPE(1), 0, 0) == NULL, "no additions after finalize");
  at_params_free(p);
}
