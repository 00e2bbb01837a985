// qpeft generate: text from a model (and adapter), streamed to stdout as tokens arrive; or, with
// --prompts, completions of many prompts (each with its own adapter) generated in one batch.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/file.h"
#include "core/thread_pool.h"
#include "text/chat_template.h"
#include "io/json_reader.h"
#include "text/tokenizer.h"
#include "models/checkpoint.h"
#include "models/generate.h"
#include "models/llama.h"
#include "peft/adapter_io.h"

namespace {

struct GenerateArgs {
  std::string model, prompt, prompts, prompt_adapter, base_quant = "auto";
  std::vector<std::string> adapters;
  bool has_prompt = false, has_prompt_adapter = false, has_max_new_tokens = false;
  int64_t max_new_tokens = 128, top_k = 0;
  double temperature = 0.0, top_p = 1.0;
  uint64_t seed = 0;
  bool chat = false, ignore_eos = false;
  int threads = 0;
  std::string compute_dtype = "f32";
  std::string ggml_activations = "q8";
};

std::vector<int32_t> encode_prompt(const qpeft::Tokenizer& tok, const std::string& prompt, bool chat) {
  if (!chat) return tok.encode(prompt, true);
  // As apply_chat_template(add_generation_prompt=True): the template writes BOS itself.
  auto tmpl = qpeft::ChatTemplate::from_tokenizer(tok);
  return tok.encode(tmpl.render({{"user", prompt}}, true, tok.bos_token(), tok.eos_token()), false);
}

bool is_eos(const qpeft::GenerateOptions& opt, int32_t id) {
  return opt.stop_on_eos && std::find(opt.eos_ids.begin(), opt.eos_ids.end(), id) != opt.eos_ids.end();
}

struct PromptLine {
  std::string prompt;
  int32_t adapter;
};

// --prompts: {"prompt": TEXT, "adapter": NAME} per line (the adapter as a data line's).
std::vector<PromptLine> read_prompts(const std::string& path, const std::vector<std::string>& names) {
  QP_CHECK(qpeft::file_exists(path), "{}: no such prompts file", path);
  std::vector<PromptLine> out;
  std::istringstream in(qpeft::read_text_file(path));
  std::string line;
  for (int64_t no = 1; std::getline(in, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, no);
    const nlohmann::json j = qpeft::parse_json(line, where);
    QP_CHECK(j.is_object(), "{}: expected one JSON object {{\"prompt\": ..., \"adapter\": ...}}", where);
    QP_CHECK(j.contains("prompt") && j["prompt"].is_string(), "{}: missing \"prompt\" (a string)", where);
    const bool has = j.contains("adapter");
    QP_CHECK(!has || j["adapter"].is_string(), "{}: \"adapter\" must be a string (an adapter name, or {})", where,
             qpeft::kBaseAdapterName);
    out.push_back({j["prompt"].get<std::string>(),
                   qpeft::resolve_adapter_name(has ? &j["adapter"].get_ref<const std::string&>() : nullptr, names,
                                               where)});
  }
  QP_CHECK(!out.empty(), "{}: no prompts", path);
  return out;
}

void run_generate(const GenerateArgs& a) {
  qpeft::set_num_threads(a.threads);
  qpeft::cli::apply_compute_dtype(a.compute_dtype);
  qpeft::cli::apply_ggml_activations(a.ggml_activations);
  QP_CHECK(a.has_prompt != !a.prompts.empty(), "{}",
           a.has_prompt ? "--prompt and --prompts exclude each other; give one"
                        : "give --prompt TEXT, or --prompts FILE of {\"prompt\", \"adapter\"} lines");
  QP_CHECK(!a.has_prompt_adapter || a.has_prompt,
           "--prompt-adapter goes with --prompt; with --prompts each line names its \"adapter\"");
  QP_CHECK(qpeft::has_tokenizer(a.model),
           "{}: no tokenizer.json or tokenizer.model; generate needs the model's tokenizer (copy it from the "
           "original model directory)",
           a.model);
  // Asked for explicitly, --max-new-tokens must fit the context; the default stops at it.
  const int64_t context = qpeft::ModelConfig::load(a.model).max_position_embeddings;
  QP_CHECK(!a.has_max_new_tokens || a.max_new_tokens < context,
           "--max-new-tokens {} does not fit the model's context of {} tokens (max_position_embeddings in {}); ask for "
           "fewer",
           a.max_new_tokens, context, a.model);
  qpeft::Tokenizer tok = qpeft::Tokenizer::load(a.model);
  std::vector<std::string> names;
  auto model = qpeft::cli::load_model_with_adapters_for_command(a.model, a.adapters, a.base_quant, &names);

  qpeft::GenerateOptions opt;
  opt.max_new_tokens = a.max_new_tokens;
  opt.temperature = a.temperature;
  opt.top_k = a.top_k;
  opt.top_p = a.top_p;
  opt.seed = a.seed;
  opt.stop_on_eos = !a.ignore_eos;
  opt.eos_ids = qpeft::eos_token_ids(model->config(), a.model, &tok);
  auto emit = [](const std::string& s) {
    if (s.empty()) return;
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  };

  if (!a.prompts.empty()) {
    // One batch for every prompt, each with its adapter; one JSON line per prompt, in order.
    const std::vector<PromptLine> lines = read_prompts(a.prompts, names);
    std::vector<std::vector<int32_t>> ids;
    std::vector<int32_t> adapters;
    for (size_t i = 0; i < lines.size(); ++i) {
      ids.push_back(encode_prompt(tok, lines[i].prompt, a.chat));
      QP_CHECK(!ids.back().empty(), "{}:{}: the prompt is empty and the tokenizer adds no BOS; give some text",
               a.prompts, i + 1);
      adapters.push_back(lines[i].adapter);
    }
    std::vector<qpeft::GenerateResult> rs = qpeft::generate_batch(*model, ids, adapters, opt);
    int64_t prompt_tokens = 0, generated = 0;
    double decode = 0;
    for (size_t i = 0; i < rs.size(); ++i) {
      qpeft::TextStreamer streamer(tok);
      std::string text;
      for (int32_t id : rs[i].tokens)
        if (!is_eos(opt, id)) text += streamer.push(id);
      text += streamer.finish();
      nlohmann::ordered_json j = {{"prompt", lines[i].prompt},
                                  {"adapter", qpeft::cli::adapter_name(names, lines[i].adapter)},
                                  {"completion", text}};
      emit(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
      prompt_tokens += rs[i].prompt_tokens;
      generated += int64_t(rs[i].tokens.size());
      decode = std::max(decode, rs[i].decode_seconds);
    }
    const double prefill = rs.empty() ? 0.0 : rs[0].prefill_seconds;
    std::fprintf(stderr, "%zu prompts, %lld prompt tokens in %.3f s; generated %lld tokens in %.3f s, %.1f tok/s\n",
                 rs.size(), (long long)prompt_tokens, prefill, (long long)generated, decode,
                 decode > 0 ? double(generated - int64_t(rs.size())) / decode : 0.0);
    return;
  }

  std::vector<int32_t> ids = encode_prompt(tok, a.prompt, a.chat);
  QP_CHECK(!ids.empty(), "--prompt: the prompt is empty and the tokenizer adds no BOS; give some text");
  // The prompt's adapter: --prompt-adapter, else the only one (or none when none is loaded).
  int32_t adapter = qpeft::kBaseAdapter;
  if (a.has_prompt_adapter) {
    adapter = qpeft::resolve_adapter_name(&a.prompt_adapter, names, "--prompt-adapter");
  } else {
    QP_CHECK(names.size() <= 1, "--prompt: {} adapters are loaded; choose the prompt's with --prompt-adapter NAME (one "
             "of {})", names.size(), qpeft::adapter_names_list(names));
    if (names.size() == 1) adapter = 0;
  }
  qpeft::SequenceAdaptersScope scope(*model, {adapter});

  qpeft::TextStreamer streamer(tok);
  qpeft::GenerateResult r = qpeft::generate(*model, ids, opt, [&](int32_t id) {
    if (!is_eos(opt, id)) emit(streamer.push(id));
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
  qpeft::cli::add_adapters_option(cmd, &a->adapters);
  qpeft::cli::add_base_quant_option(cmd, &a->base_quant);
  auto* prompt = cmd->add_option("--prompt", a->prompt, "Prompt text");
  auto* prompt_adapter = cmd->add_option("--prompt-adapter", a->prompt_adapter,
                                         "The --prompt's adapter by name (default: the only one; __base__: none)");
  cmd->add_option("--prompts", a->prompts,
                  "JSON lines {\"prompt\": ..., \"adapter\": NAME}, generated together in one batch; prints one "
                  "{\"prompt\", \"adapter\", \"completion\"} line each");
  cmd->add_option("--max-new-tokens", a->max_new_tokens, "Most tokens to generate")->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  cmd->add_option("--temperature", a->temperature, "Sampling temperature (0 = greedy)")->check(qpeft::cli::finite_in(0.0, 100.0));
  cmd->add_option("--top-k", a->top_k, "Sample among the k most likely tokens (0 = all)")->check(qpeft::cli::count_at_least(0));
  cmd->add_option("--top-p", a->top_p, "Nucleus sampling: the smallest set with this probability (1 = all)")
      ->check(qpeft::cli::finite_in(1e-9, 1.0));
  cmd->add_option("--seed", a->seed, "Sampling seed (with --prompts, every prompt samples as it would alone)");
  cmd->add_flag("--chat", a->chat, "Wrap the prompt as a user message in the tokenizer's chat template");
  cmd->add_flag("--ignore-eos", a->ignore_eos, "Keep going past EOS until --max-new-tokens");
  cmd->add_option("--threads", a->threads, "Threads (0 = all cores)")->check(qpeft::cli::kThreadsRange);
  qpeft::cli::add_compute_dtype_option(cmd, &a->compute_dtype);
  qpeft::cli::add_ggml_activations_option(cmd, &a->ggml_activations);
  cmd->callback([a, prompt, prompt_adapter, cmd] {
    a->has_prompt = prompt->count() > 0;
    a->has_max_new_tokens = cmd->count("--max-new-tokens") > 0;
    a->has_prompt_adapter = prompt_adapter->count() > 0;
    run_generate(*a);
  });
}

}  // namespace

QPEFT_COMMAND(generate, setup_generate);
