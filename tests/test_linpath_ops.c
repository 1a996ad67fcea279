/* ops/attention/linear_attn.c + favor.c, float: for linear attention (with
 * and without the normaliser), retention, the per-token gated form and
 * Performer's FAVOR+, the recurrent, chunkwise (chunk sizes 1, 4, 16, 64,
 * ragged tails), parallel (constant decays) and step forms agree on
 * outputs, final states and gradients, with and without an initial state;
 * extreme gates stay finite; causality; thread-count independence; the
 * random features (orthogonal blocks, chi lengths, reproducible draws);
 * FAVOR+ approaches softmax attention as the number of features grows;
 * refusals of bad input. */
#include "la_testing.h"

#include "core/threads.h"
#include "ops/attention/attention.h"

static void forms_agree(la_kind kind, int normalize) {
  const int64_t chunks[] = {1, 4, 16, 64};
  for (int use_h0 = 0; use_h0 < 2; use_h0++) {
    la_data d = la_make(kind, normalize, 2, 100, 2, 16, 8, 24, -0.5, 0, use_h0, 40 + (uint64_t)use_h0);
    la_result ref = la_run(&d, AT_LA_RECURRENT, 64);
    char what[160];
    snprintf(what, sizeof what, "%s norm=%d h0=%d", la_kind_names[kind], d.normalize, use_h0);
    cr_expect(la_all_finite(&d, &ref), "%s: recurrent not finite", what);
    for (int i = 0; i < AT_ARRAY_LEN(chunks); i++) {
      la_result r = la_run(&d, AT_LA_CHUNK, chunks[i]);
      char w[200];
      snprintf(w, sizeof w, "%s chunk %lld vs recurrent", what, (long long)chunks[i]);
      la_expect_close(&d, &r, &ref, 1e-5, 1e-5, w);
      la_result_free(&r);
    }
    if (kind == LA_LINEAR || kind == LA_RETENTION) {
      la_result r = la_run(&d, AT_LA_PARALLEL, 0);
      char w[200];
      snprintf(w, sizeof w, "%s parallel vs recurrent", what);
      la_expect_close(&d, &r, &ref, 1e-5, 1e-5, w);
      la_result_free(&r);
    }
    la_result st = la_run_steps(&d);
    char w[200];
    snprintf(w, sizeof w, "%s step vs recurrent", what);
    la_expect_close(&d, &st, &ref, 1e-6, 0, w);
    la_result r7 = la_run(&d, AT_LA_RECURRENT, 7); /* another checkpoint spacing changes nothing */
    snprintf(w, sizeof w, "%s recurrent C=7 vs C=64", what);
    la_expect_close(&d, &r7, &ref, 0, 1e-6, w);
    la_result_free(&r7);
    la_result_free(&st);
    la_result_free(&ref);
    la_data_free(&d);
  }
}

Test(linpath_forms, linear_attn) { forms_agree(LA_LINEAR, 0); }
Test(linpath_forms, linear_attn_normalized) { forms_agree(LA_LINEAR, 1); }
Test(linpath_forms, retention) { forms_agree(LA_RETENTION, 0); }
Test(linpath_forms, gated) { forms_agree(LA_GATED, 0); }
Test(linpath_forms, gated_normalized) { forms_agree(LA_GATED, 1); }
Test(linpath_forms, performer) { forms_agree(LA_PERFORMER, 1); }

/* T = 1 and T around the chunk, one head, B = 1. */
Test(linpath_forms, edge_shapes) {
  const int64_t Ts[] = {1, 2, 63, 65};
  for (int kind = 0; kind < LA_KINDS; kind++)
    for (int i = 0; i < AT_ARRAY_LEN(Ts); i++) {
      la_data d = la_make((la_kind)kind, 1, 1, Ts[i], 1, 5, 3, 7, -1, 0, 1, 70 + (uint64_t)i);
      if (kind == LA_RETENTION) d.normalize = 0, free(d.x[LXZ0]), d.x[LXZ0] = NULL;
      la_result ref = la_run(&d, AT_LA_RECURRENT, 64), r = la_run(&d, AT_LA_CHUNK, 64);
      char what[96];
      snprintf(what, sizeof what, "%s T=%lld", la_kind_names[kind], (long long)Ts[i]);
      la_expect_close(&d, &r, &ref, 1e-5, 1e-5, what);
      la_result_free(&r);
      la_result_free(&ref);
      la_data_free(&d);
    }
}

/* Retention's decays for many heads: gamma_h -> 1, and log gamma_h stays < 0. */
Test(linpath_forms, retention_many_heads) {
  cr_expect(at_retention_log_decay(0) == log(1 - 1.0 / 32));
  cr_expect(at_retention_log_decay(40) < 0 && at_retention_log_decay(40) > -1e-13);
  la_data d = la_make(LA_RETENTION, 0, 1, 70, 12, 8, 4, 0, 0, 0, 1, 80);
  la_result ref = la_run(&d, AT_LA_RECURRENT, 64), r = la_run(&d, AT_LA_CHUNK, 16);
  la_result p = la_run(&d, AT_LA_PARALLEL, 0);
  la_expect_close(&d, &r, &ref, 1e-5, 1e-5, "retention 12 heads chunk");
  la_expect_close(&d, &p, &ref, 1e-5, 1e-5, "retention 12 heads parallel");
  la_result_free(&p), la_result_free(&r), la_result_free(&ref);
  la_data_free(&d);
}

/* Gates 0, near 0, -20 per token, -1e4, -inf and a random mix: every form
 * finite in forward and backward, and the forms agree. */
Test(linpath_extremes, gates) {
  const double fixed[] = {0, -1e-3, -20, -1e4, -INFINITY, NAN}; /* NAN: a mix of the others */
  const double mix[] = {0, -1e-3, -20, -1e4, -INFINITY};
  for (int norm = 0; norm < 2; norm++)
    for (int f = 0; f < AT_ARRAY_LEN(fixed); f++) {
      la_data d = la_make(LA_GATED, norm, 1, 50, 2, 16, 8, 0, -1, 0, 1, 90 + (uint64_t)f);
      int64_t n = la_in_size(&d, LXG);
      at_rng rng = at_rng_make(5, (uint64_t)f);
      for (int64_t i = 0; i < n; i++) d.x[LXG][i] = (real)(isnan(fixed[f]) ? mix[at_rng_below(&rng, 5)] : fixed[f]);
      la_result ref = la_run(&d, AT_LA_RECURRENT, 16);
      char what[128];
      snprintf(what, sizeof what, "gates %g norm=%d recurrent", fixed[f], norm);
      cr_expect(la_all_finite(&d, &ref), "%s: not finite", what);
      const int64_t chunks[] = {4, 16, 64};
      for (int i = 0; i < AT_ARRAY_LEN(chunks); i++) {
        la_result r = la_run(&d, AT_LA_CHUNK, chunks[i]);
        snprintf(what, sizeof what, "gates %g norm=%d chunk %lld", fixed[f], norm, (long long)chunks[i]);
        cr_expect(la_all_finite(&d, &r), "%s: not finite", what);
        /* gradients against the scale of dv (O(1)): see la_expect_close_floor */
        double floor = norm ? sqrt((double)la_in_size(&d, LXV)) * 1e-2 : 0;
        la_expect_close_floor(&d, &r, &ref, 1e-5, 1e-5, floor, what);
        la_result_free(&r);
      }
      la_result_free(&ref);
      la_data_free(&d);
    }
}

/* FAVOR+ with large queries and keys (logits far from 0, the running max
 * jumping by hundreds): finite, and chunk = recurrent. */
Test(linpath_extremes, performer_large_inputs) {
  for (int scale = 0; scale < 3; scale++) {
    la_data d = la_make(LA_PERFORMER, 1, 2, 80, 2, 8, 4, 16, 0, 0, 1, 95 + (uint64_t)scale);
    const double s[] = {5, 20, 60};
    for (int i = LXQ; i <= LXK; i++)
      for (int64_t j = 0; j < la_in_size(&d, i); j++) d.x[i][j] *= (real)(s[scale] * (j % 13 == 0 ? 3 : 1));
    la_result ref = la_run(&d, AT_LA_RECURRENT, 16), r = la_run(&d, AT_LA_CHUNK, 16);
    char what[64];
    snprintf(what, sizeof what, "performer inputs x%g", s[scale]);
    cr_expect(la_all_finite(&d, &ref) && la_all_finite(&d, &r), "%s: not finite", what);
    la_expect_close(&d, &r, &ref, 1e-4, 1e-4, what);
    la_result_free(&r), la_result_free(&ref);
    la_data_free(&d);
  }
}

/* Changing every input at position t' leaves outputs before t' bit for bit
 * unchanged (and changes o at t'); with d_o zero from t0 on and no final
 * state gradient, inputs after t0 get exactly zero gradient. */
Test(linpath_causality, outputs_and_gradients) {
  const int64_t T = 40, tp = 21, t0 = 13;
  for (int kind = 0; kind < LA_KINDS; kind++)
    for (int form = 0; form < 2; form++) {
      la_data d = la_make((la_kind)kind, kind != LA_RETENTION, 2, T, 2, 8, 4, 12, -0.5, 0, 1, 150 + (uint64_t)kind);
      la_result a = la_run(&d, (at_la_form)form, 16);
      for (int i = LXQ; i <= LXG; i++) {
        if (!d.x[i]) continue;
        int64_t row = la_in_size(&d, i) / (d.B * d.T);
        for (int64_t b = 0; b < d.B; b++)
          for (int64_t j = 0; j < row; j++) {
            real *x = &d.x[i][(b * T + tp) * row + j];
            *x = i == LXG ? *x * (real)0.5 : *x + (real)0.7;
          }
      }
      la_result p = la_run(&d, (at_la_form)form, 16);
      const int64_t rowo = d.H * d.V;
      int same_before = 1, differs_at = 0;
      at_test_causal_outputs(a.o, p.o, d.B, T, rowo, tp, &same_before, &differs_at);
      cr_expect(same_before, "%s form %d: outputs before t' changed", la_kind_names[kind], form);
      cr_expect(differs_at, "%s form %d: output at t' did not change", la_kind_names[kind], form);
      la_result_free(&p), la_result_free(&a);

      at_test_zero_from(d.d_o, d.B, T, rowo, t0);
      memset(d.d_ht, 0, (size_t)la_in_size(&d, LXH0) * sizeof(real));
      memset(d.d_zt, 0, (size_t)la_in_size(&d, LXZ0) * sizeof(real));
      la_result g = la_run(&d, (at_la_form)form, 16);
      int zero_after = 1, nonzero_before = 0;
      for (int i = LXQ; i <= LXG; i++) {
        if (!g.dx[i]) continue;
        int64_t row = la_in_size(&d, i) / (d.B * d.T);
        at_test_causal_grad(g.dx[i], d.B, T, row, t0, &zero_after, &nonzero_before);
      }
      cr_expect(zero_after, "%s form %d: gradient after t0", la_kind_names[kind], form);
      cr_expect(nonzero_before, "%s form %d: no gradient before t0", la_kind_names[kind], form);
      la_result_free(&g);
      la_data_free(&d);
    }
}

/* One thread and two threads give identical bits. */
Test(linpath_threads, result_independent_of_thread_count) {
  int saved = at_threads();
  for (int kind = 0; kind < LA_KINDS; kind++) {
    la_data d = la_make((la_kind)kind, kind != LA_RETENTION, 3, 37, 3, 8, 4, 20, -0.5, 0, 1, 170 + (uint64_t)kind);
    at_set_threads(1);
    la_result a = la_run(&d, AT_LA_CHUNK, 16);
    at_set_threads(2);
    la_result b = la_run(&d, AT_LA_CHUNK, 16);
    la_expect_close(&d, &a, &b, 0, 0, la_kind_names[kind]);
    la_result_free(&a), la_result_free(&b);
    la_data_free(&d);
  }
  at_set_threads(saved);
}

/* ---- FAVOR+ features ------------------------------------------------------------ */

/* Orthogonal blocks: rows within a block orthogonal, lengths chi_K
 * distributed (mean ~ sqrt(K)), rows of different blocks not orthogonal;
 * draws reproducible from (seed, stream, draw) and different across draws. */
Test(linpath_favor, orthogonal_features_and_draws) {
  const int64_t K = 16, m = 40; /* two full blocks and a partial one */
  real *w = la_alloc(m * K), *w2 = la_alloc(m * K), *w3 = la_alloc(m * K);
  at_favor_draw(w, m, K, 1, 7, 11, 3);
  at_favor_draw(w2, m, K, 1, 7, 11, 3);
  at_favor_draw(w3, m, K, 1, 7, 11, 4);
  cr_expect(memcmp(w, w2, (size_t)(m * K) * sizeof(real)) == 0, "the same draw differs");
  cr_expect(memcmp(w, w3, (size_t)(m * K) * sizeof(real)) != 0, "two draws are equal");
  double worst_in = 0, cross = 0, mean_len = 0;
  for (int64_t i = 0; i < m; i++) {
    double ni = 0;
    for (int64_t e = 0; e < K; e++) ni += (double)w[i * K + e] * w[i * K + e];
    mean_len += sqrt(ni) / (double)m;
    for (int64_t j = 0; j < i; j++) {
      double dot = 0, nj = 0;
      for (int64_t e = 0; e < K; e++) dot += (double)w[i * K + e] * w[j * K + e], nj += (double)w[j * K + e] * w[j * K + e];
      double cosv = fabs(dot) / sqrt(ni * nj);
      if (i / K == j / K) worst_in = fmax(worst_in, cosv);
      else cross = fmax(cross, cosv);
    }
  }
  cr_expect(worst_in < 1e-5, "rows of a block: |cos| up to %g", worst_in);
  cr_expect(cross > 0.1, "rows of different blocks look orthogonal (%g)", cross);
  cr_expect(fabs(mean_len - 4.0) < 0.8, "mean row length %g (chi_16 mean 3.94)", mean_len);
  at_favor_draw(w2, m, K, 0, 7, 11, 3); /* iid rows differ from the orthogonal ones */
  cr_expect(memcmp(w, w2, (size_t)(m * K) * sizeof(real)) != 0);
  free(w), free(w2), free(w3);
}

/* Mean relative error of FAVOR+ against causal softmax attention over
 * `seeds` feature draws, on fixed q, k, v. */
static double favor_error(int64_t m, int orthogonal, int seeds, const la_data *d, const real *soft) {
  double err = 0;
  for (int s = 0; s < seeds; s++) {
    at_ctx *c = at_ctx_new(0);
    at_tensor *W = AT_NEW(c, m, d->K);
    at_favor_draw(W->data, m, d->K, orthogonal, 1000 + (uint64_t)s, 5, 0);
    at_tensor *q = at_from(c, d->x[LXQ], AT_SHAPE(d->B, d->T, d->H, d->K));
    at_tensor *k = at_from(c, d->x[LXK], AT_SHAPE(d->B, d->T, d->H, d->K));
    at_tensor *v = at_from(c, d->x[LXV], AT_SHAPE(d->B, d->T, d->H, d->V));
    at_tensor *o = at_performer(c, q, k, v, W, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    cr_assert(o, "%s", at_errmsg());
    err += at_test_rel_err(o->data, soft, o->size) / seeds;
    at_ctx_free(c);
  }
  return err;
}

/* As m grows the output approaches softmax attention on the same q, k, v:
 * the error (mean over 12 draws) falls at every doubling of m from 16 to
 * 1024, by about 1/sqrt(2) per doubling (the estimator's variance ~ 1/m),
 * and orthogonal features do better than iid ones on average. */
Test(linpath_favor, approaches_softmax_as_m_grows) {
  la_data d = la_make(LA_PERFORMER, 1, 2, 48, 2, 16, 8, 16, 0, 0, 0, 300);
  /* |q^ + k^|^2 ~ 1: the relative variance of the estimate ~ (e^1 - 1) / m,
   * small enough to see it fall over the whole range */
  for (int i = LXQ; i <= LXK; i++)
    for (int64_t j = 0; j < la_in_size(&d, i); j++) d.x[i][j] *= (real)0.5;
  at_ctx *c = at_ctx_new(0);
  at_tensor *q = at_from(c, d.x[LXQ], AT_SHAPE(d.B, d.T, d.H, d.K));
  at_tensor *k = at_from(c, d.x[LXK], AT_SHAPE(d.B, d.T, d.H, d.K));
  at_tensor *v = at_from(c, d.x[LXV], AT_SHAPE(d.B, d.T, d.H, d.V));
  at_attn_opts ao = {.scale = 0, .window = 0};
  at_tensor *soft = at_attention(c, q, k, v, &ao);
  cr_assert(soft, "%s", at_errmsg());
  double prev = INFINITY, first = 0, last = 0, ortho_sum = 0, iid_sum = 0;
  fprintf(stderr, "linpath_favor: FAVOR+ vs softmax attention, relative error (mean of 12 draws)\n"
                  "  %6s %12s %12s\n", "m", "orthogonal", "iid");
  for (int64_t m = 16; m <= 1024; m *= 2) {
    double e = favor_error(m, 1, 12, &d, soft->data), ei = favor_error(m, 0, 12, &d, soft->data);
    fprintf(stderr, "  %6lld %12.4f %12.4f\n", (long long)m, e, ei);
    cr_expect(e < prev, "m = %lld: error %.4f did not fall (%.4f at m / 2)", (long long)m, e, prev);
    if (m == 16) first = e;
    last = e, prev = e, ortho_sum += e, iid_sum += ei;
  }
  cr_expect(last < first / 4, "error %.4f at m = 1024 vs %.4f at m = 16 (expected ~ 1/8)", last, first);
  cr_expect(ortho_sum < iid_sum, "orthogonal features (%.4f) not better than iid (%.4f)", ortho_sum, iid_sum);
  at_ctx_free(c);
  la_data_free(&d);
}

/* ---- bad input ------------------------------------------------------------------ */

typedef struct err_inputs { at_tensor *q, *k, *v, *g, *kbad, *h0bad, *z0, *W, *Wbad; } err_inputs;

static at_tensor *err_case(at_ctx *c, const err_inputs *e, int i) {
  at_la_opts bad = {0, -1, AT_LA_CHUNK, 0, 0}, norm = {0, 0, AT_LA_CHUNK, 1, 0};
  at_la_opts par = {0, 0, AT_LA_PARALLEL, 0, 0}, negeps = {0, 0, AT_LA_CHUNK, 1, -1};
  switch (i) {
  case 0: return at_linear_attn(c, e->q, e->kbad, e->v, NULL, NULL, NULL, NULL, NULL);
  case 1: return at_linear_attn(c, e->q, e->k, e->v, e->h0bad, NULL, NULL, NULL, NULL);
  case 2: return at_linear_attn(c, e->q, e->k, e->v, NULL, e->z0, NULL, NULL, NULL);
  case 3: return at_la_attn(c, AT_LA_DECAY_NONE, e->q, e->k, e->v, e->g, NULL, NULL, NULL, NULL, NULL);
  case 4: return at_la_attn(c, AT_LA_DECAY_GATE, e->q, e->k, e->v, NULL, NULL, NULL, NULL, NULL, NULL);
  case 5: return at_la_attn(c, AT_LA_DECAY_GATE, e->q, e->k, e->v, e->g, NULL, NULL, NULL, NULL, &par);
  case 6: return at_retention(c, e->q, e->k, e->v, NULL, NULL, &norm);
  case 7: return at_retention(c, e->q, e->k, e->v, NULL, NULL, &bad);
  case 8: return at_linear_attn(c, e->q, e->k, e->v, NULL, NULL, NULL, NULL, &negeps);
  case 9: return at_performer(c, e->q, e->k, e->v, e->Wbad, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
  case 10: return at_la_step(c, AT_LA_DECAY_NONE, e->q, e->k, e->v, NULL, NULL, NULL, &norm);
  default: return at_performer_step(c, e->q, e->k, e->v, e->W, NULL, NULL, NULL, NULL);
  }
}

Test(linpath_errors, shapes_and_arguments) {
  at_ctx *c = at_ctx_new(0);
  err_inputs e = {AT_ZEROS(c, 2, 5, 3, 4), AT_ZEROS(c, 2, 5, 3, 4), AT_ZEROS(c, 2, 5, 3, 6), AT_ZEROS(c, 2, 5, 3),
                  AT_ZEROS(c, 2, 5, 3, 5), AT_ZEROS(c, 2, 3, 6, 4), AT_ZEROS(c, 2, 3, 4), AT_ZEROS(c, 8, 4),
                  AT_ZEROS(c, 8, 5)};
  const struct { at_status s; const char *msg; } want[] = {
      {AT_E_SHAPE, "linear_attn: q [2,5,3,4], k [2,5,3,5], v [2,5,3,6] must be"},
      {AT_E_SHAPE, "initial_state [2,3,6,4] must be [B,H,K,V] = [2,3,4,6]"},
      {AT_E_ARG, "linear_attn: an initial normaliser z0 needs normalize"},
      {AT_E_ARG, "linear_attn: takes no gate g"},
      {AT_E_ARG, "gated_linear_attn: q, k, v, g are required"},
      {AT_E_ARG, "the parallel form needs a constant decay"},
      {AT_E_ARG, "retention: has no normaliser"},
      {AT_E_ARG, "retention: bad options"},
      {AT_E_ARG, "linear_attn: bad options (scale 0, eps -1"},
      {AT_E_SHAPE, "favor_features: x [2,5,3,4] must be [B,T,H,K] and omega [8,5] [m,K]"},
      {AT_E_ARG, "linear_attn_step: the state and the normaliser z is required"},
      {AT_E_ARG, "performer_step: the state (S, z, M) is required"},
  };
  for (int i = 0; i < AT_ARRAY_LEN(want); i++) {
    c->status = AT_OK; /* each case starts clean */
    cr_expect(err_case(c, &e, i) == NULL, "case %d returned a tensor", i);
    cr_expect(at_ctx_status(c) == want[i].s, "case %d: status %s", i, at_status_name(at_ctx_status(c)));
    cr_expect(strstr(at_errmsg(), want[i].msg) != NULL, "case %d: message '%s'", i, at_errmsg());
  }
  c->status = AT_OK; /* a NULL input after an earlier failure: NULL, the first message kept */
  at_fail(c, AT_E_SHAPE, "earlier failure");
  cr_expect(at_linear_attn(c, NULL, e.k, e.v, NULL, NULL, NULL, NULL, NULL) == NULL);
  cr_expect(strstr(at_errmsg(), "earlier failure") != NULL);
  at_ctx_free(c);
}
