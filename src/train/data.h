// Training data: examples of token ids with per-token labels, and deterministic batches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qpeft {

struct Example {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // aligned with input_ids; -100 = no loss (shifted inside the model)
};

// Pre-tokenized JSON lines: {"input_ids": [...], "labels": [...]?}. Errors name file:line.
std::vector<Example> read_pretokenized_jsonl(const std::string& path);

struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> ids, labels;  // [B, T] row-major
  int64_t tokens = 0;                // real (unpadded) tokens
  int64_t truncated = 0;             // examples cut to seq_len
};

// Batch k holds examples at positions k·B … k·B + B − 1 of an endless stream made of one
// seeded permutation of the data per epoch. A pure function of (seed, k): resuming at step
// k needs no data-loader state. Rows are padded to the longest example in the batch (at
// most seq_len), with labels -100 on padding.
class Batcher {
 public:
  Batcher(const std::vector<Example>& data, int64_t batch, int64_t seq_len, uint64_t seed, bool shuffle,
          int32_t pad_id);
  Batch get(int64_t k) const;
  int64_t batches_per_epoch() const;

 private:
  const std::vector<Example>& data_;
  int64_t batch_, seq_len_;
  uint64_t seed_;
  bool shuffle_;
  int32_t pad_id_;
  size_t example_at(int64_t position) const;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<size_t> perm_;
};

}  // namespace qpeft
