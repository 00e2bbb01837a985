// What every PEFT method shares: the facts an adapter records about its base, PEFT's tensor
// keys, the trainable tensors, and merging into the base weights. The methods themselves
// (lora.h, ia3.h) are LinearAdapters; the files they are saved in are adapter_io.h's.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "models/checkpoint.h"
#include "models/llama.h"

namespace qpeft {

// Fields of every adapter config: where the base came from and how it was quantized on load
// while the adapter trained (QLoRA, QIA3), so that eval and generate can load it the same way.
// The quantization is kept in adapter_model.safetensors' metadata under qpeft.* keys, which
// PEFT ignores; disabled for adapters of unquantized bases or other tools.
struct AdapterBaseInfo {
  std::string base_model_name_or_path;
  QuantizeOptions base_quantization;
};

// The linear layer kinds of a Llama block, in model order; "all-linear" expands to them.
const std::vector<std::string>& linear_kinds();
// `targets` (module kinds or "all-linear") checked against the model's kinds and expanded;
// `what` names the method in errors ("LoRA", "(IA)³").
std::vector<std::string> resolve_target_kinds(const std::vector<std::string>& targets, const char* what);

// PEFT key of a parameter: "base_model.model.<module>.<suffix>".
std::string peft_key(const std::string& module_name, const std::string& suffix);
// Every trainable adapter parameter with its PEFT key, in model order.
std::vector<std::pair<std::string, Var>> adapter_params(LlamaModel& model);

// The first layer with an adapter whose frozen weight is not quantized, or "" (a LoftQ init
// belongs on the quantized base `qpeft loftq` wrote).
std::string first_dense_adapted_layer(LlamaModel& model);

// The layer's weight with its adapter folded in (LinearAdapter::merge_into), f32 [out, in];
// the stored weight decoded when it has no adapter.
Tensor merged_weight(const Linear& layer);
// The same for its bias (f32 [out]); the layer must have one.
Tensor merged_bias(const Linear& layer);
// Any checkpoint slot's values with adapters folded in, f32: matrices (merged_weight, or the
// stored weight decoded) and vectors (merged_bias, or the stored norm or bias). What merge and
// export write.
Tensor merged_slot_matrix(const WeightSlot& slot);
Tensor merged_slot_vector(const WeightSlot& slot);

}  // namespace qpeft
