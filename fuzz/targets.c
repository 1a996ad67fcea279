/* fuzz/targets.c: the fuzz harnesses' entry points (see targets.h). */
#define _GNU_SOURCE
#include "fuzz/targets.h"

#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/h5io.h"
#include "data/data.h"
#include "experiments/config.h"
#include "experiments/results.h"
#include "models/model.h"
#include "optim/checkpoint.h"

#ifndef AT_SOURCE_DIR
#error "AT_SOURCE_DIR must name the source tree"
#endif

/* An invariant broken: a bug, reported as a crash. */
#define CHECK(cond, ...)                                                   \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "fuzz invariant broken at %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                                        \
      fprintf(stderr, "\n");                                               \
      abort();                                                             \
    }                                                                      \
  } while (0)

/* ---- files -------------------------------------------------------------------- */

static char work[256];

static void remove_work(void) {
  DIR *d = opendir(work);
  if (!d) return;
  struct dirent *e;
  char p[600];
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') snprintf(p, sizeof p, "%s/%s", work, e->d_name), unlink(p);
  closedir(d);
  rmdir(work);
}

/* A private directory, in memory when /dev/shm exists (writes and fsyncs
 * are cheap there). */
static const char *path_in_work(const char *name) {
  static char p[600];
  if (!work[0]) {
    snprintf(work, sizeof work, "%s/attnlab_fuzz_XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    CHECK(mkdtemp(work), "cannot make %s", work);
    atexit(remove_work);
  }
  snprintf(p, sizeof p, "%s/%s", work, name);
  return p;
}

static void put(const char *path, const uint8_t *d, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK(f && (n == 0 || fwrite(d, 1, n, f) == n) && fclose(f) == 0, "cannot write %s", path);
}

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)len + 1);
  *n = b ? fread(b, 1, (size_t)len, f) : 0;
  fclose(f);
  return b;
}

/* An HDF5 input written to `name`, resealed when sealed (targets.h). */
static const char *put_h5(const char *name, const uint8_t *d, size_t n) {
  const char *path = path_in_work(name);
  put(path, d, n);
  if (n > AT_H5_SEAL_BYTES + 8 && d[AT_H5_SEAL_BYTES - 1] == 0 && at_h5_sealed(path)) at_h5_seal(path);
  return path;
}

/* ---- yaml and --set ----------------------------------------------------------- */

int at_fuzz_yaml(const uint8_t *data, size_t size) {
  const char *path = path_in_work("exp.yaml");
  put(path, data, size);
  at_experiment *e = NULL;
  if (at_experiment_load(path, NULL, 0, &e) != AT_OK) {
    CHECK(e == NULL && at_errmsg()[0], "a refusal without a message");
    return 0;
  }
  CHECK(e->n_runs > 0 && e->runs[0].yaml, "an experiment without runs");
  /* the resolved YAML of a run is an experiment file of that run alone */
  char resolved[600];
  snprintf(resolved, sizeof resolved, "%s", path_in_work("resolved.yaml"));
  put(resolved, (const uint8_t *)e->runs[0].yaml, strlen(e->runs[0].yaml));
  at_experiment *back = NULL;
  at_status st = at_experiment_load(resolved, NULL, 0, &back);
  CHECK(st == AT_OK, "the resolved YAML does not load: %s\n%s", at_errmsg(), e->runs[0].yaml);
  CHECK(back->n_runs == 1 && !strcmp(back->runs[0].yaml, e->runs[0].yaml),
        "the resolved YAML resolves differently:\n%s\n----\n%s", e->runs[0].yaml, back->runs[0].yaml);
  at_experiment_free(back);
  at_experiment_free(e);
  return 0;
}

int at_fuzz_set(const uint8_t *data, size_t size) {
  static const char *const bases[] = {"experiments/kda_vs_full.yaml", "experiments/char_lm.yaml",
                                      "experiments/dsa_two_stage_quick.yaml", "tests/configs/example.yaml",
                                      "tests/configs/hybrid.yaml"};
  if (size == 0) return 0;
  char base[1024];
  snprintf(base, sizeof base, "%s/%s", AT_SOURCE_DIR, bases[data[0] % AT_ARRAY_LEN(bases)]);
  char *text = malloc(size);
  CHECK(text, "out of memory");
  memcpy(text, data + 1, size - 1);
  text[size - 1] = '\0';
  const char *sets[16];
  int n = 0;
  for (char *p = text; n < 16;) { /* arguments end at newlines (argv cannot hold NUL) */
    sets[n++] = p;
    char *nl = strchr(p, '\n');
    if (!nl) break;
    *nl = '\0';
    p = nl + 1;
  }
  at_experiment *e = NULL;
  if (at_experiment_load(base, sets, n, &e) == AT_OK) {
    CHECK(e->n_runs > 0, "an experiment without runs");
    at_experiment_free(e);
  } else {
    CHECK(e == NULL && at_errmsg()[0], "a refusal without a message");
  }
  free(text);
  return 0;
}

/* ---- checkpoint ------------------------------------------------------------------- */

typedef struct seed_run {
  at_experiment *e;
  at_model *m;
  at_optim *o;
} seed_run;

/* fuzz/seed.yaml's first run: its model and optimiser, as the runner builds them. */
static seed_run *seed(void) {
  static seed_run s;
  if (s.m) return &s;
  char path[1024];
  snprintf(path, sizeof path, "%s/fuzz/seed.yaml", AT_SOURCE_DIR);
  CHECK(at_experiment_load(path, NULL, 0, &s.e) == AT_OK, "%s", at_errmsg());
  const at_run_cfg *rc = &s.e->runs[0];
  at_model_cfg mc = rc->model;
  mc.vocab_size = rc->data.vocab_size;
  mc.max_seq_len = rc->data.seq_len;
  CHECK(at_model_new(&mc, rc->seed, &s.m) == AT_OK, "%s", at_errmsg());
  at_optim_cfg oc = rc->train.optim;
  oc.total_steps = rc->train.steps;
  CHECK(at_optim_new(&oc, s.m->params, &s.o) == AT_OK, "%s", at_errmsg());
  return &s;
}

int at_fuzz_checkpoint(const uint8_t *data, size_t size) {
  seed_run *sr = seed();
  const char *path = put_h5("ck.h5", data, size);
  at_train_state ts;
  at_train_state_init(&ts);
  char *cfg = NULL;
  at_status st = at_checkpoint_load(path, sr->m->params, sr->o, &ts, &cfg);
  if (st != AT_OK) {
    CHECK(cfg == NULL && at_errmsg()[0], "a refusal without a message");
    return 0;
  }
  const at_params *p = sr->m->params;
  for (int64_t i = 0; i < p->total; i++) CHECK(isfinite(p->data[i]), "a non-finite parameter was loaded");
  CHECK(ts.step >= 0 && ts.skipped_steps >= 0 && ts.skipped_steps <= ts.step && ts.tokens >= 0 &&
            ts.n_rng >= 0 && ts.n_rng <= AT_STATE_MAX_WORDS && ts.n_data_pos >= 0 &&
            ts.n_data_pos <= AT_STATE_MAX_WORDS,
        "a damaged training state was loaded (step %lld, skipped %lld)", (long long)ts.step,
        (long long)ts.skipped_steps);
  free(cfg);
  return 0;
}

/* ---- results ------------------------------------------------------------------------ */

static void same_run(const at_results_run *a, const at_results_run *b) {
  CHECK(!strcmp(a->id, b->id) && !strcmp(a->name, b->name) && !strcmp(a->status, b->status) &&
            !strcmp(a->config, b->config) && a->steps == b->steps && a->n_train == b->n_train &&
            a->n_eval == b->n_eval && a->n_groups == b->n_groups && a->n_extra == b->n_extra &&
            a->n_series == b->n_series,
        "run %s does not read back as written", a->id);
  CHECK(!memcmp(a->train_step, b->train_step, (size_t)a->n_train * sizeof(int64_t)) &&
            !memcmp(a->train_loss, b->train_loss, (size_t)a->n_train * sizeof(double)) &&
            !memcmp(a->eval_step, b->eval_step, (size_t)a->n_eval * sizeof(int64_t)) &&
            !memcmp(a->eval_loss, b->eval_loss, (size_t)a->n_eval * sizeof(double)),
        "run %s: curves do not read back as written", a->id);
}

int at_fuzz_results(const uint8_t *data, size_t size) {
  const char *path = put_h5("results.h5", data, size);
  at_results *r = NULL;
  if (at_results_read(path, &r) != AT_OK) {
    CHECK(r == NULL && at_errmsg()[0], "a refusal without a message");
    return 0;
  }
  /* what --resume does with a run: truncate to the checkpoint, log on */
  for (int i = 0; i < r->n_runs; i++) {
    at_results_run *run = r->runs[i];
    at_results_truncate(run, run->steps / 2);
    int64_t next = run->n_train ? run->train_step[run->n_train - 1] : 0;
    CHECK(at_results_log_train(run, next, 1.0) == AT_OK, "%s", at_errmsg());
  }
  char rt[600];
  snprintf(rt, sizeof rt, "%s", path_in_work("round_trip.h5"));
  CHECK(at_results_write(r, rt) == AT_OK, "what was read cannot be written: %s", at_errmsg());
  at_results *back = NULL;
  CHECK(at_results_read(rt, &back) == AT_OK, "what was written cannot be read: %s", at_errmsg());
  CHECK(back->n_runs == r->n_runs && !strcmp(back->experiment, r->experiment), "the runs do not read back");
  for (int i = 0; i < r->n_runs; i++) same_run(r->runs[i], back->runs[i]);
  at_results_free(back);
  at_results_free(r);
  return 0;
}

/* ---- token cache ------------------------------------------------------------------- */

#define CORPUS_DIR "/tmp/attnlab_fuzz_corpus"

/* A fixed corpus (contents, names and times), so that caches written by
 * one harness process are current for another. */
static at_task_cfg cache_cfg(void) {
  static const char *const files[] = {"a", "b"};
  static const char *const texts[] = {"The first fortune.\n%\nThe second, a little longer one.\n%\nA third.\n",
                                      "Another file of the corpus,\nwith two lines and no separator.\n"};
  static int made;
  if (!made) {
    mkdir(CORPUS_DIR, 0755);
    struct timespec t[2] = {{1577836800, 0}, {1577836800, 0}};
    for (int i = 0; i < 2; i++) {
      char p[300];
      snprintf(p, sizeof p, "%s/%s", CORPUS_DIR, files[i]);
      put(p, (const uint8_t *)texts[i], strlen(texts[i]));
      CHECK(utimensat(AT_FDCWD, p, t, 0) == 0, "cannot set the time of %s", p);
    }
    CHECK(utimensat(AT_FDCWD, CORPUS_DIR, t, 0) == 0, "cannot set the time of %s", CORPUS_DIR);
    made = 1;
  }
  at_task_cfg c;
  at_task_cfg_defaults(&c, AT_TASK_TEXT);
  snprintf(c.path, sizeof c.path, "%s", CORPUS_DIR);
  c.seq_len = 8, c.val_fraction = 0.25, c.train_examples = 16;
  return c;
}

/* A few batches of both splits: ids in range, labels the next ids. */
static void check_batches(at_task *t, int64_t seq, int64_t vocab) {
  for (int split = 0; split < 2; split++) {
    int64_t n = AT_MIN(at_task_size(t, (at_split)split), 16);
    if (n <= 0) continue;
    int32_t *tok = malloc((size_t)(n * seq) * sizeof *tok), *lab = malloc((size_t)(n * seq) * sizeof *lab);
    CHECK(tok && lab, "out of memory");
    at_task_batch(t, (at_split)split, 0, n, tok, lab, NULL);
    for (int64_t i = 0; i < n * seq; i++) {
      CHECK(tok[i] >= 0 && tok[i] < vocab, "token %d out of [0, %lld)", tok[i], (long long)vocab);
      if ((i + 1) % seq) CHECK(lab[i] == tok[i + 1], "label %lld is not the next token", (long long)i);
    }
    free(tok), free(lab);
  }
}

int at_fuzz_cache(const uint8_t *data, size_t size) {
  at_task_cfg c = cache_cfg();
  snprintf(c.cache, sizeof c.cache, "%s", put_h5("cache.h5", data, size));
  size_t n0;
  uint8_t *before = slurp(c.cache, &n0);
  at_task *t = NULL;
  if (at_task_open(&c, &t) == AT_OK) {
    check_batches(t, c.seq_len, 256);
    at_task_free(t);
  } else {
    /* a refused cache is never touched */
    size_t n1;
    uint8_t *after = slurp(c.cache, &n1);
    CHECK(after && n0 == n1 && !memcmp(before, after, n0), "a refused cache was modified");
    free(after);
  }
  free(before);
  return 0;
}

/* ---- .bin token corpora ----------------------------------------------------------------- */

int at_fuzz_bin(const uint8_t *data, size_t size) {
  const char *path = path_in_work("tokens.bin");
  put(path, data, size);
  at_task_cfg c;
  at_task_cfg_defaults(&c, AT_TASK_TEXT);
  snprintf(c.path, sizeof c.path, "%s", path);
  c.seq_len = 8, c.val_fraction = 0.25, c.train_examples = 16;
  int64_t declared = at_task_corpus_vocab(&c);
  const int64_t vocabs[2] = {declared ? declared : 256, 65536};
  for (int v = 0; v < 2; v++) {
    c.vocab_size = vocabs[v];
    const char *bad = NULL;
    at_status chk = at_task_check(&c, &bad);
    at_task *t = NULL;
    at_status st = at_task_open(&c, &t);
    CHECK((chk == AT_OK) == (st == AT_OK), "check says %d, open says %d: %s", chk, st, at_errmsg());
    if (st != AT_OK) {
      CHECK(bad && at_errmsg()[0], "a refusal without the key or a message");
      continue;
    }
    check_batches(t, c.seq_len, c.vocab_size);
    at_task_free(t);
  }
  return 0;
}
