/* ops/attention/nsa.c and the nsa mixer's selection in float: the selection
 * against a brute-force ranking (several block geometries, GQA), never a
 * future block, forced blocks present, no duplicates; the selected branch
 * (fused attention over at_attn_layout_selected) against plain loops with
 * the group's shared blocks; n_select covering every block equals full
 * causal attention (the selected branch alone, and the window branch with
 * window >= T); the fused compressed attention against its autograd-op form
 * at training shapes (outputs, gradients, selection) and across thread
 * counts. */
#include "testing.h"
#include "core/threads.h"
#include "nsa_ref.h"
#include "ops/attention/attention.h"
#include "ops/ops.h"

/* Compressed-attention probabilities p [B, H, G T, C] of random q, kc. */
static at_tensor *random_p(at_ctx *c, int64_t B, int64_t T, int64_t HQ, int64_t H, int64_t D,
                           const at_nsa_blocks *o, uint64_t seed) {
  int64_t C = at_nsa_n_cmp(o, T);
  if (C == 0) return NULL;
  at_tensor *q = AT_RANDN(c, seed, 1.5, B, T, HQ, D), *kc = AT_RANDN(c, seed + 1, 1.5, B, C, H, D),
            *vc = AT_RANDN(c, seed + 2, 1, B, C, H, D), *p;
  at_tensor *y = at_nsa_cmp_attention_naive(c, q, kc, vc, o, 0, 0, &p);
  cr_assert(y && p, "%s", at_errmsg());
  return p;
}

/* {T, HQ, H, l, d, l', n, n_local} */
static const int64_t sel_cases[][8] = {
  {29, 4, 2, 4, 2, 4, 3, 1}, {40, 2, 1, 8, 4, 8, 4, 2}, {33, 3, 3, 4, 2, 8, 2, 2},
  {50, 4, 1, 6, 3, 5, 5, 1}, /* d does not divide l': overlap by tokens */
  {17, 2, 2, 4, 4, 4, 8, 0}, /* n beyond the blocks: -1 padding; no local block */
  {3, 2, 1, 4, 2, 2, 2, 1},  /* T < l: no compressed block, forced and index order */
};

static at_nsa_blocks blocks_of(const int64_t *z) {
  return (at_nsa_blocks){.cmp_block = z[3], .cmp_stride = z[4], .sel_block = z[5], .n_select = z[6], .n_local = z[7]};
}

Test(nsa_select, equals_brute_force_ranking) {
  at_ctx *c = at_ctx_new(0);
  for (int k = 0; k < AT_ARRAY_LEN(sel_cases); k++) {
    const int64_t *z = sel_cases[k];
    int64_t B = 2, T = z[0], HQ = z[1], H = z[2], G = HQ / H;
    at_nsa_blocks o = blocks_of(z);
    at_tensor *p = random_p(c, B, T, HQ, H, 4, &o, 10 + k);
    at_itensor *sel = at_nsa_select(c, p, B, H, G, T, 0, &o);
    cr_assert(sel, "%s", at_errmsg());
    cr_assert(sel->ndim == 4 && sel->shape[0] == B && sel->shape[1] == H && sel->shape[2] == T && sel->shape[3] == o.n_select);
    int32_t *want = malloc((size_t)sel->size * sizeof *want);
    ref_select(p, B, H, G, T, &o, want);
    int64_t bad = -1;
    for (int64_t e = 0; e < sel->size && bad < 0; e++)
      if (sel->data[e] != want[e]) bad = e;
    cr_expect(bad < 0, "case %d: selection differs at %lld: %d vs %d", k, (long long)bad,
              bad >= 0 ? sel->data[bad] : 0, bad >= 0 ? want[bad] : 0);
    free(want);
  }
  at_ctx_free(c);
}

/* A decoding step's selection (Tq = 1 at pos0) is the forward's row. */
Test(nsa_select, step_rows_equal_forward_rows) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 23, HQ = 4, H = 2, D = 4;
  at_nsa_blocks o = {.cmp_block = 4, .cmp_stride = 2, .sel_block = 4, .n_select = 3, .n_local = 1};
  int64_t C = at_nsa_n_cmp(&o, T);
  at_tensor *q = AT_RANDN(c, 1, 1.5, B, T, HQ, D), *kc = AT_RANDN(c, 2, 1.5, B, C, H, D), *p;
  cr_assert(at_nsa_cmp_attention_naive(c, q, kc, kc, &o, 0, 0, &p));
  at_itensor *all = at_nsa_select(c, p, B, H, HQ / H, T, 0, &o);
  for (int64_t t = 0; t < T; t++) {
    int64_t Ct = at_nsa_n_cmp(&o, t + 1);
    at_tensor *pt = NULL;
    if (Ct > 0)
      cr_assert(at_nsa_cmp_attention_naive(c, at_slice(c, q, 1, t, 1), at_slice(c, kc, 1, 0, Ct), at_slice(c, kc, 1, 0, Ct),
                                     &o, t, 0, &pt));
    at_itensor *one = at_nsa_select(c, pt, B, H, HQ / H, 1, t, &o);
    cr_assert(one && one->shape[2] == t + 1);
    for (int64_t bh = 0; bh < B * H; bh++)
      for (int64_t r = 0; r < o.n_select; r++) {
        cr_expect(one->data[(bh * (t + 1) + t) * o.n_select + r] == all->data[(bh * T + t) * o.n_select + r],
                  "t %lld bh %lld slot %lld", (long long)t, (long long)bh, (long long)r);
        for (int64_t u = 0; u < t; u++) cr_expect(one->data[(bh * (t + 1) + u) * o.n_select + r] == -1);
      }
  }
  at_ctx_free(c);
}

Test(nsa_select, never_a_future_block_forced_present_no_duplicates) {
  at_ctx *c = at_ctx_new(0);
  for (int k = 0; k < AT_ARRAY_LEN(sel_cases); k++) {
    const int64_t *z = sel_cases[k];
    int64_t B = 2, T = z[0], HQ = z[1], H = z[2], n = z[6];
    at_nsa_blocks o = blocks_of(z);
    at_itensor *sel = at_nsa_select(c, random_p(c, B, T, HQ, H, 4, &o, 40 + k), B, H, HQ / H, T, 0, &o);
    cr_assert(sel);
    for (int64_t bh = 0; bh < B * H; bh++)
      for (int64_t t = 0; t < T; t++) {
        const int32_t *s = sel->data + (bh * T + t) * n;
        int64_t jt = t / o.sel_block, used = 0, cur = 0, first = 0;
        for (int64_t r = 0; r < n; r++) {
          cr_expect(s[r] <= jt, "case %d: t %lld selects future block %d", k, (long long)t, s[r]);
          if (s[r] < 0) continue;
          used++, cur |= s[r] == jt, first |= s[r] == 0;
          for (int64_t r2 = 0; r2 < r; r2++) cr_expect(s[r2] != s[r], "case %d: duplicate block", k);
        }
        cr_expect(used == (jt + 1 < n ? jt + 1 : n), "case %d t %lld: %lld blocks", k, (long long)t, (long long)used);
        cr_expect((cur || o.n_local == 0) && (first || n < 2 + (o.n_local > 0) - 1), "case %d t %lld: the current and first blocks are forced", k, (long long)t);
      }
  }
  at_ctx_free(c);
}

/* The selected branch: every query head of a kv group attends to the group's
 * blocks (GQA groups share the selection), as plain loops do. */
Test(nsa_selected, fused_equals_loops_group_shares_blocks) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 37, HQ = 6, H = 2, D = 8;
  at_nsa_blocks o = {.cmp_block = 4, .cmp_stride = 2, .sel_block = 4, .n_select = 3, .n_local = 1};
  at_itensor *sel = at_nsa_select(c, random_p(c, B, T, HQ, H, D, &o, 3), B, H, HQ / H, T, 0, &o);
  at_tensor *q = AT_RANDN(c, 5, 1, B, T, HQ, D), *k = AT_RANDN(c, 6, 1, B, T, H, D), *v = AT_RANDN(c, 7, 1, B, T, H, D);
  at_attn_opts ao = {.layout = at_attn_layout_selected(c, T, 1, o.sel_block, sel, HQ / H)};
  at_tensor *y = at_attention(c, q, k, v, &ao);
  cr_assert(y, "%s", at_errmsg());
  double *want = malloc((size_t)y->size * sizeof *want);
  ref_selected_attention(q, k, v, sel, o.sel_block, want);
  real *wr = malloc((size_t)y->size * sizeof *wr);
  for (int64_t e = 0; e < y->size; e++) wr[e] = (real)want[e];
  AT_EXPECT_CLOSE(y->data, wr, y->size, 1e-5, "selected branch");
  /* and the selection is not everything (the comparison would be empty) */
  at_tensor *full = at_attention(c, q, k, v, NULL);
  cr_expect(at_test_rel_err(y->data, full->data, y->size) > 1e-2);
  free(want), free(wr);
  at_ctx_free(c);
}

/* n_select covering every block: the selected branch is full causal
 * attention (and the window branch with window >= T is too). */
Test(nsa_selected, all_blocks_equal_full_attention) {
  at_ctx *c = at_ctx_new(0);
  int64_t B = 2, T = 21, HQ = 4, H = 2, D = 8;
  at_nsa_blocks o = {.cmp_block = 4, .cmp_stride = 2, .sel_block = 4, .n_select = 6, .n_local = 1};
  at_itensor *sel = at_nsa_select(c, random_p(c, B, T, HQ, H, D, &o, 3), B, H, HQ / H, T, 0, &o);
  at_tensor *q = AT_RANDN(c, 5, 1, B, T, HQ, D), *k = AT_RANDN(c, 6, 1, B, T, H, D), *v = AT_RANDN(c, 7, 1, B, T, H, D);
  at_attn_opts so = {.layout = at_attn_layout_selected(c, T, 1, o.sel_block, sel, HQ / H)}, wo = {.window = T};
  at_tensor *y = at_attention(c, q, k, v, &so), *w = at_attention(c, q, k, v, &wo), *full = at_attention_naive(c, q, k, v, NULL);
  cr_assert(y && w && full, "%s", at_errmsg());
  AT_EXPECT_CLOSE(y->data, full->data, y->size, 1e-5, "selected, all blocks");
  AT_EXPECT_CLOSE(w->data, full->data, w->size, 1e-5, "window >= T");
  at_ctx_free(c);
}

/* ---- the fused compressed attention against the naive one ---------------------- */

typedef struct cmp_out {
  real *r[4]; /* o, dq, dkc, dvc */
  int64_t n[4];
  at_itensor sel;
} cmp_out;

/* Forward (with the selection: fused from the kernel, naive from p) and
 * backward seeded with a fixed dO, at `threads` threads; copies out. */
static cmp_out cmp_run(int naive, int threads, int64_t B, int64_t Tq, int64_t HQ, int64_t H, int64_t D,
                       int64_t Dv, int64_t pos0, const at_nsa_blocks *o) {
  int saved = at_threads();
  at_set_threads(threads);
  at_ctx *c = at_ctx_new(0);
  int64_t C = at_nsa_n_cmp(o, pos0 + Tq);
  at_tensor *x[] = {AT_RANDN(c, Tq + 1, 1.5, B, Tq, HQ, D), AT_RANDN(c, Tq + 2, 1.5, B, C, H, D),
                    AT_RANDN(c, Tq + 3, 1, B, C, H, Dv)}, *p = NULL, *y;
  at_itensor *sel = NULL;
  if (naive) {
    y = at_nsa_cmp_attention_naive(c, x[0], x[1], x[2], o, pos0, 0, &p);
    sel = p ? at_nsa_select(c, p, B, H, HQ / H, Tq, pos0, o) : NULL;
  } else {
    y = at_nsa_cmp_attention(c, x[0], x[1], x[2], o, pos0, 0, &sel);
  }
  cr_assert(y && sel, "%s", at_errmsg());
  at_fill_normal(at_grad(c, y), y->size, Tq + 4, 1, 0, 1);
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  cmp_out r = {.sel = *sel};
  for (int i = 0; i < 4; i++) {
    const real *d = i ? x[i - 1]->grad : y->data;
    r.n[i] = i ? x[i - 1]->size : y->size;
    r.r[i] = malloc((size_t)r.n[i] * sizeof(real));
    memcpy(r.r[i], d, (size_t)r.n[i] * sizeof(real));
  }
  r.sel.data = malloc((size_t)sel->size * sizeof(int32_t));
  memcpy(r.sel.data, sel->data, (size_t)sel->size * sizeof(int32_t));
  at_ctx_free(c);
  at_set_threads(saved);
  return r;
}

static void cmp_free(cmp_out *r) {
  for (int i = 0; i < 4; i++) free(r->r[i]);
  free(r->sel.data);
}

/* {B, Tq, HQ, H, D, Dv, pos0, l, d, l', n, n_local}: the training shapes
 * (B 16, ragged T, several query blocks of 32), GQA 2 and 4, MHA, Dv != D,
 * a decoding offset; the first rows of each see no complete block; d does
 * not divide l' in the third. */
static const int64_t cmp_cases[][12] = {
  {16, 203, 4, 2, 16, 16, 0, 8, 4, 16, 4, 2}, {16, 77, 8, 2, 8, 12, 0, 16, 8, 32, 3, 1},
  {3, 150, 2, 2, 8, 8, 0, 6, 3, 5, 5, 1},     {2, 5, 4, 1, 4, 4, 37, 4, 2, 8, 3, 2},
};

Test(nsa_cmp_attention, fused_equals_naive_at_training_shapes) {
  for (int k = 0; k < AT_ARRAY_LEN(cmp_cases); k++) {
    const int64_t *z = cmp_cases[k];
    at_nsa_blocks o = {.cmp_block = z[7], .cmp_stride = z[8], .sel_block = z[9], .n_select = z[10], .n_local = z[11]};
    cmp_out f = cmp_run(0, 2, z[0], z[1], z[2], z[3], z[4], z[5], z[6], &o);
    cmp_out n = cmp_run(1, 2, z[0], z[1], z[2], z[3], z[4], z[5], z[6], &o);
    const char *names[] = {"o", "dq", "dkc", "dvc"};
    for (int i = 0; i < 4; i++) {
      char what[96];
      snprintf(what, sizeof what, "case %d: %s", k, names[i]);
      AT_EXPECT_CLOSE(f.r[i], n.r[i], f.n[i], 2e-5, what);
    }
    int64_t ns = z[0] * z[3] * (z[6] + z[1]) * o.n_select, bad = -1;
    for (int64_t e = 0; e < ns && bad < 0; e++)
      if (f.sel.data[e] != n.sel.data[e]) bad = e;
    cr_expect(bad < 0, "case %d: the fused selection differs at %lld", k, (long long)bad);
    cmp_free(&f), cmp_free(&n);
  }
}

/* One thread per (b, kv head), its dKc / dVc rows its own: 1 and 2 threads
 * give the same bits. */
Test(nsa_cmp_attention, fused_independent_of_thread_count) {
  const int64_t *z = cmp_cases[0];
  at_nsa_blocks o = {.cmp_block = z[7], .cmp_stride = z[8], .sel_block = z[9], .n_select = z[10], .n_local = z[11]};
  cmp_out a = cmp_run(0, 1, z[0], z[1], z[2], z[3], z[4], z[5], z[6], &o);
  cmp_out b = cmp_run(0, 2, z[0], z[1], z[2], z[3], z[4], z[5], z[6], &o);
  for (int i = 0; i < 4; i++)
    cr_expect(memcmp(a.r[i], b.r[i], (size_t)a.n[i] * sizeof(real)) == 0, "result %d depends on the thread count", i);
  cr_expect(memcmp(a.sel.data, b.sel.data, (size_t)(z[0] * z[3] * z[1] * o.n_select) * sizeof(int32_t)) == 0);
  cmp_free(&a), cmp_free(&b);
}
