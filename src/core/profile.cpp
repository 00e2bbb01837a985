#include "core/profile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <tuple>

#include <fmt/format.h>

namespace qpeft::profile {

namespace {

std::atomic<bool>& flag() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("QPEFT_PROFILE");
    return e && *e && std::string(e) != "0";
  }()};
  return on;
}

struct Totals {
  int64_t calls = 0;
  double seconds = 0, flops = 0;
};
using Key = std::tuple<std::string, int64_t, int64_t, int64_t>;

std::mutex g_mu;
std::map<Key, Totals>& table() {
  static std::map<Key, Totals> t;
  return t;
}
thread_local Scope* t_innermost = nullptr;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

bool enabled() { return flag().load(std::memory_order_relaxed); }
void set_enabled(bool on) { flag().store(on); }

void reset() {
  std::lock_guard<std::mutex> lk(g_mu);
  table().clear();
}

std::vector<Entry> entries() {
  std::vector<Entry> out;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    for (const auto& [key, t] : table()) {
      const auto& [op, m, n, k] = key;
      Entry e;
      e.op = m < 0 ? op : fmt::format("{} [{}x{}x{}]", op, m, n, k);
      e.calls = t.calls;
      e.seconds = t.seconds;
      e.flops = t.flops;
      out.push_back(std::move(e));
    }
  }
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

Scope::Scope(const char* op, int64_t m, int64_t n, int64_t k, double flops)
    : on_(enabled()), m_(m), n_(n), k_(k), op_(op), flops_(flops), start_(0) {
  if (!on_) return;
  parent_ = t_innermost;
  t_innermost = this;
  start_ = now_seconds();
}

Scope::~Scope() {
  if (!on_) return;
  const double total = now_seconds() - start_;
  t_innermost = parent_;
  if (parent_) parent_->child_seconds_ += total;
  std::lock_guard<std::mutex> lk(g_mu);
  Totals& t = table()[Key(op_, m_, n_, k_)];
  t.calls += 1;
  t.seconds += total - child_seconds_;
  t.flops += flops_;
}

}  // namespace qpeft::profile
