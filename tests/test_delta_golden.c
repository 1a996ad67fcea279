/* ops/attention/delta.c (+ simple_gla.c), float, against flash-linear-
 * attention's reference ops (tests/golden/<op>.h5, from fla's naive
 * recurrent definitions in float32 with PyTorch autograd; B = 2, T = 37,
 * H = 2, K = 16, V = 8, with an initial state). Output, final state and the
 * gradient of sum(o do) + sum(final_state dht) for every input, in the
 * recurrent form and the chunk form with chunk sizes 64 (one ragged chunk)
 * and 16 (three chunks, ragged tail). */
#include "core/h5io.h"
#include "lin_testing.h"

static real *read_exact(at_h5 *h, const char *name, int64_t n) {
  int nd;
  int64_t shape[AT_MAX_DIMS];
  real *x = NULL;
  cr_assert(at_h5_read_real_alloc(h, name, &nd, shape, &x) == AT_OK, "%s", at_errmsg());
  cr_assert(at_shape_size(nd, shape) == n, "%s: %lld elements, want %lld", name,
            (long long)at_shape_size(nd, shape), (long long)n);
  return x;
}

static void check_golden(at_lin_kind kind) {
  char path[1024], name[64];
  snprintf(path, sizeof path, "%s/tests/golden/%s.h5", AT_SOURCE_DIR, at_lin_kind_name(kind));
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  int nd;
  int64_t qs[AT_MAX_DIMS], vs[AT_MAX_DIMS];
  cr_assert(at_h5_shape(h, "inputs/q", &nd, qs) == AT_OK && nd == 4);
  cr_assert(at_h5_shape(h, "inputs/v", &nd, vs) == AT_OK && nd == 4);
  lin_data d = {kind, qs[0], qs[1], qs[2], qs[3], vs[3], {0}, 0, 0};
  for (int i = 0; i < LN_IN; i++) {
    snprintf(name, sizeof name, "inputs/%s", lin_in_names[i]);
    if (at_h5_exists(h, name)) d.x[i] = read_exact(h, name, lin_in_size(&d, i));
  }
  cr_assert(d.x[LH0] && (d.x[LG] != NULL) == (kind != AT_LIN_DELTA_RULE) &&
            (d.x[LBETA] != NULL) == (kind != AT_LIN_SIMPLE_GLA));
  d.d_o = read_exact(h, "inputs/do", d.B * d.T * d.H * d.V);
  d.d_ht = read_exact(h, "inputs/dht", d.B * d.H * d.K * d.V);
  lin_result want = {read_exact(h, "outputs/o", d.B * d.T * d.H * d.V),
                     read_exact(h, "outputs/final_state", d.B * d.H * d.K * d.V), {0}};
  for (int i = 0; i < LN_IN; i++)
    if (d.x[i]) {
      snprintf(name, sizeof name, "grads/d%s", lin_in_names[i]);
      want.dx[i] = read_exact(h, name, lin_in_size(&d, i));
    }
  at_h5_close(h);

  const struct { at_lin_form form; int64_t C; } runs[] = {
      {AT_LIN_RECURRENT, 64}, {AT_LIN_CHUNK, 64}, {AT_LIN_CHUNK, 16}};
  for (int i = 0; i < AT_ARRAY_LEN(runs); i++) {
    lin_result r = lin_run(&d, runs[i].form, runs[i].C);
    char what[96];
    snprintf(what, sizeof what, "%s %s C=%lld vs fla", at_lin_kind_name(kind),
             runs[i].form == AT_LIN_CHUNK ? "chunk" : "recurrent", (long long)runs[i].C);
    lin_expect_close(&d, &r, &want, 1e-5, 1e-4, what);
    lin_result_free(&r);
  }
  lin_result_free(&want);
  lin_data_free(&d);
}

Test(delta_golden, delta_rule) { check_golden(AT_LIN_DELTA_RULE); }
Test(delta_golden, gated_delta_rule) { check_golden(AT_LIN_GATED_DELTA_RULE); }
Test(delta_golden, kda) { check_golden(AT_LIN_KDA); }
Test(delta_golden, simple_gla) { check_golden(AT_LIN_SIMPLE_GLA); }
