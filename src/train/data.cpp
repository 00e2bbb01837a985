#include "train/data.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace qpeft {

std::vector<Example> pack_examples(const std::vector<Example>& examples, int64_t seq_len) {
  std::vector<Example> out;
  Example cur;
  for (const Example& e : examples) {
    if (!cur.input_ids.empty() && int64_t(cur.input_ids.size() + e.input_ids.size()) > seq_len) {
      out.push_back(std::move(cur));
      cur = Example();
    }
    cur.input_ids.insert(cur.input_ids.end(), e.input_ids.begin(), e.input_ids.end());
    cur.labels.insert(cur.labels.end(), e.labels.begin(), e.labels.end());
  }
  if (!cur.input_ids.empty()) out.push_back(std::move(cur));
  return out;
}

Batcher::Batcher(const std::vector<Example>& data, int64_t batch, int64_t seq_len, uint64_t seed, bool shuffle,
                 int32_t pad_id)
    : data_(data), batch_(batch), seq_len_(seq_len), seed_(seed), shuffle_(shuffle), pad_id_(pad_id) {
  QP_CHECK(!data.empty(), "no training examples");
  QP_CHECK(batch > 0 && seq_len >= 2, "batch ({}) must be positive and seq-len ({}) at least 2", batch, seq_len);
}

int64_t Batcher::batches_per_epoch() const { return (int64_t(data_.size()) + batch_ - 1) / batch_; }

size_t Batcher::example_at(int64_t position) const {
  const int64_t n = int64_t(data_.size());
  const int64_t epoch = position / n;
  if (!shuffle_) return size_t(position % n);
  if (epoch != cached_epoch_) {
    perm_.resize(size_t(n));
    std::iota(perm_.begin(), perm_.end(), size_t(0));
    Rng rng(splitmix64(seed_ ^ (0xda7a0000ull + uint64_t(epoch))));
    for (int64_t i = n - 1; i > 0; --i) std::swap(perm_[size_t(i)], perm_[rng.below(uint64_t(i + 1))]);
    cached_epoch_ = epoch;
  }
  return perm_[size_t(position % n)];
}

Batch Batcher::get(int64_t k) const {
  Batch b;
  b.B = batch_;
  std::vector<const Example*> rows;
  for (int64_t r = 0; r < batch_; ++r) {
    const Example* ex = &data_[example_at(k * batch_ + r)];
    rows.push_back(ex);
    b.T = std::max<int64_t>(b.T, std::min<int64_t>(seq_len_, int64_t(ex->input_ids.size())));
  }
  b.ids.assign(size_t(b.B * b.T), pad_id_);
  b.labels.assign(size_t(b.B * b.T), -100);
  for (int64_t r = 0; r < batch_; ++r) {
    const Example& ex = *rows[size_t(r)];
    const int64_t n = std::min<int64_t>(b.T, int64_t(ex.input_ids.size()));
    if (int64_t(ex.input_ids.size()) > seq_len_) b.truncated++;
    std::copy(ex.input_ids.begin(), ex.input_ids.begin() + n, b.ids.begin() + r * b.T);
    std::copy(ex.labels.begin(), ex.labels.begin() + n, b.labels.begin() + r * b.T);
    b.tokens += n;
  }
  return b;
}

}  // namespace qpeft
