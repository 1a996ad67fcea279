/* Crash safety of ./train: kill -9 at random moments, a full disk (a file
 * size limit), and damaged files at --resume.
 *
 * - 20 runs of a small experiment are each killed (SIGKILL) at a random
 *   moment (checkpoints every 2 steps, an evaluation every 4: most of the
 *   time goes to writing files and evaluating), then resumed to the end:
 *   every curve point and the final losses equal an uninterrupted run's,
 *   bit for bit.
 * - Writes failing for lack of space (RLIMIT_FSIZE; SIGXFSZ is ignored by
 *   train, so writes fail with EFBIG as they would with ENOSPC) are
 *   reported, exit non-zero, leave no temporary file and the last good
 *   checkpoint and results byte for byte as they were; resuming later
 *   reaches the same final losses.
 * - A damaged checkpoint or results file (truncated, a flipped bit, another
 *   format, another model, another configuration, another experiment) is
 *   refused at --resume with what is wrong, and no file is changed. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "experiments/config.h"
#include "experiments/results.h"
#include "experiments/runner.h"
#include "testing.h"

static const char *experiment =
    "experiment: crash\n"
    "seed: 5\n"
    "data: {task: mqar, vocab_size: 32, seq_len: 16, num_kv_pairs: 2, train_examples: 512, test_examples: 32}\n"
    "model: {d_model: 16, n_heads: 2, mlp: none, position: learned, layers: [full]}\n"
    "train: {steps: 40, batch_size: 8, lr: 3.0e-3, warmup_steps: 4, eval_every: 4, checkpoint_every: 2,\n"
    "        threads: 1, log_every: 1000}\n"
    "runs:\n"
    "  - {name: a}\n"
    "  - {name: b, seed: 6}\n";

static char dir[256], yaml[300];

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/attnlab_crash_XXXXXX");
  cr_assert(mkdtemp(dir));
  snprintf(yaml, sizeof yaml, "%s/crash.yaml", dir);
  FILE *f = fopen(yaml, "w");
  cr_assert(f);
  fputs(experiment, f);
  fclose(f);
}

static void cleanup(void) {
  char cmd[300];
  if (dir[0] && snprintf(cmd, sizeof cmd, "rm -rf %s", dir) > 0 && system(cmd) != 0) {}
}
TestSuite(crash, .fini = cleanup);

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Starts build/bin/train on the experiment (output to `out`), optionally
 * --resume, under a file size limit (0: none); stdout and stderr go to
 * out.log. */
static pid_t start(const char *out, int resume, long fsize_limit, const char *const *sets, int n_sets) {
  char log[400];
  snprintf(log, sizeof log, "%s.log", out);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
    if (fsize_limit > 0) {
      struct rlimit l = {(rlim_t)fsize_limit, (rlim_t)fsize_limit};
      setrlimit(RLIMIT_FSIZE, &l);
    }
    char exe[600];
    snprintf(exe, sizeof exe, "%s/bin/train", AT_BINARY_DIR);
    const char *argv[32] = {exe, yaml, "--out", out};
    int n = 4;
    if (resume) argv[n++] = "--resume";
    for (int i = 0; i < n_sets; i++) argv[n++] = "--set", argv[n++] = sets[i];
    execv(exe, (char *const *)argv);
    _exit(127);
  }
  return pid;
}

static int finish(pid_t pid) {
  int ws;
  cr_assert(waitpid(pid, &ws, 0) == pid);
  return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

static at_results *read_results(const char *out) {
  char path[400];
  snprintf(path, sizeof path, "%s/results.h5", out);
  at_results *r = NULL;
  cr_assert(at_results_read(path, &r) == AT_OK, "%s", at_errmsg());
  return r;
}

/* Every curve point of every run equal, bit for bit. */
static void expect_same_curves(const at_results *x, const at_results *y, const char *what) {
  cr_assert(x->n_runs == y->n_runs, "%s: %d vs %d runs", what, x->n_runs, y->n_runs);
  for (int i = 0; i < x->n_runs; i++) {
    const at_results_run *a = x->runs[i], *b = y->runs[i];
    cr_expect_str_eq(b->status, "ok", "%s", what);
    cr_assert(a->n_train == b->n_train && a->n_eval == b->n_eval, "%s run %s: %lld/%lld vs %lld/%lld points", what,
              a->id, (long long)a->n_train, (long long)a->n_eval, (long long)b->n_train, (long long)b->n_eval);
    cr_expect(!memcmp(a->train_step, b->train_step, (size_t)a->n_train * sizeof(int64_t)) &&
                  !memcmp(a->train_loss, b->train_loss, (size_t)a->n_train * sizeof(double)),
              "%s run %s: training losses differ", what, a->id);
    cr_expect(!memcmp(a->eval_step, b->eval_step, (size_t)a->n_eval * sizeof(int64_t)) &&
                  !memcmp(a->eval_loss, b->eval_loss, (size_t)a->n_eval * sizeof(double)) &&
                  !memcmp(a->eval_accuracy, b->eval_accuracy, (size_t)a->n_eval * sizeof(double)),
              "%s run %s: evaluations differ", what, a->id);
    cr_expect(a->final_eval_loss == b->final_eval_loss && a->steps == b->steps, "%s run %s: final loss %.17g vs %.17g",
              what, a->id, a->final_eval_loss, b->final_eval_loss);
  }
}

/* Temporary files left in out/ and out/checkpoints/. */
static int tmp_files(const char *out) {
  int n = 0;
  for (int sub = 0; sub < 2; sub++) {
    char d[400];
    snprintf(d, sizeof d, "%s%s", out, sub ? "/checkpoints" : "");
    DIR *dd = opendir(d);
    if (!dd) continue;
    struct dirent *e;
    while ((e = readdir(dd))) n += strstr(e->d_name, ".tmp") != NULL;
    closedir(dd);
  }
  return n;
}

static unsigned char *slurp(const char *path, long *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return *n = -1, NULL;
  fseek(f, 0, SEEK_END);
  *n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)*n + 1);
  cr_assert(b && fread(b, 1, (size_t)*n, f) == (size_t)*n);
  fclose(f);
  return b;
}

static int same_file(const char *path, const unsigned char *b, long n) {
  long m;
  unsigned char *c = slurp(path, &m);
  int same = c && m == n && !memcmp(b, c, (size_t)n);
  free(c);
  return same;
}

static const char *in(const char *out, const char *name) {
  static char p[2][500];
  static int k;
  k ^= 1;
  snprintf(p[k], sizeof p[k], "%s/%s", out, name);
  return p[k];
}

Test(crash, kill_at_20_random_moments_then_resume_bit_identically, .timeout = 600) {
  setup();
  char ref[300];
  snprintf(ref, sizeof ref, "%s/ref", dir);
  double t0 = now();
  cr_assert(finish(start(ref, 0, 0, NULL, 0)) == 0, "the uninterrupted run failed");
  double span = now() - t0;
  at_results *want = read_results(ref);
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  int mid_write = 0, before_results = 0, finished = 0;
  for (int i = 0; i < 20; i++) {
    char out[300];
    snprintf(out, sizeof out, "%s/k%d", dir, i);
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    double at = span * (double)(rng >> 11) / 9007199254740992.0; /* uniform in [0, span) */
    pid_t pid = start(out, 0, 0, NULL, 0);
    struct timespec d = {(time_t)at, (long)((at - (double)(time_t)at) * 1e9)};
    nanosleep(&d, NULL);
    kill(pid, SIGKILL);
    int rc = finish(pid);
    finished += rc == 0;
    mid_write += tmp_files(out) > 0;
    before_results += access(in(out, "results.h5"), F_OK) != 0;
    cr_assert(rc == 0 || rc == 128 + SIGKILL, "kill %d: exit status %d", i, rc);
    int rrc = finish(start(out, 1, 0, NULL, 0));
    cr_assert(rrc == 0, "kill %d at %.3f s: --resume failed with status %d (see %s.log)", i, at, rrc, out);
    cr_expect(tmp_files(out) == 0, "kill %d: temporary files remain after the resume", i);
    at_results *got = read_results(out);
    char what[64];
    snprintf(what, sizeof what, "kill %d at %.3f s", i, at);
    expect_same_curves(want, got, what);
    at_results_free(got);
  }
  fprintf(stderr, "crash: uninterrupted run %.2f s; 20 kills: %d during a write (a .tmp left), %d before the first "
          "results, %d after the end; every resume bit-identical\n", span, mid_write, before_results, finished);
  at_results_free(want);
}

Test(crash, a_full_disk_is_reported_and_keeps_the_last_good_files, .timeout = 300) {
  setup();
  char ref[300], out[300];
  snprintf(ref, sizeof ref, "%s/ref", dir);
  snprintf(out, sizeof out, "%s/full", dir);
  cr_assert(finish(start(ref, 0, 0, NULL, 0)) == 0);
  at_results *want = read_results(ref);
  /* train a while, stop (checkpointed), keep copies of the files */
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "%s/bin/train %s --out %s --stop-after 10 >/dev/null 2>&1", AT_BINARY_DIR, yaml, out);
  cr_assert(system(cmd) == 0);
  long nr, nc;
  unsigned char *res = slurp(in(out, "results.h5"), &nr), *ck = slurp(in(out, "checkpoints/a.h5"), &nc);
  cr_assert(res && ck && nc > nr, "the checkpoint (%ld bytes) is larger than the results (%ld)", nc, nr);
  /* (1) nothing fits: the first write fails; (2) the results fit but the checkpoint does not */
  const long limits[2] = {1024, nr + 8192};
  for (int k = 0; k < 2; k++) {
    int rc = finish(start(out, 1, limits[k], NULL, 0));
    cr_expect(rc != 0, "limit %ld: exit status 0 despite failed writes", limits[k]);
    char log[400];
    snprintf(log, sizeof log, "%s.log", out);
    long nl;
    unsigned char *text = slurp(log, &nl);
    cr_assert(text);
    text[nl] = '\0';
    cr_expect(strstr((char *)text, "disk full") || strstr((char *)text, "cannot write"),
              "limit %ld: the failure is not reported: %s", limits[k], text);
    free(text);
    unlink(log);
    cr_expect(tmp_files(out) == 0, "limit %ld: a temporary file was left", limits[k]);
    cr_expect(same_file(in(out, "checkpoints/a.h5"), ck, nc), "limit %ld: the last good checkpoint changed", limits[k]);
    if (k == 0) cr_expect(same_file(in(out, "results.h5"), res, nr), "the last good results changed");
  }
  /* with room again, the run continues to the same end */
  cr_assert(finish(start(out, 1, 0, NULL, 0)) == 0);
  at_results *got = read_results(out);
  expect_same_curves(want, got, "after a full disk");
  at_results_free(got), at_results_free(want);
  free(res), free(ck);
}

/* ---- damaged files at --resume -------------------------------------------------- */

static at_status resume_in_process(const char *file, const char *out, const char *const *sets, int n_sets) {
  at_experiment *e = NULL;
  at_status st = at_experiment_load(file, sets, n_sets, &e);
  cr_assert(st == AT_OK, "%s", at_errmsg());
  FILE *log = fopen("/dev/null", "w");
  at_train_opts o = {.out_dir = out, .resume = 1, .progress = 0, .log = log};
  int failed = 0;
  st = at_experiment_train(e, &o, &failed);
  fclose(log);
  at_experiment_free(e);
  return st;
}

typedef enum { NONE, TRUNCATE, FLIP, REPLACE } damage;

/* Damages `victim` in a copy of the interrupted run `base` (REPLACE: by a
 * copy of `source`), resumes `file` with `sets`: it must be refused with
 * `want` in the message and no file changed. */
static void expect_refused(const char *base, const char *victim, damage d, const char *source, const char *file,
                           const char *const *sets, int n_sets, const char *want) {
  static int k;
  char out[300], cmd[2000];
  snprintf(out, sizeof out, "%s/damaged%d", dir, k++);
  snprintf(cmd, sizeof cmd, "cp -r %s %s", base, out);
  cr_assert(system(cmd) == 0);
  const char *path = in(out, victim);
  long n;
  unsigned char *b = slurp(path, &n);
  cr_assert(b);
  if (d == TRUNCATE) {
    cr_assert(truncate(path, n / 2) == 0);
  } else if (d == FLIP) {
    FILE *f = fopen(path, "r+b");
    fseek(f, n / 2, SEEK_SET);
    int c = fgetc(f);
    fseek(f, n / 2, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
  } else if (d == REPLACE) {
    snprintf(cmd, sizeof cmd, "cp %s %s", source, path);
    cr_assert(system(cmd) == 0);
  }
  long nr, nca, ncb;
  unsigned char *r0 = slurp(in(out, "results.h5"), &nr), *a0 = slurp(in(out, "checkpoints/a.h5"), &nca),
                *b0 = slurp(in(out, "checkpoints/b.h5"), &ncb);
  at_status st = resume_in_process(file, out, sets, n_sets);
  cr_expect(st != AT_OK, "%s (damage %d) was accepted", victim, d);
  cr_expect(strstr(at_errmsg(), want) != NULL, "%s (damage %d): the refusal does not say '%s': %s", victim, d, want,
            at_errmsg());
  cr_expect(same_file(in(out, "results.h5"), r0, nr) && same_file(in(out, "checkpoints/a.h5"), a0, nca) &&
                same_file(in(out, "checkpoints/b.h5"), b0, ncb),
            "%s (damage %d): a file was changed by the refused resume", victim, d);
  free(b), free(r0), free(a0), free(b0);
}

Test(crash, damaged_files_are_refused_at_resume_and_left_as_they_are, .timeout = 300) {
  setup();
  char base[300], other[300], cmd[4000];
  snprintf(base, sizeof base, "%s/base", dir);
  snprintf(other, sizeof other, "%s/other", dir);
  /* runs interrupted at step 10; the same with another model width */
  snprintf(cmd, sizeof cmd, "%s/bin/train %s --out %s --stop-after 10 >/dev/null 2>&1 && "
           "%s/bin/train %s --out %s --stop-after 10 --set model.d_model=32 >/dev/null 2>&1",
           AT_BINARY_DIR, yaml, base, AT_BINARY_DIR, yaml, other);
  cr_assert(system(cmd) == 0);
  char results[400], ckpt[400], other_ckpt[400], other_yaml[400];
  snprintf(results, sizeof results, "%s/results.h5", base);
  snprintf(ckpt, sizeof ckpt, "%s/checkpoints/a.h5", base);
  snprintf(other_ckpt, sizeof other_ckpt, "%s/checkpoints/a.h5", other);
  expect_refused(base, "checkpoints/a.h5", TRUNCATE, NULL, yaml, NULL, 0, "truncated");
  expect_refused(base, "checkpoints/a.h5", FLIP, NULL, yaml, NULL, 0, "checksum mismatch");
  expect_refused(base, "checkpoints/a.h5", REPLACE, results, yaml, NULL, 0, "not an attnlab-checkpoint");
  expect_refused(base, "checkpoints/a.h5", REPLACE, other_ckpt, yaml, NULL, 0, "has shape [32");
  expect_refused(base, "results.h5", TRUNCATE, NULL, yaml, NULL, 0, "truncated");
  expect_refused(base, "results.h5", FLIP, NULL, yaml, NULL, 0, "checksum mismatch");
  expect_refused(base, "results.h5", REPLACE, ckpt, yaml, NULL, 0, "not an attnlab-results file");
  /* the same model configured otherwise; the results of another experiment */
  const char *lr[] = {"lr=1.0e-3"};
  expect_refused(base, "results.h5", NONE, NULL, yaml, lr, 1, "configured otherwise");
  snprintf(other_yaml, sizeof other_yaml, "%s/other.yaml", dir);
  snprintf(cmd, sizeof cmd, "sed 's/^experiment: crash/experiment: other/' %s > %s", yaml, other_yaml);
  cr_assert(system(cmd) == 0);
  expect_refused(base, "results.h5", NONE, NULL, other_yaml, NULL, 0, "holds the results of experiment 'crash'");
  /* a checkpoint whose results were lost: its curves would be missing */
  snprintf(cmd, sizeof cmd, "cp -r %s %s/lost && rm %s/lost/results.h5", base, dir, dir);
  cr_assert(system(cmd) == 0);
  snprintf(cmd, sizeof cmd, "%s/lost", dir);
  cr_expect(resume_in_process(yaml, cmd, NULL, 0) != AT_OK && strstr(at_errmsg(), "curves between are missing"),
            "%s", at_errmsg());
}
