/* models/sample.c: sampling a token from logits (models/generate.h):
 *
 *   p_i ∝ exp((z_i - max z) / temperature)       over the kept set, where
 *   kept = the top_k largest z (all when top_k = 0 or >= V), then the
 *          shortest prefix of them, by decreasing p, whose mass reaches
 *          top_p (computed on the top-k renormalised distribution)
 *
 * Ranks break ties by the lower id, so the kept set is a function of the
 * logits alone. Temperature 0 keeps the argmax only.
 */
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"
#include "models/generate.h"

at_status at_sampler_init(at_sampler *s, int64_t V, const at_sample_opts *o, uint64_t seed) {
  *s = (at_sampler){0};
  if (V < 1) return at_error(AT_E_ARG, "sampler: vocabulary of %lld tokens", (long long)V);
  if (!(o->temperature >= 0) || !isfinite(o->temperature))
    return at_error(AT_E_ARG, "sampler: temperature %g must be >= 0 (0: greedy)", o->temperature);
  if (o->top_k < 0) return at_error(AT_E_ARG, "sampler: top_k %lld must be >= 0 (0: all)", (long long)o->top_k);
  if (!(o->top_p > 0 && o->top_p <= 1)) return at_error(AT_E_ARG, "sampler: top_p %g must be in (0, 1]", o->top_p);
  s->o = *o, s->V = V, s->seed = seed;
  s->probs = malloc((size_t)V * sizeof *s->probs);
  s->order = malloc((size_t)V * sizeof *s->order);
  if (!s->probs || !s->order) {
    at_sampler_free(s);
    return at_error(AT_E_NOMEM, "sampler: out of memory");
  }
  return AT_OK;
}

void at_sampler_free(at_sampler *s) {
  free(s->probs), free(s->order);
  s->probs = NULL, s->order = NULL;
}

/* Larger logit first, then the lower id. */
static int by_logit(const void *a, const void *b) {
  const at_sample_rank *x = a, *y = b;
  if (x->z != y->z) return x->z > y->z ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

/* The argmax, ties to the lowest id (NaN never wins). */
static int64_t argmax(const real *z, int64_t V) {
  int64_t a = 0;
  for (int64_t i = 1; i < V; i++)
    if (z[i] > z[a] || (z[a] != z[a] && z[i] == z[i])) a = i;
  return a;
}

void at_sample_probs(at_sampler *s, const real *z) {
  int64_t V = s->V;
  double *p = s->probs;
  for (int64_t i = 0; i < V; i++) p[i] = 0;
  if (s->o.temperature == 0) {
    p[argmax(z, V)] = 1;
    return;
  }
  at_sample_rank *ord = s->order;
  for (int64_t i = 0; i < V; i++) ord[i] = (at_sample_rank){(double)z[i], i};
  qsort(ord, (size_t)V, sizeof *ord, by_logit);
  int64_t keep = s->o.top_k > 0 && s->o.top_k < V ? s->o.top_k : V;
  double mx = ord[0].z, sum = 0;
  for (int64_t r = 0; r < keep; r++) sum += p[ord[r].id] = exp((ord[r].z - mx) / s->o.temperature);
  if (s->o.top_p < 1) { /* the shortest prefix reaching top_p of the top-k mass */
    double acc = 0;
    int64_t r = 0;
    while (r < keep && acc < s->o.top_p * sum) acc += p[ord[r++].id];
    for (int64_t q = r; q < keep; q++) p[ord[q].id] = 0;
    keep = r, sum = acc;
  }
  for (int64_t r = 0; r < keep; r++) p[ord[r].id] /= sum;
}

int32_t at_sample(at_sampler *s, const real *z) {
  at_sample_probs(s, z);
  at_rng r = at_rng_make(s->seed, at_stream_of("sample"));
  r.position = 2 * s->draws++; /* at_rng_uniform reads two 32-bit outputs */
  double u = at_rng_uniform(&r), acc = 0;
  int64_t last = 0;
  for (int64_t i = 0; i < s->V; i++) {
    if (s->probs[i] <= 0) continue;
    last = i;
    acc += s->probs[i];
    if (u < acc) return (int32_t)i;
  }
  return (int32_t)last; /* u beyond the rounded total: the last kept token */
}
