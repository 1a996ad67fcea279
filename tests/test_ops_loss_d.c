/* ops/loss.c: gradchecks of cross_entropy ([N, V] and [B, T, V], with
 * ignored positions, V = 1, one row); loss, gradient and counts against
 * PyTorch 1.13; equality with -log softmax; stability at huge logits; every
 * label ignored; label and shape errors; accuracy takes the first of tied maxima. */
#include <string.h>

#include "ops/ops.h"
#include "testing.h"

/* PyTorch 1.13 float64: logits[i] = 2.5 sin(0.9 i + 0.2) as [6, 4], labels
 * {2, -100, 0, 3, 3, -100}, F.cross_entropy(ignore_index=-100), its gradient, and
 * the loss of the logits times 1000. Row argmaxes: 2 3 1 3 0 2. */
static const double want_ce[] = {1.688921186742822};
static const double want_ce_big[] = {1186.2683815945854};
static const double want_ce_grad[] = {0.01829548443204957, 0.1033373986920082, -0.14188186011072101, 0.020248976986663284, 0, 0, 0, 0, -0.13715665805023169, 0.11382473433821558, 0.020831266353678102, 0.0025006573583380501, 0.0017526160092798926, 0.0045527992791271924, 0.038086489514140877, -0.044391904802547955, 0.2067222297037116, 0.036987010414807925, 0.0044777978329114277, -0.24818703795143096, 0, 0, 0, 0};

static at_itensor *labels_of(at_ctx *c, const int32_t *v, int ndim, const int64_t *shape) {
  at_itensor *t = at_inew(c, ndim, shape);
  memcpy(t->data, v, (size_t)t->size * sizeof(int32_t));
  return t;
}
#define LABELS(c, v, ...) labels_of((c), (v), AT_SHAPE(__VA_ARGS__))

static at_tensor *ce_fn(at_ctx *c, at_tensor **in, void *u) {
  return at_cross_entropy(c, in[0], u, -100, NULL, NULL);
}

Test(cross_entropy, gradcheck) {
  at_ctx *c = at_ctx_new(0);
  const int32_t lv[] = {2, -100, 0, 4, 4, 1, -100, 3, 0, 2, 1, 1};
  at_itensor *l1 = LABELS(c, lv, 12), *l2 = LABELS(c, lv, 2, 3), *l3 = LABELS(c, lv + 3, 1);
  at_tensor *a[] = {AT_RANDN(c, 1, 2, 12, 5)}, *b[] = {AT_RANDN(c, 2, 2, 2, 3, 5)},
            *d[] = {AT_RANDN(c, 3, 2, 1, 5)};
  AT_GRADCHECK(c, ce_fn, a, 1, l1, "cross_entropy [12,5]");
  AT_GRADCHECK(c, ce_fn, b, 1, l2, "cross_entropy [2,3,5]");
  AT_GRADCHECK(c, ce_fn, d, 1, l3, "cross_entropy one row");
  const int32_t zeros[] = {0, 0, 0};
  at_tensor *e[] = {AT_RANDN(c, 4, 2, 3, 1)}; /* V = 1: loss 0, gradient 0 */
  at_gc_result r;
  cr_assert(at_gradcheck(c, ce_fn, e, 1, LABELS(c, zeros, 3), 1e-6, &r) == AT_OK);
  cr_expect(r.analytic_norm == 0 && r.numeric_norm == 0);
  at_ctx_free(c);
}

Test(cross_entropy, values_match_torch) {
  at_ctx *c = at_ctx_new(0);
  real zv[24];
  for (int i = 0; i < 24; i++) zv[i] = 2.5 * sin(0.9 * i + 0.2);
  const int32_t lv[] = {2, -100, 0, 3, 3, -100};
  at_tensor *z = at_leaf(c, zv, AT_SHAPE(2, 3, 4));
  int64_t n = -1, ok = -1;
  at_tensor *loss = at_cross_entropy(c, z, LABELS(c, lv, 2, 3), -100, &n, &ok);
  cr_assert(loss && loss->ndim == 1 && loss->shape[0] == 1);
  cr_expect(fabs(loss->data[0] - want_ce[0]) < 1e-14, "loss %.17g", loss->data[0]);
  cr_expect(n == 4 && ok == 2, "counted %lld, correct %lld", (long long)n, (long long)ok);
  cr_assert(at_backward(c, loss) == AT_OK);
  for (int i = 0; i < 24; i++)
    cr_expect(fabs(z->grad[i] - want_ce_grad[i]) < 1e-15, "grad[%d] %.17g", i, z->grad[i]);
  /* the same as the mean of -log_softmax at the labels */
  at_tensor *ls = at_log_softmax(c, at_from(c, zv, AT_SHAPE(6, 4)), NULL);
  double s = 0;
  for (int r = 0; r < 6; r++)
    if (lv[r] >= 0) s -= ls->data[r * 4 + lv[r]];
  cr_expect(fabs(loss->data[0] - s / 4) < 1e-14);
  /* huge logits stay finite and exact */
  for (int i = 0; i < 24; i++) zv[i] *= 1000;
  at_tensor *zb = at_leaf(c, zv, AT_SHAPE(6, 4));
  at_tensor *big = at_cross_entropy(c, zb, LABELS(c, lv, 6), -100, NULL, NULL);
  cr_expect(fabs(big->data[0] - want_ce_big[0]) < 1e-12 * want_ce_big[0], "%.17g", big->data[0]);
  cr_assert(at_backward(c, big) == AT_OK);
  cr_expect(at_all_finite(zb->grad, 24));
  at_ctx_free(c);
}

Test(cross_entropy, every_label_ignored) {
  at_ctx *c = at_ctx_new(0);
  const int32_t lv[] = {-1, -1, -1};
  at_tensor *z = AT_RANDN(c, 1, 1, 3, 4);
  int64_t n = -1, ok = -1;
  at_tensor *loss = at_cross_entropy(c, z, LABELS(c, lv, 3), -1, &n, &ok);
  cr_assert(loss);
  cr_expect(loss->data[0] == 0 && n == 0 && ok == 0);
  cr_assert(at_backward(c, loss) == AT_OK, "backward still runs: %s", at_errmsg());
  for (int i = 0; i < 12; i++) cr_expect(z->grad == NULL || z->grad[i] == 0);
  /* an ignore value inside [0, V) ignores that class */
  const int32_t l2[] = {0, 1, 0};
  at_cross_entropy(c, z, LABELS(c, l2, 3), 0, &n, NULL);
  cr_expect(n == 1);
  at_ctx_free(c);
}

Test(cross_entropy, errors) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *z = AT_RANDN(c, 1, 1, 3, 4);
  const int32_t bad[] = {0, 4, 1};
  int64_t n = 7;
  cr_expect(at_cross_entropy(c, z, LABELS(c, bad, 3), -100, &n, NULL) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG && n == 0);
  cr_expect(strstr(at_errmsg(), "cross_entropy: label 4 at position 1 outside 0..3") != NULL,
            "%s", at_errmsg());
  at_ctx_free(c);
  c = at_ctx_new(0);
  z = AT_RANDN(c, 1, 1, 3, 4);
  const int32_t ok[] = {0, 1};
  cr_expect(at_cross_entropy(c, z, LABELS(c, ok, 2), -100, NULL, NULL) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "cross_entropy: labels [2] do not fit logits [3,4]") != NULL,
            "%s", at_errmsg());
  const int32_t neg[] = {-5, 0, 0};
  cr_expect(at_cross_entropy(c, z, LABELS(c, neg, 3), -100, NULL, NULL) == NULL);
  cr_expect(at_cross_entropy(c, NULL, LABELS(c, ok, 2), -100, NULL, NULL) == NULL);
  at_ctx_free(c);
}

/* The prediction counted as correct is the first of equal maxima (torch.argmax's
 * rule), also past the first vector of a long row. */
Test(cross_entropy, accuracy_takes_the_first_of_tied_maxima) {
  at_ctx *c = at_ctx_new(0);
  real zv[3 * 37];
  for (int i = 0; i < 3 * 37; i++) zv[i] = -1 - 0.01 * i;
  zv[0 * 37 + 1] = zv[0 * 37 + 2] = 3;   /* row 0: tie at 1 and 2 */
  zv[1 * 37 + 0] = zv[1 * 37 + 36] = 2;  /* row 1: tie at the ends */
  zv[2 * 37 + 29] = zv[2 * 37 + 33] = 4; /* row 2: tie in the third vector */
  const int32_t first[] = {1, 0, 29}, later[] = {2, 36, 33};
  at_tensor *z = at_from(c, zv, AT_SHAPE(3, 37));
  int64_t n = -1, ok = -1;
  cr_assert(at_cross_entropy(c, z, LABELS(c, first, 3), -100, &n, &ok) != NULL);
  cr_expect(n == 3 && ok == 3, "first of ties: counted %lld, correct %lld", (long long)n,
            (long long)ok);
  cr_assert(at_cross_entropy(c, z, LABELS(c, later, 3), -100, &n, &ok) != NULL);
  cr_expect(n == 3 && ok == 0, "later of ties: counted %lld, correct %lld", (long long)n,
            (long long)ok);
  at_ctx_free(c);
}
