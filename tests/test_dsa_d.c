/* ops/attention/dsa*.c in double: gradchecks of the sparse attention (GQA,
 * MQA, MHA, Dv != D, keys shared by many rows, rows with fewer than k keys,
 * -1 holes) and of the indexer loss in both stages; the loss gradient at the
 * score level; indexer top-k against a brute-force ranking; causality;
 * k >= T equals full attention; decode forms; degenerate rows; T = 1;
 * fused ops against their naive references; refusals. */
#include "testing.h"
#include "dsa_ref.h"

static at_itensor *itensor(at_ctx *c, const int32_t *data, int64_t B, int64_t T, int64_t K) {
  at_itensor *t = at_inew(c, AT_SHAPE(B, T, K));
  cr_assert(t != NULL);
  memcpy(t->data, data, (size_t)t->size * sizeof *data);
  return t;
}

static at_tensor *constant(at_ctx *c, uint64_t seed, double std, int ndim, const int64_t *shape) {
  at_tensor *t = at_test_randn(c, seed, std, ndim, shape);
  t->requires_grad = 0;
  return t;
}
#define CONST(c, seed, std, ...) constant((c), (seed), (std), AT_SHAPE(__VA_ARGS__))

/* ---- sparse attention ----------------------------------------------------------- */

typedef struct {
  const at_itensor *idx;
  double scale;
} sa_user;

static at_tensor *sa_fn(at_ctx *c, at_tensor **in, void *u) {
  sa_user *s = u;
  return at_dsa_attention(c, in[0], in[1], in[2], s->idx, s->scale);
}

Test(dsa_attention, gradcheck_shapes_duplicates_short_rows) {
  at_ctx *c = at_ctx_new(0);
  /* {B, T, HQ, H, D, Dv, K} */
  const int64_t cases[][7] = {{2, 7, 4, 2, 5, 3, 3},  /* GQA, Dv != D */
                              {1, 9, 3, 1, 4, 4, 4},  /* MQA */
                              {2, 6, 2, 2, 3, 5, 2},  /* MHA */
                              {1, 5, 2, 1, 4, 3, 8}}; /* K > T: every row short */
  for (int i = 0; i < 4; i++) {
    const int64_t *z = cases[i];
    int64_t B = z[0], T = z[1], HQ = z[2], H = z[3], D = z[4], Dv = z[5], K = z[6];
    int32_t *sel = malloc((size_t)(B * T * K) * sizeof *sel);
    random_selection(B, T, K, 100 + i, sel);
    sa_user u = {itensor(c, sel, B, T, K), i == 1 ? 0.7 : 0};
    at_tensor *in[] = {AT_RANDN(c, 10 + i, 1, B, T, HQ, D), AT_RANDN(c, 20 + i, 1, B, T, H, D),
                       AT_RANDN(c, 30 + i, 1, B, T, H, Dv)};
    char what[64];
    snprintf(what, sizeof what, "dsa_attention case %d", i);
    AT_GRADCHECK(c, sa_fn, in, 3, &u, what);
    free(sel);
  }
  at_ctx_free(c);
}

Test(dsa_attention, matches_plain_loops) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 11, HQ = 6, H = 2, D = 7, Dv = 4, K = 5;
  int32_t sel[2 * 11 * 5];
  random_selection(B, T, K, 7, sel);
  at_tensor *q = AT_RANDN(c, 1, 1, B, T, HQ, D), *k = AT_RANDN(c, 2, 1, B, T, H, D),
            *v = AT_RANDN(c, 3, 1, B, T, H, Dv);
  at_tensor *o = at_dsa_attention(c, q, k, v, itensor(c, sel, B, T, K), 0.3);
  cr_assert(o != NULL, "%s", at_errmsg());
  cr_expect(o->shape[0] == B && o->shape[1] == T && o->shape[2] == HQ && o->shape[3] == Dv);
  double *want = malloc((size_t)o->size * sizeof *want);
  ref_attention(q, k, v, sel, K, 0.3, want);
  AT_EXPECT_CLOSE(o->data, want, o->size, 1e-13, "dsa_attention vs plain loops");
  free(want);
  at_ctx_free(c);
}

/* Plain causal softmax attention, for the k >= T check. */
static void full_attention(const at_tensor *q, const at_tensor *k, const at_tensor *v,
                           double scale, double *o) {
  int64_t B = q->shape[0], T = q->shape[1];
  int32_t *all = malloc((size_t)(B * T * T) * sizeof *all);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t s = 0; s < T; s++) all[(b * T + t) * T + s] = s <= t ? (int32_t)s : -1;
  ref_attention(q, k, v, all, T, scale, o);
  free(all);
}

Test(dsa_attention, topk_at_least_T_is_full_attention) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 13, HQ = 4, H = 2, D = 6, Dv = 5, HI = 2, DI = 4;
  at_tensor *q = AT_RANDN(c, 1, 1, B, T, HQ, D), *k = AT_RANDN(c, 2, 1, B, T, H, D),
            *v = AT_RANDN(c, 3, 1, B, T, H, Dv);
  at_tensor *qi = CONST(c, 4, 1, B, T, HI, DI), *ki = CONST(c, 5, 1, B, T, DI),
            *w = CONST(c, 6, 1, B, T, HI);
  double *want = malloc((size_t)(B * T * HQ * Dv) * sizeof *want);
  full_attention(q, k, v, 1 / sqrt((double)D), want);
  for (int64_t topk = T; topk <= T + 3; topk += 3) {
    at_itensor *sel;
    at_tensor *o = at_dsa(c, q, k, v, qi, ki, w, topk, NULL, &sel);
    cr_assert(o != NULL, "%s", at_errmsg());
    AT_EXPECT_CLOSE(o->data, want, o->size, 1e-13, "dsa with topk >= T vs full attention");
    for (int64_t b = 0; b < B; b++) /* every causal key exactly once, then -1 */
      for (int64_t t = 0; t < T; t++) {
        int seen[13] = {0};
        const int32_t *row = sel->data + (b * T + t) * topk;
        for (int64_t i = 0; i < topk; i++) {
          if (i <= t) {
            cr_assert(row[i] >= 0 && row[i] <= t);
            seen[row[i]]++;
          } else {
            cr_expect(row[i] == -1);
          }
        }
        for (int64_t s = 0; s <= t; s++) cr_expect(seen[s] == 1);
      }
  }
  /* gradients of the dense case too */
  sa_user u = {NULL, 0};
  at_itensor *dense = at_dsa_topk(c, qi, ki, w, T, 0);
  u.idx = dense;
  at_tensor *in[] = {q, k, v};
  AT_GRADCHECK(c, sa_fn, in, 3, &u, "dsa_attention dense");
  free(want);
  at_ctx_free(c);
}

Test(dsa_attention, degenerate_rows_give_no_nan) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 1, T = 5, HQ = 2, H = 1, D = 3, Dv = 2, K = 3;
  int32_t sel[5 * 3] = {0,  -1, -1, /* t = 0 */
                        -1, -1, -1, /* nothing selected */
                        2,  1,  0,  /* all scores equal (see q below) */
                        -1, 3,  -1, /* a lone diagonal key between holes */
                        0,  -1, 4};
  at_tensor *q = AT_RANDN(c, 1, 1, B, T, HQ, D), *k = AT_RANDN(c, 2, 1, B, T, H, D),
            *v = AT_RANDN(c, 3, 1, B, T, H, Dv);
  for (int64_t e = 0; e < HQ * D; e++) q->data[2 * HQ * D + e] = 0; /* row 2: uniform weights */
  at_ctx_mark m = at_ctx_get_mark(c);
  at_tensor *o = at_dsa_attention(c, q, k, v, itensor(c, sel, B, T, K), 0);
  cr_assert(o != NULL, "%s", at_errmsg());
  cr_expect(at_all_finite(o->data, o->size));
  for (int64_t e = 0; e < HQ * Dv; e++) cr_expect(o->data[1 * HQ * Dv + e] == 0, "empty row gives 0");
  for (int64_t hq = 0; hq < HQ; hq++)
    for (int64_t e = 0; e < Dv; e++) {
      double mean = (v->data[0 * Dv + e] + v->data[1 * Dv + e] + v->data[2 * Dv + e]) / 3;
      cr_expect(fabs(o->data[(2 * HQ + hq) * Dv + e] - mean) < 1e-14, "uniform row = mean of v");
      cr_expect(o->data[(0 * HQ + hq) * Dv + e] == v->data[e], "t = 0 copies v_0");
    }
  for (int64_t i = 0; i < o->size; i++) at_grad(c, o)[i] = 1;
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  cr_expect(at_all_finite(q->grad, q->size) && at_all_finite(k->grad, k->size) &&
            at_all_finite(v->grad, v->size));
  for (int64_t e = 0; e < HQ * D; e++) cr_expect(q->grad[1 * HQ * D + e] == 0);
  at_ctx_rewind(c, m); /* drop the tape of the first pass */
  sa_user u = {itensor(c, sel, B, T, K), 0};
  at_tensor *in[] = {q, k, v};
  AT_GRADCHECK(c, sa_fn, in, 3, &u, "dsa_attention degenerate rows");
  at_ctx_free(c);
}

Test(dsa_attention, refuses_future_repeated_and_bad_keys) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *q = AT_RANDN(c, 1, 1, 1, 3, 2, 4), *k = AT_RANDN(c, 2, 1, 1, 3, 1, 4),
            *v = AT_RANDN(c, 3, 1, 1, 3, 1, 4);
  int32_t future[] = {0, -1, 0, 2, 0, 1};
  cr_expect(at_dsa_attention(c, q, k, v, itensor(c, future, 1, 3, 2), 0) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "indices[0,1,1] = 2 is not a causal key") != NULL, "%s",
            at_errmsg());
  at_ctx_reset(c);
  q = AT_RANDN(c, 1, 1, 1, 3, 2, 4), k = AT_RANDN(c, 2, 1, 1, 3, 1, 4);
  v = AT_RANDN(c, 3, 1, 1, 3, 1, 4);
  int32_t twice[] = {0, -1, 1, 1, 0, 2};
  cr_expect(at_dsa_attention(c, q, k, v, itensor(c, twice, 1, 3, 2), 0) == NULL);
  cr_expect(strstr(at_errmsg(), "selects key 1 twice") != NULL, "%s", at_errmsg());
  at_ctx_reset(c);
  q = AT_RANDN(c, 1, 1, 1, 3, 2, 4), k = AT_RANDN(c, 2, 1, 1, 3, 1, 4);
  v = AT_RANDN(c, 3, 1, 1, 3, 1, 4);
  int32_t neg[] = {0, -2, 1, 0, 0, 2};
  cr_expect(at_dsa_attention(c, q, k, v, itensor(c, neg, 1, 3, 2), 0) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  at_ctx_reset(c);
  /* shapes: HQ not a multiple of H; k of another length */
  q = AT_RANDN(c, 1, 1, 1, 3, 3, 4), k = AT_RANDN(c, 2, 1, 1, 3, 2, 4);
  v = AT_RANDN(c, 3, 1, 1, 3, 2, 4);
  int32_t ok[] = {0, -1, 0, 1, 1, 2};
  cr_expect(at_dsa_attention(c, q, k, v, itensor(c, ok, 1, 3, 2), 0) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "dsa_attention: q [1,3,3,4], k [1,3,2,4]") != NULL, "%s",
            at_errmsg());
  at_ctx_reset(c);
  cr_expect(at_dsa_attention(c, NULL, k, v, NULL, 0) == NULL);
  at_ctx_free(c);
}

/* ---- indexer top-k -------------------------------------------------------------- */

Test(dsa_topk, matches_brute_force_ranking) {
  at_ctx *c = at_ctx_new(0);
  /* {B, T, HI, DI, topk, w: 0 none / 1 positive / 2 signed}; T crosses query
   * tiles (32) and key tiles (256) */
  const int64_t cases[][6] = {{2, 37, 2, 8, 8, 1},  {1, 70, 3, 5, 16, 2}, {1, 300, 2, 4, 20, 2},
                              {2, 9, 1, 3, 1, 0},   {1, 6, 2, 3, 10, 1},  {3, 33, 4, 2, 32, 2}};
  for (int i = 0; i < 6; i++) {
    const int64_t *z = cases[i];
    int64_t B = z[0], T = z[1], HI = z[2], DI = z[3], topk = z[4];
    at_tensor *qi = CONST(c, 40 + i, 1, B, T, HI, DI), *ki = CONST(c, 50 + i, 1, B, T, DI);
    at_tensor *w = z[5] ? CONST(c, 60 + i, 1, B, T, HI) : NULL;
    if (z[5] == 1)
      for (int64_t e = 0; e < w->size; e++) w->data[e] = fabs(w->data[e]);
    at_itensor *got = at_dsa_topk(c, qi, ki, w, topk, i == 3 ? 2.5 : 0);
    cr_assert(got != NULL, "%s", at_errmsg());
    cr_expect(got->ndim == 3 && got->shape[0] == B && got->shape[1] == T && got->shape[2] == topk);
    int32_t *want = malloc((size_t)(B * T * topk) * sizeof *want);
    ref_topk(qi, ki, w, i == 3 ? 2.5 : 1 / sqrt((double)DI), topk, want);
    int64_t bad = -1;
    for (int64_t e = 0; e < B * T * topk && bad < 0; e++)
      if (got->data[e] != want[e]) bad = e;
    cr_expect(bad < 0, "case %d: first difference at row %lld slot %lld: %d vs %d", i,
              (long long)(bad / topk), (long long)(bad % topk), bad < 0 ? 0 : got->data[bad],
              bad < 0 ? 0 : want[bad]);
    free(want);
  }
  at_ctx_free(c);
}

Test(dsa_topk, ties_prefer_later_keys) {
  at_ctx *c = at_ctx_new(0);
  int64_t T = 40, HI = 2, DI = 4, topk = 5;
  at_tensor *qi = CONST(c, 1, 1, 1, T, HI, DI), *ki = CONST(c, 2, 1, 1, T, DI);
  /* row 30: zero query -> every score is 0 -> the 5 most recent keys */
  for (int64_t e = 0; e < HI * DI; e++) qi->data[30 * HI * DI + e] = 0;
  /* keys 3, 11, 19 identical: exact ties with non-zero scores */
  for (int64_t e = 0; e < DI; e++) ki->data[11 * DI + e] = ki->data[19 * DI + e] = ki->data[3 * DI + e];
  at_itensor *got = at_dsa_topk(c, qi, ki, NULL, topk, 0);
  cr_assert(got != NULL);
  for (int64_t i = 0; i < topk; i++) cr_expect(got->data[30 * topk + i] == 30 - i);
  /* wherever the copies are selected, a later copy comes first */
  int tied_rows = 0;
  for (int64_t t = 19; t < T; t++) {
    const int32_t *row = got->data + t * topk;
    int64_t p3 = -1, p11 = -1, p19 = -1;
    for (int64_t i = 0; i < topk; i++) {
      if (row[i] == 3) p3 = i;
      if (row[i] == 11) p11 = i;
      if (row[i] == 19) p19 = i;
    }
    if (p3 >= 0) cr_expect(p11 >= 0 && p11 < p3, "row %lld", (long long)t);
    if (p11 >= 0) cr_expect(p19 >= 0 && p19 < p11, "row %lld", (long long)t);
    tied_rows += p19 >= 0 && p11 >= 0;
  }
  cr_expect(tied_rows > 0, "the tie was exercised");
  at_ctx_free(c);
}

Test(dsa_topk, refuses_bad_arguments) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *qi = CONST(c, 1, 1, 1, 4, 2, 3), *ki = CONST(c, 2, 1, 1, 4, 3);
  cr_expect(at_dsa_topk(c, qi, ki, NULL, 0, 0) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  at_ctx_reset(c);
  qi = CONST(c, 1, 1, 1, 4, 2, 3), ki = CONST(c, 2, 1, 1, 4, 2);
  cr_expect(at_dsa_topk(c, qi, ki, NULL, 2, 0) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "dsa_topk: q_idx [1,4,2,3], k_idx [1,4,2]") != NULL, "%s",
            at_errmsg());
  at_ctx_reset(c);
  qi = CONST(c, 1, 1, 1, 4, 2, 3), ki = CONST(c, 2, 1, 1, 4, 3);
  at_tensor *w = CONST(c, 3, 1, 1, 4, 3);
  cr_expect(at_dsa_topk(c, qi, ki, w, 2, 0) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  at_ctx_free(c);
}

/* ---- causality and decode --------------------------------------------------------- */

Test(dsa, future_tokens_change_nothing_before_them) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 45, HQ = 4, H = 2, D = 4, Dv = 3, HI = 2, DI = 4, topk = 6, tf = 29;
  at_tensor *q = CONST(c, 1, 1, B, T, HQ, D), *k = CONST(c, 2, 1, B, T, H, D),
            *v = CONST(c, 3, 1, B, T, H, Dv), *qi = CONST(c, 4, 1, B, T, HI, DI),
            *ki = CONST(c, 5, 1, B, T, DI), *w = CONST(c, 6, 1, B, T, HI);
  at_itensor *sel1;
  at_tensor *o1 = at_dsa(c, q, k, v, qi, ki, w, topk, NULL, &sel1);
  cr_assert(o1 != NULL, "%s", at_errmsg());
  for (int64_t i = 0; i < sel1->size; i++) cr_expect(sel1->data[i] <= (i / topk) % T);
  /* make token tf very attractive and very different in batch entry 1 */
  at_tensor *all[] = {q, k, v, qi, ki, w};
  for (int j = 0; j < 6; j++) {
    int64_t per = all[j]->size / (B * T);
    for (int64_t e = 0; e < per; e++) all[j]->data[(T + tf) * per + e] = 50 + e;
  }
  at_itensor *sel2;
  at_tensor *o2 = at_dsa(c, q, k, v, qi, ki, w, topk, NULL, &sel2);
  cr_assert(o2 != NULL);
  for (int64_t b = 0; b < B; b++) {
    int64_t upto = b == 1 ? tf : T; /* rows before tf (and all of entry 0) are untouched */
    cr_expect(memcmp(sel1->data + b * T * topk, sel2->data + b * T * topk,
                     (size_t)(upto * topk) * sizeof(int32_t)) == 0, "selection, entry %lld", (long long)b);
    cr_expect(memcmp(o1->data + b * T * HQ * Dv, o2->data + b * T * HQ * Dv,
                     (size_t)(upto * HQ * Dv) * sizeof(real)) == 0, "output, entry %lld", (long long)b);
  }
  int picked = 0; /* and the later rows of entry 1 do pick it */
  for (int64_t t = tf + 1; t < T; t++)
    for (int64_t i = 0; i < topk; i++) picked += sel2->data[(T + t) * topk + i] == tf;
  cr_expect(picked > 0);
  at_ctx_free(c);
}

Test(dsa, decode_steps_match_training_rows) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 23, HQ = 4, H = 1, D = 5, Dv = 3, HI = 3, DI = 4, topk = 7, S = 30;
  at_tensor *q = CONST(c, 1, 1, B, T, HQ, D), *k = CONST(c, 2, 1, B, T, H, D),
            *v = CONST(c, 3, 1, B, T, H, Dv), *qi = CONST(c, 4, 1, B, T, HI, DI),
            *ki = CONST(c, 5, 1, B, T, DI), *w = CONST(c, 6, 1, B, T, HI);
  at_itensor *sel;
  at_tensor *o = at_dsa(c, q, k, v, qi, ki, w, topk, NULL, &sel);
  cr_assert(o != NULL, "%s", at_errmsg());
  /* caches with S > T slots, filled with garbage beyond the positions written */
  at_tensor *kc = CONST(c, 7, 100, B, S, H, D), *vc = CONST(c, 8, 100, B, S, H, Dv),
            *kic = CONST(c, 9, 100, B, S, DI);
  at_tensor *q1 = at_new(c, AT_SHAPE(B, 1, HQ, D)), *qi1 = at_new(c, AT_SHAPE(B, 1, HI, DI)),
            *w1 = at_new(c, AT_SHAPE(B, 1, HI));
  for (int64_t t = 0; t < T; t++) {
    for (int64_t b = 0; b < B; b++) { /* append token t, then step */
      memcpy(kc->data + (b * S + t) * H * D, k->data + (b * T + t) * H * D, H * D * sizeof(real));
      memcpy(vc->data + (b * S + t) * H * Dv, v->data + (b * T + t) * H * Dv, H * Dv * sizeof(real));
      memcpy(kic->data + (b * S + t) * DI, ki->data + (b * T + t) * DI, DI * sizeof(real));
      memcpy(q1->data + b * HQ * D, q->data + (b * T + t) * HQ * D, HQ * D * sizeof(real));
      memcpy(qi1->data + b * HI * DI, qi->data + (b * T + t) * HI * DI, HI * DI * sizeof(real));
      memcpy(w1->data + b * HI, w->data + (b * T + t) * HI, HI * sizeof(real));
    }
    at_itensor *s1 = at_dsa_topk_decode(c, qi1, kic, w1, t + 1, topk, 0);
    cr_assert(s1 != NULL, "%s", at_errmsg());
    at_tensor *o1 = at_dsa_attention_decode(c, q1, kc, vc, s1, t + 1, 0);
    cr_assert(o1 != NULL, "%s", at_errmsg());
    cr_expect(!o1->requires_grad);
    for (int64_t b = 0; b < B; b++) {
      cr_expect(memcmp(s1->data + b * topk, sel->data + (b * T + t) * topk,
                       (size_t)topk * sizeof(int32_t)) == 0, "selection of step %lld", (long long)t);
      AT_EXPECT_CLOSE(o1->data + b * HQ * Dv, o->data + (b * T + t) * HQ * Dv, HQ * Dv, 1e-14,
                      "decode output");
    }
  }
  int32_t bad[] = {0, 5, -1, 0, 0, 0, 0};
  at_itensor *sb = itensor(c, bad, B, 1, 3);
  cr_expect(at_dsa_attention_decode(c, q1, kc, vc, sb, 5, 0) == NULL, "key 5 is not < len 5");
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  at_ctx_free(c);
}

/* ---- indexer loss ------------------------------------------------------------------ */

typedef struct {
  const at_tensor *q, *k;
  const at_itensor *idx;
  at_dsa_loss_opts o;
  int no_w;
} kl_user;

static at_tensor *kl_fn(at_ctx *c, at_tensor **in, void *u) {
  kl_user *s = u;
  return at_dsa_indexer_loss(c, in[0], in[1], s->no_w ? NULL : in[2], s->q, s->k, s->idx, &s->o,
                             NULL);
}

/* Smallest |a| = |scale q_idx . k_idx| over causal pairs: far from the ReLU kink? */
static double min_abs_a(const at_tensor *qi, const at_tensor *ki, double scale) {
  int64_t B = qi->shape[0], T = qi->shape[1], HI = qi->shape[2], DI = qi->shape[3];
  double m = INFINITY;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t j = 0; j < HI; j++)
        for (int64_t s = 0; s <= t; s++) {
          double a = 0;
          for (int64_t e = 0; e < DI; e++)
            a += qi->data[((b * T + t) * HI + j) * DI + e] * ki->data[(b * T + s) * DI + e];
          m = fmin(m, fabs(scale * a));
        }
  return m;
}

Test(dsa_loss, gradcheck_both_stages) {
  at_ctx *c = at_ctx_new(0);
  /* {B, T, HI, DI, HQ, H, D, topk} */
  const int64_t cases[][8] = {{2, 7, 2, 4, 4, 2, 3, 3}, {1, 9, 3, 3, 2, 1, 4, 4}};
  for (int i = 0; i < 2; i++)
    for (int sparse = 0; sparse < 2; sparse++)
      for (int no_w = 0; no_w < 2; no_w++) {
        const int64_t *z = cases[i];
        int64_t B = z[0], T = z[1], HI = z[2], DI = z[3], HQ = z[4], H = z[5], D = z[6];
        at_tensor *qi = AT_RANDN(c, 70 + i, 1, B, T, HI, DI), *ki = AT_RANDN(c, 80 + i, 1, B, T, DI),
                  *w = AT_RANDN(c, 90 + i, 1, B, T, HI);
        cr_assert(min_abs_a(qi, ki, 1 / sqrt((double)DI)) > 1e-3, "inputs near a ReLU kink");
        kl_user u = {CONST(c, 100 + i, 1.5, B, T, HQ, D), CONST(c, 110 + i, 1, B, T, H, D), NULL,
                     {0, 0, sparse}, no_w};
        u.idx = at_dsa_topk(c, qi, ki, w, z[7], 0);
        at_tensor *in[] = {qi, ki, w};
        char what[96];
        snprintf(what, sizeof what, "dsa_indexer_loss case %d sparse %d no_w %d", i, sparse, no_w);
        AT_GRADCHECK(c, kl_fn, in, no_w ? 2 : 3, &u, what);
      }
  at_ctx_free(c);
}

/* With DI = T, k_idx[s] = e_s, one head, w = 1, scale_idx = 1 and positive
 * q_idx, I[t,s] = q_idx[t,0,s]: dL/dq_idx[t,0,s] IS dL/dI[t,s]. */
Test(dsa_loss, score_gradient_is_student_minus_teacher) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 8, HQ = 4, H = 2, D = 3, K = 3;
  for (int sparse = 0; sparse < 2; sparse++) {
    at_tensor *qi = AT_RAND(c, 1, 0.1, 2, B, T, 1, T), *ki = AT_ZEROS(c, B, T, T);
    ki->requires_grad = 1;
    for (int64_t b = 0; b < B; b++)
      for (int64_t s = 0; s < T; s++) ki->data[(b * T + s) * T + s] = 1;
    at_tensor *q = CONST(c, 2, 1, B, T, HQ, D), *k = CONST(c, 3, 1, B, T, H, D);
    int32_t sel[2 * 8 * 3];
    random_selection(B, T, K, 5, sel);
    at_itensor *idx = itensor(c, sel, B, T, K);
    at_dsa_loss_opts o = {0, 1, sparse};
    at_tensor *L = at_dsa_indexer_loss(c, qi, ki, NULL, q, k, idx, &o, NULL);
    cr_assert(L != NULL, "%s", at_errmsg());
    cr_assert(at_backward(c, L) == AT_OK, "%s", at_errmsg());
    int in[8];
    double p[8], pi[8];
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < T; t++) {
        ref_keyset(T, t, sparse, sel + (b * T + t) * K, K, in);
        ref_teacher(q, k, 1 / sqrt((double)D), b, t, in, p);
        ref_student(qi, ki, NULL, 1, b, t, in, pi);
        for (int64_t s = 0; s < T; s++) {
          double want = in[s] ? (pi[s] - p[s]) / (double)(B * T) : 0;
          double got = qi->grad[(b * T + t) * T + s];
          cr_expect(fabs(got - want) < 1e-15, "stage %d row (%lld,%lld) key %lld: %.17g vs %.17g",
                    sparse, (long long)b, (long long)t, (long long)s, got, want);
        }
      }
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

Test(dsa_loss, value_and_recall_match_plain_loops) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 12, HI = 2, DI = 3, HQ = 4, H = 2, D = 5, topk = 4;
  at_tensor *qi = AT_RANDN(c, 1, 1, B, T, HI, DI), *ki = AT_RANDN(c, 2, 1, B, T, DI),
            *w = AT_RANDN(c, 3, 1, B, T, HI), *q = CONST(c, 4, 1, B, T, HQ, D),
            *k = CONST(c, 5, 1, B, T, H, D);
  at_itensor *sel = at_dsa_topk(c, qi, ki, w, topk, 0);
  double sdi = 1 / sqrt((double)DI), sd = 1 / sqrt((double)D);
  for (int sparse = 0; sparse < 2; sparse++) {
    at_dsa_loss_opts o = {0, 0, sparse};
    at_dsa_loss_stats st;
    at_tensor *L = at_dsa_indexer_loss(c, qi, ki, w, q, k, sel, &o, &st);
    cr_assert(L != NULL, "%s", at_errmsg());
    double kl = 0, rec = 0, rec_tail = 0;
    int64_t n_tail = 0;
    int in[12], all[12];
    double p[12], pi[12], pd[12];
    for (int64_t b = 0; b < B; b++)
      for (int64_t t = 0; t < T; t++) {
        const int32_t *row = sel->data + (b * T + t) * topk;
        ref_keyset(T, t, sparse, row, topk, in);
        ref_teacher(q, k, sd, b, t, in, p);
        ref_student(qi, ki, w, sdi, b, t, in, pi);
        for (int64_t s = 0; s < T; s++)
          if (in[s] && p[s] > 0) kl += p[s] * log(p[s] / pi[s]);
        ref_keyset(T, t, 0, row, topk, all);
        ref_teacher(q, k, sd, b, t, all, pd);
        double r = 0;
        for (int64_t i = 0; i < topk; i++)
          if (row[i] >= 0) r += pd[row[i]];
        rec += r;
        if (t + 1 > topk) rec_tail += r, n_tail++;
      }
    kl /= (double)(B * T);
    cr_expect(fabs(L->data[0] - kl) < 1e-13 * fmax(1, kl), "stage %d loss %.17g vs %.17g", sparse,
              L->data[0], kl);
    cr_expect(st.kl == L->data[0]);
    cr_expect(fabs(st.recall - rec / (double)(B * T)) < 1e-13, "recall %.17g", st.recall);
    cr_expect(st.tail_rows == n_tail);
    cr_expect(fabs(st.recall_tail - rec_tail / (double)n_tail) < 1e-13);
    cr_expect(st.recall_tail < 1 && st.recall_tail > 0);
  }
  /* dense stage without a selection: no recall */
  at_dsa_loss_opts o = {0, 0, 0};
  at_dsa_loss_stats st;
  cr_assert(at_dsa_indexer_loss(c, qi, ki, w, q, k, NULL, &o, &st) != NULL);
  cr_expect(isnan(st.recall) && isfinite(st.kl));
  at_ctx_free(c);
}

Test(dsa_loss, main_model_gets_no_gradient) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 1, T = 6, HI = 2, DI = 3, HQ = 2, H = 1, D = 4;
  at_tensor *qi = AT_RANDN(c, 1, 1, B, T, HI, DI), *ki = AT_RANDN(c, 2, 1, B, T, DI),
            *w = AT_RANDN(c, 3, 1, B, T, HI);
  at_tensor *q = AT_RANDN(c, 4, 1, B, T, HQ, D), *k = AT_RANDN(c, 5, 1, B, T, H, D);
  at_dsa_loss_opts o = {0, 0, 0};
  at_tensor *L = at_dsa_indexer_loss(c, qi, ki, w, q, k, NULL, &o, NULL);
  cr_assert(at_backward(c, L) == AT_OK, "%s", at_errmsg());
  cr_expect(q->grad == NULL && k->grad == NULL, "the teacher is a constant");
  cr_expect(qi->grad && ki->grad && w->grad);
  /* sparse stage without a selection is refused */
  at_dsa_loss_opts os = {0, 0, 1};
  cr_expect(at_dsa_indexer_loss(c, qi, ki, w, q, k, NULL, &os, NULL) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  at_ctx_free(c);
}

Test(dsa_loss, perfect_student_has_zero_loss_and_gradient) {
  /* DI = T one-hot keys again: set I[t,s] = log p_t[s] + const -> KL = 0, gradient 0 */
  at_ctx *c = at_ctx_new(0);
  int64_t B = 1, T = 6, HQ = 2, H = 1, D = 3;
  at_tensor *qi = AT_ZEROS(c, B, T, 1, T), *ki = AT_ZEROS(c, B, T, T);
  qi->requires_grad = ki->requires_grad = 1;
  for (int64_t s = 0; s < T; s++) ki->data[s * T + s] = 1;
  at_tensor *q = CONST(c, 2, 1, B, T, HQ, D), *k = CONST(c, 3, 1, B, T, H, D);
  int in[6];
  double p[6];
  for (int64_t t = 0; t < T; t++) {
    ref_keyset(T, t, 0, NULL, 0, in);
    ref_teacher(q, k, 1 / sqrt((double)D), 0, t, in, p);
    for (int64_t s = 0; s <= t; s++) qi->data[t * T + s] = 20 + log(p[s]);
  }
  at_dsa_loss_opts o = {0, 1, 0};
  at_tensor *L = at_dsa_indexer_loss(c, qi, ki, NULL, q, k, NULL, &o, NULL);
  cr_assert(L != NULL);
  cr_expect(fabs(L->data[0]) < 1e-14);
  cr_assert(at_backward(c, L) == AT_OK);
  for (int64_t i = 0; i < qi->size; i++) cr_expect(fabs(qi->grad[i]) < 1e-15);
  at_ctx_free(c);
}

/* ---- fused vs naive ------------------------------------------------------------------ */

Test(dsa, fused_ops_equal_their_naive_references) {
  at_ctx *c = at_ctx_new(0);
  check_fused_vs_naive(c, 500, 1e-13, 1e-12);
  at_ctx_free(c);
}

/* ---- edge shapes -------------------------------------------------------------------- */

Test(dsa, one_token_one_head) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *q = AT_RANDN(c, 1, 1, 1, 1, 1, 3), *k = AT_RANDN(c, 2, 1, 1, 1, 1, 3),
            *v = AT_RANDN(c, 3, 1, 1, 1, 1, 2), *qi = AT_RANDN(c, 4, 1, 1, 1, 1, 2),
            *ki = AT_RANDN(c, 5, 1, 1, 1, 2), *w = AT_RANDN(c, 6, 1, 1, 1, 1);
  at_itensor *sel;
  at_tensor *o = at_dsa(c, q, k, v, qi, ki, w, 4, NULL, &sel);
  cr_assert(o != NULL, "%s", at_errmsg());
  cr_expect(sel->data[0] == 0 && sel->data[1] == -1 && sel->data[3] == -1);
  cr_expect(o->data[0] == v->data[0] && o->data[1] == v->data[1], "one key: o = v_0");
  sa_user u = {sel, 0};
  at_tensor *in[] = {q, k, v};
  AT_GRADCHECK(c, sa_fn, in, 3, &u, "dsa_attention T = 1");
  for (int sparse = 0; sparse < 2; sparse++) { /* one key: p = pi = 1, KL = 0, no gradient */
    at_ctx_mark m = at_ctx_get_mark(c);
    at_dsa_loss_opts lo = {0, 0, sparse};
    at_dsa_loss_stats st;
    at_tensor *L = at_dsa_indexer_loss(c, qi, ki, w, q, k, sel, &lo, &st);
    cr_assert(L != NULL, "%s", at_errmsg());
    cr_expect(L->data[0] == 0 && st.recall == 1 && st.tail_rows == 0 && isnan(st.recall_tail));
    cr_assert(at_backward(c, L) == AT_OK);
    cr_expect(qi->grad[0] == 0 && qi->grad[1] == 0 && ki->grad[0] == 0 && w->grad[0] == 0);
    qi->grad = ki->grad = w->grad = NULL;
    at_ctx_rewind(c, m);
  }
  at_ctx_free(c);
}
