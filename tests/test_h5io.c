/* core/h5io.c: round trips, atomic commit, and clear refusals of missing,
 * corrupt and mismatched files. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
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
