// BPE: splits one pre-token into ids by applying merges lowest rank first (ties: leftmost),
// as HF tokenizers' BPE::merge_word does. Short words scan an array of pair ranks; long
// words (megabyte inputs without spaces) use a heap, so the cost is O(n log n).
#include <algorithm>
#include <queue>

#include "text/tokenizer_impl.h"
#include "text/tokenizer_unicode.h"

namespace qpeft::tok_detail {

namespace {

constexpr uint32_t kNoRank = UINT32_MAX;
constexpr size_t kMaxCachedWord = 64;
constexpr size_t kMaxCacheEntries = 1 << 16;

struct Sym {
  int32_t id;
  int32_t prev, next;  // -1 at the ends
};

inline bool lookup(const BpeModel& m, int32_t a, int32_t b, uint32_t* rank, int32_t* merged) {
  uint64_t v;
  if (!m.merges.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b), &v)) return false;
  *rank = uint32_t(v >> 32);
  *merged = int32_t(uint32_t(v));
  return true;
}

// Array scan: O(n^2) compares but one hash lookup per merge; fast for short words.
void merge_small(const BpeModel& m, std::vector<Sym>& s) {
  size_t n = s.size();
  std::vector<uint32_t> rank(n, kNoRank);
  std::vector<int32_t> merged(n, -1);
  auto update = [&](int32_t i) {
    rank[i] = kNoRank;
    if (i >= 0 && s[i].next >= 0) lookup(m, s[i].id, s[s[i].next].id, &rank[i], &merged[i]);
  };
  for (size_t i = 0; i + 1 < n; ++i) update(int32_t(i));
  for (;;) {
    uint32_t best = kNoRank;
    int32_t bi = -1;
    for (int32_t i = 0; i >= 0; i = s[i].next)
      if (rank[i] < best) best = rank[i], bi = i;
    if (bi < 0) break;
    int32_t nx = s[bi].next;
    s[bi].id = merged[bi];
    s[bi].next = s[nx].next;
    if (s[nx].next >= 0) s[s[nx].next].prev = bi;
    rank[nx] = kNoRank;
    update(bi);
    if (s[bi].prev >= 0) update(s[bi].prev);
  }
}

// Heap of candidate merges; stale entries are skipped when popped.
void merge_large(const BpeModel& m, std::vector<Sym>& s) {
  struct Cand {
    uint32_t rank;
    int32_t pos, left, right, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int32_t i) {
    if (i < 0 || s[i].next < 0) return;
    Cand c{0, i, s[i].id, s[s[i].next].id, 0};
    if (lookup(m, c.left, c.right, &c.rank, &c.merged)) heap.push(c);
  };
  std::vector<uint8_t> dead(s.size(), 0);
  for (size_t i = 0; i + 1 < s.size(); ++i) push(int32_t(i));
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    int32_t i = c.pos;
    if (dead[i] || s[i].id != c.left || s[i].next < 0 || s[s[i].next].id != c.right) continue;
    int32_t nx = s[i].next;
    s[i].id = c.merged;
    s[i].next = s[nx].next;
    if (s[nx].next >= 0) s[s[nx].next].prev = i;
    dead[nx] = 1;
    push(s[i].prev);
    push(i);
  }
}

}  // namespace

void BpeEncoder::encode_uncached(std::string_view w, std::vector<int32_t>& out) const {
  if (m_.ignore_merges) {
    if (int32_t id = m_.vocab.find(w); id >= 0) {
      out.push_back(id);
      return;
    }
  }
  thread_local std::vector<Sym> s;
  s.clear();
  auto push = [&](int32_t id) { s.push_back(Sym{id, int32_t(s.size()) - 1, int32_t(s.size()) + 1}); };
  if (m_.byte_level) {
    for (unsigned char b : w)
      if (m_.byte_ids[b] >= 0) push(m_.byte_ids[b]);
  } else {
    bool last_unk = false;
    for (size_t i = 0, len = 0; i < w.size(); i += len) {
      uint32_t cp = unicode::decode_utf8(w, i, &len);
      auto it = (cp & unicode::kInvalidBit) ? m_.char_ids.end() : m_.char_ids.find(cp);
      if (it != m_.char_ids.end()) {
        push(it->second);
        last_unk = false;
        continue;
      }
      if (m_.byte_fallback) {
        bool all = true;
        for (size_t k = 0; k < len; ++k) all = all && m_.byte_ids[static_cast<unsigned char>(w[i + k])] >= 0;
        if (all) {
          for (size_t k = 0; k < len; ++k) push(m_.byte_ids[static_cast<unsigned char>(w[i + k])]);
          last_unk = false;
          continue;
        }
      }
      if (m_.unk_id < 0) continue;  // no unk token: the character is dropped, as in HF
      if (!(m_.fuse_unk && last_unk)) push(m_.unk_id);
      last_unk = true;
    }
  }
  if (s.empty()) return;
  s.back().next = -1;
  if (s.size() > 1) {
    if (s.size() <= 256)
      merge_small(m_, s);
    else
      merge_large(m_, s);
  }
  for (int32_t i = 0; i >= 0; i = s[i].next) out.push_back(s[i].id);
}

void BpeEncoder::encode(std::string_view w, std::vector<int32_t>& out) const {
  if (w.size() > kMaxCachedWord) return encode_uncached(w, out);
  const Hashed key{w, Hash{}(w)};
  CacheShard& shard = cache_[(key.h >> 40) % kCacheShards];
  std::unique_lock<std::mutex> lock(shard.mu, std::try_to_lock);
  if (!lock.owns_lock()) return encode_uncached(w, out);  // another thread holds this shard
  auto it = shard.map.find(key);
  if (it != shard.map.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  lock.unlock();  // the merges run outside the lock
  size_t start = out.size();
  encode_uncached(w, out);
  if (!lock.try_lock()) return;
  if (shard.map.size() >= kMaxCacheEntries / kCacheShards) shard.map.clear();
  shard.map.emplace(std::string(w), std::vector<int32_t>(out.begin() + start, out.end()));
}

}  // namespace qpeft::tok_detail
