/* Names from experiment files end up in generated scripts: the gnuplot
 * script quotes them, so a name cannot become a gnuplot (or shell) command. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testing_train.h"

/* eval_every: 0 is accepted (as checkpoint_every: 0, "at the end"); it once
 * divided by zero in the training loop. */
Test(hostile, eval_every_zero_evaluates_once_at_the_end) {
  char dir[] = "/tmp/attnlab_eval0_XXXXXX";
  cr_assert(mkdtemp(dir));
  char yaml[200], out[200], table[300];
  snprintf(yaml, sizeof yaml, "%s/e.yaml", dir);
  FILE *f = fopen(yaml, "w");
  cr_assert(f);
  fprintf(f, "experiment: e\n"
             "data: {task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 4, train_examples: 64,"
             " test_examples: 16}\n"
             "model: {d_model: 8, n_heads: 1, mlp: none, layers: [full]}\n"
             "train: {steps: 3, batch_size: 2, eval_every: 0, threads: 1}\n"
             "report: {best_over: []}\n");
  fclose(f);
  snprintf(out, sizeof out, "%s/out", dir);
  at_test_train(yaml, out);
  snprintf(table, sizeof table, "%s/table.md", out);
  cr_expect(access(table, F_OK) == 0, "no table: the run was not evaluated");
  at_test_rmdir(dir);
}

Test(hostile, names_in_the_gnuplot_script_are_quoted) {
  char dir[] = "/tmp/aq_XXXXXX"; /* short: run names are at most 63 characters */
  cr_assert(mkdtemp(dir));
  /* a corpus file whose name holds a quote, a newline and a gnuplot command */
  char corpus[400], yaml[400], out[400], text[2000];
  char mark[64];
  snprintf(mark, sizeof mark, "p%d", (int)getpid()); /* gnuplot would make it in its working directory */
  snprintf(corpus, sizeof corpus, "%s/x'\nsystem('touch %s')\n#", dir, mark);
  FILE *f = fopen(corpus, "w");
  cr_assert(f);
  for (int i = 0; i < 200; i++) fprintf(f, "line %d of a small corpus\n", i);
  fclose(f);
  snprintf(yaml, sizeof yaml, "%s/q.yaml", dir);
  f = fopen(yaml, "w");
  fprintf(f, "experiment: q\n"
             "data: {task: text, seq_len: 16}\n"
             "model: {d_model: 8, n_heads: 1, mlp: none, layers: [full]}\n"
             "train: {steps: 2, batch_size: 2, eval_every: 2, eval_examples: 4, threads: 1}\n"
             "sweep: {data.path: [\"%s/x'\\nsystem('touch %s')\\n#\"]}\n"
             "report: {best_over: []}\n", dir, mark);
  fclose(f);
  snprintf(out, sizeof out, "%s/out", dir);
  at_test_train(yaml, out);
  snprintf(text, sizeof text, "%s/plot/curves.gp", out);
  f = fopen(text, "r");
  cr_assert(f);
  char line[2000];
  int titled = 0;
  while (fgets(line, sizeof line, f)) {
    cr_expect(strncmp(line, "system(", 7) != 0, "a name became a command: %s", line);
    titled |= strstr(line, "set title '") && strstr(line, "x'' system(''touch") != NULL;
  }
  fclose(f);
  cr_expect(titled, "the column title is not the quoted name");
  cr_expect(access(mark, F_OK) != 0, "gnuplot ran the injected command");
  unlink(mark);
  snprintf(text, sizeof text, "rm -rf %s", dir);
  cr_expect(system(text) == 0);
}
