/* core/rng.h: counter-based random numbers (Philox4x32-10).
 *
 * A number is a pure function of (seed, stream, position), so results never
 * depend on the thread count or on the order in which work is done: a
 * parameter's initial values use the stream of its name and the element
 * index; a data generator uses the stream of the example index. The whole
 * state of a sequential generator is four integers, stored in checkpoints.
 */
#ifndef AT_RNG_H
#define AT_RNG_H

#include "core/base.h"

/* The raw block function: 4 x 32 random bits for a 128-bit counter. */
void at_philox(uint64_t seed, uint64_t stream, uint64_t position, uint32_t out[4]);

typedef struct at_rng {
  uint64_t seed, stream, position; /* position counts 32-bit outputs */
} at_rng;

at_rng at_rng_make(uint64_t seed, uint64_t stream);
uint32_t at_rng_u32(at_rng *r);
uint64_t at_rng_u64(at_rng *r);
double at_rng_uniform(at_rng *r);          /* [0, 1) with 53 random bits */
double at_rng_normal(at_rng *r);           /* standard normal */
uint64_t at_rng_below(at_rng *r, uint64_t n); /* uniform in [0, n), unbiased */

/* A stream id from a name (FNV-1a), e.g. a parameter's name. */
uint64_t at_stream_of(const char *name);

/* Stateless fills: element i depends only on (seed, stream, i). */
void at_fill_normal(real *x, int64_t n, uint64_t seed, uint64_t stream, double mean, double std);
void at_fill_uniform(real *x, int64_t n, uint64_t seed, uint64_t stream, double lo, double hi);

#endif
