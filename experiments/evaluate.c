/* experiments/evaluate.c: evaluating a run's model on its test split and
 * its further test sets (data.eval), the text sample, and
 * `train --eval-only` (evaluating the checkpoints of finished runs). */
#define _POSIX_C_SOURCE 200809L
#include "experiments/evaluate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/threads.h"
#include "experiments/restore.h"
#include "experiments/runner.h"
#include "experiments/schema.h"
#include "models/generate.h"
#include "optim/checkpoint.h"

at_status at_evaluate(at_ctx *c, at_model *m, at_task *task, int64_t T, int64_t n, int64_t batch, unsigned stage,
                      at_eval_result *r) {
  int64_t BT = batch * T;
  int ng = AT_MIN(at_task_num_groups(task), AT_EVAL_MAX_GROUPS);
  double loss_sum = 0;
  int64_t labelled = 0, correct = 0, g_lab[AT_EVAL_MAX_GROUPS] = {0}, g_cor[AT_EVAL_MAX_GROUPS] = {0};
  int32_t *tok = malloc((size_t)BT * sizeof *tok), *lab = malloc((size_t)BT * sizeof *lab);
  int32_t *grp = malloc((size_t)batch * sizeof *grp);
  double *loss = malloc((size_t)BT * sizeof *loss);
  uint8_t *ok = malloc((size_t)BT);
  at_status st = (tok && lab && grp && loss && ok) ? AT_OK : at_error(AT_E_NOMEM, "out of memory");
  for (int64_t first = 0; st == AT_OK && first < n; first += batch) {
    int64_t b = AT_MIN(batch, n - first);
    at_task_batch(task, AT_SPLIT_TEST, first, b, tok, lab, grp);
    at_itensor *ti = at_inew(c, AT_SHAPE(b, T)), *li = at_inew(c, AT_SHAPE(b, T));
    if (!ti || !li) {
      st = at_error_prefix(at_ctx_status(c), "evaluation");
      break;
    }
    memcpy(ti->data, tok, (size_t)(b * T) * sizeof *tok);
    memcpy(li->data, lab, (size_t)(b * T) * sizeof *lab);
    if ((st = at_model_eval(c, m, ti, li, stage, loss, ok)) != AT_OK) {
      st = at_error_prefix(st, "evaluation");
      break;
    }
    for (int64_t i = 0; i < b * T; i++) {
      if (lab[i] == AT_IGNORE_LABEL) continue;
      loss_sum += loss[i];
      labelled++, correct += ok[i];
      int g = ng > 1 ? grp[i / T] : 0;
      if (g >= 0 && g < ng) g_lab[g]++, g_cor[g] += ok[i];
    }
    at_ctx_reset(c);
  }
  free(tok), free(lab), free(grp), free(loss), free(ok);
  if (st != AT_OK) return st;
  r->loss = labelled ? loss_sum / (double)labelled : NAN;
  r->accuracy = labelled ? (double)correct / (double)labelled : NAN;
  r->n_groups = ng > 1 ? ng : 0;
  for (int g = 0; g < r->n_groups; g++) r->group_accuracy[g] = g_lab[g] ? (double)g_cor[g] / (double)g_lab[g] : NAN;
  return AT_OK;
}

at_status at_results_run_init(at_results_run *rr, const at_model *m, const at_task *task) {
  rr->params = at_model_num_params(m);
  at_status st = at_results_set_num(rr, "cache_bytes_per_token", (double)sizeof(real) * (double)at_model_cache_per_token(m));
  if (st == AT_OK) st = at_results_set_num(rr, "state_bytes", (double)sizeof(real) * (double)at_model_state_elems(m));
  int ng = AT_MIN(at_task_num_groups(task), AT_EVAL_MAX_GROUPS);
  if (st == AT_OK && ng > 1 && rr->n_groups == 0) {
    const char *names[AT_EVAL_MAX_GROUPS];
    for (int g = 0; g < ng; g++) names[g] = at_task_group_name(task, g);
    st = at_results_set_groups(rr, ng, names);
  }
  return st;
}

/* ---- the test sets of data.eval ------------------------------------------------- */

at_status at_eval_sets_open(const at_run_cfg *rc, const char *cache, at_eval_sets *s) {
  memset(s, 0, sizeof *s);
  at_status st = AT_OK;
  for (int i = 0; i < rc->n_evals && st == AT_OK; i++) {
    at_task_cfg dc = rc->evals[i].data;
    if (dc.kind == AT_TASK_TEXT && !dc.cache[0]) {
      int same = !strcmp(dc.path, rc->data.path) && dc.val_fraction == rc->data.val_fraction;
      if (same) snprintf(dc.cache, sizeof dc.cache, "%s", cache);
      else snprintf(dc.cache, sizeof dc.cache, "%.900s.%.40s.h5", cache, rc->evals[i].name);
    }
    at_sbuf b = {0};
    at_cfg_emit_data_flow(&b, &rc->evals[i].data);
    if (b.oom || !(s->config[i] = b.p)) st = at_error(AT_E_NOMEM, "out of memory");
    if (st == AT_OK) st = at_task_open(&dc, &s->task[i]);
    if (st != AT_OK) st = at_error_prefix(st, "test set %s", rc->evals[i].name);
    s->n = i + 1;
  }
  if (st != AT_OK) at_eval_sets_close(s);
  return st;
}

void at_eval_sets_close(at_eval_sets *s) {
  for (int i = 0; i < s->n; i++) at_task_free(s->task[i]), free(s->config[i]);
  memset(s, 0, sizeof *s);
}

/* Names test set `name`'s accuracy groups (the task's, e.g. niah depth
 * buckets) when it is new: a set first logged without them keeps none. */
static at_status evalset_groups(at_results_run *rr, const char *name, const char *config, const at_task *task, int ng) {
  const at_results_evalset *e = at_results_get_evalset(rr, name);
  if (ng == 0 || (e && (e->n_groups || e->n))) return AT_OK;
  const char *names[AT_EVAL_MAX_GROUPS];
  for (int g = 0; g < ng; g++) names[g] = at_task_group_name(task, g);
  return at_results_set_evalset_groups(rr, name, config, ng, names);
}

at_status at_eval_sets_run(at_ctx *c, at_model *m, const at_run_cfg *rc, at_eval_sets *s, int64_t n, unsigned stage,
                           at_results_run *rr, int64_t step, char *line, size_t size) {
  size_t len = 0;
  if (size) line[0] = 0;
  for (int i = 0; i < s->n; i++) {
    at_eval_result er;
    int64_t ni = AT_MIN(n, at_task_size(s->task[i], AT_SPLIT_TEST));
    at_status st = at_evaluate(c, m, s->task[i], rc->evals[i].data.seq_len, ni, rc->train.batch_size, stage, &er);
    if (st == AT_OK) st = evalset_groups(rr, rc->evals[i].name, s->config[i], s->task[i], er.n_groups);
    if (st == AT_OK)
      st = at_results_log_evalset(rr, rc->evals[i].name, s->config[i], step, er.loss, er.accuracy, er.group_accuracy);
    if (st != AT_OK) return at_error_prefix(st, "test set %s", rc->evals[i].name);
    if (len < size) {
      if (rc->evals[i].data.kind == AT_TASK_TEXT)
        len += (size_t)snprintf(line + len, size - len, "  %s: loss %.4f (%.4f bits/byte)", rc->evals[i].name, er.loss,
                                er.loss / log(2.0));
      else
        len += (size_t)snprintf(line + len, size - len, "  %s: loss %.4f accuracy %.2f%%", rc->evals[i].name, er.loss,
                                100 * er.accuracy);
    }
  }
  return AT_OK;
}

/* ---- the text sample ----------------------------------------------------------- */

at_status at_text_sample(at_ctx *c, at_model *m, int64_t n, uint64_t seed, unsigned stage, char **text) {
  *text = NULL;
  at_decoder *d = NULL;
  at_sampler s = {0};
  int32_t prompt = '\n', *out = malloc((size_t)AT_MAX(n, 1) * sizeof *out);
  at_status st = out ? at_decoder_new(m, 1, AT_MAX(n, 1), stage, &d) : at_error(AT_E_NOMEM, "out of memory");
  if (st == AT_OK) st = at_sampler_init(&s, m->cfg.vocab_size, &(at_sample_opts){1.0, 0, 1.0}, seed);
  if (st == AT_OK) st = at_generate(c, d, &prompt, 1, n, &s, out, NULL);
  char *t = st == AT_OK ? malloc((size_t)(4 * n + 1)) : NULL;
  if (st == AT_OK && !t) st = at_error(AT_E_NOMEM, "out of memory");
  if (t) {
    char *p = t;
    for (int64_t i = 0; i < n; i++) {
      int b = out[i];
      if ((b >= 32 && b < 127) || b == '\n' || b == '\t') *p++ = (char)b;
      else p += sprintf(p, "\\x%02X", b & 0xFF);
    }
    *p = 0;
    *text = t;
  }
  at_sampler_free(&s);
  at_decoder_free(d);
  free(out);
  at_ctx_reset(c);
  return st;
}

unsigned at_eval_stage_at(const at_train_cfg *tc, int64_t step) {
  int64_t first = 0;
  for (int i = 0; i < tc->n_stages; i++) {
    const at_stage_cfg *sc = &tc->stages[i];
    if (step < first + sc->steps || i + 1 == tc->n_stages) return sc->sparse ? AT_STAGE_SPARSE : 0u;
    first += sc->steps;
  }
  return 0;
}

/* ---- train --eval-only -------------------------------------------------------------- */

/* Evaluates run rc from its checkpoint into rr: the test split and every
 * test set at the checkpoint's last step (earlier evaluations at or after
 * it are replaced). */
static at_status eval_run(const at_run_cfg *rc, const char *out, const char *ckpt, at_results_run *rr, FILE *out_log) {
  at_task_cfg dc = rc->data;
  char cache[sizeof dc.cache];
  snprintf(cache, sizeof cache, "%.990s/token_cache.h5", out);
  if (dc.kind == AT_TASK_TEXT && !dc.cache[0]) snprintf(dc.cache, sizeof dc.cache, "%s", cache);
  at_task *task = NULL;
  at_model *m = NULL;
  at_ctx *c = NULL;
  at_eval_sets sets = {0};
  at_train_state ts;
  at_train_state_init(&ts);
  at_status st = at_task_open(&dc, &task);
  if (st == AT_OK) st = at_run_model_new(rc, &m);
  if (st == AT_OK) st = at_checkpoint_load(ckpt, m->params, NULL, &ts, NULL);
  if (st == AT_OK) st = at_eval_sets_open(rc, cache, &sets);
  if (st == AT_OK && !(c = at_ctx_new(0))) st = at_error(AT_E_NOMEM, "out of memory");
  if (st == AT_OK) st = at_results_run_init(rr, m, task);
  int64_t step = AT_MAX(ts.step - 1, 0);
  at_eval_result er;
  if (st == AT_OK) {
    m->step = step;
    unsigned stage = at_eval_stage_at(&rc->train, step);
    int64_t n_test = at_task_size(task, AT_SPLIT_TEST);
    int64_t n = rc->train.eval_examples > 0 ? AT_MIN(rc->train.eval_examples, n_test) : n_test;
    at_results_drop_evals(rr, step);
    st = at_evaluate(c, m, task, dc.seq_len, n, rc->train.batch_size, stage, &er);
    if (st == AT_OK) st = at_results_log_eval(rr, step, er.loss, er.accuracy, er.n_groups ? er.group_accuracy : NULL);
    char line[1024];
    if (st == AT_OK) st = at_eval_sets_run(c, m, rc, &sets, rc->train.eval_examples > 0 ? rc->train.eval_examples : INT64_MAX,
                                           stage, rr, step, line, sizeof line);
    if (st == AT_OK) {
      if (dc.kind == AT_TASK_TEXT) {
        at_results_set_num(rr, "bits_per_byte", er.loss / log(2.0));
        fprintf(out_log, "[%s] checkpoint step %lld: loss %.4f (%.4f bits/byte)%s\n", rc->name, (long long)ts.step, er.loss,
                er.loss / log(2.0), line);
      } else {
        fprintf(out_log, "[%s] checkpoint step %lld: loss %.4f accuracy %.2f%%%s\n", rc->name, (long long)ts.step, er.loss,
                100 * er.accuracy, line);
      }
    }
  }
  if (st == AT_OK && !strcmp(rr->status, "running")) { /* a run the results did not know */
    rr->steps = ts.step, rr->skipped_steps = ts.skipped_steps, rr->train_tokens = ts.tokens;
    rr->train_seconds = ts.train_seconds, rr->wall_seconds = ts.wall_seconds;
    if (ts.step >= rc->train.steps) snprintf(rr->status, sizeof rr->status, "ok");
    else snprintf(rr->status, sizeof rr->status, "interrupted: checkpoint at step %lld of %lld", (long long)ts.step,
                  (long long)rc->train.steps);
  }
  at_eval_sets_close(&sets);
  at_ctx_free(c);
  at_model_free(m);
  at_task_free(task);
  return st;
}

at_status at_experiment_eval_only(const at_experiment *e, const at_train_opts *o, int *n_failed) {
  *n_failed = 0;
  char out[1024], path[1100];
  if (o->out_dir) snprintf(out, sizeof out, "%s", o->out_dir);
  else snprintf(out, sizeof out, "results/%s", e->name);
  snprintf(path, sizeof path, "%s/results.h5", out);
  FILE *log = o->log ? o->log : stdout;
  at_results *res = NULL;
  at_status st = access(path, F_OK) == 0 ? at_results_read(path, &res) : at_results_new(e->name, e->source, &res);
  if (st != AT_OK) return at_error_prefix(st, "--eval-only");
  int evaluated = 0;
  for (int i = 0; i < e->n_runs && st == AT_OK; i++) {
    const at_run_cfg *rc = &e->runs[i];
    char ckpt[1300];
    snprintf(ckpt, sizeof ckpt, "%s/checkpoints/%s.h5", out, rc->run_id);
    if (access(ckpt, F_OK) != 0) {
      fprintf(log, "[%s] no checkpoint (%s): not evaluated\n", rc->name, ckpt);
      (*n_failed)++;
      continue;
    }
    at_results_run *rr = at_results_find(res, rc->run_id);
    if (!rr) {
      if ((st = at_results_add_run(res, rc->run_id, rc->yaml, &rr)) != AT_OK) break;
      snprintf(rr->name, sizeof rr->name, "%s", rc->name);
      snprintf(rr->base_name, sizeof rr->base_name, "%s", rc->base_name);
      snprintf(rr->sweep_point, sizeof rr->sweep_point, "%s", rc->sweep_point);
    }
    at_set_threads(rc->train.threads);
    if (eval_run(rc, out, ckpt, rr, log) != AT_OK) {
      fprintf(log, "[%s] not evaluated: %s\n", rc->name, at_errmsg());
      (*n_failed)++;
      continue;
    }
    evaluated++;
    st = at_results_write(res, path);
  }
  at_results_free(res);
  if (st != AT_OK) return st;
  if (!evaluated) return at_error(AT_E_IO, "--eval-only: no checkpoint of this experiment in %s/checkpoints", out);
  return at_experiment_report(e, out, log);
}
