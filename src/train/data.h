// Training data: examples of token ids with per-token labels, and deterministic batches.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "text/data_formats.h"
#include "ops/loss.h"

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

// The order in which an endless stream visits n items: one seeded permutation per epoch
// (file order without shuffling). A pure function of (seed, position).
class EpochOrder {
 public:
  EpochOrder(size_t n, uint64_t seed, bool shuffle) : n_(n), seed_(seed), shuffle_(shuffle) {}
  size_t at(int64_t position) const;

 private:
  size_t n_;
  uint64_t seed_;
  bool shuffle_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<size_t> perm_;
};

// Batch k holds examples at positions k·B … k·B + B − 1 of an endless stream made of one
// seeded permutation of the data per epoch. A pure function of (seed, k): resuming at step
// k needs no data-loader state. Rows are padded to the longest example in the batch (at
// most seq_len), with labels -100 on padding.
// What both batchers share: the seeded stream of example positions, the batch shape and padding.
class BatchStream {
 public:
  int64_t batches_per_epoch() const { return (int64_t(n_) + batch_ - 1) / batch_; }

 protected:
  BatchStream(size_t n, int64_t batch, int64_t seq_len, uint64_t seed, bool shuffle, int32_t pad_id);
  size_t n_;
  int64_t batch_, seq_len_;
  int32_t pad_id_;
  EpochOrder order_;
};

class Batcher : public BatchStream {
 public:
  Batcher(const std::vector<Example>& data, int64_t batch, int64_t seq_len, uint64_t seed, bool shuffle,
          int32_t pad_id);
  Batch get(int64_t k) const;

 private:
  const std::vector<Example>& data_;
};

// Multiple-choice examples for training with T-Few's losses: batch k holds the examples at
// positions k·B … k·B + B − 1 of the same kind of seeded stream, each as one row per choice
// (prompt + choice, labels on the choice's tokens only). Rows longer than seq_len lose their
// first prompt tokens, as in rank classification (models/choice_eval.h).
struct ChoiceBatch {
  Batch rows;                        // Σ choices rows
  std::vector<int64_t> row_example;  // per row: its example within the batch (0 .. B − 1)
  std::vector<uint8_t> row_correct;  // per row: 1 if its choice is the answer
};

// Which choice each of a choice batch's log-probabilities belongs to (position t predicts
// label t + 1), for choice_losses.
ChoiceTokens choice_layout(const ChoiceBatch& cb);

// Rows [begin, end) of a padded batch, computed at length T: the longest labelled span among
// them. Attention is causal, so positions after a row's last label change none of its losses.
struct RowRun {
  int64_t begin = 0, end = 0, T = 0;
};
// A padded batch's rows cut into contiguous runs, each to be computed at its own length: the cut
// with the fewest positions computed, counting `run_overhead` more for every run after the
// first (a smaller forward has fixed costs). Rows keep their order. Choice batches mix prompts
// of very different lengths, and one long email would otherwise pad all 32 rows to it.
std::vector<RowRun> length_runs(const Batch& b, int64_t run_overhead);
// The layout of choice_layout for the log-probabilities of `runs` one after another (each run's
// rows at its own T), as concat() of the runs' label_logprobs gives them.
ChoiceTokens choice_layout(const ChoiceBatch& cb, const std::vector<RowRun>& runs);

class ChoiceBatcher : public BatchStream {
 public:
  ChoiceBatcher(const std::vector<ChoiceExample>& data, int64_t batch, int64_t seq_len, uint64_t seed, bool shuffle,
                int32_t pad_id);
  ChoiceBatch get(int64_t k) const;

 private:
  std::vector<std::vector<Example>> rows_;  // per example: one row per choice, cut to seq_len
  std::vector<uint8_t> cut_;                // per example: 1 if its prompt lost tokens
  std::vector<int> answer_;
};

}  // namespace qpeft
