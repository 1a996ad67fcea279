/* ops/attention/full.c in float: the fused op against flash-linear-attention's
 * golden values, W >= T equals full, the decode step against the full op,
 * results independent of the thread count, memory linear in T, and shape
 * and option errors; the fused op against the naive reference built from
 * primitive ops (its gradients from the tape). */
#include <stdlib.h>
#include <string.h>

#include "core/h5io.h"
#include "core/threads.h"
#include "ops/attention/attention.h"
#include "testing.h"

static const char *source_dir(void) {
  const char *s = getenv("AT_SOURCE_DIR");
  return s && *s ? s : AT_SOURCE_DIR;
}

/* A tensor read from a golden file (a leaf when `leaf`). */
static at_tensor *golden(at_ctx *c, at_h5 *h, const char *name, int leaf) {
  int nd;
  int64_t shape[4];
  real *data;
  cr_assert(at_h5_read_real_alloc(h, name, &nd, shape, &data) == AT_OK, "%s", at_errmsg());
  at_tensor *t = leaf ? at_leaf(c, data, nd, shape) : at_from(c, data, nd, shape);
  free(data);
  cr_assert(t);
  return t;
}

static void check_golden(const char *file) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/%s", source_dir(), file);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  at_tensor *q = golden(c, h, "inputs/q", 1), *k = golden(c, h, "inputs/k", 1);
  at_tensor *v = golden(c, h, "inputs/v", 1), *dout = golden(c, h, "inputs/do", 0);
  at_attn_opts o = {.scale = 0, .window = 0};
  if (at_h5_has_attr(h, "/", "window_size"))
    cr_assert(at_h5_get_attr_int(h, "/", "window_size", &o.window) == AT_OK);
  at_tensor *out = at_attention(c, q, k, v, &o);
  cr_assert(out, "%s: %s", file, at_errmsg());
  memcpy(at_grad(c, out), dout->data, (size_t)out->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  struct { const char *name; at_tensor *t; int grad; double tol; } want[] = {
      {"outputs/o", out, 0, 1e-5}, {"grads/dq", q, 1, 1e-4},
      {"grads/dk", k, 1, 1e-4},    {"grads/dv", v, 1, 1e-4}};
  for (int i = 0; i < 4; i++) {
    at_tensor *ref = golden(c, h, want[i].name, 0);
    cr_assert(ref->size == want[i].t->size, "%s %s: size", file, want[i].name);
    char what[256];
    snprintf(what, sizeof what, "%s %s", file, want[i].name);
    AT_EXPECT_CLOSE(want[i].grad ? want[i].t->grad : want[i].t->data, ref->data, ref->size,
                    want[i].tol, what);
  }
  at_h5_close(h);
  at_ctx_free(c);
}

Test(attention, golden_mha) { check_golden("attn_mha.h5"); }
Test(attention, golden_gqa) { check_golden("attn_gqa.h5"); }
Test(attention, golden_mqa_window) { check_golden("attn_mqa_window.h5"); }

/* Forward and gradients of a random case, in malloc'ed arrays (o, dq, dk, dv). */
typedef struct run_out {
  real *o, *dq, *dk, *dv;
  int64_t no, nq, nk, nv;
} run_out;

static run_out run(int64_t B, int64_t T, int64_t HQ, int64_t H, int64_t D, int64_t Dv,
                   int64_t W) {
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  at_tensor *q = AT_RANDN(c, 1, 1, B, T, HQ, D), *k = AT_RANDN(c, 2, 1, B, T, H, D);
  at_tensor *v = AT_RANDN(c, 3, 1, B, T, H, Dv);
  at_attn_opts o = {.scale = 0, .window = W};
  at_tensor *out = at_attention(c, q, k, v, &o);
  cr_assert(out, "%s", at_errmsg());
  at_fill_normal(at_grad(c, out), out->size, 4, 1, 0, 1);
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  run_out r = {malloc((size_t)out->size * sizeof(real)), malloc((size_t)q->size * sizeof(real)),
               malloc((size_t)k->size * sizeof(real)), malloc((size_t)v->size * sizeof(real)),
               out->size, q->size, k->size, v->size};
  memcpy(r.o, out->data, (size_t)r.no * sizeof(real));
  memcpy(r.dq, q->grad, (size_t)r.nq * sizeof(real));
  memcpy(r.dk, k->grad, (size_t)r.nk * sizeof(real));
  memcpy(r.dv, v->grad, (size_t)r.nv * sizeof(real));
  at_ctx_free(c);
  return r;
}

static void run_free(run_out *r) { free(r->o), free(r->dq), free(r->dk), free(r->dv); }

static int same_bits(const real *a, const real *b, int64_t n) {
  return memcmp(a, b, (size_t)n * sizeof(real)) == 0;
}

/* A window at least T long masks nothing: identical results, bit for bit. */
Test(attention, window_at_least_T_equals_full) {
  const int64_t T = 70;
  run_out full = run(2, T, 4, 2, 8, 8, 0);
  for (int64_t W = T; W <= T + 3; W += 3) {
    run_out win = run(2, T, 4, 2, 8, 8, W);
    cr_expect(same_bits(full.o, win.o, full.no), "o differs for W = %lld", (long long)W);
    cr_expect(same_bits(full.dq, win.dq, full.nq) && same_bits(full.dk, win.dk, full.nk) &&
                  same_bits(full.dv, win.dv, full.nv),
              "gradients differ for W = %lld", (long long)W);
    run_free(&win);
  }
  /* and a shorter window does change the result */
  run_out w = run(2, T, 4, 2, 8, 8, T - 1);
  cr_expect(!same_bits(full.o, w.o, full.no));
  run_free(&w);
  run_free(&full);
}

/* Each (batch, query head) is computed by one thread and GQA sums happen in
 * a fixed order: 1 and 2 threads give the same bits. */
Test(attention, independent_of_thread_count) {
  const int64_t shapes[][7] = {{2, 150, 4, 2, 8, 8, 0}, {1, 100, 3, 1, 4, 6, 40}};
  int saved = at_threads();
  for (int s = 0; s < 2; s++) {
    const int64_t *x = shapes[s];
    at_set_threads(1);
    run_out a = run(x[0], x[1], x[2], x[3], x[4], x[5], x[6]);
    at_set_threads(2);
    run_out b = run(x[0], x[1], x[2], x[3], x[4], x[5], x[6]);
    cr_expect(same_bits(a.o, b.o, a.no) && same_bits(a.dq, b.dq, a.nq) &&
                  same_bits(a.dk, b.dk, a.nk) && same_bits(a.dv, b.dv, a.nv),
              "case %d: results depend on the thread count", s);
    run_free(&a), run_free(&b);
  }
  at_set_threads(saved);
}

/* Peak step-arena bytes of forward + backward: grows like T, not T^2 (a
 * T x T float buffer at T = 1024 alone would be 4 MB, 16x the one at 256). */
static size_t peak_bytes(int64_t T) {
  at_ctx *c = at_ctx_new((size_t)1 << 20);
  at_tensor *q = AT_RANDN(c, 1, 1, 1, T, 2, 8), *k = AT_RANDN(c, 2, 1, 1, T, 1, 8);
  at_tensor *v = AT_RANDN(c, 3, 1, 1, T, 1, 8);
  at_tensor *out = at_attention(c, q, k, v, NULL);
  cr_assert(out);
  at_fill(at_grad(c, out), out->size, 1);
  cr_assert(at_backward_from_seeded(c) == AT_OK);
  size_t peak = at_arena_high_water(c->arena);
  at_ctx_free(c);
  return peak;
}

Test(attention, memory_linear_in_T) {
  size_t a = peak_bytes(256), b = peak_bytes(1024);
  double ratio = (double)b / (double)a;
  cr_expect(ratio < 4.5, "peak bytes %zu at T = 256, %zu at T = 1024: ratio %.2f", a, b, ratio);
  cr_expect(b < (size_t)1024 * 1024 * sizeof(real), "peak %zu bytes holds a T x T buffer", b);
}

/* The decode step against the rows of the full op: the query at position
 * len-1 with the first len cached positions (the cache being the full K, V). */
static void check_decode(int64_t B, int64_t T, int64_t HQ, int64_t H, int64_t D, int64_t Dv,
                         int64_t W) {
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  at_tensor *q = AT_RANDN(c, 1, 1, B, T, HQ, D), *k = AT_RANDN(c, 2, 1, B, T, H, D);
  at_tensor *v = AT_RANDN(c, 3, 1, B, T, H, Dv);
  at_attn_opts o = {.scale = 0, .window = W};
  at_tensor *full = at_attention(c, q, k, v, &o);
  cr_assert(full);
  at_tensor *qt = at_new(c, AT_SHAPE(B, 1, HQ, D));
  real *want = malloc((size_t)(B * HQ * Dv) * sizeof(real));
  for (int64_t len = 1; len <= T; len++) {
    for (int64_t b = 0; b < B; b++) {
      memcpy(qt->data + b * HQ * D, q->data + (b * T + len - 1) * HQ * D,
             (size_t)(HQ * D) * sizeof(real));
      memcpy(want + b * HQ * Dv, full->data + (b * T + len - 1) * HQ * Dv,
             (size_t)(HQ * Dv) * sizeof(real));
    }
    at_tensor *got = at_attention_decode(c, qt, k, v, len, &o);
    cr_assert(got, "%s", at_errmsg());
    cr_assert(got->ndim == 4 && got->shape[0] == B && got->shape[1] == 1 &&
              got->shape[2] == HQ && got->shape[3] == Dv);
    cr_expect(!got->requires_grad, "decode records nothing");
    char what[96];
    snprintf(what, sizeof what, "decode T=%lld W=%lld len=%lld", (long long)T, (long long)W,
             (long long)len);
    AT_EXPECT_CLOSE(got->data, want, B * HQ * Dv, 1e-5, what);
  }
  free(want);
  at_ctx_free(c);
}

Test(attention, decode_equals_rows_of_full) {
  check_decode(2, 9, 4, 2, 8, 8, 0);    /* GQA */
  check_decode(1, 80, 2, 1, 6, 4, 0);   /* MQA, Dv != D, past one tile */
  check_decode(2, 70, 2, 2, 4, 4, 5);   /* window */
  check_decode(1, 5, 3, 3, 4, 4, 1);    /* W = 1 */
}

Test(attention, decode_last_row_with_a_rolling_buffer) {
  /* A W-slot ring (slot = position mod W) in slot order, read with W = 0:
   * the softmax does not care about key order. */
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  const int64_t T = 23, W = 6, HQ = 2, D = 4;
  at_tensor *q = AT_RANDN(c, 1, 1, 1, T, HQ, D), *k = AT_RANDN(c, 2, 1, 1, T, 1, D);
  at_tensor *v = AT_RANDN(c, 3, 1, 1, T, 1, D);
  at_attn_opts ow = {.scale = 0, .window = W};
  at_tensor *full = at_attention(c, q, k, v, &ow);
  at_tensor *kr = at_new(c, AT_SHAPE(1, W, 1, D)), *vr = at_new(c, AT_SHAPE(1, W, 1, D));
  for (int64_t p = T - W; p < T; p++) {
    memcpy(kr->data + (p % W) * D, k->data + p * D, (size_t)D * sizeof(real));
    memcpy(vr->data + (p % W) * D, v->data + p * D, (size_t)D * sizeof(real));
  }
  at_tensor *qt = at_from(c, q->data + (T - 1) * HQ * D, AT_SHAPE(1, 1, HQ, D));
  at_tensor *got = at_attention_decode(c, qt, kr, vr, W, NULL);
  cr_assert(got && full);
  AT_EXPECT_CLOSE(got->data, full->data + (T - 1) * HQ * D, HQ * D, 1e-5, "rolling buffer");
  at_ctx_free(c);
}

/* ---- errors ---------------------------------------------------------------- */

static void expect_fail(at_ctx *c, at_tensor *r, at_status st, const char *needle) {
  cr_expect(r == NULL);
  cr_expect(at_ctx_status(c) == st, "status %s, want %s", at_status_name(at_ctx_status(c)),
            at_status_name(st));
  cr_expect(strstr(at_errmsg(), needle) != NULL, "message '%s' lacks '%s'", at_errmsg(), needle);
  c->status = AT_OK; /* the status is sticky; clear it for the next case */
}

Test(attention, shape_and_option_errors) {
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  at_tensor *q = AT_RANDN(c, 1, 1, 2, 5, 3, 4), *k = AT_RANDN(c, 2, 1, 2, 5, 2, 4);
  at_tensor *v = AT_RANDN(c, 3, 1, 2, 5, 2, 4);
  expect_fail(c, at_attention(c, q, k, v, NULL), AT_E_SHAPE,
              "the 3 query heads of q [2,5,3,4] are not a multiple of the 2 kv heads");
  at_tensor *q4 = AT_RANDN(c, 1, 1, 2, 5, 4, 4);
  at_tensor *qb = AT_RANDN(c, 1, 1, 1, 5, 4, 4), *qt = AT_RANDN(c, 1, 1, 2, 6, 4, 4);
  at_tensor *qd = AT_RANDN(c, 1, 1, 2, 5, 4, 3), *v3 = AT_RANDN(c, 3, 1, 2, 4, 2, 4);
  at_tensor *x3 = AT_RANDN(c, 1, 1, 5, 4, 4);
  expect_fail(c, at_attention(c, qb, k, v, NULL), AT_E_SHAPE, "q [1,5,4,4] and k [2,5,2,4] differ in batch or length");
  expect_fail(c, at_attention(c, qt, k, v, NULL), AT_E_SHAPE, "differ in batch or length");
  expect_fail(c, at_attention(c, qd, k, v, NULL), AT_E_SHAPE, "q [2,5,4,3] and k [2,5,2,4] differ in head dim");
  expect_fail(c, at_attention(c, q4, k, v3, NULL), AT_E_SHAPE, "k [2,5,2,4] and v [2,4,2,4] differ");
  expect_fail(c, at_attention(c, x3, k, v, NULL), AT_E_SHAPE, "must be 4-D");
  at_attn_opts neg = {.scale = 0, .window = -1}, nan = {.scale = NAN, .window = 0};
  expect_fail(c, at_attention(c, q4, k, v, &neg), AT_E_ARG, "window -1");
  expect_fail(c, at_attention(c, q4, k, v, &nan), AT_E_ARG, "scale");
  cr_expect(at_attention(c, NULL, k, v, NULL) == NULL && at_ctx_status(c) == AT_OK);
  /* decode */
  at_tensor *q1 = AT_RANDN(c, 1, 1, 2, 1, 4, 4);
  expect_fail(c, at_attention_decode(c, q1, k, v, 0, NULL), AT_E_ARG, "len 0 outside 1 .. 5");
  expect_fail(c, at_attention_decode(c, q1, k, v, 6, NULL), AT_E_ARG, "len 6");
  expect_fail(c, at_attention_decode(c, q4, k, v, 5, NULL), AT_E_SHAPE, "must be [B,1,HQ,D]");
  expect_fail(c, at_attention_decode(c, AT_RANDN(c, 1, 1, 2, 1, 3, 4), k, v, 5, NULL), AT_E_SHAPE,
              "not a multiple");
  /* a valid call still works after the failures */
  cr_expect(at_attention(c, q4, k, v, NULL) != NULL, "%s", at_errmsg());
  at_ctx_free(c);
}

/* ---- fused vs the naive reference (tape backward) ----------------------------- */

typedef at_tensor *(*attn_op)(at_ctx *, at_tensor *, at_tensor *, at_tensor *,
                              const at_attn_opts *);

/* Runs `op` forward and backward (seeded with dout) and copies o, dq, dk, dv. */
static void fwd_bwd(at_ctx *c, attn_op op, at_tensor **x, const at_attn_opts *o,
                    const real *dout, real **res) {
  at_ctx_mark m = at_ctx_get_mark(c);
  for (int i = 0; i < 3; i++) x[i]->grad = NULL;
  at_tensor *out = op(c, x[0], x[1], x[2], o);
  cr_assert(out, "%s", at_errmsg());
  memcpy(at_grad(c, out), dout, (size_t)out->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  res[0] = malloc((size_t)out->size * sizeof(real));
  memcpy(res[0], out->data, (size_t)out->size * sizeof(real));
  for (int i = 0; i < 3; i++) {
    res[i + 1] = malloc((size_t)x[i]->size * sizeof(real));
    memcpy(res[i + 1], x[i]->grad, (size_t)x[i]->size * sizeof(real));
  }
  at_ctx_rewind(c, m);
}

static void fused_vs_naive(int64_t B, int64_t T, int64_t HQ, int64_t H, int64_t D, int64_t Dv,
                           int64_t W, double scale) {
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  at_tensor *x[] = {AT_RANDN(c, T + 1, 1, B, T, HQ, D), AT_RANDN(c, T + 2, 1, B, T, H, D),
                    AT_RANDN(c, T + 3, 1, B, T, H, Dv)};
  int64_t no = B * T * HQ * Dv;
  real *dout = malloc((size_t)no * sizeof(real));
  at_fill_normal(dout, no, T + 4, 1, 0, 1);
  at_attn_opts o = {.scale = scale, .window = W};
  real *f[4], *n[4];
  fwd_bwd(c, at_attention, x, &o, dout, f);
  fwd_bwd(c, at_attention_naive, x, &o, dout, n);
  const int64_t sizes[] = {no, x[0]->size, x[1]->size, x[2]->size};
  const char *names[] = {"o", "dq", "dk", "dv"};
  for (int i = 0; i < 4; i++) {
    char what[160];
    snprintf(what, sizeof what, "fused vs naive B=%lld T=%lld HQ=%lld H=%lld D=%lld Dv=%lld W=%lld: %s",
             (long long)B, (long long)T, (long long)HQ, (long long)H, (long long)D, (long long)Dv,
             (long long)W, names[i]);
    double ref = 0, worst = 0;
    for (int64_t j = 0; j < sizes[i]; j++) ref += fabs(n[i][j]), worst = fmax(worst, fabs(f[i][j]));
    if (ref == 0) /* dq, dk when every query sees one key (T = 1, W = 1): exactly 0 in the
                   * reference, rounding of dP - D (about 1e-7) in the fused op */
      cr_expect(worst < 1e-5, "%s: %g should be 0", what, worst);
    else
      AT_EXPECT_CLOSE(f[i], n[i], sizes[i], 1e-4, what);
    free(f[i]), free(n[i]);
  }
  free(dout);
  at_ctx_free(c);
}

Test(attention, fused_vs_naive_small) {
  fused_vs_naive(2, 37, 2, 2, 16, 16, 0, 0);  /* the golden shapes: MHA */
  fused_vs_naive(2, 37, 4, 2, 16, 8, 0, 0);   /* GQA, Dv != D */
  fused_vs_naive(2, 37, 4, 1, 16, 16, 9, 0);  /* MQA, window */
  fused_vs_naive(1, 1, 2, 1, 4, 4, 0, 0);     /* T = 1 */
  fused_vs_naive(2, 20, 3, 3, 8, 8, 1, 0);    /* W = 1 */
  fused_vs_naive(1, 20, 2, 2, 8, 8, 0, 0.5);  /* explicit scale */
}

/* T = 150 spans three tiles of 64 (the last partial): the online softmax
 * over several key tiles, diagonal tiles, tiles skipped above the diagonal
 * and below the window, window edges inside and across tiles. */
Test(attention, fused_vs_naive_several_tiles) {
  fused_vs_naive(1, 150, 2, 2, 8, 8, 0, 0);    /* MHA */
  fused_vs_naive(2, 150, 4, 2, 8, 8, 20, 0);   /* GQA, window inside a tile */
  fused_vs_naive(1, 150, 4, 1, 8, 4, 64, 0);   /* MQA, window = tile */
  fused_vs_naive(1, 150, 2, 1, 8, 8, 100, 0);  /* window across tiles */
  fused_vs_naive(1, 150, 1, 1, 8, 8, 0, 0);    /* HQ = H = 1 */
  fused_vs_naive(1, 150, 2, 2, 8, 8, 150, 0);  /* W = T */
  fused_vs_naive(1, 70, 4, 4, 48, 32, 0, 0);   /* MLA-like dims: q/k 48, v 32 */
}
