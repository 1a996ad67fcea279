/* data/: generator invariants for every task, determinism (seeds, batch
 * splitting, thread counts, epoch permutations), constraint errors naming
 * the bad key, the text corpus split and its HDF5 token cache. */
#define _GNU_SOURCE /* nftw, symlink, utimensat */
#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/h5io.h"
#include "data/data.h"
#include "testing.h"

/* ---- helpers ------------------------------------------------------------------------- */

typedef struct batch {
  int64_t n, T;
  int32_t *tok, *lab, *grp;
} batch;

static at_task *open_task(const at_task_cfg *cfg) {
  at_task *t = NULL;
  at_status st = at_task_open(cfg, &t);
  cr_assert(st == AT_OK, "at_task_open(%s): %s", at_task_name(cfg->kind), at_errmsg());
  return t;
}

static batch get(at_task *t, const at_task_cfg *cfg, at_split split, int64_t first, int64_t n) {
  batch b = {n, cfg->seq_len, NULL, NULL, NULL};
  b.tok = malloc((size_t)(n * b.T) * sizeof *b.tok);
  b.lab = malloc((size_t)(n * b.T) * sizeof *b.lab);
  b.grp = malloc((size_t)AT_MAX(n, 1) * sizeof *b.grp);
  cr_assert(b.tok && b.lab && b.grp);
  at_task_batch(t, split, first, n, b.tok, b.lab, b.grp);
  return b;
}

static void drop(batch *b) {
  free(b->tok), free(b->lab), free(b->grp);
  memset(b, 0, sizeof *b);
}

static int same(const batch *a, const batch *b) {
  return a->n == b->n && a->T == b->T &&
         memcmp(a->tok, b->tok, (size_t)(a->n * a->T) * sizeof *a->tok) == 0 &&
         memcmp(a->lab, b->lab, (size_t)(a->n * a->T) * sizeof *a->lab) == 0 &&
         memcmp(a->grp, b->grp, (size_t)a->n * sizeof *a->grp) == 0;
}

static uint64_t fnv(const void *p, size_t n, uint64_t h) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

static uint64_t fingerprint(const batch *b, int64_t i) {
  uint64_t h = fnv(b->tok + i * b->T, (size_t)b->T * sizeof(int32_t), 1469598103934665603ull);
  return fnv(b->lab + i * b->T, (size_t)b->T * sizeof(int32_t), h);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static at_task_cfg cfg_of(at_task_kind k) {
  at_task_cfg c;
  at_task_cfg_defaults(&c, k);
  return c;
}

static int count_labels(const int32_t *lab, int64_t T) {
  int n = 0;
  for (int64_t p = 0; p < T; p++) n += lab[p] != AT_IGNORE_LABEL;
  return n;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static void rmtree(const char *dir) {
  if (access(dir, F_OK) == 0) cr_expect(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0, "rm %s", dir);
}

static void tmpdir(char *buf, size_t n, const char *tag) {
  snprintf(buf, n, "/tmp/attnlab_data_%s_%d", tag, (int)getpid());
  rmtree(buf);
  cr_assert(mkdir(buf, 0700) == 0, "mkdir %s", buf);
}

static void write_file(const char *path, const char *text, size_t n) {
  FILE *f = fopen(path, "wb");
  cr_assert(f, "cannot write %s", path);
  cr_assert(fwrite(text, 1, n, f) == n);
  fclose(f);
}

/* ---- names and defaults ---------------------------------------------------------------- */

Test(data, names_round_trip) {
  for (int k = 0; k < AT_TASK_COUNT; k++) {
    const char *name = at_task_name((at_task_kind)k);
    cr_expect(at_task_from_name(name) == k, "%s", name);
  }
  cr_expect_str_eq(at_task_name(AT_TASK_SELECTIVE_COPY), "selective_copy");
  cr_expect(at_task_from_name("mqar") == AT_TASK_MQAR);
  cr_expect(at_task_from_name("MQAR") == -1);
  cr_expect(at_task_from_name("nope") == -1);
  cr_expect(at_task_from_name(NULL) == -1);
}

Test(data, defaults) {
  at_task_cfg c = cfg_of(AT_TASK_MQAR);
  cr_expect(c.kind == AT_TASK_MQAR && c.vocab_size == 8192 && c.seq_len == 64 && c.num_kv_pairs == 4);
  cr_expect(c.power_a == 0.01 && c.random_non_queries == 1 && c.query_contiguous == 0);
  cr_expect(c.train_examples == 20000 && c.test_examples == 1000);
  cr_expect(cfg_of(AT_TASK_TEXT).vocab_size == 256);
  for (int k = 0; k < AT_TASK_COUNT; k++) {
    if (k == AT_TASK_TEXT) continue; /* needs the corpus: see text_default_corpus */
    c = cfg_of((at_task_kind)k);
    const char *bad = "unset";
    cr_expect(at_task_check(&c, &bad) == AT_OK, "%s: %s", at_task_name((at_task_kind)k), at_errmsg());
    cr_expect(bad == NULL);
  }
}

/* ---- constraint errors name the key --------------------------------------------------------- */

typedef struct bad_case {
  at_task_kind kind;
  const char *key;
  void (*mutate)(at_task_cfg *);
} bad_case;

#define MUT(name, body) static void name(at_task_cfg *c) { body; }
MUT(m_odd_T, c->seq_len = 63)
MUT(m_many_pairs, c->num_kv_pairs = 17)
MUT(m_small_vocab, c->vocab_size = 64)
MUT(m_power, c->power_a = 0)
MUT(m_contig_flag, c->query_contiguous = 2)
MUT(m_rnq_flag, c->random_non_queries = -1)
MUT(m_zero_pairs, c->num_kv_pairs = 0)
MUT(m_contig_pairs, (c->query_contiguous = 1, c->num_kv_pairs = 22))
MUT(m_contig_vocab, (c->query_contiguous = 1, c->vocab_size = 16, c->num_kv_pairs = 8))
MUT(m_pal_len, c->palindrome_len = 33)
MUT(m_pal_vocab, c->vocab_size = 3)
MUT(m_pal_syms, c->num_symbols = 31)
MUT(m_pal_short, c->seq_len = 4)
MUT(m_stacks0, c->num_stacks = 0)
MUT(m_stack_vocab, c->vocab_size = 12)
MUT(m_stack_syms, c->num_symbols = 30)
MUT(m_stack_T, c->seq_len = 5)
MUT(m_copy_many, c->num_tokens_to_copy = 128)
MUT(m_copy_vocab, c->vocab_size = 3)
MUT(m_buckets0, c->num_depth_buckets = 0)
MUT(m_buckets_many, (c->seq_len = 64, c->num_depth_buckets = 59))
MUT(m_niah_vocab, c->vocab_size = 6)
MUT(m_niah_filler, c->num_symbols = 125)
MUT(m_text_vocab, c->vocab_size = 128)
MUT(m_val0, c->val_fraction = 0)
MUT(m_val1, c->val_fraction = 1)
MUT(m_train0, c->train_examples = 0)
MUT(m_test0, c->test_examples = 0)
MUT(m_T1, c->seq_len = 1)
MUT(m_V1, c->vocab_size = 1)
MUT(m_kind, c->kind = AT_TASK_COUNT)

Test(data, constraint_errors_name_the_key) {
  static const bad_case cases[] = {
    {AT_TASK_MQAR, "seq_len", m_odd_T},
    {AT_TASK_MQAR, "num_kv_pairs", m_many_pairs},
    {AT_TASK_MQAR, "vocab_size", m_small_vocab},
    {AT_TASK_MQAR, "power_a", m_power},
    {AT_TASK_MQAR, "query_contiguous", m_contig_flag},
    {AT_TASK_MQAR, "random_non_queries", m_rnq_flag},
    {AT_TASK_MQAR, "num_kv_pairs", m_zero_pairs},
    {AT_TASK_MQAR, "num_kv_pairs", m_contig_pairs},
    {AT_TASK_MQAR, "vocab_size", m_contig_vocab},
    {AT_TASK_MQAR, "train_examples", m_train0},
    {AT_TASK_MQAR, "test_examples", m_test0},
    {AT_TASK_MQAR, "seq_len", m_T1},
    {AT_TASK_MQAR, "vocab_size", m_V1},
    {AT_TASK_MQAR, "task", m_kind},
    {AT_TASK_PALINDROME, "palindrome_len", m_pal_len},
    {AT_TASK_PALINDROME, "vocab_size", m_pal_vocab},
    {AT_TASK_PALINDROME, "num_symbols", m_pal_syms},
    {AT_TASK_PALINDROME, "seq_len", m_pal_short},
    {AT_TASK_STACK, "num_stacks", m_stacks0},
    {AT_TASK_STACK, "num_symbols", m_stack_vocab}, /* num_symbols 16 set by the defaults */
    {AT_TASK_STACK, "num_symbols", m_stack_syms},
    {AT_TASK_STACK, "seq_len", m_stack_T},
    {AT_TASK_SELECTIVE_COPY, "num_tokens_to_copy", m_copy_many},
    {AT_TASK_SELECTIVE_COPY, "vocab_size", m_copy_vocab},
    {AT_TASK_NIAH, "num_depth_buckets", m_buckets0},
    {AT_TASK_NIAH, "num_depth_buckets", m_buckets_many},
    {AT_TASK_NIAH, "num_symbols", m_niah_vocab},
    {AT_TASK_NIAH, "num_symbols", m_niah_filler},
    {AT_TASK_TEXT, "vocab_size", m_text_vocab},
    {AT_TASK_TEXT, "val_fraction", m_val0},
    {AT_TASK_TEXT, "val_fraction", m_val1},
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) {
    at_task_cfg c = cfg_of(cases[i].kind);
    cases[i].mutate(&c);
    const char *bad = NULL;
    at_status st = at_task_check(&c, &bad);
    cr_expect(st != AT_OK, "case %d (%s, %s) accepted", i, at_task_name(cases[i].kind), cases[i].key);
    cr_expect(bad && strcmp(bad, cases[i].key) == 0, "case %d (%s): bad key %s, expected %s (%s)", i,
              at_task_name(cases[i].kind), bad ? bad : "NULL", cases[i].key, at_errmsg());
    cr_expect(strstr(at_errmsg(), cases[i].key) != NULL || strcmp(cases[i].key, "task") == 0,
              "case %d: message should name %s: %s", i, cases[i].key, at_errmsg());
    at_task *t = (at_task *)&c; /* poison: must become NULL */
    cr_expect(at_task_open(&c, &t) != AT_OK && t == NULL, "case %d: open accepted", i);
  }
  /* NIAH with vocab 6 and the default 32 filler symbols names num_symbols; with 0 it is vocab_size */
  at_task_cfg c = cfg_of(AT_TASK_NIAH);
  c.vocab_size = 6, c.num_symbols = 0;
  const char *bad = NULL;
  cr_expect(at_task_check(&c, &bad) != AT_OK && bad && strcmp(bad, "vocab_size") == 0);
  cr_expect(at_task_check(&c, NULL) != AT_OK, "a NULL bad_key pointer is allowed");
  /* the boundary cases are accepted: 4N = T, V = T + 1 */
  c = cfg_of(AT_TASK_MQAR);
  c.num_kv_pairs = 16, c.vocab_size = 65;
  cr_expect(at_task_check(&c, &bad) == AT_OK, "%s", at_errmsg());
  c = cfg_of(AT_TASK_MQAR);
  c.query_contiguous = 1, c.num_kv_pairs = 21; /* 3*21+1 = 64 */
  cr_expect(at_task_check(&c, &bad) == AT_OK, "%s", at_errmsg());
}

/* ---- mqar ----------------------------------------------------------------------------------------- */

/* Zoology layout: pairs, then queries at even offsets of the query region. */
static void check_mqar_zoology(const at_task_cfg *c, const batch *b, int64_t *slot_of_first_key) {
  const int64_t V = c->vocab_size, T = c->seq_len, N = c->num_kv_pairs;
  for (int64_t e = 0; e < b->n; e++) {
    const int32_t *tok = b->tok + e * T, *lab = b->lab + e * T;
    int32_t seen_query[64] = {0};
    cr_assert(N <= 64);
    for (int64_t j = 0; j < N; j++) {
      cr_assert(tok[2 * j] >= 1 && tok[2 * j] < V / 2, "key %d out of range", tok[2 * j]);
      cr_assert(tok[2 * j + 1] >= V / 2 && tok[2 * j + 1] < V, "value %d out of range", tok[2 * j + 1]);
      for (int64_t k = 0; k < j; k++) {
        cr_assert(tok[2 * k] != tok[2 * j], "keys repeat");
        cr_assert(tok[2 * k + 1] != tok[2 * j + 1], "values repeat");
      }
      cr_assert(lab[2 * j] == AT_IGNORE_LABEL && lab[2 * j + 1] == AT_IGNORE_LABEL);
    }
    int n_labels = 0;
    for (int64_t p = 2 * N; p < T; p++) {
      cr_assert(tok[p] >= 0 && tok[p] < V);
      if (lab[p] == AT_IGNORE_LABEL) {
        if (!c->random_non_queries) cr_assert(tok[p] == 0, "filler must be 0");
        continue;
      }
      cr_assert((p - 2 * N) % 2 == 0, "a query at an odd offset");
      int64_t j = 0;
      while (j < N && tok[2 * j] != tok[p]) j++;
      cr_assert(j < N, "the query token %d is not a key", tok[p]);
      cr_assert(lab[p] == tok[2 * j + 1], "label %d is not the value %d of key %d", lab[p], tok[2 * j + 1], tok[p]);
      cr_assert(!seen_query[j], "key queried twice");
      seen_query[j] = 1;
      n_labels++;
      if (j == 0 && slot_of_first_key) slot_of_first_key[(p - 2 * N) / 2]++;
    }
    cr_assert(n_labels == N, "%d labels, expected %lld", n_labels, (long long)N);
  }
}

Test(data, mqar_zoology_invariants) {
  at_task_cfg c = cfg_of(AT_TASK_MQAR);
  for (int rnq = 0; rnq <= 1; rnq++) {
    c.random_non_queries = rnq;
    at_task *t = open_task(&c);
    cr_expect(at_task_size(t, AT_SPLIT_TRAIN) == 20000 && at_task_size(t, AT_SPLIT_TEST) == 1000);
    cr_expect(at_task_num_groups(t) == 1);
    cr_expect_str_eq(at_task_group_name(t, 0), "all");
    for (int s = 0; s < 2; s++) {
      batch b = get(t, &c, (at_split)s, 123, 300);
      check_mqar_zoology(&c, &b, NULL);
      for (int64_t e = 0; e < b.n; e++) cr_assert(b.grp[e] == 0);
      drop(&b);
    }
    at_task_free(t);
  }
  /* a wide setting: T = 256, 64 pairs (4N = T), small vocabulary (V = T + 1, odd) */
  c.seq_len = 256, c.num_kv_pairs = 64, c.vocab_size = 257, c.random_non_queries = 0;
  at_task *t = open_task(&c);
  batch b = get(t, &c, AT_SPLIT_TRAIN, 0, 40);
  check_mqar_zoology(&c, &b, NULL);
  drop(&b);
  at_task_free(t);
}

/* The first key's slot is the first draw: P(slot s) = (s+1)^(a-1) / sum. */
static void check_power_law(double a) {
  at_task_cfg c = cfg_of(AT_TASK_MQAR);
  c.power_a = a, c.test_examples = 4000;
  const int64_t space = (c.seq_len - 2 * c.num_kv_pairs) / 2, n = 4000;
  at_task *t = open_task(&c);
  batch b = get(t, &c, AT_SPLIT_TEST, 0, n);
  int64_t count[64] = {0};
  check_mqar_zoology(&c, &b, count);
  double total = 0;
  for (int64_t s = 0; s < space; s++) total += pow((double)(s + 1), a - 1);
  for (int64_t s = 0; s < space; s++) {
    double p = pow((double)(s + 1), a - 1) / total, mean = p * n, sd = sqrt(n * p * (1 - p));
    cr_expect(fabs((double)count[s] - mean) < 5 * sd + 1, "power_a %g slot %lld: %lld draws, expected %.1f",
              a, (long long)s, (long long)count[s], mean);
  }
  drop(&b);
  at_task_free(t);
}

Test(data, mqar_power_law_gaps) {
  check_power_law(0.01); /* Zoology: short gaps dominate */
  check_power_law(1.0);  /* uniform */
}

static void check_mqar_contiguous(const at_task_cfg *c, const batch *b) {
  const int64_t V = c->vocab_size, T = c->seq_len, N = c->num_kv_pairs;
  for (int64_t e = 0; e < b->n; e++) {
    const int32_t *tok = b->tok + e * T, *lab = b->lab + e * T;
    for (int64_t j = 0; j < N; j++) {
      cr_assert(tok[2 * j] >= 1 && tok[2 * j] < V / 2);
      cr_assert(tok[2 * j + 1] >= V / 2 && tok[2 * j + 1] < V);
      for (int64_t k = 0; k < j; k++) cr_assert(tok[2 * k] != tok[2 * j] && tok[2 * k + 1] != tok[2 * j + 1]);
    }
    for (int64_t p = 0; p <= 2 * N; p++) cr_assert(lab[p] == AT_IGNORE_LABEL);
    cr_assert(tok[2 * N] == 0, "separator");
    int used[64] = {0};
    for (int64_t q = 0; q < N; q++) {
      int64_t p = 2 * N + 1 + q, j = 0;
      while (j < N && tok[2 * j] != tok[p]) j++;
      cr_assert(j < N && !used[j], "queries are not a permutation of the keys");
      used[j] = 1;
      cr_assert(lab[p] == tok[2 * j + 1], "query label is not the paired value");
    }
    for (int64_t p = 3 * N + 1; p < T; p++) cr_assert(tok[p] == 0 && lab[p] == AT_IGNORE_LABEL, "padding");
  }
}

Test(data, mqar_contiguous_invariants) {
  at_task_cfg c = cfg_of(AT_TASK_MQAR);
  c.query_contiguous = 1, c.num_kv_pairs = 8, c.seq_len = 32; /* 25 used, 7 padding */
  at_task *t = open_task(&c);
  batch b = get(t, &c, AT_SPLIT_TRAIN, 5, 200);
  check_mqar_contiguous(&c, &b);
  drop(&b);
  at_task_free(t);
  /* exact fit and a dense key range (12 keys out of 19: the Fisher-Yates path) */
  c.num_kv_pairs = 12, c.seq_len = 37, c.vocab_size = 40;
  t = open_task(&c);
  b = get(t, &c, AT_SPLIT_TEST, 0, 200);
  check_mqar_contiguous(&c, &b);
  drop(&b);
  at_task_free(t);
}

/* ---- palindrome ------------------------------------------------------------------------------------ */

static void check_palindrome(const at_task_cfg *c, int64_t L) {
  at_task *t = open_task(c);
  const int64_t T = c->seq_len;
  batch b = get(t, c, AT_SPLIT_TRAIN, 0, 100);
  for (int64_t e = 0; e < b.n; e++) {
    const int32_t *tok = b.tok + e * T, *lab = b.lab + e * T;
    for (int64_t p = 0; p < L; p++) {
      cr_assert(tok[p] >= 2 && tok[p] < c->vocab_size, "symbol %d", tok[p]);
      cr_assert(tok[L + 1 + p] == tok[L - 1 - p], "not reversed");
    }
    cr_assert(tok[L] == 1, "separator");
    for (int64_t p = 2 * L + 1; p < T; p++) cr_assert(tok[p] == 0, "padding");
    /* scored: positions L+1 .. 2L-1, each with the next token */
    for (int64_t p = 0; p < T; p++) {
      if (p >= L + 1 && p <= 2 * L - 1) {
        cr_assert(lab[p] == tok[p + 1], "label at %lld", (long long)p);
        cr_assert(lab[p] == tok[2 * L - 1 - p], "label is the reversed symbol");
      } else {
        cr_assert(lab[p] == AT_IGNORE_LABEL, "position %lld must not be scored", (long long)p);
      }
    }
    cr_assert(count_labels(lab, T) == L - 1);
  }
  drop(&b);
  at_task_free(t);
}

Test(data, palindrome_invariants) {
  /* the report's example shape: L = 7, T = 15 -> labels at positions 8..13 */
  at_task_cfg c = cfg_of(AT_TASK_PALINDROME);
  c.seq_len = 15;
  check_palindrome(&c, 7);
  c = cfg_of(AT_TASK_PALINDROME); /* default: T 65, L 32 */
  check_palindrome(&c, 32);
  c.palindrome_len = 10, c.num_symbols = 4; /* padded, 4 symbols */
  check_palindrome(&c, 10);
}

/* ---- stack ---------------------------------------------------------------------------------------------- */

Test(data, stack_matches_reference_simulation) {
  at_task_cfg c = cfg_of(AT_TASK_STACK);
  c.seq_len = 200; /* 66 ops and 2 padding */
  at_task *t = open_task(&c);
  const int64_t T = c.seq_len, M = c.num_stacks, S = c.num_symbols;
  batch b = get(t, &c, AT_SPLIT_TEST, 0, 200);
  int64_t pops = 0, pushes = 0;
  for (int64_t e = 0; e < b.n; e++) {
    const int32_t *tok = b.tok + e * T, *lab = b.lab + e * T;
    int32_t stack[8][80];
    int depth[8] = {0};
    cr_assert(M == 8);
    for (int64_t o = 0; o < T / 3; o++) {
      const int32_t *op = tok + 3 * o, *ol = lab + 3 * o;
      cr_assert(op[1] >= 3 && op[1] < 3 + M, "stack id %d", op[1]);
      cr_assert(op[2] >= 3 + M && op[2] < 3 + M + S, "symbol %d", op[2]);
      int s = op[1] - 3;
      cr_assert(ol[0] == AT_IGNORE_LABEL && ol[2] == AT_IGNORE_LABEL);
      if (op[0] == 1) {
        stack[s][depth[s]++] = op[2];
        cr_assert(ol[1] == AT_IGNORE_LABEL);
        pushes++;
      } else {
        cr_assert(op[0] == 2, "op token %d", op[0]);
        cr_assert(depth[s] > 0, "popped an empty stack");
        int32_t x = stack[s][--depth[s]];
        cr_assert(op[2] == x, "popped %d, the stack holds %d", op[2], x);
        cr_assert(ol[1] == x, "label %d, expected %d", ol[1], x);
        pops++;
      }
    }
    for (int64_t p = 3 * (T / 3); p < T; p++) cr_assert(tok[p] == 0 && lab[p] == AT_IGNORE_LABEL);
  }
  cr_expect(pops > 0.3 * (pops + pushes) && pops < 0.5 * (pops + pushes), "pops %lld pushes %lld",
            (long long)pops, (long long)pushes);
  drop(&b);
  at_task_free(t);
}

/* ---- selective copy ----------------------------------------------------------------------------------- */

Test(data, selective_copy_invariants) {
  at_task_cfg c = cfg_of(AT_TASK_SELECTIVE_COPY);
  c.seq_len = 64, c.num_tokens_to_copy = 8;
  at_task *t = open_task(&c);
  const int64_t T = c.seq_len, K = c.num_tokens_to_copy, R = T - K - 1;
  batch b = get(t, &c, AT_SPLIT_TRAIN, 0, 300);
  int64_t first_pos_sum = 0;
  for (int64_t e = 0; e < b.n; e++) {
    const int32_t *tok = b.tok + e * T, *lab = b.lab + e * T;
    int32_t data[64];
    int64_t n = 0;
    for (int64_t p = 0; p < R; p++) {
      cr_assert(lab[p] == AT_IGNORE_LABEL);
      if (tok[p] == 0) continue;
      cr_assert(tok[p] >= 2 && tok[p] < c.vocab_size, "data token %d", tok[p]);
      if (n == 0) first_pos_sum += p;
      data[n++] = tok[p];
    }
    cr_assert(n == K, "%lld data tokens, expected %lld", (long long)n, (long long)K);
    cr_assert(tok[R] == 1 && lab[R] == AT_IGNORE_LABEL, "separator");
    for (int64_t j = 0; j < K; j++) {
      cr_assert(tok[R + 1 + j] == 0, "answer slots hold noise");
      cr_assert(lab[R + 1 + j] == data[j], "slot %lld must copy data token %lld", (long long)j, (long long)j);
    }
  }
  /* the first data token's position is spread (mean (R-K)/(K+1) ~ 5.2), not fixed */
  double mean = (double)first_pos_sum / (double)b.n;
  cr_expect(mean > 4 && mean < 8.5, "mean first position %g", mean);
  drop(&b);
  at_task_free(t);
}

/* ---- niah ---------------------------------------------------------------------------------------------------- */

Test(data, niah_invariants_and_depth_buckets) {
  at_task_cfg c = cfg_of(AT_TASK_NIAH);
  c.seq_len = 64, c.num_depth_buckets = 10, c.test_examples = 500;
  at_task *t = open_task(&c);
  const int64_t T = c.seq_len, P = T - 6, B = c.num_depth_buckets, V = c.vocab_size;
  const int64_t F = c.num_symbols, NK = (V - 2 - F) / 2;
  cr_assert(at_task_num_groups(t) == 10);
  cr_expect_str_eq(at_task_group_name(t, 0), "depth 0-10%");
  cr_expect_str_eq(at_task_group_name(t, 9), "depth 90-100%");
  int64_t per_group[10] = {0};
  for (int s = 0; s < 2; s++) {
    batch b = get(t, &c, (at_split)s, 0, 500);
    for (int64_t e = 0; e < b.n; e++) {
      const int32_t *tok = b.tok + e * T, *lab = b.lab + e * T;
      int64_t g = b.grp[e], d = -1, n_key = 0, n_val = 0;
      cr_assert(g >= 0 && g < B);
      if (s == AT_SPLIT_TEST) cr_assert(g == e % B, "test example %lld in group %lld", (long long)e, (long long)g);
      if (s == AT_SPLIT_TEST) per_group[g]++;
      for (int64_t p = 0; p < T; p++) {
        if (tok[p] == 0) {
          n_key++;
          if (d < 0) d = p;
        }
        n_val += tok[p] == 1;
        cr_assert(tok[p] >= 0 && tok[p] < V);
      }
      cr_assert(n_key == 2 && n_val == 2, "exactly one needle and one query");
      cr_assert(d >= 0 && d <= T - 7 && tok[d + 2] == 1);
      cr_assert(tok[T - 3] == 0 && tok[T - 1] == 1);
      cr_assert(tok[d + 1] == tok[T - 2], "the query asks the needle's key");
      cr_assert(tok[d + 1] >= 2 + F && tok[d + 1] < 2 + F + NK, "key range");
      cr_assert(tok[d + 3] >= 2 + F + NK && tok[d + 3] < V, "value range");
      for (int64_t p = 0; p < T; p++)
        if (p < d || (p > d + 3 && p < T - 3)) cr_assert(tok[p] >= 2 && tok[p] < 2 + F, "filler");
      cr_assert(count_labels(lab, T) == 1 && lab[T - 1] == tok[d + 3], "the label is the needle's value");
      /* the needle's depth d/P lies in the group's bucket [g/B, (g+1)/B) */
      cr_assert(g * P <= d * B && d * B < (g + 1) * P, "depth %lld/%lld outside bucket %lld", (long long)d,
                (long long)P, (long long)g);
    }
    drop(&b);
  }
  for (int g = 0; g < 10; g++) cr_expect(per_group[g] == 50);
  at_task_free(t);
  /* three buckets */
  c.num_depth_buckets = 3;
  t = open_task(&c);
  cr_expect_str_eq(at_task_group_name(t, 1), "depth 33.33-66.67%");
  at_task_free(t);
}

/* ---- determinism ------------------------------------------------------------------------------------------- */

static void determinism_for(at_task_cfg c) {
  const int64_t n = 96;
  c.train_examples = 40; /* the batches below cross epoch boundaries */
  c.test_examples = c.kind == AT_TASK_TEXT ? 0 : 30;
  at_task *t1 = open_task(&c), *t2 = open_task(&c);
  for (int s = 0; s < 2; s++) {
    at_split sp = (at_split)s;
    batch a = get(t1, &c, sp, 7, n), b = get(t2, &c, sp, 7, n);
    cr_expect(same(&a, &b), "%s: same seed, different batches", at_task_name(c.kind));
    /* splitting the range differently changes nothing */
    batch parts[3] = {get(t2, &c, sp, 7, 1), get(t2, &c, sp, 8, 50), get(t2, &c, sp, 58, n - 51)};
    int64_t off = 0;
    for (int k = 0; k < 3; k++) {
      size_t sz = (size_t)(parts[k].n * c.seq_len) * sizeof(int32_t);
      cr_expect(memcmp(a.tok + off * c.seq_len, parts[k].tok, sz) == 0 &&
                    memcmp(a.lab + off * c.seq_len, parts[k].lab, sz) == 0 &&
                    memcmp(a.grp + off, parts[k].grp, (size_t)parts[k].n * sizeof(int32_t)) == 0,
                "%s: batch split part %d differs", at_task_name(c.kind), k);
      off += parts[k].n;
      drop(&parts[k]);
    }
    /* neither does the thread count */
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    batch one = get(t1, &c, sp, 7, n);
    omp_set_num_threads(3);
    batch three = get(t1, &c, sp, 7, n);
    omp_set_num_threads(threads);
    cr_expect(same(&a, &one) && same(&a, &three), "%s: depends on the thread count", at_task_name(c.kind));
    drop(&one), drop(&three);
    /* another seed gives other data */
    at_task_cfg c2 = c;
    c2.seed = c.seed + 1;
    at_task *t3 = open_task(&c2);
    batch d = get(t3, &c2, sp, 7, n);
    cr_expect(!same(&a, &d) || (c.kind == AT_TASK_TEXT && s == AT_SPLIT_TEST),
              "%s: another seed, same batch", at_task_name(c.kind));
    if (c.kind == AT_TASK_TEXT && s == AT_SPLIT_TEST) cr_expect(same(&a, &d), "text test split is seed-free");
    drop(&d);
    at_task_free(t3);
    drop(&a), drop(&b);
  }
  at_task_free(t1);
  at_task_free(t2);
}

Test(data, determinism_every_task) {
  for (int k = 0; k < AT_TASK_COUNT; k++) {
    at_task_cfg c = cfg_of((at_task_kind)k);
    c.seed = 42;
    if (k == AT_TASK_TEXT) {
      if (access(c.path, F_OK) != 0) continue; /* covered by text_determinism_small_corpus */
      c.seq_len = 64;
    }
    if (k == AT_TASK_NIAH) c.seq_len = 128; /* big enough for the parallel path, small enough to be fast */
    determinism_for(c);
  }
  at_task_cfg c = cfg_of(AT_TASK_MQAR);
  c.query_contiguous = 1, c.num_kv_pairs = 16, c.seq_len = 128;
  determinism_for(c);
}

/* Epochs are permutations of one set of examples, differently ordered; the
 * test split wraps in index order; example i does not depend on the split size. */
Test(data, epoch_permutations) {
  static const int64_t sizes[] = {1, 2, 3, 7, 64, 100, 257};
  for (int si = 0; si < AT_ARRAY_LEN(sizes); si++) {
    at_task_cfg c = cfg_of(AT_TASK_MQAR);
    c.train_examples = sizes[si];
    const int64_t N = sizes[si];
    at_task *t = open_task(&c);
    uint64_t *fp[3];
    for (int e = 0; e < 3; e++) {
      batch b = get(t, &c, AT_SPLIT_TRAIN, e * N, N);
      fp[e] = malloc((size_t)N * sizeof *fp[e]);
      for (int64_t i = 0; i < N; i++) fp[e][i] = fingerprint(&b, i);
      drop(&b);
    }
    int orders_differ = memcmp(fp[0], fp[1], (size_t)N * sizeof **fp) != 0;
    for (int e = 0; e < 3; e++) qsort(fp[e], (size_t)N, sizeof **fp, cmp_u64);
    for (int64_t i = 1; i < N; i++) cr_assert(fp[0][i] != fp[0][i - 1], "N=%lld: an example twice in an epoch", (long long)N);
    for (int e = 1; e < 3; e++)
      cr_assert(memcmp(fp[0], fp[e], (size_t)N * sizeof **fp) == 0, "N=%lld: epoch %d has other examples", (long long)N, e);
    if (N >= 7) cr_expect(orders_differ, "N=%lld: epochs 0 and 1 in the same order", (long long)N);
    for (int e = 0; e < 3; e++) free(fp[e]);
    at_task_free(t);
  }
  /* example identity is independent of the split size: the 100 examples of a
   * 100-example set are among those of a 200-example set */
  at_task_cfg c = cfg_of(AT_TASK_MQAR);
  c.train_examples = 100;
  at_task *t = open_task(&c);
  c.train_examples = 200;
  at_task *u = open_task(&c);
  batch a = get(t, &c, AT_SPLIT_TRAIN, 0, 100), b = get(u, &c, AT_SPLIT_TRAIN, 0, 200);
  uint64_t fb[200];
  for (int64_t i = 0; i < 200; i++) fb[i] = fingerprint(&b, i);
  qsort(fb, 200, sizeof *fb, cmp_u64);
  for (int64_t i = 0; i < 100; i++) {
    uint64_t f = fingerprint(&a, i);
    cr_assert(bsearch(&f, fb, 200, sizeof *fb, cmp_u64) != NULL, "example missing from the larger set");
  }
  drop(&a), drop(&b);
  /* test split: index order, wrapping after test_examples */
  c.test_examples = 10;
  at_task *w = open_task(&c);
  batch x = get(w, &c, AT_SPLIT_TEST, 0, 10), y = get(w, &c, AT_SPLIT_TEST, 10, 10), z = get(w, &c, AT_SPLIT_TEST, 3, 1);
  cr_expect(same(&x, &y), "the test split wraps around");
  cr_expect(memcmp(z.tok, x.tok + 3 * c.seq_len, (size_t)c.seq_len * sizeof(int32_t)) == 0);
  drop(&x), drop(&y), drop(&z);
  at_task_free(t), at_task_free(u), at_task_free(w);
}

/* ---- text ------------------------------------------------------------------------------------------------------- */

/* A small corpus: two fortune-style files and files that must be skipped. */
static const char FILE_A[] =
    "The first fortune of file a.\n%\nA second one, longer, with two lines\nof text in it.\n%\n"
    "Third: brevity is the soul of wit.\n%\nFourth fortune here, quite plain.\n%\nFifth and last of a.\n";
static const char FILE_B[] =
    "b begins: a plain text file without percent lines, just lines.\nline two of b\nline three of b\n"
    "line four of b is a bit longer than the others\nline five\nline six, the end of b\n";

static void make_corpus(const char *dir) {
  char p[512];
  snprintf(p, sizeof p, "%s/a", dir);
  write_file(p, FILE_A, sizeof FILE_A - 1);
  snprintf(p, sizeof p, "%s/b", dir);
  write_file(p, FILE_B, sizeof FILE_B - 1);
  snprintf(p, sizeof p, "%s/a.dat", dir);
  write_file(p, "ZZ\0\0ZZZZ", 8);
  snprintf(p, sizeof p, "%s/.hidden", dir);
  write_file(p, "ZZZZZZZZ", 8);
  char target[512];
  snprintf(p, sizeof p, "%s/b.u8", dir);
  snprintf(target, sizeof target, "%s/b", dir);
  cr_assert(symlink(target, p) == 0);
  snprintf(p, sizeof p, "%s/sub", dir);
  cr_assert(mkdir(p, 0700) == 0);
  snprintf(p, sizeof p, "%s/sub/c", dir);
  write_file(p, "ZZZZZZZZ", 8);
}

/* The documented cut: after a "%" line at or after s, else a line start, else s. */
static size_t expected_cut(const char *b, size_t n, double val_fraction) {
  size_t s = (size_t)((1.0 - val_fraction) * (double)n);
  for (size_t q = s < 2 ? 2 : s; q <= n; q++)
    if (b[q - 1] == '\n' && b[q - 2] == '%' && (q == 2 || b[q - 3] == '\n')) return q;
  for (size_t q = s < 1 ? 1 : s; q <= n; q++)
    if (b[q - 1] == '\n') return q;
  return s;
}

typedef struct corpus_split {
  char train[1024], val[1024];
  size_t ntrain, nval;
} corpus_split;

static corpus_split expected_split(double f) {
  corpus_split s = {{0}, {0}, 0, 0};
  const char *files[2] = {FILE_A, FILE_B};
  size_t lens[2] = {sizeof FILE_A - 1, sizeof FILE_B - 1};
  for (int i = 0; i < 2; i++) {
    size_t cut = expected_cut(files[i], lens[i], f);
    memcpy(s.train + s.ntrain, files[i], cut);
    s.ntrain += cut;
    memcpy(s.val + s.nval, files[i] + cut, lens[i] - cut);
    s.nval += lens[i] - cut;
  }
  return s;
}

static at_task_cfg text_cfg(const char *dir, const char *cache) {
  at_task_cfg c = cfg_of(AT_TASK_TEXT);
  snprintf(c.path, sizeof c.path, "%s", dir);
  snprintf(c.cache, sizeof c.cache, "%s", cache ? cache : "");
  c.seq_len = 16, c.val_fraction = 0.3, c.train_examples = 50;
  return c;
}

/* Windows are verbatim: training ones inside the training bytes, test ones
 * tiling the held-out bytes from offset 0; labels are the next bytes. */
static void check_text(at_task *t, const at_task_cfg *c, const char *train, size_t ntrain, const char *val,
                       size_t nval) {
  const int64_t T = c->seq_len, tiles = (int64_t)(nval - 1) / T;
  cr_assert(at_task_size(t, AT_SPLIT_TEST) == (c->test_examples ? AT_MIN(c->test_examples, tiles) : tiles),
            "test size %lld, tiles %lld", (long long)at_task_size(t, AT_SPLIT_TEST), (long long)tiles);
  batch b = get(t, c, AT_SPLIT_TRAIN, 0, 50);
  for (int64_t e = 0; e < b.n; e++) {
    const int32_t *tok = b.tok + e * T, *lab = b.lab + e * T;
    char win[256];
    for (int64_t p = 0; p < T; p++) {
      cr_assert(tok[p] >= 0 && tok[p] < 256 && tok[p] != 'Z', "byte %d", tok[p]);
      if (p + 1 < T) cr_assert(lab[p] == tok[p + 1], "labels are the next bytes");
      win[p] = (char)tok[p];
    }
    win[T] = (char)lab[T - 1];
    int found = 0;
    for (size_t o = 0; o + (size_t)T + 1 <= ntrain && !found; o++) found = memcmp(train + o, win, (size_t)T + 1) == 0;
    cr_assert(found, "training window %lld is not in the training split", (long long)e);
  }
  drop(&b);
  int64_t n = at_task_size(t, AT_SPLIT_TEST);
  b = get(t, c, AT_SPLIT_TEST, 0, n);
  for (int64_t e = 0; e < n; e++) {
    int64_t tile = n == tiles ? e : e * tiles / n;
    for (int64_t p = 0; p < T; p++) {
      cr_assert(b.tok[e * T + p] == (uint8_t)val[tile * T + p], "test window %lld byte %lld", (long long)e, (long long)p);
      cr_assert(b.lab[e * T + p] == (uint8_t)val[tile * T + p + 1]);
    }
  }
  drop(&b);
}

Test(data, text_split_windows_and_skipped_files) {
  char dir[256];
  tmpdir(dir, sizeof dir, "text");
  make_corpus(dir);
  at_task_cfg c = text_cfg(dir, NULL);
  const char *bad = NULL;
  cr_assert(at_task_check(&c, &bad) == AT_OK, "%s", at_errmsg());
  corpus_split s = expected_split(c.val_fraction);
  /* file a's cut follows a "%" line, file b's a line start */
  cr_expect(s.ntrain > 0 && s.nval > 0);
  at_task *t = open_task(&c);
  check_text(t, &c, s.train, s.ntrain, s.val, s.nval);
  at_task_free(t);
  /* fewer test examples than windows: spread evenly */
  c.test_examples = 3;
  t = open_task(&c);
  check_text(t, &c, s.train, s.ntrain, s.val, s.nval);
  at_task_free(t);
  /* a single file as the corpus */
  char file[512];
  snprintf(file, sizeof file, "%s/a", dir);
  at_task_cfg f = text_cfg(file, NULL);
  f.seq_len = 8, f.val_fraction = 0.4;
  t = open_task(&f);
  size_t na = sizeof FILE_A - 1, cut = expected_cut(FILE_A, na, f.val_fraction);
  cr_expect(cut > 0 && FILE_A[cut - 1] == '\n' && FILE_A[cut - 2] == '%', "cut after a %% line");
  check_text(t, &f, FILE_A, cut, FILE_A + cut, na - cut);
  at_task_free(t);
  rmtree(dir);
}

Test(data, text_missing_corpus) {
  at_task_cfg c = text_cfg("/nonexistent/attnlab/corpus", NULL);
  const char *bad = NULL;
  at_status st = at_task_check(&c, &bad);
  cr_expect(st == AT_E_IO, "status %d", st);
  cr_expect(bad && strcmp(bad, "path") == 0);
  cr_expect(strstr(at_errmsg(), "/nonexistent/attnlab/corpus") && strstr(at_errmsg(), "does not exist"), "%s",
            at_errmsg());
  at_task *t = NULL;
  cr_expect(at_task_open(&c, &t) == AT_E_IO && t == NULL);
  /* an empty directory, and one with only skipped files */
  char dir[256];
  tmpdir(dir, sizeof dir, "empty");
  c = text_cfg(dir, NULL);
  cr_expect(at_task_check(&c, &bad) == AT_E_IO && strcmp(bad, "path") == 0);
  cr_expect(strstr(at_errmsg(), "no text files"), "%s", at_errmsg());
  char p[512];
  snprintf(p, sizeof p, "%s/x.dat", dir);
  write_file(p, "abc", 3);
  cr_expect(at_task_check(&c, &bad) == AT_E_IO && strcmp(bad, "path") == 0);
  /* too small for the windows */
  snprintf(p, sizeof p, "%s/tiny", dir);
  write_file(p, "0123456789\n", 11);
  cr_expect(at_task_check(&c, &bad) != AT_OK && strcmp(bad, "path") == 0, "%s", at_errmsg());
  c.path[0] = '\0';
  cr_expect(at_task_check(&c, &bad) == AT_E_IO && strcmp(bad, "path") == 0);
  rmtree(dir);
}

Test(data, text_determinism_small_corpus) {
  char dir[256];
  tmpdir(dir, sizeof dir, "det");
  make_corpus(dir);
  at_task_cfg c = text_cfg(dir, NULL);
  c.seed = 3;
  determinism_for(c);
  rmtree(dir);
}

/* ---- the token cache ----------------------------------------------------------------------------------------- */

static uint64_t cache_checksum(const char *a, size_t na, const char *b, size_t nb) {
  uint64_t h = fnv(a, na, 1469598103934665603ull);
  return fnv(b, nb, h);
}

/* Rewrites the cache with the same attributes but other bytes (and a
 * checksum that matches them, or not). */
static void forge_cache(const char *path, const char *train, size_t ntrain, const char *val, size_t nval,
                        int good_checksum) {
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  char *fmt, *src;
  int64_t size, mtime, files;
  double vf;
  uint64_t listing;
  cr_assert(at_h5_get_attr_u64s(h, "/", "source_listing", 1, &listing) == AT_OK);
  cr_assert(at_h5_get_attr_str(h, "/", "format", &fmt) == AT_OK);
  cr_assert(at_h5_get_attr_str(h, "/", "source", &src) == AT_OK);
  cr_assert(at_h5_get_attr_int(h, "/", "source_size", &size) == AT_OK);
  cr_assert(at_h5_get_attr_int(h, "/", "source_mtime_ns", &mtime) == AT_OK);
  cr_assert(at_h5_get_attr_int(h, "/", "source_files", &files) == AT_OK);
  cr_assert(at_h5_get_attr_double(h, "/", "val_fraction", &vf) == AT_OK);
  at_h5_close(h);
  cr_assert(at_h5_create(path, &h) == AT_OK);
  uint64_t sum = cache_checksum(train, ntrain, val, nval) + (good_checksum ? 0 : 1);
  cr_assert(at_h5_write_u8(h, "train", (int64_t)ntrain, (const uint8_t *)train) == AT_OK);
  cr_assert(at_h5_write_u8(h, "val", (int64_t)nval, (const uint8_t *)val) == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "format", fmt) == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "source", src) == AT_OK);
  cr_assert(at_h5_set_attr_int(h, "/", "source_size", size) == AT_OK);
  cr_assert(at_h5_set_attr_int(h, "/", "source_mtime_ns", mtime) == AT_OK);
  cr_assert(at_h5_set_attr_int(h, "/", "source_files", files) == AT_OK);
  cr_assert(at_h5_set_attr_u64s(h, "/", "source_listing", 1, &listing) == AT_OK);
  cr_assert(at_h5_set_attr_double(h, "/", "val_fraction", vf) == AT_OK);
  cr_assert(at_h5_set_attr_u64s(h, "/", "checksum", 1, &sum) == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
  free(fmt), free(src);
}

static int64_t cache_attr(const char *path, const char *name) {
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  int64_t v = -1;
  cr_assert(at_h5_get_attr_int(h, "/", name, &v) == AT_OK, "%s", at_errmsg());
  at_h5_close(h);
  return v;
}

static void check_cache_is_real(const char *path, const corpus_split *s) {
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  uint8_t buf[1024];
  cr_assert(at_h5_read_u8(h, "train", (int64_t)s->ntrain, buf) == AT_OK, "%s", at_errmsg());
  cr_expect(memcmp(buf, s->train, s->ntrain) == 0);
  cr_assert(at_h5_read_u8(h, "val", (int64_t)s->nval, buf) == AT_OK, "%s", at_errmsg());
  cr_expect(memcmp(buf, s->val, s->nval) == 0);
  uint64_t sum;
  cr_assert(at_h5_get_attr_u64s(h, "/", "checksum", 1, &sum) == AT_OK);
  cr_expect(sum == cache_checksum(s->train, s->ntrain, s->val, s->nval));
  at_h5_close(h);
}

Test(data, text_cache_round_trip_reuse_and_staleness) {
  char dir[256], corpus[300], cache[300];
  tmpdir(dir, sizeof dir, "cache");
  snprintf(corpus, sizeof corpus, "%s/corpus", dir);
  snprintf(cache, sizeof cache, "%s/tokens.h5", dir);
  cr_assert(mkdir(corpus, 0700) == 0);
  make_corpus(corpus);
  at_task_cfg c = text_cfg(corpus, cache);
  corpus_split s = expected_split(c.val_fraction);

  /* built on first open, with the documented attributes */
  at_task *t = open_task(&c);
  cr_assert(access(cache, F_OK) == 0, "no cache written");
  check_text(t, &c, s.train, s.ntrain, s.val, s.nval);
  batch first = get(t, &c, AT_SPLIT_TRAIN, 0, 20);
  at_task_free(t);
  check_cache_is_real(cache, &s);
  cr_expect(cache_attr(cache, "source_size") == (int64_t)(sizeof FILE_A - 1 + sizeof FILE_B - 1));
  cr_expect(cache_attr(cache, "source_files") == 2);

  /* reopened: identical batches */
  t = open_task(&c);
  batch again = get(t, &c, AT_SPLIT_TRAIN, 0, 20);
  cr_expect(same(&first, &again));
  drop(&again);
  at_task_free(t);

  /* reused, not rebuilt: forged bytes with matching attributes are what the task serves */
  char ftrain[1024], fval[1024];
  for (size_t i = 0; i < s.ntrain; i++) ftrain[i] = (char)('a' + i % 26);
  for (size_t i = 0; i < s.nval; i++) fval[i] = (char)('A' + i % 26);
  forge_cache(cache, ftrain, s.ntrain, fval, s.nval, 1);
  t = open_task(&c);
  check_text(t, &c, ftrain, s.ntrain, fval, s.nval);
  at_task_free(t);

  /* a checksum mismatch is corruption: rebuilt from the source */
  forge_cache(cache, ftrain, s.ntrain, fval, s.nval, 0);
  t = open_task(&c);
  check_text(t, &c, s.train, s.ntrain, s.val, s.nval);
  at_task_free(t);
  check_cache_is_real(cache, &s);

  /* another val_fraction: stale, rebuilt with the new split */
  at_task_cfg c2 = c;
  c2.val_fraction = 0.5;
  corpus_split s2 = expected_split(c2.val_fraction);
  t = open_task(&c2);
  check_text(t, &c2, s2.train, s2.ntrain, s2.val, s2.nval);
  at_task_free(t);
  check_cache_is_real(cache, &s2);

  /* only a modification time changes, forwards or backwards (the newest
   * mtime stays the directory's): stale, rebuilt */
  char fa[400];
  snprintf(fa, sizeof fa, "%s/a", corpus);
  for (int k = 0; k < 2; k++) {
    int64_t before = cache_attr(cache, "source_mtime_ns");
    forge_cache(cache, ftrain, s2.ntrain, fval, s2.nval, 1);
    struct timespec times[2] = {{0, UTIME_OMIT}, {k ? time(NULL) + 1000 : 1000000000, 123}};
    cr_assert(utimensat(AT_FDCWD, fa, times, 0) == 0);
    t = open_task(&c2);
    check_text(t, &c2, s2.train, s2.ntrain, s2.val, s2.nval);
    at_task_free(t);
    check_cache_is_real(cache, &s2);
    if (k) cr_expect(cache_attr(cache, "source_mtime_ns") != before, "newest mtime updated");
  }

  /* the source grows: stale, rebuilt with the new bytes */
  char fb[400];
  snprintf(fb, sizeof fb, "%s/b", corpus);
  char grown[1024];
  size_t nb = sizeof FILE_B - 1;
  memcpy(grown, FILE_B, nb);
  static const char more[] = "line seven is new, and longer than a window of sixteen bytes\n";
  const size_t nmore = sizeof more - 1; /* the last < T held-out bytes are in no window */
  memcpy(grown + nb, more, nmore);
  write_file(fb, grown, nb + nmore);
  t = open_task(&c2);
  batch b = get(t, &c2, AT_SPLIT_TEST, 0, at_task_size(t, AT_SPLIT_TEST));
  int found_new = 0;
  for (int64_t i = 0; i + 5 <= b.n * c2.seq_len; i++)
    found_new |= b.tok[i] == 's' && b.tok[i + 1] == 'e' && b.tok[i + 2] == 'v' && b.tok[i + 3] == 'e' && b.tok[i + 4] == 'n';
  cr_expect(found_new, "the grown file's new line is in the held-out windows");
  drop(&b);
  at_task_free(t);
  cr_expect(cache_attr(cache, "source_size") == (int64_t)(sizeof FILE_A - 1 + nb + nmore));

  /* a file added to the directory: stale */
  char fc[400];
  snprintf(fc, sizeof fc, "%s/c", corpus);
  write_file(fc, FILE_A, sizeof FILE_A - 1);
  t = open_task(&c2);
  at_task_free(t);
  cr_expect(cache_attr(cache, "source_files") == 3);

  drop(&first);
  rmtree(dir);
}

Test(data, text_cache_corrupt_or_foreign) {
  char dir[256], corpus[300], cache[300];
  tmpdir(dir, sizeof dir, "corrupt");
  snprintf(corpus, sizeof corpus, "%s/corpus", dir);
  snprintf(cache, sizeof cache, "%s/tokens.h5", dir);
  cr_assert(mkdir(corpus, 0700) == 0);
  make_corpus(corpus);
  at_task_cfg c = text_cfg(corpus, cache);
  corpus_split s = expected_split(c.val_fraction);
  at_task *t = open_task(&c);
  at_task_free(t);

  /* truncated (still starts with the HDF5 signature): rebuilt */
  cr_assert(truncate(cache, 600) == 0);
  at_h5 *h;
  cr_assert(at_h5_open(cache, &h) != AT_OK, "the truncated cache should not open");
  t = open_task(&c);
  check_text(t, &c, s.train, s.ntrain, s.val, s.nval);
  at_task_free(t);
  check_cache_is_real(cache, &s);

  /* not an HDF5 file: refused, left untouched */
  write_file(cache, "precious notes\n", 15);
  t = NULL;
  at_status st = at_task_open(&c, &t);
  cr_expect(st == AT_E_FORMAT && t == NULL, "status %d", st);
  cr_expect(strstr(at_errmsg(), cache) && strstr(at_errmsg(), "refusing to overwrite"), "%s", at_errmsg());
  char buf[64] = {0};
  FILE *f = fopen(cache, "rb");
  cr_assert(f);
  cr_expect(fread(buf, 1, sizeof buf - 1, f) == 15 && strcmp(buf, "precious notes\n") == 0);
  fclose(f);

  /* an HDF5 file that is not a token cache: refused too */
  cr_assert(at_h5_create(cache, &h) == AT_OK);
  int32_t x[2] = {1, 2};
  cr_assert(at_h5_write_int(h, "x", 1, (int64_t[]){2}, x) == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
  cr_expect(at_task_open(&c, &t) == AT_E_FORMAT && t == NULL);
  cr_expect(strstr(at_errmsg(), "not an attnlab token cache"), "%s", at_errmsg());
  cr_assert(at_h5_open(cache, &h) == AT_OK);
  cr_expect(at_h5_exists(h, "x"), "the foreign file is untouched");
  at_h5_close(h);

  /* an unwritable cache location: a clear error from open */
  at_task_cfg u = c;
  snprintf(u.cache, sizeof u.cache, "%s/no/such/dir/tokens.h5", dir);
  cr_expect(at_task_open(&u, &t) == AT_E_IO && t == NULL);
  cr_expect(strstr(at_errmsg(), "token cache"), "%s", at_errmsg());
  rmtree(dir);
}

Test(data, text_default_corpus) {
  at_task_cfg c = cfg_of(AT_TASK_TEXT);
  if (access(c.path, F_OK) != 0) cr_skip_test("the fortunes package is not installed (%s)", c.path);
  const char *bad = NULL;
  cr_assert(at_task_check(&c, &bad) == AT_OK, "%s", at_errmsg());
  at_task *t = open_task(&c);
  int64_t n = at_task_size(t, AT_SPLIT_TEST);
  cr_expect(n > 1000, "%lld held-out windows", (long long)n);
  batch b = get(t, &c, AT_SPLIT_TEST, 0, AT_MIN(n, 500));
  for (int64_t i = 0; i < b.n * c.seq_len; i++)
    cr_assert(b.tok[i] > 0 && b.tok[i] < 256, "byte %d: the .dat index files must be skipped", b.tok[i]);
  drop(&b);
  at_task_free(t);
}
