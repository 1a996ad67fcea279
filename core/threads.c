/* core/threads.c */
#define _POSIX_C_SOURCE 200809L
#include "core/threads.h"

#ifndef AT_MARCH_NAME
#define AT_MARCH_NAME "the compiler's default"
#endif

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


/* A build for a newer CPU would die of SIGILL somewhere in a kernel; say so
 * before anything runs. Compiled for baseline x86-64 so that this function
 * itself runs anywhere. */
#if defined(__x86_64__)
__attribute__((target("arch=x86-64"))) static void check_cpu(void) {
  __builtin_cpu_init();
#define AT_NEED(x) {x, __builtin_cpu_supports(x)}
  const struct { const char *name; int have; } need[] = { /* what the compiler may use */
#ifdef __SSE4_2__
    AT_NEED("sse4.2"),
#endif
#ifdef __AVX__
    AT_NEED("avx"),
#endif
#ifdef __AVX2__
    AT_NEED("avx2"),
#endif
#ifdef __FMA__
    AT_NEED("fma"),
#endif
#ifdef __BMI2__
    AT_NEED("bmi2"),
#endif
#ifdef __AVX512F__
    AT_NEED("avx512f"),
#endif
#ifdef __AVX512BW__
    AT_NEED("avx512bw"),
#endif
#ifdef __AVX512DQ__
    AT_NEED("avx512dq"),
#endif
#ifdef __AVX512VL__
    AT_NEED("avx512vl"),
#endif
    {NULL, 1}};
#undef AT_NEED
  for (int i = 0; need[i].name; i++)
    if (!need[i].have) {
      fprintf(stderr,
              "attnlab: this build was compiled for %s (-march=%s) and this CPU lacks %s.\n"
              "Rebuild for this machine: cmake -DAT_NATIVE=ON, or -DAT_MARCH=<cpu> "
              "(e.g. x86-64-v2 for a CPU without AVX2).\n",
              at_isa(), AT_MARCH_NAME, need[i].name);
      exit(1);
    }
}
#else
static void check_cpu(void) {}
#endif

/* How long an idle OpenMP thread spins before it sleeps. libgomp's default,
 * 300,000 iterations of `pause` (10 to 40 ms), wastes a core whenever the
 * machine is shared: a thread that finishes its share spins for the one that
 * was descheduled, and the spinning takes the cycles that thread needs (3x
 * slower training with another process on 2 cores). Sleeping at once costs a
 * futex wake-up (a few microseconds) per parallel region; AT_SPINCOUNT
 * bridges the gap between one op's region and the next when the machine is
 * ours and gives the core away soon when it is not. The user's
 * OMP_WAIT_POLICY or GOMP_SPINCOUNT win. */
#define AT_SPINCOUNT "10000"

/* libgomp reads its environment when it is loaded, before this constructor
 * runs, so the setting takes a new start of the program: exec'ing
 * /proc/self/exe with the same arguments and the variable set (once; if the
 * exec fails the program goes on with libgomp's default). */
static void choose_wait_policy(char **argv) {
  if (!argv || getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
  setenv("GOMP_SPINCOUNT", AT_SPINCOUNT, 1);
  execv("/proc/self/exe", argv);
}

#ifdef __GLIBC__ /* glibc passes (argc, argv, envp) to constructors */
__attribute__((constructor)) static void at_threads_init(int argc, char **argv, char **envp) {
  (void)argc, (void)envp;
#else
__attribute__((constructor)) static void at_threads_init(void) {
  char **argv = NULL;
#endif
  check_cpu();
  choose_blis_kernels();
  choose_wait_policy(argv);
}

const char *at_isa(void) {
#if defined(__AVX512F__)
  return "AVX-512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "AVX2+FMA";
#elif defined(__AVX__)
  return "AVX";
#elif defined(__x86_64__)
  return "SSE2";
#else
  return "scalar/other";
#endif
}

const char *at_march(void) { return AT_MARCH_NAME; }

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
  __builtin_cpu_init();
  snprintf(buf, n, "CPU: %s; vector ISA: built for %s (-march=%s), CPU has%s%s%s; BLIS kernels %s; %d threads; %s", cpu,
           at_isa(), at_march(),
           __builtin_cpu_supports("avx512f") ? " AVX-512F" : "", __builtin_cpu_supports("avx2") ? " AVX2" : "",
           __builtin_cpu_supports("fma") ? " FMA" : "", at_blis_arch(), at_threads(), AT_REAL_NAME);
}
