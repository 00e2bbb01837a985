// (IA)³ with Hugging Face PEFT's semantics (Liu et al., 2022; SPEC §5): a learned vector `ia3_l`
// rescales the output of a targeted layer, y = (x W0ᵀ + b) ⊙ l with l: [out, 1], or, for a
// feed-forward module, its input, y = (x ⊙ l) W0ᵀ + b with l: [1, in]. Initialised to 1, so
// training starts exactly at the base model. Merging scales W's rows (and the bias) or columns.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/llama.h"
#include "peft/adapter.h"

namespace qpeft {

struct Ia3Config : AdapterBaseInfo {
  // PEFT's defaults for Llama, Mistral and Qwen2 (TRANSFORMERS_MODELS_TO_IA3_*_MAPPING): keys,
  // values and the MLP's inner activation through down_proj's input.
  std::vector<std::string> target_modules = {"k_proj", "v_proj", "down_proj"};
  std::vector<std::string> feedforward_modules = {"down_proj"};
  // A PEFT config may give either as a string instead: a regex matched with re.fullmatch on
  // the module name. Set here only when read from such a file; it replaces the list.
  std::string target_regex, feedforward_regex;
  bool init_ia3_weights = true;

  // qpeft's own targets: module kinds, "all-linear" expanded; feedforward_modules checked to be
  // a subset of them (PEFT's IA3Config check).
  std::vector<std::string> resolved_targets() const;
  std::vector<std::string> resolved_feedforward() const;
  // PEFT's rule: a list entry matches when the module name ends with it; a string fully matches.
  bool is_feedforward(const std::string& module_name) const;
};

class Ia3Adapter final : public LinearAdapter {
 public:
  // l initialised to 1: [1, in] for a feed-forward module, [out, 1] otherwise.
  Ia3Adapter(const Linear& layer, bool feedforward);
  Var adapt_input(Graph& g, const Var& x) override;
  bool adapts_input() const override { return feedforward; }
  Var adapt_output(Graph& g, const Var& x, const Var& y) override;
  void visit_params(const std::function<void(const std::string&, Var&)>& fn) override;
  // W[o, :] *= l[o] (output scaling) or W[:, i] *= l[i] (feed-forward); the bias with the output.
  void merge_into(Tensor& weight) const override;
  void merge_bias_into(Tensor& bias) const override;

  Var l;
  bool feedforward;
};

// Attaches an (IA)³ vector (all ones) to every targeted linear layer; returns how many.
int64_t inject_ia3(LlamaModel& model, const Ia3Config& cfg);

}  // namespace qpeft
