/* experiments/dist.h: the processes of one training job.
 *
 * `mpirun -np N ./train FILE` starts N processes (ranks) of OpenMPI; the
 * runner spreads the experiment's runs (each (run, sweep point)) over them:
 * rank r trains runs r, r + N, r + 2N, ... and commits its results to
 * results.rank<r>.h5; when every rank is done, rank 0 merges the parts
 * into results.h5 (runs in the experiment's order, as a serial run writes
 * them) and writes the table and plots. Each run is trained exactly as in
 * one process (same seeds, same batches, bit-identical curves).
 *
 * With --data-parallel every rank trains every run instead: each batch is
 * cut into S slices (train.micro_batches, raised to N; a multiple of N),
 * rank r computes slices r S/N .. (r+1) S/N - 1, each slice's gradient kept
 * apart; one allgather gives every rank every slice, and each sums them in
 * slice order, so every rank takes the same optimiser step, and the losses
 * equal those of one process with micro_batches = S bit for bit. Rank 0
 * evaluates, prints and writes results and checkpoints.
 *
 * A program not started by mpirun (or a build without MPI: AT_MPI off, or
 * OpenMPI not installed) is rank 0 of 1 and never touches MPI. */
#ifndef AT_EXPERIMENTS_DIST_H
#define AT_EXPERIMENTS_DIST_H

#include <stddef.h>
#include <stdint.h>

typedef struct at_dist {
  int rank, size;
} at_dist;

/* Joins the job (MPI_Init) when started by mpirun; idempotent. */
at_dist at_dist_init(int *argc, char ***argv);
/* This process's place (rank 0 of 1 before at_dist_init). */
at_dist at_dist_self(void);
/* 1 if `ok` is nonzero on every rank (a collective: every rank calls it). */
int at_dist_all(int ok);
/* Every rank's block of `per_rank` elements of `elem` bytes (4: float, 8:
 * double) to every rank: rank r's block is buf[r * per_rank ...], given in
 * place by each rank and filled in for the others (a collective;
 * per_rank <= INT_MAX). */
void at_dist_allgather(void *buf, int64_t per_rank, size_t elem);
/* Leaves the job (MPI_Finalize) if it was joined. */
void at_dist_finish(void);
/* 1 if this build can join an MPI job. */
int at_dist_available(void);
/* 1 if the process was started by mpirun (whether or not it can join). */
int at_dist_launched(void);

#endif
