/* core/: arenas, tensors, errors, RNG. */
#include <string.h>

#include "core/tensor.h"
#include "testing.h"

Test(arena, alignment_and_growth) {
  at_arena *a = at_arena_new(256);
  for (int i = 0; i < 100; i++) {
    void *p = at_arena_alloc(a, (size_t)(i * 37 + 1));
    cr_assert(p != NULL);
    cr_expect(((uintptr_t)p & 63) == 0, "allocation %d not 64-byte aligned", i);
    memset(p, 0xab, (size_t)(i * 37 + 1));
  }
  cr_expect(at_arena_block_allocs(a) > 1);
  size_t hw = at_arena_high_water(a);
  at_arena_reset(a);
  size_t allocs = at_arena_block_allocs(a);
  cr_expect(at_arena_capacity(a) >= hw, "reset keeps a block as large as the high water");
  for (int rep = 0; rep < 5; rep++) { /* same fill again: no new block */
    for (int i = 0; i < 100; i++) cr_assert(at_arena_alloc(a, (size_t)(i * 37 + 1)));
    at_arena_reset(a);
  }
  cr_expect(at_arena_block_allocs(a) == allocs, "steady state must not allocate");
  at_arena_free(a);
}

Test(arena, mark_and_rewind) {
  at_arena *a = at_arena_new(128);
  at_arena_alloc(a, 100);
  at_arena_mark m = at_arena_get_mark(a);
  size_t used = at_arena_used(a);
  for (int i = 0; i < 20; i++) at_arena_alloc(a, 1000);
  at_arena_rewind(a, m);
  cr_expect(at_arena_used(a) == used);
  at_arena_free(a);
}

Test(arena, out_of_memory_is_reported) {
  at_arena *a = at_arena_new(64);
  void *p = at_arena_alloc(a, (size_t)1 << 62);
  cr_expect(p == NULL);
  cr_expect(strstr(at_errmsg(), "out of memory") != NULL, "message: %s", at_errmsg());
  at_arena_free(a);
}

Test(tensor, shapes) {
  at_arena *a = at_arena_new(1024);
  at_tensor *t = at_tensor_alloc(a, AT_SHAPE(2, 3, 4, 5));
  cr_assert(t);
  cr_expect(t->size == 120 && t->ndim == 4);
  char buf[96];
  cr_expect_str_eq(AT_SHAPE_STR(t, buf), "[2,3,4,5]");
  cr_expect(at_tensor_alloc(a, 5, (const int64_t[]){1, 1, 1, 1, 1}) == NULL);
  cr_expect(at_tensor_alloc(a, AT_SHAPE(2, -1)) == NULL);
  at_arena_free(a);
}

Test(rng, deterministic_and_independent_of_order) {
  at_rng r1 = at_rng_make(42, 7), r2 = at_rng_make(42, 7), r3 = at_rng_make(42, 8);
  int same = 1, diff = 0;
  for (int i = 0; i < 1000; i++) {
    uint32_t a = at_rng_u32(&r1), b = at_rng_u32(&r2), c = at_rng_u32(&r3);
    same &= a == b;
    diff += a != c;
  }
  cr_expect(same);
  cr_expect(diff > 990);
  /* a fill is a pure function of (seed, stream, index) */
  real x[101], y[101];
  at_fill_normal(x, 101, 5, 3, 0, 1);
  at_fill_normal(y, 101, 5, 3, 0, 1);
  cr_expect(memcmp(x, y, sizeof x) == 0);
  at_fill_normal(y, 100, 5, 3, 0, 1); /* a prefix of the same stream */
  cr_expect(memcmp(x, y, 100 * sizeof(real)) == 0);
}

Test(rng, moments) {
  at_rng r = at_rng_make(1, 2);
  double s = 0, s2 = 0, u = 0;
  int n = 200000;
  for (int i = 0; i < n; i++) {
    double z = at_rng_normal(&r);
    s += z, s2 += z * z;
    u += at_rng_uniform(&r);
  }
  cr_expect(fabs(s / n) < 0.01 && fabs(s2 / n - 1) < 0.02 && fabs(u / n - 0.5) < 0.005);
  int counts[7] = {0};
  for (int i = 0; i < 70000; i++) counts[at_rng_below(&r, 7)]++;
  for (int i = 0; i < 7; i++) cr_expect(abs(counts[i] - 10000) < 500, "bucket %d: %d", i, counts[i]);
}

Test(status, messages) {
  at_status s = at_error(AT_E_IO, "cannot open %s", "x.h5");
  cr_expect(s == AT_E_IO);
  at_error_prefix(s, "loading checkpoint");
  cr_expect_str_eq(at_errmsg(), "loading checkpoint: cannot open x.h5");
  cr_expect_str_eq(at_status_name(AT_E_SHAPE), "shape mismatch");
}
