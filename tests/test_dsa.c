/* ops/attention/dsa*.c in float: against flash-linear-attention's naive_dsa
 * (tests/golden/dsa.h5: B 2, T 37, 4 query heads over 2 KV heads, K 16,
 * V 8, 2 indexer heads of dim 8, topk 8), fused ops against their naive
 * references, and results independent of the thread count. */
#include <stdlib.h>

#include "core/h5io.h"
#include "core/threads.h"
#include "testing.h"
#include "dsa_ref.h"

#define GOLDEN AT_SOURCE_DIR "/tests/golden/dsa.h5"

typedef struct golden {
  at_h5 *h;
  at_ctx *c;
} golden;

static at_tensor *gread(golden *g, const char *name, int leaf) {
  int nd;
  int64_t sh[4];
  real *data;
  cr_assert(at_h5_read_real_alloc(g->h, name, &nd, sh, &data) == AT_OK, "%s", at_errmsg());
  at_tensor *t = leaf ? at_leaf(g->c, data, nd, sh) : at_from(g->c, data, nd, sh);
  free(data);
  return t;
}

static at_itensor *gread_int(golden *g, const char *name) {
  int nd;
  int64_t sh[4];
  int32_t *data;
  cr_assert(at_h5_read_int_alloc(g->h, name, &nd, sh, &data) == AT_OK, "%s", at_errmsg());
  at_itensor *t = at_inew(g->c, nd, sh);
  memcpy(t->data, data, (size_t)t->size * sizeof *data);
  free(data);
  return t;
}

static golden gopen(void) {
  golden g = {NULL, at_ctx_new(0)};
  cr_assert(at_h5_open(GOLDEN, &g.h) == AT_OK, "%s", at_errmsg());
  int64_t topk;
  cr_assert(at_h5_get_attr_int(g.h, "/", "topk", &topk) == AT_OK);
  cr_assert(topk == 8);
  return g;
}

static void gclose(golden *g) {
  at_h5_close(g->h);
  at_ctx_free(g->c);
}

/* The golden selection, with golden indices, gives fla's o and gradients. */
Test(dsa_golden, attention_with_golden_indices) {
  golden g = gopen();
  at_tensor *q = gread(&g, "inputs/q", 1), *k = gread(&g, "inputs/k", 1),
            *v = gread(&g, "inputs/v", 1), *dO = gread(&g, "inputs/do", 0);
  at_itensor *idx = gread_int(&g, "outputs/indices");
  at_tensor *o = at_dsa_attention(g.c, q, k, v, idx, 0);
  cr_assert(o != NULL, "%s", at_errmsg());
  at_tensor *want = gread(&g, "outputs/o", 0);
  AT_EXPECT_CLOSE(o->data, want->data, o->size, 1e-5, "o");
  memcpy(at_grad(g.c, o), dO->data, (size_t)o->size * sizeof(real));
  cr_assert(at_backward_from_seeded(g.c) == AT_OK, "%s", at_errmsg());
  const char *names[] = {"grads/dq", "grads/dk", "grads/dv"};
  at_tensor *got[] = {q, k, v};
  for (int i = 0; i < 3; i++) {
    at_tensor *w = gread(&g, names[i], 0);
    cr_assert(got[i]->grad && w->size == got[i]->size);
    AT_EXPECT_CLOSE(got[i]->grad, w->data, w->size, 1e-4, names[i]);
  }
  gclose(&g);
}

/* The indexer picks fla's keys. ReLU makes exact ties at score 0, where
 * fla's torch.topk order is unspecified: there the scores must agree slot by
 * slot (same multiset of selected scores); everywhere else the indices must be
 * identical, in the same order. */
Test(dsa_golden, indexer_selects_the_golden_keys) {
  golden g = gopen();
  at_tensor *qi = gread(&g, "inputs/q_idx", 0), *ki = gread(&g, "inputs/k_idx", 0),
            *w = gread(&g, "inputs/w_idx", 0);
  at_itensor *want = gread_int(&g, "outputs/indices");
  int64_t B = qi->shape[0], T = qi->shape[1], K = want->shape[2];
  double scale = 1 / sqrt((double)qi->shape[3]);
  at_itensor *got = at_dsa_topk(g.c, qi, ki, w, K, 0);
  cr_assert(got != NULL, "%s", at_errmsg());
  int64_t same_rows = 0, odd_rows = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      const int32_t *gr = got->data + (b * T + t) * K, *wr = want->data + (b * T + t) * K;
      int row_same = 1, tied = 0;
      for (int64_t i = 0; i < K; i++) {
        cr_assert((gr[i] < 0) == (wr[i] < 0), "row (%lld,%lld) slot %lld: -1 padding differs",
                  (long long)b, (long long)t, (long long)i);
        if (wr[i] < 0) continue;
        double sg = ref_index_score(qi, ki, w, scale, b, t, gr[i]);
        double sw = ref_index_score(qi, ki, w, scale, b, t, wr[i]);
        cr_expect(fabs(sg - sw) <= 1e-5 * fmax(1, fabs(sw)),
                  "row (%lld,%lld) slot %lld: score %.7g (key %d) vs fla %.7g (key %d)",
                  (long long)b, (long long)t, (long long)i, sg, gr[i], sw, wr[i]);
        int unique = 1; /* no other causal key scores within rounding of fla's pick */
        for (int64_t s = 0; s <= t; s++)
          if (s != wr[i] && fabs(ref_index_score(qi, ki, w, scale, b, t, s) - sw) <= 1e-5)
            unique = 0;
        if (unique) cr_expect(gr[i] == wr[i], "row (%lld,%lld) slot %lld: key %d vs fla %d",
                              (long long)b, (long long)t, (long long)i, gr[i], wr[i]);
        tied |= !unique;
        row_same &= gr[i] == wr[i];
      }
      same_rows += row_same;
      odd_rows += !row_same && !tied;
    }
  /* (68 of the 74 rows are identical; the rest differ only among tied keys) */
  cr_expect(odd_rows == 0 && same_rows > B * T / 2, "%lld identical rows, %lld differ without a tie",
            (long long)same_rows, (long long)odd_rows);
  gclose(&g);
}

/* The whole op: wherever our selection is fla's set, o equals fla's. */
Test(dsa_golden, indexer_plus_attention) {
  golden g = gopen();
  at_tensor *q = gread(&g, "inputs/q", 0), *k = gread(&g, "inputs/k", 0),
            *v = gread(&g, "inputs/v", 0), *qi = gread(&g, "inputs/q_idx", 0),
            *ki = gread(&g, "inputs/k_idx", 0), *w = gread(&g, "inputs/w_idx", 0);
  at_tensor *want = gread(&g, "outputs/o", 0);
  at_itensor *fla = gread_int(&g, "outputs/indices");
  at_itensor *sel;
  at_tensor *o = at_dsa(g.c, q, k, v, qi, ki, w, 8, NULL, &sel);
  cr_assert(o != NULL, "%s", at_errmsg());
  int64_t B = q->shape[0], T = q->shape[1], row = q->shape[2] * v->shape[3], checked = 0;
  for (int64_t r = 0; r < B * T; r++) {
    int same_set = 1;
    for (int64_t i = 0; i < 8; i++) {
      int found = 0;
      for (int64_t j = 0; j < 8; j++) found |= sel->data[r * 8 + i] == fla->data[r * 8 + j];
      same_set &= found;
    }
    if (!same_set) continue;
    AT_EXPECT_CLOSE(o->data + r * row, want->data + r * row, row, 1e-5, "o row");
    checked++;
  }
  cr_expect(checked > B * T * 3 / 4, /* 69 of 74 */ "only %lld rows share fla's set", (long long)checked);
  gclose(&g);
}

/* ---- thread count ------------------------------------------------------------------ */

typedef struct run_out {
  real *o, *dq, *dk, *dv, *loss, *dqi, *dki, *dw;
  int32_t *sel;
} run_out;

static real *dup(const real *x, int64_t n) {
  real *y = malloc((size_t)n * sizeof *y);
  memcpy(y, x, (size_t)n * sizeof *y);
  return y;
}

static run_out run_all(int threads, int sparse) {
  at_set_threads(threads);
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 150, HQ = 4, H = 1, D = 16, Dv = 8, HI = 2, DI = 8, topk = 24;
  at_tensor *q = AT_RANDN(c, 1, 1, B, T, HQ, D), *k = AT_RANDN(c, 2, 1, B, T, H, D),
            *v = AT_RANDN(c, 3, 1, B, T, H, Dv), *qi = AT_RANDN(c, 4, 1, B, T, HI, DI),
            *ki = AT_RANDN(c, 5, 1, B, T, DI), *w = AT_RANDN(c, 6, 1, B, T, HI);
  run_out r;
  at_itensor *sel;
  at_tensor *o = at_dsa(c, q, k, v, qi, ki, w, topk, NULL, &sel);
  at_dsa_loss_opts lo = {0, 0, sparse};
  at_tensor *L = at_dsa_indexer_loss(c, qi, ki, w, q, k, sel, &lo, NULL);
  cr_assert(o && L, "%s", at_errmsg());
  at_rng g = at_rng_make(9, 9);
  for (int64_t i = 0; i < o->size; i++) at_grad(c, o)[i] = (real)at_rng_normal(&g);
  at_grad(c, L)[0] = 1;
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  r.o = dup(o->data, o->size), r.dq = dup(q->grad, q->size), r.dk = dup(k->grad, k->size);
  r.dv = dup(v->grad, v->size), r.loss = dup(L->data, 1), r.dqi = dup(qi->grad, qi->size);
  r.dki = dup(ki->grad, ki->size), r.dw = dup(w->grad, w->size);
  r.sel = malloc((size_t)sel->size * sizeof *r.sel);
  memcpy(r.sel, sel->data, (size_t)sel->size * sizeof *r.sel);
  at_ctx_free(c);
  return r;
}

Test(dsa, results_do_not_depend_on_the_thread_count) {
  int before = at_threads();
  int64_t B = 2, T = 150, HQ = 4, D = 16, Dv = 8, HI = 2, DI = 8, topk = 24;
  for (int sparse = 0; sparse < 2; sparse++) {
    run_out a = run_all(1, sparse), b = run_all(3, sparse);
    cr_expect(memcmp(a.sel, b.sel, (size_t)(B * T * topk) * sizeof(int32_t)) == 0, "selection");
    cr_expect(memcmp(a.o, b.o, (size_t)(B * T * HQ * Dv) * sizeof(real)) == 0, "o");
    cr_expect(memcmp(a.dq, b.dq, (size_t)(B * T * HQ * D) * sizeof(real)) == 0, "dq");
    cr_expect(memcmp(a.dk, b.dk, (size_t)(B * T * D) * sizeof(real)) == 0, "dk");
    cr_expect(memcmp(a.dv, b.dv, (size_t)(B * T * Dv) * sizeof(real)) == 0, "dv");
    cr_expect(a.loss[0] == b.loss[0], "loss");
    cr_expect(memcmp(a.dqi, b.dqi, (size_t)(B * T * HI * DI) * sizeof(real)) == 0, "dq_idx");
    cr_expect(memcmp(a.dki, b.dki, (size_t)(B * T * DI) * sizeof(real)) == 0, "dk_idx");
    cr_expect(memcmp(a.dw, b.dw, (size_t)(B * T * HI) * sizeof(real)) == 0, "dw_idx");
    run_out *rs[] = {&a, &b};
    for (int i = 0; i < 2; i++) {
      free(rs[i]->o), free(rs[i]->dq), free(rs[i]->dk), free(rs[i]->dv), free(rs[i]->loss);
      free(rs[i]->dqi), free(rs[i]->dki), free(rs[i]->dw), free(rs[i]->sel);
    }
  }
  at_set_threads(before);
}

/* ---- fused vs naive, in float ------------------------------------------------------- */

Test(dsa, fused_ops_equal_their_naive_references_in_float) {
  at_ctx *c = at_ctx_new(0);
  check_fused_vs_naive(c, 600, 1e-5, 1e-4);
  at_ctx_free(c);
}
