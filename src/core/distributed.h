// Data-parallel processes started by an MPI launcher (`mpirun -np N qpeft train ...`): which
// process this is, and the few collectives the trainer needs. Every sum is taken in rank
// order 0, 1, …, N−1 for every element, whatever algorithm the MPI library would pick, so the
// same rank count gives the same bits and every rank gets the same result. Without Open MPI
// in the build, or outside a launcher, the world is this one process.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qpeft::dist {

// True when the build found Open MPI (libopenmpi-dev).
bool built_with_mpi();
// "Open MPI v4.1.4 ..." when built with MPI, else "".
std::string mpi_library_version();

// Starts MPI when a launcher started this process (its environment says so: Open MPI's
// OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK); otherwise the world stays one process. A
// launcher's world of several processes in a build without MPI is an error (each would train
// alone and they would overwrite each other's files).
void init_from_launcher(int* argc, char*** argv);
// Ends MPI if init_from_launcher started it (every rank must call it, on the way out).
void finalize();

int rank();
int size();
inline bool is_root() { return rank() == 0; }

// x[0..n) summed over every rank, each element in rank order (accumulated in double, rounded
// once), in buckets of at most 16 MiB per rank: a reduce-scatter then an all-gather, so each
// rank sends 2·(N−1)/N of the buffer. Every rank gets the same bits.
void allreduce_sum(float* x, int64_t n);
void allreduce_sum(double* x, int64_t n);
// Every rank's value, by rank.
std::vector<uint64_t> allgather(uint64_t value);
void barrier();

// Ends every process of the job with `code` (MPI_Abort with several ranks; exit otherwise).
[[noreturn]] void abort_job(int code);

// What the collectives cost since the last take_stats(): bytes this rank sent, and the wall
// time spent inside them (waiting for slower ranks included).
struct CommStats {
  int64_t bytes_sent = 0;
  double seconds = 0;
};
CommStats take_stats();

// How many CPUs this process may run on (its affinity mask): a launcher that binds each rank
// to one core makes extra threads of that rank share it.
int affinity_cpus();

}  // namespace qpeft::dist
