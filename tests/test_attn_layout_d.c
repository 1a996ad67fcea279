/* The fused attention over every block-sparse layout, in double: a
 * central-difference gradcheck of the hand-written backward per layout
 * (several tiles of 4, ragged T, GQA, Dv != D, rows that see nothing), and
 * the fused op against the naive reference (dense mask from the predicate)
 * to 1e-12, values and gradients. */
#include "attn_layout_cases.h"

typedef struct gc_user {
  const at_attn_layout *L;
} gc_user;

static at_tensor *attn_fn(at_ctx *c, at_tensor **in, void *u) {
  at_attn_opts o = {.layout = ((gc_user *)u)->L};
  return at_attention(c, in[0], in[1], in[2], &o);
}

Test(layout_gradcheck, every_layout) {
  /* B, T, HQ, H, D, Dv, tile */
  const int64_t shapes[][7] = {{2, 23, 4, 2, 3, 2, 4}, {1, 18, 3, 1, 2, 3, 5}};
  for (int si = 0; si < AT_ARRAY_LEN(shapes); si++)
    for (int k = 0; k < LC_COUNT; k++) {
      const int64_t *s = shapes[si];
      at_ctx *c = at_ctx_new((size_t)4 << 20);
      lc_params p;
      gc_user u = {lc_build(c, (layout_case)k, s[0], s[1], s[2], s[3], s[6], &p)};
      cr_assert(u.L, "%s: %s", lc_names[k], at_errmsg());
      int64_t bad = 0, seen = 0; /* the layout is the pattern (as in float) and not empty */
      for (int64_t b = 0; b < s[0]; b++)
        for (int64_t hq = 0; hq < s[2]; hq++)
          for (int64_t i = 0; i < s[1]; i++)
            for (int64_t j = 0; j < s[1]; j++) {
              int want = lc_visible(u.L, (layout_case)k, &p, b, hq, i, j);
              bad += at_attn_layout_visible(u.L, b, hq, i, j) != want, seen += want;
            }
      cr_expect(bad == 0 && seen > 0, "%s: %lld pairs differ, %lld visible", lc_names[k],
                (long long)bad, (long long)seen);
      at_tensor *in[] = {AT_RANDN(c, 10 + (uint64_t)k, 1, s[0], s[1], s[2], s[4]),
                         AT_RANDN(c, 20 + (uint64_t)k, 1, s[0], s[1], s[3], s[4]),
                         AT_RANDN(c, 30 + (uint64_t)k, 1, s[0], s[1], s[3], s[5])};
      char what[96];
      snprintf(what, sizeof what, "attention over %s, shape %d", lc_names[k], si);
      AT_GRADCHECK(c, attn_fn, in, 3, &u, what);
      lc_free(&p);
      at_ctx_free(c);
    }
}

Test(layout_gradcheck, fused_equals_naive_in_double) {
  const int64_t B = 2, T = 70, HQ = 4, H = 2, D = 5, Dv = 3, blk = 8;
  for (int k = 0; k < LC_COUNT; k++) {
    at_ctx *c = at_ctx_new((size_t)16 << 20);
    lc_params p;
    at_attn_layout *L = lc_build(c, (layout_case)k, B, T, HQ, H, blk, &p);
    cr_assert(L);
    at_tensor *x[] = {AT_RANDN(c, 1, 1, B, T, HQ, D), AT_RANDN(c, 2, 1, B, T, H, D),
                      AT_RANDN(c, 3, 1, B, T, H, Dv)};
    at_attn_opts o = {.layout = L};
    real *res[2][4];
    int64_t sizes[4];
    for (int which = 0; which < 2; which++) {
      at_ctx_mark m = at_ctx_get_mark(c);
      for (int i = 0; i < 3; i++) x[i]->grad = NULL;
      at_tensor *out = (which ? at_attention_naive : at_attention)(c, x[0], x[1], x[2], &o);
      cr_assert(out, "%s", at_errmsg());
      at_fill_normal(at_grad(c, out), out->size, 9, 1, 0, 1);
      cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
      at_tensor *t[] = {out, x[0], x[1], x[2]};
      for (int i = 0; i < 4; i++) {
        sizes[i] = t[i]->size;
        res[which][i] = malloc((size_t)sizes[i] * sizeof(real));
        memcpy(res[which][i], i ? t[i]->grad : t[i]->data, (size_t)sizes[i] * sizeof(real));
      }
      at_ctx_rewind(c, m);
    }
    const char *names[] = {"o", "dq", "dk", "dv"};
    for (int i = 0; i < 4; i++) {
      char what[96];
      snprintf(what, sizeof what, "double fused vs naive, %s: %s", lc_names[k], names[i]);
      AT_EXPECT_CLOSE(res[0][i], res[1][i], sizes[i], 1e-12, what);
      free(res[0][i]), free(res[1][i]);
    }
    lc_free(&p);
    at_ctx_free(c);
  }
}
