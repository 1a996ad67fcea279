/* core/threads.c */
#define _POSIX_C_SOURCE 200809L
#include "core/threads.h"

#include <blis.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int n_threads = 0; /* 0: not set yet */

/* BLIS picks its kernels from the CPU model and falls back to slow generic C
 * kernels on models newer than it knows (BLIS 0.9 on AMD Zen 4/5 gets about
 * 28 GFLOP/s per core instead of 180). Unless the user chose with
 * BLIS_ARCH_TYPE, pick the kernel set from the instruction set: AVX-512
 * (skx) or AVX2 + FMA (haswell). BLIS_ARCH_TYPE may also be a name (zen3,
 * haswell, skx, ...: BLIS itself reads only numbers and takes a name as 0,
 * skx). This must run before BLIS initialises. */
static void choose_blis_kernels(void) {
  const char *env = getenv("BLIS_ARCH_TYPE");
  int id = -1;
  if (env && *env && (*env < '0' || *env > '9')) {
    for (int i = 0; i < BLIS_NUM_ARCHS && id < 0; i++)
      if (!strcmp(env, bli_arch_string((arch_t)i))) id = i;
    if (id < 0) {
      fprintf(stderr, "attnlab: BLIS_ARCH_TYPE=%s is not a BLIS sub-configuration "
              "(e.g. skx, haswell, zen3, generic, or its number)\n", env);
      exit(2);
    }
  } else if (env) {
    return;
  } else {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
      id = BLIS_ARCH_SKX;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      id = BLIS_ARCH_HASWELL;
    if (id < 0) return;
  }
  char v[16];
  snprintf(v, sizeof v, "%d", id);
  setenv("BLIS_ARCH_TYPE", v, 1);
}

__attribute__((constructor)) static void at_threads_init(void) {
  choose_blis_kernels();
}

const char *at_blis_arch(void) {
  bli_init(); /* BLIS answers only once initialised */
  return bli_arch_string(bli_arch_query_id());
}

void at_set_threads(int n) {
  if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (n <= 0) n = 1;
  n_threads = n;
  omp_set_num_threads(n);
  /* BLIS's own threads are never used: core/gemm.c cuts products into
   * pieces itself and calls BLIS single-threaded (see there why). */
  bli_thread_set_num_threads(1);
}

int at_threads(void) {
  if (n_threads == 0) at_set_threads(omp_get_max_threads());
  return n_threads;
}

int at_threads_here(void) { return omp_in_parallel() ? 1 : at_threads(); }

double at_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
