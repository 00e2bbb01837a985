// Loading tokenizer.json (+ tokenizer_config.json) into the pipeline of tokenizer_impl.h.
// Every unsupported component is an error naming its JSON key, never a silent difference.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/limits.h"
#include "io/json_reader.h"
#include "text/tokenizer.h"
#include "io/gguf.h"
#include "text/gguf_tokenizer.h"
#include "text/tokenizer_impl.h"
#include "text/tokenizer_unicode.h"

namespace qpeft {
namespace tok_detail {

using json = nlohmann::json;

namespace {

struct Ctx {
  std::string origin;
  [[noreturn]] void err(const std::string& key, const std::string& what) const {
    fail("[tokenizer] {}: {}: {}", origin, key, what);
  }
  const json& get(const json& j, const char* k, const std::string& key) const {
    if (!j.is_object() || !j.contains(k)) err(key, fmt::format("missing key \"{}\"", k));
    return j[k];
  }
  std::string str(const json& j, const char* k, const std::string& key) const {
    const json& v = get(j, k, key);
    if (!v.is_string()) err(key + "." + k, "expected a string, found " + std::string(v.type_name()));
    return v.get<std::string>();
  }
  bool flag(const json& j, const char* k, bool def) const {
    if (!j.is_object() || !j.contains(k) || j[k].is_null()) return def;
    return j[k].is_boolean() ? j[k].get<bool>() : def;
  }
};

// The two big arrays of a tokenizer.json, taken out of the SAX stream as they are parsed
// (a 128k-token DOM costs more to build and free than the rest of the load).
struct BigArrays {
  bool vocab_taken = false, merges_taken = false;
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::string bad_vocab_key;  // first entry whose value is not an id in [0, limits::kMaxVocabSize)
  bool bad_vocab = false;
  std::vector<std::pair<std::string, std::string>> merges;
  int64_t bad_merge = -1;  // index of the first entry that is not "a b" or ["a", "b"]
  std::string bad_merge_text;
};

// SAX handler: builds the DOM of everything except model.vocab and model.merges (when they
// are an object / an array), whose entries go straight into BigArrays.
class TokenizerSax {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  TokenizerSax(json& root, BigArrays& big) : root_(root), big_(big) {}
  std::string error;

  bool null() { return value(nullptr); }
  bool boolean(bool v) { return value(v); }
  bool number_integer(number_integer_t v) {
    if (cap_ == kVocab && cap_depth_ == 1) return vocab_entry(v >= 0 && v < limits::kMaxVocabSize, v);
    return value(v);
  }
  bool number_unsigned(number_unsigned_t v) {
    if (cap_ == kVocab && cap_depth_ == 1) return vocab_entry(v < uint64_t(limits::kMaxVocabSize), int64_t(v));
    return value(v);
  }
  bool number_float(number_float_t v, const string_t&) { return value(v); }
  bool binary(binary_t&) { return value(nullptr); }
  bool string(string_t& v) {
    if (cap_ == kMerges) {
      if (cap_depth_ == 1) {
        size_t sp = v.find(' ');
        if (sp == std::string::npos || v.find(' ', sp + 1) != std::string::npos) bad_merge("\"" + v + "\"");
        else big_.merges.emplace_back(v.substr(0, sp), v.substr(sp + 1));
      } else if (cap_depth_ == 2) {
        pair_.push_back(v);
      } else {
        bad_merge("a nested value");
      }
      return true;
    }
    return value(v);
  }
  bool start_object(std::size_t) {
    if (!deeper()) return false;
    if (begin_value(true)) return true;
    if (cap_) return ++cap_depth_, other_in_capture(), true;
    open(json::object());
    return true;
  }
  bool key(string_t& k) {
    if (cap_) {
      if (cap_ == kVocab && cap_depth_ == 1) vocab_key_ = k;
      return true;
    }
    // model.vocab / model.merges: decided at the value (only an object / array is taken).
    if (stack_.size() == 2 && in_model_ && (k == "vocab" || k == "merges")) {
      pending_ = k == "vocab" ? kVocab : kMerges;
      key_ = k;
      return true;
    }
    if (stack_.size() == 1) in_model_ = k == "model";
    key_ = k;
    return true;
  }
  bool end_object() {
    --depth_;
    if (cap_) return end_in_capture();
    stack_.pop_back();
    return true;
  }
  bool start_array(std::size_t) {
    if (!deeper()) return false;
    if (begin_value(false)) return true;
    if (cap_) {
      ++cap_depth_;
      if (cap_ == kMerges && cap_depth_ == 2) pair_.clear();
      else other_in_capture();
      return true;
    }
    open(json::array());
    return true;
  }
  bool end_array() {
    --depth_;
    if (cap_) {
      if (cap_ == kMerges && cap_depth_ == 2) {
        if (pair_.size() == 2) big_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
        else bad_merge("an array of " + std::to_string(pair_.size()) + " strings");
      }
      return end_in_capture();
    }
    stack_.pop_back();
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    error = e.what();
    if (error.rfind("[json.exception.", 0) == 0 && error.find("] ") != std::string::npos)
      error.erase(0, error.find("] ") + 2);
    return false;
  }

 private:
  enum Cap { kNone, kVocab, kMerges };

  // Nesting within limits::kMaxJsonDepth: the loaders below recurse on Sequence entries.
  bool deeper() {
    if (++depth_ <= limits::kMaxJsonDepth) return true;
    error = fmt::format("the JSON nests deeper than {} levels (limits::kMaxJsonDepth)", limits::kMaxJsonDepth);
    return false;
  }
  int depth_ = 0;

  // A pending model.vocab/merges key meets its value: take it if it has the right kind.
  bool begin_value(bool is_object) {
    if (!pending_) return false;
    Cap want = pending_;
    pending_ = kNone;
    if ((want == kVocab) != is_object) return false;  // wrong kind: into the DOM, checked later
    cap_ = want;
    cap_depth_ = 1;
    if (want == kVocab) big_.vocab_taken = true, big_.vocab.clear(), big_.bad_vocab = false;
    else big_.merges_taken = true, big_.merges.clear(), big_.bad_merge = -1;
    (*stack_.back())[key_] = nullptr;
    return true;
  }
  void other_in_capture() {
    if (cap_ == kVocab && cap_depth_ == 2) vocab_entry(false, 0);
    if (cap_ == kMerges && cap_depth_ == 2) bad_merge("an object");
    if (cap_ == kMerges && cap_depth_ > 2) bad_merge("a nested value");
  }
  bool end_in_capture() {
    if (--cap_depth_ == 0) cap_ = kNone;
    return true;
  }
  bool vocab_entry(bool ok, int64_t id) {
    if (ok) {
      big_.vocab.emplace_back(vocab_key_, int32_t(id));
    } else if (!big_.bad_vocab) {
      big_.bad_vocab = true;
      big_.bad_vocab_key = vocab_key_;
    }
    return true;
  }
  void bad_merge(std::string what) {
    if (big_.bad_merge >= 0) return;
    big_.bad_merge = int64_t(big_.merges.size());
    big_.bad_merge_text = std::move(what);
  }
  template <class V>
  bool value(V&& v) {
    if (pending_) {  // a scalar model.vocab/merges: into the DOM, rejected later
      pending_ = kNone;
    }
    if (cap_) {
      if (cap_ == kVocab && cap_depth_ == 1) return vocab_entry(false, 0);
      if (cap_ == kMerges) bad_merge(cap_depth_ == 2 ? "a non-string in a pair" : "a non-string entry");
      return true;
    }
    place(json(std::forward<V>(v)));
    return true;
  }
  json* place(json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    json& slot = top[key_];
    slot = std::move(v);
    return &slot;
  }
  void open(json&& container) { stack_.push_back(place(std::move(container))); }

  json& root_;
  BigArrays& big_;
  std::vector<json*> stack_;
  std::string key_, vocab_key_;
  bool in_model_ = false;
  Cap pending_ = kNone, cap_ = kNone;
  int cap_depth_ = 0;
  std::vector<std::string> pair_;
};

std::string type_of(const Ctx& c, const json& j, const std::string& key) {
  if (!j.is_object()) c.err(key, "expected an object");
  return c.str(j, "type", key);
}

void load_normalizer(const Ctx& c, const json& j, const std::string& key, std::vector<Normalizer>& out) {
  if (j.is_null()) return;
  std::string t = type_of(c, j, key);
  if (t == "Sequence") {
    const json& list = c.get(j, "normalizers", key);
    for (size_t i = 0; i < list.size(); ++i) load_normalizer(c, list[i], fmt::format("{}.normalizers[{}]", key, i), out);
  } else if (t == "Prepend") {
    out.push_back({Normalizer::kPrepend, c.str(j, "prepend", key), ""});
  } else if (t == "Replace") {
    const json& pat = c.get(j, "pattern", key);
    if (!pat.contains("String"))
      c.err(key + ".pattern", "only {\"String\": ...} Replace patterns are supported (a Regex pattern was given)");
    out.push_back({Normalizer::kReplace, c.str(pat, "String", key + ".pattern"), c.str(j, "content", key)});
  } else if (t == "NFC") {
    out.push_back({Normalizer::kNfc, "", ""});
  } else {
    c.err(key, fmt::format("normalizer type \"{}\" is not supported (supported: Sequence, Prepend, Replace, NFC)", t));
  }
}

void load_metaspace(const Ctx& c, const json& j, const std::string& key, PreTokenizer& p) {
  p.metaspace = true;
  if (j.contains("replacement")) p.replacement = c.str(j, "replacement", key);
  std::string scheme = j.contains("prepend_scheme") && j["prepend_scheme"].is_string()
                           ? j["prepend_scheme"].get<std::string>()
                           : (c.flag(j, "add_prefix_space", true) ? "always" : "never");
  if (scheme == "always") p.prepend = PreTokenizer::kAlways;
  else if (scheme == "first") p.prepend = PreTokenizer::kFirst;
  else if (scheme == "never") p.prepend = PreTokenizer::kNever;
  else c.err(key + ".prepend_scheme", "expected \"always\", \"first\" or \"never\", found \"" + scheme + "\"");
  p.metaspace_split = c.flag(j, "split", true);
}

void load_pre_tokenizer(const Ctx& c, const json& j, const std::string& key, PreTokenizer& p, int depth = 0) {
  if (j.is_null()) return;
  std::string t = type_of(c, j, key);
  if (t == "Sequence") {
    const json& list = c.get(j, "pretokenizers", key);
    for (size_t i = 0; i < list.size(); ++i) load_pre_tokenizer(c, list[i], fmt::format("{}.pretokenizers[{}]", key, i), p, depth + 1);
  } else if (t == "Split") {
    if (p.split != SplitPattern::kNone || p.byte_level || p.metaspace)
      c.err(key, "only one Split, placed before ByteLevel, is supported");
    const json& pat = c.get(j, "pattern", key);
    if (!pat.contains("Regex")) c.err(key + ".pattern", "only Regex Split patterns are supported");
    std::string re = c.str(pat, "Regex", key + ".pattern");
    p.split = parse_split_regex(re);
    if (p.split == SplitPattern::kNone)
      c.err(key + ".pattern.Regex", "unsupported Split regex \"" + re + "\"; qpeft implements the GPT-2, Llama 3 and Qwen2 patterns exactly");
    std::string behavior = j.value("behavior", "Isolated");
    if (behavior != "Isolated" || c.flag(j, "invert", false))
      c.err(key, "only behavior \"Isolated\" with invert=false is supported, found \"" + behavior + "\"");
  } else if (t == "ByteLevel") {
    if (p.byte_level || p.metaspace) c.err(key, "a second ByteLevel/Metaspace pre-tokenizer is not supported");
    p.byte_level = true;
    p.add_prefix_space = c.flag(j, "add_prefix_space", false);
    if (c.flag(j, "use_regex", true)) {
      if (p.split != SplitPattern::kNone) c.err(key, "ByteLevel with use_regex after a Split is not supported");
      p.split = SplitPattern::kGpt2;
    }
  } else if (t == "Metaspace") {
    if (p.byte_level || p.metaspace || p.split != SplitPattern::kNone) c.err(key, "Metaspace combined with other pre-tokenizers is not supported");
    load_metaspace(c, j, key, p);
  } else {
    c.err(key, fmt::format("pre-tokenizer type \"{}\" is not supported (supported: Sequence, Split, ByteLevel, Metaspace)", t));
  }
}

void load_decoder(const Ctx& c, const json& j, const std::string& key, std::vector<Decoder>& out) {
  if (j.is_null()) return;
  std::string t = type_of(c, j, key);
  Decoder d{};
  if (t == "Sequence") {
    const json& list = c.get(j, "decoders", key);
    for (size_t i = 0; i < list.size(); ++i) load_decoder(c, list[i], fmt::format("{}.decoders[{}]", key, i), out);
    return;
  } else if (t == "ByteLevel") {
    d.kind = Decoder::kByteLevel;
  } else if (t == "Replace") {
    const json& pat = c.get(j, "pattern", key);
    if (!pat.contains("String")) c.err(key + ".pattern", "only String Replace patterns are supported");
    d.kind = Decoder::kReplace;
    d.a = c.str(pat, "String", key + ".pattern");
    d.b = c.str(j, "content", key);
  } else if (t == "ByteFallback") {
    d.kind = Decoder::kByteFallback;
  } else if (t == "Fuse") {
    d.kind = Decoder::kFuse;
  } else if (t == "Strip") {
    d.kind = Decoder::kStrip;
    d.a = c.str(j, "content", key);
    d.start = j.value("start", 0);
    d.stop = j.value("stop", 0);
  } else if (t == "Metaspace") {
    PreTokenizer p;
    load_metaspace(c, j, key, p);
    d.kind = Decoder::kMetaspace;
    d.a = p.replacement;
    d.prepend_first = p.prepend != PreTokenizer::kNever;
  } else {
    c.err(key, fmt::format("decoder type \"{}\" is not supported (supported: Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)", t));
  }
  out.push_back(std::move(d));
}

void load_model(const Ctx& c, const json& j, const BigArrays& big, TokenizerImpl& t) {
  std::string type = j.value("type", "BPE");
  if (type != "BPE") c.err("model.type", fmt::format("model type \"{}\" is not supported (only BPE)", type));
  if (j.contains("dropout") && j["dropout"].is_number() && j["dropout"].get<double>() > 0)
    c.err("model.dropout", "BPE dropout is a training-time randomization; set it to null");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (j.contains(k) && j[k].is_string() && !j[k].get<std::string>().empty())
      c.err(std::string("model.") + k, "non-empty values are not supported");
  BpeModel& m = t.model;
  m.byte_level = t.pre.byte_level;
  m.byte_fallback = c.flag(j, "byte_fallback", false);
  m.ignore_merges = c.flag(j, "ignore_merges", false);
  m.fuse_unk = c.flag(j, "fuse_unk", false);
  if (!big.vocab_taken) {  // missing or not an object (an object is taken by the SAX handler)
    c.get(j, "vocab", "model");
    c.err("model.vocab", "expected an object {token: id}");
  }
  if (big.bad_vocab) c.err("model.vocab[\"" + big.bad_vocab_key + "\"]", fmt::format("expected a token id in [0, {}) (limits::kMaxVocabSize)", limits::kMaxVocabSize));
  const auto& entries = big.vocab;
  StrIndex by_string;  // token string -> id (keys point into `entries`; the last duplicate wins)
  by_string.reserve(entries.size());
  int32_t max_id = -1;
  for (const auto& [s, id] : entries) {
    by_string.insert(s, id, /*overwrite=*/true);
    max_id = std::max(max_id, id);
  }
  t.id_to_token.assign(size_t(max_id + 1), std::string());
  m.vocab_keys.reserve(entries.size());
  for (const auto& [s, id] : entries) {
    t.id_to_token[size_t(id)] = s;
    if (m.byte_level) {  // the bytes the token stands for
      std::string key;
      for (size_t i = 0, len = 0; i < s.size(); i += len) {
        int b = byte_of_char(unicode::decode_utf8(s, i, &len));
        if (b < 0) { key = s; break; }  // not in the byte alphabet: unreachable from bytes
        key.push_back(char(b));
      }
      m.vocab_keys.push_back(std::move(key));
    } else {
      size_t len;
      uint32_t cp = unicode::decode_utf8(s, 0, &len);
      if (!s.empty() && len == s.size() && !(cp & unicode::kInvalidBit)) m.char_ids[cp] = id;
      m.vocab_keys.push_back(s);
    }
  }
  m.vocab.reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) m.vocab.insert(m.vocab_keys[i], entries[i].second, /*overwrite=*/true);
  for (int b = 0; b < 256; ++b) {
    m.byte_ids[b] = -1;
    if (m.byte_level) m.byte_ids[b] = m.vocab.find(std::string_view(reinterpret_cast<const char*>(&b), 1));
    else if (m.byte_fallback) m.byte_ids[b] = by_string.find(fmt::format("<0x{:02X}>", b));
  }
  if (j.contains("unk_token") && j["unk_token"].is_string()) {
    m.unk_id = by_string.find(j["unk_token"].get_ref<const std::string&>());
    if (m.unk_id < 0) c.err("model.unk_token", "\"" + j["unk_token"].get<std::string>() + "\" is not in the vocabulary");
  }
  if (!big.merges_taken) {  // missing or not an array
    c.get(j, "merges", "model");
    c.err("model.merges", "expected an array");
  }
  const auto& merges = big.merges;
  if (big.bad_merge >= 0)
    c.err(fmt::format("model.merges[{}]", big.bad_merge),
          "expected \"left right\" (two tokens separated by one space) or [\"left\", \"right\"], found " + big.bad_merge_text);
  m.merges.reserve(merges.size());
  std::string ab;
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    ab.assign(a).append(b);
    int32_t ia = by_string.find(a), ib = by_string.find(b), iab = by_string.find(ab);
    if (ia < 0 || ib < 0 || iab < 0)
      c.err(fmt::format("model.merges[{}]", r), "merge \"" + a + "\" + \"" + b + "\": " + (ia < 0 ? a : ib < 0 ? b : ab) + " is not in the vocabulary");
    m.merges.set((uint64_t(uint32_t(ia)) << 32) | uint32_t(ib), (uint64_t(r) << 32) | uint32_t(iab));
  }
  t.unk = m.unk_id;
}

// A token id named in the file: an integer in [0, limits::kMaxVocabSize); the load checks it
// against the final vocabulary.
int32_t token_id(const Ctx& c, const json& v, const std::string& key) {
  int64_t id = 0;
  if (!json_integer_in(v, 0, limits::kMaxVocabSize - 1, &id))
    c.err(key, fmt::format("expected a token id in [0, {}) (found {})", limits::kMaxVocabSize, describe_json(v)));
  return int32_t(id);
}

int32_t special_ids(const Ctx& c, const json& specials, const std::string& name, const std::string& key, std::vector<int32_t>& out) {
  if (!specials.is_object() || !specials.contains(name)) c.err(key, "special token \"" + name + "\" is not listed in special_tokens");
  const std::string ids_key = key + ".special_tokens[\"" + name + "\"].ids";
  const json& ids = c.get(specials[name], "ids", ids_key);
  if (!ids.is_array()) c.err(ids_key, "expected a list of token ids");
  for (const auto& id : ids) out.push_back(token_id(c, id, ids_key));
  return ids.size() == 1 ? out.back() : -1;
}

void load_post_processor(const Ctx& c, const json& j, const std::string& key, TokenizerImpl& t) {
  if (j.is_null()) return;
  std::string type = type_of(c, j, key);
  if (type == "Sequence") {
    const json& list = c.get(j, "processors", key);
    for (size_t i = 0; i < list.size(); ++i) load_post_processor(c, list[i], fmt::format("{}.processors[{}]", key, i), t);
  } else if (type == "ByteLevel") {
    // Offsets only; ids are unchanged.
  } else if (type == "TemplateProcessing") {
    const json& single = c.get(j, "single", key);
    const json& specials = c.get(j, "special_tokens", key);
    t.prefix_ids.clear(), t.suffix_ids.clear();
    bool seen_a = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const json& item = single[i];
      std::string ik = fmt::format("{}.single[{}]", key, i);
      if (item.contains("Sequence")) {
        if (seen_a) c.err(ik, "the sequence appears twice");
        seen_a = true;
      } else if (item.contains("SpecialToken")) {
        special_ids(c, specials, c.str(item["SpecialToken"], "id", ik + ".SpecialToken"), key, seen_a ? t.suffix_ids : t.prefix_ids);
      } else {
        c.err(ik, "expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  } else if (type == "BertProcessing" || type == "RobertaProcessing") {
    const json& cls = c.get(j, "cls", key);
    const json& sep = c.get(j, "sep", key);
    if (!cls.is_array() || cls.size() != 2 || !sep.is_array() || sep.size() != 2)
      c.err(key, "cls and sep must be [token, id] pairs");
    t.prefix_ids = {token_id(c, cls[1], key + ".cls[1]")};
    t.suffix_ids = {token_id(c, sep[1], key + ".sep[1]")};
  } else {
    c.err(key, fmt::format("post-processor type \"{}\" is not supported", type));
  }
}

// A tokenizer_config.json token entry: "text", {"content": "text"} or null.
std::string config_token(const json& cfg, const char* k) {
  if (!cfg.is_object() || !cfg.contains(k)) return "";
  const json& v = cfg[k];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return "";
}

}  // namespace

TokenizerConfig parse_tokenizer_config(std::string_view text, const std::string& origin) {
  TokenizerConfig c;
  if (text.empty()) return c;
  const json cfg = parse_json(text, "[tokenizer] tokenizer_config.json next to " + origin);
  if (!cfg.is_object()) fail("[tokenizer] tokenizer_config.json next to {}: expected a JSON object", origin);
  c.present = true;
  c.bos_token = config_token(cfg, "bos_token");
  c.eos_token = config_token(cfg, "eos_token");
  c.pad_token = config_token(cfg, "pad_token");
  c.unk_token = config_token(cfg, "unk_token");
  auto str = [&](const char* k) { return cfg.contains(k) && cfg[k].is_string() ? cfg[k].get<std::string>() : std::string(); };
  auto flag = [&](const char* k) { return cfg.contains(k) && cfg[k].is_boolean() ? int(cfg[k].get<bool>()) : -1; };
  c.tokenizer_class = str("tokenizer_class");
  c.add_bos_token = flag("add_bos_token");
  c.add_eos_token = flag("add_eos_token");
  if (cfg.contains("chat_template")) {
    const json& ct = cfg["chat_template"];
    if (ct.is_string()) {
      c.chat_template = ct.get<std::string>();
    } else if (ct.is_array()) {
      for (const auto& e : ct)
        if (e.is_object() && e.contains("name") && e["name"] == "default" && e.contains("template") && e["template"].is_string())
          c.chat_template = e["template"].get<std::string>();
    }
  }
  return c;
}

std::unique_ptr<TokenizerImpl> load_tokenizer_json(std::string_view text, std::string_view config_text, const std::string& origin) {
  Ctx c{origin};
  json j;
  BigArrays big;
  TokenizerSax sax(j, big);
  if (!json::sax_parse(text.begin(), text.end(), &sax))
    fail("[tokenizer] {}: not valid JSON ({}); expected a Hugging Face tokenizer.json", origin, sax.error);
  if (!j.is_object() || !j.contains("model")) c.err("model", "missing: this is not a tokenizer.json (no \"model\" key)");
  auto t = std::make_unique<TokenizerImpl>();
  t->source = origin;
  try {
    load_normalizer(c, j.value("normalizer", json()), "normalizer", t->normalizers);
    load_pre_tokenizer(c, j.value("pre_tokenizer", json()), "pre_tokenizer", t->pre);
    load_model(c, j["model"], big, *t);
    load_decoder(c, j.value("decoder", json()), "decoder", t->decoders);
    load_post_processor(c, j.value("post_processor", json()), "post_processor", *t);
    if (j.contains("added_tokens") && j["added_tokens"].is_array()) {
      const json& list = j["added_tokens"];
      for (size_t i = 0; i < list.size(); ++i) {
        const json& e = list[i];
        std::string key = fmt::format("added_tokens[{}]", i);
        AddedToken a;
        a.id = token_id(c, c.get(e, "id", key), key + ".id");
        a.content = c.str(e, "content", key);
        a.special = c.flag(e, "special", false);
        a.single_word = c.flag(e, "single_word", false);
        a.lstrip = c.flag(e, "lstrip", false);
        a.rstrip = c.flag(e, "rstrip", false);
        a.normalized = c.flag(e, "normalized", !a.special);
        t->added.push_back(std::move(a));
      }
    }
  } catch (const json::exception& e) {
    fail("[tokenizer] {}: malformed tokenizer.json ({})", origin, e.what());
  }
  // Added tokens: ids past the model vocabulary extend it.
  for (size_t i = 0; i < t->added.size(); ++i) {
    const AddedToken& a = t->added[i];
    if (size_t(a.id) >= t->id_to_token.size()) t->id_to_token.resize(size_t(a.id) + 1);
    t->id_to_token[size_t(a.id)] = a.content;
    if (a.normalized && !t->normalizers.empty())
      t->normalized_trie.add(normalize(t->normalizers, a.content), int32_t(i));
    else if (a.normalized)
      t->normalized_trie.add(a.content, int32_t(i));
    else
      t->raw_trie.add(a.content, int32_t(i));
  }
  t->special.assign(t->id_to_token.size(), 0);
  for (const auto& a : t->added)
    if (a.special) t->special[size_t(a.id)] = 1;
  // Token strings -> ids: the lowest id of a string, then added tokens override.
  t->token_to_id.reserve(t->id_to_token.size());
  for (size_t id = 0; id < t->id_to_token.size(); ++id)
    if (!t->id_to_token[id].empty()) t->token_to_id.insert(t->id_to_token[id], int32_t(id));
  for (const auto& a : t->added) t->token_to_id.insert(a.content, a.id, /*overwrite=*/true);

  // tokenizer_config.json: special tokens, chat template, and the add_bos/add_eos rules that
  // transformers' LlamaTokenizerFast applies over the file's post-processor.
  TokenizerConfig cfg = parse_tokenizer_config(config_text, origin);
  auto id_of = [&](const std::string& s) { return s.empty() ? -1 : t->token_to_id.find(s); };
  t->bos_token = cfg.bos_token;
  t->eos_token = cfg.eos_token;
  if (!cfg.present) {  // no config: the usual names
    for (const char* s : {"<s>", "<|begin_of_text|>"})
      if (t->bos_token.empty() && id_of(s) >= 0) t->bos_token = s;
    for (const char* s : {"</s>", "<|end_of_text|>", "<|endoftext|>"})
      if (t->eos_token.empty() && id_of(s) >= 0) t->eos_token = s;
  }
  t->bos = id_of(t->bos_token);
  t->eos = id_of(t->eos_token);
  t->pad = id_of(cfg.pad_token);
  if (int32_t u = id_of(cfg.unk_token); u >= 0) t->unk = u;
  t->chat_template = cfg.chat_template;
  const std::string& cls = cfg.tokenizer_class;
  if (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast" || cls == "CodeLlamaTokenizer" || cls == "CodeLlamaTokenizerFast") {
    t->prefix_ids.clear(), t->suffix_ids.clear();
    if (cfg.add_bos_token != 0 && t->bos >= 0) t->prefix_ids.push_back(t->bos);
    if (cfg.add_eos_token == 1 && t->eos >= 0) t->suffix_ids.push_back(t->eos);
  }
  // Ids the post-processor adds must be tokens of the vocabulary (they reach the model).
  for (const auto* ids : {&t->prefix_ids, &t->suffix_ids})
    for (int32_t id : *ids)
      if (size_t(id) >= t->id_to_token.size())
        c.err("post_processor", fmt::format("token id {} is not in the vocabulary ({} tokens)", id, t->id_to_token.size()));
  t->bpe = std::make_unique<BpeEncoder>(t->model);
  return t;
}

}  // namespace tok_detail

static std::string dirname_of(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? "." : p.substr(0, s);
}

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, std::string_view config_json, const std::string& origin) {
  return Tokenizer(tok_detail::load_tokenizer_json(tokenizer_json, config_json, origin));
}

Tokenizer Tokenizer::from_sentencepiece(std::string_view model_proto, std::string_view config_json,
                                        const std::string& origin) {
  return Tokenizer(tok_detail::load_sentencepiece_proto(model_proto, origin, config_json));
}

bool has_tokenizer(const std::string& model_path) {
  if (is_gguf_path(model_path))
    return file_exists(model_path) && GgufFile::open(model_path)->find("tokenizer.ggml.tokens") != nullptr;
  return file_exists(model_path + "/tokenizer.json") || file_exists(model_path + "/tokenizer.model");
}

Tokenizer Tokenizer::load(const std::string& path) {
  if (is_gguf_path(path) && file_exists(path)) {
    const GgufTokenizerFiles f = gguf_tokenizer_files(*GgufFile::open(path));
    if (!f.sentencepiece_model.empty()) return from_sentencepiece(f.sentencepiece_model, f.tokenizer_config_json, path);
    return from_json(f.tokenizer_json, f.tokenizer_config_json, path);
  }
  std::string file = path;
  if (dir_exists(path)) {
    if (file_exists(path + "/tokenizer.json")) {
      file = path + "/tokenizer.json";
    } else if (file_exists(path + "/tokenizer.model")) {
      file = path + "/tokenizer.model";
    } else {
      fail("[tokenizer] {}: no tokenizer.json or tokenizer.model in this directory; pass the tokenizer file or the model directory that holds it", path);
    }
  } else if (!file_exists(path)) {
    fail("[tokenizer] {}: no such file or directory; pass a tokenizer.json, a tokenizer.model or a model directory", path);
  }
  std::string cfg_path = dirname_of(file) + "/tokenizer_config.json";
  std::string cfg = file_exists(cfg_path) ? read_text_file(cfg_path) : std::string();
  if (file.size() >= 6 && file.compare(file.size() - 6, 6, ".model") == 0)
    return Tokenizer(tok_detail::load_sentencepiece_model(file, cfg));
  return Tokenizer(tok_detail::load_tokenizer_json(read_text_file(file), cfg, file));
}

}  // namespace qpeft
