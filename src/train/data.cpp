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

size_t EpochOrder::at(int64_t position) const {
  const int64_t n = int64_t(n_);
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

namespace {

// Rows padded to the longest (at most seq_len) with pad_id and label -100; longer rows are cut.
Batch assemble_batch(const std::vector<const Example*>& rows, int64_t seq_len, int32_t pad_id) {
  Batch b;
  b.B = int64_t(rows.size());
  for (const Example* ex : rows) b.T = std::max<int64_t>(b.T, std::min<int64_t>(seq_len, int64_t(ex->input_ids.size())));
  b.ids.assign(size_t(b.B * b.T), pad_id);
  b.labels.assign(size_t(b.B * b.T), -100);
  for (int64_t r = 0; r < b.B; ++r) {
    const Example& ex = *rows[size_t(r)];
    const int64_t n = std::min<int64_t>(b.T, int64_t(ex.input_ids.size()));
    if (int64_t(ex.input_ids.size()) > seq_len) b.truncated++;
    std::copy(ex.input_ids.begin(), ex.input_ids.begin() + n, b.ids.begin() + r * b.T);
    std::copy(ex.labels.begin(), ex.labels.begin() + n, b.labels.begin() + r * b.T);
    b.tokens += n;
  }
  return b;
}

}  // namespace

BatchStream::BatchStream(size_t n, int64_t batch, int64_t seq_len, uint64_t seed, bool shuffle, int32_t pad_id)
    : n_(n), batch_(batch), seq_len_(seq_len), pad_id_(pad_id), order_(n, seed, shuffle) {
  QP_CHECK(n > 0, "no training examples");
  QP_CHECK(batch > 0 && seq_len >= 2, "batch ({}) must be positive and seq-len ({}) at least 2", batch, seq_len);
}

Batcher::Batcher(const std::vector<Example>& data, int64_t batch, int64_t seq_len, uint64_t seed, bool shuffle,
                 int32_t pad_id)
    : BatchStream(data.size(), batch, seq_len, seed, shuffle, pad_id), data_(data) {}

Batch Batcher::get(int64_t k) const {
  std::vector<const Example*> rows;
  for (int64_t r = 0; r < batch_; ++r) rows.push_back(&data_[order_.at(k * batch_ + r)]);
  return assemble_batch(rows, seq_len_, pad_id_);
}

ChoiceBatcher::ChoiceBatcher(const std::vector<ChoiceExample>& data, int64_t batch, int64_t seq_len, uint64_t seed,
                             bool shuffle, int32_t pad_id)
    : BatchStream(data.size(), batch, seq_len, seed, shuffle, pad_id) {
  for (size_t i = 0; i < data.size(); ++i) {
    const ChoiceExample& ex = data[i];
    std::vector<Example> rows;
    uint8_t cut = 0;
    for (size_t c = 0; c < ex.choice_ids.size(); ++c) {
      const auto& choice = ex.choice_ids[c];
      QP_CHECK(!choice.empty() && int64_t(choice.size()) < seq_len,
               "multiple-choice example {}: choice {} has {} tokens; each needs 1 .. seq-len − 1 ({})", i + 1, c,
               choice.size(), seq_len - 1);
      // Keep the whole choice and as much of the end of the prompt as fits.
      const size_t keep = std::min(ex.prompt_ids.size(), size_t(seq_len) - choice.size());
      cut |= keep < ex.prompt_ids.size();
      Example row;
      row.input_ids.assign(ex.prompt_ids.end() - ptrdiff_t(keep), ex.prompt_ids.end());
      row.labels.assign(keep, kIgnoreLabel);
      row.input_ids.insert(row.input_ids.end(), choice.begin(), choice.end());
      row.labels.insert(row.labels.end(), choice.begin(), choice.end());
      rows.push_back(std::move(row));
    }
    QP_CHECK(rows.size() >= 2, "multiple-choice example {} has fewer than two choices", i + 1);
    rows_.push_back(std::move(rows));
    cut_.push_back(cut);
    answer_.push_back(ex.answer);
  }
}

ChoiceBatch ChoiceBatcher::get(int64_t k) const {
  ChoiceBatch out;
  std::vector<const Example*> rows;
  int64_t cut = 0;
  for (int64_t e = 0; e < batch_; ++e) {
    const size_t i = order_.at(k * batch_ + e);
    cut += cut_[i];
    for (size_t c = 0; c < rows_[i].size(); ++c) {
      rows.push_back(&rows_[i][c]);
      out.row_example.push_back(e);
      out.row_correct.push_back(int(c) == answer_[i]);
    }
  }
  out.rows = assemble_batch(rows, seq_len_, pad_id_);
  out.rows.truncated = cut;
  return out;
}

std::vector<RowRun> length_runs(const Batch& b, int64_t run_overhead) {
  // need[r]: positions row r must be computed at (its last label's position + 1, at least 1).
  std::vector<int64_t> need(size_t(b.B), 1);
  for (int64_t r = 0; r < b.B; ++r)
    for (int64_t t = b.T - 1; t > 0; --t)
      if (b.labels[size_t(r * b.T + t)] != kIgnoreIndex) {
        need[size_t(r)] = t + 1;
        break;
      }
  // cost[i]: fewest positions for rows [0, i); from[i]: where the last run of that cut starts.
  std::vector<int64_t> cost(size_t(b.B + 1), 0), from(size_t(b.B + 1), 0);
  for (int64_t i = 1; i <= b.B; ++i) {
    int64_t longest = 0;
    cost[size_t(i)] = -1;
    for (int64_t j = i - 1; j >= 0; --j) {
      longest = std::max(longest, need[size_t(j)]);
      const int64_t c = cost[size_t(j)] + (i - j) * longest + (j > 0 ? run_overhead : 0);
      if (cost[size_t(i)] < 0 || c < cost[size_t(i)]) {
        cost[size_t(i)] = c;
        from[size_t(i)] = j;
      }
    }
  }
  std::vector<RowRun> runs;
  for (int64_t i = b.B; i > 0; i = from[size_t(i)]) {
    RowRun run{from[size_t(i)], i, 0};
    for (int64_t r = run.begin; r < run.end; ++r) run.T = std::max(run.T, need[size_t(r)]);
    runs.push_back(run);
  }
  std::reverse(runs.begin(), runs.end());
  return runs;
}

ChoiceTokens choice_layout(const ChoiceBatch& cb, const std::vector<RowRun>& runs) {
  const Batch& b = cb.rows;
  ChoiceTokens layout;
  for (const RowRun& run : runs)
    for (int64_t r = run.begin; r < run.end; ++r)
      for (int64_t t = 0; t < run.T; ++t)
        layout.token_choice.push_back(t + 1 < run.T && b.labels[size_t(r * b.T + t + 1)] != kIgnoreIndex ? r : -1);
  layout.choice_example = cb.row_example;
  layout.choice_correct = cb.row_correct;
  return layout;
}

ChoiceTokens choice_layout(const ChoiceBatch& cb) { return choice_layout(cb, {{0, cb.rows.B, cb.rows.T}}); }

}  // namespace qpeft
