/* Full attention learns palindrome as the same model in PyTorch does
 * (issue: it reached ~25 % where PyTorch reached 98 %). The cause was not
 * the arithmetic — tests/test_full_golden.c holds the layer and the model
 * equal to a PyTorch model written from the papers, and from the same
 * initial weights and batches attnlab's training losses follow PyTorch's
 * step by step — but the GPT-2 / fla scaled init of the output projections
 * (init_std / sqrt(2 n_layers)): with it 0 of 6 seeds solve palindrome in
 * 1600 steps (23-42 %), with the plain N(0, 0.02) init of the reference 6
 * of 6 do (98.3-100 %). At 800 steps the task is bimodal in both
 * implementations (3 of 6 seeds), so this test trains 1600 steps and takes
 * the median of 3 seeds: tests/configs/learn_full_palindrome.yaml.
 * Release build only (about a minute on 2 cores). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "experiments/results.h"
#include "testing_train.h"

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

Test(learn_full, palindrome_median_of_three_seeds) {
#if defined(__SANITIZE_ADDRESS__)
  cr_skip_test("a learning test for the release build");
#endif
  char path[1024], out[64] = "/tmp/attnlab_learn_full_XXXXXX";
  snprintf(path, sizeof path, "%s/tests/configs/learn_full_palindrome.yaml", AT_SOURCE_DIR);
  cr_assert(mkdtemp(out) != NULL);
  at_test_train(path, out);
  snprintf(path, sizeof path, "%s/results.h5", out);
  at_results *r = NULL;
  cr_assert(at_results_read(path, &r) == AT_OK, "%s", at_errmsg());
  cr_assert_eq(r->n_runs, 3);
  double acc[3];
  for (int i = 0; i < 3; i++) acc[i] = r->runs[i]->final_eval_accuracy;
  fprintf(stderr, "learn_full: palindrome test accuracy %.4f %.4f %.4f (seeds 0 1 2)\n", acc[0], acc[1], acc[2]);
  qsort(acc, 3, sizeof acc[0], cmp);
  cr_expect(acc[1] >= 0.90, "median test accuracy %.4f < 0.90 (%.4f %.4f %.4f)", acc[1], acc[0], acc[1], acc[2]);
  at_results_free(r);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", out);
  cr_assert(system(cmd) == 0);
}
