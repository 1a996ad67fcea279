/* experiments/report_view.h: what the table writer (report.c) hands the plot
 * writer (plots.c): the runs of an experiment arranged as the table shows
 * them, rows (base names) by columns (non-best-over sweep points), each cell
 * the best point of its sweep with the seeds of that point. Internal to
 * experiments/. */
#ifndef AT_REPORT_VIEW_H
#define AT_REPORT_VIEW_H

#include <stdio.h>

#include "experiments/results.h"
#include "experiments/runner.h"

typedef struct at_report_cell {
  int best;        /* a run of the best point (into e->runs), -1: none finished */
  double value;    /* its metric: the mean over seeds */
  double std;      /* the sample standard deviation over seeds (NAN: one seed) */
  int n;           /* seeds */
} at_report_cell;

typedef struct at_report_view {
  const at_experiment *e;
  const at_results *res;
  const char *metric;            /* report.metric ("auto", "eval_loss", "eval_accuracy") */
  char (*rows)[64];
  int nr;
  char (*cols)[256];
  int nc;
  const at_report_cell *cells;   /* [nr * nc] */
  const int *row_of, *col_of;    /* each run's row and column */
} at_report_view;

/* A number of one run (NAN when it has none). */
typedef double (*at_run_value)(const at_results_run *rr, const void *arg);

/* The mean and sample standard deviation (NAN: one seed, or no seed key) of
 * get(run) over the finished runs of cell cl's best point (its seeds); both
 * NAN when no run has a finite value. */
void at_report_cell_mean(const at_report_view *v, const at_report_cell *cl, at_run_value get, const void *arg,
                         double *mean, double *sd);

/* The metric a run is ranked by (report.metric, `auto` resolved). */
const char *at_report_run_metric(const char *metric, const at_run_cfg *rc);

/* Row r's first finished run (NULL: none) and the median training tokens/s
 * of its finished runs (NAN: none). */
const at_results_run *at_report_row_run(const at_report_view *v, int r, double *median_tps);

/* Writes the plots of <out>/plot/ and their PNGs beside the table (each with
 * its data files and gnuplot script): curves.png (every table column's eval
 * metric and training loss by step), tokens.png (the eval metric against
 * training tokens), length.png (accuracy against sequence length, per task
 * evaluated at two or more lengths), needle.png (needle accuracy by depth
 * and length) and cost.png (training tokens/s, cache bytes per token and
 * state bytes per row). A plot without data is not made; without gnuplot
 * the data and scripts are kept. */
at_status at_report_plots(const at_report_view *v, const char *out_dir, FILE *log);

#endif
