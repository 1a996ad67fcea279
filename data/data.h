/* data/data.h: seeded, deterministic tasks.
 *
 * A task yields examples as (tokens, labels): tokens [T] are the model's
 * input ids, labels [T] the next-token target at each position, or
 * AT_IGNORE_LABEL where the position is not scored. Loss and accuracy are
 * computed on labelled positions only. Example i of a split is a pure
 * function of (seed, split, i); the training order within each epoch is a
 * seeded permutation, so a run's data position is one integer (the number
 * of training examples consumed) and resuming is exact.
 */
#ifndef AT_DATA_H
#define AT_DATA_H

#include "core/base.h"

#define AT_IGNORE_LABEL (-100)

typedef enum at_task_kind {
  AT_TASK_MQAR,           /* Zoology multi-query associative recall (or Kimi's contiguous layout) */
  AT_TASK_PALINDROME,     /* reverse the sequence after a separator (Kimi Linear Fig. 4) */
  AT_TASK_STACK,          /* push/pop on several stacks, predict the popped symbol (Kimi) */
  AT_TASK_SELECTIVE_COPY, /* copy the marked tokens, in order, after the filler */
  AT_TASK_NIAH,           /* a key-value needle at a controlled depth in filler */
  AT_TASK_TEXT,           /* byte-level language modelling from a file */
  AT_TASK_COUNT
} at_task_kind;

typedef enum at_split { AT_SPLIT_TRAIN = 0, AT_SPLIT_TEST = 1 } at_split;

typedef struct at_task_cfg {
  at_task_kind kind;
  uint64_t seed;
  int64_t vocab_size;      /* ids are in [0, vocab_size); text: 256, or a token file's */
  int64_t seq_len;         /* T, the model's input length */
  int64_t train_examples;  /* size of the training set (text: sequences per epoch) */
  int64_t test_examples;   /* text: at most this many held-out windows (0: all) */
  /* mqar */
  int64_t num_kv_pairs;
  double power_a;          /* Zoology's query-gap power law, 0.01 */
  int random_non_queries;  /* non-query slots random (1) or 0 (0) */
  int query_contiguous;    /* 0: Zoology (queries interleaved at power-law gaps);
                              1: Kimi Linear (all pairs, a separator, then the queries) */
  /* palindrome: sequence length to reverse (0: as long as seq_len allows) */
  int64_t palindrome_len;
  /* stack */
  int64_t num_stacks;
  int64_t num_symbols;     /* distinct pushable symbols (0: what the vocabulary allows);
                              also the data symbols of palindrome and selective_copy and
                              the filler symbols of niah */
  /* selective copy */
  int64_t num_tokens_to_copy;
  /* niah */
  int64_t num_depth_buckets;
  /* text */
  char path[1024];         /* a text file, a directory of text files, or a *.bin token file */
  double val_fraction;     /* held-out share of the corpus */
  char cache[1024];        /* HDF5 token cache path ("" = next to the results; the
                              trainer fills it in; left empty, at_task_open reads the
                              source every time and writes no cache) */
} at_task_cfg;

const char *at_task_name(at_task_kind k);
/* -1 if unknown. */
int at_task_from_name(const char *name);
/* Defaults for a task kind (Zoology / Kimi Linear settings). */
void at_task_cfg_defaults(at_task_cfg *cfg, at_task_kind kind);
/* Checks the parameters (lengths fit, vocabulary large enough, file
 * exists...). On failure *bad_key names the offending key (e.g.
 * "num_kv_pairs") so a config loader can point at it. */
at_status at_task_check(const at_task_cfg *cfg, const char **bad_key);

typedef struct at_task at_task;
at_status at_task_open(const at_task_cfg *cfg, at_task **out);
void at_task_free(at_task *t);
int64_t at_task_size(const at_task *t, at_split split);
/* The vocabulary a `text` corpus declares: that of an llm.c token file's
 * tokenizer, else 0 (a byte corpus is 256 by default; a nanoGPT token file
 * does not say). 0 for the other tasks. */
int64_t at_task_corpus_vocab(const at_task_cfg *cfg);
/* 1 for byte-level language modelling (`text` from text files, not tokens):
 * its loss is reported in bits per byte. */
int at_task_byte_level(const at_task_cfg *cfg);
/* Examples first .. first+batch-1 of a split (indices wrap around epochs; in
 * the training split each epoch is a fresh seeded permutation). tokens and
 * labels are [batch, T]; groups [batch] (may be NULL) receives each
 * example's group (NIAH depth bucket; 0 otherwise). */
void at_task_batch(at_task *t, at_split split, int64_t first, int64_t batch, int32_t *tokens,
                   int32_t *labels, int32_t *groups);
/* Number of groups for per-group accuracy (NIAH depth buckets; 1 otherwise)
 * and a name for each ("depth 0-10%"). */
int at_task_num_groups(const at_task *t);
const char *at_task_group_name(const at_task *t, int g);

#endif
