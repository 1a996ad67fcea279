/* experiments/restore.c: rebuilding a run from its checkpoint. */
#include "experiments/restore.h"

#include <stdlib.h>
#include <string.h>

#include "core/h5io.h"

at_status at_checkpoint_config(const char *path, char **yaml) {
  *yaml = NULL;
  at_h5 *f;
  at_status st = at_h5_open(path, &f);
  if (st != AT_OK) return st;
  char *fmt = NULL;
  if (!at_h5_has_attr(f, "/", "format") || (st = at_h5_get_attr_str(f, "/", "format", &fmt)) != AT_OK ||
      strcmp(fmt, AT_CHECKPOINT_FORMAT) != 0)
    st = at_error(AT_E_FORMAT, "%s: not an attnlab checkpoint", path);
  else if (!at_h5_has_attr(f, "/", "config"))
    st = at_error(AT_E_FORMAT, "%s: the checkpoint has no configuration", path);
  else
    st = at_h5_get_attr_str(f, "/", "config", yaml);
  free(fmt);
  at_h5_close(f);
  return st;
}

at_status at_run_model_new(const at_run_cfg *rc, at_model **m) {
  at_model_cfg mc = rc->model;
  mc.vocab_size = rc->data.vocab_size;
  mc.max_seq_len = rc->data.seq_len;
  return at_model_new(&mc, rc->seed, m);
}

at_status at_restore(const char *checkpoint, at_restored *r) {
  memset(r, 0, sizeof *r);
  char *yaml = NULL;
  at_status st = at_checkpoint_config(checkpoint, &yaml);
  if (st == AT_OK) {
    char name[1100];
    snprintf(name, sizeof name, "%.1000s (its configuration)", checkpoint);
    st = at_experiment_load_text(name, yaml, &r->e);
    free(yaml);
  }
  if (st == AT_OK && r->e->n_runs != 1)
    st = at_error(AT_E_FORMAT, "%s: the configuration holds %d runs, not one", checkpoint, r->e->n_runs);
  if (st == AT_OK) {
    r->rc = &r->e->runs[0];
    st = at_run_model_new(r->rc, &r->m);
  }
  if (st == AT_OK) st = at_checkpoint_load(checkpoint, r->m->params, NULL, &r->ts, NULL);
  if (st != AT_OK) {
    at_restored_free(r);
    return st;
  }
  r->m->step = r->ts.step > 0 ? r->ts.step - 1 : 0;
  return AT_OK;
}

void at_restored_free(at_restored *r) {
  at_model_free(r->m);
  at_experiment_free(r->e);
  memset(r, 0, sizeof *r);
}
