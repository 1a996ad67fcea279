/* ops/attention/s4d.c: the diagonal state space of S4D (Gu, Gupta, Goel, Ré,
 * "On the Parameterization and Initialization of Diagonal State Space
 * Models", 2022): zero-order-hold discretisation, the convolution kernel by
 * a Vandermonde product, the causal convolution, and the recurrence (ssm.h).
 *
 * Complex gradients. For a complex intermediate w the backward carries
 * w̄ = dL/d(Re w) + i dL/d(Im w); through a holomorphic b = f(w) it is
 * w̄ += b̄ conj(f'(w)), and through a real r entering as w = r·v,
 * dL/dr += Re(conj(w̄) v). Everything below is those two rules.
 *
 * discretize (per channel h and mode m; s = dt A, E = e^s, F = (E - 1)/A):
 *   Abar = E, Bbar = F B
 *   s̄ = Ābar conj(E) + B̄bar conj(B E / A),   B̄ = B̄bar conj(F)
 *   Ā = B̄bar conj(-Bbar / A) + dt s̄,          dt̄ = Re(conj(s̄) A)
 *   dlog_dt = dt̄ dt,  dlog_A_real = Re(Ā) Re(A),  dA_imag = Im(Ā)
 * E - 1 is computed as expm1(Re s) cos(Im s) - 2 sin^2(Im s / 2) + i e^{Re s}
 * sin(Im s), accurate for small dt |A|.
 *
 * kernel (W = C Bbar, z = Abar, per channel):
 *   K_l = 2 Re sum_m W_m z_m^l                   (the Vandermonde product)
 *   W̄_m = sum_l 2 dK_l conj(z_m^l),   z̄_m = conj(W_m) sum_{l>=1} 2 dK_l l conj(z_m^{l-1})
 *   C̄ = W̄ conj(Bbar),  B̄bar = W̄ conj(C)
 * Powers are formed by repeated multiplication in double: O(H M L).
 *
 * conv (direct, FFT-free, causal): y[b,t,h] = sum_{j<=t} K[h,j] u[b,t-j,h];
 *   du[b,s,h] = sum_{t>=s} K[h,t-s] dy[b,t,h],  dK[h,j] = sum_{b,t>=j} dy[b,t,h] u[b,t-j,h].
 * Cost: B T (T+1)/2 H multiply-adds for each of the three (quadratic in T,
 * like attention; an FFT would make it T log T). Rows run in parallel and
 * each sum has a fixed order (results do not depend on the thread count).
 *
 * recurrence: x_t = Abar ⊙ x_{t-1} + Bbar u_t, y_t = 2 Re(C · x_t), written
 * with primitive ops on (re, im) pairs, token by token (backward from the
 * tape): the reference the kernel and the convolution are held against.
 * step: the same recurrence, hand-written, without the tape.
 */
/* The short reductions over the state (n) vectorise only with the dynamic
 * cost model at -O2 (GCC 12 rejects them under -O2's very-cheap model). */
#ifndef __clang__
#pragma GCC optimize("vect-cost-model=dynamic")
#endif

#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/threads.h"
#include "ops/attention/ssm.h"

/* ---- complex helpers (double) -------------------------------------------------- */

typedef struct cplx {
  double re, im;
} cplx;

static inline cplx cmul(cplx a, cplx b) { return (cplx){a.re * b.re - a.im * b.im, a.re * b.im + a.im * b.re}; }
static inline cplx cconj(cplx a) { return (cplx){a.re, -a.im}; }
static inline cplx cadd(cplx a, cplx b) { return (cplx){a.re + b.re, a.im + b.im}; }
static inline cplx cscale(cplx a, double s) { return (cplx){a.re * s, a.im * s}; }
static inline cplx cdiv(cplx a, cplx b) {
  double d = b.re * b.re + b.im * b.im;
  return (cplx){(a.re * b.re + a.im * b.im) / d, (a.im * b.re - a.re * b.im) / d};
}
static inline cplx cget(const real *x, int64_t i) { return (cplx){(double)x[2 * i], (double)x[2 * i + 1]}; }
static inline void cacc(real *x, int64_t i, cplx v) {
  x[2 * i] += (real)v.re;
  x[2 * i + 1] += (real)v.im;
}

static int is_pairs(const at_tensor *t, int64_t H, int64_t M) {
  return t && t->ndim == 3 && t->shape[0] == H && t->shape[1] == M && t->shape[2] == 2;
}

/* ---- discretize ------------------------------------------------------------------- */

typedef struct zoh {
  cplx A, E, F; /* A, e^{dt A}, (e^{dt A} - 1) / A */
  double dt;
} zoh;

static zoh zoh_of(const real *log_dt, const real *lar, const real *aim, int64_t H_idx, int64_t i) {
  zoh z;
  z.dt = exp((double)log_dt[H_idx]);
  z.A = (cplx){-exp((double)lar[i]), (double)aim[i]};
  double sr = z.dt * z.A.re, si = z.dt * z.A.im, er = exp(sr), sh = sin(si / 2);
  z.E = (cplx){er * cos(si), er * sin(si)};
  cplx em1 = {expm1(sr) * cos(si) - 2 * sh * sh, er * sin(si)};
  z.F = cdiv(em1, z.A);
  return z;
}

static void discretize_backward(at_ctx *c, at_node *nd) {
  at_tensor *log_dt = nd->in[0], *lar = nd->in[1], *aim = nd->in[2], *B = nd->in[3];
  const real *gA = nd->out[0]->grad, *gB = nd->out[1] ? nd->out[1]->grad : NULL;
  real *dldt = at_grad(c, log_dt), *dlar = at_grad(c, lar), *daim = at_grad(c, aim), *dB = at_grad(c, B);
  const int64_t H = lar->shape[0], M = lar->shape[1];
  for (int64_t h = 0; h < H; h++) {
    double dt_bar = 0;
    for (int64_t m = 0; m < M; m++) {
      const int64_t i = h * M + m;
      zoh z = zoh_of(log_dt->data, lar->data, aim->data, h, i);
      cplx Ab = gA ? cget(gA, i) : (cplx){0, 0}, Bb = gB ? cget(gB, i) : (cplx){0, 0};
      cplx b = cget(B->data, i), bbar = cmul(z.F, b);
      cplx s_bar = cadd(cmul(Ab, cconj(z.E)), cmul(Bb, cconj(cdiv(cmul(b, z.E), z.A))));
      cplx A_bar = cadd(cmul(Bb, cconj(cscale(cdiv(bbar, z.A), -1))), cscale(s_bar, z.dt));
      dt_bar += s_bar.re * z.A.re + s_bar.im * z.A.im;
      if (dB) cacc(dB, i, cmul(Bb, cconj(z.F)));
      if (dlar) dlar[i] += (real)(A_bar.re * z.A.re);
      if (daim) daim[i] += (real)A_bar.im;
    }
    if (dldt) dldt[h] += (real)(dt_bar * exp((double)log_dt->data[h]));
  }
}

at_tensor *at_s4d_discretize(at_ctx *c, at_tensor *log_dt, at_tensor *log_A_real,
                             at_tensor *A_imag, at_tensor *B, at_tensor **Bbar) {
  if (Bbar) *Bbar = NULL;
  if (!log_dt || !log_A_real || !A_imag || !B) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "s4d_discretize: log_dt, log_A_real, A_imag, B are required");
    return NULL;
  }
  char s1[96], s2[96], s3[96], s4[96];
  int64_t H = log_A_real->ndim == 2 ? log_A_real->shape[0] : 0, M = H ? log_A_real->shape[1] : 0;
  if (!H || !M || log_dt->ndim != 1 || log_dt->shape[0] != H || !at_same_shape(log_A_real, A_imag) ||
      !is_pairs(B, H, M)) {
    return at_fail(c, AT_E_SHAPE, "s4d_discretize: log_dt %s, log_A_real %s, A_imag %s, B %s must be "
                   "[H], [H,M], [H,M], [H,M,2]", AT_SHAPE_STR(log_dt, s1), AT_SHAPE_STR(log_A_real, s2),
                   AT_SHAPE_STR(A_imag, s3), AT_SHAPE_STR(B, s4));
  }
  at_tensor *Ab = AT_NEW(c, H, M, 2), *Bb = AT_NEW(c, H, M, 2);
  if (!Ab || !Bb) return NULL;
  for (int64_t h = 0; h < H; h++)
    for (int64_t m = 0; m < M; m++) {
      const int64_t i = h * M + m;
      zoh z = zoh_of(log_dt->data, log_A_real->data, A_imag->data, h, i);
      cplx bb = cmul(z.F, cget(B->data, i));
      Ab->data[2 * i] = (real)z.E.re, Ab->data[2 * i + 1] = (real)z.E.im;
      Bb->data[2 * i] = (real)bb.re, Bb->data[2 * i + 1] = (real)bb.im;
    }
  at_tensor *ins[] = {log_dt, log_A_real, A_imag, B}, *outs[] = {Ab, Bb};
  AT_RECORD(c, "s4d_discretize", discretize_backward, ins, outs);
  if (Bbar) *Bbar = Bb;
  return Ab;
}

/* ---- kernel ------------------------------------------------------------------------ */

static void kernel_backward(at_ctx *c, at_node *nd) {
  at_tensor *Ab = nd->in[0], *Bb = nd->in[1], *C = nd->in[2], *K = nd->out[0];
  real *dAb = at_grad(c, Ab), *dBb = at_grad(c, Bb), *dC = at_grad(c, C);
  if (at_ctx_status(c) != AT_OK) return;
  const int64_t H = Ab->shape[0], M = Ab->shape[1], L = K->shape[1];
  const real *dK = K->grad;
#pragma omp parallel for num_threads(at_threads_here()) schedule(static)
  for (int64_t h = 0; h < H; h++)
    for (int64_t m = 0; m < M; m++) {
      const int64_t i = h * M + m;
      cplx z = cget(Ab->data, i), bb = cget(Bb->data, i), cc = cget(C->data, i), w = cmul(cc, bb);
      cplx p = {1, 0}, w_bar = {0, 0}, zsum = {0, 0}; /* p = z^l */
      const real *g = dK + h * L;
      for (int64_t l = 0; l < L; l++) {
        w_bar = cadd(w_bar, cscale(cconj(p), 2 * (double)g[l]));
        if (l + 1 < L) zsum = cadd(zsum, cscale(cconj(p), 2 * (double)g[l + 1] * (double)(l + 1)));
        p = cmul(p, z);
      }
      if (dAb) cacc(dAb, i, cmul(cconj(w), zsum));
      if (dC) cacc(dC, i, cmul(w_bar, cconj(bb)));
      if (dBb) cacc(dBb, i, cmul(w_bar, cconj(cc)));
    }
}

at_tensor *at_s4d_kernel(at_ctx *c, at_tensor *Abar, at_tensor *Bbar, at_tensor *C, int64_t L) {
  if (!Abar || !Bbar || !C) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "s4d_kernel: Abar, Bbar, C are required");
    return NULL;
  }
  char s1[96], s2[96], s3[96];
  int64_t H = Abar->ndim == 3 ? Abar->shape[0] : 0, M = H ? Abar->shape[1] : 0;
  if (!H || !M || !is_pairs(Abar, H, M) || !is_pairs(Bbar, H, M) || !is_pairs(C, H, M))
    return at_fail(c, AT_E_SHAPE, "s4d_kernel: Abar %s, Bbar %s, C %s must all be [H,M,2]",
                   AT_SHAPE_STR(Abar, s1), AT_SHAPE_STR(Bbar, s2), AT_SHAPE_STR(C, s3));
  if (L < 1) return at_fail(c, AT_E_ARG, "s4d_kernel: length L = %lld must be positive", (long long)L);
  at_tensor *K = AT_NEW(c, H, L);
  if (!K) return NULL;
  int nt = at_threads_here();
  at_arena_mark mk = at_arena_get_mark(c->arena);
  double *work = at_scratch(c, (size_t)(nt * 4 * M) * sizeof(double));
  if (!work) return at_fail(c, AT_E_NOMEM, "s4d_kernel: out of memory");
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t h = 0; h < H; h++) {
    /* powers of all M modes advance together, so the inner loop runs over m */
    double *pr = work + (size_t)omp_get_thread_num() * 4 * M, *pi = pr + M, *wr = pi + M, *wi = wr + M;
    for (int64_t m = 0; m < M; m++) {
      cplx w = cmul(cget(C->data, h * M + m), cget(Bbar->data, h * M + m));
      pr[m] = 1, pi[m] = 0, wr[m] = w.re, wi[m] = w.im;
    }
    const real *zd = Abar->data + h * M * 2;
    for (int64_t l = 0; l < L; l++) {
      double s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t m = 0; m < M; m++) {
        s += wr[m] * pr[m] - wi[m] * pi[m];
        double zr = (double)zd[2 * m], zi = (double)zd[2 * m + 1];
        double r = pr[m] * zr - pi[m] * zi;
        pi[m] = pr[m] * zi + pi[m] * zr;
        pr[m] = r;
      }
      K->data[h * L + l] = (real)(2 * s);
    }
  }
  at_arena_rewind(c->arena, mk);
  at_tensor *ins[] = {Abar, Bbar, C}, *outs[] = {K};
  AT_RECORD(c, "s4d_kernel", kernel_backward, ins, outs);
  return K;
}

/* ---- causal convolution ------------------------------------------------------------- */

/* Kt [T, H] = the first T taps of K [H, L], transposed so that rows are contiguous over h. */
static real *taps(at_ctx *c, const at_tensor *K, int64_t T) {
  const int64_t H = K->shape[0], L = K->shape[1];
  real *Kt = at_scratch(c, (size_t)(T * H) * sizeof(real));
  if (!Kt) return NULL;
  for (int64_t h = 0; h < H; h++)
    for (int64_t j = 0; j < T; j++) Kt[j * H + h] = K->data[h * L + j];
  return Kt;
}

/* out[b,t,:] (+)= sum_{j=0}^{t} Kt[j,:] x[b,t-j,:]  (dir = +1), or
 * out[b,s,:] (+)= sum_{j=0}^{T-1-s} Kt[j,:] x[b,s+j,:] (dir = -1, the transpose). */
static void conv_rows(const real *Kt, const real *x, real *out, int64_t B, int64_t T, int64_t H, int dir,
                      int accumulate) {
  int nt = at_threads_here();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 8)
  for (int64_t r = 0; r < B * T; r++) {
    const int64_t b = r / T, t = r % T, n = dir > 0 ? t + 1 : T - t;
    real *o = out + r * H;
    if (!accumulate) memset(o, 0, (size_t)H * sizeof(real));
    for (int64_t j = 0; j < n; j++) {
      const real *k = Kt + j * H, *xr = x + (b * T + t - dir * j) * H;
#pragma omp simd
      for (int64_t h = 0; h < H; h++) o[h] += k[h] * xr[h];
    }
  }
}

static void conv_backward(at_ctx *c, at_node *nd) {
  at_tensor *u = nd->in[0], *K = nd->in[1], *y = nd->out[0];
  real *du = at_grad(c, u), *dK = at_grad(c, K);
  if (at_ctx_status(c) != AT_OK) return;
  const int64_t B = u->shape[0], T = u->shape[1], H = u->shape[2], L = K->shape[1];
  const real *dy = y->grad;
  at_arena_mark mk = at_arena_get_mark(c->arena);
  if (du) {
    real *Kt = taps(c, K, T);
    if (!Kt) goto oom;
    conv_rows(Kt, dy, du, B, T, H, -1, 1);
  }
  if (dK) {
    real *dKt = at_scratch(c, (size_t)(T * H) * sizeof(real));
    if (!dKt) goto oom;
#pragma omp parallel for num_threads(at_threads_here()) schedule(dynamic, 8)
    for (int64_t j = 0; j < T; j++) {
      real *o = dKt + j * H;
      memset(o, 0, (size_t)H * sizeof(real));
      for (int64_t b = 0; b < B; b++)
        for (int64_t t = j; t < T; t++) {
          const real *g = dy + (b * T + t) * H, *x = u->data + (b * T + t - j) * H;
#pragma omp simd
          for (int64_t h = 0; h < H; h++) o[h] += g[h] * x[h];
        }
    }
    for (int64_t h = 0; h < H; h++)
      for (int64_t j = 0; j < T; j++) dK[h * L + j] += dKt[j * H + h];
  }
  at_arena_rewind(c->arena, mk);
  return;
oom:
  at_fail(c, AT_E_NOMEM, "s4d_conv backward: out of memory");
}

at_tensor *at_s4d_conv(at_ctx *c, at_tensor *u, at_tensor *K) {
  if (!u || !K) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "s4d_conv: u and K are required");
    return NULL;
  }
  char s1[96], s2[96];
  if (u->ndim != 3 || K->ndim != 2 || K->shape[0] != u->shape[2] || K->shape[1] < u->shape[1] ||
      u->size == 0)
    return at_fail(c, AT_E_SHAPE, "s4d_conv: u %s must be [B,T,H] and K %s [H,L] with L >= T",
                   AT_SHAPE_STR(u, s1), AT_SHAPE_STR(K, s2));
  const int64_t B = u->shape[0], T = u->shape[1], H = u->shape[2];
  at_tensor *y = AT_NEW(c, B, T, H);
  if (!y) return NULL;
  at_arena_mark mk = at_arena_get_mark(c->arena);
  real *Kt = taps(c, K, T);
  if (!Kt) return at_fail(c, AT_E_NOMEM, "s4d_conv: out of memory");
  conv_rows(Kt, u->data, y->data, B, T, H, +1, 0);
  at_arena_rewind(c->arena, mk);
  at_tensor *ins[] = {u, K}, *outs[] = {y};
  AT_RECORD(c, "s4d_conv", conv_backward, ins, outs);
  return y;
}

/* ---- recurrence (reference, through the tape) and step ------------------------------ */

/* Part k (0 re, 1 im) of pairs x [..., 2] as [...] with the last dim dropped. */
static at_tensor *part(at_ctx *c, at_tensor *x, int k) {
  if (!x) return NULL;
  at_tensor *s = at_slice(c, x, x->ndim - 1, k, 1);
  return s ? at_reshape(c, s, x->ndim - 1, x->shape) : NULL;
}

static int check_rec(at_ctx *c, const char *op, at_tensor *u, at_tensor *Abar, at_tensor *Bbar,
                     at_tensor *C, at_tensor *x0, int64_t *M) {
  if (!u || !Abar || !Bbar || !C) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "%s: u, Abar, Bbar, C are required", op);
    return 0;
  }
  char s1[96], s2[96];
  int64_t H = u->ndim == 3 ? u->shape[2] : 0;
  *M = Abar->ndim == 3 ? Abar->shape[1] : 0;
  if (!H || !*M || !is_pairs(Abar, H, *M) || !is_pairs(Bbar, H, *M) || !is_pairs(C, H, *M)) {
    at_fail(c, AT_E_SHAPE, "%s: u %s must be [B,T,H] and Abar %s, Bbar, C [H,M,2]", op, AT_SHAPE_STR(u, s1),
            AT_SHAPE_STR(Abar, s2));
    return 0;
  }
  if (x0 && (x0->ndim != 4 || x0->shape[0] != u->shape[0] || x0->shape[1] != H || x0->shape[2] != *M ||
             x0->shape[3] != 2)) {
    at_fail(c, AT_E_SHAPE, "%s: the state %s must be [B,H,M,2]", op, AT_SHAPE_STR(x0, s1));
    return 0;
  }
  return 1;
}

at_tensor *at_s4d_recurrence(at_ctx *c, at_tensor *u, at_tensor *Abar, at_tensor *Bbar,
                             at_tensor *C, at_tensor *x0, at_tensor **xT) {
  if (xT) *xT = NULL;
  int64_t M;
  if (!check_rec(c, "s4d_recurrence", u, Abar, Bbar, C, x0, &M)) return NULL;
  const int64_t B = u->shape[0], T = u->shape[1], H = u->shape[2];
  at_tensor *ar = part(c, Abar, 0), *ai = part(c, Abar, 1), *br = part(c, Bbar, 0), *bi = part(c, Bbar, 1);
  at_tensor *cr = part(c, C, 0), *ci = part(c, C, 1);
  at_tensor *xr = x0 ? part(c, x0, 0) : AT_ZEROS(c, B, H, M), *xi = x0 ? part(c, x0, 1) : AT_ZEROS(c, B, H, M);
  at_tensor **ys = at_scratch(c, (size_t)T * sizeof *ys);
  if (!ys) return at_fail(c, AT_E_NOMEM, "s4d_recurrence: out of memory");
  for (int64_t t = 0; t < T; t++) {
    at_tensor *ut = AT_RESHAPE(c, at_slice(c, u, 1, t, 1), B, H, 1);
    at_tensor *nr = at_add(c, at_sub(c, at_mul(c, ar, xr), at_mul(c, ai, xi)), at_mul(c, br, ut));
    at_tensor *ni = at_add(c, at_add(c, at_mul(c, ar, xi), at_mul(c, ai, xr)), at_mul(c, bi, ut));
    xr = nr, xi = ni;
    at_tensor *re = at_sub(c, at_mul(c, cr, xr), at_mul(c, ci, xi));
    ys[t] = AT_RESHAPE(c, at_scale(c, at_sum(c, re, -1, 0), 2.0), B, 1, H);
  }
  at_tensor *y = at_concat(c, ys, (int)T, 1);
  if (xT && y) {
    at_tensor *pr[] = {AT_RESHAPE(c, xr, B, H, M, 1), AT_RESHAPE(c, xi, B, H, M, 1)};
    *xT = at_concat(c, pr, 2, 3);
  }
  return y;
}

at_tensor *at_s4d_step(at_ctx *c, at_tensor *u, at_tensor *Abar, at_tensor *Bbar, at_tensor *C,
                       at_tensor *state) {
  int64_t M;
  if (!state) {
    if (at_ctx_status(c) == AT_OK) at_fail(c, AT_E_ARG, "s4d_step: the state is required");
    return NULL;
  }
  if (!check_rec(c, "s4d_step", u, Abar, Bbar, C, state, &M)) return NULL;
  const int64_t B = u->shape[0], T = u->shape[1], H = u->shape[2];
  at_tensor *y = AT_NEW(c, B, T, H);
  if (!y) return NULL;
#pragma omp parallel for num_threads(at_threads_here()) schedule(static)
  for (int64_t bh = 0; bh < B * H; bh++) {
    const int64_t b = bh / H, h = bh % H;
    real *x = state->data + bh * M * 2;
    for (int64_t t = 0; t < T; t++) {
      double ut = (double)u->data[(b * T + t) * H + h], s = 0;
      for (int64_t m = 0; m < M; m++) {
        const int64_t i = h * M + m;
        cplx xn = cadd(cmul(cget(Abar->data, i), cget(x, m)), cscale(cget(Bbar->data, i), ut));
        x[2 * m] = (real)xn.re, x[2 * m + 1] = (real)xn.im;
        s += cmul(cget(C->data, i), xn).re;
      }
      y->data[(b * T + t) * H + h] = (real)(2 * s);
    }
  }
  return y;
}
