// Hugging Face config.json for the Llama family (llama, mistral, qwen2).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/rope.h"

namespace qpeft {

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
