#include "train/data.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace qpeft {

std::vector<Example> read_pretokenized_jsonl(const std::string& path) {
  std::ifstream in(path);
  QP_CHECK(in, "{}: cannot open data file", path);
  std::vector<Example> out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}:{}: invalid JSON: {}", path, lineno, e.what());
    }
    QP_CHECK(j.is_object() && j.contains("input_ids") && j["input_ids"].is_array(),
             "{}:{}: expected an object with an \"input_ids\" array (pre-tokenized format)", path, lineno);
    Example ex;
    for (const auto& v : j["input_ids"]) {
      QP_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() < INT32_MAX,
               "{}:{}: input_ids must be non-negative integers (found {})", path, lineno, v.dump());
      ex.input_ids.push_back(v.get<int32_t>());
    }
    if (j.contains("labels")) {
      QP_CHECK(j["labels"].is_array() && j["labels"].size() == ex.input_ids.size(),
               "{}:{}: \"labels\" must be an array as long as \"input_ids\" ({})", path, lineno, ex.input_ids.size());
      for (const auto& v : j["labels"]) {
        QP_CHECK(v.is_number_integer() && (v.get<int64_t>() >= 0 || v.get<int64_t>() == -100) &&
                     v.get<int64_t>() < INT32_MAX,
                 "{}:{}: labels must be token ids or -100 (found {})", path, lineno, v.dump());
        ex.labels.push_back(v.get<int32_t>());
      }
    } else {
      ex.labels = ex.input_ids;
    }
    QP_CHECK(ex.input_ids.size() >= 2, "{}:{}: an example needs at least 2 tokens", path, lineno);
    out.push_back(std::move(ex));
  }
  QP_CHECK(!out.empty(), "{}: no examples (empty data set)", path);
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
