/* experiments/dist.c: OpenMPI when built with it (AT_HAVE_MPI) and started
 * by mpirun, else one process (experiments/dist.h). */
#define _POSIX_C_SOURCE 200809L
#include "experiments/dist.h"

#include <stdlib.h>
#include <time.h>

#ifdef AT_HAVE_MPI
#include <mpi.h>
#endif

static at_dist self = {0, 1};
static int joined;

/* mpirun (OpenMPI's launcher, or another PMIx/PMI one) marks its children. */
int at_dist_launched(void) {
  return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}

int at_dist_available(void) {
#ifdef AT_HAVE_MPI
  return 1;
#else
  return 0;
#endif
}

at_dist at_dist_init(int *argc, char ***argv) {
#ifdef AT_HAVE_MPI
  if (!joined && at_dist_launched()) {
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &self.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &self.size);
    joined = 1;
  }
#else
  (void)argc, (void)argv;
#endif
  return self;
}

at_dist at_dist_self(void) { return self; }

#ifdef AT_HAVE_MPI
/* A rank that has done its share of a sweep waits here for the others, for
 * minutes; OpenMPI's blocking collectives would poll a whole core meanwhile.
 * So: poll for 5 ms (the per-step allgather of --data-parallel is done by
 * then when the ranks keep pace), then nap a millisecond between polls. */
static void wait_quietly(MPI_Request *req) {
  const struct timespec nap = {0, 1000000};
  const double spin_until = MPI_Wtime() + 5e-3;
  int done = 0;
  for (MPI_Test(req, &done, MPI_STATUS_IGNORE); !done; MPI_Test(req, &done, MPI_STATUS_IGNORE))
    if (MPI_Wtime() > spin_until) nanosleep(&nap, NULL);
}
#endif

int at_dist_all(int ok) {
  int all = ok != 0;
#ifdef AT_HAVE_MPI
  if (joined) {
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &req);
    wait_quietly(&req);
  }
#endif
  return all;
}

void at_dist_allgather(void *buf, int64_t per_rank, size_t elem) {
#ifdef AT_HAVE_MPI
  if (!joined || self.size == 1) return;
  MPI_Request req;
  MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, (int)per_rank, elem == sizeof(float) ? MPI_FLOAT : MPI_DOUBLE,
                 MPI_COMM_WORLD, &req);
  wait_quietly(&req);
#else
  (void)buf, (void)per_rank, (void)elem;
#endif
}

void at_dist_finish(void) {
#ifdef AT_HAVE_MPI
  if (joined) MPI_Finalize();
#endif
  joined = 0;
  self = (at_dist){0, 1};
}
