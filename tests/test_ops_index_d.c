/* ops/index.c: embedding, gather and scatter_add (gradchecks with repeated
 * indices on every dim, explicit checks that repeated indices accumulate,
 * torch semantics by hand), top-k (ties, -inf, -1 slots, against a naive
 * selection), and out-of-range / shape errors. */
#include <string.h>

#include "ops/ops.h"
#include "testing.h"

static at_itensor *ids_of(at_ctx *c, const int32_t *v, int ndim, const int64_t *shape) {
  at_itensor *t = at_inew(c, ndim, shape);
  cr_assert(t);
  memcpy(t->data, v, (size_t)t->size * sizeof(int32_t));
  return t;
}
#define IDS(c, v, ...) ids_of((c), (v), AT_SHAPE(__VA_ARGS__))

/* Random indices in [0, n) (repeats are likely). */
static at_itensor *rand_ids(at_ctx *c, uint64_t seed, int32_t n, int ndim, const int64_t *shape) {
  at_itensor *t = at_inew(c, ndim, shape);
  at_rng r = at_rng_make(seed, 3);
  for (int64_t i = 0; i < t->size; i++) t->data[i] = (int32_t)at_rng_below(&r, (uint64_t)n);
  return t;
}

/* ---- embedding ----- */

static at_tensor *emb_fn(at_ctx *c, at_tensor **in, void *u) { return at_embedding(c, in[0], u); }

Test(embedding, gradcheck_values_and_repeats) {
  at_ctx *c = at_ctx_new(0);
  const int32_t v1[] = {3, 0, 3, 1, 1, 2};
  at_itensor *ids[] = {IDS(c, v1, 2, 3), IDS(c, v1, 6), IDS(c, v1, 1, 1), IDS(c, v1, 3, 1, 2)};
  for (int k = 0; k < AT_ARRAY_LEN(ids); k++) {
    at_tensor *in[] = {AT_RANDN(c, k, 1, 4, 3)};
    AT_GRADCHECK(c, emb_fn, in, 1, ids[k], "embedding");
  }
  real tv[12];
  for (int i = 0; i < 12; i++) tv[i] = i;
  at_tensor *table = at_leaf(c, tv, AT_SHAPE(4, 3));
  at_tensor *y = at_embedding(c, table, ids[0]);
  cr_assert(y && y->ndim == 3 && y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 3);
  for (int p = 0; p < 6; p++)
    for (int j = 0; j < 3; j++) cr_expect(y->data[p * 3 + j] == v1[p] * 3 + j);
  cr_assert(at_backward(c, at_sum_all(c, y)) == AT_OK);
  const real rows[] = {1, 2, 1, 2}; /* times each id appears */
  for (int r = 0; r < 4; r++)
    for (int j = 0; j < 3; j++) cr_expect(table->grad[r * 3 + j] == rows[r]);
  at_ctx_free(c);
}

Test(embedding, errors) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *t = AT_RANDN(c, 1, 1, 4, 3);
  const int32_t bad[] = {0, 4, 1}, neg[] = {-1};
  cr_expect(at_embedding(c, t, IDS(c, bad, 3)) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "embedding: id 4 at position 1 outside the table [4,3]") != NULL,
            "%s", at_errmsg());
  at_ctx_free(c);
  c = at_ctx_new(0);
  t = AT_RANDN(c, 1, 1, 4, 3);
  cr_expect(at_embedding(c, t, IDS(c, neg, 1)) == NULL && at_ctx_status(c) == AT_E_ARG);
  at_ctx_free(c);
  c = at_ctx_new(0);
  const int32_t ok[] = {0};
  cr_expect(at_embedding(c, AT_RANDN(c, 1, 1, 4), IDS(c, ok, 1)) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(at_embedding(c, NULL, IDS(c, ok, 1)) == NULL);
  at_ctx_free(c);
}

/* ---- gather / scatter_add ----- */

typedef struct { int dim; at_itensor *idx; } ix_opts;

static at_tensor *gather_fn(at_ctx *c, at_tensor **in, void *u) {
  ix_opts *o = u;
  return at_gather(c, in[0], o->dim, o->idx);
}
static at_tensor *scatter_fn(at_ctx *c, at_tensor **in, void *u) {
  ix_opts *o = u;
  return at_scatter_add(c, in[0], o->dim, o->idx, in[1]);
}

Test(gather, gradcheck_every_dim_with_repeats) {
  at_ctx *c = at_ctx_new(0);
  const int64_t xs[3] = {3, 4, 2};
  for (int dim = -3; dim < 3; dim++) {
    int d = dim < 0 ? dim + 3 : dim;
    for (int64_t k = 1; k <= 5; k += 2) { /* fewer and more entries than x has */
      int64_t is[3] = {3, 4, 2};
      is[d] = k;
      ix_opts o = {dim, rand_ids(c, 7 * k + d, (int32_t)xs[d], 3, is)};
      at_tensor *gin[] = {at_test_randn(c, k + d, 1, 3, xs)};
      AT_GRADCHECK(c, gather_fn, gin, 1, &o, "gather");
      at_tensor *sin[] = {at_test_randn(c, k + d + 1, 1, 3, xs), at_test_randn(c, k, 1, 3, is)};
      AT_GRADCHECK(c, scatter_fn, sin, 2, &o, "scatter_add");
    }
  }
  at_ctx_free(c);
}

Test(gather, torch_semantics_by_hand) {
  at_ctx *c = at_ctx_new(0);
  real xv[] = {10, 11, 12, 13, 20, 21, 22, 23};
  const int32_t iv[] = {3, 0, 3, 1, 1, 2};
  at_tensor *x = at_leaf(c, xv, AT_SHAPE(2, 4));
  at_itensor *idx = IDS(c, iv, 2, 3);
  at_tensor *y = at_gather(c, x, 1, idx); /* y[i][j] = x[i][idx[i][j]] */
  const real want[] = {13, 10, 13, 21, 21, 22};
  for (int i = 0; i < 6; i++) cr_expect(y->data[i] == want[i]);
  cr_assert(at_backward(c, at_sum_all(c, y)) == AT_OK);
  const real dx[] = {1, 0, 0, 2, 0, 2, 1, 0}; /* repeated indices add up */
  for (int i = 0; i < 8; i++) cr_expect(x->grad[i] == dx[i], "dx[%d] = %g", i, x->grad[i]);
  /* dim 0: y[i][j] = x[idx[i][j]][j] */
  const int32_t i0[] = {1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0};
  at_tensor *y0 = at_gather(c, at_from(c, xv, AT_SHAPE(2, 4)), 0, IDS(c, i0, 3, 4));
  const real w0[] = {20, 11, 12, 23, 20, 21, 22, 23, 10, 11, 12, 13};
  for (int i = 0; i < 12; i++) cr_expect(y0->data[i] == w0[i]);
  /* scatter_add: out[i][idx[i][j]] += src[i][j] */
  real sv[] = {1, 2, 3, 4, 5, 6};
  at_tensor *z = AT_ZEROS(c, 2, 4);
  z->requires_grad = 1;
  at_tensor *src = at_leaf(c, sv, AT_SHAPE(2, 3));
  at_tensor *s = at_scatter_add(c, z, 1, idx, src);
  const real ws[] = {2, 0, 0, 4, 0, 9, 6, 0};
  for (int i = 0; i < 8; i++) cr_expect(s->data[i] == ws[i], "scatter[%d] = %g", i, s->data[i]);
  cr_expect(z->data[3] == 0, "the input is not modified");
  /* d/dsrc of sum(out * w) = w gathered: w = 1..8 */
  for (int i = 0; i < 8; i++) at_grad(c, s)[i] = i + 1;
  cr_assert(at_backward_from_seeded(c) == AT_OK);
  const real dsrc[] = {4, 1, 4, 6, 6, 7};
  for (int i = 0; i < 6; i++) cr_expect(src->grad[i] == dsrc[i]);
  for (int i = 0; i < 8; i++) cr_expect(z->grad[i] == i + 1);
  at_ctx_free(c);
}

Test(gather, errors) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 2, 4);
  const int32_t iv[] = {0, 4, 1, 1};
  cr_expect(at_gather(c, x, 1, IDS(c, iv, 2, 2)) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "gather: index 4 at position 1 outside 0..3") != NULL, "%s",
            at_errmsg());
  at_ctx_free(c);
  c = at_ctx_new(0);
  x = AT_RANDN(c, 1, 1, 2, 4);
  const int32_t ok[] = {0, 1, 1, 0, 0, 0};
  cr_expect(at_gather(c, x, 1, IDS(c, ok, 3, 2)) == NULL, "other dims must match");
  cr_expect(at_ctx_status(c) == AT_E_SHAPE);
  cr_expect(strstr(at_errmsg(), "gather: index [3,2] does not fit [2,4] along dim 1") != NULL,
            "%s", at_errmsg());
  cr_expect(at_gather(c, x, 2, IDS(c, ok, 2, 2)) == NULL);
  cr_expect(at_scatter_add(c, x, 1, IDS(c, ok, 2, 2), AT_RANDN(c, 2, 1, 2, 3)) == NULL,
            "src must match idx");
  cr_expect(at_scatter_add(c, x, 1, IDS(c, ok, 2, 2), NULL) == NULL);
  at_ctx_free(c);
}

/* ---- topk ----- */

Test(topk, ties_infinities_and_missing_slots) {
  at_ctx *c = at_ctx_new(0);
  real v[] = {1, 3, 3, -INFINITY, 2, /* row 2: */ -INFINITY, -INFINITY, -INFINITY, -INFINITY,
              -INFINITY};
  at_tensor *x = at_from(c, v, AT_SHAPE(2, 5));
  at_itensor *k3 = at_topk(c, x, 3), *k5 = at_topk(c, x, 5);
  cr_assert(k3 && k5 && k3->ndim == 2 && k3->shape[1] == 3);
  const int32_t w3[] = {1, 2, 4, -1, -1, -1}, w5[] = {1, 2, 4, 0, -1, -1, -1, -1, -1, -1};
  for (int i = 0; i < 6; i++) cr_expect(k3->data[i] == w3[i], "k=3 [%d] = %d", i, k3->data[i]);
  for (int i = 0; i < 10; i++) cr_expect(k5->data[i] == w5[i], "k=5 [%d] = %d", i, k5->data[i]);
  real one[] = {-7};
  at_itensor *k1 = at_topk(c, at_from(c, one, AT_SHAPE(1, 1, 1)), 1);
  cr_expect(k1->ndim == 3 && k1->data[0] == 0);
  at_ctx_free(c);
}

Test(topk, matches_naive_selection) {
  at_ctx *c = at_ctx_new(0);
  const int64_t n = 37, rows = 6;
  at_tensor *x = AT_RANDN(c, 9, 1, 2, rows / 2, n);
  for (int64_t i = 0; i < x->size; i += 5) x->data[i] = (real)(int)(x->data[i] * 2); /* ties */
  for (int64_t i = 3; i < x->size; i += 11) x->data[i] = -INFINITY;
  for (int64_t k = 1; k <= n; k += 6) {
    at_itensor *t = at_topk(c, x, k);
    cr_assert(t);
    for (int64_t r = 0; r < rows; r++) {
      const real *row = x->data + r * n;
      char used[64] = {0};
      for (int64_t s = 0; s < k; s++) { /* naive: best unused entry, lowest index on ties */
        int64_t best = -1;
        for (int64_t j = 0; j < n; j++)
          if (!used[j] && row[j] > -INFINITY && (best < 0 || row[j] > row[best])) best = j;
        if (best >= 0) used[best] = 1;
        cr_expect(t->data[r * k + s] == best, "row %lld k %lld slot %lld: %d vs %lld",
                  (long long)r, (long long)k, (long long)s, t->data[r * k + s], (long long)best);
      }
    }
  }
  at_ctx_free(c);
}

Test(topk, errors) {
  at_ctx *c = at_ctx_new(0);
  at_tensor *x = AT_RANDN(c, 1, 1, 2, 4);
  cr_expect(at_topk(c, x, 5) == NULL);
  cr_expect(at_ctx_status(c) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "topk: k = 5 does not fit the last dim of [2,4]") != NULL, "%s",
            at_errmsg());
  cr_expect(at_topk(c, x, 0) == NULL && at_topk(c, NULL, 1) == NULL);
  cr_expect(c->n_nodes == 0, "topk records nothing");
  at_ctx_free(c);
}
