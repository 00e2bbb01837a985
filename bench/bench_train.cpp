// Training throughput of LoRA on preset `small` (r=16, all-linear, batch 4 x 256, 2 threads
// by default), as a fraction of OpenBLAS's own threaded f32 sgemm measured in the same run
// (bench_sys.h; our own GEMM driver's figure is printed beside it, named as such);
// with --qlora also QLoRA (NF4 + double-quantized base) on the same shape, and the ratio; with
// --ia3 also (IA)³ (PEFT's Llama targets k_proj, v_proj, down_proj) and its ratio to LoRA.
// The configurations take their timed steps in turn, one each, so a drifting machine slows all alike.
//   build/bench/bench_train [--preset small] [--threads 2] [--steps 5] [--batch 4] [--seq 256] [--rank 16] [--qlora] [--ia3]
//                           [--profile]   (per-op table of the LoRA steps)
//                           [--bf16]      (also LoRA, and QLoRA with --qlora, with --compute-dtype bf16)
//                           [--mmap]      (weights viewed in the file's mapping, as `train --mmap`; by
//                                          default copied into memory, as `train` does)
// FLOPs counted: forward + input-gradient of the model (2 · 2 · linear params incl. the head
// per token, plus causal attention's QKᵀ and PV), LoRA's own FLOPs excluded.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "ops/linear.h"
#include "peft/adapter.h"
#include "peft/ia3.h"
#include "peft/lora.h"
#include "train/optimizer.h"
#include "bench_sys.h"
#include "bench_util.h"

using namespace qpeft;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Best-of-N GFLOP/s of our threaded f32 GEMM driver on a square problem.
static double gemm_peak_gflops(int64_t n, int reps) {
  Tensor x = Tensor::full({n, n}, 0.5f), w = Tensor::full({n, n}, 0.25f), y = Tensor::empty({n, n});
  DenseWeight dw(w, "peak");
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    auto t = Clock::now();
    linear_forward(x.f32(), n, dw, y.f32());
    best = std::max(best, 2.0 * double(n) * n * n / seconds_since(t) / 1e9);
  }
  return best;
}

// One training configuration the benchmark times: LoRA (rank > 0) or (IA)³ (rank 0) on `dir`,
// computed in `compute` (f32, or bf16 where the CPU has it).
struct TrainingRun {
  std::unique_ptr<LlamaModel> model;
  NamedParams params;
  std::unique_ptr<AdamW> opt;
  DType compute = DType::F32;
  std::vector<double> times;
  std::vector<profile::Entry> profile_rows;

  TrainingRun(const std::string& dir, const LoadOptions& load, int64_t rank, DType compute_dtype)
      : model(load_model(dir, load)), compute(compute_dtype) {
    if (rank > 0) {
      params = bench::attach_lora(*model, rank);
    } else {
      inject_ia3(*model, Ia3Config{});
      params = adapter_params(*model);
    }
    opt = std::make_unique<AdamW>(params, AdamWConfig{});
  }
  double step(const std::vector<int32_t>& ids, int64_t batch, int64_t seq, int s) {
    const ComputeDtypeScope scope(compute);
    return bench::timed_step(*model, params, *opt, ids, batch, seq, s, 1.0, 1e-4).first;
  }
  double median_s() const { return bench::median(times); }
};

// tokens/s of `num` over those of `den`: the median over rounds of den's step time over num's
// in the same round (paired, so drift between rounds cancels).
static double paired_speedup(const TrainingRun& num, const TrainingRun& den) {
  std::vector<double> r;
  for (size_t i = 0; i < num.times.size() && i < den.times.size(); ++i) r.push_back(den.times[i] / num.times[i]);
  return bench::median(r);
}

static size_t peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return size_t(ru.ru_maxrss / 1024);
}

// Times `steps` steps of every run, one step of each in turn, so that a machine whose speed
// drifts (shared VMs do) slows every configuration alike; each run warms up with one step
// first. After each round, the OpenBLAS anchor (best of two 2048³ calls) goes into `anchors`,
// so that every round's steps have the machine's speed of that moment beside them. With
// `prof`, each run then takes `steps` more steps alone, with the per-op profile on.
static void time_interleaved(std::vector<TrainingRun*> runs, const std::vector<int32_t>& ids, int64_t batch,
                             int64_t seq, int steps, bool prof, int threads, std::vector<double>* anchors) {
  for (TrainingRun* r : runs) r->step(ids, batch, seq, 0);
  for (int s = 1; s <= steps; ++s) {
    for (TrainingRun* r : runs) r->times.push_back(r->step(ids, batch, seq, s));
    anchors->push_back(bench::openblas_threaded_sgemm_gflops(threads, 2048, 2));
  }
  if (!prof) return;
  for (TrainingRun* r : runs) {
    profile::reset();
    profile::set_enabled(true);
    for (int s = 1; s <= steps; ++s) r->step(ids, batch, seq, steps + s);
    profile::set_enabled(false);
    r->profile_rows = profile::entries();
  }
}

int main(int argc, char** argv) {
  retain_freed_memory();  // as the CLI does
  std::string preset = "small";
  int threads = 2, steps = 5;
  int64_t batch = 4, seq = 256, rank = 16;
  bool qlora = false, ia3 = false, prof = false, bf16 = false, mmap = false;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i], v = i + 1 < argc ? argv[i + 1] : "";
    if (k == "--qlora") { qlora = true; continue; }
    if (k == "--ia3") { ia3 = true; continue; }
    if (k == "--profile") { prof = true; continue; }
    if (k == "--bf16") { bf16 = true; continue; }
    if (k == "--mmap") { mmap = true; continue; }
    ++i;
    if (k == "--preset") preset = v;
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--steps") steps = std::stoi(v);
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--seq") seq = std::stoll(v);
    else if (k == "--rank") rank = std::stoll(v);
    else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
  }
  set_num_threads(threads);
  bench::print_machine();
  ModelConfig cfg = ModelConfig::preset(preset);
  const std::string dir = (std::filesystem::temp_directory_path() / ("qpeft_bench_" + preset)).string();
  write_random_model(cfg, DType::BF16, 1, dir);

  const double peak_before = gemm_peak_gflops(1536, 5);
  const std::vector<int32_t> ids = bench::random_ids(batch * seq, cfg.vocab_size);
  LoadOptions dense;  // as `qpeft train` loads (TrainOptions::mmap)
  dense.in_memory = !mmap;
  LoadOptions nf4 = dense;
  nf4.quantize.format = "nf4";
  // LoRA in f32 first, alone, so that its peak RSS is its own.
  TrainingRun lora(dir, dense, rank, DType::F32);
  lora.step(ids, batch, seq, 0);
  const size_t lora_rss_mib = peak_rss_mib();
  std::vector<TrainingRun*> runs = {&lora};
  std::unique_ptr<TrainingRun> ql, ia, lora_bf16, ql_bf16;
  if (qlora) runs.push_back((ql = std::make_unique<TrainingRun>(dir, nf4, rank, DType::F32)).get());
  if (ia3) runs.push_back((ia = std::make_unique<TrainingRun>(dir, dense, 0, DType::F32)).get());
  std::string bf16_note;
  if (bf16) {
    const ComputeDtypeScope probe(DType::BF16, &bf16_note);
    if (probe.in_effect() == DType::BF16) {
      runs.push_back((lora_bf16 = std::make_unique<TrainingRun>(dir, dense, rank, DType::BF16)).get());
      if (qlora) runs.push_back((ql_bf16 = std::make_unique<TrainingRun>(dir, nf4, rank, DType::BF16)).get());
    }
  }
  std::vector<double> anchors;
  time_interleaved(runs, ids, batch, seq, steps, prof, threads, &anchors);
  const double peak = std::max(peak_before, gemm_peak_gflops(1536, 5));

  const double openblas = bench::median(anchors);
  const double tokens = double(batch * seq);
  const double flops_per_token = 2.0 * bench::forward_flops_per_token(cfg, seq);
  const double lora_s = lora.median_s();
  const double achieved = flops_per_token * tokens / lora_s / 1e9;
  std::printf("bench_train: preset %s, LoRA r=%lld all-linear, batch %lld x %lld, %d threads, %d timed steps, "
              "weights %s\n"
              "  (the configurations took their steps in turn, one each; times are medians, ratios the\n"
              "   median over rounds of the two step times in the same round)\n",
              preset.c_str(), (long long)rank, (long long)batch, (long long)seq, threads, steps,
              mmap ? "memory-mapped (--mmap)" : "in memory (as qpeft train loads them; --mmap maps them)");
  std::printf("  LoRA step time (median)  %.3f s  (steps:", lora_s);
  for (double t : lora.times) std::printf(" %.3f", t);
  std::printf(")\n");
  std::printf("  LoRA tokens/s            %.1f\n", tokens / lora_s);
  std::printf("  model FLOP/s (fwd+dX)    %.2f GFLOP/s  (%.1f MFLOP/token)\n", achieved, flops_per_token / 1e6);
  // A run's model FLOP/s over OpenBLAS's: the median over rounds of its step against the same round's anchor.
  const auto fraction_of_anchor = [&](const TrainingRun& r) {
    std::vector<double> fractions;
    for (size_t i = 0; i < anchors.size() && i < r.times.size(); ++i)
      fractions.push_back(flops_per_token * tokens / r.times[i] / 1e9 / anchors[i]);
    return bench::median(fractions);
  };
  std::printf("  OpenBLAS threaded sgemm  %.2f GFLOP/s  (2048^3, its own %d threads; median of the rounds' anchors:", openblas,
              threads);
  for (double a : anchors) std::printf(" %.0f", a);
  std::printf(")\n");
  std::printf("  fraction of OpenBLAS     %.3f  (median over rounds of the step against the same round's anchor;"
              " target >= 0.70)\n", fraction_of_anchor(lora));
  std::printf("  our GEMM driver          %.2f GFLOP/s  (1536^3, best of 10 before and after, same threads)\n", peak);
  std::printf("  fraction of our driver   %.3f  (a ratio against our own code, for reference only)\n", achieved / peak);
  std::printf("  peak RSS of LoRA alone   %zu MiB\n", lora_rss_mib);
  if (prof) bench::print_profile(lora.profile_rows, steps, lora_s, openblas);
  if (qlora) {
    std::printf("  QLoRA (NF4+DQ) step      %.3f s, %.1f tokens/s\n", ql->median_s(), tokens / ql->median_s());
    std::printf("  QLoRA / LoRA tokens/s    %.3f  (target >= 0.95)\n", paired_speedup(*ql, lora));
  }
  if (ia3) {
    std::printf("  (IA)3 step               %.3f s, %.1f tokens/s\n", ia->median_s(), tokens / ia->median_s());
    std::printf("  (IA)3 / LoRA tokens/s    %.3f\n", paired_speedup(*ia, lora));
  }
  if (bf16 && !bf16_note.empty()) std::printf("  --compute-dtype bf16     not run: %s\n", bf16_note.c_str());
  if (lora_bf16) {
    const double lora_bf16_s = lora_bf16->median_s();
    std::printf("  LoRA bf16 compute step   %.3f s, %.1f tokens/s, %.2f GFLOP/s = %.3f of OpenBLAS f32\n",
                lora_bf16_s, tokens / lora_bf16_s, flops_per_token * tokens / lora_bf16_s / 1e9,
                fraction_of_anchor(*lora_bf16));
    std::printf("  bf16 / f32 tokens/s      %.3f  (target >= 1.5)\n", paired_speedup(*lora_bf16, lora));
    if (prof) bench::print_profile(lora_bf16->profile_rows, steps, lora_bf16_s, openblas);
    if (qlora) {
      std::printf("  QLoRA bf16 compute step  %.3f s, %.1f tokens/s\n", ql_bf16->median_s(), tokens / ql_bf16->median_s());
      std::printf("  QLoRA bf16 / f32         %.3f\n", paired_speedup(*ql_bf16, *ql));
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
