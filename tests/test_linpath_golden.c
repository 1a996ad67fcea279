/* The linear path's ops against flash-linear-attention's reference ops
 * (tests/golden/, from fla's naive ops in float32 with PyTorch autograd;
 * tests/ref/gen_linpath_golden.py): linear_attn (normalize 0, the shared
 * file; normalize 1 with an initial state and normaliser; scale 0.3 with an
 * initial state), retention (the shared file; with an initial state, H 4,
 * T 100) and Performer's FAVOR+ (the paper's features on fla's normalised
 * linear attention). Output, final states and the gradient of every input:
 *   - through tools/probe (the chunk form, as a user would cross-check);
 *   - in the recurrent form, the chunk form with chunk 16 (ragged) and, for
 *     the constant decays, the parallel form. */
#include <unistd.h>

#include "core/h5io.h"
#include "la_testing.h"
#define AT_PROBE_NO_MAIN
#include "tools/probe.c"

static real *read_exact(at_h5 *h, const char *name, int64_t n) {
  int nd;
  int64_t shape[AT_MAX_DIMS];
  real *x = NULL;
  cr_assert(at_h5_read_real_alloc(h, name, &nd, shape, &x) == AT_OK, "%s", at_errmsg());
  cr_assert(at_shape_size(nd, shape) == n, "%s: %lld elements, want %lld", name,
            (long long)at_shape_size(nd, shape), (long long)n);
  return x;
}

static real *read_opt(at_h5 *h, const char *name, int64_t n) {
  return at_h5_exists(h, name) ? read_exact(h, name, n) : NULL;
}

/* Inputs, seeds and expected results of a golden file in la_data form. */
static void load_golden(const char *file, la_kind kind, la_data *d, la_result *want, double *scale) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/%s", AT_SOURCE_DIR, file);
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  int nd;
  int64_t qs[4], vs[4], ws[4] = {0, 0};
  cr_assert(at_h5_shape(h, "inputs/q", &nd, qs) == AT_OK && nd == 4);
  cr_assert(at_h5_shape(h, "inputs/v", &nd, vs) == AT_OK && nd == 4);
  if (kind == LA_PERFORMER) cr_assert(at_h5_shape(h, "inputs/projection_matrix", &nd, ws) == AT_OK);
  int64_t norm = kind == LA_PERFORMER;
  if (at_h5_has_attr(h, "/", "normalize")) cr_assert(at_h5_get_attr_int(h, "/", "normalize", &norm) == AT_OK);
  *scale = 0;
  if (at_h5_has_attr(h, "/", "scale")) cr_assert(at_h5_get_attr_double(h, "/", "scale", scale) == AT_OK);
  *d = (la_data){kind, (int)norm, qs[0], qs[1], qs[2], qs[3], vs[3], ws[0], {0}, 0, 0, 0};
  d->x[LXQ] = read_exact(h, "inputs/q", la_in_size(d, LXQ));
  d->x[LXK] = read_exact(h, "inputs/k", la_in_size(d, LXK));
  d->x[LXV] = read_exact(h, "inputs/v", la_in_size(d, LXV));
  d->x[LXH0] = read_opt(h, "inputs/initial_state", la_in_size(d, LXH0));
  d->x[LXZ0] = read_opt(h, "inputs/initial_z", la_in_size(d, LXZ0));
  if (kind == LA_PERFORMER) d->x[LXW] = read_exact(h, "inputs/projection_matrix", la_in_size(d, LXW));
  d->d_o = read_exact(h, "inputs/do", d->B * d->T * d->H * d->V);
  d->d_ht = read_opt(h, "inputs/dht", la_in_size(d, LXH0));
  d->d_zt = read_opt(h, "inputs/dzt", la_in_size(d, LXZ0));
  if (!d->d_ht) d->d_ht = calloc((size_t)la_in_size(d, LXH0), sizeof(real));
  if (!d->d_zt) d->d_zt = calloc((size_t)la_in_size(d, LXZ0), sizeof(real));
  *want = (la_result){read_exact(h, "outputs/o", d->B * d->T * d->H * d->V),
                      read_opt(h, "outputs/final_state", la_in_size(d, LXH0)),
                      read_opt(h, "outputs/final_z", la_in_size(d, LXZ0)), NULL, {0}};
  const char *gn[LX_N] = {"grads/dq", "grads/dk", "grads/dv", NULL, "grads/dinitial_state", "grads/dinitial_z"};
  for (int i = 0; i < LXM0; i++)
    if (gn[i] && d->x[i]) want->dx[i] = read_exact(h, gn[i], la_in_size(d, i));
  at_h5_close(h);
}

/* Like la_run, with the file's scale; the final state only when the file has one. */
static void check_forms(const char *file, la_kind kind) {
  la_data d;
  la_result want;
  double scale;
  load_golden(file, kind, &d, &want, &scale);
  const struct { at_la_form form; int64_t C; } runs[] = {
      {AT_LA_RECURRENT, 64}, {AT_LA_CHUNK, 64}, {AT_LA_CHUNK, 16}, {AT_LA_PARALLEL, 0}};
  for (int i = 0; i < AT_ARRAY_LEN(runs); i++) {
    if (runs[i].form == AT_LA_PARALLEL && kind == LA_PERFORMER) continue;
    at_ctx *c = at_ctx_new(0);
    at_tensor *in[LX_N] = {0};
    for (int j = 0; j < LX_N; j++)
      if (d.x[j]) {
        int64_t s[4];
        int nd = la_in_shape(&d, j, s);
        in[j] = j == LXW ? at_from(c, d.x[j], nd, s) : at_leaf(c, d.x[j], nd, s);
      }
    at_la_opts o = {scale, runs[i].C, runs[i].form, d.normalize, 0};
    at_tensor *ht = NULL, *zt = NULL;
    at_tensor *y = la_call(c, &d, in, &o, &ht, d.normalize && kind != LA_PERFORMER ? &zt : NULL, NULL);
    cr_assert(y && ht, "%s: %s", file, at_errmsg());
    memcpy(at_grad(c, y), d.d_o, (size_t)y->size * sizeof(real));
    memcpy(at_grad(c, ht), d.d_ht, (size_t)ht->size * sizeof(real));
    if (zt) memcpy(at_grad(c, zt), d.d_zt, (size_t)zt->size * sizeof(real));
    cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
    char what[160];
    snprintf(what, sizeof what, "%s form %d C=%lld vs fla: o", file, (int)runs[i].form, (long long)runs[i].C);
    AT_EXPECT_CLOSE(y->data, want.o, y->size, 1e-5, what);
    if (want.ht) {
      snprintf(what, sizeof what, "%s form %d: final state", file, (int)runs[i].form);
      AT_EXPECT_CLOSE(ht->data, want.ht, ht->size, 1e-5, what);
    }
    if (want.zt) {
      snprintf(what, sizeof what, "%s form %d: final z", file, (int)runs[i].form);
      AT_EXPECT_CLOSE(zt->data, want.zt, zt->size, 1e-5, what);
    }
    for (int j = 0; j < LXM0; j++)
      if (want.dx[j]) {
        snprintf(what, sizeof what, "%s form %d C=%lld: d%s", file, (int)runs[i].form, (long long)runs[i].C,
                 la_in_names[j]);
        AT_EXPECT_CLOSE(in[j]->grad, want.dx[j], in[j]->size, 1e-4, what);
      }
    at_ctx_free(c);
  }
  la_result_free(&want);
  la_data_free(&d);
}

Test(linpath_golden, linear_attn) { check_forms("linear_attn.h5", LA_LINEAR); }
Test(linpath_golden, linear_attn_normalized_with_state) { check_forms("linear_attn_norm.h5", LA_LINEAR); }
Test(linpath_golden, linear_attn_scale_with_state) { check_forms("linear_attn_h0.h5", LA_LINEAR); }
Test(linpath_golden, retention) { check_forms("retention.h5", LA_RETENTION); }
Test(linpath_golden, retention_with_state) { check_forms("retention_h0.h5", LA_RETENTION); }
Test(linpath_golden, performer) { check_forms("performer.h5", LA_PERFORMER); }

/* ---- through the probe tool -------------------------------------------------------- */

static real *read_all(at_h5 *h, const char *name, int64_t *n) {
  int nd;
  int64_t shape[4];
  real *d;
  cr_assert(at_h5_read_real_alloc(h, name, &nd, shape, &d) == AT_OK, "%s", at_errmsg());
  *n = at_shape_size(nd, shape);
  return d;
}

/* probe OP on the file: every output and gradient the file holds matches. */
static void check_probe(const char *file, const char *op) {
  char in[1024], out[256];
  snprintf(in, sizeof in, "%s/tests/golden/%s", AT_SOURCE_DIR, file);
  snprintf(out, sizeof out, "/tmp/attnlab_linpath_probe_%d.h5", (int)getpid());
  const char *argv[] = {"probe", op, in, out};
  FILE *null = fopen("/dev/null", "w");
  cr_assert(probe_main(4, (char **)argv, null, stderr) == 0, "probe %s %s", op, file);
  fclose(null);
  at_h5 *g, *w;
  cr_assert(at_h5_open(out, &g) == AT_OK && at_h5_open(in, &w) == AT_OK, "%s", at_errmsg());
  const char *groups[] = {"outputs", "grads"};
  int checked = 0;
  for (int k = 0; k < 2; k++) {
    char **names;
    int n;
    cr_assert(at_h5_list(w, groups[k], &names, &n) == AT_OK);
    for (int i = 0; i < n; i++) {
      char want[128];
      snprintf(want, sizeof want, "%s/%s", groups[k], names[i]);
      cr_assert(at_h5_exists(g, names[i]), "probe %s wrote no %s", op, names[i]);
      int64_t n1, n2;
      real *a = read_all(g, names[i], &n1), *b = read_all(w, want, &n2);
      cr_assert(n1 == n2);
      char what[200];
      snprintf(what, sizeof what, "probe %s %s: %s", op, file, names[i]);
      AT_EXPECT_CLOSE(a, b, n1, k ? 1e-4 : 1e-5, what);
      free(a), free(b);
      checked++;
    }
    at_h5_free_list(names, n);
  }
  cr_expect(checked >= 4, "%s: only %d datasets compared", file, checked);
  at_h5_close(g), at_h5_close(w);
  remove(out);
}

Test(linpath_golden, through_probe) {
  check_probe("linear_attn.h5", "linear_attn");
  check_probe("linear_attn_norm.h5", "linear_attn");
  check_probe("linear_attn_h0.h5", "linear_attn");
  check_probe("retention.h5", "retention");
  check_probe("retention_h0.h5", "retention");
  check_probe("performer.h5", "performer");
}
