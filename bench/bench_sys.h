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
#include <thread>
#include <utility>
#include <vector>

#include "core/profile.h"
#include "core/thread_pool.h"
#include "ops/onednn_gemm.h"
#include "ops/vec_math.h"
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

// CPU, threads, the kernel paths chosen, and the OPENBLAS_* / OMP_* / QPEFT_* environment.
inline void print_machine() {
  std::string no_bf16;
  const bool bf16 = bf16_gemm_available(&no_bf16);
  std::printf("cpu: %s | threads %d | quant kernels %s | row kernels %s | f32 products %s | bf16 compute %s\n",
              cpu_model().c_str(), num_threads(), quant_kernels().isa, vec_kernels().name,
              onednn_f32_gemm_available() ? "oneDNN avx512 (large) + OpenBLAS (small)" : "OpenBLAS",
              bf16 ? "oneDNN avx512_bf16" : ("unavailable: " + no_bf16).c_str());
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
  // OpenBLAS's workers poll (sched_yield) for a while after a threaded call before they
  // sleep; let them, so that they do not take cycles from what the caller times next.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  return best;
}

// The per-op table of profile::entries() (taken after a run) over `steps` steps: time per step, share of the
// step, and achieved GFLOP/s against the OpenBLAS anchor where the op counts FLOPs.
inline void print_profile(const std::vector<profile::Entry>& rows, int steps, double step_seconds,
                          double openblas_gflops, size_t max_rows = 40) {
  std::printf("  per-op profile (exclusive time, per step; GFLOP/s and fraction of OpenBLAS where counted)\n");
  std::printf("    %-44s %6s %9s %6s %8s %6s\n", "op [M x N x K]", "calls", "ms/step", "share", "GFLOP/s", "of OB");
  double total = 0;
  for (const auto& e : rows) total += e.seconds;
  for (size_t i = 0; i < rows.size() && i < max_rows; ++i) {
    const auto& e = rows[i];
    const double ms = e.seconds / steps * 1e3;
    if (e.flops > 0) {
      const double gf = e.flops / e.seconds / 1e9;
      std::printf("    %-44s %6lld %9.2f %5.1f%% %8.1f %6.3f\n", e.op.c_str(), (long long)(e.calls / steps), ms,
                  100.0 * e.seconds / total, gf, gf / openblas_gflops);
    } else {
      std::printf("    %-44s %6lld %9.2f %5.1f%%\n", e.op.c_str(), (long long)(e.calls / steps), ms,
                  100.0 * e.seconds / total);
    }
  }
  std::printf("    profiled total %.1f ms/step of a %.1f ms median step\n", total / steps * 1e3, step_seconds * 1e3);
}

// Runs a shell command line and returns what it printed (stdout and stderr); exits the
// benchmark with the command and its output when it fails.
inline std::string run_command(const std::string& cmd) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) {
    std::fprintf(stderr, "cannot run: %s\n", cmd.c_str());
    std::exit(1);
  }
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  if (pclose(p) != 0) {
    std::fprintf(stderr, "failed: %s\n%s\n", cmd.c_str(), out.c_str());
    std::exit(1);
  }
  return out;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median seconds of a() and of b() over `reps` interleaved repetitions, after one warm-up of
// each; the one that runs first alternates, so neither always meets a warmer cache.
template <class A, class B>
std::pair<double, double> interleaved_medians(int reps, A&& a, B&& b) {
  std::vector<double> ta, tb;
  auto timed = [](auto& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  a();
  b();
  for (int r = 0; r < reps; ++r) {
    if (r % 2 == 0) {
      ta.push_back(timed(a));
      tb.push_back(timed(b));
    } else {
      tb.push_back(timed(b));
      ta.push_back(timed(a));
    }
  }
  return {median(ta), median(tb)};
}

}  // namespace qpeft::bench
