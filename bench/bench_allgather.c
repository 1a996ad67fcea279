/* bench/bench_allgather.c: what the data-parallel step's gradient exchange
 * costs: at_dist_allgather of each rank's slice gradients (float) for model
 * sizes 10^4 .. 10^7 parameters, microseconds per call (median of reps).
 *
 *   mpirun -np 2 build/bench/bench_allgather [reps]
 *
 * Without mpirun (or MPI) it says so and exits. Never run by the tests. */
#include <stdio.h>
#include <stdlib.h>

#include "core/threads.h"
#include "experiments/dist.h"

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  at_dist d = at_dist_init(&argc, &argv);
  int reps = argc > 1 ? atoi(argv[1]) : 20;
  if (reps < 1) reps = 1;
  if (d.size < 2) {
    printf("bench_allgather: run it under mpirun -np 2 (this build %s MPI)\n", at_dist_available() ? "has" : "has no");
    at_dist_finish();
    return 0;
  }
  if (d.rank == 0) printf("# %d ranks; float gradients, one block per rank\n%12s %12s %12s\n", d.size, "params",
                          "us/call", "GB/s out");
  double *t = malloc((size_t)reps * sizeof *t);
  for (long n = 10000; n <= 10000000; n *= 10) {
    float *buf = calloc((size_t)(n * d.size), sizeof *buf);
    for (int r = 0; r < reps; r++) {
      at_dist_all(1); /* line the ranks up */
      double t0 = at_now();
      at_dist_allgather(buf, n, sizeof(float));
      t[r] = at_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp);
    if (d.rank == 0) printf("%12ld %12.1f %12.2f\n", n, 1e6 * t[reps / 2], 4.0 * (double)n / t[reps / 2] / 1e9);
    free(buf);
  }
  free(t);
  at_dist_finish();
  return 0;
}
