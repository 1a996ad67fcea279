/* Every experiment file (experiments/NAME.yaml) the project ships loads, expands to runs whose
 * models build, and either runs at least three seeds in its default form or
 * says why not in a "# Seeds:" line of its header (issue: tables with seeds
 * and spread). A file broken by a schema change fails here, not on a user. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "experiments/config.h"
#include "models/model.h"

static int distinct_seeds(const at_experiment *e) {
  uint64_t seen[64];
  int n = 0;
  for (int i = 0; i < e->n_runs && n < 64; i++) {
    int known = 0;
    for (int j = 0; j < n; j++) known |= seen[j] == e->runs[i].seed;
    if (!known) seen[n++] = e->runs[i].seed;
  }
  return n;
}

/* The comment lines before the first key. */
static int header_has_seeds_line(const char *source) {
  for (const char *line = source; *line == '#';) {
    if (!strncmp(line, "# Seeds:", 8)) return 1;
    const char *nl = strchr(line, '\n');
    if (!nl) break;
    line = nl + 1;
  }
  return 0;
}

static void check_file(const char *path) {
  at_experiment *e = NULL;
  cr_assert(at_experiment_load(path, NULL, 0, &e) == AT_OK, "%s", at_errmsg());
  cr_expect(e->n_runs > 0, "%s: no runs", path);
  for (int i = 0; i < e->n_runs; i++) {
    if (e->runs[i].seed != e->runs[0].seed) continue; /* one model per configuration */
    at_model *m = NULL;
    cr_expect(at_model_new(&e->runs[i].model, e->runs[i].seed, &m) == AT_OK, "%s: %s: %s", path,
              e->runs[i].name, at_errmsg());
    at_model_free(m);
  }
  cr_expect(distinct_seeds(e) >= 3 || header_has_seeds_line(e->source),
            "%s: %d seed(s) and no '# Seeds:' line in its header saying why", path, distinct_seeds(e));
  at_experiment_free(e);
}

Test(shipped_experiments, every_file_loads_builds_and_states_its_seeds) {
  char dir[1024], path[2048];
  snprintf(dir, sizeof dir, "%s/experiments", AT_SOURCE_DIR);
  DIR *d = opendir(dir);
  cr_assert(d, "%s", dir);
  int n = 0;
  for (struct dirent *ent; (ent = readdir(d));) {
    size_t len = strlen(ent->d_name);
    if (len < 6 || strcmp(ent->d_name + len - 5, ".yaml")) continue;
    snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
    check_file(path);
    n++;
  }
  closedir(d);
  cr_expect(n >= 19, "%d experiment files", n);
}
