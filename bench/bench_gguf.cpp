// qpeft against llama.cpp on the same GGUF file and thread count (issue 13): prompt
// processing and greedy generation tokens/s, llama.cpp through node-llama-cpp's prebuilt CPU
// build (tests/reference/llama_cpp_bench.mjs; run scripts/fetch-reference-data.sh first).
// Both best of `reps`; 1 thread is the headline (node-llama-cpp's 2-thread decoding is
// erratic on small VMs), 2 threads too.
//   build/bench/bench_gguf [--model DIR] [--dtypes f32,bf16,q8_0,q4_k_m] [--prompt 128] [--generate 64] [--reps 3] [--ggml-activations q8|f32]
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_sys.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "quant/ggml_weight.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {


std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string x; std::getline(in, x, ',');) out.push_back(x);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  qpeft::retain_freed_memory();
  std::string model_dir = std::string(QPEFT_SOURCE_DIR) + "/models/austen-tiny", dtypes = "f32,bf16,q8_0,q4_k_m";
  int prompt = 128, generate = 64, reps = 3;
  std::string activations = "q8";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--model") model_dir = argv[i + 1];
    else if (a == "--dtypes") dtypes = argv[i + 1];
    else if (a == "--prompt") prompt = std::atoi(argv[i + 1]);
    else if (a == "--generate") generate = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--ggml-activations") activations = argv[i + 1];
  }
  // As `qpeft generate`: llama.cpp's 8-bit products with its quantized blocks, unless f32.
  const qpeft::GgmlActivationsScope products(activations == "f32" ? qpeft::GgmlActivations::F32
                                                                   : qpeft::GgmlActivations::Q8);
  const std::string ref = std::string(QPEFT_SOURCE_DIR) + "/tests/reference";
  if (!fs::exists(ref + "/node_modules/node-llama-cpp")) {
    std::fprintf(stderr, "bench_gguf: run scripts/fetch-reference-data.sh first (node-llama-cpp)\n");
    return 1;
  }
  const std::string qpeft = (fs::canonical("/proc/self/exe").parent_path().parent_path() / "qpeft").string();
  qpeft::bench::print_machine();
  const std::string dir = (fs::temp_directory_path() / ("qpeft_bench_gguf_" + std::to_string(getpid()))).string();
  fs::create_directories(dir);
  std::printf("\nmodel %s, prompt %d tokens, %d generated (greedy), best of %d; f32 KV cache, no flash attention in "
              "llama.cpp; qpeft's --ggml-activations %s\n", model_dir.c_str(), prompt, generate, reps, activations.c_str());
  std::printf("%-8s %7s | %12s %12s %6s | %12s %12s %6s\n", "dtype", "threads", "prompt qpeft", "llama.cpp", "ratio",
              "gen qpeft", "llama.cpp", "ratio");
  std::vector<int32_t> ids;
  for (int t = 0; t < prompt; ++t) ids.push_back(3 + (t * 37) % 500);
  for (const std::string& dtype : split(dtypes)) {
    const std::string gguf = dir + "/m." + dtype + ".gguf";
    qpeft::bench::run_command(qpeft + " export --model " + model_dir + " --dtype " + dtype + " --out " + gguf);
    auto model = qpeft::load_model(gguf);
    for (int threads : {1, 2}) {
      qpeft::set_num_threads(threads);
      double best_prompt = 0, best_gen = 0;
      for (int r = 0; r < reps; ++r) {
        qpeft::GenerateOptions o;
        o.max_new_tokens = generate + 1;
        o.stop_on_eos = false;
        const qpeft::GenerateResult g = qpeft::generate(*model, ids, o);
        best_prompt = std::max(best_prompt, double(prompt) / g.prefill_seconds);
        best_gen = std::max(best_gen, double(g.tokens.size() - 1) / g.decode_seconds);
      }
      const json peer = json::parse(qpeft::bench::run_command("node " + ref + "/llama_cpp_bench.mjs " + gguf + " --threads " +
                                        std::to_string(threads) + " --prompt " + std::to_string(prompt) +
                                        " --generate " + std::to_string(generate) + " --reps " + std::to_string(reps)));
      const double pp = peer["prompt_tokens_per_s"].get<double>(), pg = peer["generate_tokens_per_s"].get<double>();
      std::printf("%-8s %7d | %12.0f %12.0f %6.2f | %12.0f %12.0f %6.2f\n", dtype.c_str(), threads, best_prompt, pp,
                  best_prompt / pp, best_gen, pg, best_gen / pg);
      std::fflush(stdout);
    }
  }
  fs::remove_all(dir);
  return 0;
}
