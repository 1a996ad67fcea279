/* models/linear_mixers.h: the linear-attention mixers (deltanet, gdn, kda in
 * models/delta_layers.c; mamba2 in models/mamba2.c) and what they share.
 *
 * Each is an at_mixer_impl (models/mixer.h) registered in models/mixers.c.
 * Their layers hold their parameters under "layers.<i>.<mixer>." and run the
 * ops of ops/attention/delta.h in the chunk form (the training form); a test
 * can switch a layer to the token-by-token recurrent form (the reference)
 * with at_linear_mixer_set_form. Equations, parameter names and
 * initialisations are documented at the top of each file.
 */
#ifndef AT_LINEAR_MIXERS_H
#define AT_LINEAR_MIXERS_H

#include <math.h>

#include "models/mixer.h"
#include "ops/attention/delta.h"

typedef enum at_out_gate { AT_GATE_SIGMOID, AT_GATE_SWISH, AT_GATE_NONE } at_out_gate;
typedef enum at_decay_gate { AT_DECAY_UNBOUNDED, AT_DECAY_BOUNDED } at_decay_gate;

/* The options of the linear mixers (each reads the fields of its table). */
typedef struct at_lin_mixer_opts {
  at_mixer_common common;
  int64_t chunk_size;      /* chunkwise training form */
  int short_conv;          /* causal depthwise conv + SiLU on the projections */
  int64_t conv_size;
  int output_gate;         /* at_out_gate */
  int decay_gate;          /* at_decay_gate (gdn, kda) */
  double lower_bound;      /* the bounded gate's lower bound, < 0 */
  int allow_neg_eigval;    /* beta in (0, 2) (deltanet, gdn, kda) */
  int64_t expand_v;        /* value dim = expand_v head_dim (gdn, kda) */
  int64_t d_state, expand; /* mamba2: state size, inner width expand d_model */
} at_lin_mixer_opts;

/* Option rows the linear mixers share (defaults that differ are arguments). */
extern const char *const at_lin_gate_names[];
extern const int at_lin_gate_vals[];
extern const char *const at_lin_decay_names[];
#define AT_LIN_OPT_CHUNK AT_LIN_OPT_CHUNK_OF(1, 64, "chunk length of the chunkwise training form")
/* The delta family's: 0 picks it by head dim (at_lin_auto_chunk). */
#define AT_LIN_OPT_CHUNK_AUTO                                                               \
  AT_LIN_OPT_CHUNK_OF(0, 0, "chunk length of the chunkwise training form; 0: 16 for head_dim <= 32, " \
                            "32 up to 64, else 64 (the fastest here; the results agree to rounding)")
#define AT_LIN_OPT_CHUNK_OF(lo, def, doc)                                                   \
  AT_OPT_I("chunk_size", at_lin_mixer_opts, chunk_size, lo, 4096, def, doc),                \
  AT_OPT_B("short_conv", at_lin_mixer_opts, short_conv, 1,                                  \
           "causal depthwise convolution (then SiLU) on the projections"),                  \
  AT_OPT_I("conv_size", at_lin_mixer_opts, conv_size, 2, 4, 4, "its kernel size")
#define AT_LIN_OPT_GATE(d)                                                                  \
  AT_OPT_E("output_gate", at_lin_mixer_opts, output_gate, at_lin_gate_names, at_lin_gate_vals, d, \
           "the output gate's activation")
#define AT_LIN_OPT_DECAY                                                                    \
  AT_OPT_E("decay_gate", at_lin_mixer_opts, decay_gate, at_lin_decay_names, NULL,           \
           AT_DECAY_UNBOUNDED,                                                              \
           "unbounded: g = -exp(A_log) softplus(f); bounded: g = lower_bound sigmoid(exp(A_log) f)"), \
  AT_OPT_R("lower_bound", at_lin_mixer_opts, lower_bound, -INFINITY, 0, 1, 1, -5,           \
           "the bounded gate's lower bound (per-step log-decay >= lower_bound)")
#define AT_LIN_OPT_NEG_EIG                                                                  \
  AT_OPT_B("allow_neg_eigval", at_lin_mixer_opts, allow_neg_eigval, 0,                      \
           "beta in (0, 2) instead of (0, 1): the transition may have negative eigenvalues")

/* The chunk length of the delta family's chunkwise form for head dim K
 * when its option is 0. The pairs inside a chunk cost O(C^2 K) per chunk
 * against the state's O(C K V): at K 32 chunks of 16 run the KDA kernel
 * (forward and backward) 1.4-1.9x faster than chunks of 64, at K 64 chunks
 * of 32 1.2-1.4x, at K 128 64 is best (bench_linear, 2 threads, T 256). */
static inline int64_t at_lin_auto_chunk(int64_t K) { return K <= 32 ? 16 : K <= 64 ? 32 : 64; }

/* Every linear layer's private state starts with this header. */
typedef struct at_lin_layer_base {
  const at_mixer_impl *impl;
  at_lin_form form;      /* AT_LIN_CHUNK unless a test changes it */
} at_lin_layer_base;

/* Selects the op form a linear mixer layer (deltanet, gdn, kda, mamba2)
 * uses in its forward. `layer` is the mixer state (at_block.mixer_state). */
void at_linear_mixer_set_form(void *layer, at_lin_form form);

/* ---- helpers shared by the linear mixers (models/linear_common.c) ---------- */

/* A_log = log(a) with a ~ U(1, 16) (Mamba-2 / GDN / KDA), from the
 * parameter name's stream. */
void at_lin_init_A_log(at_tensor *t, uint64_t seed);
/* dt_bias = softplus^-1(dt) with dt = exp(U(log 1e-3, log 1e-1)) floored at
 * 1e-4 (Mamba-2's time-step initialisation). */
void at_lin_init_dt_bias(at_tensor *t, uint64_t seed);
/* dt_bias for the bounded gate g = lower_bound sigmoid(exp(A_log) (f + dt_bias)):
 * the same initial decays as the unbounded gate has with at_lin_init_dt_bias
 * (at f = 0: lower_bound sigmoid(a b) = -a dt, a = exp(A_log_h), the sigmoid
 * capped at 1/2), so the gate starts in its sensitive range instead of
 * saturated at 0. A_log [H] must be initialised; dt_bias holds H equal
 * groups (one per head). */
void at_lin_init_dt_bias_bounded(at_tensor *dt_bias, const at_tensor *A_log, double lower_bound,
                                 uint64_t seed);
/* The short convolution of the linear mixers on x [B, T, C]: a causal
 * depthwise conv (weight [C, conv_size], no bias) when w is given, then
 * SiLU; without w only the SiLU. */
at_tensor *at_lin_short_conv(at_ctx *c, at_tensor *x, at_tensor *w);
/* The same for decoding, continuing from the inputs before x: hist
 * [B, conv_size-1, C] holds the last conv_size-1 inputs (zeros before the
 * first token) and receives those after x. Without w: SiLU only (hist unused). */
at_tensor *at_lin_short_conv_cont(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *hist);

/* How a linear layer's core runs: training (no state), the prefill of a
 * decoding state (the training form, leaving the final state in it) or one
 * decoding step (the op's step form on the state). */
typedef enum at_lin_run { AT_LIN_RUN_TRAIN, AT_LIN_RUN_PREFILL, AT_LIN_RUN_STEP } at_lin_run;

/* The op of a delta-family or simple-GLA layer in a run: training (the
 * form of opts), prefill (the same, with its final state copied into S
 * [B,H,K,V]) or a step (the step form, advancing S in place). */
at_tensor *at_lin_core_run(at_ctx *c, at_lin_kind kind, at_tensor *q, at_tensor *k, at_tensor *v, at_tensor *g,
                           at_tensor *beta, at_tensor *S, at_lin_run run, const at_lin_opts *opts);

/* The short conv of a layer's run: the training form, or continued from the
 * decoding state's history `hist` (a state tensor; NULL without a conv). */
static inline at_tensor *at_lin_conv_run(at_ctx *c, at_tensor *x, at_tensor *w, at_tensor *hist, at_lin_run run) {
  return run == AT_LIN_RUN_TRAIN || !w ? at_lin_short_conv(c, x, w) : at_lin_short_conv_cont(c, x, w, hist);
}

#endif
