/* ops/softmax.c: gradchecks of softmax and log_softmax without a mask, with
 * a causal mask broadcast over batch and heads, with fully masked rows and
 * with masks of other broadcast shapes (log_softmax under a mask through
 * exp, since its masked outputs are -inf); values against PyTorch 1.13;
 * rows sum to 1; masked rows give zeros and zero gradient; large logits;
 * shape errors. */
#include <string.h>

#include "ops/ops.h"
#include "testing.h"

/* PyTorch 1.13 float64, x[i] = 3 sin(1.3 i + 0.1) as [3, 4]: softmax(x + mask) with
 * mask rows {0,0,-inf,0}, {0,0,0,0}, {0,-inf,-inf,0}; log_softmax(x). */
static const double want_softmax[] = {0.065240704322926446, 0.92976560207030756, 0, 0.0049936936067658706, 0.0033471911714237895, 0.10349755146228179, 0.81382706293597162, 0.079328194430322782, 0.0039265469201563751, 0, 0, 0.99607345307984374};
static const double want_log_softmax[] = {-2.8903357691573692, -0.23348682913247298, -1.9076963783963643, -5.460243505021638, -5.6996337411376485, -2.2682073239258114, -0.20600738894662865, -2.5341616721652018, -5.7708866524544824, -5.2123746268708402, -1.6058149794223515, -0.23482604289164044};

typedef struct { int log; const at_tensor *mask; } sm_opts;

static at_tensor *sm_fn(at_ctx *c, at_tensor **in, void *u) {
  sm_opts *o = u;
  if (!o->log) return at_softmax(c, in[0], o->mask);
  at_tensor *y = at_log_softmax(c, in[0], o->mask);
  return o->mask ? at_exp(c, y) : y; /* masked entries are -inf: compare through exp */
}

/* [t, t] causal mask (0 on and below the diagonal), rows >= dead fully masked. */
static at_tensor *causal(at_ctx *c, int64_t t, int64_t dead) {
  at_tensor *m = AT_NEW(c, t, t);
  for (int64_t i = 0; i < t; i++)
    for (int64_t j = 0; j < t; j++) m->data[i * t + j] = j <= i && i < dead ? 0 : -INFINITY;
  return m;
}

Test(softmax, gradcheck_plain_and_masked) {
  at_ctx *c = at_ctx_new(0);
  const int64_t shapes[][5] = {{2, 3, 5}, {1, 1}, {3, 2, 1, 7}, {4, 2, 3, 4, 4}};
  for (int lg = 0; lg < 2; lg++) {
    for (int s = 0; s < AT_ARRAY_LEN(shapes); s++) {
      at_tensor *in[] = {at_test_randn(c, 10 * s + lg, 2, (int)shapes[s][0], shapes[s] + 1)};
      sm_opts o = {lg, NULL};
      AT_GRADCHECK(c, sm_fn, in, 1, &o, lg ? "log_softmax" : "softmax");
    }
    /* x [B, H, T, T] with a [T, T] causal mask, the last row fully masked */
    at_tensor *in[] = {AT_RANDN(c, 3 + lg, 2, 2, 2, 4, 4)};
    sm_opts o = {lg, causal(c, 4, 3)};
    AT_GRADCHECK(c, sm_fn, in, 1, &o, lg ? "log_softmax causal" : "softmax causal");
    /* mask [1, T]: the same keys masked in every row; mask [2, 1, 1, 5]: per batch entry */
    at_tensor *m1 = AT_ZEROS(c, 1, 5), *m2 = AT_ZEROS(c, 2, 1, 1, 5);
    m1->data[1] = m1->data[4] = -INFINITY;
    m2->data[0] = m2->data[9] = -INFINITY;
    at_tensor *in2[] = {AT_RANDN(c, 5 + lg, 2, 2, 3, 2, 5)};
    sm_opts o1 = {lg, m1}, o2 = {lg, m2};
    AT_GRADCHECK(c, sm_fn, in2, 1, &o1, "mask [1,T]");
    AT_GRADCHECK(c, sm_fn, in2, 1, &o2, "mask [B,1,1,T]");
  }
  at_ctx_free(c);
}

Test(softmax, values_match_torch) {
  at_ctx *c = at_ctx_new(0);
  real xv[12];
  for (int i = 0; i < 12; i++) xv[i] = 3 * sin(1.3 * i + 0.1);
  at_tensor *x = at_from(c, xv, AT_SHAPE(3, 4)), *m = AT_ZEROS(c, 3, 4);
  m->data[2] = m->data[9] = m->data[10] = -INFINITY;
  at_tensor *y = at_softmax(c, x, m), *l = at_log_softmax(c, x, NULL);
  for (int i = 0; i < 12; i++) {
    cr_expect(fabs(y->data[i] - want_softmax[i]) < 1e-15, "softmax[%d] %.17g", i, y->data[i]);
    cr_expect(fabs(l->data[i] - want_log_softmax[i]) < 1e-14, "log_softmax[%d]", i);
  }
  for (int r = 0; r < 3; r++) {
    double s = 0;
    for (int j = 0; j < 4; j++) s += y->data[r * 4 + j];
    cr_expect(fabs(s - 1) < 1e-15, "row %d sums to %.17g", r, s);
  }
  at_ctx_free(c);
}

Test(softmax, masked_rows_give_zeros_and_no_gradient) {
  at_ctx *c = at_ctx_new(0);
  for (int lg = 0; lg < 2; lg++) {
    at_tensor *x = AT_RANDN(c, 1, 1, 2, 3, 3);
    at_tensor *m = causal(c, 3, 2); /* row 2 of each batch entry fully masked */
    at_tensor *y = lg ? at_log_softmax(c, x, m) : at_softmax(c, x, m);
    for (int i = 0; i < 18; i++) at_grad(c, y)[i] = 1 + i; /* finite everywhere, also where masked */
    cr_assert(at_backward_from_seeded(c) == AT_OK);
    for (int b = 0; b < 2; b++)
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
          int e = b * 9 + i * 3 + j;
          cr_expect(!isnan(y->data[e]) && !isnan(x->grad[e]));
          if (i == 2) cr_expect(y->data[e] == 0 && x->grad[e] == 0, "dead row: %g", y->data[e]);
          else if (j > i) {
            cr_expect(y->data[e] == (lg ? -INFINITY : 0), "masked entry %g", y->data[e]);
            cr_expect(x->grad[e] == 0, "masked entry gets no gradient");
          }
        }
    /* log_softmax: d/dx_j = g_j - p_j sum over unmasked g; row 0 has one entry: 0 */
    if (lg) cr_expect(x->grad[0] == 0 && fabs(x->grad[3] + x->grad[4]) < 1e-12);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

Test(softmax, large_logits) {
  at_ctx *c = at_ctx_new(0);
  real v[] = {1e4, 1e4 - 1, -1e4};
  at_tensor *y = at_softmax(c, at_from(c, v, AT_SHAPE(1, 3)), NULL);
  double e1 = exp(-1.0);
  cr_expect(fabs(y->data[0] - 1 / (1 + e1)) < 1e-15 && fabs(y->data[1] - e1 / (1 + e1)) < 1e-15);
  cr_expect(y->data[2] == 0);
  at_tensor *l = at_log_softmax(c, at_from(c, v, AT_SHAPE(1, 3)), NULL);
  cr_expect(fabs(l->data[0] + log1p(e1)) < 1e-12 && fabs(l->data[2] + 2e4 + log1p(e1)) < 1e-9);
  at_ctx_free(c);
}

Test(softmax, errors) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 2, 4);
  cr_expect(at_softmax(c, x, AT_ZEROS(c, 3)) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "softmax: mask [3] does not broadcast to [2,4]") != NULL, "%s",
            at_errmsg());
  cr_expect(at_log_softmax(c, x, AT_ZEROS(c, 1, 2, 4)) == NULL, "mask of higher rank");
  cr_expect(at_softmax(c, NULL, NULL) == NULL);
  at_ctx_free(c);
}
