/* ops/attention/dplr.c (+ gla.c), float, against flash-linear-attention's
 * reference ops: tests/golden/gla.h5 (fla/ops/gla/naive.py, the shared
 * golden file) and tests/golden/dplr.h5 (fla/ops/generalized_delta_rule/
 * dplr/naive.py via tests/ref/gen_dplr_golden.py); float32 with PyTorch
 * autograd; B = 2, T = 37, H = 2, K = 16, V = 8, with an initial state.
 * Output, final state and the gradient of sum(o do) + sum(final_state dht)
 * for every input, in the recurrent form and the chunk form with chunk
 * sizes 64 (one ragged chunk), 16 (three chunks, ragged tail) and 4. */
#include "core/h5io.h"
#include "dplr_testing.h"

static real *read_exact(at_h5 *h, const char *name, int64_t n) {
  int nd;
  int64_t shape[AT_MAX_DIMS];
  real *x = NULL;
  cr_assert(at_h5_read_real_alloc(h, name, &nd, shape, &x) == AT_OK, "%s", at_errmsg());
  cr_assert(at_shape_size(nd, shape) == n, "%s: %lld elements, want %lld", name,
            (long long)at_shape_size(nd, shape), (long long)n);
  return x;
}

static void check_golden(int lowrank) {
  const char *op = lowrank ? "dplr" : "gla";
  char path[1024], name[64];
  snprintf(path, sizeof path, "%s/tests/golden/%s.h5", AT_SOURCE_DIR, op);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  int nd;
  int64_t qs[AT_MAX_DIMS], vs[AT_MAX_DIMS];
  cr_assert(at_h5_shape(h, "inputs/q", &nd, qs) == AT_OK && nd == 4);
  cr_assert(at_h5_shape(h, "inputs/v", &nd, vs) == AT_OK && nd == 4);
  dp_data d = {lowrank, qs[0], qs[1], qs[2], qs[3], vs[3], 0, {0}, 0, 0};
  for (int i = 0; i < DN_IN; i++) {
    snprintf(name, sizeof name, "inputs/%s", dp_in_names[i]);
    if (at_h5_exists(h, name)) d.x[i] = read_exact(h, name, dp_in_size(&d, i));
  }
  cr_assert(d.x[DH0] && d.x[DG] && (d.x[DA] != NULL) == lowrank && (d.x[DB] != NULL) == lowrank);
  d.d_o = read_exact(h, "inputs/do", dp_o_size(&d));
  d.d_ht = read_exact(h, "inputs/dht", dp_h_size(&d));
  dp_result want = {read_exact(h, "outputs/o", dp_o_size(&d)),
                    read_exact(h, "outputs/final_state", dp_h_size(&d)), {0}};
  for (int i = 0; i < DN_IN; i++)
    if (d.x[i]) {
      snprintf(name, sizeof name, "grads/d%s", dp_in_names[i]);
      want.dx[i] = read_exact(h, name, dp_in_size(&d, i));
    }
  at_h5_close(h);
  const struct { at_lin_form form; int64_t C; } runs[] = {
      {AT_LIN_RECURRENT, 64}, {AT_LIN_CHUNK, 64}, {AT_LIN_CHUNK, 16}, {AT_LIN_CHUNK, 4}};
  for (int i = 0; i < AT_ARRAY_LEN(runs); i++) {
    dp_result r = dp_run(&d, runs[i].form, runs[i].C);
    char what[96];
    snprintf(what, sizeof what, "%s %s C=%lld vs fla", op,
             runs[i].form == AT_LIN_CHUNK ? "chunk" : "recurrent", (long long)runs[i].C);
    dp_expect_close(&d, &r, &want, 1e-5, 1e-4, what);
    dp_result_free(&r);
  }
  dp_result_free(&want);
  dp_data_free(&d);
}

Test(dplr_golden, gla) { check_golden(0); }
Test(dplr_golden, dplr) { check_golden(1); }
