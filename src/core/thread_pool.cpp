#include "core/thread_pool.h"

#include <cblas.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"

extern "C" void openblas_set_num_threads(int);

namespace qpeft {

namespace {

// How long a thread spins for the next job (or the caller for the last worker) before it
// sleeps on a condition variable: decoding one token runs a few hundred short jobs back to
// back, and waking a sleeping thread costs more than most of them (tens of microseconds on
// these VMs). About 50 µs of pause instructions.
constexpr int kSpinIterations = 2000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

// Workers wait for `generation` to move; the caller waits for `pending` to reach 0. Each side
// spins first, then sleeps; a sleeper announces itself (sleepers / caller_sleeping, sequentially
// consistent like the counters they guard) so the other side knows to notify under the mutex.
struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable cv_start, cv_done;
  std::atomic<const std::function<void(int, int)>*> job{nullptr};
  std::atomic<uint64_t> generation{0};
  std::atomic<int> pending{0};
  std::atomic<int> sleepers{0};
  std::atomic<bool> caller_sleeping{false};
  std::atomic<bool> stop{false};
  std::exception_ptr error;  // the first worker exception of a job, under mu
};

ThreadPool::ThreadPool(int n_threads) : impl_(new Impl), n_threads_(n_threads < 1 ? 1 : n_threads) {
  for (int i = 1; i < n_threads_; ++i) {
    impl_->workers.emplace_back([this, i] {
      Impl& p = *impl_;
      uint64_t seen = 0;
      for (;;) {
        for (int spin = 0; p.generation.load() == seen && !p.stop.load(); ++spin) {
          if (spin < kSpinIterations) {
            cpu_relax();
            continue;
          }
          std::unique_lock<std::mutex> lk(p.mu);
          ++p.sleepers;
          p.cv_start.wait(lk, [&] { return p.stop.load() || p.generation.load() != seen; });
          --p.sleepers;
        }
        if (p.stop.load()) return;
        seen = p.generation.load();
        const std::function<void(int, int)>* job = p.job.load();
        try {
          (*job)(i, n_threads_);
        } catch (...) {
          std::lock_guard<std::mutex> lk(p.mu);
          if (!p.error) p.error = std::current_exception();
        }
        if (p.pending.fetch_sub(1) == 1 && p.caller_sleeping.load()) {
          std::lock_guard<std::mutex> lk(p.mu);
          p.cv_done.notify_one();
        }
      }
    });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv_start.notify_all();
  for (auto& t : impl_->workers) t.join();
  delete impl_;
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_threads_ == 1) {
    fn(0, 1);
    return;
  }
  Impl& p = *impl_;
  p.error = nullptr;  // no worker is running: the previous job's all finished
  p.job.store(&fn);
  p.pending.store(n_threads_ - 1);
  p.generation.fetch_add(1);
  if (p.sleepers.load() > 0) {
    std::lock_guard<std::mutex> lk(p.mu);  // a worker between its check and its sleep holds mu
    p.cv_start.notify_all();
  }
  std::exception_ptr mine;
  try {
    fn(0, n_threads_);
  } catch (...) {
    mine = std::current_exception();
  }
  for (int spin = 0; p.pending.load() != 0 && spin < kSpinIterations; ++spin) cpu_relax();
  if (p.pending.load() != 0) {
    std::unique_lock<std::mutex> lk(p.mu);
    p.caller_sleeping = true;
    p.cv_done.wait(lk, [&] { return p.pending.load() == 0; });
    p.caller_sleeping = false;
  }
  if (mine) std::rethrow_exception(mine);
  std::lock_guard<std::mutex> lk(p.mu);
  if (p.error) std::rethrow_exception(p.error);
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || n_threads_ == 1) {
    fn(0, n);
    return;
  }
  run([&](int ith, int nth) {
    int64_t b, e;
    split_range(n, ith, nth, &b, &e);
    if (b < e) fn(b, e);
  });
}

namespace {
std::unique_ptr<ThreadPool>& global_pool() {
  static std::unique_ptr<ThreadPool> p;
  return p;
}
}  // namespace

void set_num_threads(int n) {
  if (n <= 0) n = int(std::thread::hardware_concurrency());
  if (n <= 0) n = 1;
  QP_CHECK(n <= 1024, "--threads {} is more than 1024", n);
  openblas_set_num_threads(1);
  auto& p = global_pool();
  if (!p || p->size() != n) p = std::make_unique<ThreadPool>(n);
}

ThreadPool& pool() {
  if (!global_pool()) set_num_threads(0);
  return *global_pool();
}

int num_threads() { return pool().size(); }

}  // namespace qpeft
