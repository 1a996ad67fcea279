/* The fixed-pattern sparse mixers in float (models/sparse_transformer.c,
 * longformer.c, bigbird.c): each layer's forward and backward over the fused
 * block-sparse kernel equal the same layer over at_attention_naive with the
 * same layout (a dense masked reference); the kernel visits exactly the
 * layout's tiles, fewer than dense; the layouts are the papers' definitions;
 * longformer with a window >= T and no globals, and bigbird with a window over
 * every block, are `full`; longformer's global projections reach exactly the
 * global rows; bigbird's random blocks are causal, distinct, deterministic and
 * per head; decoding (prefill + steps) equals the forward for every case. */
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"
#include "core/threads.h"
#include "sparse_testing.h"

enum { D = 32, HQ = 4, H = 2, HD = 8, B = 2 };

typedef struct fb {
  real *y, *g; /* output; x's then the parameters' gradients */
  int64_t ny, ng;
} fb;

static fb forward_backward(at_ctx *c, sp_layer *L, at_tensor *x) {
  at_params_zero_grad(L->p);
  x->grad = NULL;
  at_ctx_mark mark = at_ctx_get_mark(c);
  at_mixer_io io = {0};
  at_tensor *y = L->impl->forward(c, L->state, x, &io);
  cr_assert(y != NULL, "%s", at_errmsg());
  real *g = at_grad(c, y);
  for (int64_t i = 0; i < y->size; i++) g[i] = (real)sin(0.37 * (double)i + 0.1);
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  fb r = {malloc((size_t)y->size * sizeof(real)), malloc((size_t)(x->size + L->p->total) * sizeof(real)), y->size,
          x->size + L->p->total};
  memcpy(r.y, y->data, (size_t)y->size * sizeof(real));
  memcpy(r.g, x->grad, (size_t)x->size * sizeof(real));
  memcpy(r.g + x->size, L->p->grad, (size_t)L->p->total * sizeof(real));
  at_ctx_rewind(c, mark);
  x->grad = NULL;
  return r;
}

static void fb_free(fb *r) { free(r->y), free(r->g); }

static void expect_same(const fb *a, const fb *b, double tol, const char *what) {
  char w[160];
  snprintf(w, sizeof w, "%s: output", what);
  AT_EXPECT_CLOSE(a->y, b->y, a->ny, tol, w);
  snprintf(w, sizeof w, "%s: gradients", what);
  AT_EXPECT_CLOSE(a->g, b->g, a->ng, tol, w);
}

Test(sparse_layers, fused_equals_the_dense_masked_reference) {
  at_set_threads(2);
  at_ctx *c = at_ctx_new(0);
  const int64_t T = 100; /* ragged against the 64-row tiles */
  for (size_t k = 0; k < AT_ARRAY_LEN(sp_cases); k++) {
    at_model_cfg cfg = sp_cfg(&sp_cases[k], D, HQ, H, HD);
    sp_layer L = sp_layer_new(&cfg, sp_cases[k].layer_index, 3);
    sp_randomize(L.p, 3 + k, 0.3);
    at_tensor *x = AT_RANDN(c, 4 + k, 1.0, B, T, D);
    fb fused = forward_backward(c, &L, x);
    sp_base(&L)->naive = 1;
    fb naive = forward_backward(c, &L, x);
    expect_same(&fused, &naive, 2e-5, sp_cases[k].name);
    fb_free(&fused), fb_free(&naive);
    sp_layer_free(&L);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

/* Tiles of the causal layout with L's tile sizes. */
static int64_t dense_tiles(at_ctx *c, const at_attn_layout *L, int64_t T) {
  at_attn_rule r = {.causal = 1};
  at_attn_pattern p = {.T = T, .block_q = L->bq, .block_k = L->bk, .rules = &r, .n_rules = 1};
  at_attn_layout *d = at_attn_layout_new(c, &p);
  cr_assert(d != NULL, "%s", at_errmsg());
  return at_attn_layout_tiles(d, B, HQ);
}

Test(sparse_layers, kernel_visits_the_layout_tiles_fewer_than_dense) {
  at_ctx *c = at_ctx_new(0);
  const int64_t T = 512;
  const sp_case cases[] = {
    {"st_fixed_128_8", "sparse_transformer", 0, 1, {{"pattern", 1}, {"stride", 128}, {"summary", 8}}},
    {"st_strided_64", "sparse_transformer", 0, 1, {{"pattern", 0}, {"stride", 64}}},
    {"st_fixed_merged", "sparse_transformer", 0, 1, {{"pattern", 1}, {"stride", 128}, {"summary", 16}, {"combine", 2}}},
    {"lf_window_64", "longformer", 0, 1, {{"window", 64}, {"dilation", 2}, {"n_global", 3}}},
    {"bb_64", "bigbird", 0, 1, {{"block", 64}, {"window_blocks", 1}, {"global_blocks", 1}, {"random_blocks", 1}}},
  };
  for (size_t k = 0; k < AT_ARRAY_LEN(cases); k++) {
    at_model_cfg cfg = sp_cfg(&cases[k], D, HQ, H, HD);
    sp_layer L = sp_layer_new(&cfg, 0, 3);
    at_attn_stats st = {0};
    sp_base(&L)->stats = &st;
    at_tensor *x = AT_RANDN(c, 5, 1.0, B, T, D);
    fb r = forward_backward(c, &L, x);
    int64_t want = at_attn_layout_tiles(sp_layout(c, &L, T), B, HQ), dense = dense_tiles(c, sp_layout(c, &L, T), T);
    cr_expect(st.forward_tiles == want && st.backward_tiles == want, "%s: visited %lld / %lld tiles, layout %lld",
              cases[k].name, (long long)st.forward_tiles, (long long)st.backward_tiles, (long long)want);
    cr_expect(want < dense, "%s: %lld tiles, dense %lld", cases[k].name, (long long)want, (long long)dense);
    cr_log_info("%s: %lld of %lld dense tiles", cases[k].name, (long long)want, (long long)dense);
    fb_free(&r);
    sp_layer_free(&L);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

/* ---- the layouts are the papers' definitions -------------------------------------- */

/* visible(h, i, j) of a case from sparse_path.md §4.1-4.3, written out here
 * (bigbird's random blocks excepted: checked separately). */
static int paper_visible(const sp_case *k, int64_t h, int64_t i, int64_t j, int64_t n_heads) {
  (void)n_heads;
  if (j > i) return 0;
  double o[8] = {0};
  const char *keys[] = {"pattern", "stride", "summary", "combine", "distinct", NULL};
  o[4] = 1;
  for (int x = 0; keys[x]; x++)
    for (int y = 0; y < 6 && k->opts[y].key; y++)
      if (!strcmp(k->opts[y].key, keys[x])) o[x] = k->opts[y].value;
  int64_t l = (int64_t)o[1], cs = (int64_t)o[2], comb = (int64_t)o[3];
  int a1 = comb == 2 || (comb == 0 ? h % 2 == 0 : k->layer_index % 2 == 0);
  int a2 = comb == 2 || !a1;
  int64_t kk = comb == 0 ? h / 2 : h;
  if (o[0] == 0) return (a1 && j >= i - l) || (a2 && (i - j) % l == 0);
  int64_t s = o[4] != 0 ? (kk % (l / cs)) * cs : 0;
  return (a1 && j / l == i / l) || (a2 && j % l >= l - cs - s && j % l < l - s);
}

Test(sparse_layers, sparse_transformer_layouts_are_the_definitions) {
  at_ctx *c = at_ctx_new(0);
  const int64_t T = 90;
  for (size_t k = 0; k < AT_ARRAY_LEN(sp_cases); k++) {
    if (strcmp(sp_cases[k].mixer, "sparse_transformer")) continue;
    at_model_cfg cfg = sp_cfg(&sp_cases[k], D, HQ, H, HD);
    sp_layer L = sp_layer_new(&cfg, sp_cases[k].layer_index, 3);
    at_attn_layout *lay = sp_layout(c, &L, T);
    int64_t wrong = 0, seen = 0;
    for (int64_t h = 0; h < HQ; h++)
      for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j < T; j++) {
          int v = at_attn_layout_visible(lay, 0, h, i, j);
          wrong += v != paper_visible(&sp_cases[k], h, i, j, HQ);
          seen += v;
        }
    cr_expect(wrong == 0, "%s: %lld pairs differ from the definition", sp_cases[k].name, (long long)wrong);
    cr_expect(seen > 0 && seen < HQ * T * (T + 1) / 2, "%s: %lld visible pairs", sp_cases[k].name, (long long)seen);
    sp_layer_free(&L);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

Test(sparse_layers, longformer_window_schedule_dilation_and_globals) {
  at_ctx *c = at_ctx_new(0);
  const int64_t T = 80;
  const sp_case k = {"lf", "longformer", 0, 5,
                     {{"window", 8}, {"window_top", 24}, {"dilation", 2}, {"dilated_heads", 1}, {"n_global", 3}}};
  for (int li = 0; li < 5; li++) {
    at_model_cfg cfg = sp_cfg(&k, D, HQ, H, HD);
    sp_layer L = sp_layer_new(&cfg, li, 3);
    at_attn_layout *lay = sp_layout(c, &L, T);
    int64_t W = 8 + 4 * li, wrong = 0; /* 8, 12, 16, 20, 24 */
    for (int64_t h = 0; h < HQ; h++)
      for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j <= i; j++) {
          int64_t d = h < 1 ? 2 : 1;
          int want = ((i - j) % d == 0 && (i - j) / d < W) || i < 3 || j < 3;
          wrong += at_attn_layout_visible(lay, 0, h, i, j) != want;
        }
    cr_expect(wrong == 0, "layer %d (window %lld): %lld pairs differ", li, (long long)W, (long long)wrong);
    sp_layer_free(&L);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

/* ---- special cases equal `full` ------------------------------------------------------ */

static void expect_full(const sp_case *k, int64_t T) {
  at_set_threads(2);
  at_ctx *c = at_ctx_new(0);
  at_model_cfg cfg = sp_cfg(k, D, HQ, H, HD);
  sp_layer S = sp_layer_new(&cfg, 0, 3);
  sp_randomize(S.p, 8, 0.3);
  const sp_case fk = {"full", "full", 0, 1, {{NULL, 0}}};
  at_model_cfg fcfg = sp_cfg(&fk, D, HQ, H, HD);
  sp_layer F = sp_layer_new(&fcfg, 0, 3);
  cr_assert_eq(F.p->total, S.p->total);
  memcpy(F.p->data, S.p->data, (size_t)S.p->total * sizeof(real)); /* wq wk wv wo in the same order */
  at_tensor *x = AT_RANDN(c, 9, 1.0, B, T, D);
  fb a = forward_backward(c, &S, x), b = forward_backward(c, &F, x);
  expect_same(&a, &b, 2e-5, k->name);
  fb_free(&a), fb_free(&b);
  sp_layer_free(&S), sp_layer_free(&F);
  at_ctx_free(c);
}

Test(sparse_layers, longformer_window_at_least_T_without_globals_is_full) {
  const sp_case k = {"lf_wide", "longformer", 0, 1, {{"window", 75}, {"n_global", 0}}};
  expect_full(&k, 75);
  const sp_case k2 = {"lf_wider", "longformer", 0, 1, {{"window", 500}, {"dilation", 1}}};
  expect_full(&k2, 75);
}

Test(sparse_layers, bigbird_window_over_every_block_is_full) {
  const sp_case k = {"bb_all", "bigbird", 0, 1, {{"block", 8}, {"window_blocks", 10}, {"global_blocks", 1}, {"random_blocks", 2}}};
  expect_full(&k, 75);
}

/* ---- longformer's global projections -------------------------------------------- */

/* Rows of y that change when parameter `name` is perturbed: a bitmask over t
 * (first 64 positions). */
static uint64_t rows_moved(at_ctx *c, sp_layer *L, at_tensor *x, const char *name) {
  at_mixer_io io = {0};
  at_no_grad_begin(c);
  at_tensor *y0 = L->impl->forward(c, L->state, x, &io);
  at_param *p = at_params_find(L->p, name);
  cr_assert(p != NULL, "no %s", name);
  for (int64_t i = 0; i < p->t->size; i++) p->t->data[i] += 0.05f * (real)((i % 5) - 2);
  at_tensor *y1 = L->impl->forward(c, L->state, x, &io);
  for (int64_t i = 0; i < p->t->size; i++) p->t->data[i] -= 0.05f * (real)((i % 5) - 2);
  at_no_grad_end(c);
  cr_assert(y0 && y1);
  uint64_t m = 0;
  int64_t T = x->shape[1];
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T && t < 64; t++)
      for (int64_t e = 0; e < D; e++)
        if (fabs(y0->data[(b * T + t) * D + e] - y1->data[(b * T + t) * D + e]) > 1e-6) m |= (uint64_t)1 << t;
  return m;
}

Test(sparse_layers, longformer_global_projections_reach_the_global_rows) {
  at_ctx *c = at_ctx_new(0);
  const int64_t T = 40, NG = 4;
  const sp_case k = {"lf_g", "longformer", 0, 1, {{"window", 6}, {"n_global", NG}}};
  at_model_cfg cfg = sp_cfg(&k, D, HQ, H, HD);
  sp_layer L = sp_layer_new(&cfg, 0, 3);
  const char *pairs[][2] = {{"l.wq", "l.wq_g"}, {"l.wk", "l.wk_g"}, {"l.wv", "l.wv_g"}};
  for (int i = 0; i < 3; i++) { /* the paper: initialised as copies of the local projections */
    at_param *a = at_params_find(L.p, pairs[i][0]), *g = at_params_find(L.p, pairs[i][1]);
    cr_assert(a && g);
    cr_expect(memcmp(a->t->data, g->t->data, (size_t)a->t->size * sizeof(real)) == 0, "%s is not a copy of %s",
              pairs[i][1], pairs[i][0]);
  }
  sp_randomize(L.p, 4, 0.3);
  at_tensor *x = AT_RANDN(c, 6, 1.0, B, T, D);
  uint64_t globals = ((uint64_t)1 << NG) - 1, all = ((uint64_t)1 << T) - 1;
  /* (row 0 sees only its own key: its softmax does not depend on q or k) */
  cr_expect_eq(rows_moved(c, &L, x, "l.wq_g"), globals & ~(uint64_t)1, "wq_g moves exactly the global rows");
  cr_expect_eq(rows_moved(c, &L, x, "l.wq"), all & ~globals, "wq moves exactly the local rows");
  /* a global key/value is seen by every row; a local one by the local rows only */
  cr_expect_eq(rows_moved(c, &L, x, "l.wk_g"), all & ~(uint64_t)1);
  cr_expect_eq(rows_moved(c, &L, x, "l.wv_g"), all);
  cr_expect_eq(rows_moved(c, &L, x, "l.wv"), all & ~globals);
  sp_layer_free(&L);
  at_ctx_free(c);
}

/* ---- bigbird's random blocks ------------------------------------------------------ */

/* The random blocks of (head h, query block r): listed blocks outside the
 * window and the globals, into out; their count. */
static int64_t random_of(const at_attn_layout *lay, int64_t h, int64_t r, int64_t w, int64_t g, int32_t *out) {
  int64_t n = 0;
  for (int64_t e = lay->listed_row[h * lay->nqb + r]; e < lay->listed_row[h * lay->nqb + r + 1]; e++) {
    int32_t kb = lay->listed_col[e];
    cr_assert(kb <= r, "head %lld block %lld lists a later block %d", (long long)h, (long long)r, kb);
    if (kb >= g && kb < r - w) out[n++] = kb;
  }
  return n;
}

Test(sparse_layers, bigbird_random_blocks_causal_distinct_deterministic_per_head) {
  at_ctx *c = at_ctx_new(0);
  const int64_t T = 400, blk = 8, w = 1, g = 2, nr = 3;
  const sp_case k = {"bb", "bigbird", 0, 3, {{"block", blk}, {"window_blocks", w}, {"global_blocks", g}, {"random_blocks", nr}}};
  at_model_cfg cfg = sp_cfg(&k, D, HQ, H, HD);
  sp_layer a = sp_layer_new(&cfg, 1, 7), a2 = sp_layer_new(&cfg, 1, 7), other = sp_layer_new(&cfg, 2, 7),
           seed = sp_layer_new(&cfg, 1, 8);
  at_attn_layout *la = sp_layout(c, &a, T), *la2 = sp_layout(c, &a2, T), *lo = sp_layout(c, &other, T),
                 *ls = sp_layout(c, &seed, T), *shorter = sp_layout(c, &a, 123);
  int64_t heads_differ = 0, layers_differ = 0, seeds_differ = 0;
  int32_t x[16], y[16];
  for (int64_t h = 0; h < HQ; h++)
    for (int64_t r = 0; r < la->nqb; r++) {
      int64_t n = random_of(la, h, r, w, g, x);
      cr_expect_eq(n, AT_MIN(nr, AT_MAX(0, r - w - g)), "head %lld block %lld: %lld random blocks", (long long)h,
                   (long long)r, (long long)n);
      for (int64_t i = 1; i < n; i++) cr_expect(x[i] > x[i - 1], "listed blocks ascending and distinct");
      cr_expect(random_of(la2, h, r, w, g, y) == n && !memcmp(x, y, (size_t)n * 4), "same layer, same draw");
      if (r < shorter->nqb)
        cr_expect(random_of(shorter, h, r, w, g, y) == n && !memcmp(x, y, (size_t)n * 4),
                  "head %lld block %lld: the draw depends on T", (long long)h, (long long)r);
      layers_differ += random_of(lo, h, r, w, g, y) != n || memcmp(x, y, (size_t)n * 4);
      seeds_differ += random_of(ls, h, r, w, g, y) != n || memcmp(x, y, (size_t)n * 4);
      if (h > 0) heads_differ += random_of(la, 0, r, w, g, y) != n || memcmp(x, y, (size_t)n * 4);
    }
  cr_expect(heads_differ > 20 && layers_differ > 20 && seeds_differ > 20,
            "draws differ over heads %lld, layers %lld, model seeds %lld", (long long)heads_differ,
            (long long)layers_differ, (long long)seeds_differ);
  sp_layer_free(&a), sp_layer_free(&a2), sp_layer_free(&other), sp_layer_free(&seed);
  at_ctx_free(c);
}

/* ---- decoding ---------------------------------------------------------------------- */

Test(sparse_layers, prefill_and_steps_equal_the_forward) {
  at_set_threads(1);
  at_ctx *c = at_ctx_new(0);
  const int64_t T = 70, P = 23;
  for (size_t k = 0; k < AT_ARRAY_LEN(sp_cases); k++) {
    at_model_cfg cfg = sp_cfg(&sp_cases[k], D, HQ, H, HD);
    sp_layer L = sp_layer_new(&cfg, sp_cases[k].layer_index, 3);
    sp_randomize(L.p, 3 + k, 0.3);
    at_no_grad_begin(c);
    at_tensor *x = AT_RANDN(c, 4 + k, 1.0, B, T, D);
    at_mixer_io io = {0};
    at_tensor *ref = L.impl->forward(c, L.state, x, &io);
    cr_assert(ref != NULL, "%s", at_errmsg());
    at_mixer_state s;
    cr_assert(at_mixer_state_init(&s, B, T) == AT_OK);
    cr_assert(L.impl->state_new(L.state, &s) == AT_OK, "%s", at_errmsg());
    at_tensor *y = L.impl->prefill(c, L.state, at_slice(c, x, 1, 0, P), &s, &io);
    cr_assert(y != NULL, "%s", at_errmsg());
    double worst = 0;
    for (int64_t b = 0; b < B; b++)
      for (int64_t e = 0; e < P * D; e++)
        worst = fmax(worst, fabs(y->data[b * P * D + e] - ref->data[b * T * D + e]));
    for (int64_t t = P; t < T; t++) {
      io.pos0 = t;
      y = L.impl->step(c, L.state, at_slice(c, x, 1, t, 1), &s, &io);
      cr_assert(y != NULL, "%s: %s", sp_cases[k].name, at_errmsg());
      for (int64_t b = 0; b < B; b++)
        for (int64_t e = 0; e < D; e++) worst = fmax(worst, fabs(y->data[b * D + e] - ref->data[(b * T + t) * D + e]));
    }
    cr_expect(worst < 1e-5, "%s: decoding differs from the forward by %.3g", sp_cases[k].name, worst);
    at_no_grad_end(c);
    at_mixer_state_free(&s);
    sp_layer_free(&L);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}
