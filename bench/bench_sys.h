// What a benchmark prints about the machine it ran on, and its memory high-water mark.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <unistd.h>  // environ

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

}  // namespace qpeft::bench
