/* core/h5io.c: round trips, atomic commit, and clear refusals of missing,
 * corrupt and mismatched files. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/h5io.h"
#include "testing.h"

static void tmpname(char *buf, const char *tag) {
  snprintf(buf, 256, "/tmp/attnlab_test_%s_%d.h5", tag, (int)getpid());
}

Test(h5io, round_trip) {
  char path[256];
  tmpname(path, "rt");
  at_h5 *h;
  cr_assert(at_h5_create(path, &h) == AT_OK, "%s", at_errmsg());
  real x[6] = {1, 2, 3, 4, 5, 6};
  int32_t ids[3] = {7, -1, 9};
  cr_assert(at_h5_write_real(h, "/params/layer.0/w", AT_SHAPE(2, 3), x) == AT_OK, "%s", at_errmsg());
  cr_assert(at_h5_write_int(h, "ids", AT_SHAPE(3), ids) == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "config", "a: 1\nb: [2, 3]\n") == AT_OK);
  cr_assert(at_h5_set_attr_int(h, "/params", "step", 1234) == AT_OK);
  cr_assert(at_h5_set_attr_double(h, "/", "loss", 0.25) == AT_OK);
  uint64_t rng[3] = {1, 2, UINT64_MAX};
  cr_assert(at_h5_set_attr_u64s(h, "/", "rng", 3, rng) == AT_OK);
  cr_expect(access(path, F_OK) != 0, "nothing at the final path before commit");
  cr_assert(at_h5_commit(h) == AT_OK);
  cr_expect(access(path, F_OK) == 0);

  cr_assert(at_h5_open(path, &h) == AT_OK);
  real y[6];
  cr_assert(at_h5_read_real(h, "/params/layer.0/w", AT_SHAPE(2, 3), y) == AT_OK);
  cr_expect(memcmp(x, y, sizeof x) == 0);
  double yd[6];
  cr_assert(at_h5_read_double(h, "/params/layer.0/w", AT_SHAPE(2, 3), yd) == AT_OK);
  cr_expect(yd[5] == 6);
  cr_expect(at_h5_read_real(h, "/params/layer.0/w", AT_SHAPE(3, 2), y) == AT_E_FORMAT);
  cr_expect(strstr(at_errmsg(), "has shape [2,3], expected [3,2]") != NULL, "%s", at_errmsg());
  cr_expect(at_h5_read_real(h, "/params/missing", AT_SHAPE(1), y) == AT_E_FORMAT);
  cr_expect(!at_h5_exists(h, "/nope/deeper"));
  int32_t *ri;
  int nd;
  int64_t sh[4];
  cr_assert(at_h5_read_int_alloc(h, "ids", &nd, sh, &ri) == AT_OK);
  cr_expect(nd == 1 && sh[0] == 3 && ri[1] == -1);
  free(ri);
  char *cfg;
  cr_assert(at_h5_get_attr_str(h, "/", "config", &cfg) == AT_OK);
  cr_expect_str_eq(cfg, "a: 1\nb: [2, 3]\n");
  free(cfg);
  int64_t step;
  cr_assert(at_h5_get_attr_int(h, "/params", "step", &step) == AT_OK);
  cr_expect(step == 1234);
  uint64_t r2[3];
  cr_assert(at_h5_get_attr_u64s(h, "/", "rng", 3, r2) == AT_OK);
  cr_expect(r2[2] == UINT64_MAX);
  char **names;
  int n;
  cr_assert(at_h5_list(h, "/", &names, &n) == AT_OK);
  cr_expect(n == 2);
  at_h5_free_list(names, n);
  at_h5_close(h);
  remove(path);
}

Test(h5io, uncommitted_file_leaves_nothing) {
  char path[256];
  tmpname(path, "unc");
  at_h5 *h;
  cr_assert(at_h5_create(path, &h) == AT_OK);
  at_h5_close(h);
  cr_expect(access(path, F_OK) != 0);
  char tmp[300];
  at_h5_tmp_name(path, tmp, sizeof tmp);
  cr_expect(access(tmp, F_OK) != 0);
}

Test(h5io, bad_files_are_refused) {
  at_h5 *h;
  cr_expect(at_h5_open("/nonexistent/dir/x.h5", &h) == AT_E_IO);
  cr_expect(strstr(at_errmsg(), "cannot open") != NULL);
  char path[256];
  tmpname(path, "corrupt");
  FILE *f = fopen(path, "wb");
  fputs("this is not hdf5", f);
  fclose(f);
  cr_expect(at_h5_open(path, &h) == AT_E_FORMAT);
  cr_expect(strstr(at_errmsg(), "not an HDF5 file") != NULL, "%s", at_errmsg());
  remove(path);
  /* a truncated real file */
  cr_assert(at_h5_create(path, &h) == AT_OK);
  real big[4096] = {0};
  cr_assert(at_h5_write_real(h, "w", AT_SHAPE(4096), big) == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
  cr_assert(truncate(path, 3000) == 0);
  at_status st = at_h5_open(path, &h);
  if (st == AT_OK) { /* the superblock survived: the read must fail */
    cr_expect(at_h5_read_real(h, "w", AT_SHAPE(4096), big) != AT_OK);
    at_h5_close(h);
  }
  remove(path);
  cr_expect(at_h5_create("/nonexistent/dir/x.h5", &h) == AT_E_IO);
}

/* ---- the seal, the checks before HDF5 parses, the guard ------------------------------ */

static long file_size(const char *path) {
  FILE *f = fopen(path, "rb");
  cr_assert(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fclose(f);
  return n;
}

static void expect_open_refused(const char *path, const char *want) {
  at_h5 *h = NULL;
  cr_expect(at_h5_open(path, &h) == AT_E_FORMAT && h == NULL, "%s opened", path);
  cr_expect(strstr(at_errmsg(), want) != NULL, "'%s' not in: %s", want, at_errmsg());
}

static void sealed_file(const char *path) {
  at_h5 *h;
  cr_assert(at_h5_create(path, &h) == AT_OK);
  real x[256] = {0};
  cr_assert(at_h5_write_real(h, "x", AT_SHAPE(256), x) == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "s", "text") == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
}

Test(h5io, the_seal_refuses_truncated_extended_and_flipped_files) {
  char path[256];
  tmpname(path, "seal");
  sealed_file(path);
  cr_expect(at_h5_sealed(path));
  FILE *f = fopen(path, "rb");
  char head[64] = {0};
  cr_assert(fread(head, 1, 40, f) == 40);
  fclose(f);
  cr_expect(strncmp(head, "attnlab-sealed-hdf5 1\nlength ", 29) == 0, "%s", head);
  long n = file_size(path);
  /* a flipped bit anywhere after the seal */
  for (long at = 600; at < n; at += n / 7) {
    f = fopen(path, "r+b");
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 4, f);
    fclose(f);
    expect_open_refused(path, "checksum mismatch");
    f = fopen(path, "r+b");
    fseek(f, at, SEEK_SET);
    fputc(c, f);
    fclose(f);
  }
  /* a damaged seal, an extended file, a truncated one */
  f = fopen(path, "r+b");
  fseek(f, 30, SEEK_SET);
  fputc('x', f);
  fclose(f);
  expect_open_refused(path, "damaged attnlab seal");
  sealed_file(path);
  f = fopen(path, "ab");
  fputs("appended", f);
  fclose(f);
  expect_open_refused(path, "(extended)");
  cr_assert(truncate(path, n - 100) == 0);
  expect_open_refused(path, "(truncated)");
  /* resealed, the same bytes open again */
  cr_assert(truncate(path, n) == 0);
  sealed_file(path);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  at_h5_close(h);
  remove(path);
}

/* An unsealed HDF5 file (as h5py writes them): the superblock's end of file
 * must be the file's size. */
Test(h5io, unsealed_files_are_checked_against_their_superblock) {
  char path[256], copy[300];
  tmpname(path, "unsealed");
  snprintf(copy, sizeof copy, "%s/tests/golden/kda.h5", AT_SOURCE_DIR);
  at_h5 *h;
  cr_assert(at_h5_open(copy, &h) == AT_OK, "%s", at_errmsg());
  at_h5_close(h);
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "cp %s %s && printf junk >> %s", copy, path, path);
  cr_assert(system(cmd) == 0);
  expect_open_refused(path, "extended");
  cr_assert(truncate(path, file_size(copy) - 1) == 0);
  expect_open_refused(path, "truncated");
  remove(path);
  cr_expect(at_h5_open(AT_SOURCE_DIR, &h) == AT_E_IO && strstr(at_errmsg(), "not a regular file"), "%s", at_errmsg());
}

static at_status crashes(void *arg) {
  (void)arg;
  raise(SIGSEGV);
  return AT_OK;
}
static at_status hangs(void *arg) {
  volatile int *stop = arg;
  while (!*stop) {}
  return AT_OK;
}
static at_status eats_memory(void *arg) {
  (void)arg;
  void *p = malloc((size_t)64 << 30);
  if (!p) return at_error(AT_E_NOMEM, "out of memory");
  free(p);
  return AT_OK;
}
static at_status refuses(void *arg) {
  ++*(int *)arg;
  return at_error(AT_E_FORMAT, "refused for a reason");
}
static at_status accepts(void *arg) {
  ++*(int *)arg;
  return AT_OK;
}

Test(h5io, the_guard_turns_crashes_hangs_and_blowups_into_refusals) {
  char path[256];
  tmpname(path, "guard");
  sealed_file(path);
  cr_expect(at_h5_guard(path, crashes, NULL) == AT_E_FORMAT);
  cr_expect(strstr(at_errmsg(), "crashed") && strstr(at_errmsg(), path), "%s", at_errmsg());
  setenv("AT_H5_GUARD_SECONDS", "1", 1);
  int stop = 0;
  cr_expect(at_h5_guard(path, hangs, &stop) == AT_E_FORMAT);
  cr_expect(strstr(at_errmsg(), "took more than 1 s"), "%s", at_errmsg());
  unsetenv("AT_H5_GUARD_SECONDS");
  cr_expect(at_h5_guard(path, eats_memory, NULL) == AT_E_NOMEM);
  cr_expect(strstr(at_errmsg(), "MiB: refused"), "%s", at_errmsg());
  /* a refusal in the child is returned as it is; the function never runs here */
  int runs = 0;
  cr_expect(at_h5_guard(path, refuses, &runs) == AT_E_FORMAT && runs == 0);
  cr_expect_str_eq(at_errmsg(), "refused for a reason");
  cr_expect(at_h5_guard(path, accepts, &runs) == AT_OK && runs == 1, "success runs here once");
  remove(path);
}

/* Datasets are checked before anything is allocated. */
Test(h5io, declared_sizes_types_and_strings_are_checked) {
  char path[256];
  tmpname(path, "declared");
  at_h5 *h;
  cr_assert(at_h5_create(path, &h) == AT_OK);
  int32_t v[3] = {1, 2, 3};
  cr_assert(at_h5_write_int(h, "ok", AT_SHAPE(3), v) == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
  cr_assert(at_h5_open(path, &h) == AT_OK);
  int nd;
  int64_t shape[4];
  int32_t *data;
  cr_expect(at_h5_read_int_alloc(h, "ok", &nd, shape, &data) == AT_OK && nd == 1 && shape[0] == 3 && data[2] == 3);
  free(data);
  cr_expect(at_h5_read_int_alloc(h, "missing", &nd, shape, &data) == AT_E_FORMAT && data == NULL);
  char *s;
  cr_expect(at_h5_get_attr_str(h, "/", "nothing", &s) == AT_E_FORMAT && s == NULL);
  at_h5_close(h);
  remove(path);
  /* the hostile variants (compressed, declared but unstored, 2^40 elements, rank 5, float16, compound,
   * string arrays) are files of tests/fuzz_regressions, made by tests/ref/gen_hostile_hdf5.py */
}

/* Two processes writing the same path at once (MPI ranks building one token
 * cache) each commit a whole file: afterwards the path holds one of the two,
 * intact. With one shared "<path>.tmp" the writers truncated and wrote into
 * each other's file and the result was refused as damaged. */
static void write_many(const char *path, uint8_t fill, int times) {
  static uint8_t data[1 << 20];
  memset(data, fill, sizeof data);
  for (int i = 0; i < times; i++) {
    at_h5 *h;
    if (at_h5_create(path, &h) != AT_OK || at_h5_write_u8(h, "x", sizeof data, data) != AT_OK ||
        at_h5_commit(h) != AT_OK)
      _exit(1);
  }
  _exit(0);
}

Test(h5io, concurrent_writers_of_one_path) {
  char path[256];
  tmpname(path, "race");
  pid_t kids[2];
  for (int k = 0; k < 2; k++)
    if ((kids[k] = fork()) == 0) write_many(path, (uint8_t)(7 + k), 12);
  for (int k = 0; k < 2; k++) {
    int status;
    cr_assert(waitpid(kids[k], &status, 0) == kids[k]);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d failed", k);
  }
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "the file both wrote is damaged: %s", at_errmsg());
  static uint8_t back[1 << 20];
  cr_assert(at_h5_read_u8(h, "x", sizeof back, back) == AT_OK, "%s", at_errmsg());
  at_h5_close(h);
  size_t mixed = 0;
  for (size_t i = 0; i < sizeof back; i++) mixed += back[i] != back[0];
  cr_expect(mixed == 0 && (back[0] == 7 || back[0] == 8), "the file mixes the writers' data");
  remove(path);
}
