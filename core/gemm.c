/* core/gemm.c: BLIS wrapper (bli_sgemm_ex / bli_dgemm_ex, always single-threaded).
 *
 * Every product is cut into pieces by a rule that depends on (m, n, k) alone
 * (`cut_of` below), never on the thread count; each piece is computed by one
 * thread, by this file's small kernel or by one single-threaded BLIS call,
 * the same way whoever runs it. So every element of C is summed in the same
 * order with 1, 2 or 64 threads, on any BLIS sub-configuration: results are
 * bit-identical across thread counts. Threads only decide who computes which
 * piece (dynamically: a thread slowed down by another process on its core
 * does fewer pieces).
 *
 * Why not BLIS's own threads, or a split by thread count: the small-matrix
 * ("sup") kernels of BLIS's haswell and zen3 sub-configurations handle the
 * edge rows of a call (m mod 6) with other code (e.g. dot products that sum
 * k in vector lanes), so the sums of an element depend on the shape of the
 * call that contains it. Splitting C by thread count changed results.
 */
#include "core/gemm.h"

#include <blis.h>
#include <stdlib.h>
#include <string.h>

#include "core/threads.h"

#ifdef AT_DOUBLE
#define BLI_GEMM_EX bli_dgemm_ex
#else
#define BLI_GEMM_EX bli_sgemm_ex
#endif

/* One product, transposes folded into strides: op(A)[i,p] = a[i*ra + p*ca],
 * op(B)[p,j] = b[p*rb + j*cb], C[i,j] = c[i*rc + j*cc]. */
typedef struct prod {
  int64_t m, n, k;
  real alpha, beta;
  const real *a, *b;
  real *c;
  int64_t ra, ca, rb, cb, rc, cc;
} prod;

/* ---- the small kernel -------------------------------------------------------
 *
 * BLIS spends several microseconds per call before it multiplies anything
 * (about 6.5 us for a 4x4x4 product), which dominates chunked linear attention
 * and small heads. Products with k and n up to AT_GEMM_SMALL (any m) go to
 * this kernel: op(B) is used in place or packed into rows of whole vectors,
 * op(A) is read in place (its last rows short of MR packed with zeros), and
 * blocks of MR rows x NV vectors of C are accumulated in registers over k,
 * in order.
 *
 * The vector width is the build target's (64 bytes with AVX-512, 32 with AVX,
 * 16 otherwise), so no vector is wider than the machine's registers; MR x NV
 * accumulators fit the register file (32 registers with AVX-512, 16 else). */
#define AT_GEMM_SMALL 96
#if defined(__AVX512F__)
#define VBYTES 64
#define MR 8
#elif defined(__AVX__)
#define VBYTES 32
#define MR 6
#else
#define VBYTES 16
#define MR 6
#endif
#define NV 2
#define VL ((int64_t)(VBYTES / sizeof(real))) /* reals per vector */
#define NB (NV * VL)                           /* columns of C per block */
typedef real vreal __attribute__((vector_size(VBYTES)));

/* Unaligned vector load and store (memcpy compiles to one instruction). */
#define VLOAD(v, p) memcpy(&(v), (p), sizeof(vreal))
#define VSTORE(p, v) memcpy((p), &(v), sizeof(vreal))

/* acc += MR rows of op(A) (row r, column p at a[r*ra + p*ca]) times k rows
 * of NB columns of op(B) (row p at bv + p*ldb). */
static inline void small_block(int64_t k, const real *a, int64_t ra, int64_t ca, const real *bv,
                               int64_t ldb, vreal acc[MR][NV]) {
  for (int64_t p = 0; p < k; p++, a += ca, bv += ldb) {
    vreal bx[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) VLOAD(bx[v], bv + v * VL);
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) acc[r][v] += a[r * ra] * bx[v];
  }
}

/* C rows i0.. (rows of them), columns j0.. (cols of them) = alpha acc + beta C. */
static inline void small_store(const prod *q, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                               vreal acc[MR][NV]) {
  for (int64_t r = 0; r < rows; r++) {
    real *crow = q->c + (i0 + r) * q->rc + j0 * q->cc;
    if (q->cc == 1 && cols == NB) { /* whole vectors */
#pragma GCC unroll 4
      for (int v = 0; v < NV; v++) {
        vreal x = q->alpha * acc[r][v];
        if (q->beta != 0) {
          vreal old;
          VLOAD(old, crow + v * VL);
          x += q->beta * old;
        }
        VSTORE(crow + v * VL, x);
      }
      continue;
    }
    const real *x = (const real *)acc[r];
    int64_t cc = q->cc;
    real alpha = q->alpha, beta = q->beta;
    if (cc == 1 && beta == 0) /* (the compiler vectorises the contiguous cases) */
      for (int64_t j = 0; j < cols; j++) crow[j] = alpha * x[j];
    else if (cc == 1)
      for (int64_t j = 0; j < cols; j++) crow[j] = alpha * x[j] + beta * crow[j];
    else if (beta == 0)
      for (int64_t j = 0; j < cols; j++) crow[j * cc] = alpha * x[j];
    else
      for (int64_t j = 0; j < cols; j++) crow[j * cc] = alpha * x[j] + beta * crow[j * cc];
  }
}

/* The last rows of op(A) (rows < MR of them) from i0, zero-padded to MR:
 * apan[p*MR + r]. */
static inline void pack_a_edge(const prod *q, int64_t i0, int64_t rows, real *apan) {
  memset(apan, 0, (size_t)(q->k * MR) * sizeof(real));
  for (int64_t p = 0; p < q->k; p++)
    for (int64_t r = 0; r < rows; r++) apan[p * MR + r] = q->a[(i0 + r) * q->ra + p * q->ca];
}

#if defined(__AVX2__) && !defined(AT_DOUBLE)
#include <immintrin.h>
#define AT_TRANSPOSE8 1
/* dst[c * ldd + r] = src[r * lds + c] for an 8 x 8 block of floats. */
static inline void transpose8(const float *src, int64_t lds, float *dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; i++) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + i * ldd, t[i]);
}
#endif

/* op(B) into rows of np reals (k of them), the columns past n zero. */
static void pack_b(const prod *q, int64_t np, real *dst) {
  int64_t n = q->n, k = q->k, j0 = 0;
  for (int64_t p = 0; p < k; p++) memset(dst + p * np + n, 0, (size_t)(np - n) * sizeof(real));
  if (q->cb == 1) {
    for (int64_t p = 0; p < k; p++) memcpy(dst + p * np, q->b + p * q->rb, (size_t)n * sizeof(real));
    return;
  }
#ifdef AT_TRANSPOSE8
  if (q->rb == 1) { /* op(B) = B^T of a row-major B: transposed in 8 x 8 blocks */
    for (; j0 + 8 <= n; j0 += 8) {
      int64_t p = 0;
      for (; p + 8 <= k; p += 8) transpose8(q->b + j0 * q->cb + p, q->cb, dst + p * np + j0, np);
      for (; p < k; p++)
        for (int64_t j = j0; j < j0 + 8; j++) dst[p * np + j] = q->b[j * q->cb + p];
    }
  }
#endif
  for (int64_t j = j0; j < n; j++) /* the rest, reading along the stored rows when rb = 1 */
    for (int64_t p = 0; p < k; p++) dst[p * np + j] = q->b[p * q->rb + j * q->cb];
}

static void small_gemm(const prod *q) {
  real bbuf[AT_GEMM_SMALL * (AT_GEMM_SMALL + NB)], apan[AT_GEMM_SMALL * MR];
  int64_t m = q->m, n = q->n, k = q->k, np = (n + NB - 1) / NB * NB, ldb;
  const real *brows;
  if (q->cb == 1 && np == n) { /* rows of op(B) in place */
    brows = q->b, ldb = q->rb;
  } else { /* packed into rows of np, zero-padded */
    pack_b(q, np, bbuf);
    brows = bbuf, ldb = np;
  }
  for (int64_t i = 0; i < m; i += MR) {
    int64_t rows = AT_MIN(MR, m - i), ra = q->ra, ca = q->ca;
    const real *ablk = q->a + i * q->ra; /* op(A) read in place, but the edge rows */
    if (rows < MR) pack_a_edge(q, i, rows, apan), ablk = apan, ra = 1, ca = MR;
    for (int64_t j = 0; j < np; j += NB) {
      vreal acc[MR][NV];
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = (vreal){0};
      small_block(k, ablk, ra, ca, brows + j, ldb, acc);
      small_store(q, i, rows, j, AT_MIN(NB, n - j), acc);
    }
  }
}

/* ---- BLIS ------------------------------------------------------------------ */

static void blis_gemm(const prod *q) {
  rntm_t rntm = BLIS_RNTM_INITIALIZER;
  bli_rntm_set_num_threads(1, &rntm);
  real alpha = q->alpha, beta = q->beta;
  BLI_GEMM_EX(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, (dim_t)q->m, (dim_t)q->n, (dim_t)q->k, &alpha,
              (real *)q->a, (inc_t)q->ra, (inc_t)q->ca, (real *)q->b, (inc_t)q->rb, (inc_t)q->cb,
              &beta, q->c, (inc_t)q->rc, (inc_t)q->cc, NULL, &rntm);
}

/* ---- the cut ---------------------------------------------------------------
 *
 * C is cut along its longer side into `slabs` of `len` rows or columns (the
 * last one shorter) and, when that side is too short for enough slabs and k
 * is long, k into `slices` of `klen`. Slice 0 of a slab is computed into C
 * with beta; slice s > 0 into scratch with beta 0, added to C afterwards in
 * slice order. Up to AT_GEMM_PIECES pieces (a power of two, so 2, 4 or 8
 * threads share them evenly, and a thread slowed by another process hands
 * its share over), each of at least AT_GEMM_PIECE_WORK multiply-adds. The cut
 * applies on one thread too, where it costs BLIS's fixed cost per call
 * (about 7 us with the skx kernels) and the repacking of the other operand
 * for each slab (1 / len of the work): measured on 14 training shapes at one
 * thread, the wrapper runs at 0.95 (skx) and 0.98 (haswell) of one BLIS call
 * (16 pieces: 0.88 and 0.96). */
#define AT_GEMM_PIECES 8
#define AT_GEMM_PIECE_WORK ((double)(1 << 21))
#define AT_GEMM_SLAB_MIN 256       /* rows or columns per BLIS slab */
#define AT_GEMM_SMALL_SLAB_MIN 64  /* rows per small-kernel slab */
#define AT_GEMM_SLICE_MIN 1024     /* k per slice */
#define AT_GEMM_SCRATCH (1 << 22)  /* reals of k-slice partial sums per call */

typedef struct cut {
  int small;            /* the small kernel, else BLIS */
  int by_rows;          /* slabs are rows of C (else columns) */
  int64_t len, slabs;   /* slab length and count */
  int64_t klen, slices; /* k-slice length and count */
} cut;

static int64_t pow2_floor(double x) {
  int64_t p = 1;
  while (2.0 * (double)p <= x) p *= 2;
  return p;
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The cut of each of `batch` products q: a function of (batch, m, n, k). */
static cut cut_of(const prod *q, int64_t batch) {
  cut c = {0};
  c.small = q->k <= AT_GEMM_SMALL && q->n <= AT_GEMM_SMALL;
  c.by_rows = c.small || q->m >= q->n;
  int64_t side = c.by_rows ? q->m : q->n;
  double work = (double)q->m * (double)q->n * (double)q->k;
  /* pieces per product: a batch brings its own parallelism */
  int64_t want = AT_MIN(AT_GEMM_PIECES, pow2_floor(work * (double)batch / AT_GEMM_PIECE_WORK));
  want = pow2_floor((double)want / (double)batch);
  int64_t slab_min = c.small ? AT_GEMM_SMALL_SLAB_MIN : AT_GEMM_SLAB_MIN;
  c.slabs = AT_MIN(want, pow2_floor((double)side / (double)slab_min));
  c.slices = c.small ? 1 : AT_MIN(want / c.slabs, pow2_floor((double)q->k / AT_GEMM_SLICE_MIN));
  while (c.slices > 1 &&
         (double)(c.slices - 1) * (double)q->m * (double)q->n * (double)batch > AT_GEMM_SCRATCH)
    c.slices /= 2;
  c.len = ceil_div(ceil_div(side, c.slabs), 16) * 16; /* whole cache lines of row-major C */
  c.slabs = ceil_div(side, c.len);
  c.klen = ceil_div(ceil_div(q->k, c.slices), 16) * 16;
  c.slices = ceil_div(q->k, c.klen);
  return c;
}

/* The rows (or columns) of slab s of q, and k-slice `sl` of it; slices > 0
 * write C into `part` (m x n row-major partial sums of that slice). */
static prod piece_of(const prod *q, const cut *c, int64_t s, int64_t sl, real *part) {
  prod p = *q;
  int64_t lo = s * c->len, cnt = AT_MIN(c->len, (c->by_rows ? q->m : q->n) - lo);
  if (c->by_rows)
    p.m = cnt, p.a += lo * q->ra, p.c += lo * q->rc;
  else
    p.n = cnt, p.b += lo * q->cb, p.c += lo * q->cc;
  if (c->slices > 1) {
    int64_t k0 = sl * c->klen;
    p.k = AT_MIN(c->klen, q->k - k0);
    p.a += k0 * q->ca, p.b += k0 * q->rb;
    if (sl > 0) {
      p.beta = 0, p.rc = q->n, p.cc = 1;
      p.c = part + (sl - 1) * q->m * q->n + (c->by_rows ? lo * q->n : lo);
    }
  }
  return p;
}

static void run_piece(const prod *q, const cut *c, int64_t s, int64_t sl, real *part) {
  prod p = piece_of(q, c, s, sl, part);
  if (c->small)
    small_gemm(&p);
  else
    blis_gemm(&p);
}

/* C += the partial sums of slices 1, 2, ... over slab s, in slice order. */
static void add_slices(const prod *q, const cut *c, int64_t s, const real *part) {
  prod p = piece_of(q, c, s, 0, NULL);
  int64_t lo = s * c->len;
  for (int64_t sl = 1; sl < c->slices; sl++) {
    const real *src = part + (sl - 1) * q->m * q->n + (c->by_rows ? lo * q->n : lo);
    for (int64_t i = 0; i < p.m; i++)
      for (int64_t j = 0; j < p.n; j++) p.c[i * p.rc + j * p.cc] += src[i * q->n + j];
  }
}

/* Partial sums of k-slices: one buffer per calling thread, kept for its
 * life (grown to the largest need, at most AT_GEMM_SCRATCH reals per product). */
static real *slice_scratch(size_t reals) {
  static _Thread_local real *buf = NULL;
  static _Thread_local size_t cap = 0;
  if (reals > cap) {
    free(buf);
    cap = AT_MAX(reals, 2 * cap);
    buf = malloc(cap * sizeof(real));
    AT_ASSERT_MSG(buf != NULL, "out of memory for GEMM partial sums");
  }
  return buf;
}

/* ---- the driver --------------------------------------------------------------- */

/* C = beta C only (k = 0: nothing to multiply). */
static void scale_c(const prod *q) {
  for (int64_t i = 0; i < q->m; i++)
    for (int64_t j = 0; j < q->n; j++) {
      real *x = &q->c[i * q->rc + j * q->cc];
      *x = q->beta == 0 ? 0 : q->beta * *x;
    }
}

/* `batch` products like q, operands (sa, sb, sc) elements apart, cut by c. */
typedef struct job {
  prod q;
  cut c;
  int64_t sa, sb, sc;
  real *part;      /* k-slice partial sums, part_per reals per product */
  size_t part_per;
} job;

static prod job_prod(const job *j, int64_t e) {
  prod q = j->q;
  q.a += e * j->sa, q.b += e * j->sb, q.c += e * j->sc;
  return q;
}

static real *job_part(const job *j, int64_t e) {
  return j->part ? j->part + (size_t)e * j->part_per : NULL;
}

/* Task t of the first phase: piece (slab, slice) of product e. */
static void job_piece(const job *j, int64_t t) {
  int64_t per = j->c.slabs * j->c.slices, e = t / per;
  prod q = job_prod(j, e);
  run_piece(&q, &j->c, (t % per) / j->c.slices, t % j->c.slices, job_part(j, e));
}

/* Task t of the second phase (k-slices only): slab t % slabs of product t / slabs. */
static void job_add(const job *j, int64_t t) {
  int64_t e = t / j->c.slabs;
  prod q = job_prod(j, e);
  add_slices(&q, &j->c, t % j->c.slabs, job_part(j, e));
}

/* `batch` products q, operands (sa, sb, sc) elements apart, with up to nt threads. */
static void run_batch(prod q, int64_t batch, int64_t sa, int64_t sb, int64_t sc, int nt) {
  if (q.m <= 0 || q.n <= 0 || batch <= 0) return;
  if (q.k <= 0) {
    for (int64_t e = 0; e < batch; e++, q.c += sc) scale_c(&q);
    return;
  }
  job j = {q, cut_of(&q, batch), sa, sb, sc, NULL, 0};
  if (j.c.slices > 1) {
    j.part_per = (size_t)(j.c.slices - 1) * (size_t)(q.m * q.n);
    j.part = slice_scratch(j.part_per * (size_t)batch);
  }
  int64_t pieces = batch * j.c.slabs * j.c.slices, adds = j.part ? batch * j.c.slabs : 0;
  if (nt > pieces) nt = (int)pieces;
  if (nt <= 1) { /* no OpenMP region: this may run inside another one */
    for (int64_t t = 0; t < pieces; t++) job_piece(&j, t);
    for (int64_t t = 0; t < adds; t++) job_add(&j, t);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < pieces; t++) job_piece(&j, t);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < adds; t++) job_add(&j, t);
  }
}

static prod make_prod(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
                      const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                      int64_t csb, real beta, real *c, int64_t rsc, int64_t csc) {
  prod q = {m, n, k, alpha, beta, a, b, c, rsa, csa, rsb, csb, rsc, csc};
  if (ta == AT_T) q.ra = csa, q.ca = rsa;
  if (tb == AT_T) q.rb = csb, q.cb = rsb;
  return q;
}

void at_gemm_strided(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
                     const real *a, int64_t rsa, int64_t csa, const real *b, int64_t rsb,
                     int64_t csb, real beta, real *c, int64_t rsc, int64_t csc, int nthreads) {
  run_batch(make_prod(ta, tb, m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc), 1, 0,
            0, 0, nthreads > 0 ? nthreads : at_threads_here());
}

void at_gemm(at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k, real alpha,
             const real *a, int64_t lda, const real *b, int64_t ldb, real beta, real *c,
             int64_t ldc) {
  at_gemm_strided(ta, tb, m, n, k, alpha, a, lda, 1, b, ldb, 1, beta, c, ldc, 1, 0);
}

void at_gemm_batched(int64_t batch, at_trans ta, at_trans tb, int64_t m, int64_t n, int64_t k,
                     real alpha, const real *a, int64_t lda, int64_t stride_a, const real *b,
                     int64_t ldb, int64_t stride_b, real beta, real *c, int64_t ldc,
                     int64_t stride_c) {
  run_batch(make_prod(ta, tb, m, n, k, alpha, a, lda, 1, b, ldb, 1, beta, c, ldc, 1), batch,
            stride_a, stride_b, stride_c, at_threads_here());
}
