/* data/tokens.c: pre-tokenized .bin corpora for the text task (llm.c's
 * header + uint16/uint32 tokens, nanoGPT's raw uint16): windows are the
 * file's tokens, the held-out tail is exact, the vocabulary comes from the
 * file or the YAML, and bad, short or mismatched files are refused with the
 * reason, from the loader (file:line:col) and from the task. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "experiments/config.h"
#include "testing.h"

static char dir[256];

static const char *path_of(const char *name) {
  static char p[16][400];
  static int k;
  if (!dir[0]) {
    snprintf(dir, sizeof dir, "/tmp/attnlab_tokens_XXXXXX");
    cr_assert(mkdtemp(dir));
  }
  k = (k + 1) % 16;
  snprintf(p[k], sizeof p[k], "%s/%s", dir, name);
  return p[k];
}

static void cleanup(void) {
  char cmd[300];
  if (dir[0] && snprintf(cmd, sizeof cmd, "rm -rf %s", dir) > 0 && system(cmd) != 0) {}
}
TestSuite(tokens, .fini = cleanup);

static void put32(uint8_t *b, uint32_t v) {
  for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
}

/* n tokens tok(i) in the given layout: 0 nanoGPT, else llm.c's magic. */
static const char *write_tokens(const char *name, uint32_t magic, uint32_t version, int64_t declared, int64_t n,
                                int width, uint32_t (*tok)(int64_t)) {
  const char *path = path_of(name);
  FILE *f = fopen(path, "wb");
  cr_assert(f);
  if (magic) {
    uint8_t h[1024] = {0};
    put32(h, magic), put32(h + 4, version), put32(h + 8, (uint32_t)declared);
    cr_assert(fwrite(h, 1, sizeof h, f) == sizeof h);
  }
  for (int64_t i = 0; i < n; i++) {
    uint8_t b[4];
    put32(b, tok(i));
    cr_assert(fwrite(b, 1, (size_t)width, f) == (size_t)width);
  }
  fclose(f);
  return path;
}

static uint32_t gpt2_tok(int64_t i) { return (uint32_t)((i * 7919) % 50257); }
static uint32_t llama_tok(int64_t i) { return (uint32_t)((i * 104729 + 3) % 128256); }
static uint32_t small_tok(int64_t i) { return (uint32_t)((i * 7) % 65); }

static at_task_cfg cfg_for(const char *path, int64_t vocab) {
  at_task_cfg c;
  at_task_cfg_defaults(&c, AT_TASK_TEXT);
  snprintf(c.path, sizeof c.path, "%s", path);
  c.vocab_size = vocab, c.seq_len = 16, c.val_fraction = 0.25, c.train_examples = 32, c.test_examples = 0;
  return c;
}

/* Training windows are runs of the first 3/4 of the tokens, test windows
 * tile the last quarter from its start; labels are the next tokens. */
static void check_windows(const at_task_cfg *c, int64_t n, uint32_t (*tok)(int64_t)) {
  at_task *t = NULL;
  cr_assert(at_task_open(c, &t) == AT_OK, "%s", at_errmsg());
  const int64_t T = c->seq_len, cut = (int64_t)(0.75 * (double)n), tiles = (n - cut - 1) / T;
  cr_expect_eq(at_task_size(t, AT_SPLIT_TEST), tiles);
  int32_t *x = malloc((size_t)(32 * T) * sizeof *x), *y = malloc((size_t)(32 * T) * sizeof *y);
  at_task_batch(t, AT_SPLIT_TRAIN, 0, 32, x, y, NULL);
  for (int e = 0; e < 32; e++) {
    int64_t o = -1;
    for (int64_t s = 0; s + T < cut && o < 0; s++)
      if ((uint32_t)x[e * T] == tok(s) && (uint32_t)x[e * T + 1] == tok(s + 1) && (uint32_t)y[e * T + T - 1] == tok(s + T))
        o = s;
    cr_assert(o >= 0, "training window %d is not in the training tokens", e);
    for (int64_t p = 0; p < T; p++) cr_assert((uint32_t)x[e * T + p] == tok(o + p) && (uint32_t)y[e * T + p] == tok(o + p + 1));
  }
  int64_t m = AT_MIN(tiles, 32);
  at_task_batch(t, AT_SPLIT_TEST, 0, m, x, y, NULL);
  for (int64_t e = 0; e < m; e++)
    for (int64_t p = 0; p < T; p++)
      cr_assert((uint32_t)x[e * T + p] == tok(cut + e * T + p) && (uint32_t)y[e * T + p] == tok(cut + e * T + p + 1),
                "test window %lld", (long long)e);
  free(x), free(y);
  at_task_free(t);
}

static at_experiment *load(const char *data, at_status *st) {
  char text[2000];
  snprintf(text, sizeof text, "experiment: tokens\ndata: %s\nmodel: {d_model: 8, n_heads: 1, mlp: none}\n", data);
  const char *y = path_of("exp.yaml");
  FILE *f = fopen(y, "w");
  fputs(text, f);
  fclose(f);
  at_experiment *e = NULL;
  *st = at_experiment_load(y, NULL, 0, &e);
  return e;
}

Test(tokens, llmc_gpt2_and_llama3_files) {
  const char *g = write_tokens("gpt2.bin", 20240520, 1, 3000, 3000, 2, gpt2_tok);
  const char *l = write_tokens("llama.bin", 20240801, 7, 2000, 2000, 4, llama_tok);
  at_task_cfg c = cfg_for(g, 50257);
  cr_expect_eq(at_task_corpus_vocab(&c), 50257);
  cr_expect(!at_task_byte_level(&c));
  check_windows(&c, 3000, gpt2_tok);
  c = cfg_for(l, 128256);
  cr_expect_eq(at_task_corpus_vocab(&c), 128256);
  check_windows(&c, 2000, llama_tok);
  /* the loader takes the vocabulary from the file unless vocab_size is given */
  char data[600];
  at_status st;
  snprintf(data, sizeof data, "{task: text, path: %s, seq_len: 16}", g);
  at_experiment *e = load(data, &st);
  cr_assert(st == AT_OK, "%s", at_errmsg());
  cr_expect_eq(e->runs[0].data.vocab_size, 50257);
  cr_expect(strstr(e->runs[0].yaml, "vocab_size: 50257") != NULL);
  at_experiment_free(e);
  snprintf(data, sizeof data, "{task: text, path: %s, seq_len: 16, vocab_size: 50304}", g);
  e = load(data, &st);
  cr_assert(st == AT_OK, "%s", at_errmsg());
  cr_expect_eq(e->runs[0].data.vocab_size, 50304, "the YAML's vocab_size wins");
  at_experiment_free(e);
}

Test(tokens, nanogpt_files_take_the_vocabulary_from_the_yaml) {
  const char *p = write_tokens("train.bin", 0, 0, 0, 1000, 2, small_tok);
  at_task_cfg c = cfg_for(p, 65);
  cr_expect_eq(at_task_corpus_vocab(&c), 0, "a raw file does not say");
  check_windows(&c, 1000, small_tok);
  c.vocab_size = 64; /* token 64 is in the file */
  const char *bad = NULL;
  cr_expect(at_task_check(&c, &bad) == AT_E_FORMAT && bad && !strcmp(bad, "path"));
  cr_expect(strstr(at_errmsg(), "token 64 at position 37 is not below vocab_size 64") &&
                strstr(at_errmsg(), "give data.vocab_size"), "%s", at_errmsg());
  /* GPT-2 tokens in a raw file: the default 256 is refused at load, naming the key */
  const char *g = write_tokens("raw_gpt2.bin", 0, 0, 0, 500, 2, gpt2_tok);
  char data[600];
  at_status st;
  snprintf(data, sizeof data, "{task: text, path: %s, seq_len: 16}", g);
  cr_expect(load(data, &st) == NULL && st == AT_E_CONFIG);
  cr_expect(strstr(at_errmsg(), "exp.yaml:2:") && strstr(at_errmsg(), "data.path") && strstr(at_errmsg(), "vocab_size 256"),
            "%s", at_errmsg());
  snprintf(data, sizeof data, "{task: text, path: %s, seq_len: 16, vocab_size: 50257}", g);
  at_experiment *e = load(data, &st);
  cr_expect(st == AT_OK && e, "%s", at_errmsg());
  at_experiment_free(e);
}

static void expect_refused(const char *path, int64_t vocab, const char *want) {
  at_task_cfg c = cfg_for(path, vocab);
  const char *bad = NULL;
  cr_expect(at_task_check(&c, &bad) != AT_OK, "%s was accepted", path);
  cr_expect(strstr(at_errmsg(), want) != NULL, "'%s' not in: %s", want, at_errmsg());
  at_task *t = NULL;
  cr_expect(at_task_open(&c, &t) != AT_OK && t == NULL);
  cr_expect(strstr(at_errmsg(), want) != NULL, "open: '%s' not in: %s", want, at_errmsg());
}

Test(tokens, bad_short_and_mismatched_files_are_refused_with_the_reason) {
  expect_refused(write_tokens("trunc.bin", 20240520, 1, 3000, 2000, 2, gpt2_tok), 50257,
                 "declares 3000 tokens (7024 bytes with the header) but the file has 5024 bytes");
  expect_refused(write_tokens("long.bin", 20240520, 1, 100, 2000, 2, gpt2_tok), 50257, "declares 100 tokens");
  expect_refused(write_tokens("neg.bin", 20240520, 1, -5, 10, 2, gpt2_tok), 50257, "declares -5 tokens");
  expect_refused(write_tokens("version.bin", 20240520, 7, 100, 100, 2, gpt2_tok), 50257, "version 7 (this format is version 1)");
  expect_refused(write_tokens("eval.bin", 20240522, 1, 100, 100, 2, gpt2_tok), 50257, "an llm.c evaluation file");
  expect_refused(write_tokens("header.bin", 20240520, 1, 0, 0, 2, gpt2_tok), 50257, "0 tokens");
  const char *odd = path_of("odd.bin");
  FILE *f = fopen(odd, "wb");
  fputs("abc", f);
  fclose(f);
  expect_refused(odd, 256, "an odd size (3 bytes)");
  expect_refused(write_tokens("short.bin", 0, 0, 0, 30, 2, small_tok), 256, "has 30 tokens");
  expect_refused(write_tokens("big.bin", 20240520, 1, 3000, 3000, 2, gpt2_tok), 1000, "is not below vocab_size 1000");
  /* the held-out tail too short for a window: named by val_fraction */
  at_task_cfg c = cfg_for(write_tokens("tail.bin", 0, 0, 0, 60, 2, small_tok), 65);
  c.val_fraction = 0.1;
  const char *bad = NULL;
  cr_expect(at_task_check(&c, &bad) == AT_E_CONFIG && bad && !strcmp(bad, "val_fraction"), "%s", at_errmsg());
}
