/* core/arena.c: bump allocator over a list of blocks.
 *
 * Blocks of AT_HUGE bytes and more are mapped directly, 2 MB aligned, and
 * marked for transparent huge pages: a training step's arena (hundreds of MB)
 * is then faulted in 512 times fewer pieces in the first steps, and costs
 * fewer TLB misses in every step. Blocks are kept across resets (only merged
 * once into one block of the high-water size), so later steps touch the same
 * pages and fault nothing.
 */
#define _DEFAULT_SOURCE
#include "core/arena.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define AT_ALIGN 64
#define AT_HUGE ((size_t)4 << 20)
#define AT_HUGE_PAGE ((size_t)2 << 20)

typedef struct block {
  struct block *next; /* blocks in allocation order */
  size_t size, used;
  unsigned char *mem;
  void *map;          /* the mapping (NULL: mem is from aligned_alloc) */
  size_t map_bytes;
} block;

struct at_arena {
  block *first, *cur;
  size_t used_before_cur; /* bytes used in blocks before cur */
  size_t high_water;
  size_t n_allocs;
};

static size_t align_up(size_t n) { return (n + AT_ALIGN - 1) & ~(size_t)(AT_ALIGN - 1); }

/* size bytes in whole huge pages, mapped with a huge-page aligned start;
 * NULL if the system refuses (the caller falls back to aligned_alloc). */
static unsigned char *map_huge(size_t size, void **map, size_t *map_bytes) {
  size_t want = (size + AT_HUGE_PAGE - 1) / AT_HUGE_PAGE * AT_HUGE_PAGE, bytes = want + AT_HUGE_PAGE;
  void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return NULL;
  uintptr_t start = ((uintptr_t)p + AT_HUGE_PAGE - 1) & ~(uintptr_t)(AT_HUGE_PAGE - 1);
#ifdef MADV_HUGEPAGE
  madvise((void *)start, want, MADV_HUGEPAGE); /* a hint: without it, small pages */
#endif
  *map = p, *map_bytes = bytes;
  return (unsigned char *)start;
}

static block *block_new(at_arena *a, size_t size) {
  block *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  size = align_up(size);
  if (size >= AT_HUGE) b->mem = map_huge(size, &b->map, &b->map_bytes);
  if (!b->mem) b->mem = aligned_alloc(AT_ALIGN, size);
  if (!b->mem) {
    free(b);
    return NULL;
  }
  b->size = size;
  a->n_allocs++;
  return b;
}

static void block_free(block *b) {
  if (b->map)
    munmap(b->map, b->map_bytes);
  else
    free(b->mem);
  free(b);
}

at_arena *at_arena_new(size_t initial_bytes) {
  at_arena *a = calloc(1, sizeof *a);
  if (!a) return NULL;
  a->first = a->cur = block_new(a, initial_bytes ? initial_bytes : (1u << 20));
  if (!a->first) {
    free(a);
    return NULL;
  }
  return a;
}

static void free_blocks(block *b) {
  while (b) {
    block *n = b->next;
    block_free(b);
    b = n;
  }
}

void at_arena_free(at_arena *a) {
  if (!a) return;
  free_blocks(a->first);
  free(a);
}

void *at_arena_alloc(at_arena *a, size_t bytes) {
  size_t n = align_up(bytes ? bytes : 1);
  block *b = a->cur;
  while (b->used + n > b->size) {
    if (b->next) { /* a later block kept from before a rewind */
      a->used_before_cur += b->used;
      b = a->cur = b->next;
      b->used = 0;
      continue;
    }
    size_t want = AT_MAX(n, 2 * b->size);
    block *nb = block_new(a, want);
    if (!nb) {
      at_error(AT_E_NOMEM, "out of memory allocating %zu bytes (arena holds %zu)", bytes,
               at_arena_capacity(a));
      return NULL;
    }
    b->next = nb;
    a->used_before_cur += b->used;
    b = a->cur = nb;
  }
  void *p = b->mem + b->used;
  b->used += n;
  size_t u = a->used_before_cur + b->used;
  if (u > a->high_water) a->high_water = u;
  return p;
}

void *at_arena_calloc(at_arena *a, size_t bytes) {
  void *p = at_arena_alloc(a, bytes);
  if (p) memset(p, 0, bytes);
  return p;
}

void at_arena_reset(at_arena *a) {
  if (a->first->next) {
    /* Merge: one block big enough for the largest fill seen. */
    size_t want = a->high_water + a->high_water / 8;
    block *nb = block_new(a, want);
    if (nb) {
      free_blocks(a->first);
      a->first = nb;
    }
  }
  for (block *b = a->first; b; b = b->next) b->used = 0;
  a->cur = a->first;
  a->used_before_cur = 0;
}

at_arena_mark at_arena_get_mark(const at_arena *a) {
  at_arena_mark m = {a->cur, a->cur->used};
  return m;
}

void at_arena_rewind(at_arena *a, at_arena_mark m) {
  size_t before = 0;
  block *b = a->first;
  while (b && b != (block *)m.block) {
    before += b->used;
    b = b->next;
  }
  AT_ASSERT_MSG(b != NULL, "arena mark from another arena or released block");
  for (block *c = b->next; c; c = c->next) c->used = 0;
  b->used = m.used;
  a->cur = b;
  a->used_before_cur = before;
}

size_t at_arena_used(const at_arena *a) { return a->used_before_cur + a->cur->used; }
size_t at_arena_high_water(const at_arena *a) { return a->high_water; }
size_t at_arena_block_allocs(const at_arena *a) { return a->n_allocs; }

size_t at_arena_capacity(const at_arena *a) {
  size_t n = 0;
  for (const block *b = a->first; b; b = b->next) n += b->size;
  return n;
}
