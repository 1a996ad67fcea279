/* tools/probe.c, run in-process (the tool's source is included, without its
 * main): the three attention golden files (inputs/ layout), top-level
 * float64 inputs with options, and every error path (exit status 2 and a
 * message, no output file left behind); --pattern writes a mixer's mask as a
 * PNG whose chunks, checksums and pixels are read back here. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AT_PROBE_NO_MAIN
#include "tools/probe.c"

#include "core/h5io.h"
#include "testing.h"

static const char *source_dir(void) {
  const char *s = getenv("AT_SOURCE_DIR");
  return s && *s ? s : AT_SOURCE_DIR;
}

static void tmpname(char *buf, const char *tag) {
  snprintf(buf, 256, "/tmp/attnlab_probe_%s_%d.h5", tag, (int)getpid());
}

/* Runs probe_main on argv, capturing stderr; returns the exit status. */
static int run_probe(int argc, const char **argv, char *msg, size_t cap) {
  char *buf = NULL;
  size_t len = 0;
  FILE *err = open_memstream(&buf, &len);
  FILE *out = fopen("/dev/null", "w");
  cr_assert(err && out);
  int rc = probe_main(argc, (char **)argv, out, err);
  fclose(err);
  fclose(out);
  snprintf(msg, cap, "%s", buf ? buf : "");
  free(buf);
  return rc;
}

static real *read_all(at_h5 *h, const char *name, int64_t *n) {
  int nd;
  int64_t shape[4];
  real *d;
  cr_assert(at_h5_read_real_alloc(h, name, &nd, shape, &d) == AT_OK, "%s", at_errmsg());
  *n = at_shape_size(nd, shape);
  return d;
}

static void expect_matches(at_h5 *got, const char *gname, at_h5 *want, const char *wname,
                           double tol, const char *what) {
  int64_t n1, n2;
  real *a = read_all(got, gname, &n1), *b = read_all(want, wname, &n2);
  cr_assert(n1 == n2, "%s %s: %lld vs %lld elements", what, gname, (long long)n1, (long long)n2);
  char w[256];
  snprintf(w, sizeof w, "%s %s", what, gname);
  AT_EXPECT_CLOSE(a, b, n1, tol, w);
  free(a), free(b);
}

/* Runs `op` on a golden file and compares the named outputs (1e-5) and
 * gradients (1e-4) with the file's outputs/ and grads/. */
static void check_golden_op(const char *file, const char *op, const char *const *outs,
                            const char *const *grads) {
  char in[1024], out[256], msg[2048], want[128];
  snprintf(in, sizeof in, "%s/tests/golden/%s", source_dir(), file);
  tmpname(out, "golden");
  const char *argv[] = {"probe", op, in, out};
  cr_assert(run_probe(4, argv, msg, sizeof msg) == 0, "%s: %s", file, msg);
  at_h5 *g, *w;
  cr_assert(at_h5_open(out, &g) == AT_OK, "%s", at_errmsg());
  cr_assert(at_h5_open(in, &w) == AT_OK, "%s", at_errmsg());
  for (int i = 0; outs[i]; i++) {
    snprintf(want, sizeof want, "outputs/%s", outs[i]);
    expect_matches(g, outs[i], w, want, 1e-5, file);
  }
  for (int i = 0; grads[i]; i++) {
    snprintf(want, sizeof want, "grads/%s", grads[i]);
    expect_matches(g, grads[i], w, want, 1e-4, file);
  }
  char *name = NULL;
  cr_expect(at_h5_get_attr_str(g, "/", "op", &name) == AT_OK && name && strcmp(name, op) == 0);
  free(name);
  at_h5_close(g);
  at_h5_close(w);
  remove(out);
}

static void check_golden(const char *file) {
  static const char *const outs[] = {"o", NULL}, *const grads[] = {"dq", "dk", "dv", NULL};
  check_golden_op(file, "attn", outs, grads);
}

Test(probe, golden_attn_mha) { check_golden("attn_mha.h5"); }
Test(probe, golden_attn_gqa) { check_golden("attn_gqa.h5"); }
Test(probe, golden_attn_mqa_window) { check_golden("attn_mqa_window.h5"); }

/* The linear family with initial state and dht: o, final_state and every
 * gradient including dinitial_state. */
Test(probe, golden_linear_family) {
  static const char *const outs[] = {"o", "final_state", NULL};
  static const char *const g_delta[] = {"dq", "dk", "dv", "dbeta", "dinitial_state", NULL};
  static const char *const g_gated[] = {"dq", "dk", "dv", "dg", "dbeta", "dinitial_state", NULL};
  static const char *const g_gla[] = {"dq", "dk", "dv", "dg", "dinitial_state", NULL};
  check_golden_op("delta_rule.h5", "delta_rule", outs, g_delta);
  check_golden_op("gated_delta_rule.h5", "gated_delta_rule", outs, g_gated);
  check_golden_op("kda.h5", "kda", outs, g_gated);
  check_golden_op("simple_gla.h5", "simple_gla", outs, g_gla);
  static const char *const g_gk[] = {"dq", "dk", "dv", "dgk", "dinitial_state", NULL};
  static const char *const g_dplr[] = {"dq", "dk", "dv", "da", "db", "dgk", "dinitial_state", NULL};
  check_golden_op("gla.h5", "gla", outs, g_gk);
  check_golden_op("dplr.h5", "dplr", outs, g_dplr);
}

/* DSA: fla's golden indices contain ties among equal scores, so only o and
 * the gradients are compared here (test_dsa checks the selection). */
Test(probe, golden_dsa) {
  static const char *const outs[] = {NULL}, *const grads[] = {NULL};
  check_golden_op("dsa.h5", "dsa_indexer", outs, grads);
  char in[1024], out[256], msg[2048];
  snprintf(in, sizeof in, "%s/tests/golden/dsa.h5", source_dir());
  tmpname(out, "dsa");
  const char *argv[] = {"probe", "dsa", in, out};
  cr_assert(run_probe(4, argv, msg, sizeof msg) == 0, "%s", msg);
  at_h5 *g;
  cr_assert(at_h5_open(out, &g) == AT_OK);
  int nd;
  int64_t shape[4];
  cr_expect(at_h5_shape(g, "indices", &nd, shape) == AT_OK && nd == 3 && shape[2] == 8);
  cr_expect(at_h5_exists(g, "o") && at_h5_exists(g, "dq") && at_h5_exists(g, "dk") && at_h5_exists(g, "dv"));
  cr_expect(!at_h5_exists(g, "dq_idx"), "selector inputs get no gradient");
  at_h5_close(g);
  remove(out);
}

/* NSA: fla's naive_nsa with given block_indices (int64 in the file) and no
 * g_cmp: the selected and window branches with their gates (HQ 16 over 1 kv
 * head, and 32 over 2). */
Test(probe, golden_nsa_naive) {
  static const char *const outs[] = {"o", NULL}, *const grads[] = {"dq", "dk", "dv", "dg_slc", "dg_swa", NULL};
  check_golden_op("nsa_naive.h5", "nsa", outs, grads);
  check_golden_op("nsa_naive_gqa.h5", "nsa", outs, grads);
}

/* Writes q, k, v, do at the top level as float64 (optionally leaving one
 * out or giving `do` a wrong shape), with root attributes scale and
 * window_size. */
typedef struct file_spec {
  int64_t B, T, HQ, H, D;
  const char *skip;     /* dataset not to write, or NULL */
  int64_t do_heads;     /* heads of `do` (normally HQ) */
  double scale;         /* 0: no attribute */
  int has_window;       /* write window_size (as an integer when it is one) */
  double window;
} file_spec;

static void write_double(at_h5 *h, const char *name, const char *skip, uint64_t seed, int ndim,
                         const int64_t *shape) {
  if (skip && strcmp(skip, name) == 0) return;
  int64_t n = at_shape_size(ndim, shape);
  double *x = malloc((size_t)n * sizeof *x);
  at_rng r = at_rng_make(seed, 3);
  for (int64_t i = 0; i < n; i++) x[i] = at_rng_normal(&r);
  cr_assert(at_h5_write_double(h, name, ndim, shape, x) == AT_OK, "%s", at_errmsg());
  free(x);
}

static void write_case(const char *path, const file_spec *s) {
  at_h5 *h;
  cr_assert(at_h5_create(path, &h) == AT_OK, "%s", at_errmsg());
  write_double(h, "q", s->skip, 1, AT_SHAPE(s->B, s->T, s->HQ, s->D));
  write_double(h, "k", s->skip, 2, AT_SHAPE(s->B, s->T, s->H, s->D));
  write_double(h, "v", s->skip, 3, AT_SHAPE(s->B, s->T, s->H, s->D));
  write_double(h, "do", s->skip, 4, AT_SHAPE(s->B, s->T, s->do_heads, s->D));
  if (s->scale != 0) cr_assert(at_h5_set_attr_double(h, "/", "scale", s->scale) == AT_OK);
  if (s->has_window)
    cr_assert((s->window == (int64_t)s->window
                   ? at_h5_set_attr_int(h, "/", "window_size", (int64_t)s->window)
                   : at_h5_set_attr_double(h, "/", "window_size", s->window)) == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK, "%s", at_errmsg());
}

/* Top-level float64 datasets and explicit options: probe's results equal the
 * op run directly on the same (float-rounded) values. */
Test(probe, top_level_float64_with_options) {
  char in[256], out[256], msg[2048];
  tmpname(in, "in64");
  tmpname(out, "out64");
  file_spec s = {2, 70, 4, 2, 8, NULL, 4, 0.3, 1, 5};
  write_case(in, &s);
  const char *argv[] = {"probe", "attn", in, out};
  cr_assert(run_probe(4, argv, msg, sizeof msg) == 0, "%s", msg);

  at_h5 *hi, *ho;
  cr_assert(at_h5_open(in, &hi) == AT_OK && at_h5_open(out, &ho) == AT_OK);
  at_ctx *c = at_ctx_new((size_t)4 << 20);
  at_tensor *x[3];
  const char *names[] = {"q", "k", "v"};
  for (int i = 0; i < 3; i++) {
    int64_t n;
    real *d = read_all(hi, names[i], &n);
    int nd;
    int64_t shape[4];
    cr_assert(at_h5_shape(hi, names[i], &nd, shape) == AT_OK);
    x[i] = at_leaf(c, d, nd, shape);
    free(d);
  }
  at_attn_opts o = {.scale = 0.3, .window = 5};
  at_tensor *y = at_attention(c, x[0], x[1], x[2], &o);
  cr_assert(y);
  int64_t n;
  real *dout = read_all(hi, "do", &n);
  memcpy(at_grad(c, y), dout, (size_t)n * sizeof(real));
  free(dout);
  cr_assert(at_backward_from_seeded(c) == AT_OK);
  real *got = read_all(ho, "o", &n);
  cr_expect(memcmp(got, y->data, (size_t)n * sizeof(real)) == 0, "o differs from the direct run");
  free(got);
  const char *gnames[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; i++) {
    got = read_all(ho, gnames[i], &n);
    cr_expect(n == x[i]->size && memcmp(got, x[i]->grad, (size_t)n * sizeof(real)) == 0,
              "%s differs from the direct run", gnames[i]);
    free(got);
  }
  /* and the options were used: the default scale and no window differ */
  at_attn_opts def = {.scale = 0, .window = 0};
  at_tensor *y0 = at_attention(c, x[0], x[1], x[2], &def);
  cr_expect(memcmp(y0->data, y->data, (size_t)y->size * sizeof(real)) != 0);
  at_ctx_free(c);
  at_h5_close(hi);
  at_h5_close(ho);
  remove(in);
  remove(out);
}

/* Expects exit status 2, a message containing `needle`, and no output file. */
static void expect_error(int argc, const char **argv, const char *needle, const char *out) {
  char msg[2048];
  int rc = run_probe(argc, argv, msg, sizeof msg);
  cr_expect(rc == 2, "exit status %d (message: %s)", rc, msg);
  cr_expect(strstr(msg, needle) != NULL, "message '%s' lacks '%s'", msg, needle);
  if (out) {
    char tmp[300];
    at_h5_tmp_name(out, tmp, sizeof tmp);
    cr_expect(access(out, F_OK) != 0 && access(tmp, F_OK) != 0, "an output file was left behind");
  }
}

Test(probe, errors) {
  char in[256], out[256], gold[1024];
  tmpname(in, "err_in");
  tmpname(out, "err_out");
  remove(out);
  snprintf(gold, sizeof gold, "%s/tests/golden/attn_mha.h5", source_dir());

  const char *unknown[] = {"probe", "flash", gold, out};
  expect_error(4, unknown, "unknown op 'flash' (known: attn", out);
  const char *few[] = {"probe", "attn", gold};
  expect_error(3, few, "usage: probe OP IN.h5 OUT.h5", out);
  const char *missing[] = {"probe", "attn", "/nonexistent/in.h5", out};
  expect_error(4, missing, "/nonexistent/in.h5: cannot open", out);

  file_spec no_v = {1, 5, 2, 2, 4, "v", 2, 0, 0, 0};
  write_case(in, &no_v);
  const char *argv[] = {"probe", "attn", in, out};
  expect_error(4, argv, "no dataset 'v'", out);

  file_spec no_do = {1, 5, 2, 2, 4, "do", 2, 0, 0, 0};
  write_case(in, &no_do);
  expect_error(4, argv, "no dataset 'do'", out);

  file_spec bad_heads = {1, 5, 3, 2, 4, NULL, 3, 0, 0, 0};
  write_case(in, &bad_heads);
  expect_error(4, argv, "the 3 query heads of q [1,5,3,4] are not a multiple of the 2 kv heads", out);

  file_spec bad_do = {1, 5, 4, 2, 4, NULL, 2, 0, 0, 0};
  write_case(in, &bad_do);
  expect_error(4, argv, "'do' has shape [1,5,2,4] but o has shape [1,5,4,4]", out);

  file_spec frac_window = {1, 5, 2, 2, 4, NULL, 2, 0, 1, 2.5};
  write_case(in, &frac_window);
  expect_error(4, argv, "window_size = 2.5 is not an integer", out);

  file_spec neg_window = {1, 5, 2, 2, 4, NULL, 2, 0, 1, -3};
  write_case(in, &neg_window);
  expect_error(4, argv, "window -3 is negative", out);
  remove(in);

  /* an unwritable output path */
  write_case(in, &(file_spec){1, 5, 2, 2, 4, NULL, 2, 0, 1, 2});
  const char *unwritable[] = {"probe", "attn", in, "/nonexistent/dir/out.h5"};
  expect_error(4, unwritable, "cannot create", NULL);
  remove(in);
}

Test(probe, list_names_every_op) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  const char *argv[] = {"probe", "--list"};
  cr_expect(probe_main(2, (char **)argv, f, stderr) == 0);
  fclose(f);
  cr_expect(strstr(buf, "attn") && strstr(buf, "inputs: q k v do") &&
                strstr(buf, "outputs: o dq dk dv") && strstr(buf, "window_size"),
            "--list: %s", buf);
  free(buf);
}

/* ---- --pattern: a mixer's mask as a PNG -------------------------------------------- */

static uint32_t rd32(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* The pixels of a PNG written by core/png.c (8-bit gray, stored deflate
 * blocks), checking the signature, every chunk's CRC and the Adler-32. */
static unsigned char *read_png(const char *path, int64_t *w, int64_t *h) {
  FILE *f = fopen(path, "rb");
  cr_assert(f != NULL, "no %s", path);
  static unsigned char d[1 << 22];
  size_t n = fread(d, 1, sizeof d, f);
  fclose(f);
  cr_assert(n > 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8), "not a PNG");
  unsigned char *z = malloc(n);
  size_t zn = 0, pos = 8;
  int seen_end = 0;
  while (pos + 12 <= n) {
    uint32_t len = rd32(d + pos);
    cr_assert(pos + 12 + len <= n);
    cr_expect(at_crc32(0, d + pos + 4, len + 4) == rd32(d + pos + 8 + len), "chunk CRC");
    if (!memcmp(d + pos + 4, "IHDR", 4)) {
      cr_assert_eq(len, 13);
      *w = rd32(d + pos + 8), *h = rd32(d + pos + 12);
      cr_expect(d[pos + 16] == 8 && d[pos + 17] == 0, "8-bit grayscale");
    }
    if (!memcmp(d + pos + 4, "IDAT", 4)) memcpy(z + zn, d + pos + 8, len), zn += len;
    seen_end |= !memcmp(d + pos + 4, "IEND", 4);
    pos += 12 + len;
  }
  cr_expect(seen_end && pos == n, "IEND last");
  size_t raw_n = (size_t)((*w + 1) * *h), got = 0, p = 2;
  unsigned char *raw = malloc(raw_n), *pix = malloc((size_t)(*w * *h));
  cr_assert(z[0] == 0x78 && ((z[0] << 8) | z[1]) % 31 == 0, "zlib header");
  for (int last = 0; !last;) { /* stored blocks */
    last = z[p] & 1;
    cr_assert((z[p] >> 1) == 0, "a stored block");
    size_t len = z[p + 1] | (size_t)z[p + 2] << 8;
    cr_assert(((len ^ (z[p + 3] | (size_t)z[p + 4] << 8)) & 0xFFFF) == 0xFFFF, "LEN / NLEN");
    cr_assert(got + len <= raw_n);
    memcpy(raw + got, z + p + 5, len);
    got += len, p += 5 + len;
  }
  cr_assert_eq(got, raw_n);
  cr_expect(rd32(z + p) == at_adler32(1, raw, raw_n), "Adler-32");
  for (int64_t y = 0; y < *h; y++) {
    cr_expect(raw[y * (*w + 1)] == 0, "filter none");
    memcpy(pix + y * *w, raw + y * (*w + 1) + 1, (size_t)*w);
  }
  free(z), free(raw);
  return pix;
}

Test(probe, png_checksums_known_values) {
  cr_expect(at_crc32(0, (const unsigned char *)"123456789", 9) == 0xCBF43926u);
  cr_expect(at_adler32(1, (const unsigned char *)"Wikipedia", 9) == 0x11E60398u);
}

Test(probe, pattern_png_is_the_mixer_mask) {
  char out[256], msg[2048];
  snprintf(out, sizeof out, "/tmp/attnlab_probe_pattern_%d.png", (int)getpid());
  /* 3 heads of 300 positions: 905 x 300 pixels, more than one stored block */
  const char *argv[] = {"probe", "--pattern", "sparse_transformer", "300", out, "pattern=strided", "stride=7",
                        "combine=heads", "n_heads=3"};
  cr_assert(run_probe(9, argv, msg, sizeof msg) == 0, "%s", msg);
  int64_t w = 0, h = 0;
  unsigned char *pix = read_png(out, &w, &h);
  cr_assert(w == 3 * 302 - 2 && h == 300, "%lld x %lld", (long long)w, (long long)h);
  int64_t wrong = 0;
  for (int64_t hd = 0; hd < 3; hd++)
    for (int64_t i = 0; i < 300; i++)
      for (int64_t j = 0; j < 300; j++) {
        int a1 = hd % 2 == 0, vis = j <= i && (a1 ? j >= i - 7 : (i - j) % 7 == 0);
        wrong += pix[i * w + hd * 302 + j] != (vis ? 0 : 255);
      }
  cr_expect(wrong == 0, "%lld pixels differ from the strided heads' definition", (long long)wrong);
  cr_expect(pix[301] == 128 && pix[300] == 128, "gray gap between the panels");
  free(pix);
  remove(out);
  const char *linear[] = {"probe", "--pattern", "mamba", "20", out};
  expect_error(5, linear, "mamba has no fixed attention pattern", out);
  const char *badkey[] = {"probe", "--pattern", "bigbird", "20", out, "blocks=3"};
  expect_error(6, badkey, "has no option 'blocks'", out);
  const char *badT[] = {"probe", "--pattern", "bigbird", "0", out};
  expect_error(5, badT, "T '0' must be an integer", out);
}
