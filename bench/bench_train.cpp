// Training throughput of LoRA on preset `small` (r=16, all-linear, batch 4 x 256, 2 threads
// by default), as a fraction of OpenBLAS's own threaded f32 sgemm measured in the same run
// (bench_sys.h; our own GEMM driver's figure is printed beside it, named as such);
// with --qlora also QLoRA (NF4 + double-quantized base) on the same shape, and the ratio; with
// --ia3 also (IA)³ (PEFT's Llama targets k_proj, v_proj, down_proj) and its ratio to LoRA.
//   build/bench/bench_train [--preset small] [--threads 2] [--steps 5] [--batch 4] [--seq 256] [--rank 16] [--qlora] [--ia3]
//                           [--profile]   (per-op table of the LoRA steps)
//                           [--bf16]      (also LoRA, and QLoRA with --qlora, with --compute-dtype bf16)
// FLOPs counted: forward + input-gradient of the model (2 · 2 · linear params incl. the head
// per token, plus causal attention's QKᵀ and PV), LoRA's own FLOPs excluded.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
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

struct StepStats {
  double step_s;
  size_t rss_after_mib;
};

// Median seconds per optimizer step (after one warm-up step) of LoRA (rank > 0) or (IA)³
// (rank 0) training on `dir`.
static StepStats time_training(const std::string& dir, const LoadOptions& load, int64_t rank, int64_t batch, int64_t seq,
                               int steps, bool prof = false) {
  auto model = load_model(dir, load);
  NamedParams params;
  if (rank > 0) {
    params = bench::attach_lora(*model, rank);
  } else {
    inject_ia3(*model, Ia3Config{});
    params = adapter_params(*model);
  }
  AdamW opt(params, AdamWConfig{});
  const std::vector<int32_t> ids = bench::random_ids(batch * seq, model->config().vocab_size);
  std::vector<double> times;
  for (int s = 0; s < steps + 1; ++s) {
    const double dt = bench::timed_step(*model, params, opt, ids, batch, seq, s, 1.0, 1e-4).first;
    if (s > 0) times.push_back(dt);  // the first step warms up
    if (s == 0 && prof) {
      profile::reset();
      profile::set_enabled(true);
    }
  }
  profile::set_enabled(false);
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {bench::median(times), size_t(ru.ru_maxrss / 1024)};
}

int main(int argc, char** argv) {
  retain_freed_memory();  // as the CLI does
  std::string preset = "small";
  int threads = 2, steps = 5;
  int64_t batch = 4, seq = 256, rank = 16;
  bool qlora = false, ia3 = false, prof = false, bf16 = false;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i], v = i + 1 < argc ? argv[i + 1] : "";
    if (k == "--qlora") { qlora = true; continue; }
    if (k == "--ia3") { ia3 = true; continue; }
    if (k == "--profile") { prof = true; continue; }
    if (k == "--bf16") { bf16 = true; continue; }
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
  const StepStats lora = time_training(dir, LoadOptions{}, rank, batch, seq, steps, prof);
  const std::vector<profile::Entry> f32_profile = profile::entries();
  std::vector<profile::Entry> bf16_profile;
  StepStats ql{};
  if (qlora) {
    LoadOptions lo;
    lo.quantize.format = "nf4";
    ql = time_training(dir, lo, rank, batch, seq, steps);
  }
  StepStats ia{};
  if (ia3) ia = time_training(dir, LoadOptions{}, 0, batch, seq, steps);
  StepStats lora_bf16{}, ql_bf16{};
  std::string bf16_note;
  if (bf16) {
    const ComputeDtypeScope compute(DType::BF16, &bf16_note);
    if (compute.in_effect() == DType::BF16) {
      lora_bf16 = time_training(dir, LoadOptions{}, rank, batch, seq, steps, prof);
      bf16_profile = profile::entries();
      if (qlora) {
        LoadOptions lo;
        lo.quantize.format = "nf4";
        ql_bf16 = time_training(dir, lo, rank, batch, seq, steps);
      }
    }
  }
  const double peak = std::max(peak_before, gemm_peak_gflops(1536, 5));

  const double openblas = bench::openblas_threaded_sgemm_gflops(threads);
  const double tokens = double(batch * seq);
  const double flops_per_token = 2.0 * bench::forward_flops_per_token(cfg, seq);
  const double achieved = flops_per_token * tokens / lora.step_s / 1e9;
  std::printf("bench_train: preset %s, LoRA r=%lld all-linear, batch %lld x %lld, %d threads, %d timed steps\n",
              preset.c_str(), (long long)rank, (long long)batch, (long long)seq, threads, steps);
  std::printf("  LoRA step time (median)  %.3f s\n", lora.step_s);
  std::printf("  LoRA tokens/s            %.1f\n", tokens / lora.step_s);
  std::printf("  model FLOP/s (fwd+dX)    %.2f GFLOP/s  (%.1f MFLOP/token)\n", achieved, flops_per_token / 1e6);
  std::printf("  OpenBLAS threaded sgemm  %.2f GFLOP/s  (2048^3, its own %d threads, best of 3)\n", openblas, threads);
  std::printf("  fraction of OpenBLAS     %.3f  (target >= 0.70)\n", achieved / openblas);
  std::printf("  our GEMM driver          %.2f GFLOP/s  (1536^3, best of 10 before and after, same threads)\n", peak);
  std::printf("  fraction of our driver   %.3f  (a ratio against our own code, for reference only)\n", achieved / peak);
  std::printf("  peak RSS after LoRA      %zu MiB\n", lora.rss_after_mib);
  if (prof) bench::print_profile(f32_profile, steps, lora.step_s, openblas);
  if (qlora) {
    std::printf("  QLoRA (NF4+DQ) step      %.3f s, %.1f tokens/s\n", ql.step_s, tokens / ql.step_s);
    std::printf("  QLoRA / LoRA tokens/s    %.3f  (target >= 0.95)\n", lora.step_s / ql.step_s);
  }
  if (ia3) {
    std::printf("  (IA)3 step               %.3f s, %.1f tokens/s\n", ia.step_s, tokens / ia.step_s);
    std::printf("  (IA)3 / LoRA tokens/s    %.3f\n", lora.step_s / ia.step_s);
  }
  if (bf16 && !bf16_note.empty()) std::printf("  --compute-dtype bf16     not run: %s\n", bf16_note.c_str());
  if (bf16 && bf16_note.empty()) {
    std::printf("  LoRA bf16 compute step   %.3f s, %.1f tokens/s, %.2f GFLOP/s = %.3f of OpenBLAS f32\n",
                lora_bf16.step_s, tokens / lora_bf16.step_s, flops_per_token * tokens / lora_bf16.step_s / 1e9,
                flops_per_token * tokens / lora_bf16.step_s / 1e9 / openblas);
    std::printf("  bf16 / f32 tokens/s      %.3f  (target >= 1.5)\n", lora.step_s / lora_bf16.step_s);
    if (prof) bench::print_profile(bf16_profile, steps, lora_bf16.step_s, openblas);
    if (qlora) {
      std::printf("  QLoRA bf16 compute step  %.3f s, %.1f tokens/s\n", ql_bf16.step_s, tokens / ql_bf16.step_s);
      std::printf("  QLoRA bf16 / f32         %.3f\n", ql.step_s / ql_bf16.step_s);
    }
  }
  std::filesystem::remove_all(dir);
  return 0;
}
