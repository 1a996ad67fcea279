/* autograd/autograd.h: the context, the tape, the parameter store, gradcheck.
 *
 * An at_ctx is one training (or inference) context: the step arena where
 * activations, saved contexts and activation gradients live, and the tape.
 * The tape is a flat array of nodes in forward order; at_backward walks it
 * in reverse and each node's backward ACCUMULATES (+=) into the gradients of
 * its inputs, so fan-out needs no special handling.
 *
 * Ops report bad input without crashing: they set a sticky status on the
 * context (at_ctx_status, message in at_errmsg) and return NULL; every op
 * returns NULL when given a NULL input, so a forward pass can be checked once
 * at the end.
 */
#ifndef AT_AUTOGRAD_H
#define AT_AUTOGRAD_H

#include "core/arena.h"
#include "core/tensor.h"

#define AT_NODE_MAX_IN 10
#define AT_NODE_MAX_OUT 3

typedef struct at_ctx at_ctx;
typedef struct at_node at_node;
typedef void (*at_backward_fn)(at_ctx *c, at_node *n);

struct at_node {
  const char *op;           /* for messages */
  at_backward_fn backward;
  at_tensor *in[AT_NODE_MAX_IN];
  at_tensor *out[AT_NODE_MAX_OUT];
  int n_in, n_out;
  void *saved;              /* op-specific context, in the step arena */
  int64_t i[8];             /* small integer options (axis, window, ...) */
  double f[4];              /* small real options (scale, eps, ...) */
};

struct at_ctx {
  at_arena *arena;          /* step arena */
  at_node *nodes;
  int n_nodes, cap_nodes;
  int no_grad;              /* > 0 inside no-grad scopes */
  at_status status;         /* first failure since the last reset */
};

at_ctx *at_ctx_new(size_t arena_bytes);
void at_ctx_free(at_ctx *c);
/* Release every activation and the tape (after an optimiser step). */
void at_ctx_reset(at_ctx *c);
at_status at_ctx_status(const at_ctx *c);

/* A mark and rewind of arena and tape together (gradcheck, evaluation). */
typedef struct at_ctx_mark {
  at_arena_mark arena;
  int n_nodes;
} at_ctx_mark;
at_ctx_mark at_ctx_get_mark(const at_ctx *c);
void at_ctx_rewind(at_ctx *c, at_ctx_mark m);

/* Records a failure (the first one sticks) and returns NULL, for ops. */
void *at_fail(at_ctx *c, at_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Tensors in the step arena. */
at_tensor *at_new(at_ctx *c, int ndim, const int64_t *shape);   /* uninitialised */
at_tensor *at_zeros(at_ctx *c, int ndim, const int64_t *shape);
at_tensor *at_from(at_ctx *c, const real *data, int ndim, const int64_t *shape); /* copy */
at_itensor *at_inew(at_ctx *c, int ndim, const int64_t *shape);
#define AT_NEW(c, ...) at_new((c), AT_SHAPE(__VA_ARGS__))
#define AT_ZEROS(c, ...) at_zeros((c), AT_SHAPE(__VA_ARGS__))
/* Scratch memory for a kernel (uninitialised / zeroed), NULL on failure. */
void *at_scratch(at_ctx *c, size_t bytes);
void *at_scratch_zero(at_ctx *c, size_t bytes);
/* fn(arg, i, w) for every i in [0, n), spread over the threads (dynamic
 * schedule, as the kernels' batch x heads loops want): w is the calling
 * thread's own workspace of ws reals from the step arena, released after.
 * 0 when out of memory (the failure is recorded). */
typedef void (*at_item_fn)(void *arg, int64_t i, real *w);
int at_parallel_items(at_ctx *c, int64_t n, size_t ws, at_item_fn fn, void *arg);

/* ---- the tape -------------------------------------------------------------- */

/* 1 if an op on these inputs must be recorded (grad mode on and some input
 * requires grad). */
int at_needs_grad(const at_ctx *c, int n_in, at_tensor *const *in);
/* Appends a node and marks the outputs as requiring grad. Returns NULL (and
 * records nothing) when at_needs_grad is 0; ops then skip saving context. */
at_node *at_record(at_ctx *c, const char *op, at_backward_fn backward, int n_in,
                   at_tensor *const *in, int n_out, at_tensor *const *out);
#define AT_RECORD(c, op, bw, ins, outs) \
  at_record((c), (op), (bw), AT_ARRAY_LEN(ins), (ins), AT_ARRAY_LEN(outs), (outs))

/* The gradient buffer of t, allocated zeroed on first use; NULL if t does
 * not require grad. Backward functions accumulate into it. */
real *at_grad(at_ctx *c, at_tensor *t);
/* The same buffer for a backward that can write its term instead of adding
 * it: *fresh is 1 when the buffer was allocated now and left uninitialised,
 * and the caller must then store every element (dx[i] = term), else 0 (add
 * to it as with at_grad). Spares the zeroing and a read of every fresh
 * gradient (the zeroing alone was 4% of a training step). */
real *at_grad_into(at_ctx *c, at_tensor *t, int *fresh);

/* Seeds d(loss) = 1 for a scalar `loss` and runs the tape backwards. */
at_status at_backward(at_ctx *c, at_tensor *loss);
/* Runs the tape backwards from gradients already placed in outputs' grad. */
at_status at_backward_from_seeded(at_ctx *c);

void at_no_grad_begin(at_ctx *c);
void at_no_grad_end(at_ctx *c);

/* A new header over x's data that requires no grad: gradient stops here. */
at_tensor *at_detach(at_ctx *c, at_tensor *x);
/* A leaf tensor that collects a gradient (inputs of gradchecks, probes). */
at_tensor *at_leaf(at_ctx *c, const real *data, int ndim, const int64_t *shape);

/* ---- parameters ------------------------------------------------------------ */

/* Parameter flags. */
enum {
  AT_PARAM_NO_DECAY = 1 << 0, /* excluded from weight decay (norms, biases, embeddings) */
};

typedef struct at_param {
  at_tensor *t;
  char name[96];
  int64_t offset;    /* into the flat buffers */
  int flags;
  int group;         /* user-defined (e.g. the DSA indexer is group 1) */
} at_param;

/* Parameters, their gradients (and an optimiser's state, by offset) live in
 * flat buffers with identical layouts: one loop updates them, one dataset
 * per name saves them, one allreduce would sum gradients. */
typedef struct at_params {
  at_param *list;
  int n, cap;
  int64_t total;
  real *data, *grad;
  at_arena *arena;   /* headers and names */
  int finalized;
} at_params;

at_params *at_params_new(void);
void at_params_free(at_params *p);
/* Declares a parameter; its data pointer is valid after finalize. Names are
 * unique. NULL (message set) on error. */
at_tensor *at_params_add(at_params *p, const char *name, int ndim, const int64_t *shape,
                         int flags, int group);
at_status at_params_finalize(at_params *p);
at_param *at_params_find(at_params *p, const char *name);
void at_params_zero_grad(at_params *p);
/* Trainable (requires_grad) on/off for every parameter of a group (-1: all). */
void at_params_set_trainable(at_params *p, int group, int trainable);

/* ---- gradient check ---------------------------------------------------------- */

/* Builds an op's output from the inputs (recording on the tape). */
typedef at_tensor *(*at_gc_fn)(at_ctx *c, at_tensor **inputs, void *user);

typedef struct at_gc_result {
  double max_rel_err;   /* max over inputs of |g_a - g_n| / max(|g_n|, |g_a|, 1e-8) */
  int worst_input;
  double analytic_norm, numeric_norm;
  int64_t n_checked;
} at_gc_result;

/* Central differences on L = sum(out * w) with fixed random weights w.
 * `eps` is the step (1e-6 suits double). Every element of every input that
 * requires grad is perturbed. Errors are relative per tensor (2-norms). */
at_status at_gradcheck(at_ctx *c, at_gc_fn f, at_tensor **inputs, int n_inputs, void *user,
                       double eps, at_gc_result *res);

#endif
