/* The training pipeline end to end (experiments/runner.c, tools/train.c):
 * a tiny model learns, resume is bit-exact, non-finite losses stop a run
 * with the checkpoint kept, bad inputs are refused before training. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "experiments/config.h"
#include "experiments/results.h"
#include "experiments/runner.h"
#include "testing.h"

static char dir[256];

static void remove_dir(void) { at_test_rmdir(dir); }

TestSuite(train, .fini = remove_dir);

static void make_dir(void) {
  snprintf(dir, sizeof dir, "/tmp/attnlab_train_XXXXXX");
  cr_assert(mkdtemp(dir) != NULL);
}

static const char *write_file(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  cr_assert(f);
  fputs(text, f);
  fclose(f);
  return path;
}

/* A tiny MQAR model: 2 layers of attention, d 32, vocab 64, T 32, 2 pairs. */
static const char *tiny =
    "experiment: tiny\n"
    "seed: 3\n"
    "data: {task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 2, train_examples: 2000,\n"
    "       test_examples: 64, random_non_queries: false}\n"
    "model: {d_model: 32, n_heads: 2, mlp: none, position: learned, layers: [full, full]}\n"
    "train: {steps: 120, batch_size: 16, lr: 3.0e-3, warmup_steps: 10, eval_every: 60,\n"
    "        checkpoint_every: 20, threads: 1, log_every: 1000}\n";

static at_results *train(const char *yaml, const char *const *sets, int n_sets, const char *out,
                         int resume, int64_t stop_after, at_status *status) {
  at_experiment *e = NULL;
  at_status st = at_experiment_load(write_file("exp.yaml", yaml), sets, n_sets, &e);
  cr_assert(st == AT_OK, "%s", at_errmsg());
  FILE *log = fopen("/dev/null", "w");
  at_train_opts o = {.out_dir = out, .resume = resume, .progress = 0, .log = log, .stop_after = stop_after};
  int failed = 0;
  st = at_experiment_train(e, &o, &failed);
  fclose(log);
  at_experiment_free(e);
  if (status) *status = st;
  if (st != AT_OK) return NULL;
  char path[600];
  snprintf(path, sizeof path, "%s/results.h5", out);
  at_results *r = NULL;
  cr_assert(at_results_read(path, &r) == AT_OK, "%s", at_errmsg());
  return r;
}

Test(train, a_tiny_model_learns_and_writes_everything) {
  make_dir();
  char out[300];
  snprintf(out, sizeof out, "%s/out", dir);
  at_results *r = train(tiny, NULL, 0, out, 0, 0, NULL);
  cr_assert(r && r->n_runs == 1);
  at_results_run *run = r->runs[0];
  cr_expect_str_eq(run->status, "ok");
  cr_expect(run->n_train == 120 && run->n_eval == 2);
  double first = 0, last = 0;
  for (int i = 0; i < 10; i++) first += run->train_loss[i] / 10, last += run->train_loss[110 + i] / 10;
  cr_expect(last < first - 0.5, "training loss did not fall: %.3f -> %.3f", first, last);
  cr_expect(run->eval_loss[1] < log(64.0) - 0.5, "eval loss %.3f", run->eval_loss[1]);
  cr_expect(run->tokens_per_second > 0 && run->params > 0);
  const at_results_extra *cache = at_results_get(run, "cache_bytes_per_token");
  cr_expect(cache && cache->num == 4.0 * 2 * 2 * 2 * 16, "2 layers x (k, v) x 2 heads x 16 dims x 4 bytes");
  char path[600];
  snprintf(path, sizeof path, "%s/table.md", out);
  cr_expect(access(path, F_OK) == 0);
  snprintf(path, sizeof path, "%s/checkpoints/tiny.h5", out);
  cr_expect(access(path, F_OK) == 0);
  snprintf(path, sizeof path, "%s/plot/curves.gp", out);
  cr_expect(access(path, F_OK) == 0);
  at_results_free(r);
}

Test(train, resume_continues_to_bit_identical_losses) {
  make_dir();
  char a[300], b[300];
  snprintf(a, sizeof a, "%s/a", dir);
  snprintf(b, sizeof b, "%s/b", dir);
  const char *sets[] = {"train.steps=50", "train.eval_every=25", "train.checkpoint_every=0"};
  at_results *ra = train(tiny, sets, 3, a, 0, 0, NULL);
  at_results *rb = train(tiny, sets, 3, b, 0, 30, NULL); /* interrupted at step 30 */
  cr_assert(ra && rb);
  cr_expect(strncmp(rb->runs[0]->status, "interrupted", 11) == 0, "status %s", rb->runs[0]->status);
  cr_expect(rb->runs[0]->n_train == 30);
  at_results_free(rb);
  rb = train(tiny, sets, 3, b, 1, 0, NULL); /* --resume */
  cr_assert(rb);
  const at_results_run *x = ra->runs[0], *y = rb->runs[0];
  cr_expect_str_eq(y->status, "ok");
  cr_assert(x->n_train == 50 && y->n_train == 50, "%lld vs %lld steps", (long long)x->n_train, (long long)y->n_train);
  for (int i = 0; i < 50; i++)
    cr_expect(x->train_loss[i] == y->train_loss[i] && x->train_step[i] == y->train_step[i],
              "step %d: %.9g vs %.9g", i, x->train_loss[i], y->train_loss[i]);
  cr_expect(x->n_eval == y->n_eval && x->eval_loss[x->n_eval - 1] == y->eval_loss[y->n_eval - 1]);
  /* resuming a finished experiment keeps it */
  at_results_free(rb);
  rb = train(tiny, sets, 3, b, 1, 0, NULL);
  cr_assert(rb && rb->runs[0]->n_train == 50);
  at_results_free(ra);
  at_results_free(rb);
}

Test(train, non_finite_losses_stop_the_run_and_keep_the_checkpoint) {
  make_dir();
  char out[300];
  snprintf(out, sizeof out, "%s/nan", dir);
  /* an absurd learning rate drives the weights to overflow */
  const char *sets[] = {"lr=1.0e30", "train.warmup_steps=0", "train.grad_clip=0.0", "train.max_bad_steps=3",
                        "train.checkpoint_every=1"};
  at_results *r = train(tiny, sets, 5, out, 0, 0, NULL);
  cr_assert(r);
  const at_results_run *run = r->runs[0];
  cr_expect(strstr(run->status, "non-finite") != NULL, "status: %s", run->status);
  cr_expect(run->skipped_steps == 3);
  char path[600];
  snprintf(path, sizeof path, "%s/checkpoints/tiny.h5", out);
  cr_expect(access(path, F_OK) == 0, "the last good checkpoint is kept");
  at_results_free(r);
}

Test(train, bad_inputs_are_refused_before_training) {
  make_dir();
  at_status st;
  /* an output directory that cannot be created */
  char out[300];
  snprintf(out, sizeof out, "%s/file", dir);
  write_file("file", "not a directory");
  snprintf(out, sizeof out, "%s/file/sub", dir);
  cr_expect(train(tiny, NULL, 0, out, 0, 0, &st) == NULL && st == AT_E_IO, "status %d: %s", st, at_errmsg());
  /* a corrupt checkpoint is refused on resume, and left as it is */
  snprintf(out, sizeof out, "%s/corrupt", dir);
  const char *sets[] = {"train.steps=20"};
  at_results *r = train(tiny, sets, 1, out, 0, 10, NULL);
  cr_assert(r);
  at_results_free(r);
  char ck[600];
  snprintf(ck, sizeof ck, "%s/checkpoints/tiny.h5", out);
  FILE *f = fopen(ck, "r+b");
  cr_assert(f);
  fseek(f, 3000, SEEK_SET);
  for (int i = 0; i < 64; i++) fputc(0x5a, f);
  fclose(f);
  cr_expect(train(tiny, sets, 1, out, 1, 0, &st) == NULL && st != AT_OK);
  cr_expect(strstr(at_errmsg(), "cannot resume") != NULL, "%s", at_errmsg());
}

/* The tool itself: exit status 2 and a file:line:col message. */
Test(train, the_tool_refuses_a_bad_file_with_status_2) {
  make_dir();
  const char *path = write_file("bad.yaml", "experiment: x\nmodel: {d_model: 64, n_head: 2}\n");
  char cmd[1200], msg[600] = "";
  snprintf(cmd, sizeof cmd, "%s/bin/train %s 2>&1", AT_BINARY_DIR, path);
  FILE *p = popen(cmd, "r");
  cr_assert(p);
  size_t n = fread(msg, 1, sizeof msg - 1, p);
  msg[n] = '\0';
  int rc = pclose(p);
  cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 2, "exit status %d", WEXITSTATUS(rc));
  char want[600];
  snprintf(want, sizeof want, "%s:2:22: unknown key 'n_head' in model; did you mean 'n_heads'?", path);
  cr_expect(strstr(msg, want) != NULL, "message: %s", msg);
  snprintf(cmd, sizeof cmd, "%s/bin/train --no-such-option 2>/dev/null", AT_BINARY_DIR);
  rc = system(cmd);
  cr_expect(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
}
