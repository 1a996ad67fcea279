/* tools/probe.c: runs one attnlab op forward and backward on inputs from an
 * HDF5 file, so that anyone can cross-check attnlab against PyTorch (e.g.
 * flash-linear-attention's reference ops).
 *
 *   probe OP IN.h5 OUT.h5      run OP
 *   probe --list               the known ops, their inputs and options
 *
 * IN.h5
 *   - the op's inputs as datasets named like the arguments of fla's reference
 *     ops (q, k, v, g, beta, initial_state, ...), shaped like them ([B,T,H,D]),
 *     float32 or float64 (converted to float: probe runs the float library);
 *   - the gradient of each output: `do` for `o` (required), `dht` for
 *     `final_state` (optional: zero when absent);
 *   - either all at the top level, or all in a group `inputs/` (the layout of
 *     the golden files, which also hold `outputs/` and `grads/`): when a group
 *     `inputs` exists, datasets are read from it only;
 *   - options as attributes of the root group (`scale`, `window_size`, ...).
 * OUT.h5 (float32, written to OUT.h5.tmp and renamed when complete)
 *   - the outputs (`o`, `final_state`, ...), and `d<input>` for every
 *     differentiable input present: the gradient of
 *     sum(o * do) [+ sum(final_state * dht)]; `indices` (int32, -1 padded)
 *     for the DSA ops;
 *   - a root attribute `op`.
 * Exit status 0 on success; 2, with a message on stderr, for a bad command
 * line, an unknown op, a missing or unreadable file, a missing input, a
 * wrong shape or option.
 *
 *
 *   probe --pattern MIXER T OUT.png [KEY=VALUE ...]
 * writes the visibility mask of a softmax-attention mixer's layer (full,
 * sparse_transformer, longformer, bigbird) over T positions as an 8-bit
 * grayscale PNG: one T x T panel per query head, left to right, 2 gray
 * columns apart; row i, column j black if query i sees key j, white if not.
 * KEY=VALUE sets a mixer option (enums by name, e.g. pattern=strided) or
 * n_heads (4), n_layers (1), layer (0, the layer's index) and seed (0, the
 * model seed: bigbird's random blocks).
 *
 * Adding an op is one entry of `probe_ops[]` (name, inputs, outputs with the
 * dataset holding each one's gradient, options for --list) plus a run
 * function that reads its options with probe_opt_double/probe_opt_int and
 * sets r->y[] from r->x[] (in table order; absent optional inputs are NULL).
 * The rest (reading, seeding, backward, writing, errors) is shared.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/h5io.h"
#include "core/png.h"
#include "models/model.h"
#include "models/softmax_layer.h"
#include "ops/attention/attention.h"
#include "ops/attention/favor.h"
#include "ops/attention/dplr.h"
#include "ops/attention/ssm.h"

#define PROBE_MAX_IN 10 /* with the terminating entry */
#define PROBE_MAX_OUT 4

enum {
  PROBE_OPTIONAL = 1 << 0, /* input: may be absent (x[i] = NULL); output seed: zero when absent */
  PROBE_NO_GRAD = 1 << 1,  /* input: not differentiable (indices, selector inputs): no d<name> */
};

typedef struct probe_input {
  const char *name;
  int flags;
} probe_input;

typedef struct probe_output {
  const char *name; /* dataset written to OUT.h5 */
  const char *seed; /* dataset of IN.h5 holding d(loss)/d(output) */
  int flags;
} probe_output;

typedef struct probe_op probe_op;

/* What a run function works with. */
typedef struct probe_run {
  const probe_op *op;
  at_ctx *c;
  at_h5 *in;
  at_tensor *x[PROBE_MAX_IN];  /* inputs in table order (NULL: optional, absent) */
  at_tensor *y[PROBE_MAX_OUT]; /* outputs in table order, set by the run function */
  const at_itensor *ints;      /* an integer output (selected indices), or NULL */
  const char *ints_name;
} probe_run;

/* Builds the outputs from the inputs on r->c (recording on the tape);
 * returns a status with at_errmsg() set on failure. */
typedef at_status (*probe_fn)(probe_run *r);

struct probe_op {
  const char *name;
  const char *about;   /* one line for --list */
  const char *options; /* root attributes read, with defaults, for --list */
  probe_input in[PROBE_MAX_IN];    /* terminated by a NULL name */
  probe_output out[PROBE_MAX_OUT]; /* terminated by a NULL name */
  probe_fn run;
};

/* ---- options (root attributes) -------------------------------------------- */

static at_status probe_opt_double(probe_run *r, const char *name, double dflt, double *v) {
  *v = dflt;
  if (!at_h5_has_attr(r->in, "/", name)) return AT_OK;
  return at_h5_get_attr_double(r->in, "/", name, v);
}

static at_status probe_opt_int(probe_run *r, const char *name, int64_t dflt, int64_t *v) {
  *v = dflt;
  if (!at_h5_has_attr(r->in, "/", name)) return AT_OK;
  double d;
  at_status st = at_h5_get_attr_double(r->in, "/", name, &d);
  if (st != AT_OK) return st;
  if (d != (double)(int64_t)d)
    return at_error(AT_E_ARG, "%s = %g is not an integer", name, d);
  *v = (int64_t)d;
  return AT_OK;
}

/* The op's result or the context's failure. */
static at_status probe_result(probe_run *r, at_tensor *y, int i) {
  r->y[i] = y;
  if (y) return AT_OK;
  at_status st = at_ctx_status(r->c);
  return st != AT_OK ? st : at_error(AT_E_STATE, "%s failed", r->op->name);
}

/* ---- the ops ------------------------------------------------------------------ */

static at_status run_attn(probe_run *r) {
  at_attn_opts o = {.scale = 0, .window = 0};
  at_status st = probe_opt_double(r, "scale", 0, &o.scale);
  if (st == AT_OK) st = probe_opt_int(r, "window_size", 0, &o.window);
  if (st != AT_OK) return st;
  return probe_result(r, at_attention(r->c, r->x[0], r->x[1], r->x[2], &o), 0);
}

/* The linear-attention family: options scale, chunk_size, recurrent. */
static at_status run_lin(probe_run *r, at_lin_kind kind) {
  at_lin_opts o = {0, 0, AT_LIN_CHUNK};
  int64_t rec = 0;
  at_status st = probe_opt_double(r, "scale", 0, &o.scale);
  if (st == AT_OK) st = probe_opt_int(r, "chunk_size", 0, &o.chunk_size);
  if (st == AT_OK) st = probe_opt_int(r, "recurrent", 0, &rec);
  if (st != AT_OK) return st;
  if (rec) o.form = AT_LIN_RECURRENT;
  /* inputs in table order: q k v [g] [beta] initial_state */
  at_tensor *q = r->x[0], *k = r->x[1], *v = r->x[2], *g = NULL, *beta = NULL, *h0;
  int i = 3;
  if (kind != AT_LIN_DELTA_RULE) g = r->x[i++];
  if (kind != AT_LIN_SIMPLE_GLA) beta = r->x[i++];
  h0 = r->x[i];
  at_tensor *ht = NULL;
  if ((st = probe_result(r, at_lin_attn(r->c, kind, q, k, v, g, beta, h0, &ht, &o), 0)) != AT_OK) return st;
  return probe_result(r, ht, 1);
}
static at_status run_delta_rule(probe_run *r) { return run_lin(r, AT_LIN_DELTA_RULE); }
static at_status run_gated_delta_rule(probe_run *r) { return run_lin(r, AT_LIN_GATED_DELTA_RULE); }
static at_status run_kda(probe_run *r) { return run_lin(r, AT_LIN_KDA); }
static at_status run_simple_gla(probe_run *r) { return run_lin(r, AT_LIN_SIMPLE_GLA); }

/* The linear path (ops/attention/linear_attn.h, favor.h): options scale,
 * chunk_size, recurrent (1: token by token; retention: 2 = the parallel
 * form), normalize (linear_attn). fla's z_state [B,1,H,K] is read and
 * written as such. */
static at_status la_opts(probe_run *r, at_la_opts *o) {
  int64_t form = 0, norm = 0;
  *o = (at_la_opts){0};
  at_status st = probe_opt_double(r, "scale", 0, &o->scale);
  if (st == AT_OK) st = probe_opt_int(r, "chunk_size", 0, &o->chunk_size);
  if (st == AT_OK) st = probe_opt_int(r, "recurrent", 0, &form);
  if (st == AT_OK) st = probe_opt_int(r, "normalize", 0, &norm);
  if (st == AT_OK && (form < 0 || form > 2)) st = at_error(AT_E_ARG, "recurrent = %lld: 0, 1 or 2", (long long)form);
  o->form = (at_la_form)form;
  o->normalize = norm != 0;
  return st;
}

static at_status run_linear_attn(probe_run *r) {
  at_la_opts o;
  at_status st = la_opts(r, &o);
  if (st != AT_OK) return st;
  at_tensor *z0 = r->x[4], *ht = NULL, *zt = NULL;
  if (z0 && z0->ndim == 4 && z0->shape[1] == 1) z0 = AT_RESHAPE(r->c, z0, z0->shape[0], z0->shape[2], z0->shape[3]);
  at_tensor *y = at_linear_attn(r->c, r->x[0], r->x[1], r->x[2], r->x[3], z0, &ht, &zt, &o);
  if ((st = probe_result(r, y, 0)) != AT_OK || (st = probe_result(r, ht, 1)) != AT_OK) return st;
  if (zt) r->y[2] = AT_RESHAPE(r->c, zt, zt->shape[0], 1, zt->shape[1], zt->shape[2]);
  return AT_OK;
}

static at_status run_retention(probe_run *r) {
  at_la_opts o;
  at_status st = la_opts(r, &o);
  if (st != AT_OK) return st;
  at_tensor *ht = NULL;
  if ((st = probe_result(r, at_retention(r->c, r->x[0], r->x[1], r->x[2], r->x[3], &ht, &o), 0)) != AT_OK)
    return st;
  return probe_result(r, ht, 1);
}

static at_status run_performer(probe_run *r) {
  at_la_opts o;
  at_status st = la_opts(r, &o);
  if (st != AT_OK) return st;
  return probe_result(r, at_performer(r->c, r->x[0], r->x[1], r->x[2], r->x[3], NULL, NULL, NULL, NULL,
                                      NULL, NULL, &o), 0);
}
/* gla and dplr: options scale, chunk_size, recurrent; inputs q k v [a b] gk
 * initial_state in table order. */
static at_status run_dplr_family(probe_run *r, int lowrank) {
  at_lin_opts o = {0, 0, AT_LIN_CHUNK};
  int64_t rec = 0;
  at_status st = probe_opt_double(r, "scale", 0, &o.scale);
  if (st == AT_OK) st = probe_opt_int(r, "chunk_size", 0, &o.chunk_size);
  if (st == AT_OK) st = probe_opt_int(r, "recurrent", 0, &rec);
  if (st != AT_OK) return st;
  if (rec) o.form = AT_LIN_RECURRENT;
  at_tensor *ht = NULL, **x = r->x;
  at_tensor *y = lowrank ? at_dplr(r->c, x[0], x[1], x[2], x[3], x[4], x[5], x[6], &ht, &o)
                         : at_gla(r->c, x[0], x[1], x[2], x[3], x[4], &ht, &o);
  if ((st = probe_result(r, y, 0)) != AT_OK) return st;
  return probe_result(r, ht, 1);
}
static at_status run_gla(probe_run *r) { return run_dplr_family(r, 0); }
static at_status run_dplr(probe_run *r) { return run_dplr_family(r, 1); }

static at_status probe_topk(probe_run *r, int64_t *topk) {
  at_status st = probe_opt_int(r, "topk", -1, topk);
  if (st == AT_OK && *topk < 1) st = at_error(AT_E_ARG, "the root attribute topk (a positive integer) is required");
  return st;
}

static at_status run_dsa(probe_run *r) {
  at_dsa_opts o = {0, 0};
  int64_t topk;
  at_status st = probe_topk(r, &topk);
  if (st == AT_OK) st = probe_opt_double(r, "scale", 0, &o.scale);
  if (st != AT_OK) return st;
  at_itensor *idx = NULL;
  st = probe_result(r, at_dsa(r->c, r->x[0], r->x[1], r->x[2], r->x[3], r->x[4], r->x[5], topk, &o, &idx), 0);
  r->ints = idx, r->ints_name = "indices";
  return st;
}

static at_status run_dsa_indexer(probe_run *r) {
  int64_t topk;
  at_status st = probe_topk(r, &topk);
  if (st != AT_OK) return st;
  r->ints = at_dsa_topk(r->c, r->x[0], r->x[1], r->x[2], topk, 0);
  r->ints_name = "indices";
  return r->ints ? AT_OK : at_ctx_status(r->c);
}

/* NSA's selected and sliding-window branches, as fla's naive_nsa without
 * g_cmp: block_indices [B,T,H,S] (fla's layout, any numeric type; entries
 * < 0 unused) -> the selection [B,H,T,S] of at_attn_layout_selected (one
 * query block per position, key blocks of block_size);
 * o = g_slc o_slc + g_swa o_swa (g_slc absent: o_slc; g_swa absent or
 * window_size 0: no window branch). */
static at_status run_nsa(probe_run *r) {
  int64_t bs, w;
  at_attn_opts so = {0}, wo = {0};
  at_status st = probe_opt_int(r, "block_size", 64, &bs);
  if (st == AT_OK) st = probe_opt_int(r, "window_size", 0, &w);
  if (st == AT_OK) st = probe_opt_double(r, "scale", 0, &so.scale);
  if (st != AT_OK) return st;
  at_ctx *c = r->c;
  at_tensor *q = r->x[0], *k = r->x[1], *v = r->x[2], *gs = r->x[3], *gw = r->x[4], *bi = r->x[5];
  if (bs < 1 || w < 0) return at_error(AT_E_ARG, "block_size %lld must be >= 1, window_size %lld >= 0", (long long)bs, (long long)w);
  if (bi->ndim != 4 || q->ndim != 4 || k->ndim != 4 || bi->shape[0] != q->shape[0] || bi->shape[1] != q->shape[1] ||
      bi->shape[2] != k->shape[2] || k->shape[2] < 1 || q->shape[2] % k->shape[2])
    return at_error(AT_E_SHAPE, "block_indices must be [B, T, H, S] for q [B, T, HQ, D] and k [B, T, H, D]");
  int64_t B = bi->shape[0], T = bi->shape[1], H = bi->shape[2], S = bi->shape[3], HQ = q->shape[2];
  at_itensor *sel = at_inew(c, AT_SHAPE(B, H, T, S));
  if (!sel) return at_ctx_status(c);
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++)
      for (int64_t h = 0; h < H; h++)
        for (int64_t e = 0; e < S; e++) {
          real x = bi->data[((b * T + t) * H + h) * S + e];
          if (x != (real)(int32_t)x) return at_error(AT_E_ARG, "block_indices hold %g, not an integer", (double)x);
          sel->data[((b * H + h) * T + t) * S + e] = x < 0 ? -1 : (int32_t)x;
        }
  so.layout = at_attn_layout_selected(c, T, 1, bs, sel, HQ / H);
  at_tensor *o = at_attention(c, q, k, v, &so);
  if (gs) o = at_mul(c, o, AT_RESHAPE(c, gs, B, T, HQ, 1));
  if (gw && w > 0) {
    wo.scale = so.scale, wo.window = w;
    o = at_add(c, o, at_mul(c, at_attention(c, q, k, v, &wo), AT_RESHAPE(c, gw, B, T, HQ, 1)));
  }
  return probe_result(r, o, 0);
}

/* Mamba-1's selective scan in selective_scan_ref's channel-major layout:
 * u, delta, z [B,D,L], B, C [B,N,L] are transposed to attnlab's [B,L,*]
 * (on the tape, so the gradients come back in the file's layout). */
static at_status run_selective_scan(probe_run *r) {
  int64_t sp = 0, chunk = 0, seq = 0;
  at_status st = probe_opt_int(r, "delta_softplus", 0, &sp);
  if (st == AT_OK) st = probe_opt_int(r, "chunk_size", 0, &chunk);
  if (st == AT_OK) st = probe_opt_int(r, "sequential", 0, &seq);
  if (st != AT_OK) return st;
  at_ctx *c = r->c;
  at_tensor *t[PROBE_MAX_IN];
  for (int i = 0; i < PROBE_MAX_IN; i++) /* u delta B C z: [B,*,L] -> [B,L,*] */
    t[i] = r->x[i] && (i <= 1 || i == 3 || i == 4 || i == 6) ? at_transpose(c, r->x[i], 1, 2) : r->x[i];
  at_scan_opts o = {(int)sp, chunk, seq ? AT_SCAN_SEQUENTIAL : AT_SCAN_CHUNKED};
  at_tensor *ht = NULL;
  at_tensor *y = at_selective_scan(c, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], NULL, &ht, &o);
  if ((st = probe_result(r, y ? at_transpose(c, y, 1, 2) : NULL, 0)) != AT_OK) return st;
  return probe_result(r, ht, 1);
}

/* S4D's convolution kernel from its continuous parameters (B absent: 1). */
static at_status run_s4d_kernel(probe_run *r) {
  int64_t L;
  at_status st = probe_opt_int(r, "L", 0, &L);
  if (st != AT_OK) return st;
  if (L < 1) return at_error(AT_E_ARG, "the root attribute L (the kernel length, a positive integer) is required");
  at_tensor *B = r->x[3];
  if (!B && r->x[1]) {
    B = at_zeros(r->c, AT_SHAPE(r->x[1]->shape[0], r->x[1]->ndim > 1 ? r->x[1]->shape[1] : 1, 2));
    for (int64_t i = 0; B && i < B->size; i += 2) B->data[i] = 1;
  }
  at_tensor *Bbar = NULL, *Abar = at_s4d_discretize(r->c, r->x[0], r->x[1], r->x[2], B, &Bbar);
  return probe_result(r, at_s4d_kernel(r->c, Abar, Bbar, r->x[4], L), 0);
}

#define LIN_OPTIONS "scale (default K^-1/2), chunk_size (default 64), recurrent (0: chunkwise, 1: token by token)"
#define LIN_OUTPUTS {{"o", "do", 0}, {"final_state", "dht", PROBE_OPTIONAL}}

static const probe_op probe_ops[] = {
    {"attn", "causal softmax attention; k, v may have fewer heads than q (GQA/MQA)",
     "scale (default D^-1/2), window_size (keys i-W+1..i; default 0: none)",
     {{"q", 0}, {"k", 0}, {"v", 0}},
     {{"o", "do", 0}},
     run_attn},
    {"delta_rule", "DeltaNet: S <- S + beta k (v - S^T k)^T, o = S^T q", LIN_OPTIONS,
     {{"q", 0}, {"k", 0}, {"v", 0}, {"beta", 0}, {"initial_state", PROBE_OPTIONAL}},
     LIN_OUTPUTS, run_delta_rule},
    {"gated_delta_rule", "Gated DeltaNet: S <- exp(g) S, then the delta update (g [B,T,H])", LIN_OPTIONS,
     {{"q", 0}, {"k", 0}, {"v", 0}, {"g", 0}, {"beta", 0}, {"initial_state", PROBE_OPTIONAL}},
     LIN_OUTPUTS, run_gated_delta_rule},
    {"kda", "Kimi Delta Attention: S <- diag(exp g) S, then the delta update (g [B,T,H,K])", LIN_OPTIONS,
     {{"q", 0}, {"k", 0}, {"v", 0}, {"g", 0}, {"beta", 0}, {"initial_state", PROBE_OPTIONAL}},
     LIN_OUTPUTS, run_kda},
    {"simple_gla", "scalar-gated linear attention (Mamba-2 / SSD core): S <- exp(g) S + k v^T", LIN_OPTIONS,
     {{"q", 0}, {"k", 0}, {"v", 0}, {"g", 0}, {"initial_state", PROBE_OPTIONAL}},
     LIN_OUTPUTS, run_simple_gla},
    {"linear_attn", "linear attention: S <- S + k v^T, o = S^T q (/ q.z with normalize, z <- z + k)",
     "scale (default K^-1/2), chunk_size (default 64), recurrent (0: chunkwise, 1: token by token, 2: parallel), "
     "normalize (default 0)",
     {{"q", 0}, {"k", 0}, {"v", 0}, {"initial_state", PROBE_OPTIONAL}, {"initial_z", PROBE_OPTIONAL}},
     {{"o", "do", 0}, {"final_state", "dht", PROBE_OPTIONAL}, {"final_z", "dzt", PROBE_OPTIONAL}},
     run_linear_attn},
    {"retention", "RetNet retention: S <- gamma_h S + k v^T, gamma_h = 1 - 2^(-5-h), o = S^T q",
     "scale (default K^-1/2), chunk_size (default 64), recurrent (0: chunkwise, 1: token by token, 2: parallel)",
     {{"q", 0}, {"k", 0}, {"v", 0}, {"initial_state", PROBE_OPTIONAL}},
     LIN_OUTPUTS, run_retention},
    {"performer", "Performer FAVOR+ (causal, normalised) with the given random features projection_matrix [m, K]",
     "chunk_size (default 64), recurrent (0: chunkwise, 1: token by token)",
     {{"q", 0}, {"k", 0}, {"v", 0}, {"projection_matrix", PROBE_NO_GRAD}},
     {{"o", "do", 0}},
     run_performer},
    {"gla", "gated linear attention, per-channel decay: S <- diag(exp gk) S + k v^T (gk [B,T,H,K])", LIN_OPTIONS,
     {{"q", 0}, {"k", 0}, {"v", 0}, {"gk", 0}, {"initial_state", PROBE_OPTIONAL}},
     LIN_OUTPUTS, run_gla},
    {"dplr", "generalised delta rule (RWKV-7 core): S <- diag(exp gk) S + k v^T + b (a^T S)", LIN_OPTIONS,
     {{"q", 0}, {"k", 0}, {"v", 0}, {"a", 0}, {"b", 0}, {"gk", 0}, {"initial_state", PROBE_OPTIONAL}},
     LIN_OUTPUTS, run_dplr},
    {"selective_scan", "Mamba-1's selective scan (mamba_ssm's selective_scan_ref with variable B, C [B,N,L] and real A)",
     "delta_softplus (0), chunk_size (64), sequential (0: chunked with checkpoints, 1: token by token)",
     {{"u", 0}, {"delta", 0}, {"A", 0}, {"B", 0}, {"C", 0}, {"D", PROBE_OPTIONAL}, {"z", PROBE_OPTIONAL},
      {"delta_bias", PROBE_OPTIONAL}},
     {{"out", "dout", 0}, {"last_state", "dlast_state", PROBE_OPTIONAL}},
     run_selective_scan},
    {"s4d_kernel", "S4D's kernel K[h,l] = 2 Re sum_n C_n Bbar_n Abar_n^l (ZOH, A = -exp(log_A_real) + i A_imag)",
     "L (required)",
     {{"log_dt", 0}, {"log_A_real", 0}, {"A_imag", 0}, {"B", PROBE_OPTIONAL}, {"C", 0}},
     {{"K", "dK", 0}},
     run_s4d_kernel},
    {"dsa", "DeepSeek sparse attention: lightning-indexer top-k, attention over the selected keys (writes indices too)",
     "topk (required), scale (default D^-1/2)",
     {{"q", 0}, {"k", 0}, {"v", 0}, {"q_idx", PROBE_NO_GRAD}, {"k_idx", PROBE_NO_GRAD},
      {"w_idx", PROBE_NO_GRAD | PROBE_OPTIONAL}},
     {{"o", "do", 0}},
     run_dsa},
    {"dsa_indexer", "the lightning indexer's causal top-k selection alone (indices, -1 padded)", "topk (required)",
     {{"q_idx", PROBE_NO_GRAD}, {"k_idx", PROBE_NO_GRAD}, {"w_idx", PROBE_NO_GRAD | PROBE_OPTIONAL}},
     {{NULL, NULL, 0}},
     run_dsa_indexer},
    {"nsa", "native sparse attention's selected (given block_indices [B,T,H,S]) and sliding-window branches, "
            "g_slc o_slc + g_swa o_swa (fla's naive_nsa without g_cmp)",
     "block_size (default 64), window_size (keys i-W+1..i; default 0: none), scale (default D^-1/2)",
     {{"q", 0}, {"k", 0}, {"v", 0}, {"g_slc", PROBE_OPTIONAL}, {"g_swa", PROBE_OPTIONAL},
      {"block_indices", PROBE_NO_GRAD}},
     {{"o", "do", 0}},
     run_nsa},
};

/* ---- the shared driver ------------------------------------------------------ */

static const probe_op *probe_find(const char *name) {
  for (int i = 0; i < AT_ARRAY_LEN(probe_ops); i++)
    if (strcmp(probe_ops[i].name, name) == 0) return &probe_ops[i];
  return NULL;
}

static void probe_list(FILE *f) {
  fprintf(f, "ops:\n");
  for (int i = 0; i < AT_ARRAY_LEN(probe_ops); i++) {
    const probe_op *op = &probe_ops[i];
    fprintf(f, "  %-18s %s\n    inputs:", op->name, op->about);
    for (const probe_input *p = op->in; p->name; p++)
      fprintf(f, " %s%s%s", p->name, p->flags & PROBE_OPTIONAL ? "?" : "",
              p->flags & PROBE_NO_GRAD ? "(no grad)" : "");
    for (const probe_output *p = op->out; p->name; p++)
      fprintf(f, " %s%s", p->seed, p->flags & PROBE_OPTIONAL ? "?" : "");
    fprintf(f, "\n    outputs:");
    for (const probe_output *p = op->out; p->name; p++) fprintf(f, " %s", p->name);
    for (const probe_input *p = op->in; p->name; p++)
      if (!(p->flags & PROBE_NO_GRAD)) fprintf(f, " d%s", p->name);
    fprintf(f, "\n    options: %s\n", op->options);
  }
  fprintf(f, "(? = optional)\n");
}

static void probe_usage(FILE *f) {
  fprintf(f, "usage: probe OP IN.h5 OUT.h5   (probe --list: the known ops)\n"
             "       probe --pattern MIXER T OUT.png [KEY=VALUE ...]   (a mixer's attention mask)\n");
}

static void probe_known(FILE *f) {
  for (int i = 0; i < AT_ARRAY_LEN(probe_ops); i++) fprintf(f, "%s%s", i ? ", " : "", probe_ops[i].name);
}

/* Reads dataset `prefix``name` into a tensor of c (a leaf when `leaf`); a
 * missing dataset is AT_E_FORMAT with a message. */
static at_status probe_read(at_ctx *c, at_h5 *h, const char *prefix, const char *name, int leaf,
                            at_tensor **out) {
  char path[256];
  snprintf(path, sizeof path, "%s%s", prefix, name);
  *out = NULL;
  if (!at_h5_exists(h, path)) return at_error(AT_E_FORMAT, "%s: no dataset '%s'", at_h5_path(h), path);
  int nd;
  int64_t shape[AT_MAX_DIMS];
  real *data;
  at_status st = at_h5_read_real_alloc(h, path, &nd, shape, &data);
  if (st != AT_OK) return st;
  if (nd == 0) nd = 1, shape[0] = 1; /* a scalar */
  *out = leaf ? at_leaf(c, data, nd, shape) : at_from(c, data, nd, shape);
  free(data);
  return *out ? AT_OK : at_error(AT_E_NOMEM, "%s: out of memory for '%s'", at_h5_path(h), path);
}

/* Reads the op's inputs from in_path, runs it forward and backward from the
 * seeded output gradients: everything but writing. */
typedef struct probe_job {
  const probe_op *op;
  const char *in_path;
  probe_run r;
} probe_job;

static void probe_release(probe_run *r) {
  at_h5_close(r->in);
  at_ctx_free(r->c);
  const probe_op *op = r->op;
  memset(r, 0, sizeof *r);
  r->op = op;
}

static at_status probe_compute(void *arg) {
  probe_job *j = arg;
  const probe_op *op = j->op;
  probe_run *r = &j->r;
  probe_release(r);
  at_status st = at_h5_open(j->in_path, &r->in);
  if (st != AT_OK) return st;
  if (!(r->c = at_ctx_new(0))) return at_error(AT_E_NOMEM, "out of memory");
  const char *prefix = at_h5_exists(r->in, "inputs") ? "inputs/" : "";
  for (int i = 0; op->in[i].name; i++) {
    char path[256];
    snprintf(path, sizeof path, "%s%s", prefix, op->in[i].name);
    if ((op->in[i].flags & PROBE_OPTIONAL) && !at_h5_exists(r->in, path)) continue;
    if ((st = probe_read(r->c, r->in, prefix, op->in[i].name, !(op->in[i].flags & PROBE_NO_GRAD), &r->x[i])) != AT_OK)
      return st;
  }
  if ((st = op->run(r)) != AT_OK) return at_error_prefix(st, "%s", j->in_path);
  /* seed each output's gradient */
  for (int k = 0; op->out[k].name; k++) {
    at_tensor *y = r->y[k], *seed = NULL;
    if (!y) { /* an optional output the op did not produce (linear_attn's final_z without normalize) */
      AT_ASSERT(op->out[k].flags & PROBE_OPTIONAL);
      continue;
    }
    char path[256];
    snprintf(path, sizeof path, "%s%s", prefix, op->out[k].seed);
    if ((op->out[k].flags & PROBE_OPTIONAL) && !at_h5_exists(r->in, path)) continue;
    if ((st = probe_read(r->c, r->in, prefix, op->out[k].seed, 0, &seed)) != AT_OK) return st;
    if (!at_same_shape(seed, y)) {
      char a[96], b[96];
      return at_error(AT_E_SHAPE, "%s: '%s' has shape %s but %s has shape %s", j->in_path, path, AT_SHAPE_STR(seed, a),
                      op->out[k].name, AT_SHAPE_STR(y, b));
    }
    real *g = at_grad(r->c, y);
    if (!g) { /* no input requires grad: nothing to propagate */
      if (!y->requires_grad) continue;
      return at_ctx_status(r->c);
    }
    memcpy(g, seed->data, (size_t)y->size * sizeof(real));
  }
  return at_backward_from_seeded(r->c);
}

/* The outputs and the inputs' gradients, into OUT.h5 (atomically). */
static at_status probe_write(probe_run *r, const char *out_path) {
  const probe_op *op = r->op;
  at_h5 *out = NULL;
  at_status st = at_h5_create(out_path, &out);
  for (int j = 0; st == AT_OK && op->out[j].name; j++)
    if (r->y[j]) st = at_h5_write_real(out, op->out[j].name, r->y[j]->ndim, r->y[j]->shape, r->y[j]->data);
  for (int i = 0; st == AT_OK && op->in[i].name; i++) {
    at_tensor *x = r->x[i];
    if (!x || (op->in[i].flags & PROBE_NO_GRAD)) continue;
    real *g = at_grad(r->c, x); /* zero if nothing flowed into it */
    if (!g) {
      st = at_ctx_status(r->c);
      break;
    }
    char dname[128];
    snprintf(dname, sizeof dname, "d%s", op->in[i].name);
    st = at_h5_write_real(out, dname, x->ndim, x->shape, g);
  }
  if (st == AT_OK && r->ints) st = at_h5_write_int(out, r->ints_name, r->ints->ndim, r->ints->shape, r->ints->data);
  if (st == AT_OK) st = at_h5_set_attr_str(out, "/", "op", op->name);
  if (st == AT_OK) return at_h5_commit(out);
  at_h5_close(out); /* deletes the unfinished OUT.h5.tmp */
  return st;
}

/* Runs op `name` on in_path and writes out_path. Returns the exit status: 0,
 * or 2 after a message on `err`. The computation runs first under the HDF5
 * guard (core/h5io.h), so a hostile input file is refused, not a crash, and
 * the op's time and memory are bounded by the guard's limits. */
static int probe(const char *name, const char *in_path, const char *out_path, FILE *err) {
  const probe_op *op = probe_find(name);
  if (!op) {
    fprintf(err, "probe: unknown op '%s' (known: ", name);
    probe_known(err);
    fprintf(err, ")\n");
    return 2;
  }
  probe_job job = {op, in_path, {.op = op}};
  at_status st = at_h5_guard(in_path, probe_compute, &job);
  if (st == AT_OK) st = probe_write(&job.r, out_path);
  if (st != AT_OK) fprintf(err, "probe %s: %s\n", op->name, at_errmsg());
  probe_release(&job.r);
  return st == AT_OK ? 0 : 2;
}

/* ---- --pattern: a mixer's visibility mask as a PNG --------------------------------- */

typedef struct pattern_job {
  at_model_cfg cfg;
  int layer;
  uint64_t seed;
} pattern_job;

/* KEY=VALUE into the job: the special keys, else the mixer's option (an
 * enum by name, a bool as true/false). */
static at_status pattern_arg(pattern_job *j, at_mixer_kind k, const char *arg) {
  const char *eq = strchr(arg, '=');
  if (!eq || eq == arg) return at_error(AT_E_ARG, "'%s' is not KEY=VALUE", arg);
  char key[64];
  snprintf(key, sizeof key, "%.*s", (int)(eq - arg), arg);
  const char *val = eq + 1;
  const at_mixer_impl *impl = at_mixer_impl_of(k);
  for (int i = 0; i < impl->n_opts; i++) {
    const at_mixer_opt *o = &impl->opts[i];
    if (strcmp(o->key, key) != 0) continue;
    if (o->type == AT_OPT_ENUM)
      for (int n = 0; o->names[n]; n++)
        if (!strcmp(o->names[n], val)) return at_mixer_opt_set(&j->cfg, k, key, o->vals ? o->vals[n] : n);
    if (o->type == AT_OPT_BOOL && (!strcmp(val, "true") || !strcmp(val, "false")))
      return at_mixer_opt_set(&j->cfg, k, key, !strcmp(val, "true"));
  }
  char *end;
  double v = strtod(val, &end);
  if (end == val || *end) return at_error(AT_E_ARG, "%s: '%s' is not a number or a known name", key, val);
  if (!strcmp(key, "n_heads")) j->cfg.n_heads = j->cfg.n_kv_heads = (int64_t)v;
  else if (!strcmp(key, "n_layers")) j->cfg.n_layers = (int64_t)v;
  else if (!strcmp(key, "layer")) j->layer = (int)v;
  else if (!strcmp(key, "seed")) j->seed = (uint64_t)v;
  else return at_mixer_opt_set(&j->cfg, k, key, v);
  if (v < 1 && strcmp(key, "layer") && strcmp(key, "seed")) return at_error(AT_E_ARG, "%s must be positive", key);
  return AT_OK;
}

/* Pixels [T, HQ (T + 2) - 2] of the layer's mask (malloc'ed); *visible: the
 * visible (query, key) pairs of all heads. */
static unsigned char *pattern_pixels(const at_attn_layout *L, int64_t T, int64_t HQ, int64_t *w, int64_t *visible) {
  *w = HQ * (T + 2) - 2;
  *visible = 0;
  unsigned char *pix = malloc((size_t)(*w * T));
  if (!pix) return NULL;
  memset(pix, 128, (size_t)(*w * T));
  for (int64_t h = 0; h < HQ; h++)
    for (int64_t i = 0; i < T; i++)
      for (int64_t j = 0; j < T; j++) {
        int vis = at_attn_layout_visible(L, 0, h, i, j);
        pix[i * *w + h * (T + 2) + j] = vis ? 0 : 255;
        *visible += vis;
      }
  return pix;
}

static at_status pattern_build(pattern_job *j, int64_t T, const char *out, int64_t *visible) {
  at_mixer_kind bad, k = j->cfg.layers[0];
  const char *key;
  const at_mixer_impl *impl = at_mixer_impl_of(k);
  if (j->cfg.n_layers > AT_MAX_LAYERS)
    return at_error(AT_E_ARG, "n_layers %lld exceeds %d", (long long)j->cfg.n_layers, AT_MAX_LAYERS);
  for (int l = 1; l < j->cfg.n_layers; l++) j->cfg.layers[l] = k;
  if (j->layer < 0 || j->layer >= j->cfg.n_layers)
    return at_error(AT_E_ARG, "layer %d is not one of the %lld layers", j->layer, (long long)j->cfg.n_layers);
  at_status st = at_model_cfg_resolve(&j->cfg, &bad, &key);
  if (st != AT_OK) return st;
  at_params *p = at_params_new();
  at_ctx *c = at_ctx_new(0);
  void *layer = NULL;
  if (!p || !c) st = at_error(AT_E_NOMEM, "out of memory");
  if (st == AT_OK) st = impl->create(&j->cfg, j->layer, p, "l.", &layer);
  if (st == AT_OK) st = at_params_finalize(p);
  if (st == AT_OK) {
    impl->init(layer, &j->cfg, j->seed);
    at_attn_layout *L = at_softmax_mixer_layout(c, impl, layer, T);
    int64_t w = 0;
    unsigned char *pix = L ? pattern_pixels(L, T, j->cfg.n_heads, &w, visible) : NULL;
    if (!L) st = at_ctx_status(c);
    else if (!pix) st = at_error(AT_E_NOMEM, "out of memory");
    else st = at_png_write_gray(out, pix, w, T);
    free(pix);
  }
  if (layer) impl->destroy(layer);
  at_ctx_free(c);
  at_params_free(p);
  return st;
}

static int pattern_main(int argc, char **argv, FILE *out, FILE *err) {
  if (argc < 5) {
    probe_usage(err);
    return 2;
  }
  int k = at_mixer_from_name(argv[2]);
  char *end;
  long long T = strtoll(argv[3], &end, 10);
  pattern_job j = {.layer = 0, .seed = 0};
  at_model_cfg_defaults(&j.cfg);
  j.cfg.d_model = 64, j.cfg.n_heads = j.cfg.n_kv_heads = 4, j.cfg.n_layers = 1, j.cfg.position = AT_POS_ROPE;
  j.cfg.mlp = AT_MLP_NONE;
  at_status st = AT_OK;
  if (k < 0) st = at_error(AT_E_ARG, "unknown mixer '%s'", argv[2]);
  else if (*end || T < 1 || T > 4096) st = at_error(AT_E_ARG, "T '%s' must be an integer in 1 .. 4096", argv[3]);
  else j.cfg.layers[0] = k;
  for (int i = 5; st == AT_OK && i < argc; i++) st = pattern_arg(&j, k, argv[i]);
  if (st == AT_OK && j.cfg.n_heads * (int64_t)T * T > ((int64_t)1 << 26))
    st = at_error(AT_E_ARG, "%lld heads of %lld x %lld pixels are too many", (long long)j.cfg.n_heads, T, T);
  if (st == AT_OK) j.cfg.d_model = 16 * j.cfg.n_heads;
  int64_t visible = 0;
  if (st == AT_OK) st = pattern_build(&j, T, argv[4], &visible);
  if (st != AT_OK) {
    fprintf(err, "probe --pattern: %s\n", at_errmsg());
    return 2;
  }
  fprintf(out, "%s: %s mask of %lld positions, %lld heads; keys per query %.1f (causal: %.1f)\n", argv[4], argv[2], T,
          (long long)j.cfg.n_heads, (double)visible / (double)(j.cfg.n_heads * T), 0.5 * (double)(T + 1));
  return 0;
}

/* The command line; returns the exit status. */
static int probe_main(int argc, char **argv, FILE *out, FILE *err) {
  if (argc == 2 && (strcmp(argv[1], "--list") == 0 || strcmp(argv[1], "--help") == 0 ||
                    strcmp(argv[1], "-h") == 0)) {
    probe_usage(out);
    probe_list(out);
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "--pattern") == 0) return pattern_main(argc, argv, out, err);
  if (argc != 4) {
    probe_usage(err);
    fprintf(err, "known ops: ");
    probe_known(err);
    fprintf(err, "\n");
    return 2;
  }
  return probe(argv[1], argv[2], argv[3], err);
}

#ifndef AT_PROBE_NO_MAIN /* tests include this file and call probe_main */
int main(int argc, char **argv) { return probe_main(argc, argv, stdout, stderr); }
#endif
