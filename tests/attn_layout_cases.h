/* tests/attn_layout_cases.h: the block-sparse layouts the attention suites
 * run (float: test_attn_layout.c, double: test_attn_layout_d.c), each with
 * its definition written out again from the papers, independently of
 * ops/attention/layout.c, so that a constructor that builds the wrong
 * pattern fails. */
#ifndef AT_TEST_ATTN_LAYOUT_CASES_H
#define AT_TEST_ATTN_LAYOUT_CASES_H

#include <stdlib.h>
#include <string.h>

#include "ops/attention/attention.h"
#include "testing.h"

typedef enum {
  LC_CAUSAL,        /* causal, as a rule */
  LC_WINDOW,        /* sliding window */
  LC_STRIDED,       /* Sparse Transformer strided, both parts in every head */
  LC_STRIDED_HEADS, /* strided, the parts split over the heads (local, second, both, ...) */
  LC_FIXED,         /* Sparse Transformer fixed, both parts */
  LC_FIXED_HEADS,   /* fixed, parts per head, summary sub-block moved by h c */
  LC_LONGFORMER,    /* window + dilation per head + globals per batch row */
  LC_BIGBIRD,       /* window, global and random blocks per head */
  LC_SELECTED,      /* NSA-like: key blocks per (batch row, kv head, query block), some empty */
  LC_SELECTED_ROWS, /* the same per query position (query blocks of 1) */
  LC_COUNT
} layout_case;

static const char *const lc_names[LC_COUNT] = {
    "causal", "window", "strided", "strided_heads", "fixed", "fixed_heads", "longformer",
    "bigbird", "selected", "selected_rows"};

/* Parameters of a case, scaled to T so that each case spans several tiles
 * (blk: tile and pattern block size). */
typedef struct lc_params {
  int64_t B, T, HQ, H, blk;
  int64_t W, l, csum, dil[8];
  unsigned char *global; /* [B, T] */
  int32_t *sel;          /* [B, H, nqb, nsel] */
  int64_t nsel, sel_bq;
  int64_t bb_w, bb_g, bb_r;
  uint64_t seed;
} lc_params;

static int lc_part(int64_t h) { return (int)(h % 3) + 1; } /* local, second, both, local, ... */

/* A reproducible choice in [0, n). */
static int64_t lc_pick(uint64_t seed, uint64_t stream, int64_t i, int64_t n) {
  uint32_t r[4];
  at_philox(seed, stream, (uint64_t)i, r);
  return (int64_t)(r[0] % (uint32_t)n);
}

/* Builds case `k` for [B, T, HQ, *] inputs with H kv heads. p receives the
 * parameters (free with lc_free). */
static at_attn_layout *lc_build(at_ctx *c, layout_case k, int64_t B, int64_t T, int64_t HQ,
                                int64_t H, int64_t blk, lc_params *p) {
  memset(p, 0, sizeof *p);
  p->B = B, p->T = T, p->HQ = HQ, p->H = H, p->blk = blk, p->seed = 7;
  p->W = AT_MAX(2, T / 5), p->l = AT_MAX(2, blk / 2 + 3), p->csum = AT_MAX(1, p->l / 4);
  at_attn_rule rules[8];
  cr_assert(HQ <= 8);
  switch (k) {
    case LC_CAUSAL:
    case LC_WINDOW: {
      at_attn_rule r = {.causal = k == LC_CAUSAL, .window = k == LC_WINDOW ? p->W : 0};
      at_attn_pattern pt = {.T = T, .block_q = blk, .block_k = blk, .rules = &r, .n_rules = 1};
      return at_attn_layout_new(c, &pt);
    }
    case LC_STRIDED:
    case LC_STRIDED_HEADS:
    case LC_FIXED:
    case LC_FIXED_HEADS: {
      int heads = k == LC_STRIDED_HEADS || k == LC_FIXED_HEADS;
      for (int64_t h = 0; h < HQ; h++) {
        int parts = heads ? lc_part(h) : AT_ST_BOTH;
        rules[h] = k == LC_STRIDED || k == LC_STRIDED_HEADS
                       ? at_attn_rule_strided(p->l, parts)
                       : at_attn_rule_fixed(p->l, p->csum, parts,
                                            heads ? h * p->csum % (p->l - p->csum + 1) : 0);
      }
      at_attn_pattern pt = {.T = T, .block_q = blk, .block_k = blk, .heads = heads ? HQ : 1,
                            .rules = rules, .n_rules = heads ? HQ : 1};
      return at_attn_layout_new(c, &pt);
    }
    case LC_LONGFORMER: {
      p->W = AT_MAX(2, T / 12);
      p->global = calloc((size_t)(B * T), 1);
      for (int64_t b = 0; b < B; b++)
        for (int64_t x = 0; x < 3 + b; x++) /* a few positions, different per row */
          p->global[b * T + lc_pick(p->seed, 1 + (uint64_t)b, x, T)] = 1;
      for (int64_t h = 0; h < HQ; h++) p->dil[h] = 1 + h % 3;
      if (blk == AT_ATTN_TILE_K) /* the constructor has the default tiles */
        return at_attn_layout_longformer(c, T, p->W, HQ, p->dil, B, p->global);
      for (int64_t h = 0; h < HQ; h++) rules[h] = (at_attn_rule){.window = p->W, .dilation = p->dil[h]};
      at_attn_pattern pt = {.T = T, .block_q = blk, .block_k = blk, .batch = B, .heads = HQ,
                            .rules = rules, .n_rules = HQ, .global = p->global, .global_rows = B};
      return at_attn_layout_new(c, &pt);
    }
    case LC_BIGBIRD:
      p->bb_w = 1, p->bb_g = 1, p->bb_r = 2;
      return at_attn_layout_bigbird(c, T, blk, p->bb_w, p->bb_g, p->bb_r, HQ, p->seed);
    case LC_SELECTED:
    case LC_SELECTED_ROWS: {
      p->sel_bq = k == LC_SELECTED ? blk : 1;
      int64_t nqb = (T + p->sel_bq - 1) / p->sel_bq, nkb = (T + blk - 1) / blk;
      p->nsel = 3;
      p->sel = malloc((size_t)(B * H * nqb * p->nsel) * sizeof(int32_t));
      for (int64_t x = 0; x < B * H * nqb * p->nsel; x++) {
        int64_t qb = x / p->nsel % nqb, last = AT_MIN(T - 1, (qb + 1) * p->sel_bq - 1) / blk;
        /* a top-n-like pick among the causal blocks, with duplicates, some -1
         * and some blocks past the query block (to be ignored); every 5th
         * query block selects nothing */
        int64_t v = lc_pick(p->seed, 11, x, last + 2) - (x % 4 == 3);
        p->sel[x] = qb % 5 == 2 ? -1 : (int32_t)AT_MIN(v, nkb - 1);
      }
      at_itensor it = {p->sel, {B, H, nqb, p->nsel}, B * H * nqb * p->nsel, 4};
      return at_attn_layout_selected(c, T, p->sel_bq, blk, &it, HQ / H);
    }
    default: cr_assert(0); return NULL;
  }
}

static void lc_free(lc_params *p) { free(p->global), free(p->sel); }

/* The BigBird blocks of (head h, query block r) are window, globals and
 * random draws; the draws cannot be restated, so the test reads them back
 * from the layout's listed blocks and checks their properties separately. */
static int lc_bigbird_listed(const at_attn_layout *L, int64_t h, int64_t r, int64_t kb) {
  const int64_t *rw = L->listed_row + (h * L->nqb + r);
  for (int64_t e = rw[0]; e < rw[1]; e++)
    if (L->listed_col[e] == kb) return 1;
  return 0;
}

/* visible(b, hq, i, j) from the papers' definitions. */
static int lc_visible(const at_attn_layout *L, layout_case k, const lc_params *p, int64_t b,
                      int64_t hq, int64_t i, int64_t j) {
  if (j > i) return 0;
  int64_t dt = i - j, l = p->l, c = p->csum;
  switch (k) {
    case LC_CAUSAL: return 1;
    case LC_WINDOW: return dt < p->W;
    case LC_STRIDED:
    case LC_STRIDED_HEADS: { /* A1 = {max(0, i-l) .. i}, A2 = {j : (i-j) mod l = 0} */
      int parts = k == LC_STRIDED ? 3 : lc_part(hq);
      return ((parts & 1) && j >= AT_MAX(0, i - l)) || ((parts & 2) && dt % l == 0);
    }
    case LC_FIXED:
    case LC_FIXED_HEADS: { /* A1 = same block of l, A2 = j mod l in {l-c .. l-1} (moved) */
      int parts = k == LC_FIXED ? 3 : lc_part(hq);
      int64_t sh = k == LC_FIXED ? 0 : hq * c % (l - c + 1);
      return ((parts & 1) && j / l == i / l) ||
             ((parts & 2) && j % l >= l - c - sh && j % l < l - sh);
    }
    case LC_LONGFORMER: {
      int64_t d = p->dil[hq];
      const unsigned char *g = p->global + b * p->T;
      return (dt % d == 0 && dt / d < p->W) || g[i] || g[j];
    }
    case LC_BIGBIRD: {
      int64_t r = i / p->blk, kb = j / p->blk;
      if (kb >= r - p->bb_w || kb < p->bb_g) return 1;
      return lc_bigbird_listed(L, hq, r, kb);
    }
    case LC_SELECTED:
    case LC_SELECTED_ROWS: {
      int64_t nqb = (p->T + p->sel_bq - 1) / p->sel_bq, h = hq / (p->HQ / p->H);
      const int32_t *s = p->sel + ((b * p->H + h) * nqb + i / p->sel_bq) * p->nsel;
      for (int64_t x = 0; x < p->nsel; x++)
        if (s[x] == j / p->blk) return 1;
      return 0;
    }
    default: return -1;
  }
}

#endif
