// Tokenizer: the encode pipeline (added tokens -> normalizer -> added tokens of normalized
// content -> pre-tokenizer -> BPE -> post-processor) and decode, in the order HF tokenizers
// applies them (tokenizer/added_vocabulary.rs, tokenizer/mod.rs).
#include "text/tokenizer.h"

#include <atomic>
#include <exception>
#include <mutex>

#include "core/error.h"
#include "core/thread_pool.h"
#include "text/tokenizer_impl.h"
#include "text/tokenizer_unicode.h"

namespace qpeft {
namespace tok_detail {

void StrIndex::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n + n / 2 + 1) cap *= 2;
  if (cap <= slots_.size()) return;
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(cap, Slot{});
  for (const Slot& e : old) {
    if (e.value < 0) continue;
    size_t i = e.hash & (cap - 1);
    while (slots_[i].value >= 0) i = (i + 1) & (cap - 1);
    slots_[i] = e;
  }
}

void StrIndex::insert(std::string_view key, int32_t value, bool overwrite) {
  if ((size_ + 1) * 3 > slots_.size() * 2) reserve(slots_.size() + 1);  // load <= 2/3
  uint32_t h = hash_of(key);
  size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    Slot& e = slots_[i];
    if (e.value < 0) {
      e = Slot{key, h, value};
      ++size_;
      return;
    }
    if (e.hash == h && e.key == key) {
      if (overwrite) e.key = key, e.value = value;
      return;
    }
  }
}

int32_t StrIndex::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  uint32_t h = hash_of(key);
  size_t mask = slots_.size() - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    const Slot& e = slots_[i];
    if (e.value < 0) return -1;
    if (e.hash == h && e.key == key) return e.value;
  }
}

void PairMap::reserve(size_t n) {
  size_t cap = 16;
  int bits = 4;
  while (cap < n + n / 2 + 1) cap *= 2, ++bits;
  if (cap <= keys_.size()) return;
  std::vector<uint64_t> old_keys(cap, kEmpty), old_values(cap);
  old_keys.swap(keys_), old_values.swap(values_);
  shift_ = 64 - bits;
  size_ = 0;
  for (size_t i = 0; i < old_keys.size(); ++i)
    if (old_keys[i] != kEmpty) set(old_keys[i], old_values[i]);
}

void PairMap::set(uint64_t key, uint64_t value) {
  if ((size_ + 1) * 3 > keys_.size() * 2) reserve(keys_.size() + 1);
  for (size_t i = slot(key);; i = (i + 1) & (keys_.size() - 1)) {
    if (keys_[i] == key) {
      values_[i] = value;
      return;
    }
    if (keys_[i] == kEmpty) {
      keys_[i] = key, values_[i] = value;
      ++size_;
      return;
    }
  }
}

void TokenTrie::add(std::string_view s, int32_t token_index) {
  if (s.empty()) return;
  first_[static_cast<unsigned char>(s[0])] = true;
  size_t node = 0;
  for (unsigned char c : s) {
    int32_t next = -1;
    for (auto& [k, v] : nodes_[node].next)
      if (k == c) next = v;
    if (next < 0) {
      next = int32_t(nodes_.size());
      nodes_[node].next.emplace_back(c, next);
      nodes_.emplace_back();
    }
    node = size_t(next);
  }
  if (nodes_[node].token < 0) nodes_[node].token = token_index;  // first definition wins
}

int32_t TokenTrie::match(std::string_view s, size_t i, size_t* len) const {
  int32_t best = -1;
  size_t node = 0;
  for (size_t j = i; j < s.size(); ++j) {
    int32_t next = -1;
    for (auto& [k, v] : nodes_[node].next)
      if (k == static_cast<unsigned char>(s[j])) next = v;
    if (next < 0) break;
    node = size_t(next);
    if (nodes_[node].token >= 0) best = nodes_[node].token, *len = j + 1 - i;
  }
  return best;
}

namespace {

bool is_word_char(uint32_t cp) {
  auto c = unicode::char_class(cp);
  return c == unicode::kLetter || c == unicode::kNumber || cp == '_';
}

// Start of the character that ends at s[end) (end > 0).
size_t prev_char(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && end - i < 4 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  size_t len;
  unicode::decode_utf8(s, i, &len);
  return i + len == end ? i : end - 1;
}

// Splits s on the added tokens of `trie` (HF AddedVocabulary::find_matches): matched tokens
// append their id, the text between them goes to on_text(piece, piece_starts_at_0).
template <class F>
void split_added(const TokenizerImpl& t, const TokenTrie& trie, std::string_view s, std::vector<int32_t>& ids, F&& on_text) {
  if (trie.empty()) {
    if (!s.empty()) on_text(s, true);
    return;
  }
  size_t done = 0;  // end of the last match
  for (size_t i = 0; i < s.size();) {
    size_t len = 0;
    int32_t k = trie.may_start(static_cast<unsigned char>(s[i])) ? trie.match(s, i, &len) : -1;
    if (k < 0) {
      ++i;
      continue;
    }
    const AddedToken& a = t.added[size_t(k)];
    size_t start = i, stop = i + len;
    if (a.single_word) {
      size_t l;
      bool left_word = start > 0 && is_word_char(unicode::decode_utf8(s, prev_char(s, start), &l));
      bool right_word = stop < s.size() && is_word_char(unicode::decode_utf8(s, stop, &l));
      if (left_word || right_word) {
        ++i;
        continue;
      }
    }
    if (a.lstrip) {
      while (start > done) {
        size_t p = prev_char(s, start), l;
        if (!unicode::is_space(unicode::decode_utf8(s, p, &l))) break;
        start = p;
      }
    }
    if (a.rstrip) {
      size_t l;
      while (stop < s.size() && unicode::is_space(unicode::decode_utf8(s, stop, &l))) stop += l;
    }
    if (start > done) on_text(s.substr(done, start - done), done == 0);
    ids.push_back(a.id);
    done = i = stop;
  }
  if (done < s.size()) on_text(s.substr(done), done == 0);
}

}  // namespace

std::vector<int32_t> TokenizerImpl::encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special) ids = prefix_ids;
  if (spm) {
    spm_encode(*spm, text, ids);
    if (add_special) ids.insert(ids.end(), suffix_ids.begin(), suffix_ids.end());
    return ids;
  }
  std::string scratch;
  auto emit = [&](std::string_view w) { bpe->encode(w, ids); };
  auto model_stage = [&](std::string_view piece, bool at_start) { pre_tokenize(pre, piece, at_start, scratch, emit); };
  split_added(*this, raw_trie, text, ids, [&](std::string_view piece, bool at_start) {
    if (normalizers.empty()) {
      split_added(*this, normalized_trie, piece, ids, [&](std::string_view sub, bool sub_start) { model_stage(sub, at_start && sub_start); });
      return;
    }
    std::string norm = normalize(normalizers, piece);
    split_added(*this, normalized_trie, norm, ids, [&](std::string_view sub, bool sub_start) { model_stage(sub, at_start && sub_start); });
  });
  if (add_special) ids.insert(ids.end(), suffix_ids.begin(), suffix_ids.end());
  return ids;
}

std::string TokenizerImpl::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  if (spm) {
    for (size_t i = 0; i < ids.size(); ++i)
      QP_CHECK(ids[i] >= 0 && size_t(ids[i]) < id_to_token.size(), "[tokenizer] decode: token id {} (position {}) is outside the vocabulary [0, {}) of {}", ids[i], i, id_to_token.size(), source);
    return spm_decode(*spm, ids, special, skip_special);
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    QP_CHECK(id >= 0 && size_t(id) < id_to_token.size(), "[tokenizer] decode: token id {} (position {}) is outside the vocabulary [0, {}) of {}", id, i, id_to_token.size(), source);
    if (skip_special && special[size_t(id)]) continue;
    if (id_to_token[size_t(id)].empty()) continue;  // an unused id
    tokens.push_back(id_to_token[size_t(id)]);
  }
  if (decoders.empty()) {
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return unicode::to_valid_utf8(out);
  }
  return unicode::to_valid_utf8(decode_pipeline(decoders, std::move(tokens)));
}

}  // namespace tok_detail

Tokenizer::Tokenizer(std::unique_ptr<tok_detail::TokenizerImpl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const { return impl_->encode(text, add_special); }
std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string_view>& texts, bool add_special) const {
  std::vector<std::vector<int32_t>> out(texts.size());
  std::atomic<size_t> next{0};
  std::mutex mu;
  std::exception_ptr error;
  pool().run([&](int, int) {
    for (size_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < texts.size();) {
      try {
        out[i] = impl_->encode(texts[i], add_special);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
      }
    }
  });
  if (error) std::rethrow_exception(error);
  return out;
}
std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const { return impl_->decode(ids, skip_special); }
int32_t Tokenizer::bos_id() const { return impl_->bos; }
int32_t Tokenizer::eos_id() const { return impl_->eos; }
int32_t Tokenizer::pad_id() const { return impl_->pad; }
int32_t Tokenizer::unk_id() const { return impl_->unk; }
int32_t Tokenizer::vocab_size() const { return int32_t(impl_->id_to_token.size()); }
const std::string& Tokenizer::id_to_token(int32_t id) const {
  QP_CHECK(id >= 0 && size_t(id) < impl_->id_to_token.size(), "[tokenizer] token id {} is outside the vocabulary [0, {})", id, impl_->id_to_token.size());
  return impl_->id_to_token[size_t(id)];
}
int32_t Tokenizer::token_to_id(std::string_view token) const {
  return impl_->token_to_id.find(token);
}
bool Tokenizer::is_special(int32_t id) const { return id >= 0 && size_t(id) < impl_->special.size() && impl_->special[size_t(id)]; }
const std::string& Tokenizer::bos_token() const { return impl_->bos_token; }
const std::string& Tokenizer::eos_token() const { return impl_->eos_token; }
const std::string& Tokenizer::chat_template() const { return impl_->chat_template; }
const std::string& Tokenizer::source() const { return impl_->source; }

}  // namespace qpeft
