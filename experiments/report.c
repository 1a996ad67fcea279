/* experiments/report.c: the comparison table (table.md, table.csv) of an
 * experiment's results, and the view of it the plots are drawn from
 * (experiments/plots.c).
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
 * parameters, the median training tokens/s of its runs, its cache bytes per
 * token and its state bytes.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "experiments/report_view.h"

static int higher_is_better(const char *metric) { return strcmp(metric, "eval_loss") != 0; }

/* The metric a run is ranked by: report.metric, where `auto` means the loss
 * (bits per byte) of byte-level text and the accuracy of token tasks. */
const char *at_report_run_metric(const char *metric, const at_run_cfg *rc) {
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

typedef at_report_cell cell;

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

void at_report_cell_mean(const at_report_view *v, const at_report_cell *cl, at_run_value get, const void *arg,
                         double *mean, double *sd) {
  const at_experiment *e = v->e;
  *mean = *sd = NAN;
  if (cl->best < 0) return;
  char bp[256], bq[256];
  best_point_of(e, &e->runs[cl->best], bp, sizeof bp);
  point_stats p = {cl->best, 0, 0, 0};
  for (int i = 0; i < e->n_runs; i++) {
    if (v->row_of[i] != v->row_of[cl->best] || v->col_of[i] != v->col_of[cl->best]) continue;
    best_point_of(e, &e->runs[i], bq, sizeof bq);
    const at_results_run *rr = strcmp(bp, bq) ? NULL : at_results_find(v->res, e->runs[i].run_id);
    double x = rr && !strcmp(rr->status, "ok") ? get(rr, arg) : NAN;
    if (isfinite(x)) p.n++, p.sum += x, p.sumsq += x * x;
  }
  if (p.n) point_mean(&p, mean, sd);
  if (e->seed_key < 0) *sd = NAN;
}

typedef struct set_metric {
  const char *set, *metric;
} set_metric;

static double evalset_value(const at_results_run *rr, const void *arg) {
  const set_metric *sm = arg;
  return evalset_metric(rr, sm->set, sm->metric);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

const at_results_run *at_report_row_run(const at_report_view *v, int r, double *median_tps) {
  const at_experiment *e = v->e;
  const at_results_run *first = NULL;
  double *t = malloc((size_t)e->n_runs * sizeof *t);
  int n = 0;
  *median_tps = NAN;
  for (int i = 0; t && i < e->n_runs; i++) {
    const at_results_run *rr = v->row_of[i] == r ? at_results_find(v->res, e->runs[i].run_id) : NULL;
    if (!rr || strcmp(rr->status, "ok")) continue;
    if (!n) first = rr;
    t[n++] = rr->tokens_per_second;
  }
  if (n) {
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    *median_tps = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
  }
  free(t);
  return first;
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
    double v = rr && !strcmp(rr->status, "ok") ? metric_of(rr, at_report_run_metric(metric, &e->runs[i])) : NAN;
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
    int hib = higher_is_better(at_report_run_metric(metric, &e->runs[points[p].first]));
    if (cl->best < 0 || (hib ? mean > cl->value : mean < cl->value))
      *cl = (cell){points[p].first, mean, e->seed_key >= 0 ? sd : NAN, points[p].n};
  }

  at_report_view view = {e, res, metric, rows, nr, cols, nc, cells, row_of, col_of};
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
    if (most == 1) fprintf(f, ": one seed, so no spread");
    else fprintf(f, ": mean ± standard deviation over %d seeds", most);
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
  fprintf(f, " params | tokens/s | cache B/token | state B |\n|---|");
  for (int q = 0; q < ndc; q++) fprintf(f, "---|");
  fprintf(f, "---|---|---|---|\n");
  for (int r = 0; r < nr; r++) {
    fprintf(f, "| %s |", rows[r]);
    for (int q = 0; q < ndc; q++) {
      const cell *cl = &cells[r * nc + dcols[q][0]];
      char v[64], bp[256] = "";
      double mean = cl->value, sd = cl->std;
      const char *m = cl->best >= 0 ? at_report_run_metric(metric, &e->runs[cl->best]) : metric;
      set_metric sm = {dcols[q][1] >= 0 ? sets[dcols[q][1]] : NULL, m};
      if (sm.set) at_report_cell_mean(&view, cl, evalset_value, &sm, &mean, &sd);
      fmt_metric(m, cl->best >= 0 ? at_task_byte_level(&e->runs[cl->best].data) : text, mean, sd, v, sizeof v);
      if (cl->best >= 0 && dcols[q][1] < 0) best_point_of(e, &e->runs[cl->best], bp, sizeof bp);
      fprintf(f, " %s%s%s%s |", v, bp[0] ? " (" : "", bp, bp[0] ? ")" : "");
    }
    double tps;
    const at_results_run *rr = at_report_row_run(&view, r, &tps);
    const at_results_extra *cb = rr ? at_results_get(rr, "cache_bytes_per_token") : NULL,
                           *sb = rr ? at_results_get(rr, "state_bytes") : NULL;
    if (rr) fprintf(f, " %lld | %.0f | %.0f | %.0f |\n", (long long)rr->params, tps, cb ? cb->num : NAN, sb ? sb->num : NAN);
    else fprintf(f, " — | — | — | — |\n");
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
  if ((st = write_csv(e, res, out_dir)) == AT_OK) st = at_report_plots(&view, out_dir, log);
done:
  free(rows), free(cols), free(cells), free(row_of), free(col_of), free(points);
  at_results_free(res);
  return st;
}
