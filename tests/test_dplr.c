/* ops/attention/dplr.c (+ gla.c), float: the recurrent, chunkwise (chunk
 * sizes 1, 4, 16, 64, ragged tails) and step forms of gla and dplr agree on
 * outputs, final states and gradients, with and without an initial state;
 * extreme decays stay finite and agree; causality; thread-count
 * independence; partial gradients; refusals of bad input. */
#include "dplr_testing.h"

#include "core/threads.h"

/* Recurrent vs chunkwise (vs step) at T = 150 (three chunks of 64, ragged),
 * K = 16, V = 8, B = 2, H = 2. */
static void forms_agree(int lowrank, double scale) {
  const int64_t chunks[] = {1, 4, 16, 64};
  for (int use_h0 = 0; use_h0 < 2; use_h0++) {
    dp_data d = dp_make(lowrank, 2, 150, 2, 16, 8, -0.5, 0, use_h0, 40 + (uint64_t)use_h0);
    d.scale = scale;
    dp_result ref = dp_run(&d, AT_LIN_RECURRENT, 64);
    cr_expect(dp_all_finite(&d, &ref));
    char what[128];
    for (int i = 0; i < AT_ARRAY_LEN(chunks); i++) {
      dp_result r = dp_run(&d, AT_LIN_CHUNK, chunks[i]);
      snprintf(what, sizeof what, "%s chunk %lld vs recurrent, h0=%d, scale %g", dp_name(&d),
               (long long)chunks[i], use_h0, scale);
      dp_expect_close(&d, &r, &ref, 1e-5, 1e-5, what);
      dp_result_free(&r);
    }
    dp_result st = dp_run_steps(&d);
    snprintf(what, sizeof what, "%s step vs recurrent, h0=%d", dp_name(&d), use_h0);
    dp_expect_close(&d, &st, &ref, 1e-6, 0, what);
    /* a different checkpoint spacing of the recurrent form changes nothing */
    dp_result r7 = dp_run(&d, AT_LIN_RECURRENT, 7);
    snprintf(what, sizeof what, "%s recurrent C=7 vs C=64, h0=%d", dp_name(&d), use_h0);
    dp_expect_close(&d, &r7, &ref, 0, 1e-6, what);
    dp_result_free(&r7);
    dp_result_free(&st);
    dp_result_free(&ref);
    dp_data_free(&d);
  }
}

Test(dplr_forms, gla) { forms_agree(0, 0); }
Test(dplr_forms, dplr) { forms_agree(1, 0); }
Test(dplr_forms, dplr_scale_1) { forms_agree(1, 1.0); } /* RWKV-7's scale */

/* T = 1 and T around one chunk, one head, B = 1; K != V both ways. */
Test(dplr_forms, edge_shapes) {
  const int64_t Ts[] = {1, 2, 63, 64, 65};
  for (int lr = 0; lr < 2; lr++)
    for (int i = 0; i < AT_ARRAY_LEN(Ts); i++) {
      dp_data d = dp_make(lr, 1, Ts[i], 1, i % 2 ? 3 : 7, i % 2 ? 5 : 2, -1, 0, 1, 70 + (uint64_t)i);
      dp_result ref = dp_run(&d, AT_LIN_RECURRENT, 64), r = dp_run(&d, AT_LIN_CHUNK, 64);
      char what[96];
      snprintf(what, sizeof what, "%s T=%lld", dp_name(&d), (long long)Ts[i]);
      dp_expect_close(&d, &r, &ref, 1e-5, 1e-5, what);
      dp_result_free(&r);
      dp_result_free(&ref);
      dp_data_free(&d);
    }
}

/* Decays 0, near 0, -20 per token, -1e4, -inf and a random mix of those:
 * every form finite in forward and backward, and the forms agree. */
Test(dplr_extremes, decays) {
  const double fixed[] = {0, -1e-3, -20, -1e4, -INFINITY, NAN}; /* NAN: a mix of the others */
  const double mix[] = {0, -1e-3, -20, -1e4, -INFINITY};
  for (int lr = 0; lr < 2; lr++)
    for (int f = 0; f < AT_ARRAY_LEN(fixed); f++) {
      dp_data d = dp_make(lr, 1, 70, 2, 16, 8, -1, 0, 1, 90 + (uint64_t)f);
      int64_t n = dp_in_size(&d, DG);
      at_rng rng = at_rng_make(5, (uint64_t)f);
      for (int64_t i = 0; i < n; i++)
        d.x[DG][i] = (real)(isnan(fixed[f]) ? mix[at_rng_below(&rng, 5)] : fixed[f]);
      dp_result ref = dp_run(&d, AT_LIN_RECURRENT, 16);
      char what[128];
      snprintf(what, sizeof what, "%s decays %g recurrent", dp_name(&d), fixed[f]);
      cr_expect(dp_all_finite(&d, &ref), "%s: not finite", what);
      const int64_t chunks[] = {4, 16, 64};
      for (int i = 0; i < AT_ARRAY_LEN(chunks); i++) {
        dp_result r = dp_run(&d, AT_LIN_CHUNK, chunks[i]);
        snprintf(what, sizeof what, "%s decays %g chunk %lld", dp_name(&d), fixed[f], (long long)chunks[i]);
        cr_expect(dp_all_finite(&d, &r), "%s: not finite", what);
        dp_expect_close(&d, &r, &ref, 1e-5, 1e-5, what);
        dp_result_free(&r);
      }
      dp_result_free(&ref);
      dp_data_free(&d);
    }
}

/* RWKV-7's range: decays in [-0.6065, 0) (fla's lower bound, weak decays
 * that keep a long memory) with the in-context rate alpha up to 1 (b = -a,
 * the full delta-rule erase), over 600 tokens: chunk 64 matches the
 * recurrence in float. */
Test(dplr_extremes, rwkv7_range_long) {
  dp_data d = dp_make(1, 1, 600, 2, 32, 16, -0.6065, -1e-4, 1, 123);
  d.scale = 1.0;
  for (int64_t i = 0; i < dp_in_size(&d, DB); i += 2) d.x[DB][i] = -d.x[DA][i];
  dp_result ref = dp_run(&d, AT_LIN_RECURRENT, 64), r = dp_run(&d, AT_LIN_CHUNK, 64);
  cr_expect(dp_all_finite(&d, &r));
  dp_expect_close(&d, &r, &ref, 1e-5, 1e-5, "dplr T=600, rwkv7 decays, alpha <= 1");
  dp_result_free(&r);
  dp_result_free(&ref);
  dp_data_free(&d);
}

/* Changing every input at position t' leaves outputs before t' bit for bit
 * unchanged (and changes o at t'); with d_o zero from t0 on and no final
 * state gradient, inputs after t0 get exactly zero gradient. */
Test(dplr_causality, outputs_and_gradients) {
  const int64_t T = 40, tp = 21, t0 = 13;
  for (int lr = 0; lr < 2; lr++)
    for (int form = 0; form < 2; form++) {
      dp_data d = dp_make(lr, 2, T, 2, 8, 4, -0.5, 0, 1, 150 + (uint64_t)lr);
      dp_result a = dp_run(&d, (at_lin_form)form, 16);
      for (int i = 0; i <= DG; i++) {
        if (!d.x[i]) continue;
        int64_t row = dp_in_size(&d, i) / (d.B * d.T);
        for (int64_t b = 0; b < d.B; b++)
          for (int64_t j = 0; j < row; j++) {
            real *x = &d.x[i][(b * T + tp) * row + j];
            *x = i == DG ? *x * (real)0.5 : i == DA || i == DB ? (real)0.5 * *x : *x + (real)0.7;
          }
      }
      dp_result p = dp_run(&d, (at_lin_form)form, 16);
      const int64_t rowo = d.H * d.V;
      int same_before = 1, differs_at = 0;
      at_test_causal_outputs(a.o, p.o, d.B, T, rowo, tp, &same_before, &differs_at);
      cr_expect(same_before, "%s form %d: outputs before t' changed", dp_name(&d), form);
      cr_expect(differs_at, "%s form %d: output at t' did not change", dp_name(&d), form);
      dp_result_free(&p);
      dp_result_free(&a);
      at_test_zero_from(d.d_o, d.B, T, rowo, t0);
      memset(d.d_ht, 0, (size_t)dp_h_size(&d) * sizeof(real));
      dp_result g = dp_run(&d, (at_lin_form)form, 16);
      int zero_after = 1, nonzero_before = 0;
      for (int i = 0; i <= DG; i++) {
        if (!g.dx[i]) continue;
        int64_t row = dp_in_size(&d, i) / (d.B * d.T);
        at_test_causal_grad(g.dx[i], d.B, T, row, t0, &zero_after, &nonzero_before);
      }
      cr_expect(zero_after, "%s form %d: gradient after t0", dp_name(&d), form);
      cr_expect(nonzero_before, "%s form %d: no gradient before t0", dp_name(&d), form);
      dp_result_free(&g);
      dp_data_free(&d);
    }
}

/* One thread and two threads give identical bits. */
Test(dplr_threads, result_independent_of_thread_count) {
  int saved = at_threads();
  for (int lr = 0; lr < 2; lr++) {
    dp_data d = dp_make(lr, 2, 37, 3, 8, 4, -0.5, 0, 1, 170 + (uint64_t)lr);
    at_set_threads(1);
    dp_result a = dp_run(&d, AT_LIN_CHUNK, 16);
    at_set_threads(2);
    dp_result b = dp_run(&d, AT_LIN_CHUNK, 16);
    dp_expect_close(&d, &a, &b, 0, 0, dp_name(&d));
    dp_result_free(&a);
    dp_result_free(&b);
    dp_data_free(&d);
  }
  at_set_threads(saved);
}

/* Only some inputs require grad; o without the final state; nothing is
 * recorded when no input requires grad. */
Test(dplr_tape, partial_gradients_and_no_grad) {
  dp_data d = dp_make(1, 1, 20, 2, 8, 4, -0.5, 0, 1, 190);
  memset(d.d_ht, 0, (size_t)dp_h_size(&d) * sizeof(real));
  dp_result full = dp_run(&d, AT_LIN_CHUNK, 8);
  at_ctx *c = at_ctx_new(0);
  at_tensor *in[DN_IN];
  for (int i = 0; i < DN_IN; i++) {
    int64_t shape[4];
    int nd = dp_in_shape(&d, i, shape);
    in[i] = at_from(c, d.x[i], nd, shape);
  }
  in[DA]->requires_grad = 1; /* only a */
  at_lin_opts o8 = {0, 8, AT_LIN_CHUNK};
  at_tensor *o = at_dplr(c, in[DQ], in[DK], in[DV], in[DA], in[DB], in[DG], in[DH0], NULL, &o8);
  cr_assert(o && o->requires_grad && c->n_nodes == 1);
  memcpy(at_grad(c, o), d.d_o, (size_t)o->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK);
  cr_expect(in[DQ]->grad == NULL && in[DB]->grad == NULL && in[DA]->grad != NULL);
  AT_EXPECT_CLOSE(in[DA]->grad, full.dx[DA], dp_in_size(&d, DA), 0, "da, only a requires grad");
  in[DA]->requires_grad = 0;
  at_tensor *o2 = at_dplr(c, in[DQ], in[DK], in[DV], in[DA], in[DB], in[DG], in[DH0], NULL, &o8);
  cr_expect(o2 && !o2->requires_grad && c->n_nodes == 1);
  AT_EXPECT_CLOSE(o2->data, full.o, o2->size, 0, "o without recording");
  dp_result_free(&full);
  dp_data_free(&d);
  at_ctx_free(c);
}

/* gla is dplr with a = b = 0. */
Test(dplr_forms, gla_is_dplr_without_low_rank) {
  dp_data d = dp_make(1, 2, 45, 2, 8, 4, -0.7, 0, 1, 210);
  memset(d.x[DA], 0, (size_t)dp_in_size(&d, DA) * sizeof(real));
  memset(d.x[DB], 0, (size_t)dp_in_size(&d, DB) * sizeof(real));
  dp_result r1 = dp_run(&d, AT_LIN_CHUNK, 16);
  dp_data g = d;
  g.lowrank = 0;
  g.x[DA] = g.x[DB] = NULL;
  dp_result r0 = dp_run(&g, AT_LIN_CHUNK, 16);
  dp_expect_close(&d, &r1, &r0, 1e-6, 1e-6, "dplr(a = b = 0) vs gla");
  dp_result_free(&r0);
  dp_result_free(&r1);
  dp_data_free(&d);
}

typedef struct err_inputs { at_tensor *q, *k, *v, *g, *kbad, *gbad, *h0bad; } err_inputs;

static at_tensor *err_case(at_ctx *c, const err_inputs *e, int i) {
  at_lin_opts bad = {0, -1, AT_LIN_CHUNK}, badform = {0, 0, (at_lin_form)7};
  switch (i) {
  case 0: return at_gla(c, e->q, e->kbad, e->v, e->g, NULL, NULL, NULL);
  case 1: return at_gla(c, e->q, e->k, e->v, e->gbad, NULL, NULL, NULL);
  case 2: return at_dplr(c, e->q, e->k, e->v, e->gbad, e->k, e->g, NULL, NULL, NULL);
  case 3: return at_dplr(c, e->q, e->k, e->v, e->k, e->kbad, e->g, NULL, NULL, NULL);
  case 4: return at_gla(c, e->q, e->k, e->v, e->g, e->h0bad, NULL, NULL);
  case 5: return at_dplr(c, e->q, e->k, e->v, NULL, e->k, e->g, NULL, NULL, NULL);
  case 6: return at_gla(c, e->q, e->k, e->v, NULL, NULL, NULL, NULL);
  case 7: return at_gla(c, e->q, e->k, e->v, e->g, NULL, NULL, &bad);
  case 8: return at_dplr(c, e->q, e->k, e->v, e->k, e->k, e->g, NULL, NULL, &badform);
  default: return at_gla_step(c, e->q, e->k, e->v, e->g, NULL, NULL);
  }
}

Test(dplr_errors, shapes_and_arguments) {
  at_ctx *c = at_ctx_new(0);
  err_inputs e = {AT_ZEROS(c, 2, 5, 3, 4), AT_ZEROS(c, 2, 5, 3, 4), AT_ZEROS(c, 2, 5, 3, 6),
                  AT_ZEROS(c, 2, 5, 3, 4), AT_ZEROS(c, 2, 5, 3, 5), AT_ZEROS(c, 2, 5, 3),
                  AT_ZEROS(c, 2, 3, 6, 4)};
  const struct { at_status s; const char *msg; } want[] = {
      {AT_E_SHAPE, "gla: q [2,5,3,4], k [2,5,3,5], v [2,5,3,6] must be"},
      {AT_E_SHAPE, "gla: gk [2,5,3] must be [B,T,H,K] like q [2,5,3,4]"},
      {AT_E_SHAPE, "dplr: a [2,5,3] must be [B,T,H,K]"},
      {AT_E_SHAPE, "dplr: b [2,5,3,5] must be [B,T,H,K]"},
      {AT_E_SHAPE, "gla: initial_state [2,3,6,4] must be [B,H,K,V] = [2,3,4,6]"},
      {AT_E_ARG, "dplr: q, k, v, a, b, gk are required"},
      {AT_E_ARG, "gla: q, k, v, gk are required"},
      {AT_E_ARG, "gla: bad options"},
      {AT_E_ARG, "dplr: bad options"},
      {AT_E_ARG, "gla_step: the state is required"},
  };
  for (int i = 0; i < AT_ARRAY_LEN(want); i++) {
    c->status = AT_OK;
    cr_expect(err_case(c, &e, i) == NULL, "case %d returned a tensor", i);
    cr_expect(at_ctx_status(c) == want[i].s, "case %d: status %s", i, at_status_name(at_ctx_status(c)));
    cr_expect(strstr(at_errmsg(), want[i].msg) != NULL, "case %d: message '%s'", i, at_errmsg());
  }
  c->status = AT_OK;
  at_fail(c, AT_E_SHAPE, "earlier failure");
  cr_expect(at_gla(c, NULL, e.k, e.v, e.g, NULL, NULL, NULL) == NULL);
  cr_expect(strstr(at_errmsg(), "earlier failure") != NULL);
  at_ctx_free(c);
}
