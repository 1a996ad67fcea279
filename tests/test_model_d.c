/* models/model.c in double: the training loss sends only the labelled rows
 * through the LM head when at most half the positions carry a label; the loss,
 * the counts and every parameter gradient equal those of cross-entropy over
 * the full logits. */
#include <string.h>

#include "models/model.h"
#include "ops/ops.h"
#include "testing.h"

typedef struct {
  double loss;
  int64_t n_lab, n_cor;
  real *grad;
} loss_out;

static loss_out run(at_model *m, const at_itensor *tok, const at_itensor *lab, int via_logits) {
  at_ctx *c = at_ctx_new(0);
  at_params_zero_grad(m->params);
  loss_out o = {0};
  at_tensor *loss = via_logits
                        ? at_cross_entropy(c, at_model_logits(c, m, tok), lab, AT_IGNORE_LABEL,
                                           &o.n_lab, &o.n_cor)
                        : at_model_loss(c, m, tok, lab, &o.n_lab, &o.n_cor);
  cr_assert(loss != NULL, "%s", at_errmsg());
  cr_assert(at_backward(c, loss) == AT_OK, "%s", at_errmsg());
  o.loss = loss->data[0];
  o.grad = malloc((size_t)m->params->total * sizeof(real));
  memcpy(o.grad, m->params->grad, (size_t)m->params->total * sizeof(real));
  at_ctx_free(c);
  return o;
}

Test(model_d, labelled_rows_only_through_the_head) {
  at_model_cfg cfg;
  at_model_cfg_defaults(&cfg);
  cfg.vocab_size = 29, cfg.max_seq_len = 16, cfg.d_model = 16, cfg.n_heads = 2, cfg.n_kv_heads = 2;
  cfg.n_layers = 2;
  const int64_t B = 3, T = 11;
  for (int tied = 0; tied < 2; tied++) {
    cfg.tie_embeddings = tied;
    at_model *m;
    cr_assert(at_model_new(&cfg, 5, &m) == AT_OK, "%s", at_errmsg());
    at_ctx *c = at_ctx_new(0);
    at_itensor *tok = at_inew(c, AT_SHAPE(B, T)), *lab = at_inew(c, AT_SHAPE(B, T));
    /* sparse: 3 labels of 33 (the gathered path); dense: 30 of 33 (the full head) */
    for (int dense = 0; dense < 2; dense++) {
      for (int64_t i = 0; i < B * T; i++) {
        tok->data[i] = (i * 7 + 3) % 29;
        lab->data[i] = (dense ? i % 11 != 4 : i % 11 == 9) ? (i * 5 + 1) % 29 : AT_IGNORE_LABEL;
      }
      loss_out a = run(m, tok, lab, 0), b = run(m, tok, lab, 1);
      cr_expect(fabs(a.loss - b.loss) < 1e-12 * fabs(b.loss), "loss %.17g vs %.17g", a.loss, b.loss);
      cr_expect(a.n_lab == b.n_lab && a.n_cor == b.n_cor && a.n_lab == (dense ? 30 : 3));
      double e = at_test_rel_err(a.grad, b.grad, m->params->total);
      cr_expect(e < 1e-12, "tied %d dense %d: gradients differ by %.3g", tied, dense, e);
      cr_expect(at_all_finite(a.grad, m->params->total));
      free(a.grad), free(b.grad);
    }
    at_ctx_free(c);
    at_model_free(m);
  }
}
