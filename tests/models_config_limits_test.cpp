// config.json from strangers (issue 12): every key is checked for type and range through the one
// checked reader, dimensions stay within core/limits.h before anything is allocated, and
// generation never runs past the context.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/config.h"
#include "models/generate.h"
#include "small_config.h"
#include "test_util.h"

using namespace qpeft;
using qpeft::testing::error_of;

namespace {

nlohmann::json good_config() {
  return nlohmann::json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 768,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 8192,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "bos_token_id": 0, "eos_token_id": 1})");
}

// The error parsing `j` (with `key` set to the JSON text `value`) gives.
std::string error_with(const char* key, const std::string& value) {
  std::string text = good_config().dump();
  nlohmann::json j = good_config();
  j.erase(key);
  text = j.dump();
  text.insert(1, "\"" + std::string(key) + "\": " + value + ", ");
  return error_of([&] { ModelConfig::parse(text, "m/config.json"); });
}

void expect_contains(const std::string& msg, const std::string& part) {
  EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

}  // namespace

TEST(ConfigLimits, GoodConfigParses) {
  ModelConfig c = ModelConfig::parse(good_config().dump(), "m/config.json");
  EXPECT_EQ(c.hidden_size, 256);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{1});
}

TEST(ConfigLimits, WrongTypesAndRangesNameTheKey) {
  expect_contains(error_with("architectures", "[7]"), "m/config.json: key 'architectures'[0] must be a string (found the integer 7)");
  expect_contains(error_with("hidden_size", "1e9"), "key 'hidden_size' must be an integer in [1, 131072] (found the number 1e+09)");
  expect_contains(error_with("hidden_size", "1000000000"), "key 'hidden_size' must be an integer in [1, 131072]");
  expect_contains(error_with("hidden_size", "1e400"), "m/config.json: not valid JSON (number overflow parsing '1e400')");
  expect_contains(error_with("num_hidden_layers", "1000000000"), "key 'num_hidden_layers' must be an integer in [1, 4096]");
  expect_contains(error_with("num_hidden_layers", "18446744073709551615"), "num_hidden_layers");
  expect_contains(error_with("vocab_size", "-3"), "key 'vocab_size' must be an integer in [1, 4194304]");
  expect_contains(error_with("max_position_embeddings", "-5"), "key 'max_position_embeddings' must be an integer in [1, 16777216] (found the integer -5)");
  expect_contains(error_with("rms_norm_eps", "-1"), "key 'rms_norm_eps' must be a number in (0, 1]");
  expect_contains(error_with("rms_norm_eps", "0"), "key 'rms_norm_eps' must be a number in (0, 1]");
  expect_contains(error_with("rms_norm_eps", "\"small\""), "(found the string \"small\")");
  expect_contains(error_with("bos_token_id", "8192"), "key 'bos_token_id' must be an integer in [-1, 8191] (found the integer 8192)");
  expect_contains(error_with("bos_token_id", "4294967297"), "key 'bos_token_id' must be an integer in [-1, 8191]");
  expect_contains(error_with("eos_token_id", "[1, 99999]"), "key 'eos_token_id'[1] must be a token id in [0, 8191]");
  expect_contains(error_with("num_key_value_heads", "8"), "key 'num_key_value_heads' must be an integer in [1, 4]");
  expect_contains(error_with("tie_word_embeddings", "\"yes\""), "key 'tie_word_embeddings' must be true or false");
  expect_contains(error_with("rope_theta", "1e300"), "key 'rope_theta' must be a number in (0, 1e+12]");
  expect_contains(error_with("quantization_config", "[1]"), "quantization_config: expected a JSON object, found a list of 1 items");
  expect_contains(error_with("quantization_config", R"({"quant_method": "bitsandbytes", "llm_int8_skip_modules": [3]})"),
                  "quantization_config: key 'llm_int8_skip_modules'[0] must be a string");
  // Numbers never print as 309 digits.
  EXPECT_EQ(error_with("rms_norm_eps", "1.7e308").find("00000000000"), std::string::npos);
}

TEST(ConfigLimits, DeepNestingIsAnErrorNotACrash) {
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "[";
  for (int i = 0; i < 100000; ++i) deep += "]";
  expect_contains(error_with("architectures", deep), "m/config.json: the JSON nests deeper than 128 levels");
  expect_contains(error_with("hidden_size", "[[[[[[1]]]]]]"), "key 'hidden_size' must be an integer in [1, 131072] (found a list of 1 items)");
}

TEST(ConfigLimits, ModelSizeIsCheckedBeforeAnyAllocation) {
  nlohmann::json j = good_config();
  j["hidden_size"] = 131072;
  j["intermediate_size"] = 524288;
  j["num_hidden_layers"] = 4096;
  j["num_attention_heads"] = 1024;
  j["num_key_value_heads"] = 1024;
  j["vocab_size"] = 4194304;
  j["bos_token_id"] = 0;
  expect_contains(error_of([&] { ModelConfig::parse(j.dump(), "m/config.json"); }),
                  "beyond the limit of 1e+13 (limits::kMaxParameters)");
}

TEST(ConfigLimits, GenerationStopsAtTheContext) {
  ModelConfig c = qpeft::testing::small_test_config();
  c.max_position_embeddings = 64;
  EXPECT_EQ(new_tokens_within_context(c, 10, 1 << 20), 54);
  EXPECT_EQ(new_tokens_within_context(c, 10, 5), 5);
  expect_contains(error_of([&] { new_tokens_within_context(c, 64, 1); }),
                  "the prompt has 64 tokens, which fills the model's context of 64");
}
