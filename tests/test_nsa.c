/* ops/attention/nsa.c and the nsa mixer's selection in float: the selection
 * against a brute-force ranking (several block geometries, GQA), never a
 * future block, forced blocks present, no duplicates; the selected branch
 * (fused attention over at_attn_layout_selected) against plain loops with
 * the group's shared blocks; n_select covering every block equals full
 * causal attention (the selected branch alone, and the window branch with
 * window >= T). */
#include "testing.h"
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
  at_tensor *y = at_nsa_cmp_attention(c, q, kc, vc, o, 0, 0, &p);
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
  cr_assert(at_nsa_cmp_attention(c, q, kc, kc, &o, 0, 0, &p));
  at_itensor *all = at_nsa_select(c, p, B, H, HQ / H, T, 0, &o);
  for (int64_t t = 0; t < T; t++) {
    int64_t Ct = at_nsa_n_cmp(&o, t + 1);
    at_tensor *pt = NULL;
    if (Ct > 0)
      cr_assert(at_nsa_cmp_attention(c, at_slice(c, q, 1, t, 1), at_slice(c, kc, 1, 0, Ct), at_slice(c, kc, 1, 0, Ct),
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
