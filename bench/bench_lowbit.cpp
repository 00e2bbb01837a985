// Low-bit bases: (a) decode throughput of the 2-, 3- and 4-bit kernels of every table this CPU
// supports, and (b) the main number: LoRA (r 16, all-linear, batch 4 x 256) training
// tokens/s on a base quantized on load to NF2, NF3 and NF4 (block 64, double-quantized
// scales), timed in the same run with interleaved repetitions (median), and the ratios
// NF2/NF4 (target >= 0.95) and NF3/NF4.
//   build/bench/bench_lowbit [--preset small] [--reps 5] [--threads 2]   (about a minute on 2 threads)
// QPEFT_QUANT_ISA=scalar|avx2|avx512 caps the table training uses (quant/kernels.h).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "quant/blockwise.h"
#include "quant/kernels.h"
#include "train/optimizer.h"
#include "bench_sys.h"
#include "bench_util.h"

using namespace qpeft;
using Clock = std::chrono::steady_clock;

namespace {

// Best-of GB/s (f32 output bytes) of one table's k-bit decode on one thread: 2^18 elements
// (1 MiB of output, about one row tile) in blocks of 64, from element 0.
double decode_gbps(const QuantKernels& k, int bits) {
  const int64_t n = int64_t(1) << 18, B = 64;
  Rng r(static_cast<uint64_t>(bits));
  std::vector<uint8_t> packed(size_t(packed_bytes(n, bits)));
  for (auto& b : packed) b = uint8_t(r.below(256));
  std::vector<float> scales(size_t(num_blocks(n, B)), 0.5f), out(static_cast<size_t>(n)), lut(size_t(1) << bits);
  for (auto& v : lut) v = float(r.normal());
  auto call = [&] {
    if (bits == 2) k.decode2(packed.data(), 0, n, lut.data(), scales.data(), B, out.data());
    else if (bits == 3) k.decode3(packed.data(), 0, n, lut.data(), scales.data(), B, out.data());
    else k.decode4(packed.data(), 0, n, lut.data(), scales.data(), B, out.data());
  };
  call();
  double best = 1e30, spent = 0;
  for (int rep = 0; rep < 5 || spent < 0.1; ++rep) {
    const auto t = Clock::now();
    call();
    const double dt = std::chrono::duration<double>(Clock::now() - t).count();
    best = std::min(best, dt);
    spent += dt;
  }
  return double(n) * 4.0 / best / 1e9;
}

struct Run {
  const char* format;
  std::unique_ptr<LlamaModel> model;
  NamedParams params;
  std::unique_ptr<AdamW> opt;
  std::vector<double> step_s;
};

}  // namespace

int main(int argc, char** argv) {
  retain_freed_memory();  // as the CLI does
  std::string preset = "small";
  int reps = 5, threads = 2;
  const int64_t batch = 4, seq = 256, rank = 16;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "option %s needs a value\n", k.c_str());
      return 2;
    }
    const std::string v = argv[++i];
    if (k == "--preset") preset = v;
    else if (k == "--reps") reps = std::max(1, std::stoi(v));
    else if (k == "--threads") threads = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown option %s (use --preset, --reps, --threads)\n", k.c_str());
      return 2;
    }
  }
  set_num_threads(threads);
  std::printf("bench_lowbit\n");
  bench::print_machine();

  // (a) decode throughput per table.
  std::vector<const QuantKernels*> tables{&quant_kernels_ref()};
  if (const QuantKernels* k = quant_kernels_avx2()) tables.push_back(k);
  if (const QuantKernels* k = quant_kernels_avx512()) tables.push_back(k);
  std::printf("(a) decode, 1 thread, 2^18 elements, block 64, GB/s of f32 output (best of >= 5)\n");
  std::printf("  %-8s %8s %8s %8s\n", "table", "2-bit", "3-bit", "4-bit");
  for (const QuantKernels* k : tables)
    std::printf("  %-8s %8.2f %8.2f %8.2f\n", k->isa, decode_gbps(*k, 2), decode_gbps(*k, 3), decode_gbps(*k, 4));

  // (b) training tokens/s, NF2 / NF3 / NF4 bases, interleaved.
  const ModelConfig cfg = ModelConfig::preset(preset);
  const std::string dir = (std::filesystem::temp_directory_path() / ("qpeft_bench_lowbit_" + preset)).string();
  write_random_model(cfg, DType::BF16, 1, dir);
  std::vector<Run> runs;
  for (const char* f : {"nf4", "nf2", "nf3"}) {
    LoadOptions lo;
    lo.quantize.format = f;  // block 64, double-quantized scales
    Run r{f, load_model(dir, lo), {}, nullptr, {}};
    r.params = bench::attach_lora(*r.model, rank);
    r.opt = std::make_unique<AdamW>(r.params, AdamWConfig{});
    runs.push_back(std::move(r));
  }
  const std::vector<int32_t> ids = bench::random_ids(batch * seq, cfg.vocab_size);
  for (int rep = 0; rep <= reps; ++rep) {  // rep 0 warms every model up; the order rotates
    for (size_t j = 0; j < runs.size(); ++j) {
      Run& r = runs[(j + size_t(rep)) % runs.size()];
      const double dt = bench::timed_step(*r.model, r.params, *r.opt, ids, batch, seq, rep, 1.0, 1e-4).first;
      if (rep > 0) r.step_s.push_back(dt);
    }
  }
  std::filesystem::remove_all(dir);

  const double tokens = double(batch * seq);
  std::printf("(b) LoRA r=%lld all-linear training, preset %s, batch %lld x %lld, %d threads, base quantized on load "
              "(block 64, double quant), median of %d interleaved steps\n",
              (long long)rank, preset.c_str(), (long long)batch, (long long)seq, num_threads(), reps);
  double tps[3];
  for (size_t j = 0; j < runs.size(); ++j) {
    const double s = bench::median(runs[j].step_s);
    tps[j] = tokens / s;
    std::printf("  %-4s step %.3f s  %8.1f tokens/s  (steps:", runs[j].format, s, tps[j]);
    for (double t : runs[j].step_s) std::printf(" %.3f", t);
    std::printf(")\n");
  }
  const double openblas = bench::openblas_threaded_sgemm_gflops(num_threads());
  const double flops = 2.0 * bench::forward_flops_per_token(cfg, seq);  // forward + input gradient
  std::printf("  OpenBLAS threaded sgemm %.2f GFLOP/s (2048^3, its own %d threads): NF4 training %.2f GFLOP/s = %.3f "
              "of it, NF2 %.2f = %.3f\n",
              openblas, num_threads(), flops * tps[0] / 1e9, flops * tps[0] / 1e9 / openblas, flops * tps[1] / 1e9,
              flops * tps[1] / 1e9 / openblas);
  std::printf("  NF2 / NF4 tokens/s  %.3f  (target >= 0.95)\n", tps[1] / tps[0]);
  std::printf("  NF3 / NF4 tokens/s  %.3f\n", tps[2] / tps[0]);
  return 0;
}
