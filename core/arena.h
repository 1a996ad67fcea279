/* core/arena.h: bump allocators.
 *
 * A training run has two: the parameter arena (parameters, gradients and
 * optimiser state; lives for the run) and the step arena (activations, saved
 * contexts, activation gradients; reset after each optimiser step). After the
 * first step the step arena holds one block as large as the largest step, so
 * later steps do no malloc at all; `at_arena_block_allocs` lets tests see it.
 */
#ifndef AT_ARENA_H
#define AT_ARENA_H

#include "core/base.h"

typedef struct at_arena at_arena;

/* A position to rewind to (everything allocated after it is released). */
typedef struct at_arena_mark {
  void *block;
  size_t used;
} at_arena_mark;

at_arena *at_arena_new(size_t initial_bytes);
void at_arena_free(at_arena *a);
/* 64-byte aligned, uninitialised; NULL (with at_errmsg set) when out of memory. */
void *at_arena_alloc(at_arena *a, size_t bytes);
void *at_arena_calloc(at_arena *a, size_t bytes);
/* Releases everything. If the last fill needed more than one block, the
 * blocks are replaced by one block of the high-water size, so the next fill
 * of the same size does not allocate. */
void at_arena_reset(at_arena *a);
at_arena_mark at_arena_get_mark(const at_arena *a);
void at_arena_rewind(at_arena *a, at_arena_mark m);
size_t at_arena_used(const at_arena *a);       /* bytes in use now */
size_t at_arena_high_water(const at_arena *a); /* most bytes ever in use */
size_t at_arena_capacity(const at_arena *a);   /* bytes held from the system */
size_t at_arena_block_allocs(const at_arena *a); /* malloc calls so far */

#endif
