/* data/internal.h: what the task files share (not a public header).
 *
 * tasks.c owns the at_task object, the training permutation and batching;
 * each task file provides a check, an optional open/close, the per-thread
 * scratch size and the example generator in an at_task_ops table.
 */
#ifndef AT_DATA_INTERNAL_H
#define AT_DATA_INTERNAL_H

#include <stddef.h>

#include "core/rng.h"
#include "data/data.h"

typedef struct at_task_ops {
  /* Parameters of this task kind (the generic ones are checked already). */
  at_status (*check)(const at_task_cfg *cfg, const char **bad_key);
  /* Precomputes tables / loads the corpus into t (may be NULL). */
  at_status (*open)(at_task *t);
  void (*close)(at_task *t); /* may be NULL */
  /* Bytes of scratch one thread needs to generate an example. */
  size_t (*scratch)(const at_task *t);
  /* Example `i` of `split`: fills tok[T], lab[T] and *group. `r` is the
   * example's own random stream (seed, stream of (split, i)). */
  void (*example)(const at_task *t, at_split split, int64_t i, at_rng *r, int32_t *tok,
                  int32_t *lab, int32_t *group, void *scratch);
} at_task_ops;

struct at_task {
  at_task_cfg cfg;
  const at_task_ops *ops;
  int64_t size[2];        /* examples per split */
  int num_groups;
  char (*group_names)[48]; /* num_groups names, or NULL for the single group "all" */
  /* mqar (Zoology layout): unnormalised power-law weights of the query slots */
  double *gap_weight;
  int64_t gap_space;
  /* text: the two splits, text_len[k] tokens of token_bytes bytes each
   * (1: a byte corpus; 2 or 4: a token file, native uint16 / uint32) */
  uint8_t *text[2];
  int64_t text_len[2];
  int token_bytes;
  int64_t text_tiles;     /* held-out windows available */
};

/* Each task file's table (functions, not exported variables: ASan gives
 * global variables extra symbols the at_ prefix check would reject). */
const at_task_ops *at_mqar_ops(void);
const at_task_ops *at_palindrome_ops(void);
const at_task_ops *at_stack_ops(void);
const at_task_ops *at_selective_copy_ops(void);
const at_task_ops *at_niah_ops(void);
const at_task_ops *at_text_ops(void);

/* Pre-tokenized corpora (data/tokens.c): a *.bin file in llm.c's or
 * nanoGPT's layout. */
typedef struct at_token_file {
  int width;            /* bytes per token: 2 or 4 */
  int64_t offset;       /* bytes before the first token (the header) */
  int64_t n;            /* tokens */
  int64_t vocab;        /* the vocabulary the file declares, 0 if it does not say */
  const char *format;   /* "llm.c GPT-2 uint16", "nanoGPT uint16", ... */
} at_token_file;
/* 1 if `path` is a regular file named *.bin. */
int at_is_token_file(const char *path);
/* The layout, size and vocabulary of a token file, checked against its size. */
at_status at_token_file_probe(const char *path, at_token_file *tf);
/* Reads every token into dst (n tokens of width bytes; NULL: only check),
 * refusing any token >= vocab. */
at_status at_token_file_read(const char *path, const at_token_file *tf, int64_t vocab, void *dst);

/* A check failure: sets *bad_key (when bad_key is not NULL) and the message. */
at_status at_task_bad(const char **bad_key, const char *key, at_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The random stream of example i of a split; the training permutation of
 * epoch e uses at_data_perm_stream(e). The top byte keeps them apart. */
static inline uint64_t at_data_stream(at_split split, int64_t i) {
  return ((uint64_t)(split + 1) << 56) ^ (uint64_t)i;
}
static inline uint64_t at_data_perm_stream(uint64_t epoch) { return (3ull << 56) ^ epoch; }

/* Uniform integer in [lo, lo + n). */
static inline int32_t at_data_pick(at_rng *r, int64_t lo, int64_t n) {
  return (int32_t)(lo + (int64_t)at_rng_below(r, (uint64_t)n));
}

#endif
