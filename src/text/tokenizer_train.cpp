// Byte-level BPE training (see tokenizer_train.h). The merge loop follows HF tokenizers'
// BpeTrainer::do_train step for step, so that its choices (and its quirks) are the same:
//  - a heap of (count, pair, words to update); the largest count wins, ties go to the
//    smaller (left id, right id);
//  - a popped entry whose count is stale is pushed back with the current count;
//  - merging a pair updates the counts of its neighbour pairs only (the merged pair keeps
//    its count) and queues every pair that gained occurrences, with the words where it did;
//  - a pair merged twice (its words were queued in two entries) keeps its last rank, as
//    HF's HashMap of merges does when the model is saved.
#include "text/tokenizer_train.h"

#include <fmt/core.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <queue>

#include "core/error.h"
#include "core/file.h"
#include "text/chat_template.h"
#include "text/tokenizer_impl.h"
#include "text/tokenizer_unicode.h"

namespace qpeft {

using ojson = nlohmann::ordered_json;

BpeSplit parse_bpe_split(std::string_view name) {
  if (name == "llama3") return BpeSplit::kLlama3;
  if (name == "gpt2") return BpeSplit::kGpt2;
  fail("[train-tokenizer] unknown pre-tokenizer \"{}\"; choose llama3 (Llama 3's split regex) or gpt2 (GPT-2's)", name);
}

// ---------------------------------------------------------------- counting words

BpeTrainer::BpeTrainer(BpeTrainOptions options) : o_(std::move(options)) {}

void BpeTrainer::feed_sequence(std::string_view seq) {
  thread_local std::vector<std::pair<uint32_t, uint32_t>> ranges;
  ranges.clear();
  tok_detail::split_pattern(o_.split == BpeSplit::kGpt2 ? tok_detail::SplitPattern::kGpt2 : tok_detail::SplitPattern::kLlama3,
                            seq, ranges);
  for (auto [b, e] : ranges) ++counts_[std::string(seq.substr(b, e - b))];
  words_ += ranges.size();
  ++sequences_;
}

void BpeTrainer::feed(std::string_view text) {
  bytes_ += text.size();
  if (!o_.split_lines) {
    if (!text.empty()) feed_sequence(text);
    return;
  }
  // Lines with their ending, as Tokenizer::train_from_files reads them.
  for (size_t i = 0; i < text.size();) {
    size_t nl = text.find('\n', i);
    size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
    feed_sequence(text.substr(i, end - i));
    i = end;
  }
}

void BpeTrainer::feed_file(const std::string& path) { feed(read_text_file(path)); }

// ---------------------------------------------------------------- training

namespace {

inline uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
inline int32_t left(uint64_t k) { return int32_t(k >> 32); }
inline int32_t right(uint64_t k) { return int32_t(uint32_t(k)); }

// The token string as tokenizer.json spells it: each byte as its GPT-2 alphabet character.
std::string byte_level_string(std::string_view bytes) {
  std::string s;
  for (unsigned char b : bytes) unicode::append_utf8(s, tok_detail::byte_to_char(b));
  return s;
}

struct Entry {
  int64_t count;
  uint64_t pair;
  uint32_t slot;  // index into the word lists
  uint64_t seq;   // push order; only orders entries equal in count and pair
  // std::priority_queue pops the largest: larger count, then smaller pair, then older.
  bool operator<(const Entry& o) const {
    if (count != o.count) return count < o.count;
    if (pair != o.pair) return pair > o.pair;
    return seq > o.seq;
  }
};

struct Change {
  uint64_t pair;
  int32_t delta;  // +1 or -1 (times the word's count)
  uint32_t word;
};

// Merges every (a, b) in w left to right into m; records the neighbour pairs that change,
// as HF's Word::merge does.
void merge_word(std::vector<int32_t>& w, int32_t a, int32_t b, int32_t m, uint32_t wi, std::vector<Change>& out) {
  size_t n = w.size(), o = 0;
  for (size_t i = 0; i < n;) {
    if (w[i] == a && i + 1 < n && w[i + 1] == b) {
      if (o > 0) {
        out.push_back({key(w[o - 1], a), -1, wi});
        out.push_back({key(w[o - 1], m), +1, wi});
      }
      w[o++] = m;
      i += 2;
      if (i < n) {
        out.push_back({key(b, w[i]), -1, wi});
        out.push_back({key(m, w[i]), +1, wi});
      }
    } else {
      w[o++] = w[i++];
    }
  }
  w.resize(o);
}

}  // namespace

TrainedBpe BpeTrainer::train() const {
  const int32_t n_special = int32_t(o_.special_tokens.size());
  QP_CHECK(o_.vocab_size >= n_special + 256 || !o_.all_bytes,
           "[train-tokenizer] vocab size {} is too small: it must hold the {} special tokens and the 256 byte tokens (at least {})",
           o_.vocab_size, n_special, n_special + 256);
  TrainedBpe r;
  r.options = o_;
  r.num_special = n_special;
  r.bytes = bytes_, r.sequences = sequences_, r.words = words_, r.unique_words = counts_.size();

  // Vocabulary keyed by the tokenizer.json string (HF's word_to_id).
  std::vector<std::string> id_str;
  std::unordered_map<std::string, int32_t> str_id;
  for (const auto& s : o_.special_tokens) {
    QP_CHECK(!s.empty(), "[train-tokenizer] a special token is empty; give non-empty strings separated by commas");
    QP_CHECK(!str_id.count(s), "[train-tokenizer] special token \"{}\" is given twice", s);
    str_id.emplace(s, int32_t(id_str.size()));
    id_str.push_back(s);
  }
  // The byte alphabet sorted by code point.
  bool seen[256] = {};
  for (const auto& kv : counts_)
    for (unsigned char c : kv.first) seen[c] = true;
  std::vector<std::pair<uint32_t, uint8_t>> alphabet;
  for (int b = 0; b < 256; ++b)
    if (o_.all_bytes || seen[b]) alphabet.emplace_back(tok_detail::byte_to_char(uint8_t(b)), uint8_t(b));
  std::sort(alphabet.begin(), alphabet.end());
  r.num_bytes = int32_t(alphabet.size());
  int32_t byte_id[256];
  std::fill(std::begin(byte_id), std::end(byte_id), -1);
  for (auto [cp, b] : alphabet) {
    std::string s;
    unicode::append_utf8(s, cp);
    auto [it, fresh] = str_id.emplace(s, int32_t(id_str.size()));
    if (fresh) id_str.push_back(s);
    byte_id[b] = it->second;
  }

  // Words in byte order (any order gives the same result; this one is reproducible).
  std::vector<const std::pair<const std::string, uint64_t>*> sorted;
  sorted.reserve(counts_.size());
  for (const auto& kv : counts_) sorted.push_back(&kv);
  std::sort(sorted.begin(), sorted.end(), [](auto* x, auto* y) { return x->first < y->first; });
  std::vector<std::vector<int32_t>> words(sorted.size());
  std::vector<int64_t> wcount(sorted.size());
  for (size_t i = 0; i < sorted.size(); ++i) {
    for (unsigned char c : sorted[i]->first) words[i].push_back(byte_id[c]);
    wcount[i] = int64_t(sorted[i]->second);
  }

  // Initial pair counts and the words each pair occurs in.
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;
  for (uint32_t i = 0; i < words.size(); ++i) {
    const auto& w = words[i];
    for (size_t k = 0; k + 1 < w.size(); ++k) {
      uint64_t p = key(w[k], w[k + 1]);
      pair_count[p] += wcount[i];
      auto& v = where[p];
      if (v.empty() || v.back() != i) v.push_back(i);
    }
  }
  std::vector<std::vector<uint32_t>> slots;
  std::vector<uint32_t> free_slots;
  std::priority_queue<Entry> heap;
  uint64_t seq = 0;
  auto drain = [&] {
    std::vector<uint64_t> keys;
    keys.reserve(where.size());
    for (auto& kv : where) keys.push_back(kv.first);
    std::sort(keys.begin(), keys.end());
    for (uint64_t p : keys) {
      int64_t c = pair_count[p];
      if (c <= 0) continue;
      std::vector<uint32_t>& pos = where[p];
      std::sort(pos.begin(), pos.end());
      pos.erase(std::unique(pos.begin(), pos.end()), pos.end());
      uint32_t slot;
      if (!free_slots.empty()) {
        slot = free_slots.back();
        free_slots.pop_back();
        slots[slot].swap(pos);
      } else {
        slot = uint32_t(slots.size());
        slots.push_back(std::move(pos));
      }
      heap.push(Entry{c, p, slot, seq++});
    }
    where.clear();
  };
  drain();

  std::vector<std::pair<uint64_t, int32_t>> merges;
  std::vector<Change> changes;
  while (int32_t(id_str.size()) < o_.vocab_size && !heap.empty()) {
    Entry top = heap.top();
    heap.pop();
    int64_t now = pair_count[top.pair];
    if (top.count != now) {
      top.count = now;
      top.seq = seq++;
      heap.push(top);
      continue;
    }
    if (top.count < 1 || int64_t(o_.min_frequency) > top.count) break;
    int32_t a = left(top.pair), b = right(top.pair);
    std::string s = id_str[size_t(a)] + id_str[size_t(b)];
    auto [it, fresh] = str_id.emplace(s, int32_t(id_str.size()));
    if (fresh) id_str.push_back(std::move(s));
    int32_t m = it->second;
    merges.emplace_back(top.pair, m);

    changes.clear();
    for (uint32_t wi : slots[top.slot]) merge_word(words[wi], a, b, m, wi, changes);
    std::vector<uint32_t>().swap(slots[top.slot]);
    free_slots.push_back(top.slot);
    for (const Change& c : changes) {
      pair_count[c.pair] += c.delta * wcount[c.word];
      if (c.delta > 0) where[c.pair].push_back(c.word);
    }
    drain();
  }

  // A pair merged more than once keeps its last rank.
  std::unordered_map<uint64_t, size_t> last;
  for (size_t i = 0; i < merges.size(); ++i) last[merges[i].first] = i;
  for (size_t i = 0; i < merges.size(); ++i)
    if (last[merges[i].first] == i) r.merges.push_back({{left(merges[i].first), right(merges[i].first)}, merges[i].second});

  // Token bytes: special tokens as written, the rest mapped back through the alphabet.
  r.tokens.resize(id_str.size());
  for (size_t id = 0; id < id_str.size(); ++id) {
    if (int32_t(id) < n_special) {
      r.tokens[id] = id_str[id];
      continue;
    }
    const std::string& t = id_str[id];
    for (size_t i = 0, len = 0; i < t.size(); i += len) r.tokens[id].push_back(char(tok_detail::byte_of_char(unicode::decode_utf8(t, i, &len))));
  }
  return r;
}

// ---------------------------------------------------------------- writing

namespace {

std::string token_string(const TrainedBpe& t, int32_t id) {
  return id < t.num_special ? t.tokens[size_t(id)] : byte_level_string(t.tokens[size_t(id)]);
}

int32_t special_id(const TrainedBpe& t, const std::string& s, const char* what) {
  for (int32_t i = 0; i < t.num_special; ++i)
    if (t.tokens[size_t(i)] == s) return i;
  std::string list;
  for (int32_t i = 0; i < t.num_special; ++i) list += (i ? ", " : "") + t.tokens[size_t(i)];
  fail("[train-tokenizer] the {} token \"{}\" is not one of the special tokens ({}); add it to --special-tokens", what, s,
       list.empty() ? "none given" : list);
}

ojson added_token(const std::string& content, int32_t id, bool with_id) {
  ojson a;
  if (with_id) a["id"] = id;
  a["content"] = content;
  a["single_word"] = false;
  a["lstrip"] = false;
  a["rstrip"] = false;
  a["normalized"] = false;
  a["special"] = true;
  return a;
}

ojson byte_level(bool add_prefix_space, bool trim_offsets, bool use_regex) {
  return ojson{{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"trim_offsets", trim_offsets}, {"use_regex", use_regex}};
}

// The Split regexes exactly as Llama 3's and GPT-2's tokenizer.json files write them.
constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

}  // namespace

std::string TrainedBpe::tokenizer_json(const TokenizerConfigOptions& cfg) const {
  ojson j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = ojson::array();
  for (int32_t i = 0; i < num_special; ++i) j["added_tokens"].push_back(added_token(tokens[size_t(i)], i, true));
  j["normalizer"] = nullptr;
  if (options.split == BpeSplit::kLlama3) {
    ojson split{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Regex}}}, {"behavior", "Isolated"}, {"invert", false}};
    j["pre_tokenizer"] = ojson{{"type", "Sequence"}, {"pretokenizers", ojson::array({split, byte_level(false, true, false)})}};
  } else {
    j["pre_tokenizer"] = byte_level(false, true, true);
  }
  ojson post = byte_level(true, false, true);
  if (!cfg.bos_token.empty() && cfg.add_bos) {
    int32_t bos = special_id(*this, cfg.bos_token, "bos");
    auto special = [&](int type_id) { return ojson{{"SpecialToken", {{"id", cfg.bos_token}, {"type_id", type_id}}}}; };
    auto seq = [](const char* id, int type_id) { return ojson{{"Sequence", {{"id", id}, {"type_id", type_id}}}}; };
    ojson tp;
    tp["type"] = "TemplateProcessing";
    tp["single"] = ojson::array({special(0), seq("A", 0)});
    tp["pair"] = ojson::array({special(0), seq("A", 0), special(1), seq("B", 1)});
    tp["special_tokens"] = {{cfg.bos_token, {{"id", cfg.bos_token}, {"ids", {bos}}, {"tokens", {cfg.bos_token}}}}};
    post = ojson{{"type", "Sequence"}, {"processors", ojson::array({post, tp})}};
  }
  j["post_processor"] = post;
  j["decoder"] = byte_level(true, true, true);
  ojson m;
  m["type"] = "BPE";
  m["dropout"] = nullptr;
  m["unk_token"] = nullptr;
  m["continuing_subword_prefix"] = nullptr;
  m["end_of_word_suffix"] = nullptr;
  m["fuse_unk"] = false;
  m["byte_fallback"] = false;
  m["ignore_merges"] = false;
  ojson vocab = ojson::object();
  for (int32_t id = 0; id < vocab_size(); ++id) vocab[token_string(*this, id)] = id;
  m["vocab"] = std::move(vocab);
  ojson ms = ojson::array();
  for (const auto& [pair, merged] : merges) ms.push_back(token_string(*this, pair.first) + " " + token_string(*this, pair.second));
  m["merges"] = std::move(ms);
  j["model"] = std::move(m);
  return j.dump(2) + "\n";
}

std::string TrainedBpe::config_json(const TokenizerConfigOptions& cfg) const {
  ojson j;
  j["add_bos_token"] = cfg.add_bos && !cfg.bos_token.empty();
  j["add_eos_token"] = false;
  ojson dec = ojson::object();
  for (int32_t i = 0; i < num_special; ++i) dec[std::to_string(i)] = added_token(tokens[size_t(i)], i, false);
  j["added_tokens_decoder"] = std::move(dec);
  if (!cfg.bos_token.empty()) special_id(*this, cfg.bos_token, "bos");
  if (!cfg.eos_token.empty()) special_id(*this, cfg.eos_token, "eos");
  j["bos_token"] = cfg.bos_token.empty() ? ojson(nullptr) : ojson(cfg.bos_token);
  if (!cfg.chat_template.empty()) {
    ChatTemplate::parse(cfg.chat_template, "--chat-template");  // fails early on what qpeft cannot render
    j["chat_template"] = cfg.chat_template;
  }
  j["clean_up_tokenization_spaces"] = false;
  j["eos_token"] = cfg.eos_token.empty() ? ojson(nullptr) : ojson(cfg.eos_token);
  j["model_max_length"] = 1000000000000000019ULL;
  j["tokenizer_class"] = "PreTrainedTokenizerFast";
  return j.dump(2) + "\n";
}

}  // namespace qpeft
