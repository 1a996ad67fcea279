/* `mpirun -np 2 ./train FILE` (experiments/dist.h): the runs spread over the
 * ranks and merged by rank 0 equal a serial run of the same file (every
 * run's curves bit-identical, in the same order), test sets of data.eval and
 * niah's per-depth accuracy included; a rank killed mid-run ends the job
 * with mpirun's report, leaves the committed parts readable,
 * and --resume under mpirun then finishes with the serial run's results.
 * train.micro_batches slices sum to the whole batch's step; --data-parallel
 * over 2 ranks equals one process with the same slices bit for bit, and
 * refuses a batch that does not split. The MPI tests are skipped when this
 * build has no MPI or mpirun is missing. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "experiments/dist.h"
#include "experiments/results.h"
#include "testing.h"

/* The ranks' leak check is off: OpenMPI's plugins (dlopen'ed, unloaded at
 * exit, so their stacks cannot be named for a suppression) keep allocations
 * until exit. Our code's leaks are checked by the serial runs beside them. */
#define MPIRUN "env ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 mpirun -np 2 --allow-run-as-root --oversubscribe"

static char dir[256];

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/attnlab_mpi_XXXXXX");
  cr_assert(mkdtemp(dir) != NULL);
  /* containers often forbid the cross-memory attach of OpenMPI's shared-memory transport */
  setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);
}

/* The file dir/name's text (static; the last 8 KiB of a long file). */
static const char *slurp_path(const char *d, const char *name) {
  static char buf[8192];
  char path[512];
  snprintf(path, sizeof path, "%s/%s", d, name);
  buf[0] = 0;
  FILE *f = fopen(path, "r");
  if (!f) return "(no log)";
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0, SEEK_SET);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = 0;
  fclose(f);
  return buf;
}

/* Removes the test's directory (runs, logs, checkpoints). */
static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (dir[0] && system(cmd) != 0) cr_log_warn("could not remove %s", dir);
}

static void need_mpi(void) {
  if (!at_dist_available()) cr_skip_test("built without MPI");
  if (system("command -v mpirun >/dev/null 2>&1") != 0) cr_skip_test("mpirun not found");
}

/* dir/name opened for writing (its path into `path`). */
static FILE *yaml_file(const char *name, char *path, size_t size) {
  snprintf(path, size, "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  cr_assert(f, "%s", path);
  return f;
}

/* Three runs (uneven over two ranks), checkpoints every `ckpt` steps. */
static const char *experiment(int steps, int ckpt) {
  static char path[512];
  FILE *f = yaml_file("exp.yaml", path, sizeof path);
  fprintf(f,
          "experiment: mpi_split\nseed: 0\n"
          "data: {task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 2, train_examples: 2000,\n"
          "       test_examples: 64, random_non_queries: false}\n"
          "model: {d_model: 16, n_heads: 2, mlp: none, position: rope, layers: [kda]}\n"
          "train: {steps: %d, batch_size: 8, lr: 3.0e-3, eval_every: 10, checkpoint_every: %d, threads: 1,\n"
          "        log_every: 5}\n"
          "runs:\n  - {name: kda}\n  - {name: full, model: {layers: [full]}}\n"
          "  - {name: gdn, model: {layers: [gdn]}}\n",
          steps, ckpt);
  fclose(f);
  return path;
}

static int run(const char *launcher, const char *file, const char *out, const char *extra) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s %s/bin/train %s --out %s/%s %s > %s/%s.log 2>&1", launcher, AT_BINARY_DIR, file,
           dir, out, extra, dir, out);
  int rc = system(cmd);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static at_results *results_of(const char *out) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s/results.h5", dir, out);
  at_results *r = NULL;
  cr_assert(at_results_read(path, &r) == AT_OK, "%s: %s", path, at_errmsg());
  return r;
}

static void expect_same_series(const char *what, const char *id, const double *a, const double *b, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    cr_expect(a[i] == b[i] || (a[i] != a[i] && b[i] != b[i]), "run %s: %s[%lld] %.17g != %.17g", id, what,
              (long long)i, a[i], b[i]);
}

/* Same runs in the same order with bit-identical curves and final figures. */
static void expect_same_results(const char *serial, const char *spread) {
  at_results *a = results_of(serial), *b = results_of(spread);
  cr_assert_eq(a->n_runs, b->n_runs);
  for (int i = 0; i < a->n_runs; i++) {
    const at_results_run *x = a->runs[i], *y = b->runs[i];
    cr_assert_str_eq(x->id, y->id);
    cr_expect_str_eq(x->status, y->status);
    cr_expect_str_eq(x->config, y->config);
    cr_expect_eq(x->params, y->params);
    cr_assert_eq(x->n_train, y->n_train, "run %s", x->id);
    cr_assert_eq(x->n_eval, y->n_eval, "run %s", x->id);
    expect_same_series("train_loss", x->id, x->train_loss, y->train_loss, x->n_train);
    expect_same_series("eval_loss", x->id, x->eval_loss, y->eval_loss, x->n_eval);
    expect_same_series("eval_accuracy", x->id, x->eval_accuracy, y->eval_accuracy, x->n_eval);
    cr_expect(x->final_eval_loss == y->final_eval_loss, "run %s", x->id);
  }
  at_results_free(a);
  at_results_free(b);
}

Test(mpi, spread_runs_merge_to_the_serial_results, .init = setup, .fini = teardown) {
  need_mpi();
  const char *f = experiment(30, 0);
  cr_assert_eq(run("", f, "serial", ""), 0);
  cr_assert_eq(run(MPIRUN, f, "spread", ""), 0, "%s", slurp_path(dir, "spread.log"));
  expect_same_results("serial", "spread");
  char part[512];
  snprintf(part, sizeof part, "%s/spread/results.rank1.h5", dir);
  cr_expect(access(part, F_OK) != 0, "the parts are removed once merged");
  snprintf(part, sizeof part, "%s/spread/table.md", dir);
  cr_expect(access(part, F_OK) == 0, "rank 0 writes the table");
}

/* Two niah runs with a longer test set: its per-depth accuracy (and the
 * run's own) must come through the merge as a serial run writes them. */
static const char *niah_experiment(void) {
  static char path[512];
  FILE *f = yaml_file("niah.yaml", path, sizeof path);
  fprintf(f,
          "experiment: mpi_niah\nseed: 0\n"
          "data: {task: niah, vocab_size: 64, seq_len: 32, num_depth_buckets: 4, train_examples: 2000,\n"
          "       test_examples: 64, eval: [{name: 2x, seq_len: 64}]}\n"
          "model: {d_model: 16, n_heads: 2, mlp: none, position: rope, layers: [kda]}\n"
          "train: {steps: 20, batch_size: 8, lr: 3.0e-3, eval_every: 10, checkpoint_every: 0, threads: 1,\n"
          "        log_every: 5}\n"
          "runs:\n  - {name: kda}\n  - {name: full, model: {layers: [full]}}\n");
  fclose(f);
  return path;
}

static void expect_same_groups(const char *id, const char *what, int na, char **an, const double *a, int nb,
                               char **bn, const double *b, int64_t rows) {
  cr_assert_eq(na, nb, "run %s: %s groups %d != %d", id, what, na, nb);
  for (int g = 0; g < na; g++) cr_expect_str_eq(an[g], bn[g], "run %s: %s group %d", id, what, g);
  expect_same_series(what, id, a, b, rows * na);
}

Test(mpi, test_sets_and_their_depth_groups_survive_the_merge, .init = setup, .fini = teardown) {
  need_mpi();
  const char *f = niah_experiment();
  cr_assert_eq(run("", f, "serial", ""), 0, "%s", slurp_path(dir, "serial.log"));
  cr_assert_eq(run(MPIRUN, f, "spread", ""), 0, "%s", slurp_path(dir, "spread.log"));
  expect_same_results("serial", "spread");
  at_results *a = results_of("serial"), *b = results_of("spread");
  for (int i = 0; i < a->n_runs; i++) {
    const at_results_run *x = a->runs[i], *y = b->runs[i];
    cr_assert(x->n_groups == 4, "run %s: %d depth groups", x->id, x->n_groups);
    expect_same_groups(x->id, "eval_group_accuracy", x->n_groups, x->group_names, x->eval_group_accuracy,
                       y->n_groups, y->group_names, y->eval_group_accuracy, x->n_eval);
    cr_assert_eq(x->n_evalsets, 1, "run %s", x->id);
    cr_assert_eq(y->n_evalsets, 1, "run %s", y->id);
    const at_results_evalset *u = &x->evalsets[0], *v = at_results_get_evalset(y, u->name);
    cr_assert(v != NULL && u->n > 0 && u->n == v->n, "run %s: test set %s", x->id, u->name);
    expect_same_series("2x loss", x->id, u->loss, v->loss, u->n);
    expect_same_series("2x accuracy", x->id, u->accuracy, v->accuracy, u->n);
    cr_expect(u->n_groups == 4, "run %s: the test set has %d groups", x->id, u->n_groups);
    expect_same_groups(x->id, "2x group_accuracy", u->n_groups, u->group_names, u->group_accuracy, v->n_groups,
                       v->group_names, v->group_accuracy, u->n);
  }
  at_results_free(a);
  at_results_free(b);
}

/* The pid of the rank-`rank` process whose command line mentions `needle`. */
static pid_t find_rank(int rank, const char *needle) {
  DIR *d = opendir("/proc");
  cr_assert(d);
  pid_t found = 0;
  char want[64];
  snprintf(want, sizeof want, "OMPI_COMM_WORLD_RANK=%d", rank);
  for (struct dirent *de; !found && (de = readdir(d));) {
    char path[300], buf[1 << 16];
    if (de->d_name[0] < '1' || de->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/cmdline", de->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++) buf[i] = buf[i] ? buf[i] : ' ';
    buf[n] = 0;
    if (!strstr(buf, needle) || strstr(buf, "mpirun")) continue;
    snprintf(path, sizeof path, "/proc/%s/environ", de->d_name);
    if (!(f = fopen(path, "r"))) continue;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++) {
      if (strncmp(buf + i, want, strlen(want)) == 0 && (i == 0 || buf[i - 1] == 0) && buf[i + strlen(want)] == 0)
        found = (pid_t)atoi(de->d_name);
      while (i < n && buf[i]) i++;
    }
  }
  closedir(d);
  return found;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

Test(mpi, a_killed_rank_is_reported_and_resume_finishes, .init = setup, .fini = teardown, .timeout = 600) {
  need_mpi();
  const char *f = experiment(400, 20);
  cr_assert_eq(run("", f, "serial", ""), 0);
  char cmd[2048], part[512];
  snprintf(cmd, sizeof cmd, "exec " MPIRUN " %s/bin/train %s --out %s/killed > %s/killed.log 2>&1", AT_BINARY_DIR,
           f, dir, dir);
  pid_t job = fork();
  cr_assert(job >= 0);
  if (job == 0) {
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  /* rank 1 has committed a part (its first run's first evaluation) */
  snprintf(part, sizeof part, "%s/killed/results.rank1.h5", dir);
  for (int i = 0; i < 6000 && access(part, F_OK) != 0; i++) sleep_ms(10);
  cr_assert(access(part, F_OK) == 0, "rank 1 never wrote its part: %s", slurp_path(dir, "killed.log"));
  char needle[400];
  snprintf(needle, sizeof needle, "%s/killed", dir);
  pid_t victim = find_rank(1, needle);
  cr_assert(victim > 0, "rank 1 not found");
  cr_assert_eq(kill(victim, SIGKILL), 0);
  int status = 0;
  cr_assert_eq(waitpid(job, &status, 0), job);
  cr_expect(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the job must fail when a rank is killed");
  const char *log = slurp_path(dir, "killed.log");
  cr_expect(strstr(log, "rank 1"), "mpirun names the killed rank: %s", log);
  at_results *p = NULL;
  cr_expect(at_results_read(part, &p) == AT_OK, "the killed rank's committed part is readable: %s", at_errmsg());
  at_results_free(p);
  cr_assert_eq(run(MPIRUN, f, "killed", "--resume"), 0, "%s", slurp_path(dir, "killed.log"));
  expect_same_results("serial", "killed");
}

/* ---- slices of a batch, and data parallelism ------------------------------------- */

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(a), 1e-30); }

/* Slices sum to the batch's gradient: the first loss (same parameters) to
 * rounding, the curve close (float sums in another order). */
Test(mpi, micro_batches_sum_to_the_whole_batch, .init = setup, .fini = teardown) {
  const char *f = experiment(30, 0);
  cr_assert_eq(run("", f, "whole", ""), 0);
  cr_assert_eq(run("", f, "sliced", "--set train.micro_batches=4"), 0);
  at_results *a = results_of("whole"), *b = results_of("sliced");
  int differ = 0;
  for (int i = 0; i < a->n_runs; i++) {
    const at_results_run *x = a->runs[i], *y = b->runs[i];
    cr_assert_eq(x->n_train, y->n_train);
    cr_expect(rel(x->train_loss[0], y->train_loss[0]) < 1e-6, "run %s: %.9g vs %.9g", x->id, x->train_loss[0],
              y->train_loss[0]);
    for (int64_t s = 0; s < x->n_train; s++)
      cr_expect(rel(x->train_loss[s], y->train_loss[s]) < 1e-4, "run %s step %lld: %.9g vs %.9g", x->id,
                (long long)x->train_step[s], x->train_loss[s], y->train_loss[s]);
    differ += x->train_loss[x->n_train - 1] != y->train_loss[y->n_train - 1];
  }
  cr_expect(differ > 0, "slicing sums in another order: some run's last loss differs in its last bits");
  at_results_free(a);
  at_results_free(b);
}

/* Data-parallel over 2 ranks (1 and 2 slices each) equals one process with
 * the same slices, bit for bit. */
Test(mpi, data_parallel_equals_one_process_with_its_slices, .init = setup, .fini = teardown) {
  need_mpi();
  const char *f = experiment(30, 0);
  cr_assert_eq(run("", f, "serial2", "--set train.micro_batches=2"), 0);
  cr_assert_eq(run(MPIRUN, f, "dp2", "--data-parallel --set train.micro_batches=2"), 0, "%s", slurp_path(dir, "dp2.log"));
  expect_same_results("serial2", "dp2");
  cr_assert_eq(run("", f, "serial4", "--set train.micro_batches=4"), 0);
  cr_assert_eq(run(MPIRUN, f, "dp4", "--data-parallel --set train.micro_batches=4"), 0, "%s", slurp_path(dir, "dp4.log"));
  expect_same_results("serial4", "dp4");
}

Test(mpi, data_parallel_refuses_a_batch_that_does_not_split, .init = setup, .fini = teardown) {
  need_mpi();
  const char *f = experiment(10, 0);
  cr_expect_eq(run(MPIRUN, f, "odd", "--data-parallel --set train.batch_size=9"), 1);
  const char *log = slurp_path(dir, "odd.log");
  cr_expect(strstr(log, "data-parallel over 2 ranks: train.batch_size 9"), "%s", log);
}
