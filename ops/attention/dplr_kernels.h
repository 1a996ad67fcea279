/* ops/attention/dplr_kernels.h: the per-head kernels behind dplr.h (not a
 * public header).
 *
 * One description covers gla and dplr: a per-channel log-decay gk and, when
 * a and b are given, the low-rank term b (a^T S). A kernel handles one
 * (batch, head) pair; the caller (dplr.c) runs them in an OpenMP loop over
 * B x H with a private workspace per thread. Gradients are ADDED into the
 * given arrays (NULL: not wanted).
 */
#ifndef AT_ATTENTION_DPLR_KERNELS_H
#define AT_ATTENTION_DPLR_KERNELS_H

#include "ops/attention/dplr.h"

typedef struct at_dplr_prob {
  int64_t B, T, H, K, V;
  int64_t C;   /* chunk size (recurrent form: checkpoint spacing) */
  int lowrank; /* 1: dplr (a, b given); 0: gla */
  real scale;
  const real *q, *k, *v, *a, *b, *g;
} at_dplr_prob;

typedef struct at_dplr_grads {
  const real *d_o;  /* [B,T,H,V] or NULL (zero) */
  const real *d_ht; /* [B,H,K,V] or NULL (zero) */
  real *dq, *dk, *dv, *da, *db, *dg, *dh0; /* each NULL when not wanted */
} at_dplr_grads;

static inline int64_t at_dplr_n_chunks(const at_dplr_prob *p) { return (p->T + p->C - 1) / p->C; }

/* Row index (b, t, h) of a [B,T,H,*] tensor. */
static inline int64_t at_dplr_row(const at_dplr_prob *p, int64_t b, int64_t t, int64_t h) {
  return (b * p->T + t) * p->H + h;
}

/* Decay products below this are flushed to zero (they cannot matter and
 * denormal arithmetic is slow). */
#define AT_DPLR_TINY ((real)1e-30)

/* The entry point behind at_gla and at_dplr (`name` names the op in messages
 * and on the tape; a and b both NULL for gla). */
at_tensor *at_dplr_attn(at_ctx *c, const char *name, at_tensor *q, at_tensor *k, at_tensor *v,
                        at_tensor *a, at_tensor *b, at_tensor *gk, at_tensor *h0, at_tensor **ht,
                        const at_lin_opts *opts);
at_tensor *at_dplr_attn_step(at_ctx *c, const char *name, at_tensor *q, at_tensor *k,
                             at_tensor *v, at_tensor *a, at_tensor *b, at_tensor *gk,
                             at_tensor *state, const at_lin_opts *opts);

/* ---- recurrent form (dplr_recurrent.c) -------------------------------------- */

/* Workspace in reals for one thread. */
size_t at_dplr_rec_work(const at_dplr_prob *p);
/* Runs head (b, h) from state S (K x V, updated in place to the final
 * state); writes o rows when o is not NULL; saves the state before tokens
 * 0, C, 2C, ... into ckpt (n_chunks x K x V) when ckpt is not NULL. */
void at_dplr_rec_forward(const at_dplr_prob *p, int64_t b, int64_t h, real *S, real *o,
                         real *ckpt, real *work);
void at_dplr_rec_backward(const at_dplr_prob *p, int64_t b, int64_t h, const real *ckpt,
                          const at_dplr_grads *gr, real *work);

/* ---- chunkwise form (dplr_chunk.c) -------------------------------------------- */

size_t at_dplr_chunk_work(const at_dplr_prob *p);
/* The same contract (ckpt holds the state entering each chunk). */
void at_dplr_chunk_forward(const at_dplr_prob *p, int64_t b, int64_t h, real *S, real *o,
                           real *ckpt, real *work);
void at_dplr_chunk_backward(const at_dplr_prob *p, int64_t b, int64_t h, const real *ckpt,
                            const at_dplr_grads *gr, real *work);

#endif
