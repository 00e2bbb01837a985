// Mixed-adapter batches vs one adapter at a time, preset `small` (bf16 base, random weights),
// 4 adapters: LoRA r 16 all-linear ×2 and (IA)³ (PEFT's Llama targets) ×2, example i using
// adapter i mod 4. The same batches both ways: each batch of --batch examples runs once with
// its rows' adapters mixed, against split into 4 passes (each adapter alone over its rows, on
// a model holding only that adapter). Medians of --reps interleaved repetitions.
//   eval:     loss over --examples fixed-length rows of --seq tokens (evaluate), for each batch
//             size in --batch (examples per batch, 4 or 8: 1 or 2 rows per adapter). The gain
//             is the passes over the base weights that the split version repeats, so it grows
//             as each adapter's share of a batch shrinks.
//   generate: --prompts prompts of 16 tokens, --new-tokens greedy tokens each (generate_batch
//             with its KV cache; the split version batches each adapter's prompts alone)
//   build/bench/bench_mixed_adapters [--threads 2] [--examples 32] [--seq 32] [--batch 4,8] [--prompts 8]
//                                    [--new-tokens 24] [--reps 3] [--no-generate]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "peft/adapter_io.h"
#include "peft/ia3.h"
#include "peft/lora.h"
#include "peft/mixed_adapter.h"
#include "train/trainer.h"
#include "bench_sys.h"
#include "bench_util.h"

using namespace qpeft;

namespace {

// Adapter k into dir/adapter_k: LoRA r 16 all-linear (k = 0, 2) or (IA)³ (k = 1, 3), values
// away from the identity (B random, l around 1).
std::string make_adapter(const std::string& model_dir, const std::string& dir, int k) {
  const std::string out = dir + "/adapter_" + std::to_string(k);
  auto m = load_model(model_dir);
  Rng rng(100 + uint64_t(k));
  if (k % 2 == 0) {
    LoraConfig c;
    c.r = 16;
    c.alpha = 32;
    c.target_modules = {"all-linear"};
    inject_lora(*m, c, uint64_t(k));
    for (auto& [key, p] : adapter_params(*m)) {
      float* v = p.value().f32();
      for (int64_t i = 0; i < p.value().numel(); ++i) v[i] += 0.01f * float(rng.normal());
    }
    save_adapter(*m, c, out);
  } else {
    Ia3Config c;
    inject_ia3(*m, c);
    for (auto& [key, p] : adapter_params(*m)) {
      float* v = p.value().f32();
      for (int64_t i = 0; i < p.value().numel(); ++i) v[i] = 1.0f + 0.2f * float(rng.normal());
    }
    save_adapter(*m, c, out);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  retain_freed_memory();  // as the CLI does
  int threads = 2, reps = 3;
  int64_t examples = 32, seq = 32, n_prompts = 8, new_tokens = 24;
  std::vector<int64_t> batches = {4, 8};
  bool gen = true;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i], v = i + 1 < argc ? argv[i + 1] : "";
    if (k == "--no-generate") { gen = false; continue; }
    ++i;
    if (k == "--threads") threads = std::stoi(v);
    else if (k == "--examples") examples = std::stoll(v);
    else if (k == "--seq") seq = std::stoll(v);
    else if (k == "--batch") {
      batches.clear();
      for (size_t p = 0; p < v.size();) {
        const size_t c = std::min(v.find(',', p), v.size());
        batches.push_back(std::stoll(v.substr(p, c - p)));
        p = c + 1;
      }
    }
    else if (k == "--prompts") n_prompts = std::stoll(v);
    else if (k == "--new-tokens") new_tokens = std::stoll(v);
    else if (k == "--reps") reps = std::stoi(v);
    else { std::fprintf(stderr, "unknown option %s\n", k.c_str()); return 2; }
  }
  constexpr int K = 4;
  bool bad = n_prompts % K != 0 || batches.empty();
  for (int64_t b : batches) bad = bad || b <= 0 || b % K != 0 || examples % b != 0;
  if (bad) {
    std::fprintf(stderr, "--batch must be a multiple of 4, --examples of --batch, --prompts of 4\n");
    return 2;
  }
  set_num_threads(threads);
  const ModelConfig cfg = ModelConfig::preset("small");
  const std::string dir = (std::filesystem::temp_directory_path() / "qpeft_bench_mixed").string();
  std::filesystem::remove_all(dir);
  write_random_model(cfg, DType::BF16, 1, dir + "/model");
  std::vector<NamedAdapterDir> named;
  std::vector<std::unique_ptr<LlamaModel>> alone;  // each with one adapter, attached the ordinary way
  for (int k = 0; k < K; ++k) {
    named.push_back({"a" + std::to_string(k), make_adapter(dir + "/model", dir, k)});
    alone.push_back(load_model(dir + "/model"));
    load_adapter(*alone.back(), named.back().dir);
  }
  auto mixed = load_model_with_adapters(dir + "/model", named, "none");

  // ---- eval: fixed-length rows ----
  Rng rng(7);
  std::vector<Example> data(static_cast<size_t>(examples));
  std::vector<std::vector<Example>> own(K);
  for (int64_t i = 0; i < examples; ++i) {
    Example& e = data[size_t(i)];
    for (int64_t t = 0; t < seq; ++t) e.input_ids.push_back(int32_t(rng.below(uint64_t(cfg.vocab_size))));
    e.labels = e.input_ids;
    e.adapter = int32_t(i % K);
    own[size_t(i % K)].push_back(e);
  }
  bench::print_machine();
  const double openblas = bench::openblas_threaded_sgemm_gflops(threads);
  std::printf("OpenBLAS threaded sgemm %.2f GFLOP/s (2048^3, its own %d threads): the machine's anchor\n", openblas,
              threads);
  std::printf("bench_mixed_adapters: preset small (bf16 base), 4 adapters (LoRA r16 all-linear x2, (IA)3 x2), "
              "%d threads, median of %d interleaved reps\n", threads, reps);
  for (int64_t batch : batches) {
    EvalResult mixed_res;
    std::vector<EvalResult> split_res(K);
    const auto [em, es] = bench::interleaved_medians(
        reps, [&] { mixed_res = evaluate(*mixed, data, batch, seq); },
        [&] {
          for (int k = 0; k < K; ++k) split_res[size_t(k)] = evaluate(*alone[size_t(k)], own[size_t(k)], batch / K, seq);
        });
    double max_rel = 0;
    for (int k = 0; k < K; ++k)
      max_rel = std::max(max_rel, std::abs(mixed_res.adapters.at(k).loss - split_res[size_t(k)].loss) /
                                      split_res[size_t(k)].loss);
    const double tokens = double(examples * seq);
    std::printf("eval: %lld examples x %lld tokens, batches of %lld (%lld row%s per adapter)\n", (long long)examples,
                (long long)seq, (long long)batch, (long long)(batch / K), batch / K == 1 ? "" : "s");
    std::printf("  mixed batches            %.3f s  (%.0f tokens/s)\n", em, tokens / em);
    std::printf("  4 separate passes        %.3f s  (%.0f tokens/s)\n", es, tokens / es);
    std::printf("  speed ratio              %.2fx  (target >= 1.5)\n", es / em);
    const double gflop = bench::forward_flops_per_token(cfg, seq) * tokens / 1e9;
    std::printf("  base forward FLOP/s      mixed %.2f GFLOP/s = %.3f of OpenBLAS, separate %.2f = %.3f\n", gflop / em,
                gflop / em / openblas, gflop / es, gflop / es / openblas);
    std::printf("  per-adapter loss, max relative difference mixed vs separate: %.2e\n", max_rel);
  }

  if (gen) {
    // ---- generate: greedy decoding with the KV cache ----
    std::vector<std::vector<int32_t>> prompts;
    std::vector<int32_t> adapters;
    std::vector<std::vector<std::vector<int32_t>>> own_prompts(K);
    for (int64_t i = 0; i < n_prompts; ++i) {
      std::vector<int32_t> p;
      for (int t = 0; t < 16; ++t) p.push_back(int32_t(rng.below(uint64_t(cfg.vocab_size))));
      prompts.push_back(p);
      adapters.push_back(int32_t(i % K));
      own_prompts[size_t(i % K)].push_back(p);
    }
    GenerateOptions opt;
    opt.max_new_tokens = new_tokens;
    opt.stop_on_eos = false;
    std::vector<GenerateResult> gm;
    std::vector<std::vector<GenerateResult>> gs(K);
    const auto [gmx, gsp] = bench::interleaved_medians(
        reps, [&] { gm = generate_batch(*mixed, prompts, adapters, opt); },
        [&] {
          for (int k = 0; k < K; ++k) gs[size_t(k)] = generate_batch(*alone[size_t(k)], own_prompts[size_t(k)], {}, opt);
        });
    int64_t same = 0;
    for (int64_t i = 0; i < n_prompts; ++i) same += gm[size_t(i)].tokens == gs[size_t(i % K)][size_t(i / K)].tokens;
    const double gtok = double(n_prompts * new_tokens);
    std::printf("generate: %lld prompts x 16 tokens, %lld new tokens each (greedy, KV cache), %lld per adapter\n",
                (long long)n_prompts, (long long)new_tokens, (long long)(n_prompts / K));
    std::printf("  mixed batch              %.3f s  (%.1f tokens/s)\n", gmx, gtok / gmx);
    std::printf("  4 separate batches       %.3f s  (%.1f tokens/s)\n", gsp, gtok / gsp);
    std::printf("  speed ratio              %.2fx\n", gsp / gmx);
    std::printf("  identical tokens         %lld of %lld prompts\n", (long long)same, (long long)n_prompts);
  }
  std::filesystem::remove_all(dir);
  return 0;
}
