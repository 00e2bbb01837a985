#include "text/gguf_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>

#include "core/error.h"
#include "io/gguf.h"
#include "text/sentencepiece_vocab.h"

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

// tokenizer.ggml.model "llama": llama.cpp's SentencePiece tokenizer merges pieces by score as
// SentencePiece's BPE does, falls back to <0xXX> byte pieces, and never collapses spaces.
std::string sentencepiece_model_of(const GgufFile& g, const std::vector<std::string>& tokens, const GgufValue* types) {
  SentencePieceVocab v;
  v.pieces = tokens;
  v.types.assign(tokens.size(), 1);
  if (types)
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int64_t t = types->ints[i];
      QP_CHECK(t >= 1 && t <= 6, "[gguf] {}: tokenizer.ggml.token_type[{}] is {}, not one of 1..6 (normal, unknown, control, "
               "user-defined, unused, byte)", g.path(), i, t);
      v.types[i] = int32_t(t);
    }
  v.scores.assign(tokens.size(), 0.0f);
  if (g.find("tokenizer.ggml.scores")) {
    const auto& scores = g.get_array("tokenizer.ggml.scores", GgufType::kFloat32).floats;
    QP_CHECK(scores.size() == tokens.size(), "[gguf] {}: {} token scores for {} tokens", g.path(), scores.size(),
             tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) v.scores[i] = float(scores[i]);
  }
  const auto unknown = std::count(v.types.begin(), v.types.end(), 2);
  QP_CHECK(unknown == 1, "[gguf] {}: a SentencePiece (llama) tokenizer needs exactly one unknown token "
           "(tokenizer.ggml.token_type 2); this one has {}", g.path(), unknown);
  v.bpe = true;
  v.byte_fallback = std::count(v.types.begin(), v.types.end(), 6) > 0;
  v.add_dummy_prefix = !g.find("tokenizer.ggml.add_space_prefix") || g.get_bool("tokenizer.ggml.add_space_prefix");
  v.remove_extra_whitespaces = false;
  return sentencepiece_model_proto(v);
}

// tokenizer.ggml.model "gpt2" as a tokenizer.json.
json byte_level_bpe_json(const GgufFile& g, const std::vector<std::string>& tokens, const GgufValue* types) {
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
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre_tokenizer},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model", {{"type", "BPE"}, {"byte_fallback", false}, {"vocab", vocab}, {"merges", merges}}}};
}

}  // namespace

GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& g) {
  const std::string model = g.get_string("tokenizer.ggml.model");
  QP_CHECK(model == "gpt2" || model == "llama", "[gguf] {}: tokenizer.ggml.model is '{}'; qpeft reads byte-level BPE "
           "(gpt2) and SentencePiece (llama) tokenizers from GGUF files", g.path(), model);
  const auto& tokens = g.get_array("tokenizer.ggml.tokens", GgufType::kString).strings;
  const GgufValue* types = g.find("tokenizer.ggml.token_type");
  if (types) types = &g.get_array("tokenizer.ggml.token_type", GgufType::kInt32);
  QP_CHECK(!types || types->ints.size() == tokens.size(), "[gguf] {}: {} token types for {} tokens", g.path(),
           types ? types->ints.size() : 0, tokens.size());
  const bool spm = model == "llama";
  GgufTokenizerFiles files;
  json tok;
  if (spm)
    files.sentencepiece_model = sentencepiece_model_of(g, tokens, types);
  else
    tok = byte_level_bpe_json(g, tokens, types);
  auto token_of = [&](const char* key) -> std::string {
    if (!g.find(key)) return "";
    const uint64_t id = g.get_uint(key);
    QP_CHECK(id < tokens.size(), "[gguf] {}: {} = {} is not a token id (vocabulary of {})", g.path(), key, id,
             tokens.size());
    return tokens[size_t(id)];
  };
  const std::string bos = token_of("tokenizer.ggml.bos_token_id"), eos = token_of("tokenizer.ggml.eos_token_id"),
                    pad = token_of("tokenizer.ggml.padding_token_id"), unk = token_of("tokenizer.ggml.unknown_token_id");
  // llama.cpp's defaults when the keys are absent: BOS for SentencePiece, none for gpt2.
  const bool add_bos = g.find("tokenizer.ggml.add_bos_token") ? g.get_bool("tokenizer.ggml.add_bos_token") : spm;
  const bool add_eos = g.find("tokenizer.ggml.add_eos_token") && g.get_bool("tokenizer.ggml.add_eos_token");
  if (!spm && add_bos && !bos.empty()) {
    const int64_t bos_id = int64_t(g.get_uint("tokenizer.ggml.bos_token_id"));
    tok["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array({{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {bos_id}}, {"tokens", {bos}}}}}}};
  }
  // A SentencePiece tokenizer adds BOS/EOS from the config (as transformers' LlamaTokenizer);
  // byte-level BPE from the post-processor above.
  json cfg = {{"add_bos_token", add_bos}, {"add_eos_token", spm && add_eos}};
  if (!bos.empty()) cfg["bos_token"] = bos;
  if (!eos.empty()) cfg["eos_token"] = eos;
  if (!pad.empty()) cfg["pad_token"] = pad;
  if (spm && !unk.empty()) cfg["unk_token"] = unk;
  if (g.find("tokenizer.chat_template")) cfg["chat_template"] = g.get_string("tokenizer.chat_template");
  if (!spm) files.tokenizer_json = tok.dump();
  files.tokenizer_config_json = cfg.dump();
  return files;
}

}  // namespace qpeft
