// Mixed-adapter batches (SPEC §1: unmerged adapters allow several tasks in one batch; T-Few's
// mixed-task batches, PEFT's inference-time adapter_names). Several adapters, of any methods,
// sit on one shared base; each sequence of a batch names the one it uses
// (LlamaModel::set_sequence_adapters), and the rows of a batch share every pass over the base
// weights, differing only in their adapter terms. Inference only.
//
//   auto model = load_model_with_adapters(base, {{"a", dir_a}, {"b", dir_b}}, "auto");
//   SequenceAdaptersScope scope(*model, {0, 1, kBaseAdapter});  // rows: a, b, the base
//   model->logits(ids, 3, T);
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/llama.h"
#include "peft/adapter_io.h"

namespace qpeft {

// The adapters of one linear layer, one slot per loaded adapter (null where that adapter does
// not adapt this layer), and the row assignment of the forward in progress. The base product
// runs once over all rows; each adapter's own adapt_input / adapt_output runs on its rows only
// (LoRA: y[rows] += s·(x[rows]Aᵀ)Bᵀ; (IA)³: y[rows] ⊙= l, or x[rows] ⊙= l before the shared
// base product). A batch whose rows all use one adapter goes straight to it, so it computes
// exactly what that adapter alone does.
class MixedAdapter final : public LinearAdapter {
 public:
  MixedAdapter(std::string layer, std::shared_ptr<const RowAdapters> routing, std::vector<std::string> names,
               std::vector<std::shared_ptr<LinearAdapter>> adapters);
  Var adapt_input(Graph& g, const Var& x) override;
  bool adapts_input() const override;
  Var adapt_output(Graph& g, const Var& x, const Var& y) override;
  // Every adapter's tensors under PEFT's in-memory names, the adapter's name after the first
  // component ("lora_A.NAME.weight", "ia3_l.NAME").
  void visit_params(const std::function<void(const std::string&, Var&)>& fn) override;
  // Refused: several adapters do not fold into one weight.
  void merge_into(Tensor& weight) const override;

  const std::vector<std::shared_ptr<LinearAdapter>>& adapters() const { return adapters_; }

 private:
  // The token rows of each adapter (index = adapter; base rows in none) for a forward over
  // `rows` rows; *only* = the adapter of every row when they all agree (kBaseAdapter
  // included), else kMixed.
  static constexpr int32_t kMixed = -2;
  std::vector<std::vector<int64_t>> groups(Graph& g, int64_t rows, int32_t* only) const;

  std::string layer_;
  std::shared_ptr<const RowAdapters> routing_;
  std::vector<std::string> names_;
  std::vector<std::shared_ptr<LinearAdapter>> adapters_;
};

struct NamedAdapterDir {
  std::string name, dir;
};

// A --adapter value: "NAME=DIR", or a bare DIR (also any existing directory, '=' or not), which is
// named "default" as in PEFT.
NamedAdapterDir parse_adapter_arg(const std::string& arg);

// Loads the base once for several adapters (of any methods) and attaches them together as
// MixedAdapters, adapter i being index i of the sequence adapters. Names must be distinct and
// not "__base__". base_quant as load_model_with_adapter's: with "auto" the adapters must record
// the same base quantization (an error names the two that differ), which is then applied once.
// `configs`, when given, receives each adapter's config.
std::unique_ptr<LlamaModel> load_model_with_adapters(const std::string& model_dir,
                                                     const std::vector<NamedAdapterDir>& adapters,
                                                     const std::string& base_quant = "auto",
                                                     std::string* note = nullptr,
                                                     std::vector<AdapterConfig>* configs = nullptr);

}  // namespace qpeft
