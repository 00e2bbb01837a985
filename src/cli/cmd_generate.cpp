// qpeft generate: text from a model (and adapter), streamed to stdout as tokens arrive.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "core/thread_pool.h"
#include "io/chat_template.h"
#include "io/tokenizer.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "peft/adapter_io.h"

namespace {

struct GenerateArgs {
  std::string model, adapter, prompt, base_quant = "auto";
  int64_t max_new_tokens = 128, top_k = 0;
  double temperature = 0.0, top_p = 1.0;
  uint64_t seed = 0;
  bool chat = false, ignore_eos = false;
  int threads = 0;
};

void run_generate(const GenerateArgs& a) {
  qpeft::set_num_threads(a.threads);
  QP_CHECK(qpeft::file_exists(a.model + "/tokenizer.json") || qpeft::file_exists(a.model + "/tokenizer.model"),
           "{}: no tokenizer.json or tokenizer.model; generate needs the model's tokenizer (copy it from the "
           "original model directory)",
           a.model);
  qpeft::Tokenizer tok = qpeft::Tokenizer::load(a.model);
  auto model = qpeft::cli::load_model_for_command(a.model, a.adapter, a.base_quant);

  std::vector<int32_t> ids;
  if (a.chat) {
    // As apply_chat_template(add_generation_prompt=True): the template writes BOS itself.
    auto tmpl = qpeft::ChatTemplate::from_tokenizer(tok);
    std::string text = tmpl.render({{"user", a.prompt}}, true, tok.bos_token(), tok.eos_token());
    ids = tok.encode(text, false);
  } else {
    ids = tok.encode(a.prompt, true);
  }
  QP_CHECK(!ids.empty(), "--prompt: the prompt is empty and the tokenizer adds no BOS; give some text");

  qpeft::GenerateOptions opt;
  opt.max_new_tokens = a.max_new_tokens;
  opt.temperature = a.temperature;
  opt.top_k = a.top_k;
  opt.top_p = a.top_p;
  opt.seed = a.seed;
  opt.stop_on_eos = !a.ignore_eos;
  opt.eos_ids = qpeft::eos_token_ids(model->config(), a.model, &tok);

  qpeft::TextStreamer streamer(tok);
  auto emit = [](const std::string& s) {
    if (s.empty()) return;
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };
  qpeft::GenerateResult r = qpeft::generate(*model, ids, opt, [&](int32_t id) {
    if (!(opt.stop_on_eos && std::find(opt.eos_ids.begin(), opt.eos_ids.end(), id) != opt.eos_ids.end()))
      emit(streamer.push(id));
    return true;
  });
  emit(streamer.finish());
  emit("\n");
  const int64_t n = int64_t(r.tokens.size());
  const double decode_tps = n > 1 && r.decode_seconds > 0 ? double(n - 1) / r.decode_seconds : 0.0;
  std::fprintf(stderr, "prompt %lld tokens in %.3f s (%.1f tok/s); generated %lld tokens, %.1f tok/s%s\n",
               (long long)r.prompt_tokens, r.prefill_seconds,
               r.prefill_seconds > 0 ? double(r.prompt_tokens) / r.prefill_seconds : 0.0, (long long)n, decode_tps,
               r.stopped_on_eos ? " (stopped at EOS)" : "");
}

void setup_generate(CLI::App& app) {
  auto a = std::make_shared<GenerateArgs>();
  auto* cmd = app.add_subcommand("generate", "Generate text from a prompt (greedy by default), streamed to stdout");
  cmd->add_option("--model", a->model, "Model directory (with its tokenizer)")->required();
  cmd->add_option("--adapter", a->adapter, "PEFT adapter directory (LoRA or IA3)");
  qpeft::cli::add_base_quant_option(cmd, &a->base_quant);
  cmd->add_option("--prompt", a->prompt, "Prompt text")->required();
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "Most tokens to generate")->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  cmd->add_option("--temperature", a->temperature, "Sampling temperature (0 = greedy)")->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", a->top_k, "Sample among the k most likely tokens (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling: the smallest set with this probability (1 = all)")
      ->check(CLI::Range(1e-9, 1.0));
  cmd->add_option("--seed", a->seed, "Sampling seed");
  cmd->add_flag("--chat", a->chat, "Wrap the prompt as a user message in the tokenizer's chat template");
  cmd->add_flag("--ignore-eos", a->ignore_eos, "Keep going past EOS until --max-new-tokens");
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)");
  cmd->callback([a] { run_generate(*a); });
}

}  // namespace

QPEFT_COMMAND(generate, setup_generate);
