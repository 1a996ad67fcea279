/* ops/attention/favor.h: Performer's FAVOR+ (Choromanski et al., "Rethinking
 * Attention with Performers", arXiv 2009.14794): causal softmax attention
 * estimated with positive orthogonal random features, computed as
 * normalised linear attention (linear_attn.h) on the features.
 *
 * With Omega [m, K] (rows w_i), x^ = x K^-1/4 and the logits
 *   l_i(x) = w_i . x^ - |x^|^2 / 2,
 * the positive random features phi(x) = exp(l(x)) / sqrt(m) satisfy
 * E[phi(q) . phi(k)] = exp(q . k / sqrt(K)) (the paper's Lemma 1), and
 *   o_t = sum_{s<=t} (phi(q_t) . phi(k_s)) v_s / sum_{s<=t} phi(q_t) . phi(k_s)
 * approaches causal softmax attention as m grows.
 *
 * Stabilisers (the paper's max-stabiliser, made causal). Any factor shared by
 * a query's numerator and denominator cancels, so
 *   queries: phi(q_t) = exp(l(q_t) - max_i l_i(q_t))  (the paper's per-query max);
 *   keys:    phi(k_s) = exp(l(k_s) - M_s), M_s = max(M_{s-1}, max_i l_i(k_s)),
 *            the running maximum over the keys so far. The paper subtracts
 *            the maximum over ALL keys of the sequence, which lets a future
 *            key move past outputs (through the eps terms and rounding); the
 *            running maximum is its causal equivalent. Keys of different
 *            s then carry different factors, which the op re-aligns by
 *            decaying its state by exp(M_{s-1} - M_s) <= 1 at each step: a
 *            per-token log-decay g_s = M_{s-1} - M_s, exactly compensated.
 * Both maxima are constants for the backward (their exact gradient is zero:
 * they cancel). The 1/sqrt(m) factor cancels too and is left out; features
 * are in (0, 1]. The paper's additive feature eps (1e-4 in its code) is not
 * used: the normaliser's eps (1e-10) guards the division.
 *
 * The features (at_favor_draw): orthogonal blocks — each block of K rows
 * the Gram-Schmidt orthonormalisation of a K x K Gaussian matrix, row i
 * rescaled by the norm of an independent Gaussian K-vector (a chi_K length,
 * so every row is marginally N(0, I_K): the paper's unbiased orthogonal
 * estimator, its code's ortho_scaling = 0); m not a multiple of K takes the
 * first rows of a last block. Or iid Gaussian rows. A pure function of
 * (seed, stream, draw): a model redraws its features reproducibly.
 *
 * Shapes: q, k [B,T,H,K], v [B,T,H,V], Omega [m,K] (a constant, shared by
 * the heads); the state is (S [B,H,m,V], z [B,H,m], M [B,H]); o [B,T,H,V].
 */
#ifndef AT_ATTENTION_FAVOR_H
#define AT_ATTENTION_FAVOR_H

#include "ops/attention/linear_attn.h"

/* Fills omega [m, K] (orthogonal blocks or iid rows) from the counter-based
 * stream (seed, stream), draw number `draw`. */
void at_favor_draw(real *omega, int64_t m, int64_t K, int orthogonal, uint64_t seed,
                   uint64_t stream, uint64_t draw);

/* The stabilised features phi [B,T,H,m] of x [B,T,H,K] (differentiable in
 * x). Queries: key = 0, M0, g, MT unused (pass NULL). Keys: key = 1, M0
 * [B,H] the running maximum entering (NULL: none yet); *g [B,T,H] receives
 * the log-decays M_{t-1} - M_t (0 at t = 0 without M0) and *MT [B,H] the
 * final maximum (both constants; MT may be NULL). */
at_tensor *at_favor_features(at_ctx *c, at_tensor *x, const at_tensor *omega, int key,
                             const at_tensor *M0, at_tensor **g, at_tensor **MT);

/* FAVOR+ attention: features, then the normalised, decayed linear attention
 * (opts: chunk_size, form chunk | recurrent, eps; scale and normalize are
 * set by the op). h0, z0, M0 may be NULL (an empty state); ht, zt, MT (may be
 * NULL) receive the final state. Gradients flow to q, k, v, h0 and z0; they
 * are exact for o, which does not depend on the stabilisers. The final state
 * (ht, zt) is relative to MT (it scales with exp(-MT)); a gradient seeded on
 * it is propagated with MT held fixed. */
at_tensor *at_performer(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                        const at_tensor *omega, at_tensor *h0, at_tensor *z0,
                        const at_tensor *M0, at_tensor **ht, at_tensor **zt, at_tensor **MT,
                        const at_la_opts *opts);

/* Step form: (S [B,H,m,V], z [B,H,m], M [B,H]) advanced in place over the
 * T tokens (an empty state: zeros and M = -INFINITY); returns o. */
at_tensor *at_performer_step(at_ctx *c, at_tensor *q, at_tensor *k, at_tensor *v,
                             const at_tensor *omega, at_tensor *S, at_tensor *z, at_tensor *M,
                             const at_la_opts *opts);

#endif
