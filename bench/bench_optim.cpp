// Benchmark: one optimizer step per kind (adamw, paged_adamw, adamw8bit, paged_adamw8bit) over a
// LoRA-like parameter set, reported as milliseconds per million parameters, plus the state bytes
// per parameter. "cpu-ms" is process CPU time (all threads), which other processes' load on a
// shared machine does not inflate the way it inflates wall time.
//   build/bench/bench_optim [--threads 2] [--reps 7] [--params 16] (millions of parameters)
// The parameters are 4096 x 64 matrices (a 7B q_proj lora_A at r = 64), so every tensor is
// quantized by the 8-bit kinds and paged by the paged kinds.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "core/paged_memory.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "train/optimizer.h"

using namespace qpeft;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
// CPU seconds of the whole process (all threads): insensitive to other processes' load.
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

}  // namespace

int main(int argc, char** argv) {
  retain_freed_memory();  // as the CLI does
  int threads = 2, reps = 7;
  double millions = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--params")) millions = std::atof(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  set_num_threads(threads);
  const int64_t rows = 4096, cols = 64, per = rows * cols;
  const int64_t count = std::max<int64_t>(1, int64_t(millions * 1e6 / double(per)));
  const double total = double(count * per);
  std::printf("bench_optim: %lld tensors of %lldx%lld = %.2fM parameters, %d threads, median of %d steps\n",
              (long long)count, (long long)rows, (long long)cols, total / 1e6, threads, reps);
  std::printf("paged dir: %s (%s)\n", paged_dir().path.c_str(), paged_dir().source.c_str());
  std::printf("%-16s %10s %14s %18s %12s\n", "optimizer", "ms/step", "ms/M params", "cpu-ms/M params", "bytes/param");
  for (const auto& kind : optimizer_names()) {
    NamedParams ps;
    Rng r(1);
    for (int64_t k = 0; k < count; ++k) {
      std::vector<float> v(static_cast<size_t>(per));
      for (auto& x : v) x = float(r.normal()) * 0.02f;
      const std::string name = "p" + std::to_string(k);
      ps.emplace_back(name, Var(Tensor::from_vector({rows, cols}, v), true, name));
      float* g = ps.back().second.grad_buffer();
      for (int64_t i = 0; i < per; ++i) g[i] = float(r.normal()) * 1e-3f;
    }
    AdamWConfig cfg;
    cfg.weight_decay = 0.01;
    auto opt = make_optimizer(kind, ps, cfg);
    opt->step(1e-4);  // warm-up: touches every state page
    std::vector<double> t, c;
    for (int i = 0; i < reps; ++i) {
      const double t0 = now(), c0 = cpu_now();
      opt->step(1e-4);
      t.push_back(now() - t0);
      c.push_back(cpu_now() - c0);
    }
    std::sort(t.begin(), t.end());
    std::sort(c.begin(), c.end());
    const double ms = t[t.size() / 2] * 1e3, cpu_ms = c[c.size() / 2] * 1e3;
    std::printf("%-16s %10.2f %14.3f %18.3f %12.3f\n", kind.c_str(), ms, ms / (total / 1e6), cpu_ms / (total / 1e6),
                double(opt->state_bytes()) / total);
  }
  return 0;
}
