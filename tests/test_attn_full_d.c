/* ops/attention/full.c in double: gradchecks of the fused attention's
 * hand-written backward (MHA, GQA, MQA, windows, W = 1, T = 1, H = 1,
 * Dv != D, T past one tile so that tiles are skipped, partial
 * requires_grad), the exact W = 1 case; the naive reference's gradcheck and
 * the fused op against it in double. */
#include <string.h>

#include "ops/attention/attention.h"
#include "testing.h"

static at_tensor *attn_fn(at_ctx *c, at_tensor **in, void *u) {
  return at_attention(c, in[0], in[1], in[2], u);
}

typedef struct gc_case {
  int64_t B, T, HQ, H, D, Dv, W;
  double scale;
  const char *grads; /* which of q, k, v require grad ("qkv" = all) */
} gc_case;

static void run_case(const gc_case *k, uint64_t seed) {
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  at_tensor *in[] = {AT_RANDN(c, seed, 1, k->B, k->T, k->HQ, k->D),
                     AT_RANDN(c, seed + 100, 1, k->B, k->T, k->H, k->D),
                     AT_RANDN(c, seed + 200, 1, k->B, k->T, k->H, k->Dv)};
  if (k->grads)
    for (int i = 0; i < 3; i++) in[i]->requires_grad = strchr(k->grads, "qkv"[i]) != NULL;
  at_attn_opts o = {.scale = k->scale, .window = k->W};
  char what[160];
  snprintf(what, sizeof what, "attention B=%lld T=%lld HQ=%lld H=%lld D=%lld Dv=%lld W=%lld "
           "scale=%g grads=%s seed=%llu", (long long)k->B, (long long)k->T, (long long)k->HQ,
           (long long)k->H, (long long)k->D, (long long)k->Dv, (long long)k->W, k->scale,
           k->grads ? k->grads : "qkv", (unsigned long long)seed);
  AT_GRADCHECK(c, attn_fn, in, 3, &o, what);
  at_ctx_free(c);
}

static void run_cases(const gc_case *cases, int n) {
  for (int i = 0; i < n; i++)
    for (uint64_t seed = 1; seed <= 2; seed++) run_case(&cases[i], 10 * seed + (uint64_t)i);
}

Test(attention_gradcheck, mha) {
  const gc_case cases[] = {
      {2, 5, 2, 2, 4, 4, 0, 0, NULL},
      {2, 6, 2, 2, 4, 4, 2, 0, NULL},
      {1, 7, 3, 3, 3, 3, 4, 0.7, NULL}, /* explicit scale */
  };
  run_cases(cases, AT_ARRAY_LEN(cases));
}

Test(attention_gradcheck, gqa) {
  const gc_case cases[] = {
      {2, 5, 4, 2, 4, 4, 0, 0, NULL},
      {1, 6, 4, 2, 3, 3, 3, 0, NULL},
      {1, 5, 6, 3, 2, 2, 0, 0, NULL},
  };
  run_cases(cases, AT_ARRAY_LEN(cases));
}

Test(attention_gradcheck, mqa) {
  const gc_case cases[] = {
      {2, 5, 3, 1, 4, 4, 0, 0, NULL},
      {1, 7, 4, 1, 3, 3, 2, 0, NULL},
  };
  run_cases(cases, AT_ARRAY_LEN(cases));
}

Test(attention_gradcheck, edge_shapes) {
  const gc_case cases[] = {
      {2, 1, 2, 1, 3, 3, 0, 0, NULL},   /* T = 1 */
      {1, 1, 1, 1, 1, 1, 0, 0, NULL},   /* everything 1 */
      {1, 6, 1, 1, 4, 4, 0, 0, NULL},   /* one head */
      {2, 6, 2, 2, 3, 3, 6, 0, NULL},   /* W = T */
      {1, 5, 2, 2, 3, 3, 9, 0, NULL},   /* W > T */
      {2, 5, 4, 2, 6, 3, 0, 0, NULL},   /* Dv < D */
      {1, 5, 2, 1, 2, 5, 3, 0, NULL},   /* Dv > D, MQA, window */
  };
  run_cases(cases, AT_ARRAY_LEN(cases));
}

/* T beyond one tile (AT_ATTN_TILE_Q = AT_ATTN_TILE_K = 64), not a multiple
 * of it: the online softmax runs over several key tiles, and with a window
 * the tiles below it are skipped. Tiny head dims keep it fast. (Without a
 * window, several tiles are held against the naive reference in double
 * below, to 1e-12.) */
Test(attention_gradcheck, several_tiles) {
  const gc_case cases[] = {
      {1, 135, 1, 1, 2, 1, 20, 0, NULL},
      {1, 131, 2, 1, 1, 2, 66, 0, NULL}, /* window edge crossing tile edges */
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) run_case(&cases[i], 7 + (uint64_t)i);
}

/* Only some inputs need a gradient: the backward skips the others (and with
 * GQA fills only the buffers it needs). */
Test(attention_gradcheck, partial_requires_grad) {
  const gc_case cases[] = {
      {1, 6, 4, 2, 3, 3, 0, 0, "q"},  {1, 6, 4, 2, 3, 3, 3, 0, "k"},
      {1, 6, 4, 2, 3, 3, 0, 0, "v"},  {1, 6, 2, 2, 3, 2, 0, 0, "kv"},
      {1, 6, 3, 1, 3, 2, 2, 0, "qv"},
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) run_case(&cases[i], 3 + (uint64_t)i);
}

/* W = 1: each query sees only its own key, so o = v exactly, and dq, dk are
 * zero (up to rounding of dP - D, which is 0 in exact arithmetic). The
 * numeric gradient of q and k is exactly zero, so only v is gradchecked. */
Test(attention_gradcheck, window_one) {
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  const int64_t B = 2, T = 5, HQ = 4, H = 2, D = 3;
  at_tensor *q = AT_RANDN(c, 1, 1, B, T, HQ, D), *k = AT_RANDN(c, 2, 1, B, T, H, D);
  at_tensor *v = AT_RANDN(c, 3, 1, B, T, H, D);
  at_attn_opts o = {.scale = 0, .window = 1};
  at_ctx_mark mark = at_ctx_get_mark(c);
  at_tensor *out = at_attention(c, q, k, v, &o);
  cr_assert(out);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t hq = 0; hq < HQ; hq++)
        for (int64_t e = 0; e < D; e++) {
          real got = out->data[((b * T + t) * HQ + hq) * D + e];
          real want = v->data[((b * T + t) * H + hq / 2) * D + e];
          cr_expect(fabs(got - want) <= 1e-15 * fmax(1, fabs(want)), "o != v at %lld", (long long)t);
        }
  real *g = at_grad(c, out);
  at_fill_normal(g, out->size, 4, 1, 0, 1);
  cr_assert(at_backward_from_seeded(c) == AT_OK);
  double mq = 0, mk = 0;
  for (int64_t i = 0; i < q->size; i++) mq = fmax(mq, fabs(q->grad[i]));
  for (int64_t i = 0; i < k->size; i++) mk = fmax(mk, fabs(k->grad[i]));
  cr_expect(mq < 1e-13 && mk < 1e-13, "dq, dk should vanish: %g %g", mq, mk);

  at_ctx_rewind(c, mark); /* drop that tape so the gradcheck starts clean */
  q->requires_grad = k->requires_grad = 0;
  at_tensor *in[] = {q, k, v};
  AT_GRADCHECK(c, attn_fn, in, 3, &o, "attention W=1 (dv)");
  at_ctx_free(c);
}

/* ---- the naive reference in double -------------------------------------------- */

static at_tensor *naive_fn(at_ctx *c, at_tensor **in, void *u) {
  return at_attention_naive(c, in[0], in[1], in[2], u);
}

/* The tape's backward of the primitive-op composition is right... */
Test(attention_gradcheck, naive_reference) {
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  const int64_t cases[][7] = {{2, 5, 4, 2, 3, 2, 0}, {1, 6, 3, 1, 2, 3, 2}};
  for (int i = 0; i < 2; i++) {
    const int64_t *s = cases[i];
    at_tensor *in[] = {AT_RANDN(c, 1, 1, s[0], s[1], s[2], s[4]),
                       AT_RANDN(c, 2, 1, s[0], s[1], s[3], s[4]),
                       AT_RANDN(c, 3, 1, s[0], s[1], s[3], s[5])};
    at_attn_opts o = {.scale = 0, .window = s[6]};
    AT_GRADCHECK(c, naive_fn, in, 3, &o, "attention_naive");
  }
  at_ctx_free(c);
}

/* ... and in double the fused op equals it to rounding, values and
 * gradients, across several tiles with and without a window. */
Test(attention_gradcheck, fused_equals_naive_in_double) {
  const int64_t cases[][7] = {
      {2, 37, 4, 2, 8, 4, 0}, {1, 150, 2, 1, 4, 4, 0}, {1, 150, 4, 2, 4, 6, 20},
      {1, 150, 2, 2, 4, 4, 100}, {2, 20, 3, 3, 4, 4, 1}};
  for (int ci = 0; ci < AT_ARRAY_LEN(cases); ci++) {
    const int64_t *s = cases[ci];
    at_ctx *c = at_ctx_new((size_t)4 << 20);
    at_tensor *x[] = {AT_RANDN(c, 1, 1, s[0], s[1], s[2], s[4]),
                      AT_RANDN(c, 2, 1, s[0], s[1], s[3], s[4]),
                      AT_RANDN(c, 3, 1, s[0], s[1], s[3], s[5])};
    at_attn_opts o = {.scale = 0, .window = s[6]};
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
      snprintf(what, sizeof what, "double fused vs naive case %d: %s", ci, names[i]);
      double ref = 0;
      for (int64_t j = 0; j < sizes[i]; j++) ref = fmax(ref, fabs(res[1][i][j]));
      if (ref == 0) { /* W = 1: dq, dk are 0 */
        for (int64_t j = 0; j < sizes[i]; j++)
          cr_expect(fabs(res[0][i][j]) < 1e-14, "%s: %g should be 0", what, res[0][i][j]);
      } else {
        AT_EXPECT_CLOSE(res[0][i], res[1][i], sizes[i], 1e-12, what);
      }
      free(res[0][i]), free(res[1][i]);
    }
    at_ctx_free(c);
  }
}
