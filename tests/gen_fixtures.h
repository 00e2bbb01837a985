// A model directory with a tokenizer for the generation and choice tests: the golden llama
// (vocab 96, GQA) plus a hand-written byte-level BPE of exactly 96 ids.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "test_util.h"

namespace gen_fixtures {

// ids: 0 <unk>, 1 <s>, 2 </s>, 3 Ġ (space), 4 Ċ (newline), 5-30 a-z, 31-56 A-Z, 57-66 0-9,
// 67-76 punctuation, 77 Ã (byte C3), 78 © (A9), 79 ¨ (A8) — so "é" (C3 A9) is two tokens —
// and 80-95 sixteen merges. Bytes not listed encode as <unk>.
inline nlohmann::json tokenizer_json() {
  using nlohmann::json;
  auto utf8 = [](int cp) {
    std::string s;
    if (cp < 0x80) {
      s.push_back(char(cp));
    } else {
      s.push_back(char(0xC0 | (cp >> 6)));
      s.push_back(char(0x80 | (cp & 0x3F)));
    }
    return s;
  };
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  int id = 3;
  vocab[utf8(0x120)] = id++;  // Ġ: byte 0x20
  vocab[utf8(0x10A)] = id++;  // Ċ: byte 0x0A
  for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = id++;
  for (char c = 'A'; c <= 'Z'; ++c) vocab[std::string(1, c)] = id++;
  for (char c = '0'; c <= '9'; ++c) vocab[std::string(1, c)] = id++;
  for (char c : std::string(".,!?'-:;()")) vocab[std::string(1, c)] = id++;
  for (int b : {0xC3, 0xA9, 0xA8}) vocab[utf8(b)] = id++;
  const std::string G = utf8(0x120);
  const std::vector<std::pair<std::string, std::string>> merges = {
      {G, "t"}, {G, "a"}, {"t", "h"}, {G + "t", "h"}, {"h", "e"}, {G + "th", "e"}, {"i", "n"}, {"e", "r"},
      {"a", "n"}, {"o", "n"}, {"r", "e"}, {"a", "t"}, {"e", "n"}, {"n", "d"}, {G, "w"}, {"o", "u"}};
  json mj = json::array();
  for (const auto& [a, b] : merges) {
    vocab[a + b] = id++;
    mj.push_back(a + " " + b);
  }
  if (id != 96) throw std::runtime_error("gen_fixtures: vocabulary is not 96 ids");
  auto special = [](int i, const char* s) {
    return json{{"id", i}, {"content", s}, {"special", true}, {"normalized", false}, {"single_word", false},
                {"lstrip", false}, {"rstrip", false}};
  };
  return {
      {"version", "1.0"},
      {"added_tokens", json::array({special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")})},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model", {{"type", "BPE"}, {"unk_token", "<unk>"}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab}, {"merges", mj}}},
  };
}

inline std::string tokenizer_config_json() {
  return R"({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true,
  "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"})";
}

// dir/ = golden llama (config + weights) + tokenizer.json + tokenizer_config.json.
inline void make_model_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const std::string src = qpeft::testing::golden_dir("llama");
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(src + "/" + f, dir + "/" + f, fs::copy_options::overwrite_existing);
  qpeft::testing::write_file(dir + "/tokenizer.json", tokenizer_json().dump());
  qpeft::testing::write_file(dir + "/tokenizer_config.json", tokenizer_config_json());
}

}  // namespace gen_fixtures
