#include "core/distributed.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

#ifdef QPEFT_HAVE_MPI
#include <mpi.h>
#endif

// Sanitizer builds (scripts/sanitize.sh): Open MPI keeps what MPI_Init and its collectives
// allocate in plugins it unloads at MPI_Finalize, so LeakSanitizer could neither name nor
// suppress those blocks; what is allocated inside MPI calls is left out of its report, and
// everything else qpeft allocates stays in it.
#if defined(__SANITIZE_ADDRESS__)
#define QPEFT_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QPEFT_LSAN 1
#endif
#endif
#if defined(QPEFT_LSAN) && defined(QPEFT_HAVE_MPI)
#include <sanitizer/lsan_interface.h>
#define QPEFT_NOT_LEAK_CHECKED __lsan::ScopedDisabler lsan_off
#else
#define QPEFT_NOT_LEAK_CHECKED
#endif

namespace qpeft::dist {

namespace {

int g_rank = 0, g_size = 1;
bool g_started = false;  // MPI_Init by us
CommStats g_stats;

// The world size a launcher announced in the environment, or 0 when none did.
int launcher_world_size() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    if (const char* v = std::getenv(var)) return std::max(1, std::atoi(v));
  }
  if (std::getenv("PMIX_RANK")) return 1;  // a PMIx launcher that did not say the size
  return 0;
}

#ifdef QPEFT_HAVE_MPI
template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() { return MPI_FLOAT; }
template <>
MPI_Datatype mpi_type<double>() { return MPI_DOUBLE; }

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("{} failed on rank {}: {}", what, g_rank, std::string(msg, size_t(len)));
}

// One bucket of m elements: rank j owns segment j; every rank sends segment j to rank j, which
// adds the N copies in rank order, then all-gathers the owned segments back.
template <class T>
void allreduce_bucket(T* x, int64_t m, std::vector<T>& recv, std::vector<int>& counts, std::vector<int>& displs) {
  const int n = g_size;
  for (int j = 0; j < n; ++j) {
    const int64_t b = m * j / n, e = m * (j + 1) / n;
    counts[size_t(j)] = int(e - b);
    displs[size_t(j)] = int(b);
  }
  const int mine = counts[size_t(g_rank)];
  recv.resize(size_t(mine) * size_t(n));
  std::vector<int> rcounts(static_cast<size_t>(n), mine), rdispls(static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) rdispls[size_t(j)] = mine * j;
  check_mpi(MPI_Alltoallv(x, counts.data(), displs.data(), mpi_type<T>(), recv.data(), rcounts.data(), rdispls.data(),
                          mpi_type<T>(), MPI_COMM_WORLD),
            "MPI_Alltoallv (gradient reduce-scatter)");
  T* own = x + displs[size_t(g_rank)];
  for (int i = 0; i < mine; ++i) {
    double s = 0;
    for (int r = 0; r < n; ++r) s += double(recv[size_t(r) * size_t(mine) + size_t(i)]);
    own[i] = T(s);
  }
  check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, mpi_type<T>(), x, counts.data(), displs.data(), mpi_type<T>(),
                           MPI_COMM_WORLD),
            "MPI_Allgatherv (gradient all-gather)");
  g_stats.bytes_sent += 2 * int64_t(sizeof(T)) * (m - mine);
}
#endif

template <class T>
void allreduce_sum_impl(T* x, int64_t n) {
  if (g_size == 1 || n == 0) return;
#ifdef QPEFT_HAVE_MPI
  QPEFT_NOT_LEAK_CHECKED;  // the collectives' plugins allocate too
  const auto t0 = std::chrono::steady_clock::now();
  constexpr int64_t kBucket = (int64_t(16) << 20) / int64_t(sizeof(T));
  std::vector<T> recv;
  std::vector<int> counts(static_cast<size_t>(g_size)), displs(static_cast<size_t>(g_size));
  for (int64_t at = 0; at < n; at += kBucket) allreduce_bucket(x + at, std::min(kBucket, n - at), recv, counts, displs);
  g_stats.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
#endif
}

}  // namespace

bool built_with_mpi() {
#ifdef QPEFT_HAVE_MPI
  return true;
#else
  return false;
#endif
}

std::string mpi_library_version() {
#ifdef QPEFT_HAVE_MPI
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(v, &len);
  std::string s(v, size_t(len));
  // The first line names the library and its version; the rest is build detail.
  s = s.substr(0, s.find_first_of("\n,"));
  return s;
#else
  return "";
#endif
}

void init_from_launcher(int* argc, char*** argv) {
  if (g_started) return;
  const int announced = launcher_world_size();
  if (announced == 0) return;
#ifdef QPEFT_HAVE_MPI
  int provided = 0;
  QPEFT_NOT_LEAK_CHECKED;
  // Only the main thread calls MPI; the thread pool never does.
  MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
  g_started = true;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
#else
  QP_CHECK(announced <= 1,
           "this qpeft was built without Open MPI, so it cannot train data-parallel under a launcher ({} processes "
           "were started, each would train alone and overwrite the others' files): install libopenmpi-dev and "
           "openmpi-bin (scripts/install-deps.sh) and rebuild, or run a single process",
           announced);
#endif
}

void finalize() {
#ifdef QPEFT_HAVE_MPI
#if defined(QPEFT_LSAN)
  // The leak check runs here, while Open MPI's plugins (and what their threads allocated) are
  // still loaded and reachable, instead of at exit, after MPI_Finalize has unloaded them.
  if (g_started) __lsan_do_leak_check();
#endif
  QPEFT_NOT_LEAK_CHECKED;
  if (g_started) MPI_Finalize();
#endif
  g_started = false;
}

int rank() { return g_rank; }
int size() { return g_size; }

void allreduce_sum(float* x, int64_t n) { allreduce_sum_impl(x, n); }
void allreduce_sum(double* x, int64_t n) { allreduce_sum_impl(x, n); }

std::vector<uint64_t> allgather(uint64_t value) {
  std::vector<uint64_t> all(size_t(g_size), value);
#ifdef QPEFT_HAVE_MPI
  if (g_size > 1) {
    QPEFT_NOT_LEAK_CHECKED;
    check_mpi(MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD), "MPI_Allgather");
    g_stats.bytes_sent += int64_t(sizeof(value)) * (g_size - 1);
  }
#endif
  return all;
}

void barrier() {
#ifdef QPEFT_HAVE_MPI
  QPEFT_NOT_LEAK_CHECKED;
  if (g_size > 1) check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
#ifdef QPEFT_HAVE_MPI
  if (g_started && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
  if (g_started) MPI_Finalize();
#endif
  std::exit(code);
}

CommStats take_stats() {
  CommStats s = g_stats;
  g_stats = {};
  return s;
}

int affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
  return CPU_COUNT(&set);
}

}  // namespace qpeft::dist
