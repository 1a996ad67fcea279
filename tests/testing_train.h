/* tests/testing_train.h: the suites that train a whole experiment file. */
#ifndef AT_TESTING_TRAIN_H
#define AT_TESTING_TRAIN_H

#include <stdio.h>

#include "experiments/config.h"
#include "experiments/runner.h"
#include "testing.h"

/* Loads the experiment file `yaml` and trains every run into `out`, the log
 * thrown away; asserts that loading and every run succeed. */
static inline void at_test_train(const char *yaml, const char *out) {
  at_experiment *e = NULL;
  cr_assert(at_experiment_load(yaml, NULL, 0, &e) == AT_OK, "%s", at_errmsg());
  FILE *log = fopen("/dev/null", "w");
  cr_assert(log);
  at_train_opts o = {.out_dir = out, .log = log};
  int failed = 0;
  cr_assert(at_experiment_train(e, &o, &failed) == AT_OK && failed == 0, "%s", at_errmsg());
  fclose(log);
  at_experiment_free(e);
}

#endif
