/* experiments/report.c: the comparison table (table.md) and the curves
 * (curves.png via gnuplot) of an experiment's results.
 *
 * Runs that differ only in "best-over" sweep keys (by default every sweep
 * key but the seed: a learning-rate grid) are one table entry: the point
 * with the best final metric. A `seed` sweep key is averaged: an entry is
 * the mean and sample standard deviation over the seeds of a point, and the
 * best point is the one with the best mean. Sweep keys that are neither
 * (e.g. data.task) become the columns of a pivot table: rows are runs,
 * columns their values. Each test set of data.eval adds a column beside
 * every column it was evaluated in ("mqar 2x": the final metric of the
 * cell's best point on that set). table.csv beside table.md lists every run
 * (each seed) with its final metrics, those of its test sets included.
 * With `metric: auto` each column is ranked by its task's metric (text in
 * bits per byte, token tasks by accuracy). The table ends with each row's
 * parameters and the median training tokens/s of its runs.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "experiments/results.h"
#include "experiments/runner.h"

static int higher_is_better(const char *metric) { return strcmp(metric, "eval_loss") != 0; }

/* The metric a run is ranked by: report.metric, where `auto` means the loss
 * (bits per byte) of byte-level text and the accuracy of token tasks. */
static const char *run_metric(const char *metric, const at_run_cfg *rc) {
  if (strcmp(metric, "auto")) return metric;
  return at_task_byte_level(&rc->data) ? "eval_loss" : "eval_accuracy";
}

static double metric_of(const at_results_run *r, const char *metric) {
  return strcmp(metric, "eval_loss") == 0 ? r->final_eval_loss : r->final_eval_accuracy;
}

#define MAX_SETS (4 * AT_MAX_EVAL_SETS)

/* The names of the experiment's test sets (data.eval), in the order the
 * runs name them. */
static int evalset_names(const at_experiment *e, const char **names) {
  int n = 0;
  for (int i = 0; i < e->n_runs; i++)
    for (int j = 0; j < e->runs[i].n_evals; j++) {
      const char *nm = e->runs[i].evals[j].name;
      int k = 0;
      while (k < n && strcmp(names[k], nm)) k++;
      if (k == n && n < MAX_SETS) names[n++] = nm;
    }
  return n;
}

/* A run's final metric on test set `name` (NAN if it has none). */
static double evalset_metric(const at_results_run *rr, const char *name, const char *metric) {
  const at_results_evalset *es = rr ? at_results_get_evalset(rr, name) : NULL;
  if (!es || !es->n) return NAN;
  return strcmp(metric, "eval_loss") == 0 ? es->loss[es->n - 1] : es->accuracy[es->n - 1];
}

/* The columns key of a run: its values of the sweep keys that are not
 * best-over, joined ("data.task=mqar"), or "" when there are none. */
static void column_of(const at_experiment *e, const at_run_cfg *rc, char *buf, size_t n) {
  buf[0] = '\0';
  for (int k = 0; k < e->n_sweep; k++) {
    if (e->sweep_best[k] || k == e->seed_key) continue;
    size_t l = strlen(buf);
    snprintf(buf + l, n - l, "%s%s", l ? " " : "", rc->sweep_values[k]);
  }
}

static void best_point_of(const at_experiment *e, const at_run_cfg *rc, char *buf, size_t n) {
  buf[0] = '\0';
  for (int k = 0; k < e->n_sweep; k++) {
    if (!e->sweep_best[k]) continue;
    size_t l = strlen(buf);
    snprintf(buf + l, n - l, "%s%s=%s", l ? " " : "", e->sweep_keys[k], rc->sweep_values[k]);
  }
}

typedef struct cell {
  int best;        /* a run of the best point (into e->runs), -1: none finished */
  double value;    /* its metric: the mean over seeds */
  double std;      /* the sample standard deviation over seeds (NAN: one seed) */
  int n;           /* seeds */
} cell;

/* "97.6%", "97.6 ± 0.4%", "2.273 bpb", "2.273 ± 0.011 bpb", "0.1234". */
static void fmt_metric(const char *metric, int text, double v, double sd, char *buf, size_t n) {
  int loss = strcmp(metric, "eval_loss") == 0;
  double k = loss ? (text ? 1 / log(2.0) : 1) : 100;
  const char *unit = loss ? (text ? " bpb" : "") : "%";
  if (!isfinite(v)) snprintf(buf, n, "—");
  else if (isfinite(sd)) snprintf(buf, n, loss ? "%.3f ± %.3f%s" : "%.1f ± %.1f%s", k * v, k * sd, unit);
  else snprintf(buf, n, loss && !text ? "%.4f%s" : loss ? "%.3f%s" : "%.1f%s", k * v, unit);
}

/* Mean and sample standard deviation of the finite final metrics of the
 * runs in one cell at one best-over point (the seeds of that point). */
typedef struct point_stats {
  int first;       /* the point's first run (into e->runs) */
  int n;
  double sum, sumsq;
} point_stats;

static void point_mean(const point_stats *p, double *mean, double *sd) {
  *mean = p->sum / p->n;
  *sd = p->n > 1 ? sqrt(fmax(0, (p->sumsq - p->n * *mean * *mean) / (p->n - 1))) : NAN;
}

/* The mean (and sample standard deviation over seeds) of the final metric
 * on test set `set` of the runs of a cell's best point. */
static void set_point_mean(const at_experiment *e, const at_results *res, const int *row_of, const int *col_of,
                           const cell *cl, const char *set, const char *metric, double *mean, double *sd) {
  *mean = *sd = NAN;
  if (cl->best < 0) return;
  char bp[256], bq[256];
  best_point_of(e, &e->runs[cl->best], bp, sizeof bp);
  point_stats p = {cl->best, 0, 0, 0};
  for (int i = 0; i < e->n_runs; i++) {
    if (row_of[i] != row_of[cl->best] || col_of[i] != col_of[cl->best]) continue;
    best_point_of(e, &e->runs[i], bq, sizeof bq);
    double v = strcmp(bp, bq) ? NAN : evalset_metric(at_results_find(res, e->runs[i].run_id), set, metric);
    if (isfinite(v)) p.n++, p.sum += v, p.sumsq += v * v;
  }
  if (p.n) point_mean(&p, mean, sd);
  if (e->seed_key < 0) *sd = NAN;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Row r's parameters (of its first finished run; 0: none) and the median
 * training tokens/s of its finished runs (NAN: none). */
static void row_summary(const at_experiment *e, const at_results *res, const int *row_of, int r,
                        int64_t *params, double *tps) {
  double *v = malloc((size_t)e->n_runs * sizeof *v);
  int n = 0;
  *params = 0, *tps = NAN;
  for (int i = 0; v && i < e->n_runs; i++) {
    const at_results_run *rr = row_of[i] == r ? at_results_find(res, e->runs[i].run_id) : NULL;
    if (!rr || strcmp(rr->status, "ok")) continue;
    if (!n) *params = rr->params;
    v[n++] = rr->tokens_per_second;
  }
  if (n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *tps = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  }
  free(v);
}

/* Every run with its sweep values and final figures (table.csv). */
static at_status write_csv(const at_experiment *e, const at_results *res, const char *out_dir) {
  char path[1200], tmp[1300];
  snprintf(path, sizeof path, "%s/table.csv", out_dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return at_error(AT_E_IO, "%s: cannot write", path);
  const char *sets[MAX_SETS];
  int ns = evalset_names(e, sets);
  fprintf(f, "run,base,sweep_point,seed,status,final_eval_loss,final_eval_accuracy,bits_per_byte,params,"
             "tokens_per_second,cache_bytes_per_token,state_bytes,steps,wall_seconds");
  for (int k = 0; k < ns; k++) fprintf(f, ",\"%s:final_eval_loss\",\"%s:final_eval_accuracy\"", sets[k], sets[k]);
  fprintf(f, "\n");
  for (int i = 0; i < e->n_runs; i++) {
    const at_run_cfg *rc = &e->runs[i];
    const at_results_run *rr = at_results_find(res, rc->run_id);
    if (!rr) continue;
    const at_results_extra *bpb = at_results_get(rr, "bits_per_byte"), *cb = at_results_get(rr, "cache_bytes_per_token"),
                           *sb = at_results_get(rr, "state_bytes");
    fprintf(f, "\"%s\",\"%s\",\"%s\",%llu,\"%s\",%.9g,%.9g,%.9g,%lld,%.6g,%.9g,%.9g,%lld,%.3f", rr->name,
            rc->base_name, rc->sweep_point, (unsigned long long)rc->seed, rr->status, rr->final_eval_loss,
            rr->final_eval_accuracy, bpb ? bpb->num : NAN, (long long)rr->params, rr->tokens_per_second,
            cb ? cb->num : NAN, sb ? sb->num : NAN, (long long)rr->steps, rr->wall_seconds);
    for (int k = 0; k < ns; k++)
      fprintf(f, ",%.9g,%.9g", evalset_metric(rr, sets[k], "eval_loss"), evalset_metric(rr, sets[k], "eval_accuracy"));
    fprintf(f, "\n");
  }
  if (fclose(f) != 0 || rename(tmp, path) != 0) return at_error(AT_E_IO, "%s: cannot write", path);
  return AT_OK;
}


/* ---- curves ------------------------------------------------------------------ */

/* `s` inside a gnuplot single-quoted string: quotes doubled, control
 * characters (a newline would end the command) as spaces. Names come from
 * experiment files and results: they must not become gnuplot commands. */
static const char *gp_quote(const char *s, char *buf, size_t n) {
  size_t j = 0;
  for (; *s && j + 3 < n; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '\'') buf[j++] = '\'', buf[j++] = '\'';
    else buf[j++] = ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
  }
  buf[j] = '\0';
  return buf;
}

/* `s` as one shell word ('...' with every ' written '\''). */
static void sh_quote(const char *s, char *buf, size_t n) {
  size_t j = 0;
  if (n < 3) return;
  buf[j++] = '\'';
  for (; *s && j + 6 < n; s++) {
    if (*s == '\'') memcpy(buf + j, "'\\''", 4), j += 4;
    else buf[j++] = *s;
  }
  buf[j++] = '\'';
  buf[j] = '\0';
}

/* Writes <out>/plot/<id>.train.dat (step, smoothed training loss) and
 * <id>.eval.dat (step, eval loss, eval accuracy) for the best run of every
 * cell, a gnuplot script with one column of panels per table column (eval
 * metric on top, training loss below, one line per row), and runs gnuplot
 * to make curves.png. Without gnuplot the data and script are kept. */
static at_status plot(const at_experiment *e, const at_results *res, const char *out_dir, FILE *log,
                      char (*rows)[64], int nr, char (*cols)[256], int nc, const cell *cells,
                      const char *metric) {
  char dir[1200], gp[1300], png[1200];
  snprintf(dir, sizeof dir, "%s/plot", out_dir);
  mkdir(dir, 0755);
  snprintf(gp, sizeof gp, "%s/curves.gp", dir);
  snprintf(png, sizeof png, "%s/curves.png", out_dir);
  FILE *g = fopen(gp, "w");
  if (!g) return at_error(AT_E_IO, "%s: cannot write", gp);
  char q[3000], q2[600];
  fprintf(g, "# gnuplot script written by ./train; run: gnuplot %s\n", gp_quote(gp, q, sizeof q));
  fprintf(g, "set terminal pngcairo size %d,700 font ',9' noenhanced\nset output '%s'\n", 420 * (nc > 0 ? nc : 1) + 80,
          gp_quote(png, q, sizeof q));
  fprintf(g, "set multiplot layout 2,%d title '%s'\nset key bottom right font ',8'\nset grid\n", nc > 0 ? nc : 1,
          gp_quote(e->name, q, sizeof q));
  for (int panel = 0; panel < 2; panel++)
    for (int c = 0; c < nc; c++) {
      const char *m = metric;
      for (int r = 0; r < nr; r++)
        if (cells[r * nc + c].best >= 0) m = run_metric(metric, &e->runs[cells[r * nc + c].best]);
      int acc = strcmp(m, "eval_loss") != 0;
      fprintf(g, "set title '%s'\nset xlabel 'step'\n",
              gp_quote(panel == 0 ? (cols[c][0] ? cols[c] : (acc ? "evaluation accuracy" : "evaluation loss"))
                                  : "training loss (EMA 0.98)", q, sizeof q));
      if (panel == 0 && acc) fprintf(g, "set ylabel 'accuracy'\nset yrange [0:1]\nunset logscale y\n");
      else fprintf(g, "set ylabel 'loss'\nset autoscale y\nset logscale y\n");
      int first = 1;
      for (int r = 0; r < nr; r++) {
        const cell *cl = &cells[r * nc + c];
        if (cl->best < 0) continue;
        const at_run_cfg *rc = &e->runs[cl->best];
        const at_results_run *rr = at_results_find(res, rc->run_id);
        if (!rr) continue;
        char dat[1500];
        snprintf(dat, sizeof dat, "%s/%s.%s.dat", dir, rc->run_id, panel ? "train" : "eval");
        FILE *d = fopen(dat, "w");
        if (!d) continue;
        if (panel) {
          double ema = NAN;
          for (int64_t i = 0; i < rr->n_train; i++) {
            double v = rr->train_loss[i];
            if (!isfinite(v)) continue;
            ema = isfinite(ema) ? 0.98 * ema + 0.02 * v : v;
            fprintf(d, "%lld %.6g\n", (long long)rr->train_step[i], ema);
          }
        } else {
          for (int64_t i = 0; i < rr->n_eval; i++)
            fprintf(d, "%lld %.6g %.6g\n", (long long)rr->eval_step[i], rr->eval_loss[i], rr->eval_accuracy[i]);
        }
        fclose(d);
        fprintf(g, "%s '%s' using 1:%d with lines lw 2 title '%s'", first ? "plot" : ", \\\n    ",
                gp_quote(dat, q, sizeof q), panel ? 2 : (acc ? 3 : 2), gp_quote(rows[r], q2, sizeof q2));
        first = 0;
        for (int k = 0; !panel && k < rr->n_evalsets; k++) { /* test sets: dashed */
          const at_results_evalset *es = &rr->evalsets[k];
          char sdat[1600];
          snprintf(sdat, sizeof sdat, "%s/%s.eval.%s.dat", dir, rc->run_id, es->name);
          FILE *sd = fopen(sdat, "w");
          if (!sd) continue;
          for (int64_t i = 0; i < es->n; i++)
            fprintf(sd, "%lld %.6g %.6g\n", (long long)es->step[i], es->loss[i], es->accuracy[i]);
          fclose(sd);
          fprintf(g, ", \\\n    '%s' using 1:%d with lines lw 2 dt 2 title '%s %s'", sdat, acc ? 3 : 2, rows[r], es->name);
        }
      }
      if (first) fprintf(g, "plot NaN notitle");
      fprintf(g, "\n");
    }
  fprintf(g, "unset multiplot\n");
  fclose(g);
  char cmd[sizeof q + 32];
  sh_quote(gp, q, sizeof q);
  snprintf(cmd, sizeof cmd, "gnuplot %s 2>/dev/null", q);
  int rc = system("command -v gnuplot >/dev/null 2>&1") == 0 ? system(cmd) : -1;
  if (log) {
    if (rc == 0) fprintf(log, "wrote %s\n", png);
    else fprintf(log, "gnuplot %s: the curves' data and script are in %s\n", rc == -1 ? "not found" : "failed", dir);
  }
  return AT_OK;
}

at_status at_experiment_report(const at_experiment *e, const char *out_dir, FILE *log) {
  char path[1200];
  snprintf(path, sizeof path, "%s/results.h5", out_dir);
  at_results *res = NULL;
  at_status st = at_results_read(path, &res);
  if (st != AT_OK) return st;
  const char *metric = e->report_metric[0] ? e->report_metric : "eval_accuracy";

  /* rows (base names) and columns (non-best-over sweep values), in file order */
  int nr = 0, nc = 0;
  char (*rows)[64] = calloc((size_t)e->n_runs, sizeof *rows);
  char (*cols)[256] = calloc((size_t)e->n_runs, sizeof *cols);
  cell *cells = malloc((size_t)e->n_runs * (size_t)e->n_runs * sizeof *cells);
  int *row_of = malloc((size_t)e->n_runs * sizeof *row_of), *col_of = malloc((size_t)e->n_runs * sizeof *col_of);
  point_stats *points = malloc((size_t)e->n_runs * sizeof *points);
  if (!rows || !cols || !cells || !row_of || !col_of || !points) {
    st = at_error(AT_E_NOMEM, "out of memory");
    goto done;
  }
  for (int i = 0; i < e->n_runs; i++) {
    const at_run_cfg *rc = &e->runs[i];
    char col[256];
    column_of(e, rc, col, sizeof col);
    int r = 0, c = 0;
    while (r < nr && strcmp(rows[r], rc->base_name)) r++;
    if (r == nr) snprintf(rows[nr++], sizeof rows[0], "%s", rc->base_name);
    while (c < nc && strcmp(cols[c], col)) c++;
    if (c == nc) snprintf(cols[nc++], sizeof cols[0], "%s", col);
    row_of[i] = r, col_of[i] = c;
  }
  for (int i = 0; i < nr * nc; i++) cells[i] = (cell){-1, NAN, NAN, 0};
  /* the seeds of each (cell, best-over point), then the best point by mean */
  int np = 0;
  for (int i = 0; i < e->n_runs; i++) {
    const at_results_run *rr = at_results_find(res, e->runs[i].run_id);
    double v = rr && !strcmp(rr->status, "ok") ? metric_of(rr, run_metric(metric, &e->runs[i])) : NAN;
    if (!isfinite(v)) continue;
    char bp[256], bq[256];
    best_point_of(e, &e->runs[i], bp, sizeof bp);
    int p = 0;
    for (; p < np; p++) {
      int j = points[p].first;
      best_point_of(e, &e->runs[j], bq, sizeof bq);
      if (row_of[j] == row_of[i] && col_of[j] == col_of[i] && !strcmp(bp, bq)) break;
    }
    if (p == np) points[np++] = (point_stats){i, 0, 0, 0};
    points[p].n++, points[p].sum += v, points[p].sumsq += v * v;
  }
  for (int p = 0; p < np; p++) {
    double mean, sd;
    point_mean(&points[p], &mean, &sd);
    cell *cl = &cells[row_of[points[p].first] * nc + col_of[points[p].first]];
    int hib = higher_is_better(run_metric(metric, &e->runs[points[p].first]));
    if (cl->best < 0 || (hib ? mean > cl->value : mean < cl->value))
      *cl = (cell){points[p].first, mean, e->seed_key >= 0 ? sd : NAN, points[p].n};
  }

  char tpath[1200];
  snprintf(tpath, sizeof tpath, "%s/table.md", out_dir);
  char tmp[1300];
  snprintf(tmp, sizeof tmp, "%s.tmp", tpath);
  FILE *f = fopen(tmp, "w");
  if (!f) {
    st = at_error(AT_E_IO, "%s: cannot write", tpath);
    goto done;
  }
  int text = e->n_runs && at_task_byte_level(&e->runs[0].data);
  fprintf(f, "# %s\n\n", e->name);
  if (!strcmp(metric, "auto"))
    fprintf(f, "Final evaluation accuracy of token tasks and loss in bits per byte of byte-level text");
  else
    fprintf(f, "Final %s%s", strcmp(metric, "eval_loss") ? "evaluation accuracy" : "evaluation loss",
            text && !strcmp(metric, "eval_loss") ? " in bits per byte" : "");
  int any_best = 0;
  for (int k = 0; k < e->n_sweep; k++)
    if (e->sweep_best[k])
      fprintf(f, "%s %s", any_best++ ? "," : " (best point of the sweep over", e->sweep_keys[k]);
  fprintf(f, "%s", any_best ? ")" : "");
  if (e->seed_key >= 0) {
    int most = 0;
    for (int i = 0; i < nr * nc; i++) most = cells[i].n > most ? cells[i].n : most;
    fprintf(f, ": mean ± standard deviation over %d seed%s", most, most == 1 ? "" : "s");
  }
  fprintf(f, ".\n\n");
  /* pivot: each column, then its test sets */
  const char *sets[MAX_SETS];
  int ns = evalset_names(e, sets), ndc = 0;
  int (*dcols)[2] = malloc((size_t)nc * (size_t)(ns + 1) * sizeof *dcols); /* (column, set or -1) */
  if (!dcols) {
    fclose(f);
    st = at_error(AT_E_NOMEM, "out of memory");
    goto done;
  }
  for (int c = 0; c < nc; c++) {
    dcols[ndc][0] = c, dcols[ndc++][1] = -1;
    for (int k = 0; k < ns; k++) {
      int has = 0;
      for (int i = 0; i < e->n_runs && !has; i++)
        for (int j = 0; col_of[i] == c && j < e->runs[i].n_evals; j++) has |= !strcmp(e->runs[i].evals[j].name, sets[k]);
      if (has) dcols[ndc][0] = c, dcols[ndc++][1] = k;
    }
  }
  fprintf(f, "| run |");
  for (int q = 0; q < ndc; q++) {
    const char *cn = cols[dcols[q][0]][0] ? cols[dcols[q][0]] : dcols[q][1] < 0 ? metric : "";
    fprintf(f, " %s%s%s |", cn, cn[0] && dcols[q][1] >= 0 ? " " : "", dcols[q][1] >= 0 ? sets[dcols[q][1]] : "");
  }
  fprintf(f, " params | tokens/s |\n|---|");
  for (int q = 0; q < ndc; q++) fprintf(f, "---|");
  fprintf(f, "---|---|\n");
  for (int r = 0; r < nr; r++) {
    fprintf(f, "| %s |", rows[r]);
    for (int q = 0; q < ndc; q++) {
      const cell *cl = &cells[r * nc + dcols[q][0]];
      char v[64], bp[256] = "";
      double mean = cl->value, sd = cl->std;
      const char *m = cl->best >= 0 ? run_metric(metric, &e->runs[cl->best]) : metric;
      if (dcols[q][1] >= 0) set_point_mean(e, res, row_of, col_of, cl, sets[dcols[q][1]], m, &mean, &sd);
      fmt_metric(m, cl->best >= 0 ? at_task_byte_level(&e->runs[cl->best].data) : text, mean, sd, v, sizeof v);
      if (cl->best >= 0 && dcols[q][1] < 0) best_point_of(e, &e->runs[cl->best], bp, sizeof bp);
      fprintf(f, " %s%s%s%s |", v, bp[0] ? " (" : "", bp, bp[0] ? ")" : "");
    }
    int64_t params;
    double tps;
    row_summary(e, res, row_of, r, &params, &tps);
    if (params) fprintf(f, " %lld | %.0f |\n", (long long)params, tps);
    else fprintf(f, " — | — |\n");
  }
  free(dcols);
  /* every run */
  fprintf(f, "\n## Every run\n\n| run | status | final loss | final accuracy |");
  for (int k = 0; k < ns; k++) fprintf(f, " %s loss | %s accuracy |", sets[k], sets[k]);
  fprintf(f, " params | tokens/s | cache B/token | state B | steps | wall s |\n|---|---|---|---|");
  for (int k = 0; k < ns; k++) fprintf(f, "---|---|");
  fprintf(f, "---|---|---|---|---|---|\n");
  for (int i = 0; i < e->n_runs; i++) {
    const at_results_run *rr = at_results_find(res, e->runs[i].run_id);
    if (!rr) {
      fprintf(f, "| %s | not run | | |", e->runs[i].name);
      for (int k = 0; k < ns; k++) fprintf(f, " | |");
      fprintf(f, " | | | | | |\n");
      continue;
    }
    const at_results_extra *cb = at_results_get(rr, "cache_bytes_per_token"), *sb = at_results_get(rr, "state_bytes");
    fprintf(f, "| %s | %s | %.4f | %.2f%% |", rr->name, rr->status, rr->final_eval_loss, 100 * rr->final_eval_accuracy);
    for (int k = 0; k < ns; k++)
      fprintf(f, " %.4f | %.2f%% |", evalset_metric(rr, sets[k], "eval_loss"), 100 * evalset_metric(rr, sets[k], "eval_accuracy"));
    fprintf(f, " %lld | %.0f | %.0f | %.0f | %lld | %.0f |\n", (long long)rr->params, rr->tokens_per_second,
            cb ? cb->num : NAN, sb ? sb->num : NAN, (long long)rr->steps, rr->wall_seconds);
  }
  int wr = ferror(f);
  wr |= fclose(f);
  if (wr != 0 || rename(tmp, tpath) != 0) {
    st = at_error(AT_E_IO, "%s: cannot write", tpath);
    goto done;
  }
  /* print the table */
  if (log) {
    FILE *t = fopen(tpath, "r");
    if (t) {
      char line[1024];
      fputc('\n', log);
      while (fgets(line, sizeof line, t)) fputs(line, log);
      fclose(t);
    }
    fprintf(log, "\nwrote %s and %s\n", tpath, path);
  }
  if ((st = write_csv(e, res, out_dir)) == AT_OK) st = plot(e, res, out_dir, log, rows, nr, cols, nc, cells, metric);
done:
  free(rows), free(cols), free(cells), free(row_of), free(col_of), free(points);
  at_results_free(res);
  return st;
}
