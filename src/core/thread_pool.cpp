#include "core/thread_pool.h"

#include <cblas.h>

#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"

extern "C" void openblas_set_num_threads(int);

namespace qpeft {

struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable cv_start, cv_done;
  const std::function<void(int, int)>* job = nullptr;
  uint64_t generation = 0;
  int pending = 0;
  bool stop = false;
  std::exception_ptr error;
};

ThreadPool::ThreadPool(int n_threads) : impl_(new Impl), n_threads_(n_threads < 1 ? 1 : n_threads) {
  for (int i = 1; i < n_threads_; ++i) {
    impl_->workers.emplace_back([this, i] {
      uint64_t seen = 0;
      for (;;) {
        const std::function<void(int, int)>* job;
        {
          std::unique_lock<std::mutex> lk(impl_->mu);
          impl_->cv_start.wait(lk, [&] { return impl_->stop || impl_->generation != seen; });
          if (impl_->stop) return;
          seen = impl_->generation;
          job = impl_->job;
        }
        try {
          (*job)(i, n_threads_);
        } catch (...) {
          std::lock_guard<std::mutex> lk(impl_->mu);
          if (!impl_->error) impl_->error = std::current_exception();
        }
        std::lock_guard<std::mutex> lk(impl_->mu);
        if (--impl_->pending == 0) impl_->cv_done.notify_one();
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
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->job = &fn;
    impl_->pending = n_threads_ - 1;
    impl_->error = nullptr;
    ++impl_->generation;
  }
  impl_->cv_start.notify_all();
  std::exception_ptr mine;
  try {
    fn(0, n_threads_);
  } catch (...) {
    mine = std::current_exception();
  }
  std::unique_lock<std::mutex> lk(impl_->mu);
  impl_->cv_done.wait(lk, [&] { return impl_->pending == 0; });
  if (mine) std::rethrow_exception(mine);
  if (impl_->error) std::rethrow_exception(impl_->error);
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
