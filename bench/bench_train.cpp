// Training throughput of LoRA on preset `small` (r=16, all-linear, batch 4 x 256, 2 threads
// by default), as a fraction of this machine's dense f32 GEMM peak measured in the same run.
//   build/bench/bench_train [--preset small] [--threads 2] [--steps 5] [--batch 4] [--seq 256] [--rank 16]
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
#include "peft/lora.h"
#include "train/optimizer.h"

using namespace qpeft;
using Clock = std::chrono::steady_clock;

static double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

static double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

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

int main(int argc, char** argv) {
  std::string preset = "small";
  int threads = 2, steps = 5;
  int64_t batch = 4, seq = 256, rank = 16;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--preset") preset = v;
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--steps") steps = std::stoi(v);
    else if (k == "--batch") batch = std::stoll(v);
    else if (k == "--seq") seq = std::stoll(v);
    else if (k == "--rank") rank = std::stoll(v);
  }
  set_num_threads(threads);
  const double peak = gemm_peak_gflops(1536, 5);

  ModelConfig cfg = ModelConfig::preset(preset);
  const std::string dir = (std::filesystem::temp_directory_path() / ("qpeft_bench_" + preset)).string();
  write_random_model(cfg, DType::BF16, 1, dir);
  auto model = load_model(dir);
  LoraConfig lc;
  lc.r = rank;
  lc.alpha = 2.0 * double(rank);
  lc.target_modules = {"all-linear"};
  inject_lora(*model, lc, 1);
  NamedParams params = adapter_params(*model);
  AdamW opt(params, AdamWConfig{});

  Rng rng(3);
  std::vector<int32_t> ids(size_t(batch * seq));
  for (auto& t : ids) t = int32_t(rng.below(uint64_t(cfg.vocab_size)));
  std::vector<double> times;
  for (int s = 0; s < steps + 1; ++s) {
    auto t = Clock::now();
    Graph g(true, uint64_t(s), true);
    LossResult res = model->loss(g, ids, ids, batch, seq);
    g.backward(res.loss);
    clip_grad_norm(params, 1.0);
    opt.step(1e-4);
    opt.zero_grad();
    if (s > 0) times.push_back(seconds_since(t));  // first step warms up
  }
  const double step_s = median(times);
  const double tokens = double(batch * seq);
  const double p_lin = double(cfg.num_parameters() - cfg.vocab_size * cfg.hidden_size * (cfg.tie_word_embeddings ? 0 : 1) -
                              cfg.hidden_size * (2 * cfg.num_layers + 1)) ;
  // Linear params incl. the head (the embedding lookup does no FLOPs).
  const double lin = p_lin;
  const double attn = 2.0 * 2.0 * double(cfg.num_layers) * double(seq) / 2.0 * double(cfg.num_heads * cfg.head_dim);
  const double flops_per_token = 2.0 * (2.0 * lin + attn);
  const double achieved = flops_per_token * tokens / step_s / 1e9;
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  std::printf("bench_train: preset %s, LoRA r=%lld all-linear, batch %lld x %lld, %d threads, %d timed steps\n",
              preset.c_str(), (long long)rank, (long long)batch, (long long)seq, threads, steps);
  std::printf("  step time (median)     %.3f s\n", step_s);
  std::printf("  tokens/s               %.1f\n", tokens / step_s);
  std::printf("  model FLOP/s (fwd+dX)  %.2f GFLOP/s  (%.1f MFLOP/token)\n", achieved, flops_per_token / 1e6);
  std::printf("  dense f32 GEMM peak    %.2f GFLOP/s  (1536^3, best of 5, same threads)\n", peak);
  std::printf("  fraction of peak       %.3f  (target >= 0.40)\n", achieved / peak);
  std::printf("  peak RSS               %.1f MiB\n", double(ru.ru_maxrss) / 1024.0);
  std::filesystem::remove_all(dir);
  return 0;
}
