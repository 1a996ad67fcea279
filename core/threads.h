/* core/threads.h: one thread setting for BLIS and OpenMP.
 *
 * Kernels parallelise with OpenMP over independent work (batch x heads) and
 * call GEMM with one thread inside such regions; outside them GEMM uses all
 * threads. So the two never oversubscribe the machine.
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
/* "CPU: <model>; vector ISA: built for AVX-512F, CPU has AVX-512F AVX2
 * FMA; BLIS kernels skx; 2 threads; float", for benchmark and tool reports. */
void at_machine_line(char *buf, size_t n);
/* Seconds on a monotonic clock. */
double at_now(void);

#endif
