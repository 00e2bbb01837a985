// Small tokenizers built in code for the tokenizer, CLI and data-format tests.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace test_fixtures {

// SentencePiece-style: Prepend/Replace normalizer, byte fallback, merges ▁+a, ▁a+b, a+b.
inline nlohmann::json tiny_spm_json() {
  using nlohmann::json;
  const std::string sp = "\xE2\x96\x81";
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab[buf] = 3 + b;
  }
  int id = 259;
  for (std::string s : {sp, std::string("a"), std::string("b"), std::string("c"), sp + "a", sp + "ab", std::string("ab")}) vocab[s] = id++;
  json j = {
      {"version", "1.0"},
      {"added_tokens", json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}, {"normalized", false}},
                                    {{"id", 1}, {"content", "<s>"}, {"special", true}, {"normalized", false}},
                                    {{"id", 2}, {"content", "</s>"}, {"special", true}, {"normalized", false}}})},
      {"normalizer", {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", sp}}, {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}})}}},
      {"pre_tokenizer", nullptr},
      {"post_processor", {{"type", "TemplateProcessing"}, {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})}, {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", sp}}}, {"content", " "}}, {{"type", "ByteFallback"}}, {{"type", "Fuse"}}, {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true}, {"vocab", vocab}, {"merges", json::array({sp + " a", sp + "a b", "a b"})}}},
  };
  return j;
}

inline std::string tiny_spm_config() {
  return R"({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": null, "tokenizer_class": "LlamaTokenizer",
  "add_bos_token": true, "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"})";
}

// Byte-level with the GPT-2 split: the 256 byte symbols plus merges a+a, aa+aa, 1+1, Ġ+Ġ.
inline nlohmann::json tiny_bytelevel_json() {
  using nlohmann::json;
  json vocab = json::object();
  int extra = 256, id = 0;
  auto cp_str = [](int cp) {
    std::string s;
    if (cp < 0x80) s.push_back(char(cp));
    else { s.push_back(char(0xC0 | (cp >> 6))); s.push_back(char(0x80 | (cp & 0x3F))); }
    return s;
  };
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    vocab[cp_str(printable ? b : extra++)] = id++;
  }
  const std::string G = cp_str(0x120);
  for (std::string s : {std::string("aa"), std::string("aaaa"), std::string("11"), G + G}) vocab[s] = id++;
  return {
      {"added_tokens", json::array()},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array({"a a", "aa aa", "1 1", G + " " + G})}}},
  };
}

}  // namespace test_fixtures
