/* core/threads.h: the thread setting (OpenMP), and BLIS's kernel choice.
 *
 * Kernels parallelise with OpenMP over independent work (batch x heads) and
 * call GEMM with one thread inside such regions; outside them GEMM uses all
 * threads, over pieces it cuts itself (core/gemm.c); BLIS always runs
 * single-threaded. So nothing oversubscribes the machine, and results do
 * not depend on the thread count.
 */
#ifndef AT_THREADS_H
#define AT_THREADS_H

#include "core/base.h"

/* n <= 0 means the number of processors. */
void at_set_threads(int n);
int at_threads(void);
/* Threads a GEMM may use here: 1 inside an OpenMP parallel region. */
int at_threads_here(void);
/* The BLIS sub-configuration (kernel set) in use, e.g. "skx". */
const char *at_blis_arch(void);
/* The vector ISA this build was compiled for ("AVX-512", "AVX2+FMA", ...)
 * and its -march= target. Programs stop at start-up with a message when the
 * CPU lacks an extension the build uses. */
const char *at_isa(void);
const char *at_march(void);

/* "CPU: <model>; vector ISA: built for AVX-512 (-march=...), CPU has
 * AVX-512F AVX2 FMA; BLIS kernels skx; 2 threads; float", for benchmark and tool reports. */
void at_machine_line(char *buf, size_t n);
/* Seconds on a monotonic clock. */
double at_now(void);

#endif
