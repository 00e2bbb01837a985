// One pool, owned by the runtime. Kernels receive a range (or ith/nth) and never start
// threads. Static partitioning: the same thread count gives the same work split and so
// the same bits.
#pragma once
#include <cstdint>
#include <functional>

namespace qpeft {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Runs fn(ith, nth) once on each of the nth = size() threads (the caller is thread 0).
  void run(const std::function<void(int ith, int nth)>& fn);
  // Splits [0, n) into size() contiguous chunks (fewer if n is small); fn(begin, end).
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

 private:
  struct Impl;
  Impl* impl_;
  int n_threads_;
};

// The process-wide pool. set_num_threads(0) means all cores. Also pins OpenBLAS to one
// thread per call: our pool partitions GEMMs itself.
ThreadPool& pool();
void set_num_threads(int n);
int num_threads();

// Chunk [begin, end) of n for thread ith of nth.
inline void split_range(int64_t n, int ith, int nth, int64_t* begin, int64_t* end) {
  *begin = n * ith / nth;
  *end = n * (ith + 1) / nth;
}

}  // namespace qpeft
