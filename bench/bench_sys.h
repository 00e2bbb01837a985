// What a benchmark prints about the machine it ran on, and its memory high-water mark.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <cblas.h>
#include <unistd.h>  // environ

#include <algorithm>
#include <chrono>
#include <vector>

#include "core/thread_pool.h"
#include "quant/kernels.h"

namespace qpeft::bench {

// VmHWM: the resident high-water mark, which writing "5" to /proc/self/clear_refs resets.
inline double peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmHWM:") {
      double kb = 0;
      in >> kb;
      return kb * 1024.0;
    }
    std::getline(in, key);
  }
  return 0;
}

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// CPU, threads, the quantization kernels chosen, and the OPENBLAS_* / QPEFT_* environment.
inline void print_machine() {
  std::printf("cpu: %s | threads %d | quant kernels %s\n", cpu_model().c_str(), num_threads(), quant_kernels().isa);
  for (char** e = environ; *e; ++e) {
    const std::string v = *e;
    if (v.rfind("OPENBLAS_", 0) == 0 || v.rfind("QPEFT_", 0) == 0 || v.rfind("OMP_", 0) == 0)
      std::printf("env: %s\n", v.c_str());
  }
}

extern "C" void openblas_set_num_threads(int);

// The machine's anchor: OpenBLAS's own multi-threaded sgemm on an n³ problem with `threads`
// threads (best of `reps`), the well-kept library every benchmark ratio is set against. Our
// pool pins OpenBLAS to one thread per call; this lifts that for the measurement only.
inline double openblas_threaded_sgemm_gflops(int threads, int64_t n = 2048, int reps = 3) {
  std::vector<float> a(size_t(n * n), 0.5f), b(size_t(n * n), 0.25f), c(size_t(n * n));
  openblas_set_num_threads(threads);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(n), int(n), 1.0f, a.data(), int(n), b.data(),
                int(n), 0.0f, c.data(), int(n));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    best = std::max(best, 2.0 * double(n) * double(n) * double(n) / s / 1e9);
  }
  openblas_set_num_threads(1);
  return best;
}

}  // namespace qpeft::bench
