/* experiments/plots.c: the plots of an experiment's report, through gnuplot
 * (pngcairo). Each plot is a script <out>/plot/<name>.gp over data files in
 * <out>/plot/, run to make <out>/<name>.png; what goes into a plot is the
 * table's: one line (or bar, or heat-map row) per table row, the cell's best
 * point, averaged over its seeds where a number is read at the end of a run.
 *
 *   curves.png  per table column: eval metric by step (test sets dashed),
 *               smoothed training loss by step
 *   tokens.png  per table column: eval metric against training tokens
 *   length.png  per task evaluated at two or more lengths (sweep columns and
 *               data.eval test sets): final accuracy against sequence length
 *   needle.png  niah: final accuracy per depth bucket, a heat map of depth by
 *               length per row (niah columns at several lengths, or data.eval
 *               sets at other lengths), else of depth by row
 *   cost.png    per row: training tokens/s, cache bytes per token (KV
 *               caches, which grow with the context) and state bytes
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "experiments/report_view.h"

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

/* `s` as one double-quoted field of a gnuplot data file (no quotes or
 * control characters inside). */
static const char *dat_quote(const char *s, char *buf, size_t n) {
  size_t j = 0;
  if (n < 3) return "";
  buf[j++] = '"';
  for (; *s && j + 2 < n; s++) {
    unsigned char ch = (unsigned char)*s;
    buf[j++] = ch == '"' ? '\'' : ch < 0x20 || ch == 0x7f ? ' ' : (char)ch;
  }
  buf[j++] = '"';
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

typedef struct plot_ctx {
  const at_report_view *v;
  char dir[1200];      /* <out>/plot */
  const char *out_dir;
  FILE *log;
} plot_ctx;

/* Opens <dir>/<name>.gp for <out>/<name>.png: a multiplot of rows x cols
 * panels of w x h pixels. */
static FILE *gp_begin(const plot_ctx *p, const char *name, const char *title, int rows, int cols, int w, int h) {
  char gp[1300], png[1300], q[3000];
  snprintf(gp, sizeof gp, "%s/%s.gp", p->dir, name);
  snprintf(png, sizeof png, "%s/%s.png", p->out_dir, name);
  FILE *g = fopen(gp, "w");
  if (!g) return NULL;
  fprintf(g, "# gnuplot script written by ./train; run: gnuplot %s\n", gp_quote(gp, q, sizeof q));
  fprintf(g, "set terminal pngcairo size %d,%d font ',9' noenhanced\n", w * cols + 80, h * rows + 60);
  fprintf(g, "set output '%s'\n", gp_quote(png, q, sizeof q));
  fprintf(g, "set multiplot layout %d,%d title '", rows, cols);
  fprintf(g, "%s'\nset key bottom right font ',8'\nset grid\n", gp_quote(title, q, sizeof q));
  return g;
}

/* Ends the script, runs gnuplot on it and says what happened. */
static void gp_end(const plot_ctx *p, FILE *g, const char *name) {
  char gp[1300], png[1300], q[3000], cmd[3100];
  fprintf(g, "unset multiplot\n");
  fclose(g);
  snprintf(gp, sizeof gp, "%s/%s.gp", p->dir, name);
  snprintf(png, sizeof png, "%s/%s.png", p->out_dir, name);
  sh_quote(gp, q, sizeof q);
  snprintf(cmd, sizeof cmd, "gnuplot %s 2>/dev/null", q);
  int rc = system("command -v gnuplot >/dev/null 2>&1") == 0 ? system(cmd) : -1;
  if (!p->log) return;
  if (rc == 0) fprintf(p->log, "wrote %s\n", png);
  else fprintf(p->log, "gnuplot %s: the data and script of %s.png are in %s\n", rc == -1 ? "not found" : "failed", name,
               p->dir);
}

/* ---- curves and tokens ------------------------------------------------------- */

static const char *column_metric(const at_report_view *v, int c) {
  const char *m = v->metric;
  for (int r = 0; r < v->nr; r++)
    if (v->cells[r * v->nc + c].best >= 0) m = at_report_run_metric(v->metric, &v->e->runs[v->cells[r * v->nc + c].best]);
  return m;
}

/* <id>.eval.dat: step, eval loss, eval accuracy, training tokens; the same
 * for each test set (<id>.eval.<set>.dat). */
static void write_eval_dat(const plot_ctx *p, const at_results_run *rr, const char *id) {
  double per_step = rr->steps > 0 ? (double)rr->train_tokens / (double)rr->steps : NAN;
  char dat[1500];
  snprintf(dat, sizeof dat, "%s/%s.eval.dat", p->dir, id);
  FILE *d = fopen(dat, "w");
  if (!d) return;
  for (int64_t i = 0; i < rr->n_eval; i++)
    fprintf(d, "%lld %.6g %.6g %.6g\n", (long long)rr->eval_step[i], rr->eval_loss[i], rr->eval_accuracy[i],
            per_step * (double)rr->eval_step[i]);
  fclose(d);
  for (int k = 0; k < rr->n_evalsets; k++) {
    const at_results_evalset *es = &rr->evalsets[k];
    snprintf(dat, sizeof dat, "%s/%s.eval.%s.dat", p->dir, id, es->name);
    if (!(d = fopen(dat, "w"))) continue;
    for (int64_t i = 0; i < es->n; i++)
      fprintf(d, "%lld %.6g %.6g %.6g\n", (long long)es->step[i], es->loss[i], es->accuracy[i],
              per_step * (double)es->step[i]);
    fclose(d);
  }
}

/* <id>.train.dat: step, training loss smoothed by an EMA of 0.98. */
static void write_train_dat(const plot_ctx *p, const at_results_run *rr, const char *id) {
  char dat[1500];
  snprintf(dat, sizeof dat, "%s/%s.train.dat", p->dir, id);
  FILE *d = fopen(dat, "w");
  if (!d) return;
  double ema = NAN;
  for (int64_t i = 0; i < rr->n_train; i++) {
    double x = rr->train_loss[i];
    if (!isfinite(x)) continue;
    ema = isfinite(ema) ? 0.98 * ema + 0.02 * x : x;
    fprintf(d, "%lld %.6g\n", (long long)rr->train_step[i], ema);
  }
  fclose(d);
}

/* A panel with nothing to plot: "no data" on fixed axes (gnuplot refuses
 * to autoscale an empty plot, and the whole figure would fail). */
static void empty_panel(FILE *g) {
  fprintf(g, "unset logscale\nset label 1 'no data' at graph 0.5, 0.5 center\n"
             "plot [0:1] [0:1] -1 notitle\nunset label 1\n");
}

/* One panel of column c: kind 0 eval metric by step, 1 training loss by
 * step, 2 eval metric by training tokens. */
static void curve_panel(const plot_ctx *p, FILE *g, int c, int kind) {
  const at_report_view *v = p->v;
  int acc = strcmp(column_metric(v, c), "eval_loss") != 0 && kind != 1;
  char q[3000], q2[600];
  const char *title = kind == 1 ? "training loss (EMA 0.98)"
                      : v->cols[c][0] ? v->cols[c]
                      : acc ? "evaluation accuracy" : "evaluation loss";
  fprintf(g, "set title '%s'\nset xlabel '%s'\n", gp_quote(title, q, sizeof q), kind == 2 ? "training tokens" : "step");
  fprintf(g, kind == 2 ? "set logscale x\n" : "unset logscale x\n");
  if (acc) fprintf(g, "set ylabel 'accuracy'\nset yrange [0:1]\nunset logscale y\n");
  else fprintf(g, "set ylabel 'loss'\nset autoscale y\nset logscale y\n");
  int first = 1, ycol = kind == 1 ? 2 : acc ? 3 : 2, xcol = kind == 2 ? 4 : 1;
  /* evaluations with points: a run evaluated once is a point, not an empty line */
  const char *style = kind == 1 ? "lines" : "linespoints pt 7 ps 0.7";
  for (int r = 0; r < v->nr; r++) {
    const at_report_cell *cl = &v->cells[r * v->nc + c];
    const at_results_run *rr = cl->best >= 0 ? at_results_find(v->res, v->e->runs[cl->best].run_id) : NULL;
    if (!rr || (kind == 1 ? rr->n_train : rr->n_eval) == 0) continue; /* e.g. --eval-only without results.h5 */
    const char *id = v->e->runs[cl->best].run_id;
    char dat[1500];
    snprintf(dat, sizeof dat, "%s/%s.%s.dat", p->dir, id, kind == 1 ? "train" : "eval");
    fprintf(g, "%s '%s' using %d:%d with %s lw 2 title '%s'", first ? "plot" : ", \\\n    ", gp_quote(dat, q, sizeof q),
            xcol, ycol, style, gp_quote(v->rows[r], q2, sizeof q2));
    first = 0;
    for (int k = 0; kind != 1 && k < rr->n_evalsets; k++) { /* test sets: dashed */
      snprintf(dat, sizeof dat, "%s/%s.eval.%s.dat", p->dir, id, rr->evalsets[k].name);
      fprintf(g, ", \\\n    '%s' using %d:%d with %s lw 2 dt 2 title '%s %s'", gp_quote(dat, q, sizeof q), xcol, ycol, style,
              gp_quote(v->rows[r], q2, sizeof q2), rr->evalsets[k].name);
    }
  }
  if (first) empty_panel(g);
  else fprintf(g, "\n");
}

static void plot_curves(const plot_ctx *p) {
  const at_report_view *v = p->v;
  int nc = v->nc > 0 ? v->nc : 1;
  for (int i = 0; i < v->nr * v->nc; i++) {
    const at_report_cell *cl = &v->cells[i];
    const at_results_run *rr = cl->best >= 0 ? at_results_find(v->res, v->e->runs[cl->best].run_id) : NULL;
    if (rr) write_eval_dat(p, rr, v->e->runs[cl->best].run_id), write_train_dat(p, rr, v->e->runs[cl->best].run_id);
  }
  FILE *g = gp_begin(p, "curves", v->e->name, 2, nc, 420, 320);
  if (!g) return;
  for (int kind = 0; kind < 2; kind++)
    for (int c = 0; c < v->nc; c++) curve_panel(p, g, c, kind);
  gp_end(p, g, "curves");
  char title[300];
  snprintf(title, sizeof title, "%s: evaluation against training tokens", v->e->name);
  if (!(g = gp_begin(p, "tokens", title, 1, nc, 420, 340))) return;
  for (int c = 0; c < v->nc; c++) curve_panel(p, g, c, 2);
  gp_end(p, g, "tokens");
}

/* ---- accuracy against length ------------------------------------------------------ */

static double final_accuracy(const at_results_run *rr, const void *arg) {
  (void)arg;
  return rr->final_eval_accuracy;
}

static double set_accuracy(const at_results_run *rr, const void *arg) {
  const at_results_evalset *es = at_results_get_evalset(rr, (const char *)arg);
  return es && es->n ? es->accuracy[es->n - 1] : NAN;
}

typedef struct len_point {
  int64_t len;
  double acc, sd;
} len_point;

static int cmp_len(const void *a, const void *b) {
  int64_t x = ((const len_point *)a)->len, y = ((const len_point *)b)->len;
  return (x > y) - (x < y);
}

/* Row r's (length, accuracy) points of token task `kind`, sorted by length:
 * each column's training length and each of its test sets. */
static int length_points(const at_report_view *v, int r, at_task_kind kind, len_point *pt) {
  int n = 0;
  for (int c = 0; c < v->nc; c++) {
    const at_report_cell *cl = &v->cells[r * v->nc + c];
    if (cl->best < 0) continue;
    const at_run_cfg *rc = &v->e->runs[cl->best];
    if (rc->data.kind != kind || at_task_byte_level(&rc->data)) continue;
    pt[n].len = rc->data.seq_len;
    at_report_cell_mean(v, cl, final_accuracy, NULL, &pt[n].acc, &pt[n].sd);
    n += isfinite(pt[n].acc);
    for (int j = 0; j < rc->n_evals; j++) {
      pt[n].len = rc->evals[j].data.seq_len;
      at_report_cell_mean(v, cl, set_accuracy, rc->evals[j].name, &pt[n].acc, &pt[n].sd);
      n += isfinite(pt[n].acc);
    }
  }
  qsort(pt, (size_t)n, sizeof *pt, cmp_len);
  return n;
}

/* Tasks with two or more distinct lengths over the rows. */
static int length_tasks(const at_report_view *v, len_point *pt, at_task_kind *tasks) {
  int nt = 0;
  for (int k = 0; k < AT_TASK_COUNT; k++) {
    int64_t first = -1;
    int distinct = 0;
    for (int r = 0; r < v->nr && !distinct; r++) {
      int n = length_points(v, r, (at_task_kind)k, pt);
      for (int i = 0; i < n; i++) {
        if (first < 0) first = pt[i].len;
        distinct |= pt[i].len != first;
      }
    }
    if (distinct) tasks[nt++] = (at_task_kind)k;
  }
  return nt;
}

static void plot_length(const plot_ctx *p) {
  const at_report_view *v = p->v;
  len_point *pt = malloc((size_t)(v->nc * (1 + AT_MAX_EVAL_SETS) + 1) * sizeof *pt);
  at_task_kind tasks[AT_TASK_COUNT];
  int nt = pt ? length_tasks(v, pt, tasks) : 0;
  char title[300], q[3000], q2[600];
  snprintf(title, sizeof title, "%s: final accuracy against sequence length", v->e->name);
  FILE *g = nt ? gp_begin(p, "length", title, 1, nt, 460, 360) : NULL;
  for (int t = 0; g && t < nt; t++) {
    fprintf(g, "set title '%s'\nset xlabel 'sequence length'\nset ylabel 'accuracy %%'\n", at_task_name(tasks[t]));
    fprintf(g, "set logscale x 2\nunset logscale y\nset yrange [0:100]\nset key top right font ',8'\n");
    int first = 1;
    for (int r = 0; r < v->nr; r++) {
      int n = length_points(v, r, tasks[t], pt);
      if (!n) continue;
      char dat[1500];
      snprintf(dat, sizeof dat, "%s/length.%s.%d.dat", p->dir, at_task_name(tasks[t]), r);
      FILE *d = fopen(dat, "w");
      if (!d) continue;
      for (int i = 0; i < n; i++)
        fprintf(d, "%lld %.6g %.6g\n", (long long)pt[i].len, 100 * pt[i].acc, isfinite(pt[i].sd) ? 100 * pt[i].sd : 0);
      fclose(d);
      fprintf(g, "%s '%s' using 1:2:3 with yerrorlines lw 2 title '%s'", first ? "plot" : ", \\\n    ",
              gp_quote(dat, q, sizeof q), gp_quote(v->rows[r], q2, sizeof q2));
      first = 0;
    }
    if (first) empty_panel(g);
    else fprintf(g, "\n");
  }
  if (g) gp_end(p, g, "length");
  free(pt);
}

/* ---- needle heat map ------------------------------------------------------------------- */

/* A heat-map row's source: a niah column's test split (set NULL, at the
 * training length) or one of its data.eval sets, at length len. */
typedef struct needle_src {
  int col;
  const char *set;
  int64_t len;
} needle_src;

typedef struct needle_arg {
  const char *set;
  int grp;
} needle_arg;

/* The last evaluation's accuracy of group grp, on the test split or a set. */
static double group_accuracy(const at_results_run *rr, const void *arg) {
  const needle_arg *a = arg;
  if (!a->set)
    return rr->n_eval && a->grp < rr->n_groups ? rr->eval_group_accuracy[(rr->n_eval - 1) * rr->n_groups + a->grp]
                                               : NAN;
  const at_results_evalset *es = at_results_get_evalset(rr, a->set);
  return es && es->n && a->grp < es->n_groups ? es->group_accuracy[(es->n - 1) * es->n_groups + a->grp] : NAN;
}

static int n_groups_of(const at_results_run *rr, const char *set) {
  const at_results_evalset *es = set ? at_results_get_evalset(rr, set) : NULL;
  return set ? (es ? es->n_groups : 0) : rr->n_groups;
}

/* The niah columns (any row's best run on niah); *by_length when their
 * lengths differ or any of them has test sets (niah at other lengths). */
static int niah_columns(const at_report_view *v, int *cols, int *by_length) {
  int n = 0;
  int64_t first = -1;
  *by_length = 0;
  for (int c = 0; c < v->nc; c++)
    for (int r = 0; r < v->nr; r++) {
      const at_report_cell *cl = &v->cells[r * v->nc + c];
      if (cl->best < 0 || v->e->runs[cl->best].data.kind != AT_TASK_NIAH) continue;
      const at_run_cfg *rc = &v->e->runs[cl->best];
      *by_length |= (first >= 0 && rc->data.seq_len != first) || rc->n_evals > 0;
      first = first < 0 ? rc->data.seq_len : first;
      cols[n++] = c;
      break;
    }
  return n;
}

static int cmp_src(const void *a, const void *b) {
  const needle_src *x = a, *y = b;
  return x->len != y->len ? (x->len > y->len) - (x->len < y->len) : x->col - y->col;
}

/* Row r's heat-map rows over the niah columns, by length. */
static int needle_sources(const at_report_view *v, const int *cols, int ncols, int r, needle_src *src) {
  int n = 0;
  for (int i = 0; i < ncols; i++) {
    const at_report_cell *cl = &v->cells[r * v->nc + cols[i]];
    if (cl->best < 0) continue;
    const at_run_cfg *rc = &v->e->runs[cl->best];
    src[n++] = (needle_src){cols[i], NULL, rc->data.seq_len};
    for (int j = 0; j < rc->n_evals; j++)
      src[n++] = (needle_src){cols[i], rc->evals[j].name, rc->evals[j].data.seq_len};
  }
  qsort(src, (size_t)n, sizeof *src, cmp_src);
  return n;
}

/* One heat-map row: cell cl's depth buckets (on its test split or test set
 * `set`) at height y (x: bucket centre, half width, y, accuracy %). */
static void needle_row(const at_report_view *v, const at_report_cell *cl, const char *set, int y, FILE *d) {
  const at_results_run *rr = cl->best >= 0 ? at_results_find(v->res, v->e->runs[cl->best].run_id) : NULL;
  int ng = rr ? n_groups_of(rr, set) : 0;
  for (int grp = 0; grp < ng; grp++) {
    double mean, sd;
    needle_arg a = {set, grp};
    at_report_cell_mean(v, cl, group_accuracy, &a, &mean, &sd);
    if (isfinite(mean)) fprintf(d, "%.6g %.6g %d %.6g\n", 100.0 * (grp + 0.5) / ng, 50.0 / ng, y, 100 * mean);
  }
}

/* A panel: rows of depth buckets, labelled; `by_length`: one row per niah
 * column and test set of table row r, by length, else one row per table
 * row of niah column c. */
static void needle_panel(const plot_ctx *p, FILE *g, const int *cols, int ncols, int by_length, int r, int c) {
  const at_report_view *v = p->v;
  char dat[1500], q[3000], lab[300];
  needle_src *src = malloc((size_t)(ncols * (1 + AT_MAX_EVAL_SETS) + 1) * sizeof *src);
  snprintf(dat, sizeof dat, "%s/needle.%d.dat", p->dir, by_length ? r : c);
  FILE *d = src ? fopen(dat, "w") : NULL;
  if (!d) {
    free(src);
    return;
  }
  int ny = by_length ? needle_sources(v, cols, ncols, r, src) : v->nr;
  fprintf(g, "set title '%s'\nset ytics (", gp_quote(by_length ? v->rows[r] : v->cols[c], q, sizeof q));
  for (int y = 0; y < ny; y++) {
    const at_report_cell *cl = &v->cells[(by_length ? r : y) * v->nc + (by_length ? src[y].col : c)];
    if (by_length) snprintf(lab, sizeof lab, "T %lld", (long long)src[y].len);
    else snprintf(lab, sizeof lab, "%s", v->rows[y]);
    fprintf(g, "%s'%s' %d", y ? ", " : "", gp_quote(lab, q, sizeof q), y);
    needle_row(v, cl, by_length ? src[y].set : NULL, y, d);
  }
  fclose(d);
  free(src);
  fprintf(g, ")\nset yrange [-0.5:%d.5]\n", AT_MAX(ny, 1) - 1);
  fprintf(g, "plot '%s' using 1:3:2:(0.5):4 with boxxyerror fs solid 1.0 noborder lc palette notitle\n",
          gp_quote(dat, q, sizeof q));
}

static void plot_needle(const plot_ctx *p) {
  const at_report_view *v = p->v;
  int *cols = malloc((size_t)(v->nc + 1) * sizeof *cols), by_length = 0;
  int ncols = cols ? niah_columns(v, cols, &by_length) : 0;
  char title[300];
  int panels = by_length ? v->nr : ncols, pc = panels < 4 ? panels : 4;
  snprintf(title, sizeof title, "%s: needle accuracy %% by depth%s", v->e->name, by_length ? " and length" : "");
  FILE *g = ncols ? gp_begin(p, "needle", title, (panels + pc - 1) / pc, pc, 420, by_length ? 260 : 60 + 22 * v->nr) : NULL;
  if (g) {
    fprintf(g, "set xrange [0:100]\nset xlabel 'needle depth %% (0: farthest from the query)'\nset cbrange [0:100]\n");
    fprintf(g, "set palette defined (0 '#3b0f70', 50 '#de4968', 100 '#fcfdbf')\nunset grid\nunset key\n");
    for (int i = 0; i < panels; i++) needle_panel(p, g, cols, ncols, by_length, by_length ? i : 0, by_length ? 0 : cols[i]);
    gp_end(p, g, "needle");
  }
  free(cols);
}

/* ---- cost bars -------------------------------------------------------------------------- */

static void plot_cost(const plot_ctx *p) {
  const at_report_view *v = p->v;
  char dat[1500], q[3000], name[200];
  snprintf(dat, sizeof dat, "%s/cost.dat", p->dir);
  FILE *d = fopen(dat, "w");
  if (!d) return;
  int n = 0;
  fprintf(d, "# row name tokens_per_second cache_bytes_per_token state_bytes params\n");
  for (int r = 0; r < v->nr; r++) {
    double tps;
    const at_results_run *rr = at_report_row_run(v, r, &tps);
    if (!rr) continue;
    const at_results_extra *cb = at_results_get(rr, "cache_bytes_per_token"), *sb = at_results_get(rr, "state_bytes");
    fprintf(d, "%d %s %.6g %.6g %.6g %lld\n", r, dat_quote(v->rows[r], name, sizeof name), tps, cb ? cb->num : 0,
            sb ? sb->num : 0, (long long)rr->params);
    n++;
  }
  fclose(d);
  char title[300];
  snprintf(title, sizeof title, "%s: cost per model", v->e->name);
  FILE *g = n ? gp_begin(p, "cost", title, 1, 3, 60 + 34 * v->nr > 320 ? 60 + 34 * v->nr : 320, 380) : NULL;
  if (!g) return;
  fprintf(g, "set style fill solid 0.7\nset boxwidth 0.7\nset xtics rotate by 45 right font ',8'\nunset key\n");
  fprintf(g, "set xrange [-0.6:%d.6]\nset yrange [0:*]\n", v->nr - 1);
  const char *what[3] = {"training tokens/s (median)", "cache bytes per token", "state bytes per sequence"};
  for (int k = 0; k < 3; k++)
    fprintf(g, "set title '%s'\nplot '%s' using 1:%d:xtic(2) with boxes\n", what[k], gp_quote(dat, q, sizeof q), 3 + k);
  gp_end(p, g, "cost");
}

at_status at_report_plots(const at_report_view *v, const char *out_dir, FILE *log) {
  plot_ctx p = {v, "", out_dir, log};
  snprintf(p.dir, sizeof p.dir, "%s/plot", out_dir);
  mkdir(p.dir, 0755);
  plot_curves(&p);
  plot_length(&p);
  plot_needle(&p);
  plot_cost(&p);
  return AT_OK;
}
