// Hugging Face config.json for the Llama family (llama, mistral, qwen2).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/rope.h"

namespace qpeft {

// config.json's "quantization_config" for bitsandbytes 4-bit checkpoints, as transformers'
// BitsAndBytesConfig.to_dict() writes it (every key, in its order):
//   {"quant_method": "bitsandbytes", "_load_in_8bit": false, "_load_in_4bit": true,
//    "llm_int8_threshold": 6.0, "llm_int8_skip_modules": null,
//    "llm_int8_enable_fp32_cpu_offload": false, "llm_int8_has_fp16_weight": false,
//    "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true,
//    "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8",
//    "load_in_4bit": true, "load_in_8bit": false}
// qpeft's own formats (nf2, nf3, uniform*) and mixed formats are written with the same keys but
// quant_method "qpeft", so transformers refuses them by name instead of misreading them.
// Which weights are quantized is decided per tensor (io/bnb_checkpoint.h), not from here.
struct QuantizationConfig {
  std::string quant_method;          // "" = the model is not quantized
  std::string quant_type;            // bnb_4bit_quant_type: "nf4", "fp4" (qpeft: "nf2", ..., "mixed")
  bool double_quant = false;         // bnb_4bit_use_double_quant
  bool load_in_4bit = false, load_in_8bit = false;
  std::string compute_dtype = "float32";          // bnb_4bit_compute_dtype
  std::vector<std::string> skip_modules;          // llm_int8_skip_modules (null when empty)
  std::string json;  // the whole object as read (unknown keys round-trip); "" when built here

  bool present() const { return !quant_method.empty(); }
  // What transformers writes for load_in_4bit with these settings (see above).
  static QuantizationConfig bnb_4bit(const std::string& quant_type, bool double_quant,
                                     const std::string& compute_dtype = "bfloat16");
};

struct ModelConfig {
  std::string model_type = "llama";             // llama | mistral | qwen2
  std::string architecture = "LlamaForCausalLM";
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  RopeConfig rope;                 // head_dim, theta and scaling
  bool tie_word_embeddings = false;
  bool qkv_bias = false;           // qwen2, or llama's attention_bias
  bool o_bias = false;             // llama's attention_bias
  bool mlp_bias = false;           // llama's mlp_bias
  int64_t sliding_window = 0;      // mistral; 0 = none
  int32_t bos_token_id = -1;
  std::vector<int32_t> eos_token_ids;
  int32_t pad_token_id = -1;
  std::string torch_dtype = "float32";
  QuantizationConfig quantization;  // "quantization_config"; absent for dense checkpoints
  std::string source;              // where it came from, for error messages

  // Reads and validates DIR/config.json (or a config.json path).
  static ModelConfig load(const std::string& path);
  static ModelConfig parse(const std::string& json_text, const std::string& source);
  // Named shapes for init-model: tiny, small, 1b (Llama-3.2-1B), 7b (Llama-2-7B).
  static ModelConfig preset(const std::string& name);
  std::string to_json() const;  // Hugging Face layout
  int64_t num_parameters() const;
};

}  // namespace qpeft
