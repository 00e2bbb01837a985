// PEFT adapter directories: adapter_config.json + adapter_model.safetensors, with PEFT's key
// names, readable by Hugging Face PEFT and written atomically.
#pragma once
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

// Copies values of matching adapter tensors from dir's adapter_model.safetensors into the
// model's existing adapters (resume).
void load_lora_weights_into(LlamaModel& model, const std::string& file);

}  // namespace qpeft
