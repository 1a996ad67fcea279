/* models/dsa.c in float: topk >= T makes the sparse layer the dense MLA
 * layer (output and gradients); the dense stage is exactly MLA with the same
 * weights; the indexer's KL reaches only AT_GROUP_INDEXER parameters and the
 * LM loss never reaches them; the statistics; a warm-up stage with
 * everything but the indexer frozen leaves the main parameters bit-identical
 * under AdamW with weight decay, and the sparse stage then moves both. */
#include "mla_testing.h"
#include "optim/optim.h"

/* ---- one layer -------------------------------------------------------------------------- */

static at_tensor *run(at_ctx *c, test_layer *L, at_tensor *x, int sparse, int indexer_loss,
                      at_mixer_io *io_out) {
  at_mixer_io io;
  memset(&io, 0, sizeof io);
  io.stage = (sparse) ? AT_STAGE_SPARSE : 0;
  io.stage |= (indexer_loss) ? AT_STAGE_AUX_LOSS : 0;
  at_tensor *y = L->impl->forward(c, L->state, x, &io);
  cr_assert(y != NULL, "%s", at_errmsg());
  if (io_out) *io_out = io;
  return y;
}

/* Output and gradients (x and main parameters, upstream gradient w) of one
 * forward, copied out. */
typedef struct {
  real *y, *g;
  int64_t ny, ng;
} fwd_result;

static fwd_result forward_backward(at_ctx *c, test_layer *L, at_tensor *x, int sparse) {
  at_params_zero_grad(L->p);
  x->grad = NULL;
  at_ctx_mark mark = at_ctx_get_mark(c); /* the tape holds only this forward */
  at_tensor *y = run(c, L, x, sparse, 0, NULL);
  real *g = at_grad(c, y);
  for (int64_t i = 0; i < y->size; i++) g[i] = (real)sin(0.37 * (double)i);
  cr_assert(at_backward_from_seeded(c) == AT_OK, "%s", at_errmsg());
  fwd_result r = {malloc((size_t)y->size * sizeof(real)), malloc((size_t)(x->size + L->p->total) * sizeof(real)),
                  y->size, x->size + L->p->total};
  memcpy(r.y, y->data, (size_t)y->size * sizeof(real));
  memcpy(r.g, x->grad, (size_t)x->size * sizeof(real));
  memcpy(r.g + x->size, L->p->grad, (size_t)L->p->total * sizeof(real));
  at_ctx_rewind(c, mark);
  x->grad = NULL;
  return r;
}

Test(dsa_layer, topk_at_least_T_is_dense_mla) {
  at_ctx *c = at_ctx_new(0);
  const int64_t T = 19, ks[2] = {19, 40};
  for (int i = 0; i < 2; i++) {
    mla_sizes z = {.d = 16, .h = 2, .hd = 8, .dr = 4, .dc = 12, .dq = 10, .hi = 2, .di = 8, .topk = ks[i]};
    at_model_cfg cfg = mla_cfg(&z);
    test_layer L = test_layer_new(&cfg, MIXER(dsa), 3);
    randomize_params(L.p, 3);
    at_tensor *x = AT_RANDN(c, 4, 1.0, 2, T, 16);
    fwd_result dense = forward_backward(c, &L, x, 0), sparse = forward_backward(c, &L, x, 1);
    AT_EXPECT_CLOSE(sparse.y, dense.y, dense.ny, 1e-5, "topk >= T output");
    AT_EXPECT_CLOSE(sparse.g, dense.g, dense.ng, 1e-5, "topk >= T gradients");
    free(dense.y), free(dense.g), free(sparse.y), free(sparse.g);
    test_layer_free(&L);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

Test(dsa_layer, dense_stage_is_mla_with_the_same_weights) {
  at_ctx *c = at_ctx_new(0);
  mla_sizes z = {.d = 16, .h = 2, .hd = 8, .dr = 4, .dc = 12, .dq = 10, .hi = 2, .di = 8, .topk = 4};
  at_model_cfg cfg = mla_cfg(&z);
  test_layer D = test_layer_new(&cfg, MIXER(dsa), 5), M = test_layer_new(&cfg, MIXER(mla), 6);
  randomize_params(D.p, 5);
  /* copy the main weights by name into the MLA layer */
  int copied = 0;
  for (int i = 0; i < M.p->n; i++) {
    at_param *pd = at_params_find(D.p, M.p->list[i].name);
    cr_assert(pd != NULL, "the DSA layer has no %s", M.p->list[i].name);
    cr_assert_eq(pd->group, AT_GROUP_MAIN);
    memcpy(M.p->list[i].t->data, pd->t->data, (size_t)pd->t->size * sizeof(real));
    copied++;
  }
  cr_expect_eq(copied, 9);
  cr_expect_eq(D.p->total - M.p->total, 2 * 8 * 10 + 8 * 16 + 2 * 8 + 2 * 16, "indexer parameter count");
  at_tensor *x = AT_RANDN(c, 7, 1.0, 2, 11, 16);
  x->requires_grad = 0;
  at_tensor *yd = run(c, &D, x, 0, 1, NULL), *ym = run(c, &M, x, 0, 0, NULL);
  cr_expect(at_test_rel_err(yd->data, ym->data, ym->size) == 0, "dense DSA differs from MLA");
  at_tensor *ys = run(c, &D, x, 1, 0, NULL);
  cr_expect(at_test_rel_err(ys->data, ym->data, ym->size) > 1e-3, "topk 4 of 11 changes nothing");
  test_layer_free(&D), test_layer_free(&M);
  at_ctx_free(c);
}

/* ---- a small model ---------------------------------------------------------------------- */

enum { MB = 2, MT = 16, MV = 32 };

static at_model *small_model(int q_rank) {
  mla_sizes z = {.d = 16, .h = 2, .hd = 8, .dr = 4, .dc = 12, .dq = q_rank, .hi = 2, .di = 8, .topk = 4};
  at_model_cfg cfg = mla_cfg(&z);
  cfg.vocab_size = MV, cfg.max_seq_len = MT;
  cfg.n_layers = 3;
  cfg.layers[0] = MIXER(dsa), cfg.layers[1] = MIXER(full), cfg.layers[2] = MIXER(dsa);
  cfg.mlp_hidden = 32;
  cfg.init_std = 0.2; /* larger than 0.02, so attention is far from uniform */
  at_model *m = NULL;
  cr_assert(at_model_new(&cfg, 11, &m) == AT_OK, "%s", at_errmsg());
  cr_assert(at_model_has_group(m, AT_GROUP_INDEXER));
  return m;
}

static void batch(at_ctx *c, at_itensor **tok, at_itensor **lab) {
  *tok = at_inew(c, AT_SHAPE(MB, MT));
  *lab = at_inew(c, AT_SHAPE(MB, MT));
  cr_assert(*tok && *lab);
  for (int i = 0; i < MB * MT; i++) (*tok)->data[i] = (i * 7 + i / 5) % MV;
  for (int i = 0; i < MB * MT; i++) (*lab)->data[i] = (i + 1) % MT == 0 ? AT_IGNORE_LABEL : (*tok)->data[i + 1];
}

/* Max |grad| over the parameters of a group. */
static double max_grad(const at_params *p, int group) {
  double m = 0;
  for (int i = 0; i < p->n; i++)
    if (p->list[i].group == group)
      for (int64_t j = 0; j < p->list[i].t->size; j++) m = fmax(m, fabs((double)p->grad[p->list[i].offset + j]));
  return m;
}

/* Min over the indexer parameters of max |grad| (every one gets a gradient). */
static double min_param_grad(const at_params *p, int group) {
  double m = INFINITY;
  for (int i = 0; i < p->n; i++)
    if (p->list[i].group == group) {
      double a = 0;
      for (int64_t j = 0; j < p->list[i].t->size; j++) a = fmax(a, fabs((double)p->grad[p->list[i].offset + j]));
      m = fmin(m, a);
    }
  return m;
}

Test(dsa_model, kl_gradient_reaches_only_the_indexer) {
  at_ctx *c = at_ctx_new(0);
  for (int q_rank = 0; q_rank <= 8; q_rank += 8)
    for (int sparse = 0; sparse <= 1; sparse++) {
      at_model *m = small_model(q_rank);
      at_itensor *tok, *lab;
      batch(c, &tok, &lab);
      unsigned mode = stage_of(sparse, 1);
      at_mixer_io io;
      double lm = 0;
      at_tensor *loss = at_model_train_loss(c, m, tok, lab, mode, &io, &lm, NULL, NULL);
      cr_assert(loss != NULL, "%s", at_errmsg());
      cr_assert(io.aux_loss != NULL);
      cr_expect_eq(stat_n(&io, "indexer_kl"), 2);
      cr_expect(stat_sum(&io, "indexer_kl") > 0 && isfinite(stat_sum(&io, "indexer_kl")), "kl %g", stat_sum(&io, "indexer_kl"));
      cr_expect(fabs(io.aux_loss->data[0] - stat_sum(&io, "indexer_kl")) < 1e-5 * stat_sum(&io, "indexer_kl"), "aux loss %g vs kl %g",
                io.aux_loss->data[0], stat_sum(&io, "indexer_kl"));
      cr_expect(stat_sum(&io, "topk_recall") > 0 && stat_sum(&io, "topk_recall") < 2, "recall sum of 2 layers %g", stat_sum(&io, "topk_recall"));
      cr_expect(fabs(loss->data[0] - (lm + io.aux_loss->data[0])) < 1e-5, "total = lm + aux");
      at_params_zero_grad(m->params);
      cr_assert(at_backward(c, io.aux_loss) == AT_OK, "%s", at_errmsg());
      cr_expect(max_grad(m->params, AT_GROUP_MAIN) == 0, "q_rank %d sparse %d: the KL reached the main model (%g)",
                q_rank, sparse, max_grad(m->params, AT_GROUP_MAIN));
      cr_expect(min_param_grad(m->params, AT_GROUP_INDEXER) > 0, "q_rank %d sparse %d: an indexer parameter got no KL gradient",
                q_rank, sparse);
      at_model_free(m);
      at_ctx_reset(c);
    }
  at_ctx_free(c);
}

Test(dsa_model, lm_loss_gives_the_indexer_no_gradient) {
  at_ctx *c = at_ctx_new(0);
  for (int sparse = 0; sparse <= 1; sparse++) {
    at_model *m = small_model(8);
    at_itensor *tok, *lab;
    batch(c, &tok, &lab);
    unsigned mode = stage_of(sparse, 0);
    at_mixer_io io;
    at_tensor *loss = at_model_train_loss(c, m, tok, lab, mode, &io, NULL, NULL, NULL);
    cr_assert(loss != NULL, "%s", at_errmsg());
    cr_expect(io.aux_loss == NULL && stat_n(&io, "indexer_kl") == 0);
    at_params_zero_grad(m->params);
    cr_assert(at_backward(c, loss) == AT_OK, "%s", at_errmsg());
    cr_expect(max_grad(m->params, AT_GROUP_INDEXER) == 0, "sparse %d: the LM loss reached the indexer", sparse);
    cr_expect(max_grad(m->params, AT_GROUP_MAIN) > 0);
    at_model_free(m);
    at_ctx_reset(c);
  }
  at_ctx_free(c);
}

Test(dsa_model, indexer_loss_leaves_the_lm_loss_unchanged) {
  at_ctx *c = at_ctx_new(0);
  at_model *m = small_model(8);
  at_itensor *tok, *lab;
  batch(c, &tok, &lab);
  for (int sparse = 0; sparse <= 1; sparse++) {
    unsigned off = stage_of(sparse, 0), on = stage_of(sparse, 1);
    double lm_off, lm_on;
    at_tensor *l0 = at_model_train_loss(c, m, tok, lab, off, NULL, &lm_off, NULL, NULL);
    at_tensor *l1 = at_model_train_loss(c, m, tok, lab, on, NULL, &lm_on, NULL, NULL);
    cr_assert(l0 && l1, "%s", at_errmsg());
    cr_expect(lm_off == lm_on && l0->data[0] == lm_off, "sparse %d: lm %g vs %g", sparse, lm_off, lm_on);
    cr_expect(l1->data[0] > lm_on, "the KL is added");
  }
  /* sparse mode changes the LM loss (topk 4 of 16) */
  unsigned d = stage_of(0, 0), s = stage_of(1, 0);
  double lm_d, lm_s;
  at_model_train_loss(c, m, tok, lab, d, NULL, &lm_d, NULL, NULL);
  at_model_train_loss(c, m, tok, lab, s, NULL, &lm_s, NULL, NULL);
  cr_expect(lm_d != lm_s);
  at_model_free(m);
  at_ctx_free(c);
}

Test(dsa_model, recall_is_one_when_topk_covers_every_key) {
  at_ctx *c = at_ctx_new(0);
  mla_sizes z = {.d = 16, .h = 2, .hd = 8, .dr = 4, .dc = 12, .hi = 2, .di = 8, .topk = MT};
  at_model_cfg cfg = mla_cfg(&z);
  cfg.vocab_size = MV, cfg.max_seq_len = MT, cfg.n_layers = 1, cfg.layers[0] = MIXER(dsa);
  at_model *m = NULL;
  cr_assert(at_model_new(&cfg, 3, &m) == AT_OK, "%s", at_errmsg());
  at_itensor *tok, *lab;
  batch(c, &tok, &lab);
  double kl_dense = 0;
  for (int sparse = 0; sparse <= 1; sparse++) {
    unsigned mode = stage_of(sparse, 1);
    at_mixer_io io;
    cr_assert(at_model_train_loss(c, m, tok, lab, mode, &io, NULL, NULL, NULL) != NULL, "%s", at_errmsg());
    cr_expect_eq(stat_n(&io, "indexer_kl"), 1);
    cr_expect(fabs(stat_sum(&io, "topk_recall") - 1) < 1e-5, "sparse %d: recall %g", sparse, stat_sum(&io, "topk_recall"));
    /* sparse stage over every key: the renormalised KL is the dense one */
    if (sparse == 0) kl_dense = stat_sum(&io, "indexer_kl");
    else cr_expect(fabs(stat_sum(&io, "indexer_kl") - kl_dense) < 1e-5 * kl_dense, "kl %g vs %g", stat_sum(&io, "indexer_kl"), kl_dense);
    cr_expect(stat_sum(&io, "indexer_kl") > 0);
  }
  at_model_free(m);
  at_ctx_free(c);
}

/* ---- stages with the optimiser ---------------------------------------------------------- */

static real *snapshot(const at_params *p) {
  real *s = malloc((size_t)p->total * sizeof(real));
  memcpy(s, p->data, (size_t)p->total * sizeof(real));
  return s;
}

/* Bytes of the group's parameters that differ from the snapshot. */
static int64_t changed(const at_params *p, const real *snap, int group) {
  int64_t n = 0;
  for (int i = 0; i < p->n; i++)
    if (p->list[i].group == group)
      for (int64_t j = 0; j < p->list[i].t->size; j++) {
        int64_t o = p->list[i].offset + j;
        n += memcmp(&p->data[o], &snap[o], sizeof(real)) != 0;
      }
  return n;
}

static void steps(at_ctx *c, at_model *m, at_optim *o, unsigned mode, int n) {
  for (int s = 0; s < n; s++) {
    at_ctx_reset(c);
    at_params_zero_grad(m->params);
    at_itensor *tok, *lab;
    batch(c, &tok, &lab);
    at_mixer_io io;
    at_tensor *loss = at_model_train_loss(c, m, tok, lab, mode, &io, NULL, NULL, NULL);
    cr_assert(loss != NULL, "%s", at_errmsg());
    cr_assert(at_backward(c, loss) == AT_OK, "%s", at_errmsg());
    at_step_info info;
    cr_assert(at_optim_step(o, &info) == AT_OK, "%s", at_errmsg());
    cr_assert(!info.skipped);
  }
}

Test(dsa_model, warmup_freezes_the_main_model_then_sparse_trains_all) {
  at_ctx *c = at_ctx_new(0);
  at_model *m = small_model(8);
  at_params *p = m->params;
  at_optim_cfg oc;
  at_optim_cfg_defaults(&oc);
  oc.kind = AT_OPT_ADAMW, oc.lr = 1e-2, oc.weight_decay = 0.1, oc.grad_clip = 1.0;
  at_optim *o = NULL;
  cr_assert(at_optim_new(&oc, p, &o) == AT_OK, "%s", at_errmsg());

  /* warm-up: only the indexer trains, by the dense KL */
  at_params_set_trainable(p, -1, 0);
  at_params_set_trainable(p, AT_GROUP_INDEXER, 1);
  real *s0 = snapshot(p);
  steps(c, m, o, stage_of(0, 1), 3);
  cr_expect_eq(changed(p, s0, AT_GROUP_MAIN), 0, "a frozen main parameter changed in the warm-up");
  int64_t n_idx = 0;
  for (int i = 0; i < p->n; i++) n_idx += p->list[i].group == AT_GROUP_INDEXER ? p->list[i].t->size : 0;
  cr_expect(changed(p, s0, AT_GROUP_INDEXER) > n_idx / 2, "the indexer barely moved (%lld of %lld)",
            (long long)changed(p, s0, AT_GROUP_INDEXER), (long long)n_idx);

  /* sparse stage: everything trains (LM + sparse KL) */
  at_params_set_trainable(p, -1, 1);
  real *s1 = snapshot(p);
  steps(c, m, o, stage_of(1, 1), 2);
  cr_expect(changed(p, s1, AT_GROUP_MAIN) > 0 && changed(p, s1, AT_GROUP_INDEXER) > 0);

  /* trainable: main with the indexer frozen leaves it bit-identical */
  at_params_set_trainable(p, AT_GROUP_INDEXER, 0);
  real *s2 = snapshot(p);
  steps(c, m, o, stage_of(1, 0), 2);
  cr_expect_eq(changed(p, s2, AT_GROUP_INDEXER), 0);
  cr_expect(changed(p, s2, AT_GROUP_MAIN) > 0);
  free(s0), free(s1), free(s2);
  at_optim_free(o);
  at_model_free(m);
  at_ctx_free(c);
}
