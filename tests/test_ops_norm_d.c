/* ops/norm.c: gradchecks of rmsnorm (with and without weight), layernorm
 * (none / weight / bias / both) and l2norm on several shapes including D = 1
 * and single rows; values against PyTorch 1.13 (float64 literals); unit
 * norms; shape errors. */
#include <string.h>

#include "ops/ops.h"
#include "testing.h"

/* PyTorch 1.13 float64 on x[i] = 2 sin(0.7 i + 0.3) as [3, 5], w_j = 0.5 + 0.1 j,
 * b_j = 0.2 - 0.15 j: rmsnorm (eps 1e-6, by formula), F.layer_norm (eps 1e-5),
 * l2norm x rsqrt(sum x^2 + 1e-6). */
static const double want_rms[] = {0.22091745273842675, 0.75485447963328756, 1.0378528524960442, 0.80791283656328228, 0.055950858444135401, -0.44650262201516927, -0.85602183205732174, -0.90258008676475643, -0.43653773499537191, 0.40922454040601464, 0.59742785929938313, 0.83402360390859009, 0.65202601772165247, 0.027847397974731708, -0.79039671989347815};
static const double want_ln[] = {-0.18939575889989063, 0.5150740502690424, 0.7418293030638492, -0.0079016526764442239, -1.7514113112048517, 0.086269790941762292, -0.56257318435806625, -0.67177058130601863, -0.018840133151161641, 1.1986529071732932, 0.59063690298422544, 0.65733751021598219, 0.22872821281258959, -0.72310166516600638, -1.9045638767142938};
static const double want_ln_plain[] = {-0.77879151779978129, 0.7751234171150706, 1.2026132900912132, 0.30262293415444463, -1.5015681235609464, -0.22746041811647544, -1.0209553072634439, -0.8168151161514553, 0.28894983356104786, 1.7762810079703257, 0.78127380596845086, 1.0122291836933037, 0.46961173258941369, -0.591377081457508, -1.6717376407936597};
static const double want_l2[] = {0.19759462086502141, 0.56263543562885665, 0.66306001359524991, 0.45163710656929079, 0.027802211299337885, -0.39936417105304683, -0.63804113814600849, -0.57663738830110867, -0.24403206453046103, 0.20334535229505427, 0.5343558275000615, 0.6216446137722802, 0.41656422472236238, 0.015567171789956674, -0.39275136527903382};

static void gen(real *x, int n, double a, double b, double s) {
  for (int i = 0; i < n; i++) x[i] = (real)(s * sin(a * i + b));
}

typedef struct { int kind, use_w, use_b; double eps; } norm_opts; /* kind: 0 rms, 1 layer, 2 l2 */

static at_tensor *norm_fn(at_ctx *c, at_tensor **in, void *u) {
  norm_opts *o = u;
  at_tensor *w = o->use_w ? in[1] : NULL, *b = o->use_b ? in[2] : NULL;
  switch (o->kind) {
  case 0: return at_rmsnorm(c, in[0], w, o->eps);
  case 1: return at_layernorm(c, in[0], w, b, o->eps);
  default: return at_l2norm(c, in[0], o->eps);
  }
}

Test(norm, gradcheck_all_variants) {
  at_ctx *c = at_ctx_new(0);
  const int64_t shapes[][4] = {{2, 3, 5}, {3, 2, 1, 4}, {1, 7}, {2, 4, 1}, {2, 1, 2}};
  const norm_opts os[] = {{0, 0, 0, 0}, {0, 1, 0, 0}, {1, 0, 0, 0}, {1, 1, 0, 0},
                          {1, 0, 1, 0}, {1, 1, 1, 0}, {2, 0, 0, 0}};
  for (int s = 0; s < AT_ARRAY_LEN(shapes); s++)
    for (int k = 0; k < AT_ARRAY_LEN(os); k++) {
      int nd = (int)shapes[s][0];
      int64_t d = shapes[s][nd];
      at_tensor *in[] = {at_test_randn(c, 10 * s + k, 1, nd, shapes[s] + 1),
                         at_test_rand(c, 5 + k, 0.5, 1.5, AT_SHAPE(d)),
                         at_test_randn(c, 6 + k, 1, AT_SHAPE(d))};
      norm_opts o = os[k];
      /* With D <= 2 and a tiny eps the outputs hardly depend on x (rmsnorm and
       * l2norm give about sign(x), layernorm about +-1), so the gradient is
       * near 0 and central differences cannot resolve it: a larger eps there. */
      o.eps = d <= 2 ? 0.3 : o.kind == 1 ? 1e-5 : 1e-6;
      char what[64];
      snprintf(what, sizeof what, "norm kind %d w %d b %d shape %d", o.kind, o.use_w, o.use_b, s);
      in[1]->requires_grad = o.use_w;
      AT_GRADCHECK(c, norm_fn, in, o.use_b ? 3 : 1 + o.use_w, &o, what);
    }
  at_ctx_free(c);
}

static void expect_vals(const real *got, const double *want, int n, double tol, const char *what) {
  for (int i = 0; i < n; i++)
    cr_expect(fabs(got[i] - want[i]) <= tol * (1 + fabs(want[i])), "%s[%d]: %.17g vs %.17g", what,
              i, (double)got[i], want[i]);
}

Test(norm, values_match_torch) {
  at_ctx *c = at_ctx_new(0);
  real xv[15], wv[5], bv[5];
  gen(xv, 15, 0.7, 0.3, 2);
  for (int j = 0; j < 5; j++) wv[j] = 0.5 + 0.1 * j, bv[j] = 0.2 - 0.15 * j;
  at_tensor *x = at_from(c, xv, AT_SHAPE(3, 5)), *w = at_from(c, wv, AT_SHAPE(5));
  at_tensor *b = at_from(c, bv, AT_SHAPE(5));
  expect_vals(at_rmsnorm(c, x, w, 1e-6)->data, want_rms, 15, 1e-13, "rmsnorm");
  expect_vals(at_layernorm(c, x, w, b, 1e-5)->data, want_ln, 15, 1e-13, "layernorm");
  expect_vals(at_layernorm(c, x, NULL, NULL, 1e-5)->data, want_ln_plain, 15, 1e-13, "layernorm");
  at_tensor *l2 = at_l2norm(c, x, 1e-6);
  expect_vals(l2->data, want_l2, 15, 1e-13, "l2norm");
  for (int r = 0; r < 3; r++) { /* rows of unit length (up to eps) */
    double s = 0;
    for (int j = 0; j < 5; j++) s += l2->data[r * 5 + j] * l2->data[r * 5 + j];
    cr_expect(fabs(s - 1) < 1e-6, "row %d: |y|^2 = %.12g", r, s);
  }
  /* a zero row stays zero (no NaN) */
  at_tensor *z = AT_ZEROS(c, 1, 4);
  cr_expect(at_all_finite(at_l2norm(c, z, 1e-6)->data, 4) &&
            at_all_finite(at_rmsnorm(c, z, NULL, 1e-6)->data, 4) &&
            at_all_finite(at_layernorm(c, z, NULL, NULL, 1e-5)->data, 4));
  at_ctx_free(c);
}

Test(norm, errors) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 2, 4), *w3 = AT_RANDN(c, 2, 1, 3);
  cr_expect(at_rmsnorm(c, x, w3, 1e-6) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "rmsnorm: weight [3] does not fit input [2,4] (want [4])") != NULL,
            "%s", at_errmsg());
  at_ctx_free(c);
  c = at_ctx_new(0);
  x = AT_RANDN(c, 1, 1, 2, 4);
  cr_expect(at_layernorm(c, x, NULL, AT_RANDN(c, 2, 1, 2, 4), 1e-5) == NULL);
  cr_expect(strstr(at_errmsg(), "layernorm: bias [2,4] does not fit input [2,4]") != NULL, "%s",
            at_errmsg());
  cr_expect(at_l2norm(c, x, -1) == NULL && at_l2norm(c, NULL, 1e-6) == NULL);
  at_ctx_free(c);
}
