/* Every file of tests/fuzz_regressions/<harness>/ through that harness's
 * entry point (fuzz/targets.c), without libFuzzer: the inputs the fuzzers
 * found (and hand-made hostile ones) keep ending in a refusal or a correct
 * load, never a crash, a hang or a broken invariant. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fuzz/targets.h"
#include "testing.h"

typedef int (*entry)(const uint8_t *, size_t);

static uint8_t *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  cr_assert(f, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)len + 1);
  cr_assert(b);
  *n = fread(b, 1, (size_t)len, f);
  fclose(f);
  return b;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Feeds every file of the harness's folder, in name order; each must take
 * at most a few seconds. Returns how many there were. */
static int replay(const char *harness, entry fn) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s/tests/fuzz_regressions/%s", AT_SOURCE_DIR, harness);
  DIR *d = opendir(dir);
  cr_assert(d, "no folder %s", dir);
  char *names[4096];
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 4096)
    if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, cmp_str);
  for (int i = 0; i < n; i++) {
    char path[2100];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    size_t len;
    uint8_t *b = slurp(path, &len);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_expect(fn(b, len) == 0, "%s", path);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    cr_expect(s < 20, "%s took %.1f s", path, s); /* generous: the sanitizer build is slow */
    free(b);
    free(names[i]);
  }
  return n;
}

Test(fuzz_regressions, yaml) { cr_expect(replay("yaml", at_fuzz_yaml) > 0); }
Test(fuzz_regressions, set) { cr_expect(replay("set", at_fuzz_set) > 0); }
Test(fuzz_regressions, checkpoint) { cr_expect(replay("checkpoint", at_fuzz_checkpoint) > 0); }
Test(fuzz_regressions, results) { cr_expect(replay("results", at_fuzz_results) > 0); }
Test(fuzz_regressions, cache) { cr_expect(replay("cache", at_fuzz_cache) > 0); }
Test(fuzz_regressions, bin) { cr_expect(replay("bin", at_fuzz_bin) > 0); }
