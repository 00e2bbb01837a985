// Data-parallel training on this machine (issue 14): `mpirun -np 2 qpeft train --threads 1`
// against one `qpeft train --threads 2` on the same model, batch and steps, interleaved, with
// tokens/s, the all-reduce's time and bytes per step, and from the measured bytes a model of
// the all-reduce for 2–64 ranks at 10 and 100 Gbit/s for Llama-2-7B's LoRA r 16 gradient.
//   build/bench/bench_data_parallel [--preset small] [--steps 12] [--reps 3]
// Needs the qpeft binary beside bench/ built with Open MPI, and mpirun on PATH.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_sys.h"
#include "bench_util.h"
#include "models/config.h"
#include "core/rng.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {


struct Run {
  double tokens_per_s = 0, allreduce_ms = 0, bytes = 0;
};

// Medians over the steps after the first (start-up and first-touch costs).
Run read_metrics(const std::string& path) {
  std::vector<double> tps, ms, bytes;
  std::ifstream in(path);
  int i = 0;
  for (std::string line; std::getline(in, line); ++i) {
    if (i == 0) continue;
    const json j = json::parse(line);
    tps.push_back(j["tokens_per_s"].get<double>());
    if (j.contains("allreduce_s")) {
      ms.push_back(1e3 * j["allreduce_s"].get<double>());
      bytes.push_back(j["allreduce_bytes"].get<double>());
    }
  }
  Run r;
  r.tokens_per_s = qpeft::bench::median(tps);
  if (!ms.empty()) {
    r.allreduce_ms = qpeft::bench::median(ms);
    r.bytes = qpeft::bench::median(bytes);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string preset = "small";
  int steps = 12, reps = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--preset") preset = argv[i + 1];
    else if (a == "--steps") steps = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
  }
  const std::string qpeft = (fs::canonical("/proc/self/exe").parent_path().parent_path() / "qpeft").string();
  const std::string version = qpeft::bench::run_command(qpeft + " --version");
  if (version.find("Open MPI") == std::string::npos || std::system("command -v mpirun >/dev/null") != 0) {
    std::fprintf(stderr, "bench_data_parallel: %s was built without Open MPI, or mpirun is missing\n", qpeft.c_str());
    return 1;
  }
  qpeft::bench::print_machine();
  std::printf("%s", version.c_str());

  const std::string dir = (fs::temp_directory_path() / ("qpeft_bench_dp_" + std::to_string(getpid()))).string();
  fs::create_directories(dir);
  qpeft::bench::run_command(qpeft + " init-model --preset " + preset + " --dtype bf16 --seed 1 --out " + dir + "/model");
  // Random token rows of 256 (the model's vocabulary is the preset's).
  const json cfg = json::parse(std::ifstream(dir + "/model/config.json"));
  const int64_t vocab = cfg["vocab_size"].get<int64_t>();
  {
    std::ofstream data(dir + "/data.jsonl");
    qpeft::Rng rng(7);
    for (int e = 0; e < 64; ++e) {
      data << "{\"input_ids\": [";
      for (int t = 0; t < 256; ++t) data << (t ? "," : "") << 3 + rng.below(uint64_t(vocab - 3));
      data << "]}\n";
    }
  }
  const std::string args = " train --model " + dir + "/model --data " + dir + "/data.jsonl --rank 16 --alpha 32 "
                           "--targets all-linear --dropout 0 --batch 4 --seq-len 256 --lr 1e-4 --quiet --steps " +
                           std::to_string(steps);
  std::string mpirun = "mpirun --oversubscribe --bind-to core -np 2 ";
  if (geteuid() == 0) mpirun += "--allow-run-as-root ";
  std::vector<Run> one, two;
  for (int r = 0; r < reps; ++r) {
    // The first of the pair alternates, so neither always meets a warmer machine.
    for (int k = 0; k < 2; ++k) {
      const bool ranks = (k + r) % 2 == 0;
      const std::string out = dir + "/run", metrics = dir + "/m.jsonl";
      fs::remove_all(out);
      qpeft::bench::run_command((ranks ? mpirun + qpeft + args + " --threads 1" : qpeft + args + " --threads 2") + " --out " + out +
          " --metrics " + metrics);
      (ranks ? two : one).push_back(read_metrics(metrics));
    }
  }
  auto med = [](const std::vector<Run>& v, double Run::*f) {
    std::vector<double> x;
    for (const Run& r : v) x.push_back(r.*f);
    return qpeft::bench::median(x);
  };
  const double t1 = med(one, &Run::tokens_per_s), t2 = med(two, &Run::tokens_per_s);
  // Against the machine: forward + input-gradient FLOP/s over OpenBLAS's own threaded sgemm.
  const double anchor = qpeft::bench::openblas_threaded_sgemm_gflops(2);
  const double flops_per_token = 2.0 * qpeft::bench::forward_flops_per_token(qpeft::ModelConfig::load(dir + "/model"), 256);
  std::printf("\nOpenBLAS threaded sgemm %.1f GFLOP/s (2048^3, its own 2 threads): the machine's anchor\n", anchor);
  std::printf("of OpenBLAS: 1 process x 2 threads %.3f, 2 ranks x 1 thread %.3f (forward + input-gradient FLOPs)\n",
              flops_per_token * t1 / 1e9 / anchor, flops_per_token * t2 / 1e9 / anchor);
  const double ms = med(two, &Run::allreduce_ms), bytes = med(two, &Run::bytes);
  const double step_ms = 1e3 * 4 * 256 / t2;
  std::printf("\npreset %s, LoRA r 16 all-linear, batch 4 x 256, %d steps, medians of %d interleaved runs (steps 2..)\n",
              preset.c_str(), steps, reps);
  std::printf("%-28s %12s\n", "", "tokens/s");
  std::printf("%-28s %12.0f\n", "1 process x 2 threads", t1);
  std::printf("%-28s %12.0f   ratio %.2f\n", "2 ranks x 1 thread (mpirun)", t2, t2 / t1);
  std::printf("all-reduce per step (2 ranks, waiting for the slower rank included): %.2f ms of a %.0f ms step (%.1f%%), "
              "%.0f bytes sent per rank\n", ms,
              step_ms, 100.0 * ms / step_ms, bytes);
  // Each rank sends 2·(N−1)/N of the gradient buffer (reduce-scatter + all-gather): the
  // measured bytes give this model's buffer, and the same rule the 7B one.
  const double buffer = bytes / (2.0 * (2 - 1) / 2);
  std::printf("buffers all-reduced per step (from the measured bytes): %.0f bytes (gradients, presence flags, step "
              "statistics)\n", buffer);
  const double lora7b = 32.0 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008));  // r·(in + out) per linear
  const double bytes7b = 4 * lora7b;
  std::printf("\nLlama-2-7B LoRA r 16 all-linear: %.1fM gradients, %.0f MiB per step; all-reduce time per step, "
              "bandwidth term only (each rank sends 2(N-1)/N of it):\n",
              lora7b / 1e6, bytes7b / 1048576.0);
  std::printf("%6s %14s %14s %14s\n", "ranks", "MiB sent/rank", "10 Gbit/s", "100 Gbit/s");
  for (int n : {2, 4, 8, 16, 32, 64}) {
    const double sent = bytes7b * 2.0 * (n - 1) / n;
    std::printf("%6d %14.0f %12.3f s %12.4f s\n", n, sent / 1048576.0, sent * 8 / 10e9, sent * 8 / 100e9);
  }
  fs::remove_all(dir);
  return 0;
}
