/* ops/attention/delta.c (+ simple_gla.c), float: the recurrent, chunkwise
 * (chunk sizes 1, 4, 16, 64, ragged tails) and step forms agree on outputs,
 * final states and gradients; extreme gates stay finite and agree;
 * causality; thread-count independence; refusals of bad input. */
#include "lin_testing.h"

#include "core/threads.h"

/* Recurrent vs chunkwise (vs step) at T = 100, K = 16, V = 8. */
static void forms_agree(at_lin_kind kind) {
  const int64_t chunks[] = {1, 4, 16, 64};
  for (int use_h0 = 0; use_h0 < 2; use_h0++) {
    lin_data d = lin_make(kind, 2, 100, 2, 16, 8, -0.5, 0, use_h0, 40 + (uint64_t)use_h0);
    lin_result ref = lin_run(&d, AT_LIN_RECURRENT, 64);
    cr_expect(lin_all_finite(&d, &ref));
    for (int i = 0; i < AT_ARRAY_LEN(chunks); i++) {
      lin_result r = lin_run(&d, AT_LIN_CHUNK, chunks[i]);
      char what[128];
      snprintf(what, sizeof what, "%s chunk %lld vs recurrent, h0=%d", at_lin_kind_name(kind),
               (long long)chunks[i], use_h0);
      lin_expect_close(&d, &r, &ref, 1e-5, 1e-5, what);
      lin_result_free(&r);
    }
    lin_result st = lin_run_steps(&d);
    char what[128];
    snprintf(what, sizeof what, "%s step vs recurrent, h0=%d", at_lin_kind_name(kind), use_h0);
    lin_expect_close(&d, &st, &ref, 1e-6, 0, what);
    /* a different checkpoint spacing of the recurrent form changes nothing */
    lin_result r7 = lin_run(&d, AT_LIN_RECURRENT, 7);
    snprintf(what, sizeof what, "%s recurrent C=7 vs C=64, h0=%d", at_lin_kind_name(kind), use_h0);
    lin_expect_close(&d, &r7, &ref, 0, 1e-6, what);
    lin_result_free(&r7);
    lin_result_free(&st);
    lin_result_free(&ref);
    lin_data_free(&d);
  }
}

Test(delta_forms, delta_rule) { forms_agree(AT_LIN_DELTA_RULE); }
Test(delta_forms, gated_delta_rule) { forms_agree(AT_LIN_GATED_DELTA_RULE); }
Test(delta_forms, kda) { forms_agree(AT_LIN_KDA); }
Test(delta_forms, simple_gla) { forms_agree(AT_LIN_SIMPLE_GLA); }

/* T = 1 and T < chunk, one head, B = 1. */
Test(delta_forms, edge_shapes) {
  const int64_t Ts[] = {1, 2, 63, 65};
  for (int kind = 0; kind < AT_LIN_KIND_COUNT; kind++)
    for (int i = 0; i < AT_ARRAY_LEN(Ts); i++) {
      lin_data d = lin_make((at_lin_kind)kind, 1, Ts[i], 1, 5, 3, -1, 0, 1, 70 + (uint64_t)i);
      lin_result ref = lin_run(&d, AT_LIN_RECURRENT, 64), r = lin_run(&d, AT_LIN_CHUNK, 64);
      char what[96];
      snprintf(what, sizeof what, "%s T=%lld", at_lin_kind_name(d.kind), (long long)Ts[i]);
      lin_expect_close(&d, &r, &ref, 1e-5, 1e-5, what);
      lin_result_free(&r);
      lin_result_free(&ref);
      lin_data_free(&d);
    }
}

/* Gates 0, near 0, -20 per token, -1e4, -inf and a random mix of those: every
 * form finite in forward and backward, and the forms agree. */
Test(delta_extremes, gates) {
  const double fixed[] = {0, -1e-3, -20, -1e4, -INFINITY, NAN}; /* NAN: a mix of the others */
  const double mix[] = {0, -1e-3, -20, -1e4, -INFINITY};
  for (int kind = 1; kind < AT_LIN_KIND_COUNT; kind++)
    for (int f = 0; f < AT_ARRAY_LEN(fixed); f++) {
      lin_data d = lin_make((at_lin_kind)kind, 1, 50, 2, 16, 8, -1, 0, 1, 90 + (uint64_t)f);
      int64_t n = lin_in_size(&d, LG);
      at_rng rng = at_rng_make(5, (uint64_t)f);
      for (int64_t i = 0; i < n; i++)
        d.x[LG][i] = (real)(isnan(fixed[f]) ? mix[at_rng_below(&rng, 5)] : fixed[f]);
      lin_result ref = lin_run(&d, AT_LIN_RECURRENT, 16);
      char what[128];
      snprintf(what, sizeof what, "%s gates %g recurrent", at_lin_kind_name(d.kind), fixed[f]);
      cr_expect(lin_all_finite(&d, &ref), "%s: not finite", what);
      const int64_t chunks[] = {4, 16, 64};
      for (int i = 0; i < AT_ARRAY_LEN(chunks); i++) {
        lin_result r = lin_run(&d, AT_LIN_CHUNK, chunks[i]);
        snprintf(what, sizeof what, "%s gates %g chunk %lld", at_lin_kind_name(d.kind), fixed[f],
                 (long long)chunks[i]);
        cr_expect(lin_all_finite(&d, &r), "%s: not finite", what);
        lin_expect_close(&d, &r, &ref, 1e-5, 1e-5, what);
        lin_result_free(&r);
      }
      lin_result_free(&ref);
      lin_data_free(&d);
    }
}

/* Keys that are not unit vectors and beta beyond 1 (negative eigenvalues):
 * while beta |k|^2 <= 2 the recurrence is bounded and chunk 64 matches it in
 * float. (Beyond that the definition itself grows without bound.) */
Test(delta_extremes, key_norms_and_beta_range) {
  const struct { double k_lo, k_hi, b_lo, b_hi; } cases[] = {
      {0.5, 1.5, 0.05, 0.95}, {1, 1, 1, 2}, {1, 1, 1.9, 2}, {3, 3, 0.05, 0.2}};
  for (int kind = 0; kind < 3; kind++)
    for (int i = 0; i < AT_ARRAY_LEN(cases); i++) {
      lin_data d = lin_make((at_lin_kind)kind, 1, 150, 2, 16, 8, -0.1, 0, 0, 120 + (uint64_t)i);
      for (int64_t r = 0; r < d.T * d.H; r++) {
        double s = cases[i].k_lo + (cases[i].k_hi - cases[i].k_lo) * (double)(r % 11) / 10;
        for (int64_t j = 0; j < d.K; j++) d.x[LK][r * d.K + j] *= (real)s;
        d.x[LBETA][r] = (real)(cases[i].b_lo + (cases[i].b_hi - cases[i].b_lo) *
                                                   (d.x[LBETA][r] - 0.05) / 0.9);
      }
      lin_result ref = lin_run(&d, AT_LIN_RECURRENT, 64), r = lin_run(&d, AT_LIN_CHUNK, 64);
      char what[128];
      snprintf(what, sizeof what, "%s |k| in [%g, %g], beta in (%g, %g)", at_lin_kind_name(d.kind),
               cases[i].k_lo, cases[i].k_hi, cases[i].b_lo, cases[i].b_hi);
      cr_expect(lin_all_finite(&d, &r), "%s: not finite", what);
      lin_expect_close(&d, &r, &ref, 1e-5, 1e-5, what);
      lin_result_free(&r);
      lin_result_free(&ref);
      lin_data_free(&d);
    }
}

/* Changing every input at position t' leaves outputs before t' bit for bit
 * unchanged (and changes o at t'); with d_o zero from t0 on and no final
 * state gradient, inputs after t0 get exactly zero gradient. */
Test(delta_causality, outputs_and_gradients) {
  const int64_t T = 40, tp = 21, t0 = 13;
  for (int kind = 0; kind < AT_LIN_KIND_COUNT; kind++)
    for (int form = 0; form < 2; form++) {
      lin_data d = lin_make((at_lin_kind)kind, 2, T, 2, 8, 4, -0.5, 0, 1, 150 + (uint64_t)kind);
      lin_result a = lin_run(&d, (at_lin_form)form, 16);
      for (int i = 0; i <= LBETA; i++) {
        if (!d.x[i]) continue;
        int64_t row = lin_in_size(&d, i) / (d.B * d.T);
        for (int64_t b = 0; b < d.B; b++)
          for (int64_t j = 0; j < row; j++) {
            real *x = &d.x[i][(b * T + tp) * row + j];
            *x = i == LG ? *x * (real)0.5 : i == LBETA ? (real)0.5 * (*x + 1) : *x + (real)0.7;
          }
      }
      lin_result p = lin_run(&d, (at_lin_form)form, 16);
      const int64_t rowo = d.H * d.V;
      int same_before = 1, differs_at = 0;
      at_test_causal_outputs(a.o, p.o, d.B, T, rowo, tp, &same_before, &differs_at);
      const char *name = at_lin_kind_name(d.kind);
      cr_expect(same_before, "%s form %d: outputs before t' changed", name, form);
      cr_expect(differs_at, "%s form %d: output at t' did not change", name, form);
      lin_result_free(&p);
      lin_result_free(&a);

      at_test_zero_from(d.d_o, d.B, T, rowo, t0);
      memset(d.d_ht, 0, (size_t)(d.B * d.H * d.K * d.V) * sizeof(real));
      lin_result g = lin_run(&d, (at_lin_form)form, 16);
      int zero_after = 1, nonzero_before = 0;
      for (int i = 0; i <= LBETA; i++) {
        if (!g.dx[i]) continue;
        int64_t row = lin_in_size(&d, i) / (d.B * d.T);
        at_test_causal_grad(g.dx[i], d.B, T, row, t0, &zero_after, &nonzero_before);
      }
      cr_expect(zero_after, "%s form %d: gradient after t0", name, form);
      cr_expect(nonzero_before, "%s form %d: no gradient before t0", name, form);
      lin_result_free(&g);
      lin_data_free(&d);
    }
}

/* One thread and two threads give identical bits. */
Test(delta_threads, result_independent_of_thread_count) {
  int saved = at_threads();
  for (int kind = 0; kind < AT_LIN_KIND_COUNT; kind++) {
    lin_data d = lin_make((at_lin_kind)kind, 2, 37, 3, 8, 4, -0.5, 0, 1, 170 + (uint64_t)kind);
    at_set_threads(1);
    lin_result a = lin_run(&d, AT_LIN_CHUNK, 16);
    at_set_threads(2);
    lin_result b = lin_run(&d, AT_LIN_CHUNK, 16);
    lin_expect_close(&d, &a, &b, 0, 0, at_lin_kind_name(d.kind));
    lin_result_free(&a);
    lin_result_free(&b);
    lin_data_free(&d);
  }
  at_set_threads(saved);
}

/* Only some inputs require grad; o without the final state. */
Test(delta_tape, partial_gradients_and_no_grad) {
  lin_data d = lin_make(AT_LIN_KDA, 1, 20, 2, 8, 4, -0.5, 0, 1, 190);
  lin_result full = lin_run(&d, AT_LIN_CHUNK, 8);
  at_ctx *c = at_ctx_new(0);
  at_tensor *in[LN_IN];
  for (int i = 0; i < LN_IN; i++) {
    int64_t shape[4];
    int nd = lin_in_shape(&d, i, shape);
    in[i] = at_from(c, d.x[i], nd, shape);
  }
  in[LK]->requires_grad = 1; /* only k */
  at_lin_opts o8 = {0, 8, AT_LIN_CHUNK};
  at_tensor *o = at_kda(c, in[LQ], in[LK], in[LV], in[LG], in[LBETA], in[LH0], NULL, &o8);
  cr_assert(o && o->requires_grad && c->n_nodes == 1);
  memcpy(at_grad(c, o), d.d_o, (size_t)o->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK);
  cr_expect(in[LQ]->grad == NULL && in[LK]->grad != NULL);
  /* the full run also had d_ht; redo it without */
  lin_data d2 = d;
  d2.d_ht = calloc((size_t)(d.B * d.H * d.K * d.V), sizeof(real));
  lin_result nodht = lin_run(&d2, AT_LIN_CHUNK, 8);
  AT_EXPECT_CLOSE(in[LK]->grad, nodht.dx[LK], lin_in_size(&d, LK), 0, "dk, only k requires grad");
  cr_expect(at_test_rel_err(full.dx[LK], nodht.dx[LK], lin_in_size(&d, LK)) > 1e-3,
            "d_ht must matter");
  /* no grad needed: nothing recorded */
  in[LK]->requires_grad = 0;
  at_tensor *o2 = at_kda(c, in[LQ], in[LK], in[LV], in[LG], in[LBETA], in[LH0], NULL, &o8);
  cr_expect(o2 && !o2->requires_grad && c->n_nodes == 1);
  AT_EXPECT_CLOSE(o2->data, full.o, o2->size, 0, "o without recording");
  free(d2.d_ht);
  lin_result_free(&nodht);
  lin_result_free(&full);
  lin_data_free(&d);
  at_ctx_free(c);
}

typedef struct err_inputs { at_tensor *q, *k, *v, *g3, *g4, *beta, *kbad, *h0bad; } err_inputs;

static at_tensor *err_case(at_ctx *c, const err_inputs *e, int i) {
  at_lin_opts bad = {0, -1, AT_LIN_CHUNK};
  switch (i) {
  case 0: return at_kda(c, e->q, e->kbad, e->v, e->g4, e->beta, NULL, NULL, NULL);
  case 1: return at_kda(c, e->q, e->k, e->v, e->g3, e->beta, NULL, NULL, NULL);
  case 2: return at_gated_delta_rule(c, e->q, e->k, e->v, e->g4, e->beta, NULL, NULL, NULL);
  case 3: return at_delta_rule(c, e->q, e->k, e->v, e->g4, NULL, NULL, NULL);
  case 4: return at_delta_rule(c, e->q, e->k, e->v, e->beta, e->h0bad, NULL, NULL);
  case 5: return at_lin_attn(c, AT_LIN_DELTA_RULE, e->q, e->k, e->v, e->g3, e->beta, 0, 0, 0);
  case 6: return at_lin_attn(c, AT_LIN_SIMPLE_GLA, e->q, e->k, e->v, e->g3, e->beta, 0, 0, 0);
  case 7: return at_gated_delta_rule(c, e->q, e->k, e->v, NULL, e->beta, NULL, NULL, NULL);
  case 8: return at_kda(c, e->q, e->k, e->v, e->g4, e->beta, NULL, NULL, &bad);
  default: return at_kda_step(c, e->q, e->k, e->v, e->g4, e->beta, NULL, NULL);
  }
}

Test(delta_errors, shapes_and_arguments) {
  at_ctx *c = at_ctx_new(0);
  err_inputs e = {AT_ZEROS(c, 2, 5, 3, 4), AT_ZEROS(c, 2, 5, 3, 4), AT_ZEROS(c, 2, 5, 3, 6),
                  AT_ZEROS(c, 2, 5, 3),    AT_ZEROS(c, 2, 5, 3, 4), AT_ZEROS(c, 2, 5, 3),
                  AT_ZEROS(c, 2, 5, 3, 5), AT_ZEROS(c, 2, 3, 6, 4)};
  const struct { at_status s; const char *msg; } want[] = {
      {AT_E_SHAPE, "kda: q [2,5,3,4], k [2,5,3,5], v [2,5,3,6] must be"},
      {AT_E_SHAPE, "kda: g [2,5,3] must be [B,T,H,K]"},
      {AT_E_SHAPE, "gated_delta_rule: g [2,5,3,4] must be [B,T,H]"},
      {AT_E_SHAPE, "delta_rule: beta [2,5,3,4] must be [B,T,H]"},
      {AT_E_SHAPE, "initial_state [2,3,6,4] must be [B,H,K,V] = [2,3,4,6]"},
      {AT_E_ARG, "delta_rule: takes no gate"},
      {AT_E_ARG, "simple_gla: takes no beta"},
      {AT_E_ARG, "gated_delta_rule: q, k, v, g, beta are required"},
      {AT_E_ARG, "kda: bad options"},
      {AT_E_ARG, "kda_step: the state is required"},
  };
  for (int i = 0; i < AT_ARRAY_LEN(want); i++) {
    c->status = AT_OK; /* each case starts clean */
    cr_expect(err_case(c, &e, i) == NULL, "case %d returned a tensor", i);
    cr_expect(at_ctx_status(c) == want[i].s, "case %d: status %s", i,
              at_status_name(at_ctx_status(c)));
    cr_expect(strstr(at_errmsg(), want[i].msg) != NULL, "case %d: message '%s'", i, at_errmsg());
  }
  /* a NULL input after an earlier failure: NULL, the first message kept */
  c->status = AT_OK;
  at_fail(c, AT_E_SHAPE, "earlier failure");
  cr_expect(at_kda(c, NULL, e.k, e.v, e.g4, e.beta, NULL, NULL, NULL) == NULL);
  cr_expect(strstr(at_errmsg(), "earlier failure") != NULL);
  at_ctx_free(c);
}
