#include "models/config.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"

namespace qpeft {

using nlohmann::json;

namespace {

template <class T>
T get_or(const json& j, const char* key, T def, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    fail("{}: key '{}' has the wrong type ({})", src, key, it->dump());
  }
}

int64_t require_int(const json& j, const char* key, const std::string& src) {
  auto it = j.find(key);
  QP_CHECK(it != j.end() && it->is_number_integer() && it->get<int64_t>() > 0,
           "{}: key '{}' must be a positive integer (found {})", src, key, it == j.end() ? "nothing" : it->dump());
  return it->get<int64_t>();
}

QuantizationConfig parse_quantization_config(const json& q, const std::string& src) {
  const std::string where = src + ": quantization_config";
  QP_CHECK(q.is_object(), "{} must be a JSON object (found {})", where, q.dump());
  QuantizationConfig c;
  c.json = q.dump();
  c.quant_method = get_or<std::string>(q, "quant_method", "", where);
  QP_CHECK(c.quant_method == "bitsandbytes" || c.quant_method == "qpeft",
           "{}: quant_method '{}' is not supported; qpeft reads bitsandbytes 4-bit checkpoints (NF4/FP4) "
           "- dequantize the model with its own tools first",
           where, c.quant_method);
  c.load_in_4bit = get_or<bool>(q, "load_in_4bit", get_or<bool>(q, "_load_in_4bit", false, where), where);
  c.load_in_8bit = get_or<bool>(q, "load_in_8bit", get_or<bool>(q, "_load_in_8bit", false, where), where);
  QP_CHECK(!c.load_in_8bit,
           "{}: load_in_8bit checkpoints (LLM.int8) are not supported; qpeft reads bitsandbytes 4-bit "
           "(load_in_4bit) checkpoints",
           where);
  c.quant_type = get_or<std::string>(q, "bnb_4bit_quant_type", "fp4", where);  // transformers' default
  c.double_quant = get_or<bool>(q, "bnb_4bit_use_double_quant", false, where);
  c.compute_dtype = get_or<std::string>(q, "bnb_4bit_compute_dtype", "float32", where);
  if (auto it = q.find("llm_int8_skip_modules"); it != q.end() && !it->is_null()) {
    QP_CHECK(it->is_array(), "{}: llm_int8_skip_modules must be a list of module names or null", where);
    for (const auto& m : *it) {
      QP_CHECK(m.is_string(), "{}: llm_int8_skip_modules must hold strings (found {})", where, m.dump());
      c.skip_modules.push_back(m.get<std::string>());
    }
  }
  return c;
}

json quantization_config_json(const QuantizationConfig& c) {
  json j = c.json.empty() ? json::object() : json::parse(c.json);
  j["quant_method"] = c.quant_method;
  j["_load_in_8bit"] = c.load_in_8bit;
  j["_load_in_4bit"] = c.load_in_4bit;
  if (!j.contains("llm_int8_threshold")) j["llm_int8_threshold"] = 6.0;
  j["llm_int8_skip_modules"] = c.skip_modules.empty() ? json(nullptr) : json(c.skip_modules);
  if (!j.contains("llm_int8_enable_fp32_cpu_offload")) j["llm_int8_enable_fp32_cpu_offload"] = false;
  if (!j.contains("llm_int8_has_fp16_weight")) j["llm_int8_has_fp16_weight"] = false;
  j["bnb_4bit_quant_type"] = c.quant_type;
  j["bnb_4bit_use_double_quant"] = c.double_quant;
  j["bnb_4bit_compute_dtype"] = c.compute_dtype;
  if (!j.contains("bnb_4bit_quant_storage")) j["bnb_4bit_quant_storage"] = "uint8";
  j["load_in_4bit"] = c.load_in_4bit;
  j["load_in_8bit"] = c.load_in_8bit;
  return j;
}

}  // namespace

QuantizationConfig QuantizationConfig::bnb_4bit(const std::string& quant_type, bool double_quant,
                                                const std::string& compute_dtype) {
  QuantizationConfig c;
  c.quant_method = quant_type == "nf4" || quant_type == "fp4" ? "bitsandbytes" : "qpeft";
  c.quant_type = quant_type;
  c.double_quant = double_quant;
  c.load_in_4bit = true;
  c.compute_dtype = compute_dtype;
  return c;
}

ModelConfig ModelConfig::load(const std::string& path) {
  std::string file = dir_exists(path) ? path + "/config.json" : path;
  QP_CHECK(file_exists(file), "{}: no config.json; expected a Hugging Face model directory", path);
  return parse(read_text_file(file), file);
}

ModelConfig ModelConfig::parse(const std::string& text, const std::string& src) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    fail("{}: invalid JSON: {}", src, e.what());
  }
  QP_CHECK(j.is_object(), "{}: expected a JSON object", src);
  ModelConfig c;
  c.source = src;
  c.model_type = get_or<std::string>(j, "model_type", "", src);
  QP_CHECK(c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2",
           "{}: model_type '{}' is not supported; qpeft supports llama, mistral and qwen2 decoder models", src,
           c.model_type);
  if (j.contains("architectures") && j["architectures"].is_array() && !j["architectures"].empty())
    c.architecture = j["architectures"][0].get<std::string>();
  else
    c.architecture = c.model_type == "qwen2" ? "Qwen2ForCausalLM"
                     : c.model_type == "mistral" ? "MistralForCausalLM"
                                                 : "LlamaForCausalLM";
  QP_CHECK(c.architecture.find("ForCausalLM") != std::string::npos,
           "{}: architecture '{}' is not a causal language model", src, c.architecture);
  c.hidden_size = require_int(j, "hidden_size", src);
  c.intermediate_size = require_int(j, "intermediate_size", src);
  c.num_layers = require_int(j, "num_hidden_layers", src);
  c.num_heads = require_int(j, "num_attention_heads", src);
  c.num_kv_heads = get_or<int64_t>(j, "num_key_value_heads", c.num_heads, src);
  c.head_dim = get_or<int64_t>(j, "head_dim", c.hidden_size / c.num_heads, src);
  c.vocab_size = require_int(j, "vocab_size", src);
  c.max_position_embeddings = get_or<int64_t>(j, "max_position_embeddings", 2048, src);
  c.rms_norm_eps = get_or<double>(j, "rms_norm_eps", 1e-6, src);
  c.tie_word_embeddings = get_or<bool>(j, "tie_word_embeddings", false, src);
  const bool attention_bias = get_or<bool>(j, "attention_bias", false, src);
  c.qkv_bias = c.model_type == "qwen2" || attention_bias;
  c.o_bias = c.model_type != "qwen2" && attention_bias;
  c.mlp_bias = get_or<bool>(j, "mlp_bias", false, src);
  if (c.model_type == "mistral" || c.model_type == "qwen2") {
    const bool use_sw = get_or<bool>(j, "use_sliding_window", c.model_type == "mistral", src);
    c.sliding_window = use_sw ? get_or<int64_t>(j, "sliding_window", 0, src) : 0;
  }
  const std::string act = get_or<std::string>(j, "hidden_act", "silu", src);
  QP_CHECK(act == "silu", "{}: hidden_act '{}' is not supported (only silu)", src, act);
  QP_CHECK(c.num_kv_heads > 0 && c.num_heads % c.num_kv_heads == 0,
           "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", src, c.num_heads, c.num_kv_heads);
  QP_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, "{}: head_dim {} must be even", src, c.head_dim);

  c.rope.head_dim = c.head_dim;
  c.rope.theta = get_or<double>(j, "rope_theta", 10000.0, src);
  if (j.contains("rope_scaling") && j["rope_scaling"].is_object()) {
    const json& rs = j["rope_scaling"];
    std::string type = get_or<std::string>(rs, "rope_type", get_or<std::string>(rs, "type", "default", src), src);
    QP_CHECK(type == "llama3" || type == "linear" || type == "default",
             "{}: rope_scaling type '{}' is not supported (llama3, linear)", src, type);
    c.rope.scaling_type = type;
    c.rope.factor = get_or<double>(rs, "factor", 1.0, src);
    c.rope.low_freq_factor = get_or<double>(rs, "low_freq_factor", 1.0, src);
    c.rope.high_freq_factor = get_or<double>(rs, "high_freq_factor", 4.0, src);
    c.rope.original_max_position = get_or<int64_t>(rs, "original_max_position_embeddings", 8192, src);
  }
  c.bos_token_id = get_or<int32_t>(j, "bos_token_id", -1, src);
  if (j.contains("eos_token_id")) {
    const json& e = j["eos_token_id"];
    if (e.is_number_integer()) c.eos_token_ids.push_back(e.get<int32_t>());
    if (e.is_array())
      for (const auto& x : e)
        if (x.is_number_integer()) c.eos_token_ids.push_back(x.get<int32_t>());
  }
  c.pad_token_id = get_or<int32_t>(j, "pad_token_id", -1, src);
  c.torch_dtype = get_or<std::string>(j, "torch_dtype", "float32", src);
  if (auto it = j.find("quantization_config"); it != j.end() && !it->is_null())
    c.quantization = parse_quantization_config(*it, src);
  return c;
}

ModelConfig ModelConfig::preset(const std::string& name) {
  ModelConfig c;
  c.source = "preset " + name;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  c.rms_norm_eps = 1e-5;
  auto shape = [&](int64_t h, int64_t layers, int64_t heads, int64_t kv, int64_t mlp, int64_t vocab) {
    c.hidden_size = h;
    c.num_layers = layers;
    c.num_heads = heads;
    c.num_kv_heads = kv;
    c.intermediate_size = mlp;
    c.vocab_size = vocab;
    c.head_dim = h / heads;
  };
  if (name == "tiny") {
    shape(256, 4, 4, 4, 768, 32000);
  } else if (name == "small") {
    shape(512, 8, 8, 8, 1536, 32000);
  } else if (name == "1b") {  // Llama-3.2-1B
    shape(2048, 16, 32, 8, 8192, 128256);
    c.tie_word_embeddings = true;
    c.max_position_embeddings = 131072;
    c.rope.theta = 500000;
    c.rope.scaling_type = "llama3";
    c.rope.factor = 32;
    c.rope.low_freq_factor = 1;
    c.rope.high_freq_factor = 4;
    c.rope.original_max_position = 8192;
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001};
  } else if (name == "7b") {  // Llama-2-7B
    shape(4096, 32, 32, 32, 11008, 32000);
    c.max_position_embeddings = 4096;
  } else {
    fail("unknown preset '{}' (choose tiny, small, 1b or 7b)", name);
  }
  c.rope.head_dim = c.head_dim;
  return c;
}

std::string ModelConfig::to_json() const {
  json j;
  j["architectures"] = {architecture};
  j["model_type"] = model_type;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_layers;
  j["num_attention_heads"] = num_heads;
  j["num_key_value_heads"] = num_kv_heads;
  j["head_dim"] = head_dim;
  j["vocab_size"] = vocab_size;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope.theta;
  if (rope.scaling_type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    j["rope_scaling"] = {{"rope_type", rope.scaling_type},
                         {"factor", rope.factor},
                         {"low_freq_factor", rope.low_freq_factor},
                         {"high_freq_factor", rope.high_freq_factor},
                         {"original_max_position_embeddings", rope.original_max_position}};
  }
  j["tie_word_embeddings"] = tie_word_embeddings;
  j["hidden_act"] = "silu";
  if (model_type != "qwen2") {
    j["attention_bias"] = qkv_bias;
    j["mlp_bias"] = mlp_bias;
  }
  if (bos_token_id >= 0) j["bos_token_id"] = bos_token_id;
  if (eos_token_ids.size() == 1) j["eos_token_id"] = eos_token_ids[0];
  if (eos_token_ids.size() > 1) j["eos_token_id"] = eos_token_ids;
  if (pad_token_id >= 0) j["pad_token_id"] = pad_token_id;
  j["torch_dtype"] = torch_dtype;
  if (quantization.present()) j["quantization_config"] = quantization_config_json(quantization);
  return j.dump(2) + "\n";
}

int64_t ModelConfig::num_parameters() const {
  const int64_t h = hidden_size, q = num_heads * head_dim, kv = num_kv_heads * head_dim;
  int64_t per_layer = h * q + 2 * h * kv + q * h + 3 * h * intermediate_size + 2 * h;
  if (qkv_bias) per_layer += q + 2 * kv;
  return vocab_size * h * (tie_word_embeddings ? 1 : 2) + num_layers * per_layer + h;
}

}  // namespace qpeft
