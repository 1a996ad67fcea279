/* core/rng.c: Philox4x32-10 (Salmon et al., SC'11). */
#include "core/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
  uint64_t p = (uint64_t)a * b;
  *hi = (uint32_t)(p >> 32);
  *lo = (uint32_t)p;
}

void at_philox(uint64_t seed, uint64_t stream, uint64_t position, uint32_t out[4]) {
  uint32_t c0 = (uint32_t)position, c1 = (uint32_t)(position >> 32);
  uint32_t c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(PHILOX_M0, c0, &hi0, &lo0);
    mulhilo(PHILOX_M1, c2, &hi1, &lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0, c1 = n1, c2 = n2, c3 = n3;
    k0 += PHILOX_W0;
    k1 += PHILOX_W1;
  }
  out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

at_rng at_rng_make(uint64_t seed, uint64_t stream) {
  at_rng r = {seed, stream, 0};
  return r;
}

uint32_t at_rng_u32(at_rng *r) {
  uint32_t block[4];
  at_philox(r->seed, r->stream, r->position >> 2, block);
  return block[r->position++ & 3];
}

uint64_t at_rng_u64(at_rng *r) {
  uint64_t hi = at_rng_u32(r);
  return (hi << 32) | at_rng_u32(r);
}

double at_rng_uniform(at_rng *r) { return (double)(at_rng_u64(r) >> 11) * 0x1.0p-53; }

double at_rng_normal(at_rng *r) {
  double u1 = at_rng_uniform(r), u2 = at_rng_uniform(r);
  return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

uint64_t at_rng_below(at_rng *r, uint64_t n) {
  if (n <= 1) return 0;
  uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* reject the biased tail */
  uint64_t x;
  do x = at_rng_u64(r);
  while (x >= limit);
  return x % n;
}

uint64_t at_stream_of(const char *name) {
  uint64_t h = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 1099511628211ull;
  return h;
}

static double u53(uint32_t hi, uint32_t lo) {
  return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1.0p-53;
}

void at_fill_normal(real *x, int64_t n, uint64_t seed, uint64_t stream, double mean, double std) {
  for (int64_t i = 0; i < n; i += 2) {
    uint32_t b[4];
    at_philox(seed, stream, (uint64_t)i / 2, b);
    double u1 = u53(b[0], b[1]), u2 = u53(b[2], b[3]);
    double rad = sqrt(-2.0 * log(1.0 - u1));
    x[i] = (real)(mean + std * rad * cos(2.0 * M_PI * u2));
    if (i + 1 < n) x[i + 1] = (real)(mean + std * rad * sin(2.0 * M_PI * u2));
  }
}

void at_fill_uniform(real *x, int64_t n, uint64_t seed, uint64_t stream, double lo, double hi) {
  for (int64_t i = 0; i < n; i += 2) {
    uint32_t b[4];
    at_philox(seed, stream, (uint64_t)i / 2, b);
    x[i] = (real)(lo + (hi - lo) * u53(b[0], b[1]));
    if (i + 1 < n) x[i + 1] = (real)(lo + (hi - lo) * u53(b[2], b[3]));
  }
}
