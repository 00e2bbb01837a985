#include "models/config.h"

#include "io/gguf.h"
#include "text/gguf_tokenizer.h"
#include "models/gguf_model.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/limits.h"
#include "io/json_reader.h"

namespace qpeft {

using nlohmann::json;

namespace {

QuantizationConfig parse_quantization_config(const json& raw, const std::string& src) {
  const JsonFields q(raw, src + ": quantization_config");
  QuantizationConfig c;
  c.json = raw.dump();
  c.quant_method = q.string_or("quant_method", "");
  QP_CHECK(c.quant_method == "bitsandbytes" || c.quant_method == "qpeft",
           "{}: quant_method '{}' is not supported; qpeft reads bitsandbytes 4-bit checkpoints (NF4/FP4) "
           "- dequantize the model with its own tools first",
           q.where(), c.quant_method);
  c.load_in_4bit = q.boolean_or("load_in_4bit", q.boolean_or("_load_in_4bit", false));
  c.load_in_8bit = q.boolean_or("load_in_8bit", q.boolean_or("_load_in_8bit", false));
  QP_CHECK(!c.load_in_8bit,
           "{}: load_in_8bit checkpoints (LLM.int8) are not supported; qpeft reads bitsandbytes 4-bit "
           "(load_in_4bit) checkpoints",
           q.where());
  c.quant_type = q.string_or("bnb_4bit_quant_type", "fp4");  // transformers' default
  c.double_quant = q.boolean_or("bnb_4bit_use_double_quant", false);
  c.compute_dtype = q.string_or("bnb_4bit_compute_dtype", "float32");
  c.skip_modules = q.strings_or_empty("llm_int8_skip_modules", /*one_string_ok=*/false);
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
  if (is_gguf_path(path)) return gguf_model_config(*GgufFile::open(path));
  std::string file = dir_exists(path) ? path + "/config.json" : path;
  QP_CHECK(file_exists(file), "{}: no config.json; expected a Hugging Face model directory", path);
  return parse(read_text_file(file), file);
}

ModelConfig ModelConfig::parse(const std::string& text, const std::string& src) {
  const json j = parse_json(text, src);
  const JsonFields f(j, src);
  ModelConfig c;
  c.source = src;
  c.model_type = f.string_or("model_type", "");
  QP_CHECK(c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2",
           "{}: model_type '{}' is not supported; qpeft supports llama, mistral and qwen2 decoder models", src,
           c.model_type);
  const std::vector<std::string> archs = f.strings_or_empty("architectures", /*one_string_ok=*/false);
  if (!archs.empty())
    c.architecture = archs[0];
  else
    c.architecture = c.model_type == "qwen2" ? "Qwen2ForCausalLM"
                     : c.model_type == "mistral" ? "MistralForCausalLM"
                                                 : "LlamaForCausalLM";
  QP_CHECK(c.architecture.find("ForCausalLM") != std::string::npos,
           "{}: architecture '{}' is not a causal language model", src, c.architecture);
  // Dimensions within core/limits.h, so that no product below overflows and nothing huge is
  // allocated before the weights are read.
  c.hidden_size = f.integer("hidden_size", 1, limits::kMaxHiddenSize);
  c.intermediate_size = f.integer("intermediate_size", 1, limits::kMaxIntermediateSize);
  c.num_layers = f.integer("num_hidden_layers", 1, limits::kMaxLayers);
  c.num_heads = f.integer("num_attention_heads", 1, limits::kMaxHeads);
  c.num_kv_heads = f.integer_or("num_key_value_heads", c.num_heads, 1, c.num_heads);
  c.head_dim = f.integer_or("head_dim", c.hidden_size / c.num_heads, 1, limits::kMaxHiddenSize);
  c.vocab_size = f.integer("vocab_size", 1, limits::kMaxVocabSize);
  c.max_position_embeddings = f.integer_or("max_position_embeddings", 2048, 1, limits::kMaxPositions);
  c.rms_norm_eps = f.number_or("rms_norm_eps", 1e-6, 0, 1, /*positive=*/true);
  c.tie_word_embeddings = f.boolean_or("tie_word_embeddings", false);
  const bool attention_bias = f.boolean_or("attention_bias", false);
  c.qkv_bias = c.model_type == "qwen2" || attention_bias;
  c.o_bias = c.model_type != "qwen2" && attention_bias;
  c.mlp_bias = f.boolean_or("mlp_bias", false);
  if (c.model_type == "mistral" || c.model_type == "qwen2") {
    const bool use_sw = f.boolean_or("use_sliding_window", c.model_type == "mistral");
    c.sliding_window = use_sw ? f.integer_or("sliding_window", 0, 0, limits::kMaxPositions) : 0;
  }
  const std::string act = f.string_or("hidden_act", "silu");
  QP_CHECK(act == "silu", "{}: hidden_act '{}' is not supported (only silu)", src, act);
  QP_CHECK(c.num_heads % c.num_kv_heads == 0, "{}: num_attention_heads {} is not a multiple of num_key_value_heads {}",
           src, c.num_heads, c.num_kv_heads);
  QP_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, "{}: head_dim {} must be even and positive", src, c.head_dim);
  QP_CHECK(c.num_heads * c.head_dim <= limits::kMaxHiddenSize * 8,
           "{}: num_attention_heads {} x head_dim {} is beyond the limit of {} (limits::kMaxHiddenSize x 8)", src,
           c.num_heads, c.head_dim, limits::kMaxHiddenSize * 8);

  c.rope.head_dim = c.head_dim;
  c.rope.theta = f.number_or("rope_theta", 10000.0, 0, 1e12, /*positive=*/true);
  if (const json* rsj = f.find("rope_scaling"); rsj && rsj->is_object()) {
    const JsonFields rs(*rsj, src + ": rope_scaling");
    std::string type = rs.string_or("rope_type", rs.string_or("type", "default"));
    QP_CHECK(type == "llama3" || type == "linear" || type == "default",
             "{}: rope_scaling type '{}' is not supported (llama3, linear)", src, type);
    c.rope.scaling_type = type;
    c.rope.factor = rs.number_or("factor", 1.0, 0, 1e6, /*positive=*/true);
    c.rope.low_freq_factor = rs.number_or("low_freq_factor", 1.0, 0, 1e6, /*positive=*/true);
    c.rope.high_freq_factor = rs.number_or("high_freq_factor", 4.0, 0, 1e6, /*positive=*/true);
    QP_CHECK(type != "llama3" || c.rope.high_freq_factor > c.rope.low_freq_factor,
             "{}: rope_scaling high_freq_factor {:g} must be above low_freq_factor {:g}", src, c.rope.high_freq_factor,
             c.rope.low_freq_factor);
    c.rope.original_max_position =
        rs.integer_or("original_max_position_embeddings", 8192, 1, limits::kMaxPositions);
  }
  // Special token ids: within the vocabulary (or -1: none).
  const int64_t last_id = c.vocab_size - 1;
  c.bos_token_id = int32_t(f.integer_or("bos_token_id", -1, -1, last_id));
  if (const json* e = f.find("eos_token_id")) {
    int64_t id = 0;
    if (e->is_array()) {
      for (size_t i = 0; i < e->size(); ++i) {
        if (!json_integer_in((*e)[i], 0, last_id, &id))
          fail("{}: key 'eos_token_id'[{}] must be a token id in [0, {}] (found {})", src, i, last_id,
               describe_json((*e)[i]));
        c.eos_token_ids.push_back(int32_t(id));
      }
    } else {
      c.eos_token_ids.push_back(int32_t(f.integer("eos_token_id", 0, last_id)));
    }
  }
  c.pad_token_id = int32_t(f.integer_or("pad_token_id", -1, -1, last_id));
  c.torch_dtype = f.string_or("torch_dtype", "float32");
  if (const json* q = f.find("quantization_config")) c.quantization = parse_quantization_config(*q, src);
  QP_CHECK(c.num_parameters() <= limits::kMaxParameters,
           "{}: the model would have {:.3g} parameters, beyond the limit of {:.3g} (limits::kMaxParameters)", src,
           double(c.num_parameters()), double(limits::kMaxParameters));
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
  QP_CHECK(rope.scaling_type != "factors",
           "{}: RoPE frequency factors from a GGUF file (rope_freqs) have no config.json form; write this model as GGUF "
           "(qpeft export) instead",
           source);
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
