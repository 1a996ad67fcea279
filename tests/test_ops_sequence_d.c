/* ops/sequence.c: gradchecks of rope ([B,T,H,D] and [B,T,D], partial
 * rotation, T = 1, pos0 > 0), conv1d_causal (K = 1..4, with and without
 * bias, T < K, T = 1) and cumsum (every dim); rope against PyTorch's
 * rotate-half formula and norm preservation; conv and cumsum by hand;
 * errors. */
#include <string.h>

#include "ops/ops.h"
#include "testing.h"

/* PyTorch 1.13 float64: x[i] = 1.5 sin(0.37 i + 0.5) as [1, 3, 2, 6], d_rot 4,
 * theta 1e4, positions 5..7, cos/sin of cat(freqs, freqs), x*cos + rotate_half(x)*sin. */
static const double want_rope[] = {1.564395197561256, 1.0701494368264015, -0.28717444590151925, 1.5542750705929904, 1.3761569329227148, 1.0672100291862665, -0.276175257811898, 0.12488623210767111, -0.72181062675983432, -0.94790499583743437, -1.3073636586203823, -1.4848197076102558, -1.6408641593522086, -1.2170073700067834, -0.40869828694687421, -0.42034972280915001, 0.20458240491239646, 0.72809222350843539, 1.5258117377429705, 1.3371302590405776, 1.1165483673114542, 1.4548555186014782, 1.0600021436038169, 0.60448009308697159, 0.68187541213906611, -0.38631590981209624, -0.68026184027095493, -1.3426529196532246, -1.4862358113963194, -1.4589718496785096, -0.70931520397044956, -0.85541876912802695, -1.0646922821620042, 0.15525388746961966, 0.73701232661072158, 1.1595693971784904};

/* ---- rope ----- */

typedef struct { int64_t d_rot, pos0; } rope_opts;

static at_tensor *rope_fn(at_ctx *c, at_tensor **in, void *u) {
  rope_opts *o = u;
  return at_rope(c, in[0], o->d_rot, 10000.0, o->pos0);
}

Test(rope, gradcheck) {
  at_ctx *c = at_ctx_new(0);
  const struct { int nd; int64_t s[4]; rope_opts o; } cs[] = {
    {4, {2, 3, 2, 6}, {4, 0}}, {4, {1, 5, 3, 4}, {4, 7}}, {3, {2, 3, 8}, {2, 100}},
    {4, {1, 1, 1, 2}, {2, 3}}, {3, {1, 4, 5}, {4, 0}},
  };
  for (int k = 0; k < AT_ARRAY_LEN(cs); k++) {
    at_tensor *in[] = {at_test_randn(c, k, 1, cs[k].nd, cs[k].s)};
    rope_opts o = cs[k].o;
    AT_GRADCHECK(c, rope_fn, in, 1, &o, "rope");
  }
  at_ctx_free(c);
}

Test(rope, matches_torch_and_preserves_norms) {
  at_ctx *c = at_ctx_new(0);
  real xv[36];
  for (int i = 0; i < 36; i++) xv[i] = 1.5 * sin(0.37 * i + 0.5);
  at_tensor *x = at_from(c, xv, AT_SHAPE(1, 3, 2, 6));
  at_tensor *y = at_rope(c, x, 4, 10000.0, 5);
  for (int i = 0; i < 36; i++)
    cr_expect(fabs(y->data[i] - want_rope[i]) < 1e-14, "rope[%d]: %.17g vs %.17g", i,
              y->data[i], want_rope[i]);
  /* every rotated pair (i, i + 2) keeps its length; dims 4, 5 pass through */
  for (int r = 0; r < 6; r++)
    for (int i = 0; i < 2; i++) {
      const real *a = xv + r * 6, *b = y->data + r * 6;
      double na = a[i] * a[i] + a[i + 2] * a[i + 2], nb = b[i] * b[i] + b[i + 2] * b[i + 2];
      cr_expect(fabs(na - nb) < 1e-14);
      cr_expect(b[4] == a[4] && b[5] == a[5]);
    }
  /* position 0 is the identity; [B,T,D] gives the same as [B,T,1,D] */
  at_tensor *y0 = at_rope(c, at_from(c, xv, AT_SHAPE(1, 1, 6, 6)), 6, 500.0, 0);
  for (int i = 0; i < 36; i++) cr_expect(y0->data[i] == xv[i]);
  at_tensor *a = at_rope(c, at_from(c, xv, AT_SHAPE(2, 3, 6)), 4, 10.0, 2);
  at_tensor *b = at_rope(c, at_from(c, xv, AT_SHAPE(2, 3, 1, 6)), 4, 10.0, 2);
  for (int i = 0; i < 36; i++) cr_expect(a->data[i] == b->data[i]);
  at_ctx_free(c);
}

Test(rope, errors) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 1, 2, 2, 6);
  cr_expect(at_rope(c, x, 3, 1e4, 0) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "rope: d_rot 3") != NULL, "%s", at_errmsg());
  cr_expect(at_rope(c, x, 8, 1e4, 0) == NULL && at_rope(c, x, 4, 0, 0) == NULL);
  cr_expect(at_rope(c, AT_RANDN(c, 1, 1, 4, 6), 4, 1e4, 0) == NULL, "2-D input");
  cr_expect(at_rope(c, NULL, 4, 1e4, 0) == NULL);
  at_ctx_free(c);
}

/* ---- conv1d_causal ----- */

static at_tensor *conv_fn(at_ctx *c, at_tensor **in, void *u) {
  return at_conv1d_causal(c, in[0], in[1], u ? in[2] : NULL);
}

Test(conv1d_causal, gradcheck) {
  at_ctx *c = at_ctx_new(0);
  const int64_t cs[][4] = {{2, 5, 3, 4}, {1, 7, 2, 3}, {2, 3, 4, 4}, {1, 1, 3, 2},
                           {3, 4, 1, 1}, {1, 2, 5, 4}};
  for (int k = 0; k < AT_ARRAY_LEN(cs); k++)
    for (int bias = 0; bias < 2; bias++) {
      int64_t b = cs[k][0], t = cs[k][1], ch = cs[k][2], kw = cs[k][3];
      at_tensor *in[] = {AT_RANDN(c, k, 1, b, t, ch), AT_RANDN(c, k + 10, 1, ch, kw),
                         AT_RANDN(c, k + 20, 1, ch)};
      char what[64];
      snprintf(what, sizeof what, "conv B%lld T%lld C%lld K%lld bias %d", (long long)b,
               (long long)t, (long long)ch, (long long)kw, bias);
      AT_GRADCHECK(c, conv_fn, in, bias ? 3 : 2, bias ? c : NULL, what);
    }
  at_ctx_free(c);
}

Test(conv1d_causal, values_by_hand) {
  at_ctx *c = at_ctx_new(0);
  /* x [1, 4, 2]: channel 0 = 1 2 3 4, channel 1 = 10 20 30 40; w [2, 3]; bias {0.5, -1} */
  real xv[] = {1, 10, 2, 20, 3, 30, 4, 40}, wv[] = {1, 2, 3, -1, 0, 1}, bv[] = {0.5, -1};
  at_tensor *y = at_conv1d_causal(c, at_from(c, xv, AT_SHAPE(1, 4, 2)),
                                  at_from(c, wv, AT_SHAPE(2, 3)), at_from(c, bv, AT_SHAPE(2)));
  /* y[t,0] = .5 + 1 x[t-2] + 2 x[t-1] + 3 x[t];  y[t,1] = -1 - x[t-2] + x[t] */
  const real want[] = {3.5, 9, 8.5, 19, 14.5, 19, 20.5, 19};
  for (int i = 0; i < 8; i++) cr_expect(y->data[i] == want[i], "y[%d] = %g", i, y->data[i]);
  cr_expect(at_conv1d_causal(c, at_from(c, xv, AT_SHAPE(1, 4, 2)), AT_RANDN(c, 1, 1, 3, 2), NULL) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "conv1d_causal: input [1,4,2], weight [3,2], bias none") != NULL,
            "%s", at_errmsg());
  at_ctx_free(c);
}

/* ---- cumsum ----- */

static at_tensor *cumsum_fn(at_ctx *c, at_tensor **in, void *u) {
  return at_cumsum(c, in[0], *(int *)u);
}

Test(cumsum, gradcheck_values_errors) {
  at_ctx *c = at_ctx_new(0);
  for (int dim = -3; dim < 3; dim++) {
    at_tensor *in[] = {AT_RANDN(c, dim + 4, 1, 2, 5, 3)};
    AT_GRADCHECK(c, cumsum_fn, in, 1, &dim, "cumsum");
  }
  int d0 = 0;
  at_tensor *one[] = {AT_RANDN(c, 9, 1, 1)};
  AT_GRADCHECK(c, cumsum_fn, one, 1, &d0, "cumsum [1]");
  real v[] = {1, 2, 3, 4, 5, 6};
  at_tensor *a = at_cumsum(c, at_from(c, v, AT_SHAPE(2, 3)), 1);
  at_tensor *b = at_cumsum(c, at_from(c, v, AT_SHAPE(2, 3)), 0);
  const real wa[] = {1, 3, 6, 4, 9, 15}, wb[] = {1, 2, 3, 5, 7, 9};
  for (int i = 0; i < 6; i++) cr_expect(a->data[i] == wa[i] && b->data[i] == wb[i]);
  cr_expect(at_cumsum(c, a, 2) == NULL && at_ctx_status(c) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "cumsum: dim 2 outside the rank of [2,3]") != NULL, "%s",
            at_errmsg());
  at_ctx_free(c);
}
