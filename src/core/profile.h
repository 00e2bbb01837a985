// Per-op wall time and FLOPs of a run, for finding where a training step goes. Off unless
// profile::set_enabled(true) (benchmarks) or QPEFT_PROFILE=1; when off a Scope costs one load.
// Time is exclusive: an op's nested ops are counted under their own names, not twice.
// Ops are timed on the thread that issues them (kernels fan out to the pool inside).
//   { profile::Scope s("linear fwd", M, N, K, 2.0 * M * N * K); linear_forward(...); }
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qpeft::profile {

bool enabled();
void set_enabled(bool on);
void reset();

struct Entry {
  std::string op;  // "linear fwd [1024x256x512]": name and, where given, M x N x K
  int64_t calls = 0;
  double seconds = 0;  // exclusive
  double flops = 0;
};
// Every op seen since reset(), most time first.
std::vector<Entry> entries();

class Scope {
 public:
  explicit Scope(const char* op, double flops = 0) : Scope(op, -1, -1, -1, flops) {}
  Scope(const char* op, int64_t m, int64_t n, int64_t k, double flops);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool on_;
  int64_t m_, n_, k_;
  const char* op_;
  double flops_;
  double start_;
  double child_seconds_ = 0;
  Scope* parent_ = nullptr;
};

}  // namespace qpeft::profile
