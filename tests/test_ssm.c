/* ops/attention/selective_scan.c and s4d.c, float: the chunked scan equals
 * the sequential definition (chunk sizes 1, 4, 16, 64 with a ragged tail,
 * with and without initial state: outputs, final state, every gradient) and
 * the step form token by token; S4D's convolution form equals its
 * recurrence and its step form; extreme dt and A stay finite and agree;
 * edge shapes; causality; 1 and 2 threads bit-identical; refusals of bad
 * input. */
#include "core/threads.h"
#include "ssm_testing.h"

/* A training-like scan: B 4, T 150, D 24 (8 blocks of 3), N 16. */
static scan_make training_shape(int h0) {
  return (scan_make){4, 150, 24, 16, 1, 1, 1, 1, h0, -4, 1, 1};
}

Test(selective_scan, chunked_equals_sequential) {
  const int64_t chunks[] = {1, 4, 16, 64};
  for (int h0 = 0; h0 < 2; h0++) {
    scan_make m = training_shape(h0);
    scan_data d = scan_new(&m, 100 + (uint64_t)h0);
    ssm_result ref = scan_run(&d, AT_SCAN_SEQUENTIAL, 0);
    cr_expect(ssm_all_finite(&ref));
    for (int i = 0; i < AT_ARRAY_LEN(chunks); i++) {
      ssm_result r = scan_run(&d, AT_SCAN_CHUNKED, chunks[i]);
      char w[96];
      snprintf(w, sizeof w, "chunk %lld vs sequential, h0 %d", (long long)chunks[i], h0);
      ssm_expect_close(&r, &ref, 1e-5, 1e-5, scan_in_names, w);
      ssm_result_free(&r);
    }
    ssm_result_free(&ref);
    scan_free(&d);
  }
}

/* The step form over one token at a time from the initial state. */
static void scan_steps(const scan_data *d, real *out, real *state) {
  at_ctx *c = at_ctx_new(1 << 20);
  at_tensor *st = AT_ZEROS(c, d->B, d->D, d->N);
  if (d->x[SH0]) memcpy(st->data, d->x[SH0], (size_t)st->size * sizeof(real));
  for (int64_t t = 0; t < d->T; t++) {
    at_ctx_mark mk = at_ctx_get_mark(c);
    at_tensor *tok[SN_IN] = {0};
    for (int i = 0; i < SH0; i++) {
      if (!d->x[i]) continue;
      int64_t s[4];
      int nd = scan_in_shape(d, i, s);
      if (i == SA || i == SD || i == SBIAS) {
        tok[i] = at_from(c, d->x[i], nd, s);
        continue;
      }
      int64_t row = s[2];
      s[1] = 1;
      tok[i] = at_new(c, nd, s);
      for (int64_t b = 0; b < d->B; b++)
        memcpy(tok[i]->data + b * row, d->x[i] + (b * d->T + t) * row, (size_t)row * sizeof(real));
    }
    at_scan_opts o = {d->softplus, 0, AT_SCAN_CHUNKED};
    at_tensor *y = at_selective_scan_step(c, tok[SU], tok[SDELTA], tok[SA], tok[SB], tok[SC], tok[SD], tok[SZ],
                                          tok[SBIAS], st, &o);
    cr_assert(y, "step: %s", at_errmsg());
    for (int64_t b = 0; b < d->B; b++)
      memcpy(out + (b * d->T + t) * d->D, y->data + b * d->D, (size_t)d->D * sizeof(real));
    at_ctx_rewind(c, mk);
  }
  memcpy(state, st->data, (size_t)st->size * sizeof(real));
  at_ctx_free(c);
}

Test(selective_scan, step_equals_chunked) {
  for (int h0 = 0; h0 < 2; h0++) {
    scan_make m = training_shape(h0);
    scan_data d = scan_new(&m, 200 + (uint64_t)h0);
    ssm_result r = scan_run(&d, AT_SCAN_CHUNKED, 16);
    real *out = malloc((size_t)r.out_n[0] * sizeof(real)), *st = malloc((size_t)r.out_n[1] * sizeof(real));
    scan_steps(&d, out, st);
    AT_EXPECT_CLOSE(out, r.out[0], r.out_n[0], 1e-6, "step vs chunked: out");
    AT_EXPECT_CLOSE(st, r.out[1], r.out_n[1], 1e-6, "step vs chunked: final state");
    free(out), free(st);
    ssm_result_free(&r);
    scan_free(&d);
  }
}

/* dt from ~1e-9 to ~40 (softplus of -20 .. 40), A down to -4000, and the
 * option combinations, all finite and equal to the definition. */
Test(selective_scan, extremes_finite_and_agree) {
  const double ranges[][3] = {{-22, -18, 1}, {-13, -11, 1}, {11, 13, 1}, {38, 42, 1}, {-1, 1, 200}, {0, 2, 1000}};
  for (int i = 0; i < AT_ARRAY_LEN(ranges); i++) {
    scan_make m = {2, 70, 6, 8, 1, 1, 1, 1, 1, ranges[i][0], ranges[i][1], ranges[i][2]};
    scan_data d = scan_new(&m, 300 + (uint64_t)i);
    ssm_result a = scan_run(&d, AT_SCAN_CHUNKED, 16), b = scan_run(&d, AT_SCAN_SEQUENTIAL, 0);
    char w[96];
    snprintf(w, sizeof w, "delta in [%g, %g], A x %g", ranges[i][0], ranges[i][1], ranges[i][2]);
    cr_expect(ssm_all_finite(&a), "%s: chunked not finite", w);
    ssm_expect_close(&a, &b, 1e-5, 1e-5, scan_in_names, w);
    ssm_result_free(&a);
    ssm_result_free(&b);
    scan_free(&d);
  }
}

Test(selective_scan, options_and_edge_shapes) {
  const scan_make ms[] = {
      {1, 1, 1, 1, 1, 1, 1, 1, 1, -1, 1, 1},   /* T = D = N = 1 */
      {3, 65, 9, 3, 0, 0, 0, 0, 0, 0.01, 1, 1}, /* plain: no softplus, D, z, bias */
      {2, 64, 17, 5, 1, 0, 1, 1, 0, -2, 2, 1},  /* T = chunk, D odd */
  };
  for (int i = 0; i < AT_ARRAY_LEN(ms); i++) {
    scan_data d = scan_new(&ms[i], 400 + (uint64_t)i);
    ssm_result a = scan_run(&d, AT_SCAN_CHUNKED, 64), b = scan_run(&d, AT_SCAN_SEQUENTIAL, 0);
    char w[64];
    snprintf(w, sizeof w, "case %d", i);
    ssm_expect_close(&a, &b, 1e-5, 1e-5, scan_in_names, w);
    ssm_result_free(&a);
    ssm_result_free(&b);
    scan_free(&d);
  }
}

/* Changing every input from t0 on leaves the outputs before t0 unchanged. */
Test(selective_scan, causal) {
  scan_make m = training_shape(1);
  scan_data d = scan_new(&m, 500), e = scan_new(&m, 500);
  const int64_t t0 = 77;
  for (int i = 0; i < SN_IN; i++) {
    if (!e.x[i] || i == SA || i == SD || i == SBIAS || i == SH0) continue;
    int64_t per = scan_in_size(&e, i) / (e.B * e.T);
    for (int64_t b = 0; b < e.B; b++)
      for (int64_t j = t0 * per; j < e.T * per; j++) e.x[i][b * e.T * per + j] += 0.7f;
  }
  ssm_result a = scan_run(&d, AT_SCAN_CHUNKED, 16), b = scan_run(&e, AT_SCAN_CHUNKED, 16);
  double before = 0, after = 0;
  for (int64_t bb = 0; bb < d.B; bb++)
    for (int64_t j = 0; j < d.T * d.D; j++) {
      double x = fabs((double)a.out[0][bb * d.T * d.D + j] - (double)b.out[0][bb * d.T * d.D + j]);
      if (j < t0 * d.D) before = fmax(before, x);
      else after = fmax(after, x);
    }
  cr_expect(before == 0, "outputs before t0 moved by %g", before);
  cr_expect(after > 1e-3, "the change after t0 is not seen (%g)", after);
  ssm_result_free(&a);
  ssm_result_free(&b);
  scan_free(&d);
  scan_free(&e);
}

static int same(const ssm_result *a, const ssm_result *b) {
  int ok = 1;
  for (int j = 0; j < a->n_out; j++) ok &= !memcmp(a->out[j], b->out[j], (size_t)a->out_n[j] * sizeof(real));
  for (int i = 0; i < a->n_in; i++)
    if (a->din[i]) ok &= !memcmp(a->din[i], b->din[i], (size_t)a->in_n[i] * sizeof(real));
  return ok;
}

Test(selective_scan, threads_bit_identical) {
  scan_make m = training_shape(1);
  scan_data d = scan_new(&m, 600);
  at_set_threads(1);
  ssm_result a = scan_run(&d, AT_SCAN_CHUNKED, 16);
  at_set_threads(2);
  ssm_result b = scan_run(&d, AT_SCAN_CHUNKED, 16);
  at_set_threads(1);
  cr_expect(same(&a, &b), "1 and 2 threads differ");
  ssm_result_free(&a);
  ssm_result_free(&b);
  scan_free(&d);
}

/* One bad argument at a time: A, B, D, the state of the wrong shape. */
static void expect_refused(int which, const char *msg) {
  at_ctx *c = at_ctx_new(1 << 20);
  at_tensor *u = AT_ZEROS(c, 2, 5, 3), *A = AT_ZEROS(c, 3, 4), *Bm = AT_ZEROS(c, 2, 5, 4);
  if (which == 0) A = AT_ZEROS(c, 4, 4);
  at_tensor *Bx = which == 1 ? AT_ZEROS(c, 2, 4, 4) : Bm;
  at_tensor *D = which == 2 ? AT_ZEROS(c, 4) : NULL, *h0 = which == 3 ? AT_ZEROS(c, 2, 3, 5) : NULL;
  at_tensor *y = at_selective_scan(c, u, u, A, Bx, Bm, D, NULL, NULL, h0, NULL, NULL);
  cr_expect(y == NULL && at_ctx_status(c) == AT_E_SHAPE, "bad %s accepted", msg);
  cr_expect(strstr(at_errmsg(), msg) != NULL, "message: %s", at_errmsg());
  at_ctx_free(c);
}

Test(selective_scan, refuses_bad_input) {
  expect_refused(0, "A");
  expect_refused(1, "B");
  expect_refused(2, "D");
  expect_refused(3, "state");
  at_ctx *c = at_ctx_new(1 << 20);
  at_tensor *u = AT_ZEROS(c, 2, 5, 3), *A = AT_ZEROS(c, 3, 4), *Bm = AT_ZEROS(c, 2, 5, 4);
  cr_expect(at_selective_scan(c, u, NULL, A, Bm, Bm, NULL, NULL, NULL, NULL, NULL, NULL) == NULL);
  cr_expect(strstr(at_errmsg(), "required") != NULL, "%s", at_errmsg());
  at_ctx_reset(c);
  u = AT_ZEROS(c, 2, 5, 3), A = AT_ZEROS(c, 3, 4), Bm = AT_ZEROS(c, 2, 5, 4);
  cr_expect(at_selective_scan_step(c, u, u, A, Bm, Bm, NULL, NULL, NULL, NULL, NULL) == NULL);
  cr_expect(strstr(at_errmsg(), "state") != NULL, "%s", at_errmsg());
  at_ctx_free(c);
}

/* ---- S4D ------------------------------------------------------------------------ */

/* Convolution form = recurrence (output and the gradients of every
 * parameter and of u) at B 4, T 150, H 8, M 16, S4D-Lin dt range. */
Test(s4d, conv_equals_recurrence) {
  const double dts[][2] = {{1e-3, 1e-1}, {0.3, 2.0}};
  for (int i = 0; i < 2; i++) {
    s4d_data d = s4d_new(4, 150, 8, 16, dts[i][0], dts[i][1], 0, 10 + (uint64_t)i);
    ssm_result conv = s4d_run(&d, 0, 0), rec = s4d_run(&d, 1, 0);
    char w[64];
    snprintf(w, sizeof w, "dt in [%g, %g]", dts[i][0], dts[i][1]);
    cr_expect(ssm_all_finite(&conv), "%s: not finite", w);
    ssm_expect_close(&conv, &rec, 2e-5, 2e-5, s4d_in_names, w);
    ssm_result_free(&conv);
    ssm_result_free(&rec);
    s4d_free(&d);
  }
}

/* The step form (from an initial state) equals the recurrence. */
Test(s4d, step_equals_recurrence) {
  s4d_data d = s4d_new(3, 40, 5, 6, 1e-3, 1e-1, 1, 30);
  ssm_result rec = s4d_run(&d, 1, 1);
  at_ctx *c = at_ctx_new(1 << 20);
  at_tensor *in[QN_IN];
  s4d_leaves(c, &d, in);
  at_tensor *Bbar = NULL, *Abar = at_s4d_discretize(c, in[QLOGDT], in[QLAR], in[QAIM], in[QB], &Bbar);
  at_tensor *st = at_from(c, d.x[QX0], AT_SHAPE(3, 5, 6, 2));
  real *y = malloc((size_t)rec.out_n[0] * sizeof(real));
  for (int64_t t = 0; t < d.T; t++) {
    at_tensor *ut = AT_NEW(c, 3, 1, 5);
    for (int64_t b = 0; b < 3; b++) memcpy(ut->data + b * 5, d.x[QU] + (b * d.T + t) * 5, 5 * sizeof(real));
    at_tensor *yt = at_s4d_step(c, ut, Abar, Bbar, in[QC], st);
    cr_assert(yt, "%s", at_errmsg());
    for (int64_t b = 0; b < 3; b++) memcpy(y + (b * d.T + t) * 5, yt->data + b * 5, 5 * sizeof(real));
  }
  AT_EXPECT_CLOSE(y, rec.out[0], rec.out_n[0], 1e-6, "s4d step vs recurrence: y");
  AT_EXPECT_CLOSE(st->data, rec.out[1], rec.out_n[1], 1e-6, "s4d step vs recurrence: state");
  free(y);
  at_ctx_free(c);
  ssm_result_free(&rec);
  s4d_free(&d);
}

Test(s4d, threads_bit_identical) {
  s4d_data d = s4d_new(4, 100, 8, 16, 1e-3, 1e-1, 0, 40);
  at_set_threads(1);
  ssm_result a = s4d_run(&d, 0, 0);
  at_set_threads(2);
  ssm_result b = s4d_run(&d, 0, 0);
  at_set_threads(1);
  cr_expect(same(&a, &b), "1 and 2 threads differ");
  ssm_result_free(&a);
  ssm_result_free(&b);
  s4d_free(&d);
}

Test(s4d, refuses_bad_input) {
  at_ctx *c = at_ctx_new(1 << 20);
  at_tensor *ldt = AT_ZEROS(c, 3), *lar = AT_ZEROS(c, 3, 4), *B = AT_ZEROS(c, 3, 4, 2);
  cr_expect(at_s4d_discretize(c, ldt, lar, lar, AT_ZEROS(c, 3, 4), NULL) == NULL);
  cr_expect(strstr(at_errmsg(), "[H,M,2]") != NULL, "%s", at_errmsg());
  at_ctx_reset(c);
  B = AT_ZEROS(c, 3, 4, 2);
  cr_expect(at_s4d_kernel(c, B, B, B, 0) == NULL && strstr(at_errmsg(), "positive"), "%s", at_errmsg());
  at_ctx_reset(c);
  cr_expect(at_s4d_conv(c, AT_ZEROS(c, 2, 10, 3), AT_ZEROS(c, 3, 9)) == NULL && strstr(at_errmsg(), "L >= T"),
            "%s", at_errmsg());
  at_ctx_reset(c);
  B = AT_ZEROS(c, 3, 4, 2);
  cr_expect(at_s4d_step(c, AT_ZEROS(c, 2, 1, 3), B, B, B, AT_ZEROS(c, 2, 3, 4, 1)) == NULL);
  cr_expect(strstr(at_errmsg(), "state") != NULL, "%s", at_errmsg());
  at_ctx_free(c);
}
