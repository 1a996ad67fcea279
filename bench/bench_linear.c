/* bench/bench_linear.c: tokens/s of the linear-attention ops (chunk form),
 * forward and forward + backward, for T = 256 ... 16384.
 *
 *   build/bench/bench_linear [--k K] [--v V] [--heads H] [--batch B]
 *                            [--chunk C] [--tmax T] [--kinds kda,gated_delta_rule,...]
 *                            [--recurrent] [--threads N]
 *
 * Defaults: K = V = 128 (the Kimi Linear head size), H = 2, B = 1, C = 64,
 * kinds kda and gated_delta_rule. --recurrent adds the token-by-token form
 * for comparison (it is the reference, not meant to be fast). Each point
 * repeats until it has run for at least 0.5 s and reports the best mean.
 * Inputs are as the layers make them: L2-normalised q and k, beta in (0,1),
 * gates logsigmoid-like in (-1, 0).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/threads.h"
#include "ops/attention/delta.h"

static void l2norm_rows(real *x, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; r++) {
    double s = 0;
    for (int64_t i = 0; i < d; i++) s += (double)x[r * d + i] * x[r * d + i];
    for (int64_t i = 0; i < d; i++) x[r * d + i] = (real)(x[r * d + i] / sqrt(s + 1e-6));
  }
}

/* Seconds per call of forward (+ backward when `bwd`). */
static double time_op(at_lin_kind kind, at_lin_form form, int64_t B, int64_t T, int64_t H,
                      int64_t K, int64_t V, int64_t C, int bwd) {
  at_ctx *c = at_ctx_new((size_t)256 << 20);
  at_tensor *q = AT_NEW(c, B, T, H, K), *k = AT_NEW(c, B, T, H, K), *v = AT_NEW(c, B, T, H, V);
  at_tensor *g = kind == AT_LIN_KDA ? AT_NEW(c, B, T, H, K) : AT_NEW(c, B, T, H);
  at_tensor *beta = AT_NEW(c, B, T, H);
  if (!q || !k || !v || !g || !beta) {
    fprintf(stderr, "bench_linear: %s\n", at_errmsg());
    exit(1);
  }
  at_fill_normal(q->data, q->size, 1, 1, 0, 1);
  at_fill_normal(k->data, k->size, 2, 1, 0, 1);
  at_fill_normal(v->data, v->size, 3, 1, 0, 1);
  at_fill_uniform(g->data, g->size, 4, 1, -1, 0);
  at_fill_uniform(beta->data, beta->size, 5, 1, 0, 1);
  l2norm_rows(q->data, B * T * H, K);
  l2norm_rows(k->data, B * T * H, K);
  at_tensor *in[] = {q, k, v, g, beta};
  for (int i = 0; i < 5; i++) in[i]->requires_grad = bwd;
  if (kind == AT_LIN_DELTA_RULE) g = NULL;
  if (kind == AT_LIN_SIMPLE_GLA) beta = NULL;
  at_lin_opts opts = {0, C, form};
  double best = 1e30, total = 0;
  int reps = 0;
  while (total < 0.5 || reps < 2) {
    at_ctx_mark m = at_ctx_get_mark(c);
    for (int i = 0; i < 5; i++) in[i]->grad = NULL;
    double t0 = at_now();
    at_tensor *o = at_lin_attn(c, kind, q, k, v, g, beta, NULL, NULL, &opts);
    if (!o) {
      fprintf(stderr, "bench_linear: %s\n", at_errmsg());
      exit(1);
    }
    if (bwd) {
      real *d = at_grad(c, o);
      for (int64_t i = 0; i < o->size; i++) d[i] = (real)1e-3;
      if (at_backward_from_seeded(c) != AT_OK) {
        fprintf(stderr, "bench_linear: %s\n", at_errmsg());
        exit(1);
      }
    }
    double dt = at_now() - t0;
    at_ctx_rewind(c, m);
    if (dt < best) best = dt;
    total += dt;
    reps++;
  }
  at_ctx_free(c);
  return best;
}

int main(int argc, char **argv) {
  int64_t K = 128, V = 128, H = 2, B = 1, C = 64, tmax = 16384;
  int threads = 0, recurrent = 0;
  const char *kinds = "kda,gated_delta_rule";
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--recurrent")) { recurrent = 1; continue; }
    if (!val) { fprintf(stderr, "bench_linear: %s needs a value\n", a); return 2; }
    if (!strcmp(a, "--k")) K = atoll(val);
    else if (!strcmp(a, "--v")) V = atoll(val);
    else if (!strcmp(a, "--heads")) H = atoll(val);
    else if (!strcmp(a, "--batch")) B = atoll(val);
    else if (!strcmp(a, "--chunk")) C = atoll(val);
    else if (!strcmp(a, "--tmax")) tmax = atoll(val);
    else if (!strcmp(a, "--threads")) threads = atoi(val);
    else if (!strcmp(a, "--kinds")) kinds = val;
    else { fprintf(stderr, "bench_linear: unknown option %s\n", a); return 2; }
    i++;
  }
  at_set_threads(threads);
  printf("# bench_linear: B=%lld H=%lld K=%lld V=%lld chunk=%lld threads=%d (%s)\n",
         (long long)B, (long long)H, (long long)K, (long long)V, (long long)C, at_threads(),
         AT_REAL_NAME);
  printf("%-18s %-9s %7s %14s %14s %12s\n", "op", "form", "T", "fwd tok/s", "fwd+bwd tok/s",
         "fwd+bwd ms");
  char list[256];
  snprintf(list, sizeof list, "%s", kinds);
  for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
    int kind = at_lin_kind_from_name(name);
    if (kind < 0) {
      fprintf(stderr, "bench_linear: unknown op %s\n", name);
      return 2;
    }
    for (int form = 0; form < 1 + recurrent; form++)
      for (int64_t T = 256; T <= tmax; T *= 2) {
        at_lin_form f = form ? AT_LIN_RECURRENT : AT_LIN_CHUNK;
        double tf = time_op((at_lin_kind)kind, f, B, T, H, K, V, C, 0);
        double tb = time_op((at_lin_kind)kind, f, B, T, H, K, V, C, 1);
        printf("%-18s %-9s %7lld %14.0f %14.0f %12.2f\n", name, form ? "recurrent" : "chunk",
               (long long)T, (double)(B * T) / tf, (double)(B * T) / tb, tb * 1e3);
        fflush(stdout);
      }
  }
  return 0;
}
