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
#include "experiments/evaluate.h"
#include "experiments/dist.h"
#include "experiments/results.h"
#include "models/model.h"
#include "ops/ops.h"
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
  snprintf(probe, sizeof probe, "%s/.attnlab_write_test.%ld", dir, (long)getpid());
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
  if (!p->out) return;
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
  if (!p->out) return;
  if (p->tty && p->drawn) fprintf(p->out, "\r\033[K");
  p->drawn = 0;
  va_list ap;
  va_start(ap, fmt);
  vfprintf(p->out, fmt, ap);
  va_end(ap);
  fflush(p->out);
}

/* ---- stages ---------------------------------------------------------------------- */

/* A stretch of training with its own learning rate, trainable parameters
 * and stage flags (the DeepSeek-V3.2 recipe: dense warm-up of the indexer,
 * then sparse training). Without `stages:` a run is one stage. */
typedef struct stage {
  char name[32];
  int64_t first, steps;
  double lr;
  at_trainable trainable;
  unsigned flags; /* AT_STAGE_* */
} stage;

static int stages_of(const at_train_cfg *tc, stage *out) {
  if (tc->n_stages == 0) {
    out[0] = (stage){"train", 0, tc->steps, tc->optim.lr, AT_TRAINABLE_ALL, 0};
    return 1;
  }
  int64_t first = 0;
  for (int i = 0; i < tc->n_stages; i++) {
    const at_stage_cfg *sc = &tc->stages[i];
    stage *s = &out[i];
    snprintf(s->name, sizeof s->name, "%s", sc->name[0] ? sc->name : "stage");
    s->first = first, s->steps = sc->steps, s->lr = sc->lr, s->trainable = sc->trainable;
    s->flags = (sc->sparse ? AT_STAGE_SPARSE : 0u) | (sc->indexer_loss ? AT_STAGE_AUX_LOSS : 0u);
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
  int writer;        /* writes results and checkpoints, prints (data-parallel: rank 0 alone) */
  int data_parallel; /* every rank trains this run, each its share of the slices */
} run_ctx;

/* Sums of the training figures between two progress lines. */
typedef struct window {
  double loss;
  int64_t labelled, correct, steps;
  int n_stats;
  const char *stat_name[AT_MAX_STATS];
  double stat_sum[AT_MAX_STATS];
  int64_t stat_n[AT_MAX_STATS];
} window;

/* A slice's figures (doubles only: gathered over ranks as one array). */
typedef struct slice_out {
  double lm, labelled, correct, finite, failed;
} slice_out;

/* Everything a run holds while it trains. */
typedef struct run_state {
  run_ctx *x;
  const at_run_cfg *rc;
  const at_train_cfg *tc;
  at_results_run *rr;
  at_task *task;
  at_model *m;
  at_optim *opt;
  at_ctx *c;
  int32_t *tok, *lab;
  stage stages[AT_MAX_STAGES];
  int n_stages, k;      /* stages, the current one */
  at_train_state ts;
  at_eval_sets sets;    /* data.eval */
  uint64_t data_pos;
  int64_t eval_n;
  double t_run0;
  int bad_in_row;
  window win;
  char why[256];        /* why the run left its loop ("" while training) */
  int64_t slices;       /* of each batch (train.micro_batches; data-parallel: a multiple of the ranks) */
  real *grads;          /* [slices, params] their gradients, when slices > 1 */
  slice_out *outs;      /* [slices] their figures */
} run_state;

static int is_text(const at_run_cfg *rc) { return at_task_byte_level(&rc->data); }

/* The slices of a batch and their gradient buffers: train.micro_batches,
 * data-parallel at least one per rank. */
static at_status slices_open(run_state *r) {
  int64_t M = r->tc->micro_batches, N = r->x->data_parallel ? at_dist_self().size : 1;
  if (M < N) M = N;
  if (M % N || r->tc->batch_size % M)
    return at_error(AT_E_CONFIG, "data-parallel over %lld ranks: train.batch_size %lld must split into a multiple of "
                    "%lld slices (train.micro_batches %lld)", (long long)N, (long long)r->tc->batch_size, (long long)N,
                    (long long)r->tc->micro_batches);
  if (N > 1 && M / N * r->m->params->total > INT32_MAX)
    return at_error(AT_E_CONFIG, "data-parallel: %lld gradient elements per rank exceed one MPI message",
                    (long long)(M / N * r->m->params->total));
  r->slices = M;
  if (!(r->outs = calloc((size_t)M, sizeof *r->outs))) return at_error(AT_E_NOMEM, "out of memory");
  if (M > 1 && !(r->grads = malloc((size_t)(M * r->m->params->total) * sizeof *r->grads)))
    return at_error(AT_E_NOMEM, "out of memory: %lld gradient slices", (long long)M);
  return AT_OK;
}

/* The task, the model, the step context and the batch buffers; the run's
 * entry in the results with its sizes. A run that cannot start is recorded
 * as stopped (r->why) and AT_OK returned. */
static at_status run_open(run_state *r) {
  const at_run_cfg *rc = r->rc;
  at_task_cfg dc = rc->data;
  if (dc.kind == AT_TASK_TEXT && !dc.cache[0]) /* the byte cache lives with the results */
    snprintf(dc.cache, sizeof dc.cache, "%.1000s/token_cache.h5", r->x->out);
  at_status st = at_task_open(&dc, &r->task);
  if (st == AT_OK) st = at_eval_sets_open(rc, dc.cache, &r->sets);
  at_model_cfg mc = rc->model;
  mc.vocab_size = dc.vocab_size;
  mc.max_seq_len = dc.seq_len;
  if (st == AT_OK) st = at_model_new(&mc, rc->seed, &r->m);
  if (st == AT_OK && !(r->c = at_ctx_new(0))) st = at_error(AT_E_NOMEM, "out of memory");
  int64_t BT = r->tc->batch_size * dc.seq_len;
  if (st == AT_OK && (!(r->tok = malloc((size_t)BT * sizeof *r->tok)) || !(r->lab = malloc((size_t)BT * sizeof *r->lab))))
    st = at_error(AT_E_NOMEM, "out of memory");
  if (st == AT_OK) st = slices_open(r);
  if (st != AT_OK) {
    snprintf(r->why, sizeof r->why, "cannot start: %.200s", at_errmsg());
    return AT_OK;
  }
  if ((st = at_results_run_init(r->rr, r->m, r->task)) != AT_OK) return st;
  int64_t n_test = at_task_size(r->task, AT_SPLIT_TEST);
  r->eval_n = r->tc->eval_examples > 0 ? AT_MIN(r->tc->eval_examples, n_test) : n_test;
  return AT_OK;
}

/* Enters stage k: its trainable parameters and a fresh optimiser. */
static at_status enter_stage(run_state *r, int k) {
  r->k = k;
  at_optim_free(r->opt);
  r->opt = NULL;
  set_trainable(r->m->params, r->stages[k].trainable);
  return stage_optim(r->tc, &r->stages[k], r->m->params, &r->opt);
}

/* Refuses to continue `what` (a checkpoint, results) written by a run
 * configured otherwise, naming the first line that differs. */
static at_status same_config(const run_state *r, const char *saved, const char *what) {
  const char *was = saved, *now = r->rc->yaml, *la = was, *lb = now;
  if (!strcmp(was, now)) return AT_OK;
  int line = 1;
  for (; *was && *was == *now; was++, now++)
    if (*was == '\n') line++, la = was + 1, lb = now + 1;
  int na = (int)strcspn(la, "\n"), nb = (int)strcspn(lb, "\n");
  return at_error(AT_E_STATE,
                  "[%s] cannot resume: %s was written by a run configured otherwise (line %d of the resolved "
                  "configuration: '%.*s' then, '%.*s' now); resume with the same file and --set options, or use "
                  "another --out", r->rc->name, what, line, AT_MIN(na, 120), la, AT_MIN(nb, 120), lb);
}

/* A checkpoint that this run, and its results, can continue from. The
 * results are written before the checkpoint, so they are never behind it
 * unless the files come from different moments. */
static at_status check_resumable(const run_state *r, const char *saved) {
  at_status st = same_config(r, saved, "its checkpoint");
  if (st != AT_OK) return st;
  if (r->ts.step > r->tc->steps)
    return at_error(AT_E_STATE, "[%s] cannot resume: the checkpoint is at step %lld, past the run's %lld steps",
                    r->rc->name, (long long)r->ts.step, (long long)r->tc->steps);
  if (r->rr->steps < r->ts.step)
    return at_error(AT_E_STATE,
                    "[%s] cannot resume: %s records the run up to step %lld but its checkpoint is at step %lld, so "
                    "the curves between are missing (the two files are from different moments)", r->rc->name,
                    r->x->results_path, (long long)r->rr->steps, (long long)r->ts.step);
  return AT_OK;
}

/* From the checkpoint when resuming (parameters and train state first: the
 * step says which stage, and so which optimiser, to restore), else fresh. */
static at_status run_resume(run_state *r) {
  run_ctx *x = r->x;
  r->n_stages = stages_of(r->tc, r->stages);
  at_train_state_init(&r->ts);
  int resuming = x->opts->resume && access(x->ckpt, F_OK) == 0;
  at_status st;
  char *saved = NULL;
  if (resuming && (st = at_checkpoint_load(x->ckpt, r->m->params, NULL, &r->ts, &saved)) != AT_OK)
    return at_error_prefix(st, "[%s] cannot resume", r->rc->name);
  if (resuming) {
    st = check_resumable(r, saved);
    free(saved);
    if (st != AT_OK) return st;
  }
  int k = 0;
  while (k + 1 < r->n_stages && r->ts.step >= r->stages[k].first + r->stages[k].steps) k++;
  if ((st = enter_stage(r, k)) != AT_OK) return st;
  if (resuming) {
    if (r->ts.step > r->stages[k].first && (st = at_checkpoint_load(x->ckpt, r->m->params, r->opt, &r->ts, NULL)) != AT_OK)
      return at_error_prefix(st, "[%s] cannot resume", r->rc->name);
    at_results_truncate(r->rr, r->ts.step - 1);
    r->m->step = AT_MAX(r->ts.step - 1, 0); /* the last step taken, as an evaluation now would see it */
    say(x->pg, "[%s] resuming at step %lld\n", r->rc->name, (long long)r->ts.step);
  } else {
    at_results_truncate(r->rr, -1);
  }
  if (r->n_stages > 1 && r->ts.step < r->tc->steps)
    say(x->pg, "[%s] stage %s: %lld steps, lr %g\n", r->rc->name, r->stages[k].name,
        (long long)r->stages[k].steps, r->stages[k].lr);
  r->data_pos = r->ts.n_data_pos ? r->ts.data_pos[0] : 0;
  r->t_run0 = at_now() - r->ts.wall_seconds;
  return AT_OK;
}

static void window_add_stats(window *w, const at_mixer_io *io, at_results_run *rr, int64_t step) {
  for (int i = 0; i < io->n_stats; i++) {
    const at_mixer_stat *s = &io->stats[i];
    double v = s->sum / (double)s->n;
    at_results_log_series(rr, s->name, step, v);
    int j = 0;
    while (j < w->n_stats && strcmp(w->stat_name[j], s->name)) j++;
    if (j == w->n_stats) {
      if (j == AT_MAX_STATS) continue;
      w->stat_name[w->n_stats++] = s->name;
    }
    w->stat_sum[j] += v, w->stat_n[j]++;
  }
}

/* One slice of a step's batch: the training loss of rows [row0, row0 + rows)
 * scaled by `weight` (its labels' share of the batch's), its gradient into
 * the parameters' gradient buffer (zeroed first). Fills *sl with its LM
 * loss and counts; returns 0, or -1 when the forward or backward failed
 * (message set). */
static int slice_grad(run_state *r, int64_t row0, int64_t rows, double weight, int whole, slice_out *sl,
                      at_mixer_io *io) {
  int64_t T = r->rc->data.seq_len, n_lab = 0, n_cor = 0;
  at_ctx *c = r->c;
  const stage *sg = &r->stages[r->k];
  at_itensor *ti = at_inew(c, AT_SHAPE(rows, T)), *li = at_inew(c, AT_SHAPE(rows, T));
  at_tensor *loss = NULL;
  double lm = NAN;
  *sl = (slice_out){0};
  at_params_zero_grad(r->m->params);
  if (!whole && weight == 0) return sl->finite = 1, 0; /* no labels: no loss, no gradient */
  if (ti && li) {
    memcpy(ti->data, r->tok + row0 * T, (size_t)(rows * T) * sizeof *r->tok);
    memcpy(li->data, r->lab + row0 * T, (size_t)(rows * T) * sizeof *r->lab);
    loss = at_model_train_loss(c, r->m, ti, li, sg->flags, io, &lm, &n_lab, &n_cor);
  }
  if (loss && !whole) loss = at_scale(c, loss, weight);
  sl->lm = whole ? lm : weight * lm, sl->labelled = (double)n_lab, sl->correct = (double)n_cor;
  if (!loss) return sl->failed = 1, -1;
  sl->finite = isfinite(loss->data[0]);
  if (sl->finite && at_backward(c, loss) != AT_OK) return sl->failed = 1, -1;
  return 0;
}

static int64_t labelled_in(const int32_t *lab, int64_t n) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) k += lab[i] != AT_IGNORE_LABEL;
  return k;
}

/* The batch's gradient in the parameters' buffer from r->slices slices:
 * this rank's slices computed here (each kept apart), every slice gathered
 * from the ranks that computed it (data-parallel), and summed in slice
 * order, so that any split of the slices over ranks gives the same bits.
 * One slice: the plain step. *sum gets the batch's LM loss and counts;
 * returns 0, or -1 with r->why when a slice failed on some rank. */
static int batch_grad(run_state *r, int64_t step, slice_out *sum, at_mixer_io *io) {
  int64_t B = r->tc->batch_size, T = r->rc->data.seq_len, M = r->slices, rows = B / M;
  at_dist d = at_dist_self();
  int dp = r->x->data_parallel;
  int64_t per = dp ? M / d.size : M, s0 = dp ? d.rank * per : 0;
  double n_all = (double)labelled_in(r->lab, B * T);
  at_params *p = r->m->params;
  int failed = 0;
  for (int64_t s = s0; s < s0 + per; s++) {
    double w = n_all > 0 ? (double)labelled_in(r->lab + s * rows * T, rows * T) / n_all : 0;
    failed |= slice_grad(r, s * rows, rows, w, M == 1, &r->outs[s], s == s0 ? io : &(at_mixer_io){0}) != 0;
    if (M > 1) memcpy(r->grads + s * p->total, p->grad, (size_t)p->total * sizeof *p->grad);
    if (s + 1 < s0 + per) at_ctx_reset(r->c);
  }
  if (dp) {
    at_dist_allgather(r->outs, (int64_t)(sizeof(slice_out) / sizeof(double)) * per, sizeof(double));
    at_dist_allgather(r->grads, p->total * per, sizeof(real));
  }
  *sum = (slice_out){.finite = 1};
  for (int64_t s = 0; s < M; s++) {
    const slice_out *o = &r->outs[s];
    sum->lm += o->lm, sum->labelled += o->labelled, sum->correct += o->correct;
    sum->finite = sum->finite && o->finite, sum->failed += o->failed;
  }
  if (sum->failed) {
    snprintf(r->why, sizeof r->why, "forward or backward failed at step %lld%s%.200s", (long long)step,
             failed ? ": " : " on another rank", failed ? at_errmsg() : "");
    return -1;
  }
  if (M == 1 || !sum->finite) return 0;
  memcpy(p->grad, r->grads, (size_t)p->total * sizeof *p->grad);
  for (int64_t s = 1; s < M; s++) {
    const real *g = r->grads + s * p->total;
    for (int64_t i = 0; i < p->total; i++) p->grad[i] += g[i];
  }
  return 0;
}

/* One optimiser step (forward, backward, update) on the next batch; a
 * non-finite loss or gradient skips the update. Returns 0, or -1 with
 * r->why when the run must stop. */
static int run_step(run_state *r, int64_t step) {
  int64_t B = r->tc->batch_size, T = r->rc->data.seq_len;
  double t0 = at_now();
  at_task_batch(r->task, AT_SPLIT_TRAIN, (int64_t)r->data_pos, B, r->tok, r->lab, NULL);
  r->data_pos += (uint64_t)B;
  r->m->step = step;
  at_mixer_io io = {0};
  slice_out sum;
  if (batch_grad(r, step, &sum, &io) != 0) return -1;
  int bad = !sum.finite;
  if (!bad) {
    at_step_info info;
    at_optim_step(r->opt, &info);
    bad = info.skipped;
  }
  at_ctx_reset(r->c);
  r->ts.step = step + 1;
  r->ts.tokens += B * T;
  r->ts.train_seconds += at_now() - t0;
  if (bad) {
    r->ts.skipped_steps++;
    if (++r->bad_in_row >= r->tc->max_bad_steps) {
      snprintf(r->why, sizeof r->why, "%d non-finite losses or gradients in a row at step %lld (last good checkpoint kept)",
               r->bad_in_row, (long long)step);
      return -1;
    }
    return 0;
  }
  r->bad_in_row = 0;
  at_results_log_train(r->rr, step, sum.lm);
  window *w = &r->win;
  w->loss += sum.lm, w->labelled += (int64_t)sum.labelled, w->correct += (int64_t)sum.correct, w->steps++;
  window_add_stats(w, &io, r->rr, step);
  return 0;
}

/* The progress line (every log_every steps, or redrawn on a terminal). */
static void run_progress(run_state *r) {
  progress *pg = r->x->pg;
  window *w = &r->win;
  int last = r->ts.step == r->tc->steps;
  double now = at_now();
  if (!w->steps || !(pg->tty ? now - pg->last_draw > 0.2 || last : r->ts.step % r->tc->log_every == 0 || last))
    return;
  double tps = (double)r->ts.tokens / r->ts.train_seconds;
  double per_step = (now - r->t_run0) / (double)r->ts.step;
  char eta[32], stats[160] = "";
  fmt_duration(per_step * (double)(r->tc->steps - r->ts.step), eta, sizeof eta);
  for (int i = 0, len = 0; i < w->n_stats && len < (int)sizeof stats; i++)
    len += snprintf(stats + len, sizeof stats - (size_t)len, "  %s %.4g", w->stat_name[i],
                    w->stat_sum[i] / (double)AT_MAX(w->stat_n[i], 1));
  status_line(pg, "[%s] step %lld/%lld  loss %.4f  acc %5.1f%%%s  %.0f tok/s  ETA %s", r->rc->name,
              (long long)r->ts.step, (long long)r->tc->steps, w->loss / (double)w->steps,
              w->labelled ? 100.0 * (double)w->correct / (double)w->labelled : 0.0, stats, tps, eta);
  pg->last_draw = now;
  *w = (window){0};
}

/* An evaluation on the test split and the test sets of data.eval (no
 * auxiliary losses), logged; a text run's sample (train.sample). */
static at_status run_evaluate(run_state *r) {
  at_eval_result er;
  unsigned flags = r->stages[r->k].flags & ~(unsigned)AT_STAGE_AUX_LOSS;
  char sets[1024];
  at_status st = at_evaluate(r->c, r->m, r->task, r->rc->data.seq_len, r->eval_n, r->tc->batch_size, flags, &er);
  if (st == AT_OK) st = at_results_log_eval(r->rr, r->ts.step - 1, er.loss, er.accuracy, er.n_groups ? er.group_accuracy : NULL);
  if (st == AT_OK) st = at_eval_sets_run(r->c, r->m, r->rc, &r->sets, r->eval_n, flags, r->rr, r->ts.step - 1, sets, sizeof sets);
  if (st != AT_OK) {
    snprintf(r->why, sizeof r->why, "%.250s", at_errmsg());
    return st;
  }
  if (is_text(r->rc))
    say(r->x->pg, "[%s] eval @%lld: loss %.4f (%.4f bits/byte)%s\n", r->rc->name, (long long)r->ts.step, er.loss,
        er.loss / log(2.0), sets);
  else
    say(r->x->pg, "[%s] eval @%lld: loss %.4f  accuracy %.2f%%%s\n", r->rc->name, (long long)r->ts.step, er.loss,
        100 * er.accuracy, sets);
  char *text = NULL;
  if (r->tc->sample > 0 && at_text_sample(r->c, r->m, r->tc->sample, r->rc->seed + (uint64_t)r->ts.step, flags, &text) == AT_OK)
    say(r->x->pg, "[%s] sample @%lld:\n%s\n", r->rc->name, (long long)r->ts.step, text);
  else if (r->tc->sample > 0)
    say(r->x->pg, "[%s] sample @%lld: none (%s)\n", r->rc->name, (long long)r->ts.step, at_errmsg());
  free(text);
  return AT_OK;
}

static void record_counts(run_state *r) {
  at_results_run *rr = r->rr;
  rr->steps = r->ts.step, rr->skipped_steps = r->ts.skipped_steps, rr->train_tokens = r->ts.tokens;
  rr->train_seconds = r->ts.train_seconds, rr->wall_seconds = r->ts.wall_seconds;
}

/* The results file, then (if `ckpt`) the checkpoint, both atomically. In
 * this order a crash between the two leaves results ahead of the
 * checkpoint, which --resume truncates; the other order would lose the
 * curves between them. */
static at_status run_checkpoint(run_state *r, int ckpt) {
  if (!r->x->writer) return AT_OK;
  r->ts.wall_seconds = at_now() - r->t_run0;
  r->ts.n_data_pos = 1;
  r->ts.data_pos[0] = r->data_pos;
  record_counts(r);
  at_status st = at_results_write(r->x->results, r->x->results_path);
  if (st == AT_OK && ckpt) st = at_checkpoint_save(r->x->ckpt, r->m->params, r->opt, &r->ts, r->rc->yaml);
  return st;
}

/* The run's final status and summary line. */
static void run_finish(run_state *r) {
  at_results_run *rr = r->rr;
  progress *pg = r->x->pg;
  r->ts.wall_seconds = at_now() - r->t_run0;
  record_counts(r);
  if (r->why[0] && strncmp(r->why, "left at", 7) == 0) {
    snprintf(rr->status, sizeof rr->status, "interrupted: %.230s", r->why);
    say(pg, "[%s] %s\n", r->rc->name, r->why);
    return;
  }
  if (r->why[0]) {
    snprintf(rr->status, sizeof rr->status, "stopped: %.230s", r->why);
    say(pg, "[%s] stopped: %s\n", r->rc->name, r->why);
    return;
  }
  snprintf(rr->status, sizeof rr->status, "ok");
  if (is_text(r->rc) && rr->n_eval) at_results_set_num(rr, "bits_per_byte", rr->eval_loss[rr->n_eval - 1] / log(2.0));
  char wall[32], cache[32], state[32];
  fmt_duration(rr->wall_seconds, wall, sizeof wall);
  fmt_bytes(4.0 * (double)at_model_cache_per_token(r->m), cache, sizeof cache);
  fmt_bytes(4.0 * (double)at_model_state_elems(r->m), state, sizeof state);
  say(pg, "[%s] done: %lld params, %.0f tok/s, %s; inference memory %s/token + %s state%s\n", r->rc->name,
      (long long)rr->params, (double)r->ts.tokens / r->ts.train_seconds, wall, cache, state,
      r->ts.skipped_steps ? " (some steps skipped: non-finite)" : "");
}

static void run_close(run_state *r) {
  at_eval_sets_close(&r->sets);
  free(r->tok), free(r->lab), free(r->grads), free(r->outs);
  at_ctx_free(r->c);
  at_optim_free(r->opt);
  at_model_free(r->m);
  at_task_free(r->task);
}

/* The training loop: steps, stage changes, progress, evaluations and
 * checkpoints, until the last step, --stop-after or a failure (r->why). */
static at_status run_loop(run_state *r) {
  const at_train_cfg *tc = r->tc;
  at_status st = AT_OK;
  for (int64_t step = r->ts.step; step < tc->steps && st == AT_OK; step++) {
    const stage *next = &r->stages[r->k];
    if (step == next->first + next->steps) { /* the next stage: its own optimiser */
      if ((st = enter_stage(r, r->k + 1)) != AT_OK) break;
      say(r->x->pg, "[%s] stage %s: %lld steps, lr %g\n", r->rc->name, r->stages[r->k].name,
          (long long)r->stages[r->k].steps, r->stages[r->k].lr);
    }
    if (run_step(r, step) != 0) break;
    run_progress(r);
    int last = r->ts.step == tc->steps, eval = last || (tc->eval_every > 0 && r->ts.step % tc->eval_every == 0);
    int failed = eval && r->x->writer && run_evaluate(r) != AT_OK;
    int leave = r->x->opts->stop_after > 0 && r->ts.step == r->x->opts->stop_after && !last;
    int ckpt = last || leave || (tc->checkpoint_every > 0 && r->ts.step % tc->checkpoint_every == 0);
    if ((ckpt || eval) && !failed) st = run_checkpoint(r, ckpt);
    if (r->x->data_parallel && (ckpt || eval) && !at_dist_all(!failed && st == AT_OK)) {
      if (!failed && st == AT_OK) snprintf(r->why, sizeof r->why, "rank 0 could not evaluate or checkpoint");
      break;
    }
    if (failed) break;
    if (st == AT_OK && leave)
      snprintf(r->why, sizeof r->why, "left at step %lld (--stop-after); continue with --resume", (long long)r->ts.step);
    if (leave) break;
  }
  return st;
}

static at_status commit_results(run_ctx *x) {
  return x->writer ? at_results_write(x->results, x->results_path) : AT_OK;
}

/* Runs one (run, sweep point). Returns a status only for failures that
 * should stop the whole experiment (I/O, a checkpoint that cannot be
 * resumed); a run's own failure is recorded in its status and AT_OK is
 * returned. */
static at_status train_run(run_ctx *x) {
  const at_run_cfg *rc = x->rc;
  at_results_run *rr = at_results_find(x->results, rc->run_id);
  if (rr && x->opts->resume) {
    run_state view = {.x = x, .rc = rc};
    at_status st = same_config(&view, rr->config, x->results_path);
    if (st != AT_OK) return st;
  }
  if (rr && x->opts->resume && strcmp(rr->status, "ok") == 0) {
    say(x->pg, "[%s] complete in %s, kept\n", rc->name, x->results_path);
    return AT_OK;
  }
  at_status st;
  if (!rr && (st = at_results_add_run(x->results, rc->run_id, rc->yaml, &rr)) != AT_OK) return st;
  snprintf(rr->name, sizeof rr->name, "%s", rc->name);
  snprintf(rr->base_name, sizeof rr->base_name, "%s", rc->base_name);
  snprintf(rr->sweep_point, sizeof rr->sweep_point, "%s", rc->sweep_point);
  snprintf(rr->status, sizeof rr->status, "running");
  at_set_threads(rc->train.threads);
  run_state r = {.x = x, .rc = rc, .tc = &rc->train, .rr = rr};
  st = run_open(&r);
  if (st == AT_OK && r.why[0]) { /* cannot start: recorded, the others still run */
    snprintf(rr->status, sizeof rr->status, "stopped: %.230s", r.why);
    say(x->pg, "[%s] %s\n", rc->name, r.why);
    st = commit_results(x);
  } else {
    if (st == AT_OK) st = run_resume(&r);
    if (st == AT_OK) st = run_loop(&r);
    if (st == AT_OK) {
      run_finish(&r);
      st = commit_results(x);
    } else if (strcmp(rr->status, "running") == 0) {
      snprintf(rr->status, sizeof rr->status, "stopped: %.230s", at_errmsg());
    }
  }
  run_close(&r);
  return st;
}

/* The results this process continues: with --resume its own file (its
 * part under MPI) or else results.h5, which a part starts as a copy of;
 * otherwise new. */
static at_status open_results(const at_experiment *e, const at_train_opts *o, const char *path,
                              const char *merged, at_results **res) {
  const char *from = access(path, F_OK) == 0 ? path : merged;
  if (!o->resume || access(from, F_OK) != 0) return at_results_new(e->name, e->source, res);
  at_status st = at_results_read(from, res);
  if (st != AT_OK) return at_error_prefix(st, "cannot resume");
  if (strcmp((*res)->experiment, e->name) != 0) {
    st = at_error(AT_E_STATE, "cannot resume: %s holds the results of experiment '%.100s', not '%s'", from,
                  (*res)->experiment, e->name);
    at_results_free(*res);
    *res = NULL;
  }
  return st;
}

/* Rank 0 under MPI: results.h5 from the ranks' parts (run i from rank
 * i mod N's part, else from an earlier results.h5), in the experiment's
 * order; the parts are removed once it is written. */
static at_status merge_parts(const at_experiment *e, const char *out, int size, const char *merged) {
  at_results *m = NULL, *old = NULL, **part = calloc((size_t)size, sizeof *part);
  char p[1100];
  at_status st = part ? at_results_new(e->name, e->source, &m) : at_error(AT_E_NOMEM, "out of memory");
  if (st == AT_OK && access(merged, F_OK) == 0) st = at_results_read(merged, &old);
  for (int r = 0; r < size && st == AT_OK; r++) {
    snprintf(p, sizeof p, "%s/results.rank%d.h5", out, r);
    if (access(p, F_OK) == 0) st = at_results_read(p, &part[r]);
  }
  for (int i = 0; i < e->n_runs && st == AT_OK; i++) {
    at_results *src = part[i % size] && at_results_find(part[i % size], e->runs[i].run_id) ? part[i % size] : old;
    if (src && at_results_find(src, e->runs[i].run_id)) st = at_results_move_run(m, src, e->runs[i].run_id);
  }
  if (st == AT_OK) st = at_results_write(m, merged);
  for (int r = 0; r < size && st == AT_OK; r++) {
    snprintf(p, sizeof p, "%s/results.rank%d.h5", out, r);
    remove(p);
  }
  for (int r = 0; part && r < size; r++) at_results_free(part[r]);
  free(part);
  at_results_free(old);
  at_results_free(m);
  return st;
}

at_status at_experiment_train(const at_experiment *e, const at_train_opts *o, int *n_failed) {
  *n_failed = 0;
  char out[1024], path[1100], merged[1100], ckdir[1100];  /* ckdir + "/" + run_id + ".h5" fits x.ckpt */
  at_dist d = at_dist_self();
  int dp = o->data_parallel && d.size > 1, spread = d.size > 1 && !dp;
  out_dir_of(e, o, out, sizeof out);
  at_status st = mkdir_p(out);
  if (st == AT_OK) st = check_writable(out);
  snprintf(ckdir, sizeof ckdir, "%s/checkpoints", out);
  if (st == AT_OK) st = mkdir_p(ckdir);
  if (!at_dist_all(st == AT_OK)) return st != AT_OK ? st : at_error(AT_E_IO, "another rank could not use %s", out);
  snprintf(merged, sizeof merged, "%s/results.h5", out);
  if (spread) snprintf(path, sizeof path, "%s/results.rank%d.h5", out, d.rank);
  else snprintf(path, sizeof path, "%s", merged);
  at_results *res = NULL;
  st = open_results(e, o, path, merged, &res);
  if (!at_dist_all(st == AT_OK)) {
    at_results_free(res);
    return st != AT_OK ? st : at_error(AT_E_STATE, "another rank could not open its results (its message is above)");
  }
  progress pg = {dp && d.rank ? NULL : o->log ? o->log : stdout, o->progress, 0, 0};
  for (int i = spread ? d.rank : 0; i < e->n_runs && st == AT_OK; i += spread ? d.size : 1) {
    run_ctx x = {e, &e->runs[i], o, "", "", "", res, &pg, !dp || d.rank == 0, dp};
    snprintf(x.out, sizeof x.out, "%s", out);
    snprintf(x.ckpt, sizeof x.ckpt, "%s/%s.h5", ckdir, e->runs[i].run_id);
    snprintf(x.results_path, sizeof x.results_path, "%s", path);
    st = train_run(&x);
    const at_results_run *rr = at_results_find(res, e->runs[i].run_id);
    if (rr && strncmp(rr->status, "stopped", 7) == 0) (*n_failed)++;
  }
  if (spread && st == AT_OK) st = at_results_write(res, path); /* a rank without runs leaves its part too */
  at_results_free(res);
  if (!at_dist_all(st == AT_OK))
    return st != AT_OK ? st
                       : at_error(AT_E_STATE, "another rank failed (its message is above); the finished runs are in "
                                              "%s/results.rank*.h5: continue with --resume", out);
  if (d.rank != 0) return AT_OK;
  if (spread && (st = merge_parts(e, out, d.size, merged)) != AT_OK) return st;
  return at_experiment_report(e, out, pg.out);
}

at_status at_experiment_describe(const at_experiment *e, FILE *out) {
  for (int i = 0; i < e->n_runs; i++) {
    const at_run_cfg *rc = &e->runs[i];
    at_model_cfg mc = rc->model;
    mc.vocab_size = rc->data.vocab_size;
    mc.max_seq_len = rc->data.seq_len;
    at_model *m = NULL;
    at_status st = at_model_new_uninit(&mc, &m);
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
