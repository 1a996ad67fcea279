/* experiments/kv_compression.yaml and experiments/dsa_two_stage.yaml load,
 * build their models, match non-embedding parameter counts within 0.1%
 * (kv_compression; dsa_two_stage's recency control against the DSA models'
 * main part), have the documented KV caches, and the DSA recipe's stages;
 * experiments/sparse_patterns.yaml's runs have equal parameters and the
 * documented visible keys per query (its header's budget table). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "experiments/config.h"
#include "mla_testing.h"
#include "models/model.h"
#include "models/softmax_layer.h"

static at_experiment *load(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/experiments/%s", AT_SOURCE_DIR, name);
  at_experiment *e = NULL;
  at_status st = at_experiment_load(path, NULL, 0, &e);
  cr_assert(st == AT_OK, "%s", at_errmsg());
  return e;
}

typedef struct built {
  int64_t non_emb, cache, indexer;
} built;

static built build(const at_run_cfg *rc) {
  at_model *m = NULL;
  cr_assert(at_model_new(&rc->model, rc->seed, &m) == AT_OK, "%s: %s", rc->name, at_errmsg());
  const at_model_cfg *c = &rc->model;
  int64_t emb = c->vocab_size * c->d_model * (c->tie_embeddings ? 1 : 2);
  built b = {at_model_num_params(m) - emb, at_model_cache_per_token(m), 0};
  for (int i = 0; i < m->params->n; i++)
    if (m->params->list[i].group == AT_GROUP_INDEXER) b.indexer += m->params->list[i].t->size;
  at_model_free(m);
  return b;
}

static const at_run_cfg *run_named(const at_experiment *e, const char *name) {
  for (int i = 0; i < e->n_runs; i++)
    if (!strcmp(e->runs[i].name, name)) return &e->runs[i];
  cr_assert_fail("no run %s", name);
  return NULL;
}

Test(sparse_experiments, kv_compression_matched_parameters_and_caches) {
  at_experiment *e = load("kv_compression.yaml");
  cr_assert_eq(e->n_runs, 10);
  const char *names[] = {"mha seed=0", "gqa seed=0", "mqa seed=0", "mla seed=0", "mla_q seed=0"};
  const int64_t cache[] = {1024, 512, 256, 576, 576};
  built ref = build(run_named(e, names[0]));
  for (int i = 0; i < 5; i++) {
    built b = build(run_named(e, names[i]));
    cr_expect_eq(b.cache, cache[i], "%s: cache %lld", names[i], (long long)b.cache);
    double rel = fabs((double)(b.non_emb - ref.non_emb)) / (double)ref.non_emb;
    cr_expect(rel < 1e-3, "%s: %lld non-embedding parameters vs mha's %lld", names[i],
              (long long)b.non_emb, (long long)ref.non_emb);
  }
  at_experiment_free(e);
}

Test(sparse_experiments, dsa_two_stage_runs_and_stages) {
  at_experiment *e = load("dsa_two_stage.yaml");
  cr_assert_eq(e->n_runs, 8);
  const at_run_cfg *dsa = run_named(e, "dsa data=text"), *dense = run_named(e, "dense data=niah");
  const at_run_cfg *cold = run_named(e, "dsa_cold data=text"), *rec = run_named(e, "recency data=niah");
  /* the recipe */
  const at_train_cfg *t = &dsa->train;
  cr_assert_eq(t->n_stages, 3);
  cr_expect(t->stages[0].trainable == AT_TRAINABLE_ALL && !t->stages[0].sparse && !t->stages[0].indexer_loss);
  cr_expect(t->stages[1].trainable == AT_TRAINABLE_INDEXER && !t->stages[1].sparse && t->stages[1].indexer_loss);
  cr_expect(t->stages[2].trainable == AT_TRAINABLE_ALL && t->stages[2].sparse && t->stages[2].indexer_loss);
  cr_expect(dense->train.n_stages == 3 && !dense->train.stages[2].sparse);
  cr_expect(cold->train.n_stages == 2 && cold->train.stages[1].sparse);
  cr_expect_eq(cold->train.stages[0].steps, t->stages[0].steps + t->stages[1].steps);
  cr_expect(rec->train.n_stages == 2 && !rec->train.stages[1].sparse);
  /* k = T / 8; the recency control's window is k */
  const at_model_cfg *m = &dsa->model;
  cr_expect_eq(MLA_OPTS(m, MIXER(dsa))->topk * 8, dsa->data.seq_len);
  cr_expect_eq((int64_t)get_opt(&rec->model, MIXER(full), "window"), MLA_OPTS(m, MIXER(dsa))->topk);
  cr_expect_eq(rec->model.layers[0], MIXER(full));
  cr_expect_eq(rec->data.kind, AT_TASK_NIAH);
  /* parameters: DSA = MLA main part + indexer; recency's MHA matched to the main part */
  built bd = build(dsa), br = build(run_named(e, "recency data=text"));
  cr_expect(bd.indexer > 0);
  double rel = fabs((double)(bd.non_emb - bd.indexer - br.non_emb)) / (double)br.non_emb;
  cr_expect(rel < 1e-3, "dsa main %lld vs recency %lld", (long long)(bd.non_emb - bd.indexer),
            (long long)br.non_emb);
  cr_expect_eq(bd.cache, 4 * (128 + 16 + 16));
  at_experiment_free(e);
}

/* Visible (query, key) pairs per query, averaged over the layers and heads
 * of a model's softmax-layer mixers at T positions. */
static double mean_visible(const at_model *m, int64_t T) {
  at_ctx *c = at_ctx_new(0);
  double pairs = 0;
  int64_t HQ = m->cfg.n_heads;
  for (int l = 0; l < m->cfg.n_layers; l++) {
    const at_block *b = &m->blocks[l];
    at_attn_layout *L = at_softmax_mixer_layout(c, b->mixer, b->mixer_state, T);
    cr_assert(L != NULL, "%s", at_errmsg());
    for (int64_t h = 0; h < HQ; h++)
      for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j <= i; j++) pairs += at_attn_layout_visible(L, 0, h, i, j);
  }
  at_ctx_free(c);
  return pairs / (double)(m->cfg.n_layers * HQ * T);
}

Test(sparse_experiments, sparse_patterns_matched_parameters_and_budgets) {
  at_experiment *e = load("sparse_patterns.yaml");
  cr_assert_eq(e->n_runs, 12);
  const char *names[] = {"dense", "window", "st_strided", "st_fixed", "longformer", "bigbird"};
  const double keys[] = {128.5, 30.1, 33.6, 30.5, 28.7, 34.0}; /* the header's table */
  for (int d = 0; d < 2; d++) {
    int64_t ref = -1;
    for (int i = 0; i < 6; i++) {
      char name[64];
      snprintf(name, sizeof name, "%s data=%s", names[i], d ? "niah" : "text");
      const at_run_cfg *rc = run_named(e, name);
      at_model *m = NULL;
      cr_assert(at_model_new(&rc->model, rc->seed, &m) == AT_OK, "%s: %s", name, at_errmsg());
      int64_t n = at_model_num_params(m);
      if (ref < 0) ref = n;
      cr_expect_eq(n, ref, "%s: %lld parameters vs dense's %lld", name, (long long)n, (long long)ref);
      double v = mean_visible(m, rc->data.seq_len);
      cr_expect(fabs(v - keys[i]) < 0.05, "%s: %.3f visible keys per query, documented %.1f", name, v, keys[i]);
      at_model_free(m);
    }
  }
  at_experiment_free(e);
}
