// LoRA with Hugging Face PEFT's semantics: y = x W0ᵀ + s · dropout(x) Aᵀ Bᵀ,
// A: [r, in] Kaiming-uniform (a = sqrt(5)) or Gaussian, B: [out, r] zero, s = alpha / r
// (rsLoRA: alpha / sqrt(r)). Per-module rank/alpha through PEFT's rank_pattern/alpha_pattern.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "models/checkpoint.h"
#include "models/llama.h"
#include "peft/adapter.h"

namespace qpeft {

// PEFT's rank_pattern / alpha_pattern: keys tried in order (a JSON object's order, as Python
// reads it); the first KEY whose regex `(.*\.)?(KEY)` matches the whole module name wins.
template <class T>
using ModulePatterns = std::vector<std::pair<std::string, T>>;

// The first key of `patterns` matching module `name`, or nullptr.
template <class T>
const std::pair<std::string, T>* match_module_pattern(const ModulePatterns<T>& patterns, const std::string& name);

struct LoraConfig : AdapterBaseInfo {
  int64_t r = 8;
  double alpha = 16;
  double dropout = 0.0;
  bool use_rslora = false;
  // Module kinds ("q_proj", ...) or "all-linear" (every linear layer but the output head).
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  ModulePatterns<int64_t> rank_pattern;
  ModulePatterns<double> alpha_pattern;
  std::string init = "kaiming";                  // "kaiming" | "gaussian"
  // LoftQ: the adapter was initialised for a base that `qpeft loftq` quantized (for T > 1 not
  // what quantizing the dense weights gives), so it must be used with that stored base. The
  // format spec ("nf2" or a --layer-quant plan) and T, in qpeft.* metadata; empty otherwise.
  std::string loftq_quant;
  int64_t loftq_block_size = 64;
  bool loftq_double_quant = false;
  int64_t loftq_iters = 0;

  // Expands "all-linear" and checks names; `kinds` are the model's linear kinds.
  std::vector<std::string> resolved_targets() const;
  int64_t rank_for(const std::string& module_name) const;
  double alpha_for(const std::string& module_name) const;
  double scaling_for(const std::string& module_name) const;
};

class LoraAdapter final : public LinearAdapter {
 public:
  LoraAdapter(const Linear& layer, int64_t r, double scaling, double dropout);
  Var adapt_output(Graph& g, const Var& x, const Var& y) override;
  std::optional<Var> adapt_output_llama_cpp(Graph& g, const Var& x, const Var& y, int lanes) override;
  void visit_params(const std::function<void(const std::string&, Var&)>& fn) override;
  // W += s · B A
  void merge_into(Tensor& weight) const override;

  Var A, B;  // [r, in], [out, r]
  int64_t r;
  double scaling;
  double dropout;
};

// Attaches a LoRA adapter to every targeted linear layer; A initialised from `seed`
// (per module, independent of the order), B zero. Returns the number of adapted layers.
int64_t inject_lora(LlamaModel& model, const LoraConfig& cfg, uint64_t seed);

}  // namespace qpeft
