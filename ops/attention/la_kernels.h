/* ops/attention/la_kernels.h: the per-head kernels behind linear_attn.h (not
 * a public header).
 *
 * A kernel handles one (batch, head) pair; the callers run them in an OpenMP
 * loop over B x H with a private workspace per thread. The state of a head
 * is S (K x V) followed by z (K) when normalising: at_la_state_size reals.
 * Gradients are ADDED into the given arrays (NULL: not wanted).
 */
#ifndef AT_ATTENTION_LA_KERNELS_H
#define AT_ATTENTION_LA_KERNELS_H

#include "core/base.h"

typedef struct at_la_prob {
  int64_t B, T, H, K, V;
  int64_t C;           /* chunk size (recurrent form: checkpoint spacing) */
  int normalize;
  real scale, eps;
  const real *q, *k, *v;
  const real *g;       /* [B,T,H] log-decays, or NULL */
  const double *g_head; /* [H] fixed log-decay per head, or NULL (neither: no decay) */
} at_la_prob;

typedef struct at_la_grads {
  const real *d_o;  /* [B,T,H,V] or NULL (zero) */
  const real *d_ht; /* [B,H,K,V] or NULL */
  const real *d_zt; /* [B,H,K] or NULL */
  real *dq, *dk, *dv, *dg, *dh0, *dz0; /* each NULL when not wanted */
} at_la_grads;

static inline int64_t at_la_n_chunks(const at_la_prob *p) { return (p->T + p->C - 1) / p->C; }
static inline int64_t at_la_state_size(const at_la_prob *p) {
  return p->K * p->V + (p->normalize ? p->K : 0);
}
static inline int at_la_decayed(const at_la_prob *p) { return p->g || p->g_head; }

/* Decay products below this are flushed to zero (they cannot matter and
 * denormal arithmetic is slow). */
#define AT_LA_TINY ((real)1e-30)

/* ---- recurrent form (la_recurrent.c) ---------------------------------------- */

size_t at_la_rec_work(const at_la_prob *p);
/* Runs head (b, h) from state st (S then z, updated in place to the final
 * state). Writes o rows when o is not NULL; saves the state before tokens
 * 0, C, 2C, ... into ckpt (n_chunks states) when ckpt is not NULL. */
void at_la_rec_forward(const at_la_prob *p, int64_t b, int64_t h, real *st, real *o, real *ckpt,
                       real *work);
void at_la_rec_backward(const at_la_prob *p, int64_t b, int64_t h, const real *ckpt,
                        const at_la_grads *gr, real *work);

/* ---- chunkwise form (la_chunk.c) ---------------------------------------------- */

size_t at_la_chunk_work(const at_la_prob *p);
void at_la_chunk_forward(const at_la_prob *p, int64_t b, int64_t h, real *st, real *o, real *ckpt,
                         real *work);
void at_la_chunk_backward(const at_la_prob *p, int64_t b, int64_t h, const real *ckpt,
                          const at_la_grads *gr, real *work);

#endif
