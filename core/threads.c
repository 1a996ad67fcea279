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
 * (skx) or AVX2 + FMA (haswell). This must run before BLIS initialises. */
__attribute__((constructor)) static void choose_blis_kernels(void) {
  if (getenv("BLIS_ARCH_TYPE")) return;
  __builtin_cpu_init();
  int id = -1;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    id = BLIS_ARCH_SKX;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    id = BLIS_ARCH_HASWELL;
  if (id < 0) return;
  char v[16];
  snprintf(v, sizeof v, "%d", id);
  setenv("BLIS_ARCH_TYPE", v, 0);
}

const char *at_blis_arch(void) { return bli_arch_string(bli_arch_query_id()); }

void at_set_threads(int n) {
  if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (n <= 0) n = 1;
  n_threads = n;
  omp_set_num_threads(n);
  bli_thread_set_num_threads(n);
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

void at_machine_line(char *buf, size_t n) {
  char cpu[256] = "unknown", line[512];
  FILE *f = fopen("/proc/cpuinfo", "r");
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
      snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
      cpu[strcspn(cpu, "\n")] = 0;
      break;
    }
  if (f) fclose(f);
  const char *built =
#if defined(__AVX512F__)
      "AVX-512F";
#elif defined(__AVX2__)
      "AVX2";
#else
      "SSE2";
#endif
  __builtin_cpu_init();
  snprintf(buf, n, "CPU: %s; vector ISA: built for %s, CPU has%s%s%s; BLIS kernels %s; %d threads; %s", cpu, built,
           __builtin_cpu_supports("avx512f") ? " AVX-512F" : "", __builtin_cpu_supports("avx2") ? " AVX2" : "",
           __builtin_cpu_supports("fma") ? " FMA" : "", at_blis_arch(), at_threads(), AT_REAL_NAME);
}
