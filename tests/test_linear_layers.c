/* The linear-attention mixer layers in float: the chunk form of a whole
 * layer equals its recurrent form (outputs and every gradient), a layer is
 * causal, and extreme decay gates (about -20 per token and beyond, and about
 * 0) give finite outputs and gradients; experiments/linear_smoke.yaml builds. */
#include "experiments/config.h"
#include "linlayer_testing.h"

static const char *const kind_names[] = {"deltanet", "gdn", "kda", "mamba2"};
#define N_KINDS AT_ARRAY_LEN(kind_names)
#define KIND(i) mixer_id(kind_names[i])

/* A layer of `kind` with d_model 32 (2 heads of 16; mamba2 2 heads of 32,
 * d_state 16), chunk 16, randomised weights. */
static void build(one_layer *L, at_mixer_kind kind, at_decay_gate decay, uint64_t seed) {
  at_model_cfg cfg = layer_cfg(kind, 32);
  at_lin_mixer_opts *o = LIN_OPTS(&cfg, kind);
  o->chunk_size = 16;
  o->conv_size = 4;
  o->decay_gate = decay;
  o->d_state = 16;
  layer_build(L, &cfg, kind, seed);
  layer_randomize(L, seed + 1, 0.3);
}

/* Output and gradients (params then x) of L = sum(y * w), w fixed. */
typedef struct fwd_bwd {
  real *y, *grads;
  int64_t ny, ngrad;
} fwd_bwd;

static fwd_bwd run(at_ctx *c, one_layer *L, const real *xdata, int64_t B, int64_t T) {
  at_ctx_reset(c);
  at_params_zero_grad(L->p);
  at_tensor *x = at_from(c, xdata, AT_SHAPE(B, T, L->cfg.d_model));
  x->requires_grad = 1;
  at_tensor *y = layer_forward(c, L, x);
  cr_assert(y != NULL, "%s forward: %s", at_mixer_name(L->kind), at_errmsg());
  real *dy = at_grad(c, y);
  at_fill_normal(dy, y->size, 5, 5, 0, 1);
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s backward: %s", at_mixer_name(L->kind), at_errmsg());
  fwd_bwd r = {malloc((size_t)y->size * sizeof(real)), NULL, y->size, L->p->total + x->size};
  memcpy(r.y, y->data, (size_t)y->size * sizeof(real));
  r.grads = malloc((size_t)r.ngrad * sizeof(real));
  memcpy(r.grads, L->p->grad, (size_t)L->p->total * sizeof(real));
  memcpy(r.grads + L->p->total, x->grad, (size_t)x->size * sizeof(real));
  return r;
}

static void fb_free(fwd_bwd *r) {
  free(r->y);
  free(r->grads);
}

/* Chunk form (chunk 16, T = 100: six full chunks and a ragged tail) against
 * the token-by-token recurrence, each mixer with its default options and
 * gdn / kda also with the bounded gate. */
Test(linear_layers, chunk_equals_recurrent) {
  at_ctx *c = at_ctx_new(16 << 20);
  int64_t B = 2, T = 100;
  real *x = malloc((size_t)(B * T * 32) * sizeof(real));
  at_fill_normal(x, B * T * 32, 11, 1, 0, 1);
  for (int i = 0; i < N_KINDS; i++)
    for (int bounded = 0; bounded < 2; bounded++) {
      if (bounded && (KIND(i) == MIXER(deltanet) || KIND(i) == MIXER(mamba2))) continue;
      one_layer L;
      build(&L, KIND(i), bounded ? AT_DECAY_BOUNDED : AT_DECAY_UNBOUNDED, 20 + (uint64_t)i);
      fwd_bwd a = run(c, &L, x, B, T);
      at_linear_mixer_set_form(L.layer, AT_LIN_RECURRENT);
      fwd_bwd b = run(c, &L, x, B, T);
      char what[96];
      snprintf(what, sizeof what, "%s%s output", at_mixer_name(KIND(i)), bounded ? " bounded" : "");
      AT_EXPECT_CLOSE(a.y, b.y, a.ny, 2e-6, what); /* ~2e-7 measured */
      snprintf(what, sizeof what, "%s%s gradients", at_mixer_name(KIND(i)), bounded ? " bounded" : "");
      AT_EXPECT_CLOSE(a.grads, b.grads, a.ngrad, 5e-6, what); /* ~5e-7 */
      cr_expect(at_test_rel_err(a.y, b.y, a.ny) > 0, "%s: the forms agree bitwise (form switch not taken?)", what);
      fb_free(&a), fb_free(&b);
      layer_free(&L);
    }
  free(x);
  at_ctx_free(c);
}

/* A change of x at position t1 never changes the outputs before t1 (and does
 * change the output at t1), in the chunk form with t1 inside a chunk. */
Test(linear_layers, causal) {
  at_ctx *c = at_ctx_new(16 << 20);
  int64_t B = 1, T = 45, d = 32;
  const int64_t t1s[] = {0, 21, 37, 44};
  real *x = malloc((size_t)(B * T * d) * sizeof(real)), *y0 = malloc((size_t)(B * T * d) * sizeof(real));
  at_fill_normal(x, B * T * d, 12, 1, 0, 1);
  for (int i = 0; i < N_KINDS; i++) {
    one_layer L;
    build(&L, KIND(i), AT_DECAY_UNBOUNDED, 40 + (uint64_t)i);
    at_ctx_reset(c);
    at_tensor *y = layer_forward(c, &L, at_from(c, x, AT_SHAPE(B, T, d)));
    cr_assert(y);
    memcpy(y0, y->data, (size_t)y->size * sizeof(real));
    for (int j = 0; j < AT_ARRAY_LEN(t1s); j++) {
      int64_t t1 = t1s[j];
      real saved[32];
      memcpy(saved, x + t1 * d, sizeof saved);
      for (int64_t e = 0; e < d; e++) x[t1 * d + e] += 0.5f;
      at_ctx_reset(c);
      y = layer_forward(c, &L, at_from(c, x, AT_SHAPE(B, T, d)));
      cr_assert(y);
      double before = 0, at = 0;
      for (int64_t t = 0; t <= t1; t++)
        for (int64_t e = 0; e < d; e++) {
          double diff = fabs((double)y->data[t * d + e] - (double)y0[t * d + e]);
          if (t < t1) before = fmax(before, diff);
          else at = fmax(at, diff);
        }
      cr_expect(before == 0, "%s: changing x at %lld changed an earlier output by %g",
                at_mixer_name(KIND(i)), (long long)t1, before);
      cr_expect(at > 1e-4, "%s: changing x at %lld did not change its output (%g)",
                at_mixer_name(KIND(i)), (long long)t1, at);
      memcpy(x + t1 * d, saved, sizeof saved);
    }
    layer_free(&L);
  }
  free(x), free(y0);
  at_ctx_free(c);
}

static void set_param(one_layer *L, const char *suffix, double v) {
  for (int i = 0; i < L->p->n; i++)
    if (name_ends(L->p->list[i].name, suffix)) at_fill(L->p->list[i].t->data, L->p->list[i].t->size, (real)v);
}

static int all_finite_run(const fwd_bwd *r) {
  return at_all_finite(r->y, r->ny) && at_all_finite(r->grads, r->ngrad);
}

/* Decay gates far beyond the training range, inside whole layers, both
 * forms: A_log = log 1e4 with dt_bias 5 (g about -5e4 per token: the state
 * is erased every token), A_log = log 20 with dt_bias 0 (about -14 per
 * token), A_log = -30 (g about -1e-13: no decay at all), and for the bounded
 * gate lower_bound -1e4. Outputs and all gradients stay finite. */
Test(linear_layers, extreme_gates_finite) {
  at_ctx *c = at_ctx_new(16 << 20);
  int64_t B = 2, T = 40;
  real *x = malloc((size_t)(B * T * 32) * sizeof(real));
  at_fill_normal(x, B * T * 32, 13, 1, 0, 3);
  const struct { double A_log, dt_bias; } gates[] = {{log(1e4), 5}, {log(20), 0}, {-30, 0}};
  for (int i = 1; i < N_KINDS; i++)
    for (int gi = 0; gi < AT_ARRAY_LEN(gates); gi++)
      for (int form = 0; form < 2; form++) {
        one_layer L;
        build(&L, KIND(i), AT_DECAY_UNBOUNDED, 60 + (uint64_t)i);
        set_param(&L, "A_log", gates[gi].A_log);
        set_param(&L, "dt_bias", gates[gi].dt_bias);
        at_linear_mixer_set_form(L.layer, (at_lin_form)form);
        fwd_bwd r = run(c, &L, x, B, T);
        cr_expect(all_finite_run(&r), "%s: A_log %g dt_bias %g form %d: non-finite output or gradient",
                  at_mixer_name(KIND(i)), gates[gi].A_log, gates[gi].dt_bias, form);
        fb_free(&r);
        layer_free(&L);
      }
  for (int i = 1; i <= 2; i++) { /* gdn, kda: bounded gate at -1e4 and at ~0 */
    for (int gi = 0; gi < 2; gi++) {
      at_model_cfg cfg = layer_cfg(KIND(i), 32);
      LIN_OPTS(&cfg, KIND(i))->decay_gate = AT_DECAY_BOUNDED;
      LIN_OPTS(&cfg, KIND(i))->lower_bound = gi == 0 ? -1e4 : -1e-12;
      one_layer L;
      layer_build(&L, &cfg, KIND(i), 70);
      layer_randomize(&L, 71, 0.3);
      fwd_bwd r = run(c, &L, x, B, T);
      cr_expect(all_finite_run(&r), "%s bounded, lower_bound %g: non-finite output or gradient",
                at_mixer_name(KIND(i)), LIN_OPTS(&cfg, KIND(i))->lower_bound);
      fb_free(&r);
      layer_free(&L);
    }
  }
  free(x);
  at_ctx_free(c);
}

/* state_elems: heads x K x V plus the conv states; cache_per_token 0. */
Test(linear_layers, state_sizes) {
  for (int i = 0; i < N_KINDS; i++) {
    one_layer L;
    at_model_cfg cfg = layer_cfg(KIND(i), 32);
    LIN_OPTS(&cfg, KIND(i))->conv_size = 4;
    LIN_OPTS(&cfg, KIND(i))->d_state = 16;
    layer_build(&L, &cfg, KIND(i), 1);
    int64_t want = 2 * 16 * 16 + 3 * 2 * (16 + 16 + 16);
    if (KIND(i) == MIXER(mamba2)) want = 2 * 16 * 32 + 3 * (64 + 2 * 16);   /* H N P + conv */
    if (KIND(i) == MIXER(gdn)) want = 2 * 16 * 32 + 3 * 2 * (16 + 16 + 32); /* expand_v 2 */
    cr_expect_eq(L.impl->state_elems(L.layer), want, "%s: state_elems %lld, expected %lld",
                 at_mixer_name(KIND(i)), (long long)L.impl->state_elems(L.layer), (long long)want);
    cr_expect(L.impl->cache_per_token == NULL);
    layer_free(&L);
  }
}

/* experiments/linear_smoke.yaml loads and builds: one run per linear mixer
 * (2 layers of it) and the 3:1 kda:full hybrid; only the full layer caches
 * keys and values. */
Test(linear_layers, smoke_experiment_builds) {
  char path[1024];
  snprintf(path, sizeof path, "%s/experiments/linear_smoke.yaml", AT_SOURCE_DIR);
  at_experiment *e = NULL;
  cr_assert(at_experiment_load(path, NULL, 0, &e) == AT_OK, "%s", at_errmsg());
  cr_assert_eq(e->n_runs, 5);
  for (int i = 0; i < e->n_runs; i++) {
    const at_run_cfg *rc = &e->runs[i];
    const at_model_cfg *mc = &rc->model;
    if (i < 4) {
      cr_expect_str_eq(rc->name, at_mixer_name(KIND(i)));
      cr_expect(mc->n_layers == 2 && mc->layers[0] == KIND(i) && mc->layers[1] == KIND(i),
                "%s: layers", rc->name);
    } else {
      cr_expect_str_eq(rc->name, "hybrid");
      cr_expect(mc->n_layers == 4 && mc->layers[0] == MIXER(kda) && mc->layers[2] == MIXER(kda) &&
                mc->layers[3] == MIXER(full), "hybrid: layers");
    }
    at_model *m = NULL;
    cr_assert(at_model_new(mc, rc->seed, &m) == AT_OK, "%s: %s", rc->name, at_errmsg());
    cr_expect_eq(at_model_cache_per_token(m), i < 4 ? 0 : 2 * 32, "%s: cache per token", rc->name);
    cr_expect(at_model_state_elems(m) > 0, "%s: no recurrent state", rc->name);
    at_model_free(m);
  }
  at_experiment_free(e);
}
