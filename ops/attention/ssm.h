/* ops/attention/ssm.h: the state-space ops of S4D (ops/attention/s4d.c) and
 * Mamba-1's selective scan (ops/attention/selective_scan.c).
 *
 * Layouts are attnlab's token-major ones ([B, T, channels]); tools/probe
 * transposes from the channel-major layouts of the PyTorch references
 * (selective_scan_ref's [B, D, L]). Complex numbers are stored as real
 * pairs in a last dimension of size 2 (re, im), as torch.view_as_real.
 *
 * ---- selective scan (Mamba-1's S6; mamba_ssm's selective_scan_ref) --------
 *
 * Per batch entry b and channel d, a state h in R^N:
 *
 *   dt_t  = softplus(delta_t + delta_bias)   (delta_softplus; else delta_t + delta_bias)
 *   h_t   = exp(dt_t A[d,:]) ⊙ h_{t-1} + dt_t u_t B_t
 *   y_t   = C_t · h_t + D[d] u_t
 *   out_t = y_t silu(z_t)                     (when z is given)
 *
 * Shapes: u, delta, z [B,T,D]; A [D,N]; Bm, Cm [B,T,N] (shared by the
 * channels: selective_scan_ref's variable B, C of shape [B,N,L]); D,
 * delta_bias [D]; initial / final state [B,D,N]. D, z, delta_bias, h0 may be
 * NULL. A should be negative (A = -exp(A_log)); nothing else is assumed.
 *
 * Forms (at_scan_opts.form), which agree to rounding:
 *   AT_SCAN_CHUNKED (default, training): one tape node with a hand-written
 *     backward. The forward saves the state entering every chunk of
 *     chunk_size tokens ([B, ceil(T/C), D, N]; nothing per token and
 *     channel); the backward recomputes the chunk's states from it and
 *     carries dh backwards.
 *   AT_SCAN_SEQUENTIAL: the definition, token by token, composed of
 *     primitive ops (its backward comes from the tape): the reference.
 * The step form advances a state [B,D,N] in place (generation; records
 * nothing). Gates dt near 0 or huge and strongly negative A give finite
 * outputs and gradients (decays are exp of non-positive numbers only).
 *
 * ---- S4D (diagonal S4 with zero-order hold; Gu et al. 2022) -------------
 *
 * Per channel h, M = N/2 complex modes (conjugate pairs: the output is
 * 2 Re of the sum over M modes), A = -exp(log_A_real) + i A_imag,
 * dt = exp(log_dt):
 *
 *   at_s4d_discretize:  Abar = exp(dt A),  Bbar = (exp(dt A) - 1) / A · B
 *   at_s4d_kernel:      K[h, l] = 2 Re sum_m C_m Bbar_m Abar_m^l,  l < L
 *   at_s4d_conv:        y[b,t,h] = sum_{j <= t} K[h,j] u[b,t-j,h]
 *   at_s4d_recurrence:  x_t = Abar ⊙ x_{t-1} + Bbar u_t,  y_t = 2 Re(C · x_t)
 *
 * conv(u, kernel(...)) and the recurrence are the two forms of the same map
 * (the layer's training form and its reference); at_s4d_step is the
 * recurrence for generation, state [B,H,M,2] advanced in place.
 * Shapes: log_dt [H], log_A_real, A_imag [H,M], B, C, Abar, Bbar [H,M,2],
 * u, y [B,T,H], K [H,L].
 */
#ifndef AT_ATTENTION_SSM_H
#define AT_ATTENTION_SSM_H

#include "ops/ops.h"

typedef enum at_scan_form { AT_SCAN_CHUNKED = 0, AT_SCAN_SEQUENTIAL = 1 } at_scan_form;

typedef struct at_scan_opts {
  int delta_softplus;  /* dt = softplus(delta + delta_bias) */
  int64_t chunk_size;  /* 0 means 64: the checkpoint spacing of the chunked form */
  at_scan_form form;
} at_scan_opts;
/* NULL options mean {0, 0, AT_SCAN_CHUNKED} (no softplus, as selective_scan_ref's default). */

/* Returns out [B,T,D]; *ht (when ht is not NULL) receives the final state,
 * a second output of the same computation whose gradient flows back. */
at_tensor *at_selective_scan(at_ctx *c, at_tensor *u, at_tensor *delta, at_tensor *A,
                             at_tensor *Bm, at_tensor *Cm, at_tensor *D, at_tensor *z,
                             at_tensor *delta_bias, at_tensor *h0, at_tensor **ht,
                             const at_scan_opts *opts);
/* The same over the given tokens (typically T = 1) from `state` [B,D,N],
 * which is advanced in place. Not differentiable. */
at_tensor *at_selective_scan_step(at_ctx *c, at_tensor *u, at_tensor *delta, at_tensor *A,
                                  at_tensor *Bm, at_tensor *Cm, at_tensor *D, at_tensor *z,
                                  at_tensor *delta_bias, at_tensor *state,
                                  const at_scan_opts *opts);

/* (Abar, Bbar) from the continuous parameters; *Bbar receives the second output. */
at_tensor *at_s4d_discretize(at_ctx *c, at_tensor *log_dt, at_tensor *log_A_real,
                             at_tensor *A_imag, at_tensor *B, at_tensor **Bbar);
/* K [H, L] from Abar, Bbar, C. */
at_tensor *at_s4d_kernel(at_ctx *c, at_tensor *Abar, at_tensor *Bbar, at_tensor *C, int64_t L);
/* y = causal convolution of u [B,T,H] with K [H,L], L >= T. */
at_tensor *at_s4d_conv(at_ctx *c, at_tensor *u, at_tensor *K);
/* The recurrence through the tape; x0 [B,H,M,2] or NULL; *xT (when not
 * NULL) receives the final state [B,H,M,2]. */
at_tensor *at_s4d_recurrence(at_ctx *c, at_tensor *u, at_tensor *Abar, at_tensor *Bbar,
                             at_tensor *C, at_tensor *x0, at_tensor **xT);
/* The recurrence for generation over u [B,T,H], state [B,H,M,2] in place. */
at_tensor *at_s4d_step(at_ctx *c, at_tensor *u, at_tensor *Abar, at_tensor *Bbar, at_tensor *C,
                       at_tensor *state);

#endif
