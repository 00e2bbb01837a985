// Internal to the tokenizer: the loaded pipeline (normalizer, pre-tokenizer, BPE model,
// post-processor, decoder) as plain data, and the stage functions. Not a public header.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace qpeft::tok_detail {

struct Normalizer {
  enum Kind : uint8_t { kPrepend, kReplace, kNfc };
  Kind kind;
  std::string a, b;  // prepend: a; replace: a -> b
};

// The pre-tokenizer Split regexes implemented by hand (see tokenizer_pretok.cpp).
enum class SplitPattern : uint8_t { kNone, kGpt2, kLlama3, kQwen2 };

struct PreTokenizer {
  SplitPattern split = SplitPattern::kNone;
  bool byte_level = false;        // map bytes to the GPT-2 byte alphabet
  bool add_prefix_space = false;  // ByteLevel: prepend ' ' when the piece has none
  bool metaspace = false;
  std::string replacement = "\xE2\x96\x81";  // U+2581
  enum Prepend : uint8_t { kAlways, kFirst, kNever } prepend = kAlways;
  bool metaspace_split = true;
};

struct Decoder {
  enum Kind : uint8_t { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };
  Kind kind;
  std::string a, b;  // replace a -> b; strip content a; metaspace replacement a
  int start = 0, stop = 0;
  bool prepend_first = true;  // metaspace: strip the leading space of the first token
};

struct AddedToken {
  int32_t id;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Open-addressing hash index from strings to ids. Keys are views: the strings they point
// into must outlive the index and never move (build it once its storage is final).
class StrIndex {
 public:
  void reserve(size_t n);
  // Adds key -> value; an existing key keeps its value unless `overwrite`.
  void insert(std::string_view key, int32_t value, bool overwrite = false);
  int32_t find(std::string_view key) const;  // -1 when absent
  size_t size() const { return size_; }

 private:
  struct Slot {
    std::string_view key;
    uint32_t hash = 0;
    int32_t value = -1;  // -1: empty
  };
  static uint32_t hash_of(std::string_view s) { return uint32_t(std::hash<std::string_view>{}(s)); }
  std::vector<Slot> slots_;
  size_t size_ = 0;
};

// Open-addressing map from a token pair (left << 32 | right) to (rank << 32 | merged id).
class PairMap {
 public:
  void reserve(size_t n);
  void set(uint64_t key, uint64_t value);  // overwrites
  bool find(uint64_t key, uint64_t* value) const {
    if (keys_.empty()) return false;
    for (size_t i = slot(key);; i = (i + 1) & (keys_.size() - 1)) {
      if (keys_[i] == key) return *value = values_[i], true;
      if (keys_[i] == kEmpty) return false;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);  // ids are < 2^31: never a key
  size_t slot(uint64_t key) const { return size_t((key * 0x9E3779B97F4A7C15ull) >> shift_); }
  std::vector<uint64_t> keys_, values_;
  size_t size_ = 0;
  int shift_ = 64;
};

// Byte-wise trie matching added tokens leftmost-longest.
class TokenTrie {
 public:
  void add(std::string_view s, int32_t token_index);
  bool empty() const { return nodes_.size() <= 1; }
  // Longest token starting at s[i]; returns its index (or -1) and *len.
  int32_t match(std::string_view s, size_t i, size_t* len) const;
  bool may_start(unsigned char c) const { return first_[c]; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;
    int32_t token = -1;
  };
  std::vector<Node> nodes_ = std::vector<Node>(1);
  bool first_[256] = {};
};

struct BpeModel {
  // Vocabulary keyed by the bytes a token stands for: for byte-level models the token
  // string mapped back through the byte alphabet, otherwise the token string itself.
  std::vector<std::string> vocab_keys;  // storage of `vocab`'s keys
  StrIndex vocab;
  PairMap merges;  // (left << 32 | right) -> (rank << 32 | merged)
  int32_t byte_ids[256];        // byte-level: id of each single byte; byte fallback: <0xNN>
  std::unordered_map<uint32_t, int32_t> char_ids;  // single-character tokens (not byte-level)
  bool byte_level = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  bool fuse_unk = false;
  int32_t unk_id = -1;
};

// Splits a pre-token's bytes into ids (cached).
class BpeEncoder {
 public:
  explicit BpeEncoder(const BpeModel& m) : m_(m) {}
  void encode(std::string_view word, std::vector<int32_t>& out) const;

 private:
  void encode_uncached(std::string_view word, std::vector<int32_t>& out) const;
  const BpeModel& m_;
  // A word with its hash, computed once for both the shard and the map lookup.
  struct Hashed {
    std::string_view s;
    size_t h;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    size_t operator()(const Hashed& w) const { return w.h; }
  };
  struct Eq {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a == b; }
    bool operator()(const Hashed& a, std::string_view b) const { return a.s == b; }
    bool operator()(std::string_view a, const Hashed& b) const { return a == b.s; }
  };
  // The word cache, in shards chosen by the word's hash, so that threads encoding at once
  // (Tokenizer::encode_batch) seldom find a shard busy; a busy shard is skipped, not waited for.
  struct CacheShard {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>, Hash, Eq> map;
  };
  static constexpr size_t kCacheShards = 64;
  mutable CacheShard cache_[kCacheShards];
};

// A SentencePiece tokenizer.model behind SentencePieceProcessor (tokenizer_spm.cpp); opaque
// here so that only that file includes sentencepiece's headers.
struct SpmModel;
struct SpmDeleter {
  void operator()(SpmModel* p) const;
};
void spm_encode(const SpmModel& m, std::string_view text, std::vector<int32_t>& out);
std::string spm_decode(const SpmModel& m, const std::vector<int32_t>& ids, const std::vector<uint8_t>& special, bool skip_special);

struct TokenizerImpl {
  std::string source;
  std::unique_ptr<SpmModel, SpmDeleter> spm;  // set for tokenizer.model: the pipeline below is unused
  std::vector<Normalizer> normalizers;
  PreTokenizer pre;
  BpeModel model;
  std::unique_ptr<BpeEncoder> bpe;
  std::vector<Decoder> decoders;
  std::vector<AddedToken> added;       // in file order
  TokenTrie raw_trie, normalized_trie;  // indexes into `added`
  std::vector<int32_t> prefix_ids, suffix_ids;  // post-processor for add_special
  std::vector<std::string> id_to_token;  // model vocab + added tokens
  std::vector<uint8_t> special;          // per id
  StrIndex token_to_id;  // token strings as in the file (keys point into id_to_token)
  int32_t bos = -1, eos = -1, pad = -1, unk = -1;
  std::string bos_token, eos_token, chat_template;

  std::vector<int32_t> encode(std::string_view text, bool add_special) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const;
};

// Stages (tokenizer_pretok.cpp).
std::string normalize(const std::vector<Normalizer>& steps, std::string_view s);
// Calls emit(piece) for each pre-token of `s`. at_start: the piece begins the input.
void pre_tokenize(const PreTokenizer& p, std::string_view s, bool at_start, std::string& scratch,
                  const std::function<void(std::string_view)>& emit);
// Splits s with a Split pattern; appends [begin, end) byte ranges.
void split_pattern(SplitPattern pat, std::string_view s, std::vector<std::pair<uint32_t, uint32_t>>& out);
SplitPattern parse_split_regex(std::string_view regex);
// GPT-2 byte alphabet: byte -> code point, and back (-1 for code points not in it).
uint32_t byte_to_char(uint8_t b);
int byte_of_char(uint32_t cp);
std::string decode_pipeline(const std::vector<Decoder>& steps, std::vector<std::string> tokens);

}  // namespace qpeft::tok_detail

namespace qpeft::tok_detail {
// The parts of tokenizer_config.json the tokenizer uses.
struct TokenizerConfig {
  bool present = false;
  std::string bos_token, eos_token, pad_token, unk_token, chat_template, tokenizer_class;
  int add_bos_token = -1, add_eos_token = -1;  // -1: not given (or not a boolean)
};
TokenizerConfig parse_tokenizer_config(std::string_view text, const std::string& origin);
std::unique_ptr<TokenizerImpl> load_tokenizer_json(std::string_view text, std::string_view config_text, const std::string& origin);
// A SentencePiece tokenizer.model (BPE) converted as transformers' LlamaConverter does.
std::unique_ptr<TokenizerImpl> load_sentencepiece_model(const std::string& path, std::string_view config_text);
// The same from a serialized ModelProto; `origin` names it in errors.
std::unique_ptr<TokenizerImpl> load_sentencepiece_proto(std::string_view model_proto, const std::string& origin,
                                                        std::string_view config_text);
}  // namespace qpeft::tok_detail
