// PEFT adapter directories: adapter_config.json + adapter_model.safetensors, with PEFT's key
// names, readable by Hugging Face PEFT and written atomically.
#pragma once
#include <memory>
#include <string>

#include "peft/lora.h"

namespace qpeft {

// Writes dir/adapter_config.json and dir/adapter_model.safetensors (f32) as one atomic step.
void save_lora_adapter(LlamaModel& model, const LoraConfig& cfg, const std::string& dir);
// Same files into an existing directory (used inside checkpoint directories).
void write_lora_adapter_files(LlamaModel& model, const LoraConfig& cfg, const std::string& dir);

// Reads a PEFT LoRA adapter (ours or one PEFT wrote) and attaches it to the model.
LoraConfig load_lora_adapter(LlamaModel& model, const std::string& dir);
LoraConfig read_lora_config(const std::string& dir);

// How the base was quantized while the adapter in dir trained (qpeft's QLoRA adapters record
// it); disabled when the adapter says nothing (trained on the stored weights, or by another tool).
QuantizeOptions adapter_base_quantization(const std::string& dir);

// Loads the base model for an adapter (eval, generate) and attaches the adapter. base_quant:
// "auto" quantizes the base on load as the adapter was trained, "none" keeps the stored
// weights, a format name ("nf4", ...) quantizes to it (block 64, double quantization).
// `note`, when given, receives a line describing a quantization applied on load.
std::unique_ptr<LlamaModel> load_model_with_adapter(const std::string& model_dir, const std::string& adapter_dir,
                                                    const std::string& base_quant = "auto",
                                                    std::string* note = nullptr);

// Copies values of matching adapter tensors from dir's adapter_model.safetensors into the
// model's existing adapters (resume).
void load_lora_weights_into(LlamaModel& model, const std::string& file);

}  // namespace qpeft
