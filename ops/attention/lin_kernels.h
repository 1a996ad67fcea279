/* ops/attention/lin_kernels.h: the per-head kernels behind delta.h (not a
 * public header).
 *
 * One description covers every op of the family: a per-channel log-decay g
 * (a scalar gate is the same decay on every channel; no gate is decay 1) and
 * either the delta write (beta, UT transform) or the plain write k v^T.
 * A kernel handles one (batch, head) pair; the callers run them in an OpenMP
 * loop over B x H with a private workspace per thread. Gradients are ADDED
 * into the given arrays (NULL: not wanted).
 */
#ifndef AT_ATTENTION_LIN_KERNELS_H
#define AT_ATTENTION_LIN_KERNELS_H

#include "core/base.h"

enum { AT_LIN_GATE_NONE = 0, AT_LIN_GATE_HEAD = 1, AT_LIN_GATE_CHANNEL = 2 };

typedef struct at_lin_prob {
  int64_t B, T, H, K, V;
  int64_t C;      /* chunk size (recurrent form: checkpoint spacing) */
  int gate;       /* AT_LIN_GATE_*: g absent, [B,T,H] or [B,T,H,K] */
  int delta;      /* 1: delta write with beta; 0: S += k v^T (simple GLA) */
  real scale;
  const real *q, *k, *v, *g, *beta;
} at_lin_prob;

typedef struct at_lin_grads {
  const real *d_o;   /* [B,T,H,V] or NULL (zero) */
  const real *d_ht;  /* [B,H,K,V] or NULL (zero) */
  real *dq, *dk, *dv, *dg, *dbeta, *dh0; /* each NULL when not wanted */
} at_lin_grads;

/* Number of chunks (or checkpoints) per head. */
static inline int64_t at_lin_n_chunks(const at_lin_prob *p) { return (p->T + p->C - 1) / p->C; }

/* Values below this are flushed to zero in decay products (they cannot
 * matter and denormal arithmetic is slow). */
#define AT_LIN_TINY ((real)1e-30)

/* ---- recurrent form (delta_recurrent.c) ------------------------------------- */

/* Workspace size in reals for one thread. */
size_t at_lin_rec_work(const at_lin_prob *p);
/* Runs head (b, h) from state S (K x V, updated in place to the final
 * state). Writes o rows when o is not NULL; saves the state before tokens
 * 0, C, 2C, ... into ckpt (n_chunks x K x V) when ckpt is not NULL. */
void at_lin_rec_forward(const at_lin_prob *p, int64_t b, int64_t h, real *S, real *o, real *ckpt,
                        real *work);
/* The backward of head (b, h) from the forward's checkpoints. */
void at_lin_rec_backward(const at_lin_prob *p, int64_t b, int64_t h, const real *ckpt,
                         const at_lin_grads *gr, real *work);

/* ---- chunkwise form (delta_chunk.c) ------------------------------------------- */

size_t at_lin_chunk_work(const at_lin_prob *p);
/* Same contract as the recurrent pair (ckpt holds the state entering each
 * chunk). */
void at_lin_chunk_forward(const at_lin_prob *p, int64_t b, int64_t h, real *S, real *o,
                          real *ckpt, real *work);
void at_lin_chunk_backward(const at_lin_prob *p, int64_t b, int64_t h, const real *ckpt,
                           const at_lin_grads *gr, real *work);

#endif
