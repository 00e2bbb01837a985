// PEFT adapter directories: adapter_config.json + adapter_model.safetensors, with PEFT's key
// names, readable by Hugging Face PEFT and written atomically. One table of adapter methods
// (adapter_io.cpp) says, per PEFT method, how its config and tensors are written and read;
// everything that handles adapter directories (train, checkpoints, resume, eval, generate,
// merge) goes through it, so a new PEFT method is one new entry.
#pragma once
#include <memory>
#include <string>
#include <variant>

#include "peft/ia3.h"
#include "peft/lora.h"

namespace qpeft {

// The PEFT methods qpeft reads and writes. Alternative i of AdapterConfig is method i's config.
enum class AdapterMethodKind : int { kLora, kIa3, kCount };
using AdapterConfig = std::variant<LoraConfig, Ia3Config>;

inline AdapterMethodKind adapter_kind(const AdapterConfig& c) { return AdapterMethodKind(c.index()); }
const char* adapter_method_name(AdapterMethodKind kind);  // "LoRA", "(IA)³"
const char* adapter_peft_type(AdapterMethodKind kind);    // adapter_config.json's peft_type: "LORA", "IA3"
AdapterBaseInfo& adapter_base_info(AdapterConfig& c);
const AdapterBaseInfo& adapter_base_info(const AdapterConfig& c);

// Writes dir/adapter_config.json and dir/adapter_model.safetensors (f32) as one atomic step.
// adapter_config.json holds only fields of PEFT's config class for the method (LoraConfig,
// IA3Config), so that every PEFT version that knows the method reads it; qpeft's own facts
// (base quantization, LoftQ) go into the safetensors metadata as qpeft.* keys.
void save_adapter(LlamaModel& model, const AdapterConfig& cfg, const std::string& dir);
// Same files into an existing directory (used inside checkpoint directories).
void write_adapter_files(LlamaModel& model, const AdapterConfig& cfg, const std::string& dir);

// Reads a PEFT adapter (ours or one PEFT wrote) of any supported method, told by
// adapter_config.json's peft_type, and attaches it to the model. Every field PEFT may write is
// accepted (null where PEFT allows None); fields that would change the computation in ways
// qpeft does not implement (DoRA, fan_in_fan_out, ...) are refused with a message.
AdapterConfig load_adapter(LlamaModel& model, const std::string& dir);
AdapterConfig read_adapter_config(const std::string& dir);
// The same from the text of an adapter_config.json (`path` names it in errors).
AdapterConfig parse_adapter_config(const std::string& text, const std::string& path);

// The LoRA-only forms of the above (LoftQ, --init-adapter): other methods are refused.
void save_lora_adapter(LlamaModel& model, const LoraConfig& cfg, const std::string& dir);
void write_lora_adapter_files(LlamaModel& model, const LoraConfig& cfg, const std::string& dir);
LoraConfig load_lora_adapter(LlamaModel& model, const std::string& dir);
LoraConfig read_lora_config(const std::string& dir);

// How the base was quantized while the adapter in dir trained (qpeft's QLoRA and QIA3 adapters
// record it); disabled when the adapter says nothing (trained on the stored weights, or by
// another tool).
QuantizeOptions adapter_base_quantization(const std::string& dir);

// Loads the base model for an adapter (eval, generate, merge) and attaches the adapter, of
// whatever method it is. base_quant: "auto" quantizes the base on load as the adapter was
// trained, "none" keeps the stored weights, a format name ("nf4", ...) quantizes to it (block 64,
// double quantization). `note`, when given, receives a line describing a quantization applied
// on load.
std::unique_ptr<LlamaModel> load_model_with_adapter(const std::string& model_dir, const std::string& adapter_dir,
                                                    const std::string& base_quant = "auto",
                                                    std::string* note = nullptr);

// How `base_quant` ("auto", "none" or a format) loads the base for adapters whose recorded base
// quantization is `recorded` (auto: that; disabled for none).
LoadOptions base_load_options(const std::string& base_quant, const QuantizeOptions& recorded);
// "nf4 (block 64, double quantization)", or "the stored weights" when disabled.
std::string describe_base_quantization(const QuantizeOptions& q);
// With --base-quant auto: the method's check that the loaded base is one the adapter fits
// (LoftQ adapters need the base `qpeft loftq` wrote); the adapter must be attached.
void check_adapter_base(LlamaModel& model, const AdapterConfig& cfg, const std::string& adapter_dir,
                        const std::string& model_dir);

// Copies the values of the model's adapter tensors (adapter_params) from an
// adapter_model.safetensors into the model's existing adapters (resume); any method.
void load_adapter_weights_into(LlamaModel& model, const std::string& file);

}  // namespace qpeft
