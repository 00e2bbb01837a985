#include "text/gguf_tokenizer.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"

namespace qpeft {

using nlohmann::json;

bool is_gguf_path(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

namespace {

// The split pattern of each pre-tokenizer name (the inverse of the export's choice).
const char* split_pattern(const std::string& pre) {
  if (pre == "llama-bpe" || pre == "llama3")
    return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  if (pre == "qwen2")
    return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  return nullptr;
}

}  // namespace

GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& g) {
  const std::string model = g.get_string("tokenizer.ggml.model");
  QP_CHECK(model == "gpt2", "[gguf] {}: tokenizer.ggml.model is '{}'; qpeft reads byte-level BPE (gpt2) tokenizers from "
           "GGUF files", g.path(), model);
  const auto& tokens = g.get_array("tokenizer.ggml.tokens", GgufType::kString).strings;
  const GgufValue* types = g.find("tokenizer.ggml.token_type");
  if (types) types = &g.get_array("tokenizer.ggml.token_type", GgufType::kInt32);
  QP_CHECK(!types || types->ints.size() == tokens.size(), "[gguf] {}: {} token types for {} tokens", g.path(),
           types ? types->ints.size() : 0, tokens.size());
  json vocab = json::object(), added = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int64_t type = types ? types->ints[i] : 1;
    if (type == 3 || type == 4) {
      added.push_back({{"id", i}, {"content", tokens[i]}, {"special", type == 3}, {"normalized", false},
                       {"single_word", false}, {"lstrip", false}, {"rstrip", false}});
    }
    if (type != 5) vocab[tokens[i]] = i;  // unused placeholders stay out of the vocabulary
  }
  json merges = json::array();
  if (g.find("tokenizer.ggml.merges"))
    for (const std::string& m : g.get_array("tokenizer.ggml.merges", GgufType::kString).strings) merges.push_back(m);
  const std::string pre = g.find("tokenizer.ggml.pre") ? g.get_string("tokenizer.ggml.pre") : "gpt-2";
  json pre_tokenizer;
  if (const char* pattern = split_pattern(pre)) {
    pre_tokenizer = {{"type", "Sequence"},
                     {"pretokenizers", json::array({{{"type", "Split"}, {"pattern", {{"Regex", pattern}}},
                                                     {"behavior", "Isolated"}, {"invert", false}},
                                                    {{"type", "ByteLevel"}, {"add_prefix_space", false},
                                                     {"trim_offsets", true}, {"use_regex", false}}})}};
  } else {
    QP_CHECK(pre == "gpt-2" || pre == "default", "[gguf] {}: tokenizer.ggml.pre '{}' is not one qpeft reads (llama-bpe, "
             "qwen2, gpt-2)", g.path(), pre);
    pre_tokenizer = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  }
  json tok = {{"version", "1.0"},
              {"added_tokens", added},
              {"normalizer", nullptr},
              {"pre_tokenizer", pre_tokenizer},
              {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
              {"model", {{"type", "BPE"}, {"byte_fallback", false}, {"vocab", vocab}, {"merges", merges}}}};
  auto token_of = [&](const char* key) -> std::string {
    if (!g.find(key)) return "";
    const uint64_t id = g.get_uint(key);
    QP_CHECK(id < tokens.size(), "[gguf] {}: {} = {} is not a token id (vocabulary of {})", g.path(), key, id,
             tokens.size());
    return tokens[size_t(id)];
  };
  const std::string bos = token_of("tokenizer.ggml.bos_token_id"), eos = token_of("tokenizer.ggml.eos_token_id"),
                    pad = token_of("tokenizer.ggml.padding_token_id");
  const bool add_bos = g.find("tokenizer.ggml.add_bos_token") && g.get_bool("tokenizer.ggml.add_bos_token");
  if (add_bos && !bos.empty()) {
    const int64_t bos_id = int64_t(g.get_uint("tokenizer.ggml.bos_token_id"));
    tok["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
  }
  json cfg = {{"add_bos_token", add_bos}, {"add_eos_token", false}};
  if (!bos.empty()) cfg["bos_token"] = bos;
  if (!eos.empty()) cfg["eos_token"] = eos;
  if (!pad.empty()) cfg["pad_token"] = pad;
  if (g.find("tokenizer.chat_template")) cfg["chat_template"] = g.get_string("tokenizer.chat_template");
  return {tok.dump(), cfg.dump()};
}

}  // namespace qpeft
