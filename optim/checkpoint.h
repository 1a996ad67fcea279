/* optim/checkpoint.h: training checkpoints (HDF5).
 *
 * A checkpoint holds everything needed to continue a run bit-exactly:
 *   /params/<name>            every parameter (float32; float64 from the double library)
 *   /optim/<buffer>/<name>    every optimiser buffer ("m", "v"; "momentum")
 * and root attributes
 *   format = "attnlab-checkpoint", format_version = 1, real ("float32"/"float64"),
 *   param_index (one "name\t[shape]" line per parameter, in store order),
 *   model_signature (16 hex digits: a hash of param_index), n_values,
 *   optimizer ("adamw", "sgd" or "none"), optim_buffers ("m,v"), optim_step,
 *   step, skipped_steps, tokens, train_seconds, wall_seconds, best_metric,
 *   n_rng + rng, n_data_pos + data_pos (the caller's opaque words),
 *   config (the resolved YAML), checksum (a 64-bit hash of all of the above
 *   and every value, so a damaged file is refused instead of loaded).
 * Whether a parameter is frozen is not saved (it is the caller's setting).
 *
 * Writing goes to "<path>.tmp.<host>.<pid>", renamed over <path> only once complete, so
 * an existing checkpoint survives a failed or interrupted save. Loading
 * checks everything (format, model signature, shapes, optimiser kind,
 * checksum, finite values) before it changes anything: on failure the
 * parameters, optimiser and state are exactly as they were.
 */
#ifndef AT_CHECKPOINT_H
#define AT_CHECKPOINT_H

#include "optim/optim.h"

#define AT_CHECKPOINT_FORMAT "attnlab-checkpoint"
#define AT_CHECKPOINT_VERSION 1
#define AT_STATE_MAX_WORDS 32

/* What the training loop needs besides parameters and optimiser. */
typedef struct at_train_state {
  int64_t step;             /* training steps done (skipped ones included) */
  int64_t skipped_steps;    /* steps skipped for a non-finite loss or gradient */
  int64_t tokens;           /* training tokens consumed */
  double train_seconds;     /* training time so far (evaluation and checkpoints excluded) */
  double wall_seconds;      /* wall time so far */
  double best_metric;       /* best evaluation metric so far (NAN: none yet) */
  int n_rng;                /* words used in rng */
  uint64_t rng[AT_STATE_MAX_WORDS];       /* RNG state(s), opaque to the checkpoint */
  int n_data_pos;           /* words used in data_pos */
  uint64_t data_pos[AT_STATE_MAX_WORDS];  /* data position, opaque to the checkpoint */
} at_train_state;

/* Zeros, best_metric NAN. */
void at_train_state_init(at_train_state *s);

/* A hash of the parameters' names and shapes, in store order: equal for
 * the same model architecture. */
uint64_t at_checkpoint_signature(const at_params *p);

/* Saves parameters, optimiser state (o may be NULL: no /optim), training
 * state (s may be NULL: zeros) and the configuration text (may be NULL).
 * AT_E_ARG (unfinalized store, a parameter name with '/', tab or newline,
 * an optimiser of another store, too many state words) or AT_E_IO. */
at_status at_checkpoint_save(const char *path, const at_params *p, const at_optim *o,
                             const at_train_state *s, const char *config_yaml);

/* Loads a checkpoint saved from a model with the same parameters (names and
 * shapes; their order may differ). o may be NULL (parameters only, e.g. for
 * evaluation); otherwise the checkpoint must hold the state of the same
 * optimiser kind with the same buffers. s may be NULL. config_yaml (may be
 * NULL) receives the saved configuration text, malloc'ed. Refusals name the
 * file and the first problem:
 *   AT_E_IO      missing or unreadable file
 *   AT_E_FORMAT  not HDF5, truncated, not a checkpoint, newer version, bad
 *                checksum, non-finite values
 *   AT_E_SHAPE   another model: "checkpoint x.h5: parameter layers.1.attn.wq
 *                has shape [64,64], model has [64,128]", a parameter missing
 *                from the checkpoint, or one the model does not have
 *   AT_E_STATE   optimiser state missing or of another optimiser
 * and leave p, o, s and *config_yaml untouched. */
at_status at_checkpoint_load(const char *path, at_params *p, at_optim *o, at_train_state *s,
                             char **config_yaml);

#endif
