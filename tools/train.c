/* tools/train.c: ./train FILE [--set section.key=value]... [--out DIR] [--resume] [--dry-run]
 *                [--eval-only] [--data-parallel]
 *
 * Under `mpirun -np N` the runs are spread over the N processes
 * (experiments/dist.h); --dry-run and --eval-only run on rank 0 alone.
 *
 * Exit status: 0 when every run finished, 1 when a run stopped (non-finite
 * losses, a failed forward) or, with --eval-only, had no usable checkpoint,
 * 2 when the input was refused before training (usage, experiment file,
 * output directory, checkpoint). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "experiments/config.h"
#include "experiments/dist.h"
#include "experiments/runner.h"
#include "models/mixer.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: train FILE [--set section.key=value]... [--out DIR] [--resume] [--dry-run]\n"
          "             [--stop-after N] [--eval-only]\n"
          "\n"
          "Trains every run of the experiment FILE (YAML) and writes results.h5, table.md,\n"
          "curves.png and checkpoints to results/<experiment>/ (or DIR).\n"
          "\n"
          "  --set k=v   override a shared setting (train.steps=100, lr=3e-3, model.layers=[kda,full])\n"
          "  --out DIR   output directory\n"
          "  --resume    continue from the checkpoints in the output directory; finished runs are kept\n"
          "  --dry-run   print each run's resolved configuration and parameter count, then stop\n"
          "  --stop-after N  leave each run after N steps with a checkpoint (continue with --resume)\n"
          "  --eval-only the checkpoints of the output directory evaluated (the test split and data.eval),\n"
          "              without training; results.h5, table and curves updated\n"
          "  --mixers    list the mixers (model.layers) and their options (model.attention.<mixer>);\n"
          "              --mixers=markdown for the README's tables\n"
          "\n"
          "mpirun -np N train FILE ... spreads the runs over N processes (rank 0 merges results.h5)%s;\n"
          "  --data-parallel  instead trains each run on all N, each process its share of every batch's\n"
          "                   slices (train.micro_batches, at least N), gradients summed in slice order:\n"
          "                   the losses of one process with micro_batches = the slices, bit for bit\n"
          "\n"
          "mixers:",
          at_dist_available() ? "" : " (not in this build: no MPI)");
  for (int k = 0; k < at_mixer_count(); k++) fprintf(f, " %s", at_mixer_name(k));
  fprintf(f, "\n");
}

static int train_main(int argc, char **argv) {
  const char *file = NULL, *out = NULL;
  const char **sets = calloc((size_t)argc, sizeof *sets);
  int n_sets = 0, resume = 0, dry = 0, eval_only = 0, data_parallel = 0;
  long long stop_after = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      free(sets);
      return 0;
    } else if (!strcmp(a, "--mixers") || !strcmp(a, "--mixers=markdown")) {
      at_mixers_describe(stdout, a[8] == '=');
      free(sets);
      return 0;
    } else if (!strcmp(a, "--stop-after")) {
      char *end = NULL;
      if (i + 1 == argc || (stop_after = strtoll(argv[i + 1], &end, 10)) <= 0 || *end) {
        fprintf(stderr, "train: --stop-after needs a positive number of steps\n");
        free(sets);
        return 2;
      }
      i++;
    } else if (!strcmp(a, "--set") || !strcmp(a, "--out")) {
      if (i + 1 == argc) {
        fprintf(stderr, "train: %s needs a value\n", a);
        free(sets);
        return 2;
      }
      if (a[2] == 's') sets[n_sets++] = argv[++i];
      else out = argv[++i];
    } else if (!strncmp(a, "--set=", 6)) {
      sets[n_sets++] = a + 6;
    } else if (!strncmp(a, "--out=", 6)) {
      out = a + 6;
    } else if (!strcmp(a, "--resume")) {
      resume = 1;
    } else if (!strcmp(a, "--dry-run")) {
      dry = 1;
    } else if (!strcmp(a, "--eval-only")) {
      eval_only = 1;
    } else if (!strcmp(a, "--data-parallel")) {
      data_parallel = 1;
    } else if (a[0] == '-') {
      fprintf(stderr, "train: unknown option %s\n", a);
      usage(stderr);
      free(sets);
      return 2;
    } else if (file) {
      fprintf(stderr, "train: one experiment file at a time (got %s and %s)\n", file, a);
      free(sets);
      return 2;
    } else {
      file = a;
    }
  }
  if (eval_only && (resume || stop_after)) {
    fprintf(stderr, "train: --eval-only trains nothing (drop --resume and --stop-after)\n");
    free(sets);
    return 2;
  }
  if (!file) {
    usage(stderr);
    free(sets);
    return 2;
  }
  at_experiment *e = NULL;
  at_status st = at_experiment_load(file, sets, n_sets, &e);
  free(sets);
  if (st != AT_OK) {
    fprintf(stderr, "%s\n", at_errmsg());
    return 2;
  }
  int rc = 0;
  if ((dry || eval_only) && at_dist_self().rank != 0) {
    at_experiment_free(e);
    return 0;
  }
  if (dry) {
    st = at_experiment_describe(e, stdout);
    if (st != AT_OK) {
      fprintf(stderr, "train: %s\n", at_errmsg());
      rc = 2;
    }
  } else {
    /* one redrawn line per terminal: not under mpirun (its ranks share one) */
    int tty = isatty(STDOUT_FILENO) && at_dist_self().size == 1;
    at_train_opts o = {.out_dir = out, .resume = resume, .progress = tty, .log = stdout, .stop_after = stop_after,
                       .data_parallel = data_parallel};
    int failed = 0;
    st = eval_only ? at_experiment_eval_only(e, &o, &failed) : at_experiment_train(e, &o, &failed);
    if (st != AT_OK) {
      fprintf(stderr, "train: %s\n", at_errmsg());
      rc = 2;
    } else if (failed) {
      rc = 1;
    }
  }
  at_experiment_free(e);
  return rc;
}

int main(int argc, char **argv) {
  /* past a file size limit (ulimit -f) a write fails with EFBIG and is
   * reported like a full disk, instead of killing the process */
  signal(SIGXFSZ, SIG_IGN);
  if (at_dist_launched() && !at_dist_available()) {
    fprintf(stderr, "train: started by mpirun, but this build has no MPI (every process would train every "
                    "run): install libopenmpi-dev and rebuild\n");
    return 2;
  }
  at_dist_init(&argc, &argv);
  int rc = train_main(argc, argv);
  at_dist_finish();
  return rc;
}
