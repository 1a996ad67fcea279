/* tests/linlearn_testing.h: a tiny model per linear mixer learns multi-
 * query associative recall (test_learn_<mixer>.c, one suite each):
 * vocab 64, T 32, 2 key-value pairs (Zoology layout), d_model 32, one head,
 * 2 layers of the mixer, no MLP, chunk 64, AdamW lr 3e-3 with cosine decay,
 * batch 16, 500 steps, trained in process with the model, data and
 * optimiser APIs; the test takes the median test accuracy of 3 seeds.
 * Chance accuracy on the queried values is 1/32; a loss of ln 32 = 3.47 is
 * what knowing only that the answer is some value gives.
 *
 * Measured (release; seeds 0-7 x BLIS skx, haswell, zen3; 1 and 2 threads
 * give the same bits): kda 0.988-1.000, gdn 0.988-1.000, deltanet 1.000
 * except seed 1 at 0.766, mamba2 0.422-0.516 (MQAR at d_model 32 is hard for
 * Mamba-2, as in Zoology); last losses at most 0.44 (mamba2 1.65). At this
 * learning rate a seed's accuracy is the same on every kernel set to 3
 * digits; the earlier lr 1e-2 x 250 steps spread one seed of kda over
 * 0.32-0.95 by rounding alone. Thresholds: median > 0.5 (> 0.1 for mamba2). */
#ifndef AT_LINLEARN_TESTING_H
#define AT_LINLEARN_TESTING_H

#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "mixer_testing.h"
#include "models/model.h"
#include "optim/optim.h"
#include "testing.h"

typedef struct learn_result {
  double first_loss, last_loss, accuracy;
} learn_result;

/* Mean loss over the first / last 10 steps and test accuracy. */
static inline learn_result train_mqar(at_mixer_kind kind, uint64_t seed, int64_t steps,
                                      int64_t batch, double lr) {
  at_task_cfg tc;
  at_task_cfg_defaults(&tc, AT_TASK_MQAR);
  tc.seed = 5 + seed;
  tc.vocab_size = 64;
  tc.seq_len = 32;
  tc.num_kv_pairs = 2;
  tc.train_examples = 4000;
  tc.test_examples = 128;
  tc.random_non_queries = 0;
  at_task *task = NULL;
  cr_assert(at_task_open(&tc, &task) == AT_OK, "%s", at_errmsg());

  at_model_cfg mc;
  at_model_cfg_defaults(&mc);
  mc.vocab_size = tc.vocab_size;
  mc.max_seq_len = tc.seq_len;
  mc.d_model = 32;
  mc.n_heads = mc.n_kv_heads = 1;
  mc.n_layers = 2;
  mc.mlp = AT_MLP_NONE;
  mc.position = AT_POS_NOPE;
  mc.layers[0] = mc.layers[1] = kind;
  set_opt(&mc, kind, "chunk_size", 64);
  if (!isnan(get_opt(&mc, kind, "head_dim"))) /* gla has none (its dims follow expand_k, expand_v) */
    set_opt(&mc, kind, "head_dim", kind == MIXER(mamba2) ? 32 : 0); /* mamba2: 2 heads of 32 */
  at_model *m = NULL;
  cr_assert(at_model_new(&mc, 1 + seed, &m) == AT_OK, "%s", at_errmsg());

  at_optim_cfg oc;
  at_optim_cfg_defaults(&oc);
  oc.lr = lr;
  oc.beta2 = 0.95;
  oc.weight_decay = 0.1;
  oc.grad_clip = 1.0;
  oc.schedule = AT_SCHED_COSINE;
  oc.warmup_steps = 10;
  oc.total_steps = steps;
  at_optim *opt = NULL;
  cr_assert(at_optim_new(&oc, m->params, &opt) == AT_OK, "%s", at_errmsg());

  at_ctx *c = at_ctx_new(64 << 20);
  int64_t T = tc.seq_len;
  at_itensor *tok = NULL, *lab = NULL;
  learn_result r = {0, 0, 0};
  for (int64_t step = 0; step < steps; step++) {
    tok = at_inew(c, AT_SHAPE(batch, T));
    lab = at_inew(c, AT_SHAPE(batch, T));
    at_task_batch(task, AT_SPLIT_TRAIN, step * batch, batch, tok->data, lab->data, NULL);
    at_tensor *loss = at_model_loss(c, m, tok, lab, NULL, NULL);
    cr_assert(loss != NULL, "%s step %lld: %s", at_mixer_name(kind), (long long)step, at_errmsg());
    double lv = loss->data[0];
    cr_assert(isfinite(lv), "%s step %lld: loss %g", at_mixer_name(kind), (long long)step, lv);
    if (step < 10) r.first_loss += lv / 10;
    if (step >= steps - 10) r.last_loss += lv / 10;
    at_params_zero_grad(m->params);
    cr_assert(at_backward(c, loss) == AT_OK, "%s", at_errmsg());
    at_step_info info;
    cr_assert(at_optim_step(opt, &info) == AT_OK);
    cr_assert(!info.skipped, "%s step %lld: non-finite gradient", at_mixer_name(kind), (long long)step);
    at_ctx_reset(c);
  }
  /* held-out accuracy on the labelled (query) positions */
  int64_t n_test = at_task_size(task, AT_SPLIT_TEST), lab_n = 0, cor_n = 0;
  at_no_grad_begin(c);
  for (int64_t first = 0; first < n_test; first += batch) {
    int64_t b = AT_MIN(batch, n_test - first), nl = 0, nc = 0;
    tok = at_inew(c, AT_SHAPE(b, T));
    lab = at_inew(c, AT_SHAPE(b, T));
    at_task_batch(task, AT_SPLIT_TEST, first, b, tok->data, lab->data, NULL);
    cr_assert(at_model_loss(c, m, tok, lab, &nl, &nc) != NULL);
    lab_n += nl, cor_n += nc;
    at_ctx_reset(c);
  }
  at_no_grad_end(c);
  r.accuracy = (double)cor_n / (double)lab_n;
  at_ctx_free(c);
  at_optim_free(opt);
  at_model_free(m);
  at_task_free(task);
  cr_log_info("%s seed %llu: loss %.3f -> %.3f, test accuracy %.3f", at_mixer_name(kind),
              (unsigned long long)seed, r.first_loss, r.last_loss, r.accuracy);
  return r;
}

/* Under AddressSanitizer (the debug build: -O1 kernels, several times
 * slower) only the first 40 steps of seed 0 run at lr 1e-2 and the training
 * loss must fall by 0.3 (measured 0.51-0.72 for seed 0, 0.44-0.72 over
 * seeds 0-2 and the three kernel sets): the sanitizers check the whole
 * training path, the release build checks the learning. */
#if defined(__SANITIZE_ADDRESS__)
#define AT_LEARN_SHORT 1
#else
#define AT_LEARN_SHORT 0
#endif

static inline double median3(double a, double b, double c) { return AT_MAX(AT_MIN(a, b), AT_MIN(AT_MAX(a, b), c)); }

/* Trains seeds 0-2 for `steps` at `lr`: the median final training loss
 * under max_loss and the median test accuracy over min_acc (a median, so
 * that one seed's rounding on another BLIS kernel set cannot flip it). */
static inline void expect_learns_at(at_mixer_kind kind, int64_t steps, double lr, double max_loss,
                                    double min_acc) {
  learn_result r[3];
  for (int s = 0; s < 3; s++) r[s] = train_mqar(kind, (uint64_t)s, steps, 16, lr);
  double loss = median3(r[0].last_loss, r[1].last_loss, r[2].last_loss);
  double acc = median3(r[0].accuracy, r[1].accuracy, r[2].accuracy);
  cr_expect(loss < max_loss, "%s: median training loss %.3f (seeds: %.3f -> %.3f, %.3f -> %.3f, %.3f -> %.3f)",
            at_mixer_name(kind), loss, r[0].first_loss, r[0].last_loss, r[1].first_loss, r[1].last_loss,
            r[2].first_loss, r[2].last_loss);
  cr_expect(acc > min_acc, "%s: median test accuracy %.3f (seeds: %.3f %.3f %.3f; chance 1/32)", at_mixer_name(kind),
            acc, r[0].accuracy, r[1].accuracy, r[2].accuracy);
}

static inline void expect_learns(at_mixer_kind kind, double min_acc) {
  if (AT_LEARN_SHORT) {
    learn_result r = train_mqar(kind, 0, 40, 16, 1e-2);
    cr_expect(r.last_loss < r.first_loss - 0.3, "%s: training loss %.3f -> %.3f in 40 steps",
              at_mixer_name(kind), r.first_loss, r.last_loss);
    return;
  }
  /* ln 32 = 3.47: what knowing only that the answer is some value gives */
  expect_learns_at(kind, 500, 3e-3, 2.9, min_acc);
}

#endif
