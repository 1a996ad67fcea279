/* ops/attention/layout.c and the fused attention over its layouts, in float:
 * every constructor's predicate against the papers' definitions (written out
 * in attn_layout_cases.h), the tile lists against the predicate (a tile per
 * block with a visible pair and no other, kinds that never hide or show a
 * wrong pair, the row masks), the fused op against the naive reference with
 * the dense mask, forward and every gradient, at B >= 2, several tiles,
 * ragged T, GQA; the tiles the forward and backward visit, counted; W >= T
 * and all-global layouts equal causal bit for bit; rows that see nothing;
 * thread-count independence; the decode step; bad layouts. */
#include "attn_layout_cases.h"
#include "core/threads.h"

/* The shapes the suites run: several tiles (blk) and a ragged T. */
typedef struct lshape {
  int64_t B, T, HQ, H, D, Dv, blk;
} lshape;

static const lshape shapes[] = {
    {2, 203, 4, 2, 32, 24, 16}, /* 13 ragged tiles of 16; GQA; Dv not a whole vector */
    {3, 150, 2, 1, 16, 16, 64}, /* the default tiles; MQA */
};

/* ---- the layouts themselves ---------------------------------------------------- */

Test(layout, definitions) {
  for (int si = 0; si < AT_ARRAY_LEN(shapes); si++)
    for (int k = 0; k < LC_COUNT; k++) {
      const lshape *s = &shapes[si];
      at_ctx *c = at_ctx_new((size_t)4 << 20);
      lc_params p;
      at_attn_layout *L = lc_build(c, (layout_case)k, s->B, s->T, s->HQ, s->H, s->blk, &p);
      cr_assert(L, "%s: %s", lc_names[k], at_errmsg());
      int64_t bad = 0, seen = 0;
      for (int64_t b = 0; b < s->B; b++)
        for (int64_t hq = 0; hq < s->HQ; hq++)
          for (int64_t i = 0; i < s->T; i++)
            for (int64_t j = 0; j < s->T; j++) {
              int want = lc_visible(L, (layout_case)k, &p, b, hq, i, j);
              bad += at_attn_layout_visible(L, b, hq, i, j) != want;
              seen += want;
            }
      cr_expect(bad == 0, "%s (shape %d): %lld pairs differ from the definition", lc_names[k], si,
                (long long)bad);
      /* (the second shape has only 3 blocks: BigBird and fixed fill them) */
      cr_expect(seen > 0 && (k == LC_CAUSAL || si > 0 || seen < s->B * s->HQ * s->T * (s->T + 1) / 2),
                "%s: the pattern should be sparse but not empty (%lld pairs)", lc_names[k],
                (long long)seen);
      lc_free(&p);
      at_ctx_free(c);
    }
}

/* Visible pairs of the tile (r, kb) of (b, hq), by the predicate. */
static int64_t pairs_in(const at_attn_layout *L, int64_t b, int64_t hq, int64_t r, int64_t kb,
                        int64_t *causal) {
  int64_t n = 0;
  *causal = 0;
  for (int64_t i = r * L->bq; i < AT_MIN(L->T, (r + 1) * L->bq); i++)
    for (int64_t j = kb * L->bk; j < AT_MIN(L->T, (kb + 1) * L->bk); j++) {
      n += at_attn_layout_visible(L, b, hq, i, j);
      *causal += j <= i;
    }
  return n;
}

/* Every (b, hq): the list of query block r holds exactly the key blocks
 * with a visible pair, ascending; FULL tiles have every pair visible, CAUSAL
 * ones exactly j <= i, MASKED ones get the predicate from the row masks. */
static void check_tiles(const at_attn_layout *L, int64_t B, int64_t HQ, const char *name) {
  int64_t wrong = 0, brute = 0;
  unsigned char vis[256];
  for (int64_t b = 0; b < B; b++)
    for (int64_t hq = 0; hq < HQ; hq++) {
      int64_t s = at_attn_layout_set(L, b, hq);
      for (int64_t r = 0; r < L->nqb; r++) {
        int64_t e = L->row[s * L->nqb + r], e1 = L->row[s * L->nqb + r + 1];
        for (int64_t kb = 0; kb < L->nkb; kb++) {
          int64_t causal, n = pairs_in(L, b, hq, r, kb, &causal);
          brute += n > 0;
          int listed = e < e1 && L->col[e] == kb;
          if (listed != (n > 0)) {
            wrong++;
            continue;
          }
          if (!listed) continue;
          int kind = L->kind[e++];
          int64_t i0 = r * L->bq, j0 = kb * L->bk, nc = AT_MIN(L->bk, L->T - j0);
          int64_t nr = AT_MIN(L->bq, L->T - i0);
          if (kind == AT_TILE_FULL) wrong += n != nr * nc || j0 + nc - 1 > i0;
          if (kind == AT_TILE_CAUSAL) wrong += n != causal;
          for (int64_t x = 0; kind == AT_TILE_MASKED && x < nr; x++) {
            at_attn_layout_row(L, b, hq, i0 + x, j0, nc, vis);
            for (int64_t y = 0; y < nc; y++)
              wrong += vis[y] != at_attn_layout_visible(L, b, hq, i0 + x, j0 + y);
          }
        }
        wrong += e != e1; /* entries left over: not ascending or duplicated */
      }
    }
  cr_expect(wrong == 0, "%s: %lld tile list errors", name, (long long)wrong);
  cr_expect(at_attn_layout_tiles(L, B, HQ) == brute, "%s: %lld tiles listed, %lld blocks visible",
            name, (long long)at_attn_layout_tiles(L, B, HQ), (long long)brute);
}

Test(layout, tiles_match_the_predicate) {
  for (int si = 0; si < AT_ARRAY_LEN(shapes); si++)
    for (int k = 0; k < LC_COUNT; k++) {
      const lshape *s = &shapes[si];
      at_ctx *c = at_ctx_new((size_t)4 << 20);
      lc_params p;
      at_attn_layout *L = lc_build(c, (layout_case)k, s->B, s->T, s->HQ, s->H, s->blk, &p);
      cr_assert(L, "%s", at_errmsg());
      check_tiles(L, s->B, s->HQ, lc_names[k]);
      lc_free(&p);
      at_ctx_free(c);
    }
}

/* A rule's definition, written out again. */
static int rule_def(const at_attn_rule *r, int64_t i, int64_t j) {
  if (j > i) return 0;
  int64_t d = r->dilation ? r->dilation : 1, l = r->block;
  return r->causal || (r->window && (i - j) % d == 0 && (i - j) / d < r->window) ||
         (r->stride && (i - j) % r->stride == 0) || (l && r->same_block && i / l == j / l) ||
         (l && r->summary && j % l >= l - r->summary - r->shift && j % l < l - r->shift);
}

/* Every term over a sweep of its parameters and of tile shapes (square,
 * tall, wide, odd), alone and with globals: the predicate is the
 * definition and the tiles match the predicate (edges such as a window
 * ending exactly on a tile corner are all hit). */
Test(layout, rule_sweep) {
  const int64_t T = 37, tiles[][2] = {{4, 4}, {8, 4}, {3, 5}, {16, 16}, {1, 7}};
  at_attn_rule rules[600];
  int n = 0;
  rules[n++] = (at_attn_rule){.causal = 1};
  for (int64_t W = 1; W <= 20; W++)
    for (int64_t d = 0; d <= 4; d++) rules[n++] = (at_attn_rule){.window = W, .dilation = d};
  for (int64_t l = 1; l <= 12; l++) rules[n++] = (at_attn_rule){.stride = l};
  for (int64_t l = 1; l <= 12; l++) rules[n++] = (at_attn_rule){.block = l, .same_block = 1};
  for (int64_t l = 1; l <= 9; l++)
    for (int64_t cs = 1; cs <= l; cs++)
      for (int64_t sh = 0; sh + cs <= l; sh++)
        rules[n++] = (at_attn_rule){.block = l, .summary = cs, .shift = sh};
  rules[n++] = (at_attn_rule){.window = 3, .stride = 7, .block = 5, .summary = 1, .shift = 1};
  rules[n++] = (at_attn_rule){.window = 4, .dilation = 3, .block = 6, .same_block = 1};
  cr_assert(n <= AT_ARRAY_LEN(rules));
  unsigned char glob[2 * T];
  for (int64_t t = 0; t < 2 * T; t++) glob[t] = lc_pick(9, 9, t, 7) == 0;
  int64_t wrong = 0;
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  for (int ri = 0; ri < n; ri++)
    for (int ti = 0; ti < AT_ARRAY_LEN(tiles); ti++)
      for (int withg = 0; withg < 2; withg++) {
        at_ctx_mark m = at_ctx_get_mark(c);
        at_attn_pattern pt = {.T = T, .block_q = tiles[ti][0], .block_k = tiles[ti][1],
                              .rules = &rules[ri], .n_rules = 1, .batch = withg ? 2 : 1,
                              .global = withg ? glob : NULL, .global_rows = 2};
        at_attn_layout *L = at_attn_layout_new(c, &pt);
        cr_assert(L, "%s", at_errmsg());
        for (int64_t b = 0; b < pt.batch; b++)
          for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++) {
              int want = rule_def(&rules[ri], i, j) ||
                         (withg && j <= i && (glob[b * T + i] || glob[b * T + j]));
              wrong += at_attn_layout_visible(L, b, 0, i, j) != want;
            }
        char what[64];
        snprintf(what, sizeof what, "rule %d, tiles %lldx%lld, globals %d", ri,
                 (long long)tiles[ti][0], (long long)tiles[ti][1], withg);
        check_tiles(L, pt.batch, 1, what);
        at_ctx_rewind(c, m);
      }
  cr_expect(wrong == 0, "%lld pairs differ from the rules' definitions", (long long)wrong);
  at_ctx_free(c);
}

/* The row masks on arbitrary key ranges (across tiles, past T). */
Test(layout, row_masks_equal_the_predicate) {
  const lshape *s = &shapes[0];
  unsigned char vis[300];
  for (int k = 0; k < LC_COUNT; k++) {
    at_ctx *c = at_ctx_new((size_t)4 << 20);
    lc_params p;
    at_attn_layout *L = lc_build(c, (layout_case)k, s->B, s->T, s->HQ, s->H, s->blk, &p);
    cr_assert(L);
    int64_t wrong = 0;
    for (int64_t x = 0; x < 400; x++) {
      int64_t b = x % s->B, hq = x / 2 % s->HQ, i = lc_pick(3, 5, x, s->T);
      int64_t j0 = lc_pick(3, 6, x, s->T), n = 1 + lc_pick(3, 7, x, 250);
      at_attn_layout_row(L, b, hq, i, j0, n, vis);
      for (int64_t y = 0; y < n; y++)
        wrong += vis[y] != (j0 + y < s->T && at_attn_layout_visible(L, b, hq, i, j0 + y));
    }
    cr_expect(wrong == 0, "%s: %lld row-mask entries wrong", lc_names[k], (long long)wrong);
    lc_free(&p);
    at_ctx_free(c);
  }
}

/* BigBird's random blocks: from between the globals and the window, as many
 * as asked (or all there are), reproducible from the seed, different per
 * head and per seed. */
Test(layout, bigbird_random_blocks) {
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  const int64_t T = 500, blk = 16, w = 2, g = 2, nr = 3, HQ = 4;
  at_attn_layout *a = at_attn_layout_bigbird(c, T, blk, w, g, nr, HQ, 1);
  at_attn_layout *a2 = at_attn_layout_bigbird(c, T, blk, w, g, nr, HQ, 1);
  at_attn_layout *o = at_attn_layout_bigbird(c, T, blk, w, g, nr, HQ, 2);
  cr_assert(a && a2 && o);
  int64_t heads_differ = 0, seeds_differ = 0;
  for (int64_t h = 0; h < HQ; h++)
    for (int64_t r = 0; r < a->nqb; r++) {
      int64_t rnd = 0, e0 = a->listed_row[h * a->nqb + r], e1 = a->listed_row[h * a->nqb + r + 1];
      for (int64_t e = e0; e < e1; e++) {
        int64_t kb = a->listed_col[e];
        cr_assert(kb <= r, "block %lld after query block %lld", (long long)kb, (long long)r);
        if (kb < g || kb >= r - w) continue;
        rnd++;
      }
      cr_expect(rnd == AT_MIN(nr, AT_MAX(0, r - w - g)), "head %lld block %lld: %lld random blocks",
                (long long)h, (long long)r, (long long)rnd);
      cr_expect(e1 - e0 == a2->listed_row[h * a->nqb + r + 1] - a2->listed_row[h * a->nqb + r] &&
                memcmp(a->listed_col + e0, a2->listed_col + e0, (size_t)(e1 - e0) * 4) == 0,
                "same seed, different draw");
      seeds_differ += memcmp(a->listed_col + e0, o->listed_col + o->listed_row[h * a->nqb + r],
                             (size_t)(e1 - e0) * 4) != 0;
      if (h > 0)
        heads_differ += memcmp(a->listed_col + e0, a->listed_col + a->listed_row[r],
                               (size_t)(e1 - e0) * 4) != 0;
    }
  cr_expect(heads_differ > 10 && seeds_differ > 10, "draws differ over heads %lld, seeds %lld",
            (long long)heads_differ, (long long)seeds_differ);
  at_ctx_free(c);
}

/* ---- the fused op over the layouts --------------------------------------------- */

typedef struct lrun {
  real *r[4]; /* o, dq, dk, dv */
  int64_t n[4];
  at_attn_stats stats;
} lrun;

static void lrun_free(lrun *r) {
  for (int i = 0; i < 4; i++) free(r->r[i]);
}

/* Forward and backward of `op` over the inputs of shape s (seeded) with
 * upstream gradient dout (NULL: random). */
static lrun run_op(at_tensor *(*op)(at_ctx *, at_tensor *, at_tensor *, at_tensor *,
                                    const at_attn_opts *),
                   at_ctx *c, const lshape *s, const at_attn_layout *L, const real *dout) {
  at_ctx_mark m = at_ctx_get_mark(c);
  at_tensor *x[] = {AT_RANDN(c, 1, 1, s->B, s->T, s->HQ, s->D), AT_RANDN(c, 2, 1, s->B, s->T, s->H, s->D),
                    AT_RANDN(c, 3, 1, s->B, s->T, s->H, s->Dv)};
  lrun r = {0};
  at_attn_opts o = {.layout = L, .stats = &r.stats};
  at_tensor *out = op(c, x[0], x[1], x[2], &o);
  cr_assert(out, "%s", at_errmsg());
  real *g = at_grad(c, out);
  if (dout) memcpy(g, dout, (size_t)out->size * sizeof(real));
  else at_fill_normal(g, out->size, 4, 1, 0, 1);
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  at_tensor *t[] = {out, x[0], x[1], x[2]};
  for (int i = 0; i < 4; i++) {
    r.n[i] = t[i]->size;
    r.r[i] = malloc((size_t)r.n[i] * sizeof(real));
    memcpy(r.r[i], i ? t[i]->grad : t[i]->data, (size_t)r.n[i] * sizeof(real));
  }
  at_ctx_rewind(c, m);
  return r;
}

static const char *const outs[] = {"o", "dq", "dk", "dv"};

/* Fused = naive (dense mask from the predicate), o and every gradient; the
 * tiles visited by the forward and by the backward are those listed, which
 * are the blocks holding a visible pair (tiles_match_the_predicate). */
Test(layout, fused_equals_naive_and_visits_the_listed_tiles) {
  for (int si = 0; si < AT_ARRAY_LEN(shapes); si++)
    for (int k = 0; k < LC_COUNT; k++) {
      const lshape *s = &shapes[si];
      at_ctx *c = at_ctx_new((size_t)16 << 20);
      lc_params p;
      at_attn_layout *L = lc_build(c, (layout_case)k, s->B, s->T, s->HQ, s->H, s->blk, &p);
      cr_assert(L);
      lrun f = run_op(at_attention, c, s, L, NULL), n = run_op(at_attention_naive, c, s, L, NULL);
      for (int i = 0; i < 4; i++) {
        char what[96];
        snprintf(what, sizeof what, "%s shape %d: %s", lc_names[k], si, outs[i]);
        AT_EXPECT_CLOSE(f.r[i], n.r[i], f.n[i], 1e-4, what);
      }
      int64_t want = at_attn_layout_tiles(L, s->B, s->HQ);
      cr_expect(f.stats.forward_tiles == want && f.stats.backward_tiles == want,
                "%s: visited %lld forward and %lld backward tiles, the layout lists %lld",
                lc_names[k], (long long)f.stats.forward_tiles, (long long)f.stats.backward_tiles,
                (long long)want);
      cr_expect(n.stats.forward_tiles == 0, "the naive op visits no tiles");
      lrun_free(&f), lrun_free(&n), lc_free(&p);
      at_ctx_free(c);
    }
}

/* The tiles of the plain causal and window calls: the lower triangle of
 * blocks, and the 2 or 3 key blocks a window of 100 touches per query block. */
Test(layout, tile_counts) {
  const lshape s = {2, 1000, 2, 1, 8, 8, 64};
  at_ctx *c = at_ctx_new((size_t)16 << 20);
  int64_t nqb = (s.T + 63) / 64, causal = s.B * s.HQ * nqb * (nqb + 1) / 2, win = 0;
  for (int64_t q = 0; q < nqb; q++) win += q - AT_MAX(0, q * 64 - 99) / 64 + 1;
  win *= s.B * s.HQ;
  lrun r = run_op(at_attention, c, &s, NULL, NULL);
  cr_expect(r.stats.forward_tiles == causal && r.stats.backward_tiles == causal,
            "causal: %lld tiles, want %lld", (long long)r.stats.forward_tiles, (long long)causal);
  lrun w = run_op(at_attention, c, &s, at_attn_layout_window(c, s.T, 100), NULL);
  cr_expect(w.stats.forward_tiles == win && w.stats.backward_tiles == win,
            "window: %lld tiles, want %lld", (long long)w.stats.forward_tiles, (long long)win);
  lrun_free(&r), lrun_free(&w);
  at_ctx_free(c);
}

static int same(const lrun *a, const lrun *b) {
  for (int i = 0; i < 4; i++)
    if (memcmp(a->r[i], b->r[i], (size_t)a->n[i] * sizeof(real))) return 0;
  return 1;
}

/* A window of at least T, and a Longformer layout whose every position is
 * global, are causal attention: the same tiles, kinds and bits. */
Test(layout, window_at_least_T_and_all_global_equal_causal) {
  const lshape *s = &shapes[1];
  at_ctx *c = at_ctx_new((size_t)16 << 20);
  lrun causal = run_op(at_attention, c, s, at_attn_layout_causal(c, s->T), NULL);
  lrun none = run_op(at_attention, c, s, NULL, NULL);
  cr_expect(same(&causal, &none), "the causal layout differs from no layout");
  for (int64_t W = s->T; W <= s->T + 5; W += 5) {
    lrun w = run_op(at_attention, c, s, at_attn_layout_window(c, s->T, W), NULL);
    cr_expect(same(&causal, &w), "window %lld differs from causal", (long long)W);
    lrun_free(&w);
  }
  unsigned char *all = malloc((size_t)(s->B * s->T));
  memset(all, 1, (size_t)(s->B * s->T));
  const int64_t dil[] = {2, 3};
  at_attn_layout *lf = at_attn_layout_longformer(c, s->T, 3, s->HQ, dil, s->B, all);
  lrun g = run_op(at_attention, c, s, lf, NULL);
  cr_expect(same(&causal, &g), "an all-global layout differs from causal");
  all[5] = all[20] = 0; /* and two non-global positions change the result: 20 cannot see 5 */
  lrun g1 = run_op(at_attention, c, s, at_attn_layout_longformer(c, s->T, 3, s->HQ, dil, s->B, all), NULL);
  cr_expect(!same(&causal, &g1));
  free(all);
  lrun_free(&g), lrun_free(&g1), lrun_free(&causal), lrun_free(&none);
  at_ctx_free(c);
}

/* Query rows that see no key (the selected case leaves every 5th query block
 * empty): o = 0, and they pass no gradient: with the upstream gradient on
 * those rows only, every input gradient is exactly 0. */
Test(layout, rows_that_see_nothing) {
  for (int k = LC_SELECTED; k <= LC_SELECTED_ROWS; k++) {
    const lshape *s = &shapes[0];
    at_ctx *c = at_ctx_new((size_t)16 << 20);
    lc_params p;
    at_attn_layout *L = lc_build(c, (layout_case)k, s->B, s->T, s->HQ, s->H, s->blk, &p);
    cr_assert(L);
    int64_t no = s->B * s->T * s->HQ * s->Dv, empty = 0;
    real *dout = calloc((size_t)no, sizeof(real));
    unsigned char *row_empty = calloc((size_t)(s->B * s->T * s->HQ), 1);
    for (int64_t b = 0; b < s->B; b++)
      for (int64_t i = 0; i < s->T; i++)
        for (int64_t hq = 0; hq < s->HQ; hq++) {
          int any = 0;
          for (int64_t j = 0; j <= i; j++) any |= at_attn_layout_visible(L, b, hq, i, j);
          if (any) continue;
          empty++;
          row_empty[(b * s->T + i) * s->HQ + hq] = 1;
          for (int64_t e = 0; e < s->Dv; e++) dout[((b * s->T + i) * s->HQ + hq) * s->Dv + e] = 1;
        }
    cr_assert(empty > 0, "%s: no empty rows to test", lc_names[k]);
    lrun r = run_op(at_attention, c, s, L, NULL);
    int64_t bad = 0;
    for (int64_t x = 0; x < no; x++) {
      bad += !isfinite(r.r[0][x]) || (row_empty[x / s->Dv] && r.r[0][x] != 0);
    }
    for (int64_t x = 0; x < r.n[1]; x++) bad += row_empty[x / s->D] && r.r[1][x] != 0;
    cr_expect(bad == 0, "%s: %lld outputs or dq entries of empty rows are not 0", lc_names[k],
              (long long)bad);
    lrun z = run_op(at_attention, c, s, L, dout);
    for (int i = 1; i < 4; i++)
      for (int64_t x = 0; x < z.n[i]; x++) bad += z.r[i][x] != 0;
    cr_expect(bad == 0, "%s: empty rows passed a gradient", lc_names[k]);
    lrun n = run_op(at_attention_naive, c, s, L, dout);
    for (int i = 0; i < 4; i++)
      for (int64_t x = 0; x < n.n[i]; x++) bad += i ? n.r[i][x] != 0 : n.r[0][x] != z.r[0][x] && fabs(n.r[0][x] - z.r[0][x]) > 1e-4;
    cr_expect(bad == 0, "%s: the naive reference disagrees on empty rows", lc_names[k]);
    lrun_free(&r), lrun_free(&z), lrun_free(&n), lc_free(&p);
    free(dout), free(row_empty);
    at_ctx_free(c);
  }
}

Test(layout, independent_of_thread_count) {
  int saved = at_threads();
  const layout_case cases[] = {LC_STRIDED_HEADS, LC_LONGFORMER, LC_BIGBIRD, LC_SELECTED, LC_SELECTED_ROWS};
  for (int ci = 0; ci < AT_ARRAY_LEN(cases); ci++) {
    const lshape *s = &shapes[0];
    at_ctx *c = at_ctx_new((size_t)16 << 20);
    lc_params p;
    at_attn_layout *L = lc_build(c, cases[ci], s->B, s->T, s->HQ, s->H, s->blk, &p);
    at_set_threads(1);
    lrun a = run_op(at_attention, c, s, L, NULL);
    at_set_threads(2);
    lrun b = run_op(at_attention, c, s, L, NULL);
    cr_expect(same(&a, &b), "%s: results depend on the thread count", lc_names[cases[ci]]);
    lrun_free(&a), lrun_free(&b), lc_free(&p);
    at_ctx_free(c);
  }
  at_set_threads(saved);
}

/* The decode step with a layout: the query at position len-1 against the
 * first len cached positions equals row len-1 of the full op. */
Test(layout, decode_equals_rows_of_full) {
  const lshape s = {2, 70, 4, 2, 8, 8, 16};
  for (int k = 0; k < LC_COUNT; k++) {
    at_ctx *c = at_ctx_new((size_t)16 << 20);
    lc_params p;
    at_attn_layout *L = lc_build(c, (layout_case)k, s.B, s.T, s.HQ, s.H, s.blk, &p);
    at_tensor *q = AT_RANDN(c, 1, 1, s.B, s.T, s.HQ, s.D), *kk = AT_RANDN(c, 2, 1, s.B, s.T, s.H, s.D);
    at_tensor *v = AT_RANDN(c, 3, 1, s.B, s.T, s.H, s.Dv);
    at_attn_opts o = {.layout = L};
    at_tensor *full = at_attention(c, q, kk, v, &o), *qt = at_new(c, AT_SHAPE(s.B, 1, s.HQ, s.D));
    cr_assert(full && qt, "%s", at_errmsg());
    real *want = malloc((size_t)(s.B * s.HQ * s.Dv) * sizeof(real));
    for (int64_t len = 1; len <= s.T; len++) {
      for (int64_t b = 0; b < s.B; b++) {
        memcpy(qt->data + b * s.HQ * s.D, q->data + (b * s.T + len - 1) * s.HQ * s.D,
               (size_t)(s.HQ * s.D) * sizeof(real));
        memcpy(want + b * s.HQ * s.Dv, full->data + (b * s.T + len - 1) * s.HQ * s.Dv,
               (size_t)(s.HQ * s.Dv) * sizeof(real));
      }
      at_ctx_mark m = at_ctx_get_mark(c);
      at_tensor *got = at_attention_decode(c, qt, kk, v, len, &o);
      cr_assert(got, "%s", at_errmsg());
      char what[96];
      snprintf(what, sizeof what, "decode %s len=%lld", lc_names[k], (long long)len);
      AT_EXPECT_CLOSE(got->data, want, s.B * s.HQ * s.Dv, 1e-5, what);
      at_ctx_rewind(c, m);
    }
    free(want);
    lc_free(&p);
    at_ctx_free(c);
  }
}

/* ---- errors ------------------------------------------------------------------------ */

static void expect_fail(at_ctx *c, const void *r, at_status st, const char *needle) {
  cr_expect(r == NULL);
  cr_expect(at_ctx_status(c) == st, "status %s, want %s", at_status_name(at_ctx_status(c)),
            at_status_name(st));
  cr_expect(strstr(at_errmsg(), needle) != NULL, "message '%s' lacks '%s'", at_errmsg(), needle);
  c->status = AT_OK;
}

Test(layout, errors) {
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  at_tensor *q = AT_RANDN(c, 1, 1, 2, 30, 4, 4), *k = AT_RANDN(c, 2, 1, 2, 30, 2, 4);
  at_tensor *v = AT_RANDN(c, 3, 1, 2, 30, 2, 4);
  at_attn_layout *L40 = at_attn_layout_causal(c, 40);
  at_attn_opts o = {.layout = L40};
  expect_fail(c, at_attention(c, q, k, v, &o), AT_E_SHAPE, "the layout is for T = 40, the inputs have T = 30");
  o = (at_attn_opts){.window = 3, .layout = at_attn_layout_causal(c, 30)};
  expect_fail(c, at_attention(c, q, k, v, &o), AT_E_ARG, "window 3 given with a layout");
  const int64_t dil[] = {1, 2, 3};
  o = (at_attn_opts){.layout = at_attn_layout_longformer(c, 30, 4, 3, dil, 1, NULL)};
  expect_fail(c, at_attention(c, q, k, v, &o), AT_E_SHAPE, "3 head sets of 1 query heads do not cover 4");
  unsigned char g[90] = {0};
  o = (at_attn_opts){.layout = at_attn_layout_longformer(c, 30, 4, 1, NULL, 3, g)};
  expect_fail(c, at_attention(c, q, k, v, &o), AT_E_SHAPE, "3 batch sets for a batch of 2");
  expect_fail(c, at_attention_naive(c, q, k, v, &o), AT_E_SHAPE, "3 batch sets");
  /* decode: the layout must reach the query */
  at_tensor *q1 = AT_RANDN(c, 1, 1, 2, 1, 4, 4);
  o = (at_attn_opts){.layout = at_attn_layout_causal(c, 10)};
  expect_fail(c, at_attention_decode(c, q1, k, v, 11, &o), AT_E_SHAPE, "shorter than len 11");
  /* constructors */
  expect_fail(c, at_attn_layout_window(c, 30, 0), AT_E_ARG, "window 0 must be at least 1");
  expect_fail(c, at_attn_layout_causal(c, 0), AT_E_ARG, "T 0");
  expect_fail(c, at_attn_layout_strided(c, 30, 0), AT_E_ARG, "stride 0");
  expect_fail(c, at_attn_layout_fixed(c, 30, 8, 9), AT_E_ARG, "1 <= c <= l");
  const int64_t dil0[] = {1, 0};
  expect_fail(c, at_attn_layout_longformer(c, 30, 4, 2, dil0, 1, NULL), AT_E_ARG, "dilation 0 of head 1");
  expect_fail(c, at_attn_layout_bigbird(c, 30, 8, -1, 1, 1, 1, 0), AT_E_ARG, "bigbird layout");
  at_attn_rule bad[] = {{.window = -2}, {.summary = 2}, {.block = 4, .summary = 3, .shift = 2}};
  expect_fail(c, at_attn_layout_rules(c, 30, 1, &bad[0]), AT_E_ARG, "negative term");
  expect_fail(c, at_attn_layout_rules(c, 30, 1, &bad[1]), AT_E_ARG, "without a block");
  expect_fail(c, at_attn_layout_rules(c, 30, 1, &bad[2]), AT_E_ARG, "summary 3 + shift 2 exceed the block 4");
  at_attn_pattern pt = {.T = 30, .heads = 2, .rules = bad, .n_rules = 3};
  expect_fail(c, at_attn_layout_new(c, &pt), AT_E_ARG, "3 rules for 2 head sets");
  int32_t sel[2 * 1 * 4 * 2];
  for (int x = 0; x < 16; x++) sel[x] = x % 3;
  sel[9] = 4;
  at_itensor it = {sel, {2, 1, 4, 2}, 16, 4};
  expect_fail(c, at_attn_layout_selected(c, 30, 8, 8, &it, 4), AT_E_ARG,
              "listed key block 4 (batch set 1, head set 0, query block 0) is outside 0 .. 3");
  at_itensor it3 = {sel, {2, 1, 3, 2}, 12, 4};
  expect_fail(c, at_attn_layout_selected(c, 30, 8, 8, &it3, 4), AT_E_SHAPE, "[B, H, 4 query blocks, n]");
  /* a valid call still works after the failures */
  o = (at_attn_opts){.layout = at_attn_layout_strided(c, 30, 4)};
  cr_expect(at_attention(c, q, k, v, &o) != NULL, "%s", at_errmsg());
  at_ctx_free(c);
}

/* ---- the kernel's vector exp ----------------------------------------------------- */

#include "ops/attention/full_tile.h"

/* tv_exp gives at_expr's bits lane by lane: a sweep of [-100, 100] and the
 * edges (the clamps, -inf, inf, NaN, zeros, denormals). */
Test(layout, vector_exp_equals_at_expr) {
  const float special[] = {-INFINITY, INFINITY, NAN, -NAN, 0.0f, -0.0f, -87.3f, -87.29999f,
                           -87.30001f, 88.0f, 88.00001f, 87.99999f, 1e-40f, -1e-40f, 1e30f, -1e30f};
  int64_t n = 200001 + AT_ARRAY_LEN(special), bad = 0;
  float *x = malloc((size_t)(n + TVL) * sizeof(float));
  for (int64_t i = 0; i < 200001; i++) x[i] = -100.0f + 0.001f * (float)i;
  for (int i = 0; i < AT_ARRAY_LEN(special); i++) x[200001 + i] = special[i];
  for (int64_t i = n; i < n + TVL; i++) x[i] = 0;
  for (int64_t i = 0; i < n; i += TVL) {
    tvec e = tv_exp(tv_load(x + i));
    for (int64_t l = 0; l < TVL && i + l < n; l++) {
      float want = at_expr(x[i + l]), got = e[l];
      bad += isnan(want) ? !isnan(got) : memcmp(&want, &got, sizeof got) != 0;
    }
  }
  cr_expect(bad == 0, "%lld lanes differ from at_expr", (long long)bad);
  free(x);
}

/* The tile products against a plain triple loop: every row and vector
 * blocking (m up to 19, n with and without a partial vector), A as a
 * matrix and as a transpose, overwrite and accumulate, alpha. */
Test(layout, tile_products_equal_a_loop) {
  const int64_t k = 13, lda = 40, ldb = 70, ldc = 75;
  float *A = malloc(sizeof(float) * 40 * 40), *B = malloc(sizeof(float) * k * ldb);
  float *C = malloc(sizeof(float) * 20 * ldc), *W = malloc(sizeof(float) * 20 * ldc);
  at_fill_uniform(A, 40 * 40, 1, 1, -1, 1);
  at_fill_uniform(B, k * ldb, 1, 2, -1, 1);
  int64_t bad = 0;
  for (int64_t m = 1; m <= 19; m++)
    for (int64_t n = 1; n <= 4 * TVL + 3; n++)
      for (int tr = 0; tr < 2; tr++)
        for (int acc = 0; acc < 2; acc++) {
          int64_t ar = tr ? 1 : lda, ap = tr ? lda : 1;
          at_fill_uniform(C, 20 * ldc, 3, (uint64_t)n, -1, 1);
          memcpy(W, C, sizeof(float) * 20 * ldc);
          tile_mm(m, n, k, 0.5f, A, ar, ap, B, ldb, acc, C, ldc);
          for (int64_t r = 0; r < 20; r++)
            for (int64_t x = 0; x < ldc; x++) {
              float want = W[r * ldc + x];
              if (r < m && x < n) {
                double s = 0;
                for (int64_t p = 0; p < k; p++) s += (double)A[r * ar + p * ap] * B[p * ldb + x];
                want = (float)(0.5 * s + (acc ? want : 0));
              }
              bad += fabsf(C[r * ldc + x] - want) > 1e-5f; /* untouched outside m x n */
            }
        }
  cr_expect(bad == 0, "%lld entries differ", (long long)bad);
  free(A), free(B), free(C), free(W);
}
