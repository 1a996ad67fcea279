/* experiments/restore.h: a run rebuilt from its checkpoint (./generate,
 * ./export): the resolved configuration every checkpoint carries, loaded as
 * a one-run experiment; the model built from it with the checkpoint's
 * parameters; the training state. */
#ifndef AT_RESTORE_H
#define AT_RESTORE_H

#include "experiments/config.h"
#include "models/model.h"
#include "optim/checkpoint.h"

typedef struct at_restored {
  at_experiment *e;     /* the checkpoint's configuration */
  const at_run_cfg *rc; /* its run (e->runs[0]) */
  at_model *m;          /* the parameters loaded; m->step the last training step taken */
  at_train_state ts;
} at_restored;

/* The configuration text of a checkpoint (malloc'ed), without its values. */
at_status at_checkpoint_config(const char *path, char **yaml);

/* Everything of a checkpoint; refusals name the file (a damaged or foreign
 * file, a configuration this attnlab cannot load, parameters of another
 * model). */
at_status at_restore(const char *checkpoint, at_restored *r);
void at_restored_free(at_restored *r);

/* The model of run rc (its vocabulary and lengths from the task), freshly
 * initialised from the run's seed. */
at_status at_run_model_new(const at_run_cfg *rc, at_model **m);

#endif
