// Training data: examples of token ids with per-token labels, and deterministic batches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/data_formats.h"

namespace qpeft {

// Packs consecutive examples (in file order) into rows of at most seq_len tokens without
// splitting any example; an example longer than seq_len stays alone (and is truncated later).
// Packed examples attend to each other, as with Hugging Face TRL's packing.
std::vector<Example> pack_examples(const std::vector<Example>& examples, int64_t seq_len);

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
