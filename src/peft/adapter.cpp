#include "peft/adapter.h"

#include "core/error.h"
#include "quant/quantized_weight.h"

namespace qpeft {

const std::vector<std::string>& linear_kinds() {
  static const std::vector<std::string> kinds = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return kinds;
}

std::vector<std::string> resolve_target_kinds(const std::vector<std::string>& targets, const char* what) {
  std::vector<std::string> out;
  for (const auto& t : targets) {
    if (t == "all-linear") return linear_kinds();
    bool known = false;
    for (const auto& k : linear_kinds()) known |= k == t;
    QP_CHECK(known, "{} target module '{}' is not a linear layer of this model (choose from q_proj, k_proj, v_proj, "
             "o_proj, gate_proj, up_proj, down_proj, or all-linear)", what, t);
    out.push_back(t);
  }
  QP_CHECK(!out.empty(), "no {} target modules given", what);
  return out;
}

std::string peft_key(const std::string& module_name, const std::string& suffix) {
  return "base_model.model." + module_name + "." + suffix;
}

std::vector<std::pair<std::string, Var>> adapter_params(LlamaModel& model) {
  std::vector<std::pair<std::string, Var>> out;
  model.visit_linears([&](Linear& l) {
    if (!l.adapter) return;
    l.adapter->visit_params([&](const std::string& suffix, Var& p) { out.emplace_back(peft_key(l.name, suffix), p); });
  });
  return out;
}

Tensor merged_weight(const Linear& layer) {
  Tensor w = decode_to_f32(*layer.weight);
  if (layer.adapter) layer.adapter->merge_into(w);
  return w;
}

Tensor merged_bias(const Linear& layer) {
  QP_CHECK(layer.bias.defined(), "[merge] {} has no bias", layer.name);
  Tensor b = layer.bias.value().clone();
  if (layer.adapter) layer.adapter->merge_bias_into(b);
  return b;
}

Tensor merged_slot_matrix(const WeightSlot& slot) {
  return slot.linear ? merged_weight(*slot.linear) : decode_to_f32(**slot.frozen);
}

Tensor merged_slot_vector(const WeightSlot& slot) {
  // (IA)³ scales the outputs of its layers, biases included.
  return slot.linear ? merged_bias(*slot.linear) : slot.vector->value();
}

std::string first_dense_adapted_layer(LlamaModel& model) {
  std::string dense;
  model.visit_linears([&](Linear& l) {
    if (l.adapter && dense.empty() && !dynamic_cast<const QuantizedWeight*>(l.weight.get())) dense = l.name;
  });
  return dense;
}

}  // namespace qpeft
