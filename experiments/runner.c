/* experiments/runner.c: the training loop of ./train. */
#define _POSIX_C_SOURCE 200809L
#include "experiments/runner.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/threads.h"
#include "experiments/results.h"
#include "models/model.h"
#include "optim/checkpoint.h"

/* ---- files ----------------------------------------------------------------- */

static at_status mkdir_p(const char *path) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == '\0') {
      char ch = *p;
      *p = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return at_error(AT_E_IO, "%s: cannot create directory (%s)", buf, strerror(errno));
      if (ch == '\0') break;
      *p = ch;
    }
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return at_error(AT_E_IO, "%s: not a directory", path);
  return AT_OK;
}

/* Refuses an output directory that cannot be written, before any training. */
static at_status check_writable(const char *dir) {
  char probe[1100];
  snprintf(probe, sizeof probe, "%s/.attnlab_write_test", dir);
  FILE *f = fopen(probe, "w");
  int ok = f && fputs("ok\n", f) >= 0;
  if (f) ok &= fclose(f) == 0;
  if (!ok) return at_error(AT_E_IO, "%s: output directory is not writable", dir);
  remove(probe);
  return AT_OK;
}

static void out_dir_of(const at_experiment *e, const at_train_opts *o, char *buf, size_t n) {
  if (o->out_dir) snprintf(buf, n, "%s", o->out_dir);
  else snprintf(buf, n, "results/%s", e->name);
}

/* ---- progress ---------------------------------------------------------------- */

static void fmt_duration(double s, char *buf, size_t n) {
  if (!isfinite(s) || s < 0) snprintf(buf, n, "?");
  else if (s < 60) snprintf(buf, n, "%.0fs", s);
  else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
  else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
}

static void fmt_bytes(double b, char *buf, size_t n) {
  if (b < 1024) snprintf(buf, n, "%.0f B", b);
  else if (b < 1024 * 1024) snprintf(buf, n, "%.1f KiB", b / 1024);
  else snprintf(buf, n, "%.1f MiB", b / (1024 * 1024));
}

typedef struct progress {
  FILE *out;
  int tty;
  int drawn; /* a partial line is on the terminal */
  double last_draw;
} progress;

/* A status line: redrawn in place on a terminal, a plain line otherwise. */
static void status_line(progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void status_line(progress *p, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (p->tty) {
    fprintf(p->out, "\r\033[K%s", line);
    p->drawn = 1;
  } else {
    fprintf(p->out, "%s\n", line);
  }
  fflush(p->out);
}

/* A line that stays (eval results, summaries). */
static void say(progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(progress *p, const char *fmt, ...) {
  if (p->tty && p->drawn) fprintf(p->out, "\r\033[K");
  p->drawn = 0;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(p->out, fmt, ap);
  va_end(ap);
  fflush(p->out);
}

/* ---- evaluation ---------------------------------------------------------------- */

#define MAX_GROUPS 64

typedef struct eval_result {
  double loss, accuracy;
  int n_groups;
  double group_accuracy[MAX_GROUPS];
} eval_result;

/* Mean loss and accuracy over labelled positions of the first n test
 * examples (and accuracy per example group), under the DSA stage `mode`.
 * Gradients off. */
static at_status evaluate(at_ctx *c, at_model *m, at_task *task, int64_t n, int64_t batch,
                          const at_dsa_mode *mode, eval_result *r) {
  int64_t T = m->cfg.max_seq_len, V = m->cfg.vocab_size;
  int ng = AT_MIN(at_task_num_groups(task), MAX_GROUPS);
  double loss_sum = 0;
  int64_t labelled = 0, correct = 0, g_lab[MAX_GROUPS] = {0}, g_cor[MAX_GROUPS] = {0};
  int32_t *tok = malloc((size_t)(batch * T) * sizeof *tok), *lab = malloc((size_t)(batch * T) * sizeof *lab);
  int32_t *grp = malloc((size_t)batch * sizeof *grp);
  at_status st = (tok && lab && grp) ? AT_OK : at_error(AT_E_NOMEM, "out of memory");
  for (int64_t first = 0; st == AT_OK && first < n; first += batch) {
    int64_t b = AT_MIN(batch, n - first);
    at_task_batch(task, AT_SPLIT_TEST, first, b, tok, lab, grp);
    at_no_grad_begin(c);
    at_itensor *ti = at_inew(c, AT_SHAPE(b, T));
    at_tensor *logits = NULL;
    if (ti) {
      memcpy(ti->data, tok, (size_t)(b * T) * sizeof *tok);
      logits = at_model_logits_mode(c, m, ti, mode);
    }
    at_no_grad_end(c);
    if (!logits) {
      st = at_error_prefix(at_ctx_status(c) ? at_ctx_status(c) : AT_E_STATE, "evaluation");
      break;
    }
    for (int64_t i = 0; i < b * T; i++) {
      int32_t y = lab[i];
      if (y == AT_IGNORE_LABEL) continue;
      const real *z = logits->data + i * V;
      int64_t arg = 0;
      double mx = z[0];
      for (int64_t j = 1; j < V; j++)
        if (z[j] > mx) mx = z[j], arg = j;
      double s = 0;
      for (int64_t j = 0; j < V; j++) s += exp((double)z[j] - mx);
      loss_sum += mx + log(s) - (double)z[y];
      int ok = arg == y;
      labelled++, correct += ok;
      int g = ng > 1 ? grp[i / T] : 0;
      if (g >= 0 && g < ng) g_lab[g]++, g_cor[g] += ok;
    }
    at_ctx_reset(c);
  }
  free(tok), free(lab), free(grp);
  if (st != AT_OK) return st;
  r->loss = labelled ? loss_sum / (double)labelled : NAN;
  r->accuracy = labelled ? (double)correct / (double)labelled : NAN;
  r->n_groups = ng > 1 ? ng : 0;
  for (int g = 0; g < r->n_groups; g++) r->group_accuracy[g] = g_lab[g] ? (double)g_cor[g] / (double)g_lab[g] : NAN;
  return AT_OK;
}

/* ---- stages ---------------------------------------------------------------------- */

/* A stretch of training with its own learning rate, trainable parameters
 * and DSA mode (the DeepSeek-V3.2 recipe: dense warm-up of the indexer, then
 * sparse training). Without `stages:` a run is one stage. */
typedef struct stage {
  char name[32];
  int64_t first, steps;
  double lr;
  at_trainable trainable;
  at_dsa_mode mode;
} stage;

static int stages_of(const at_train_cfg *tc, stage *out) {
  if (tc->n_stages == 0) {
    out[0] = (stage){"train", 0, tc->steps, tc->optim.lr, AT_TRAINABLE_ALL, {0, 0}};
    return 1;
  }
  int64_t first = 0;
  for (int i = 0; i < tc->n_stages; i++) {
    const at_stage_cfg *sc = &tc->stages[i];
    stage *s = &out[i];
    snprintf(s->name, sizeof s->name, "%s", sc->name[0] ? sc->name : "stage");
    s->first = first, s->steps = sc->steps, s->lr = sc->lr, s->trainable = sc->trainable;
    s->mode.sparse = sc->sparse, s->mode.indexer_loss = sc->indexer_loss;
    first += sc->steps;
  }
  return tc->n_stages;
}

static void set_trainable(at_params *p, at_trainable t) {
  at_params_set_trainable(p, -1, t != AT_TRAINABLE_INDEXER);
  if (t != AT_TRAINABLE_ALL) at_params_set_trainable(p, AT_GROUP_INDEXER, t == AT_TRAINABLE_INDEXER);
}

/* A fresh optimiser for a stage: the run's settings with the stage's lr,
 * its schedule over the stage's steps. */
static at_status stage_optim(const at_train_cfg *tc, const stage *s, at_params *p, at_optim **o) {
  at_optim_cfg oc = tc->optim;
  oc.lr = s->lr;
  oc.total_steps = s->steps;
  oc.warmup_steps = AT_MIN(oc.warmup_steps, s->steps / 2);
  return at_optim_new(&oc, p, o);
}

/* ---- one run ------------------------------------------------------------------- */

typedef struct run_ctx {
  const at_experiment *e;
  const at_run_cfg *rc;
  const at_train_opts *opts;
  char out[1024];
  char ckpt[1400];
  char results_path[1100];
  at_results *results;
  progress *pg;
} run_ctx;

static int is_text(const at_run_cfg *rc) { return rc->data.kind == AT_TASK_TEXT; }

/* Runs one (run, sweep point). Returns a status only for failures that
 * should stop the whole experiment (I/O, a checkpoint that cannot be
 * resumed); a run's own failure is recorded in its status and AT_OK is
 * returned. */
static at_status train_run(run_ctx *x) {
  const at_run_cfg *rc = x->rc;
  const at_train_cfg *tc = &rc->train;
  progress *pg = x->pg;
  at_results_run *rr = at_results_find(x->results, rc->run_id);
  if (rr && x->opts->resume && strcmp(rr->status, "ok") == 0) {
    say(pg, "[%s] complete in %s, kept\n", rc->name, x->results_path);
    return AT_OK;
  }
  if (!rr) {
    at_status st = at_results_add_run(x->results, rc->run_id, rc->yaml, &rr);
    if (st != AT_OK) return st;
  }
  snprintf(rr->name, sizeof rr->name, "%s", rc->name);
  snprintf(rr->base_name, sizeof rr->base_name, "%s", rc->base_name);
  snprintf(rr->sweep_point, sizeof rr->sweep_point, "%s", rc->sweep_point);
  snprintf(rr->status, sizeof rr->status, "running");

  at_set_threads(tc->threads);
  at_task *task = NULL;
  at_model *m = NULL;
  at_optim *opt = NULL;
  at_ctx *c = NULL;
  int32_t *tok = NULL, *lab = NULL;
  at_task_cfg dc = rc->data;
  if (dc.kind == AT_TASK_TEXT && !dc.cache[0]) /* the byte cache lives with the results */
    snprintf(dc.cache, sizeof dc.cache, "%.1000s/token_cache.h5", x->out);
  at_status st = at_task_open(&dc, &task);
  at_model_cfg mc = rc->model;
  mc.vocab_size = dc.vocab_size;
  mc.max_seq_len = dc.seq_len;
  if (st == AT_OK) st = at_model_new(&mc, rc->seed, &m);
  if (st == AT_OK && !(c = at_ctx_new(0))) st = at_error(AT_E_NOMEM, "out of memory");
  int64_t B = tc->batch_size, T = dc.seq_len;
  if (st == AT_OK) {
    tok = malloc((size_t)(B * T) * sizeof *tok);
    lab = malloc((size_t)(B * T) * sizeof *lab);
    if (!tok || !lab) st = at_error(AT_E_NOMEM, "out of memory");
  }
  if (st != AT_OK) {
    snprintf(rr->status, sizeof rr->status, "stopped: %s", at_errmsg());
    say(pg, "[%s] cannot start: %s\n", rc->name, at_errmsg());
    st = AT_OK;
    goto done;
  }
  rr->params = at_model_num_params(m);
  at_results_set_num(rr, "cache_bytes_per_token", 4.0 * (double)at_model_cache_per_token(m));
  at_results_set_num(rr, "state_bytes", 4.0 * (double)at_model_state_elems(m));
  int ng = at_task_num_groups(task);
  if (ng > 1 && rr->n_groups == 0) {
    const char *names[MAX_GROUPS];
    ng = AT_MIN(ng, MAX_GROUPS);
    for (int g = 0; g < ng; g++) names[g] = at_task_group_name(task, g);
    at_results_set_groups(rr, ng, names);
  }

  stage stages[AT_MAX_STAGES];
  int n_stages = stages_of(tc, stages);
  at_train_state ts;
  at_train_state_init(&ts);
  int resuming = x->opts->resume && access(x->ckpt, F_OK) == 0;
  /* The checkpoint's step says which stage, and so which optimiser, to
   * restore: read the parameters and state first, the optimiser second. */
  if (resuming && (st = at_checkpoint_load(x->ckpt, m->params, NULL, &ts, NULL)) != AT_OK) {
    at_error_prefix(st, "[%s] cannot resume", rc->name);
    goto done;
  }
  int k = 0;
  while (k + 1 < n_stages && ts.step >= stages[k].first + stages[k].steps) k++;
  set_trainable(m->params, stages[k].trainable);
  if ((st = stage_optim(tc, &stages[k], m->params, &opt)) != AT_OK) goto done;
  if (resuming) {
    if (ts.step > stages[k].first && (st = at_checkpoint_load(x->ckpt, m->params, opt, &ts, NULL)) != AT_OK) {
      at_error_prefix(st, "[%s] cannot resume", rc->name);
      goto done;
    }
    at_results_truncate(rr, ts.step - 1);
    say(pg, "[%s] resuming at step %lld\n", rc->name, (long long)ts.step);
  } else {
    at_results_truncate(rr, -1);
  }
  if (n_stages > 1 && ts.step < tc->steps)
    say(pg, "[%s] stage %s: %lld steps, lr %g\n", rc->name, stages[k].name, (long long)stages[k].steps, stages[k].lr);

  uint64_t data_pos = ts.n_data_pos ? ts.data_pos[0] : 0;
  int64_t eval_n = tc->eval_examples > 0 ? AT_MIN(tc->eval_examples, at_task_size(task, AT_SPLIT_TEST))
                                         : at_task_size(task, AT_SPLIT_TEST);
  double t_run0 = at_now() - ts.wall_seconds;
  int bad_in_row = 0;
  char why[256] = "";
  double loss_acc = 0, kl_acc = 0, recall_acc = 0;
  int64_t acc_lab = 0, acc_cor = 0, n_acc = 0, n_dsa = 0;

  for (int64_t step = ts.step; step < tc->steps; step++) {
    if (step == stages[k].first + stages[k].steps) { /* the next stage: its own optimiser */
      k++;
      at_optim_free(opt);
      opt = NULL;
      set_trainable(m->params, stages[k].trainable);
      if ((st = stage_optim(tc, &stages[k], m->params, &opt)) != AT_OK) goto done;
      say(pg, "[%s] stage %s: %lld steps, lr %g\n", rc->name, stages[k].name, (long long)stages[k].steps, stages[k].lr);
    }
    double t0 = at_now();
    at_task_batch(task, AT_SPLIT_TRAIN, (int64_t)data_pos, B, tok, lab, NULL);
    data_pos += (uint64_t)B;
    at_itensor *ti = at_inew(c, AT_SHAPE(B, T)), *li = at_inew(c, AT_SHAPE(B, T));
    at_tensor *loss = NULL;
    at_mixer_io io;
    double lm = NAN;
    int64_t n_lab = 0, n_cor = 0;
    if (ti && li) {
      memcpy(ti->data, tok, (size_t)(B * T) * sizeof *tok);
      memcpy(li->data, lab, (size_t)(B * T) * sizeof *lab);
      loss = at_model_train_loss(c, m, ti, li, &stages[k].mode, &io, &lm, &n_lab, &n_cor);
    }
    if (!loss) {
      snprintf(why, sizeof why, "forward failed at step %lld: %s", (long long)step, at_errmsg());
      break;
    }
    int bad = !isfinite(loss->data[0]);
    if (!bad) {
      at_params_zero_grad(m->params);
      if (at_backward(c, loss) != AT_OK) {
        snprintf(why, sizeof why, "backward failed at step %lld: %s", (long long)step, at_errmsg());
        break;
      }
      at_step_info info;
      at_optim_step(opt, &info);
      bad = info.skipped;
    }
    at_ctx_reset(c);
    ts.step = step + 1;
    ts.tokens += B * T;
    ts.train_seconds += at_now() - t0;
    if (bad) {
      ts.skipped_steps++;
      if (++bad_in_row >= tc->max_bad_steps) {
        snprintf(why, sizeof why, "%d non-finite losses or gradients in a row at step %lld (last good checkpoint kept)",
                 bad_in_row, (long long)step);
        break;
      }
    } else {
      bad_in_row = 0;
      at_results_log_train(rr, step, lm);
      loss_acc += lm, acc_lab += n_lab, acc_cor += n_cor, n_acc++;
      if (io.dsa_layers) {
        double kl = io.dsa_kl / io.dsa_layers, recall = io.dsa_recall / io.dsa_layers;
        at_results_log_series(rr, "indexer_kl", step, kl);
        at_results_log_series(rr, "topk_recall", step, recall);
        kl_acc += kl, recall_acc += recall, n_dsa++;
      }
    }
    int last = ts.step == tc->steps;
    double now = at_now();
    if (n_acc && (pg->tty ? now - pg->last_draw > 0.2 || last : ts.step % tc->log_every == 0 || last)) {
      double tps = (double)ts.tokens / ts.train_seconds;
      double per_step = (now - t_run0) / (double)ts.step;
      char eta[32], dsa[64] = "";
      fmt_duration(per_step * (double)(tc->steps - ts.step), eta, sizeof eta);
      if (n_dsa)
        snprintf(dsa, sizeof dsa, "  kl %.3f  recall %.1f%%", kl_acc / (double)n_dsa, 100 * recall_acc / (double)n_dsa);
      status_line(pg, "[%s] step %lld/%lld  loss %.4f  acc %5.1f%%%s  %.0f tok/s  ETA %s", rc->name,
                  (long long)ts.step, (long long)tc->steps, loss_acc / (double)n_acc,
                  acc_lab ? 100.0 * (double)acc_cor / (double)acc_lab : 0.0, dsa, tps, eta);
      pg->last_draw = now;
      loss_acc = kl_acc = recall_acc = 0, acc_lab = acc_cor = n_acc = n_dsa = 0;
    }
    if (ts.step % tc->eval_every == 0 || last) {
      eval_result er;
      at_dsa_mode em = {stages[k].mode.sparse, 0}; /* no indexer loss when evaluating */
      if (evaluate(c, m, task, eval_n, B, &em, &er) != AT_OK) {
        snprintf(why, sizeof why, "%s", at_errmsg());
        break;
      }
      at_results_log_eval(rr, ts.step - 1, er.loss, er.accuracy, er.n_groups ? er.group_accuracy : NULL);
      if (is_text(rc))
        say(pg, "[%s] eval @%lld: loss %.4f (%.4f bits/byte)\n", rc->name, (long long)ts.step, er.loss, er.loss / log(2.0));
      else
        say(pg, "[%s] eval @%lld: loss %.4f  accuracy %.2f%%\n", rc->name, (long long)ts.step, er.loss, 100 * er.accuracy);
    }
    int leave = x->opts->stop_after > 0 && ts.step == x->opts->stop_after && !last;
    int ckpt = last || leave || (tc->checkpoint_every > 0 && ts.step % tc->checkpoint_every == 0);
    if (ckpt || ts.step % tc->eval_every == 0) {
      ts.wall_seconds = at_now() - t_run0;
      ts.n_data_pos = 1;
      ts.data_pos[0] = data_pos;
      if (ckpt && (st = at_checkpoint_save(x->ckpt, m->params, opt, &ts, rc->yaml)) != AT_OK) goto done;
      rr->steps = ts.step, rr->skipped_steps = ts.skipped_steps, rr->train_tokens = ts.tokens;
      rr->train_seconds = ts.train_seconds, rr->wall_seconds = ts.wall_seconds;
      if ((st = at_results_write(x->results, x->results_path)) != AT_OK) goto done;
    }
    if (leave) {
      snprintf(why, sizeof why, "left at step %lld (--stop-after); continue with --resume", (long long)ts.step);
      break;
    }
  }
  rr->steps = ts.step, rr->skipped_steps = ts.skipped_steps, rr->train_tokens = ts.tokens;
  rr->train_seconds = ts.train_seconds, rr->wall_seconds = at_now() - t_run0;
  if (why[0] && strncmp(why, "left at", 7) == 0) {
    snprintf(rr->status, sizeof rr->status, "interrupted: %.230s", why);
    say(pg, "[%s] %s\n", rc->name, why);
  } else if (why[0]) {
    snprintf(rr->status, sizeof rr->status, "stopped: %.230s", why);
    say(pg, "[%s] stopped: %s\n", rc->name, why);
  } else {
    snprintf(rr->status, sizeof rr->status, "ok");
    if (is_text(rc) && rr->n_eval)
      at_results_set_num(rr, "bits_per_byte", rr->eval_loss[rr->n_eval - 1] / log(2.0));
    char wall[32], cache[32], state[32];
    fmt_duration(rr->wall_seconds, wall, sizeof wall);
    fmt_bytes(4.0 * (double)at_model_cache_per_token(m), cache, sizeof cache);
    fmt_bytes(4.0 * (double)at_model_state_elems(m), state, sizeof state);
    say(pg, "[%s] done: %lld params, %.0f tok/s, %s; inference memory %s/token + %s state%s\n",
        rc->name, (long long)rr->params, (double)ts.tokens / ts.train_seconds, wall, cache, state,
        ts.skipped_steps ? " (some steps skipped: non-finite)" : "");
  }
  st = at_results_write(x->results, x->results_path);
done:
  if (st != AT_OK && strcmp(rr->status, "running") == 0) snprintf(rr->status, sizeof rr->status, "stopped: %s", at_errmsg());
  free(tok), free(lab);
  at_ctx_free(c);
  at_optim_free(opt);
  at_model_free(m);
  at_task_free(task);
  return st;
}

at_status at_experiment_train(const at_experiment *e, const at_train_opts *o, int *n_failed) {
  *n_failed = 0;
  char out[1024], path[1100], ckdir[1100];  /* ckdir + "/" + run_id + ".h5" fits x.ckpt */
  out_dir_of(e, o, out, sizeof out);
  at_status st = mkdir_p(out);
  if (st == AT_OK) st = check_writable(out);
  snprintf(ckdir, sizeof ckdir, "%s/checkpoints", out);
  if (st == AT_OK) st = mkdir_p(ckdir);
  if (st != AT_OK) return st;
  snprintf(path, sizeof path, "%s/results.h5", out);
  at_results *res = NULL;
  if (o->resume && access(path, F_OK) == 0) {
    if ((st = at_results_read(path, &res)) != AT_OK) return at_error_prefix(st, "cannot resume");
  } else if ((st = at_results_new(e->name, e->source, &res)) != AT_OK) {
    return st;
  }
  progress pg = {o->log ? o->log : stdout, o->progress, 0, 0};
  for (int i = 0; i < e->n_runs && st == AT_OK; i++) {
    run_ctx x = {e, &e->runs[i], o, "", "", "", res, &pg};
    snprintf(x.out, sizeof x.out, "%s", out);
    snprintf(x.ckpt, sizeof x.ckpt, "%s/%s.h5", ckdir, e->runs[i].run_id);
    snprintf(x.results_path, sizeof x.results_path, "%s", path);
    st = train_run(&x);
    const at_results_run *rr = at_results_find(res, e->runs[i].run_id);
    if (rr && strncmp(rr->status, "stopped", 7) == 0) (*n_failed)++;
  }
  at_results_free(res);
  if (st != AT_OK) return st;
  return at_experiment_report(e, out, pg.out);
}

at_status at_experiment_describe(const at_experiment *e, FILE *out) {
  for (int i = 0; i < e->n_runs; i++) {
    const at_run_cfg *rc = &e->runs[i];
    at_model_cfg mc = rc->model;
    mc.vocab_size = rc->data.vocab_size;
    mc.max_seq_len = rc->data.seq_len;
    at_model *m = NULL;
    at_status st = at_model_new(&mc, rc->seed, &m);
    if (st != AT_OK) return at_error_prefix(st, "run %s", rc->name);
    char cache[32], state[32];
    fmt_bytes(4.0 * (double)at_model_cache_per_token(m), cache, sizeof cache);
    fmt_bytes(4.0 * (double)at_model_state_elems(m), state, sizeof state);
    fprintf(out, "# run %d/%d: %s  (%lld parameters; inference memory %s/token + %s state)\n%s\n",
            i + 1, e->n_runs, rc->name, (long long)at_model_num_params(m), cache, state, rc->yaml);
    at_model_free(m);
  }
  return AT_OK;
}
