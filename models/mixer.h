/* models/mixer.h: what a mixer is (the token-mixing layer of a block:
 * softmax attention, a linear recurrence, a state-space model...) and the
 * helpers mixer implementations share.
 *
 * A mixer describes itself in one at_mixer_impl: its name, family, a
 * one-line definition, its option table (key, type, range, default, help)
 * over its own options struct, a check of its options against the model,
 * and its layer functions. The experiment loader, `train --mixers`, the
 * resolved YAML and the error positions all derive from these tables.
 * Adding a mixer: its op file(s), its model file defining
 * `const at_mixer_impl at_mixer_<name>`, one line in models/mixers.c, its
 * tests (the registry-wide suite tests/mixed/mixers/ covers it on
 * registration).
 *
 * Options live in the model config, one fixed-size buffer per registered
 * mixer (at_model_cfg.mixer[id]); each mixer casts it to its own struct,
 * which starts with at_mixer_common.
 */
#ifndef AT_MIXER_H
#define AT_MIXER_H

#include <stdio.h>

#include "autograd/autograd.h"
#include "models/config.h"

/* ---- options --------------------------------------------------------------- */

typedef enum at_opt_type {
  AT_OPT_INT,  /* int64_t */
  AT_OPT_REAL, /* double */
  AT_OPT_BOOL, /* int, 0 or 1 */
  AT_OPT_ENUM, /* int, one of vals (or the index of the name) */
} at_opt_type;

/* One row of a mixer's option table. */
typedef struct at_mixer_opt {
  const char *key;
  at_opt_type type;
  size_t off;               /* offset in the mixer's options struct */
  double lo, hi;            /* INT, REAL: the allowed range */
  int lo_open, hi_open;     /* REAL: (lo, ...) / (..., hi) */
  double def;               /* default: the number, 0/1, or the enum value */
  const char *const *names; /* ENUM: NULL-terminated */
  const int *vals;          /* ENUM: values (NULL: the name's index) */
  const char *help;         /* meaning, and what 0 or -1 stands for */
} at_mixer_opt;

#define AT_OPT_I(k, S, f, lo_, hi_, d, h)                                                   \
  {.key = k, .type = AT_OPT_INT, .off = offsetof(S, f), .lo = lo_, .hi = hi_, .def = d, \
   .help = h}
#define AT_OPT_R(k, S, f, lo_, hi_, lo_o, hi_o, d, h)                                        \
  {.key = k, .type = AT_OPT_REAL, .off = offsetof(S, f), .lo = lo_, .hi = hi_,            \
   .lo_open = lo_o, .hi_open = hi_o, .def = d, .help = h}
#define AT_OPT_B(k, S, f, d, h) \
  {.key = k, .type = AT_OPT_BOOL, .off = offsetof(S, f), .lo = 0, .hi = 1, .def = d, .help = h}
#define AT_OPT_E(k, S, f, nm, vl, d, h) \
  {.key = k, .type = AT_OPT_ENUM, .off = offsetof(S, f), .names = nm, .vals = vl, .def = d, .help = h}

/* Every options struct starts with this. */
typedef struct at_mixer_common {
  int position;     /* at_position: AT_POS_INHERIT (resolved by the loader), rope or nope;
                       mixers without a position option: nope */
  int64_t head_dim; /* 0: d_model / n_heads (resolved by the loader) */
} at_mixer_common;

/* The two common rows, for a struct whose first member is `common`. */
extern const char *const at_mixer_position_names[]; /* rope, nope, inherit */
extern const int at_mixer_position_vals[];
#define AT_OPT_HEAD_DIM(S) \
  AT_OPT_I("head_dim", S, common.head_dim, 0, 4096, 0, "per-head dim; 0 = d_model / n_heads")
#define AT_OPT_POSITION(S)                                                                   \
  AT_OPT_E("position", S, common.position, at_mixer_position_names, at_mixer_position_vals, \
           AT_POS_INHERIT, "inherit: rope if model.position is rope, else nope")

/* ---- what a layer sees of the batch and the stage ---------------------------- */

/* Stage flags: what the training stage asks of the layers (train.stages). */
enum {
  AT_STAGE_SPARSE = 1u << 0,   /* attend sparsely where the mixer can (DSA: top-k keys) */
  AT_STAGE_AUX_LOSS = 1u << 1, /* add the mixer's auxiliary loss (DSA: the indexer's KL) */
};

#define AT_MAX_STATS 8

/* A per-layer statistic reported by name (summed over the layers of one
 * forward; the runner logs sum / n). */
typedef struct at_mixer_stat {
  const char *name; /* a static string, e.g. "indexer_kl" */
  double sum;
  int n;
} at_mixer_stat;

typedef struct at_mixer_io {
  int64_t pos0;       /* position of the first token (0 in training) */
  unsigned stage;     /* AT_STAGE_* flags */
  int64_t step;       /* the training step being taken (0-based), or the last one taken when
                         evaluating (at_model.step); mixers whose state follows the training
                         (performer's random-feature redraws) derive it from this alone */
  /* Out: auxiliary losses added to the LM loss (NULL: none). */
  at_tensor *aux_loss;
  /* Out: statistics by name. */
  int n_stats;
  at_mixer_stat stats[AT_MAX_STATS];
  /* RWKV-7's value residual: the first rwkv7 layer's v [B, T, H*K], set by
   * it and read by the later rwkv7 layers of the same forward (NULL before). */
  at_tensor *v_first;
} at_mixer_io;

/* Adds one layer's value of statistic `name` (a static string). */
void at_mixer_io_stat(at_mixer_io *io, const char *name, double value);

/* ---- what a layer keeps between decoding steps -------------------------------- */

typedef struct at_mixer_impl at_mixer_impl;

#define AT_MIXER_STATE_MAX 8

/* A layer's decoding state for `batch` sequences of up to `max_len` tokens:
 * a key/value cache, recurrent states, the short convolutions' last inputs.
 * Its tensors live in its own arena (they outlive the step arena), zeroed
 * when added; a mixer's state_new adds them with at_mixer_state_add and
 * reads them back by index (t[0], t[1], ... in the order it added them).
 * Made and freed by the model's decoder (models/generate.h). */
typedef struct at_mixer_state {
  at_arena *arena;
  int64_t batch, max_len;
  int n;
  at_tensor *t[AT_MIXER_STATE_MAX];
} at_mixer_state;

/* An empty state for batch x max_len (no tensors yet); AT_E_NOMEM. */
at_status at_mixer_state_init(at_mixer_state *s, int64_t batch, int64_t max_len);
/* A zeroed tensor of the state; NULL with AT_E_NOMEM / AT_E_ARG. */
at_tensor *at_mixer_state_add(at_mixer_state *s, int ndim, const int64_t *shape);
/* Bytes of the state's tensors. */
int64_t at_mixer_state_bytes(const at_mixer_state *s);
void at_mixer_state_free(at_mixer_state *s);
/* 1 if x fits a prefill (step 0: x [batch, T, d], T <= max_len, io->pos0 0)
 * or a step (step 1: x [batch, 1, d], 0 <= io->pos0 < max_len) of s; else
 * 0 with AT_E_SHAPE on c, naming the mixer. */
int at_mixer_decode_fits(at_ctx *c, const at_mixer_impl *impl, const at_tensor *x, int64_t d,
                         const at_mixer_state *s, const at_mixer_io *io, int step);

/* ---- the interface ------------------------------------------------------------ */

/* Parameter groups (at_params_add's group): the training loop freezes or
 * trains them by stage. */
enum { AT_GROUP_MAIN = 0, AT_GROUP_INDEXER = 1 };

struct at_mixer_impl {
  const char *name;    /* YAML name, parameter prefix (layers.<i>.<name>.) */
  const char *family;  /* "softmax", "latent", "sparse", "linear", "state-space" */
  const char *summary; /* one-line definition (train --mixers, README) */
  const at_mixer_opt *opts;
  int n_opts;
  size_t opts_size;    /* sizeof its options struct (<= AT_MIXER_OPTS_BYTES) */
  /* Resolves the options' derived values (those left at 0 / -1) against the
   * model and checks them; on failure returns AT_E_CONFIG with a message
   * and sets *bad_key to the option (or "model.<key>") at fault. NULL: no
   * check beyond the table's ranges. */
  at_status (*check)(const at_model_cfg *cfg, void *opts, const char **bad_key);
  unsigned stage_flags; /* AT_STAGE_* flags it responds to */
  unsigned groups;      /* parameter groups beyond AT_GROUP_MAIN (1u << AT_GROUP_INDEXER) */
  /* Declares the layer's parameters under `prefix` (e.g. "layers.3.kda.")
   * and allocates its private state (*layer). */
  at_status (*create)(const at_model_cfg *cfg, int layer_index, at_params *p, const char *prefix,
                      void **layer);
  /* Initialises the parameters (after the store is finalized). */
  void (*init)(void *layer, const at_model_cfg *cfg, uint64_t seed);
  /* x [B, T, d_model] -> [B, T, d_model]. */
  at_tensor *(*forward)(at_ctx *c, void *layer, at_tensor *x, at_mixer_io *io);
  /* Inference memory per layer: cache elements each token adds (softmax
   * attention), and fixed state elements (recurrent mixers). NULL: 0. */
  int64_t (*cache_per_token)(const void *layer);
  int64_t (*state_elems)(const void *layer);
  void (*destroy)(void *layer);
  /* Generation: the three must be given together (a mixer without them
   * cannot decode, and the registry-wide decode tests fail it by name).
   * Neither prefill nor step records on the tape; both run without
   * gradients. io->pos0 is the position of x's first token, io->stage and
   * io->step as in forward.
   *   state_new  adds the layer's decoding tensors to s (batch, max_len
   *              set): their zeros (or what it sets) are the empty state.
   *   prefill    x [B, T, d] the first T tokens (io->pos0 = 0, T <=
   *              max_len): the forward's output, computed by the training
   *              form, leaving in s the state after token T-1.
   *   step       x [B, 1, d] the token at position io->pos0 (every earlier
   *              position already in s): its output, equal to row pos0 of
   *              the forward over positions 0 .. pos0; advances s. */
  at_status (*state_new)(const void *layer, at_mixer_state *s);
  at_tensor *(*prefill)(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io);
  at_tensor *(*step)(at_ctx *c, void *layer, at_tensor *x, at_mixer_state *s, at_mixer_io *io);
};

/* ---- the registry (models/mixers.c) --------------------------------------------- */

int at_mixer_count(void);
/* NULL outside 0 .. count-1. */
const at_mixer_impl *at_mixer_impl_of(at_mixer_kind id);
/* The id of an implementation (its index in the registry). */
at_mixer_kind at_mixer_id(const at_mixer_impl *impl);
/* Fills a mixer's options with its table's defaults. */
void at_mixer_opts_defaults(const at_mixer_impl *impl, void *opts);
/* An option by key (tests, tools): its value as a double (NAN for an unknown
 * key), or set (AT_E_ARG with a message for an unknown key or a value
 * outside the table's range). */
double at_mixer_opt_get(const at_model_cfg *cfg, at_mixer_kind id, const char *key);
at_status at_mixer_opt_set(at_model_cfg *cfg, at_mixer_kind id, const char *key, double value);
/* A mixer's options in a model config, as its own struct. */
#define AT_MIXER_OPTS(cfg, impl, S) ((const S *)(const void *)(cfg)->mixer[at_mixer_id(impl)].bytes)
/* 1 if some layer of cfg uses the mixer. */
int at_mixer_used(const at_model_cfg *cfg, at_mixer_kind id);
/* Resolves every mixer's common options (head_dim 0, position inherit) and
 * runs the check of each mixer the layers use (models/config.c). On failure
 * returns its status and message with *bad_mixer and *bad_key (the option or
 * "model.<key>" at fault, or NULL). Idempotent: the loader calls it to place
 * errors, at_model_new again. */
at_status at_model_cfg_resolve(at_model_cfg *cfg, at_mixer_kind *bad_mixer, const char **bad_key);

/* Every registered mixer with its definition and option table (key, type and
 * range, default, meaning): plain text, or Markdown tables (README). */
void at_mixers_describe(FILE *out, int markdown);

/* ---- helpers shared by mixer implementations (models/layers.c) ---------------- */

/* A weight [out, in] declared under prefix+name. */
at_tensor *at_layer_weight(at_params *p, const char *prefix, const char *name, int64_t out,
                           int64_t in);
/* A parameter of any shape with flags (e.g. AT_PARAM_NO_DECAY), group AT_GROUP_MAIN. */
at_tensor *at_layer_param(at_params *p, const char *prefix, const char *name, int ndim,
                          const int64_t *shape, int flags);
/* The same in a parameter group (AT_GROUP_INDEXER for the DSA indexer). */
at_tensor *at_layer_param_group(at_params *p, const char *prefix, const char *name, int ndim,
                                const int64_t *shape, int flags, int group);
/* Fills a parameter with N(0, std) from its name's stream. */
void at_layer_init_normal(at_tensor *t, uint64_t seed, double std);
/* Fills a projection that writes into the residual stream (cfg->residual_init). */
void at_layer_init_out(at_tensor *t, const at_model_cfg *cfg, uint64_t seed);
void at_layer_init_const(at_tensor *t, double v);
/* The common options of a mixer in cfg (resolved by the loader). */
const at_mixer_common *at_layer_common(const at_model_cfg *cfg, const at_mixer_impl *impl);
/* Head dim of a mixer (its head_dim option or d_model / n_heads). */
int64_t at_layer_head_dim(const at_model_cfg *cfg, const at_mixer_impl *impl);
/* The position encoding a mixer uses (its own or the model's). */
at_position at_layer_position(const at_model_cfg *cfg, const at_mixer_impl *impl);
/* A shape error for a layer input x that is not [B, T, d]; NULL. */
at_tensor *at_layer_bad_input(at_ctx *c, const at_mixer_impl *impl, const at_tensor *x, int64_t d);

#endif
