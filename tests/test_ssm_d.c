/* ops/attention/selective_scan.c and s4d.c in double: central-difference
 * gradient checks of every op and form (the chunked scan at chunk sizes 1,
 * 4, 5, 64 with ragged tails, with and without initial state, softplus,
 * bias, D and z; dt near 0 and large, A strongly negative; the S4D
 * discretisation, kernel, convolution and recurrence, with and without
 * initial state; the kernel beyond T taps and the convolution alone) and of both whole layers (mamba, s4d) in both forms, every
 * parameter and the input. */
#include "lin_gradcheck.h" /* pack() */
#include "linlayer_testing.h"
#include "ssm_testing.h"

typedef struct scan_gc {
  int softplus, want_ht;
  at_scan_form form;
  int64_t C;
  int idx[SN_IN]; /* position of each op input in the gradcheck array, -1 if absent */
} scan_gc;

static at_tensor *scan_fn(at_ctx *c, at_tensor **in, void *u) {
  const scan_gc *g = u;
  at_tensor *x[SN_IN], *ht = NULL;
  for (int i = 0; i < SN_IN; i++) x[i] = g->idx[i] >= 0 ? in[g->idx[i]] : NULL;
  at_tensor *o = scan_call(c, x, g->softplus, g->form, g->C, g->want_ht ? &ht : NULL);
  return g->want_ht ? pack(c, o, ht) : o;
}

/* eps: the finite-difference step (the extremes need a larger one: their
 * gradients are small against the loss, so 1e-6 is lost in rounding). */
static void scan_gradcheck_eps(const scan_make *m, at_scan_form form, int64_t C, int want_ht, uint64_t seed,
                               const char *what, double eps) {
  at_ctx *c = at_ctx_new(1 << 22);
  scan_data d = scan_new(m, seed);
  at_tensor *x[SN_IN], *in[SN_IN];
  scan_leaves(c, &d, x);
  scan_gc g = {m->softplus, want_ht, form, C, {0}};
  int n = 0;
  for (int i = 0; i < SN_IN; i++) {
    g.idx[i] = x[i] ? n : -1;
    if (x[i]) in[n++] = x[i];
  }
  char w[192];
  snprintf(w, sizeof w, "%s (form %d, C %lld, T %lld, ht %d)", what, (int)form, (long long)C, (long long)m->T,
           want_ht);
  at_gc_result r;
  cr_assert(at_gradcheck(c, scan_fn, in, n, &g, eps, &r) == AT_OK, "%s: %s", w, at_errmsg());
  cr_expect(r.max_rel_err < 1e-6 && r.n_checked > 0, "%s: gradient relative error %.3g on input %d", w,
            r.max_rel_err, r.worst_input);
  scan_free(&d);
  at_ctx_free(c);
}

static void scan_gradcheck(const scan_make *m, at_scan_form form, int64_t C, int want_ht, uint64_t seed,
                           const char *what) {
  scan_gradcheck_eps(m, form, C, want_ht, seed, what, 1e-6);
}

Test(selective_scan_gradcheck, chunked_forms) {
  const struct { int64_t C, T; } cs[] = {{1, 5}, {4, 7}, {5, 13}, {64, 9}};
  for (int i = 0; i < AT_ARRAY_LEN(cs); i++)
    for (int h0 = 0; h0 < 2; h0++) {
      scan_make m = {1 + h0, cs[i].T, 3, 4, 1, 1, 1, 1, h0, -2, 1, 1};
      scan_gradcheck(&m, AT_SCAN_CHUNKED, cs[i].C, 1, 10 * (uint64_t)i + (uint64_t)h0, "softplus, D, z, bias");
    }
}

Test(selective_scan_gradcheck, options_absent) {
  /* no softplus (dt = delta + bias must stay positive), no D, no z, no bias */
  scan_make m = {2, 9, 10, 3, 0, 0, 0, 0, 0, 0.05, 0.5, 1}; /* D = 10 channels: blocks of unequal size */
  scan_gradcheck(&m, AT_SCAN_CHUNKED, 4, 0, 3, "plain, o only");
  scan_gradcheck(&m, AT_SCAN_CHUNKED, 4, 1, 4, "plain");
  m.with_bias = 1, m.with_h0 = 1;
  scan_gradcheck(&m, AT_SCAN_CHUNKED, 3, 1, 5, "bias, h0, no softplus");
}

Test(selective_scan_gradcheck, sequential_form) {
  scan_make m = {2, 6, 3, 4, 1, 1, 1, 1, 1, -2, 1, 1};
  scan_gradcheck(&m, AT_SCAN_SEQUENTIAL, 0, 1, 20, "sequential");
}

/* dt near 0 (softplus(-12) ~ 6e-6), large (softplus(12) ~ 12), A strongly
 * negative (down to -800, exp(dt A) down to e^-9600 = 0). Finite
 * differences need the loss to be of the size of what they probe, so these
 * run without the D skip and the initial state (whose gradient is e^-100
 * with large dt); the next test holds the chunked form against the
 * definition there with them. */
Test(selective_scan_gradcheck, extreme_dt_and_A) {
  scan_make small = {1, 8, 3, 4, 1, 0, 1, 0, 0, -13, -11, 1};
  scan_gradcheck_eps(&small, AT_SCAN_CHUNKED, 3, 0, 30, "dt ~ 1e-5", 1e-4);
  scan_make large = {1, 8, 3, 4, 1, 1, 1, 0, 0, 11, 13, 1};
  scan_gradcheck_eps(&large, AT_SCAN_CHUNKED, 3, 1, 31, "dt ~ 12", 1e-4);
  scan_make strong = {1, 8, 3, 4, 1, 1, 1, 0, 1, -1, 1, 200};
  scan_gradcheck(&strong, AT_SCAN_CHUNKED, 3, 1, 32, "A down to -800");
}

/* The same extremes with everything on, and beyond (dt ~ 1e-9 and ~ 40, A to
 * -4000): chunked = sequential to double rounding, everything finite. */
Test(selective_scan_gradcheck, extremes_match_the_definition) {
  const double ranges[][3] = {{-22, -18, 1}, {-13, -11, 1}, {11, 13, 1}, {38, 42, 1}, {-1, 1, 200}, {0, 2, 1000}};
  for (int i = 0; i < AT_ARRAY_LEN(ranges); i++) {
    scan_make m = {2, 13, 5, 4, 1, 1, 1, 1, 1, ranges[i][0], ranges[i][1], ranges[i][2]};
    scan_data d = scan_new(&m, 40 + (uint64_t)i);
    ssm_result a = scan_run(&d, AT_SCAN_CHUNKED, 4), b = scan_run(&d, AT_SCAN_SEQUENTIAL, 0);
    char w[96];
    snprintf(w, sizeof w, "delta in [%g, %g], A x %g", ranges[i][0], ranges[i][1], ranges[i][2]);
    cr_expect(ssm_all_finite(&a) && ssm_all_finite(&b), "%s: not finite", w);
    ssm_expect_close(&a, &b, 1e-12, 1e-12, scan_in_names, w);
    ssm_result_free(&a);
    ssm_result_free(&b);
    scan_free(&d);
  }
}

/* ---- S4D ---------------------------------------------------------------------------- */

typedef struct s4d_gc {
  int recurrent, idx[QN_IN];
} s4d_gc;

static at_tensor *s4d_fn(at_ctx *c, at_tensor **in, void *u) {
  const s4d_gc *g = u;
  at_tensor *x[QN_IN], *xT = NULL;
  for (int i = 0; i < QN_IN; i++) x[i] = g->idx[i] >= 0 ? in[g->idx[i]] : NULL;
  at_tensor *y = s4d_call(c, x, g->recurrent, g->recurrent ? &xT : NULL);
  return g->recurrent ? pack(c, y, xT) : y;
}

static void s4d_gradcheck(int64_t B, int64_t T, int64_t H, int64_t M, double dt_lo, double dt_hi, int recurrent,
                          int with_x0, uint64_t seed, const char *what) {
  at_ctx *c = at_ctx_new(1 << 22);
  s4d_data d = s4d_new(B, T, H, M, dt_lo, dt_hi, with_x0, seed);
  at_tensor *x[QN_IN], *in[QN_IN];
  s4d_leaves(c, &d, x);
  s4d_gc g = {recurrent, {0}};
  int n = 0;
  for (int i = 0; i < QN_IN; i++) {
    g.idx[i] = x[i] ? n : -1;
    if (x[i]) in[n++] = x[i];
  }
  char w[160];
  snprintf(w, sizeof w, "s4d %s %s, T %lld, dt in [%g, %g], x0 %d", recurrent ? "recurrence" : "kernel+conv",
           what, (long long)T, dt_lo, dt_hi, with_x0);
  AT_GRADCHECK(c, s4d_fn, in, n, &g, w);
  s4d_free(&d);
  at_ctx_free(c);
}

Test(s4d_gradcheck, kernel_and_conv) {
  s4d_gradcheck(2, 9, 3, 4, 1e-2, 0.5, 0, 0, 1, "");
  s4d_gradcheck(1, 17, 2, 3, 1e-3, 1e-1, 0, 0, 2, "S4D-Lin dt range");
  s4d_gradcheck(1, 6, 2, 2, 1.0, 3.0, 0, 0, 3, "large dt");
}

Test(s4d_gradcheck, recurrence) {
  s4d_gradcheck(2, 7, 3, 4, 1e-2, 0.5, 1, 0, 4, "");
  s4d_gradcheck(2, 7, 2, 3, 1e-2, 0.5, 1, 1, 5, "");
}

/* The kernel alone at a length beyond the sequence (L > T taps). */
static at_tensor *kernel_fn(at_ctx *c, at_tensor **in, void *u) {
  (void)u;
  return at_s4d_kernel(c, in[0], in[1], in[2], 23);
}

Test(s4d_gradcheck, kernel_alone) {
  at_ctx *c = at_ctx_new(1 << 22);
  at_tensor *in[3];
  in[0] = AT_RANDN(c, 1, 0.6, 3, 4, 2); /* |Abar| < 1 mostly, some above */
  in[1] = AT_RANDN(c, 2, 1, 3, 4, 2);
  in[2] = AT_RANDN(c, 3, 1, 3, 4, 2);
  AT_GRADCHECK(c, kernel_fn, in, 3, NULL, "s4d_kernel L = 23");
  at_ctx_free(c);
}

/* ---- the layers ----------------------------------------------------------------------- */

static at_tensor *gc_layer(at_ctx *c, at_tensor **in, void *u) {
  one_layer *L = u;
  return layer_forward(c, L, in[L->p->n]);
}

static void layer_gradcheck(const char *mixer, at_lin_form form, int64_t T, uint64_t seed) {
  at_mixer_kind kind = mixer_id(mixer);
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.d_model = 8, cfg.n_heads = cfg.n_kv_heads = 2, cfg.n_layers = 1, cfg.layers[0] = kind;
  if (kind == MIXER(mamba)) {
    set_opt(&cfg, kind, "d_state", 4);
    set_opt(&cfg, kind, "chunk_size", 4);
    set_opt(&cfg, kind, "dt_rank", 2);
  } else {
    set_opt(&cfg, kind, "d_state", 6);
  }
  one_layer L;
  layer_build(&L, &cfg, kind, seed);
  at_linear_mixer_set_form(L.layer, form);
  layer_randomize(&L, seed + 7, 0.5);
  at_ctx *c = at_ctx_new(1 << 22);
  at_tensor **in = calloc((size_t)L.p->n + 1, sizeof *in);
  for (int i = 0; i < L.p->n; i++) in[i] = L.p->list[i].t;
  in[L.p->n] = AT_RANDN(c, seed + 3, 1.0, 2, T, 8);
  at_gc_result r;
  cr_assert(at_gradcheck(c, gc_layer, in, L.p->n + 1, &L, 1e-6, &r) == AT_OK, "%s", at_errmsg());
  cr_expect(r.max_rel_err < 1e-6, "%s form %d: gradient relative error %.3g on %s", mixer, (int)form,
            r.max_rel_err, r.worst_input >= 0 && r.worst_input < L.p->n ? L.p->list[r.worst_input].name : "x");
  cr_expect(r.n_checked == L.p->total + 2 * T * 8, "%s: checked %lld of %lld", mixer, (long long)r.n_checked,
            (long long)(L.p->total + 2 * T * 8));
  free(in);
  at_ctx_free(c);
  layer_free(&L);
}

Test(ssm_layer_gradcheck, mamba) {
  layer_gradcheck("mamba", AT_LIN_CHUNK, 11, 1);
  layer_gradcheck("mamba", AT_LIN_RECURRENT, 9, 2);
}

Test(ssm_layer_gradcheck, s4d) {
  layer_gradcheck("s4d", AT_LIN_CHUNK, 11, 3);
  layer_gradcheck("s4d", AT_LIN_RECURRENT, 9, 4);
}

static at_tensor *conv_fn(at_ctx *c, at_tensor **in, void *u) {
  (void)u;
  return at_s4d_conv(c, in[0], in[1]);
}

Test(s4d_gradcheck, conv_alone) {
  at_ctx *c = at_ctx_new(1 << 22);
  at_tensor *in[2];
  in[0] = AT_RANDN(c, 1, 1, 2, 7, 3);
  in[1] = AT_RANDN(c, 2, 1, 3, 9);
  AT_GRADCHECK(c, conv_fn, in, 2, NULL, "s4d_conv T 7 L 9");
  at_ctx_free(c);
}
