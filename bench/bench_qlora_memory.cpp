// Peak memory of QLoRA training on a 7B-shaped model: NF4 + double quantization, LoRA r=16
// on all linear layers, batch 1 x 512 tokens, gradient checkpointing, paged 8-bit AdamW.
// Creates the quantized checkpoint first (never holding the dense model) unless --model is
// given, then runs --steps optimizer steps and prints peak RSS with a breakdown.
//   build/bench/bench_qlora_memory [--preset 7b] [--model DIR] [--keep DIR] [--seq 512]
//       [--rank 16] [--optim paged_adamw8bit] [--steps 1] [--threads 2] [--mmap 1]
// The base loads as `qpeft train` loads it: copied into memory, an untied embedding table
// left mapped (LoadOptions::in_memory); --mmap 1 keeps everything mapped, as `train --mmap`.
// Target (issue #4): peak RSS <= 6 GiB for 7b.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "peft/lora.h"
#include "quant/quantized_weight.h"
#include "train/optimizer.h"
#include "bench_sys.h"
#include "bench_util.h"

using namespace qpeft;
using Clock = std::chrono::steady_clock;

static double gib(double bytes) { return bytes / double(1 << 30); }

static double current_rss_bytes() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return double(resident) * 4096.0;
}

int main(int argc, char** argv) {
  retain_freed_memory();  // as the CLI does
  std::string preset = "7b", model_dir, keep, optim = "paged_adamw8bit";
  int64_t seq = 512, rank = 16;
  int steps = 1, threads = 2;
  bool mmap = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--preset") preset = v;
    else if (k == "--model") model_dir = v;
    else if (k == "--keep") keep = v;
    else if (k == "--seq") seq = std::stoll(v);
    else if (k == "--rank") rank = std::stoll(v);
    else if (k == "--optim") optim = v;
    else if (k == "--steps") steps = std::stoi(v);
    else if (k == "--threads") threads = std::stoi(v);
    else if (k == "--mmap") mmap = v != "0";
    else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
  }
  set_num_threads(threads);
  bench::print_machine();
  const ModelConfig cfg = ModelConfig::preset(preset);
  bool made = false;
  if (model_dir.empty()) {
    model_dir = keep.empty() ? (std::filesystem::temp_directory_path() / ("qpeft_bench_nf4_" + preset)).string() : keep;
    if (!std::filesystem::exists(model_dir + "/config.json")) {
      auto t = Clock::now();
      std::fprintf(stderr, "writing %s (NF4 + double quant, never dense in memory)...\n", model_dir.c_str());
      write_random_model(cfg, DType::BF16, 1, model_dir, QuantizeOptions{"nf4", 64, true});
      std::fprintf(stderr, "  done in %.0f s, peak RSS so far %.2f GiB\n",
                   std::chrono::duration<double>(Clock::now() - t).count(), gib(bench::peak_rss_bytes()));
      made = keep.empty();
    }
  }
  // The writer's peak is not the training peak: reset the high-water mark before loading.
  { std::ofstream("/proc/self/clear_refs") << "5"; }

  LoadOptions load;
  load.in_memory = !mmap;
  auto model = load_model(model_dir, load);
  model->set_grad_checkpointing(true);
  double quant_bytes = 0, dense_bytes = 0, params_total = 0;
  model->visit_weights([&](WeightSlot& s) {
    if (!s.frozen) {
      dense_bytes += double(s.vector->value().nbytes());
      return;
    }
    params_total += double(shape_numel(s.shape));
    if (auto* q = dynamic_cast<const QuantizedWeight*>(s.frozen->get())) quant_bytes += double(q->storage_bytes());
    else if (auto* d = dynamic_cast<const DenseWeight*>(s.frozen->get())) dense_bytes += double(d->tensor().nbytes());
  });
  const double after_load = current_rss_bytes();

  NamedParams params = bench::attach_lora(*model, rank);
  double adapter_params_n = 0;
  for (auto& [k, p] : params) adapter_params_n += double(p.value().numel());
  auto opt = make_optimizer(optim, params, AdamWConfig{});

  const std::vector<int32_t> ids = bench::random_ids(seq, cfg.vocab_size);
  double step_s = 0;
  for (int s = 0; s < steps; ++s) {
    const auto [dt, loss] = bench::timed_step(*model, params, *opt, ids, 1, seq, s, 0.3, 2e-4);
    step_s = dt;
    std::fprintf(stderr, "step %d: loss %.4f, %.1f s\n", s + 1, loss, step_s);
  }
  const double peak = bench::peak_rss_bytes();
  const double adapter_bytes = adapter_params_n * 4.0 * 2.0;  // weights + gradients (f32)
  const double state = double(opt->state_bytes());
  std::printf("bench_qlora_memory: preset %s (%.2fB parameters), NF4 + double quant, LoRA r=%lld all-linear, "
              "batch 1 x %lld, gradient checkpointing, %s, %d thread(s)\n",
              preset.c_str(), double(cfg.num_parameters()) / 1e9, (long long)rank, (long long)seq, optim.c_str(), threads);
  std::printf("  stored base: %.3f bits per quantized parameter (expected 4.127)\n",
              8.0 * quant_bytes / (params_total - double(cfg.vocab_size * cfg.hidden_size) * (cfg.tie_word_embeddings ? 1 : 2)));
  std::printf("  peak RSS                         %.2f GiB  (target <= 6 GiB)\n", gib(peak));
  std::printf("    quantized linear weights       %.2f GiB\n", gib(quant_bytes));
  std::printf("    dense embeddings/head/norms    %.2f GiB  (%s)\n", gib(dense_bytes),
              mmap ? "memory-mapped, paged in as touched" : "in memory; an untied embedding mapped, paged in as touched");
  std::printf("    adapters + gradients           %.3f GiB  (%.1fM parameters)\n", gib(adapter_bytes), adapter_params_n / 1e6);
  std::printf("    optimizer state                %.3f GiB  (%.3f GiB of it paged to a file mapping)\n", gib(state),
              gib(double(opt->paged_state_bytes())));
  std::printf("    activations and workspace      %.2f GiB  (peak minus the above)\n",
              gib(peak - quant_bytes - dense_bytes - adapter_bytes - state));
  std::printf("  RSS after load                   %.2f GiB; step time %.1f s\n", gib(after_load), step_s);
  if (made) std::filesystem::remove_all(model_dir);
  return 0;
}
