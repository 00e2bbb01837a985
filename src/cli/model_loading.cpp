// Loading a base model with an adapter the way it was trained (--base-quant), shared by eval and generate.
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "models/llama.h"
#include "ops/linear.h"
#include "peft/adapter_io.h"
#include "peft/mixed_adapter.h"
#include "quant/ggml_weight.h"

namespace qpeft::cli {

void add_base_quant_option(CLI::App* cmd, std::string* value) {
  cmd->add_option("--base-quant", *value,
                  "Base weights with an adapter: auto (quantized on load as the adapter was trained, e.g. by "
                  "--method qlora), none (as stored), or nf4, fp4, nf2, nf3, uniform2..4, int8 (blockwise absmax)")
      ->check(CLI::IsMember(frozen_quant_formats({"auto", "none"})));
}

void add_compute_dtype_option(CLI::App* cmd, std::string* value) {
  cmd->add_option("--compute-dtype", *value,
                  "Products with the frozen base weights: f32, or bf16 (inputs and weights rounded to bf16, f32 "
                  "accumulation; needs AVX512_BF16, else f32 with a note). Adapters, norms and the loss stay f32")
      ->check(CLI::IsMember({"f32", "bf16"}));
}

void apply_compute_dtype(const std::string& value) {
  std::string note;
  set_linear_compute_dtype(value == "bf16" ? DType::BF16 : DType::F32, &note);
  if (!note.empty()) std::fprintf(stderr, "qpeft: %s\n", note.c_str());
}

void add_ggml_activations_option(CLI::App* cmd, std::string* value) {
  cmd->add_option("--ggml-activations", *value,
                  "Products with llama.cpp-quantized weights (a GGUF's q8_0, q4_0, q4_K, q5_K, q6_K): q8 rounds the "
                  "input to 8-bit blocks and multiplies in integers, as llama.cpp does (its numbers and speed); f32 "
                  "multiplies the decoded weights in f32, as training does")
      ->check(CLI::IsMember({"q8", "f32"}));
}

void apply_ggml_activations(const std::string& value) {
  set_ggml_activations(value == "q8" ? GgmlActivations::Q8 : GgmlActivations::F32);
}

std::unique_ptr<LlamaModel> load_model_for_command(const std::string& model, const std::string& adapter,
                                                   const std::string& base_quant) {
  std::string note;
  auto m = load_model_with_adapter(model, adapter, base_quant, &note);
  if (!note.empty()) std::fprintf(stderr, "qpeft: %s\n", note.c_str());
  return m;
}

void add_adapters_option(CLI::App* cmd, std::vector<std::string>* values) {
  cmd->add_option("--adapter", *values,
                  "PEFT adapter directory (LoRA or IA3); repeat as NAME=DIR to load several on one base, chosen per "
                  "example by a data field \"adapter\": NAME (\"__base__\": none). A bare DIR is named \"default\"")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

std::unique_ptr<LlamaModel> load_model_with_adapters_for_command(const std::string& model,
                                                                 const std::vector<std::string>& adapter_args,
                                                                 const std::string& base_quant,
                                                                 std::vector<std::string>* names) {
  names->clear();
  if (adapter_args.empty()) return load_model_for_command(model, "", base_quant);
  std::vector<NamedAdapterDir> dirs;
  for (const auto& arg : adapter_args) {
    dirs.push_back(parse_adapter_arg(arg));
    names->push_back(dirs.back().name);
  }
  std::string note;
  auto m = load_model_with_adapters(model, dirs, base_quant, &note);
  if (!note.empty()) std::fprintf(stderr, "qpeft: %s\n", note.c_str());
  return m;
}

std::string adapter_name(const std::vector<std::string>& names, int32_t index) {
  return index == kBaseAdapter ? std::string(kBaseAdapterName) : names.at(size_t(index));
}

}  // namespace qpeft::cli
