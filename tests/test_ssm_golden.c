/* The state-space ops and layers against the authors' PyTorch code
 * (tests/ref/gen_ssm_golden.py, from state-spaces/mamba and state-spaces/s4):
 * - `probe selective_scan` on selective_scan_ref's golden cases (all options;
 *   none), `probe s4d_kernel` on S4DKernel's: outputs (1e-5) and every input
 *   gradient (1e-4), run through the tool's code in process;
 * - the mamba layer against mamba_simple.Mamba and the s4d layer against
 *   s4d.py's S4D block at a training shape (B 16, T 37: ragged against the
 *   chunk of 8), in float on 2 threads: the output and the gradients of every
 *   parameter and of the input. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define AT_PROBE_NO_MAIN
#include "tools/probe.c"

#include "core/threads.h"
#include "linlayer_testing.h"

static const char *src_dir(void) {
  const char *s = getenv("AT_SOURCE_DIR");
  return s && *s ? s : AT_SOURCE_DIR;
}

static real *read_n(at_h5 *h, const char *name, int64_t *n) {
  int nd;
  int64_t shape[4];
  real *x = NULL;
  cr_assert(at_h5_read_real_alloc(h, name, &nd, shape, &x) == AT_OK, "%s: %s", name, at_errmsg());
  *n = at_shape_size(nd, shape);
  return x;
}

static void expect_same(at_h5 *got, const char *gname, at_h5 *want, const char *wname, double tol,
                        const char *what) {
  int64_t n1, n2;
  real *a = read_n(got, gname, &n1), *b = read_n(want, wname, &n2);
  cr_assert(n1 == n2, "%s %s: %lld vs %lld elements", what, gname, (long long)n1, (long long)n2);
  char w[256];
  snprintf(w, sizeof w, "%s %s", what, gname);
  AT_EXPECT_CLOSE(a, b, n1, tol, w);
  free(a), free(b);
}

static void golden_op(const char *file, const char *op, const char *const *outs, const char *const *grads) {
  char in[1024], out[256];
  snprintf(in, sizeof in, "%s/tests/golden/%s", src_dir(), file);
  snprintf(out, sizeof out, "/tmp/attnlab_ssm_golden_%d.h5", (int)getpid());
  FILE *err = stderr; /* probe's message, if any, in the test log */
  const char *argv[] = {"probe", op, in, out};
  cr_assert(probe_main(4, (char **)argv, stdout, err) == 0, "probe %s %s failed", op, file);
  at_h5 *g, *w;
  cr_assert(at_h5_open(out, &g) == AT_OK && at_h5_open(in, &w) == AT_OK, "%s", at_errmsg());
  char want[128];
  for (int i = 0; outs[i]; i++) {
    snprintf(want, sizeof want, "outputs/%s", outs[i]);
    expect_same(g, outs[i], w, want, 1e-5, file);
  }
  for (int i = 0; grads[i]; i++) {
    snprintf(want, sizeof want, "grads/%s", grads[i]);
    expect_same(g, grads[i], w, want, 1e-4, file);
  }
  at_h5_close(g);
  at_h5_close(w);
  remove(out);
}

Test(ssm_golden, selective_scan_ref_all_options) {
  static const char *const outs[] = {"out", "last_state", NULL};
  static const char *const grads[] = {"du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", NULL};
  golden_op("selective_scan.h5", "selective_scan", outs, grads);
}

Test(ssm_golden, selective_scan_ref_plain) {
  static const char *const outs[] = {"out", "last_state", NULL};
  static const char *const grads[] = {"du", "ddelta", "dA", "dB", "dC", NULL};
  golden_op("selective_scan_plain.h5", "selective_scan", outs, grads);
}

Test(ssm_golden, s4d_kernel) {
  static const char *const outs[] = {"K", NULL};
  static const char *const grads[] = {"dlog_dt", "dlog_A_real", "dA_imag", "dB", "dC", NULL};
  golden_op("s4d_kernel.h5", "s4d_kernel", outs, grads);
}

/* ---- the layers ------------------------------------------------------------------- */

static void layer_case(at_h5 *h, const char *grp, at_lin_form form) {
  char *mixer = NULL, path[256], what[200];
  cr_assert(at_h5_get_attr_str(h, grp, "mixer", &mixer) == AT_OK);
  at_mixer_kind kind = mixer_id(mixer);
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  int64_t d;
  cr_assert(at_h5_get_attr_int(h, grp, "d_model", &d) == AT_OK);
  cfg.d_model = d, cfg.n_heads = cfg.n_kv_heads = 1, cfg.n_layers = 1, cfg.layers[0] = kind;
  const at_mixer_impl *impl = at_mixer_impl_of(kind);
  for (int i = 0; i < impl->n_opts; i++) {
    int64_t v;
    if (at_h5_has_attr(h, grp, impl->opts[i].key) && at_h5_get_attr_int(h, grp, impl->opts[i].key, &v) == AT_OK)
      set_opt(&cfg, kind, impl->opts[i].key, (double)v);
  }
  one_layer L;
  layer_build(&L, &cfg, kind, 1);
  at_linear_mixer_set_form(L.layer, form);
  char **names;
  int n_names;
  snprintf(path, sizeof path, "%s/params", grp);
  cr_assert(at_h5_list(h, path, &names, &n_names) == AT_OK);
  cr_expect_eq(n_names, L.p->n, "%s: %d parameters in the file, %d in the layer", grp, n_names, L.p->n);
  at_h5_free_list(names, n_names);
  for (int i = 0; i < L.p->n; i++) {
    at_tensor *t = L.p->list[i].t;
    int64_t n;
    snprintf(path, sizeof path, "%s/params/%s", grp, L.p->list[i].name + strlen("mix."));
    real *v = read_n(h, path, &n);
    cr_assert(n == t->size, "%s: %lld elements, expected %lld", path, (long long)n, (long long)t->size);
    memcpy(t->data, v, (size_t)n * sizeof(real));
    free(v);
  }
  int nd;
  int64_t xs[4], n;
  snprintf(path, sizeof path, "%s/x", grp);
  cr_assert(at_h5_shape(h, path, &nd, xs) == AT_OK && nd == 3);
  at_ctx *c = at_ctx_new(0);
  real *xv = read_n(h, path, &n);
  at_tensor *x = at_from(c, xv, 3, xs);
  x->requires_grad = 1;
  at_params_zero_grad(L.p);
  at_tensor *y = layer_forward(c, &L, x);
  cr_assert(y != NULL, "%s: %s", grp, at_errmsg());
  snprintf(path, sizeof path, "%s/y", grp);
  real *yref = read_n(h, path, &n);
  snprintf(what, sizeof what, "%s (form %d) output", grp, (int)form);
  AT_EXPECT_CLOSE(y->data, yref, y->size, 1e-5, what);
  snprintf(path, sizeof path, "%s/dy", grp);
  real *dy = read_n(h, path, &n);
  memcpy(at_grad(c, y), dy, (size_t)y->size * sizeof(real));
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  snprintf(path, sizeof path, "%s/dx", grp);
  real *dx = read_n(h, path, &n);
  snprintf(what, sizeof what, "%s (form %d) dx", grp, (int)form);
  AT_EXPECT_CLOSE(x->grad, dx, x->size, 1e-5, what);
  for (int i = 0; i < L.p->n; i++) {
    at_tensor *t = L.p->list[i].t;
    snprintf(path, sizeof path, "%s/grads/%s", grp, L.p->list[i].name + strlen("mix."));
    real *gref = read_n(h, path, &n);
    snprintf(what, sizeof what, "%s (form %d) d%s", grp, (int)form, L.p->list[i].name);
    AT_EXPECT_CLOSE(t->grad, gref, t->size, 1e-5, what);
    free(gref);
  }
  free(xv), free(yref), free(dy), free(dx), free(mixer);
  at_ctx_free(c);
  layer_free(&L);
}

static void layer_file(const char *grp) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/golden/ssm_layers.h5", src_dir());
  at_h5 *h;
  cr_assert(at_h5_open(path, &h) == AT_OK, "%s", at_errmsg());
  at_set_threads(2);
  layer_case(h, grp, AT_LIN_CHUNK);
  layer_case(h, grp, AT_LIN_RECURRENT);
  at_set_threads(1);
  at_h5_close(h);
}

Test(ssm_golden, mamba_layer_matches_mamba_simple) { layer_file("mamba"); }
Test(ssm_golden, s4d_layer_matches_s4d_block) { layer_file("s4d"); }
