/* core/threads.c */
#define _POSIX_C_SOURCE 200809L
#include "core/threads.h"

#include <blis.h>
#include <omp.h>
#include <time.h>
#include <unistd.h>

static int n_threads = 0; /* 0: not set yet */

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
