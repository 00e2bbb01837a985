// Data parallelism for `mpirun -np N qpeft train`: every rank builds the same global batch,
// computes the gradient of its share of the rows, weighted by its share of the batch's
// targets so that the sum over ranks is the gradient one process would compute, and the
// ranks sum their gradients (core/distributed, fixed order) before the same optimizer step.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ops/loss.h"
#include "train/data.h"
#include "train/optimizer.h"

namespace qpeft {

// Rows [begin, end) of a global batch of `rows` that rank `rank` of `ranks` computes: equal
// contiguous shares, the first rows % ranks ranks taking one more.
struct RowShare {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
RowShare row_share(int64_t rows, int rank, int ranks);

// Rows [begin, end) of b, with b's T (so dropout masks and padding match the whole batch) or
// their first T positions; tokens and truncated stay 0 (they are counted on the whole batch).
Batch slice_rows(const Batch& b, int64_t begin, int64_t end, int64_t T = -1);
// Targets the causal-LM loss counts in rows [begin, end): position t predicts label t + 1.
int64_t counted_targets(const Batch& b, int64_t begin, int64_t end);

// A multiple-choice batch cut to its examples [e0, e1) (re-numbered from 0), and the counts
// each T-Few term is averaged over (ops/loss.h choice_losses), for a whole batch or a share.
struct ChoiceShareCounts {
  int64_t right_tokens = 0, wrong_tokens = 0, examples = 0;
};
// first_row: where the share's rows start in cb.
ChoiceBatch slice_examples(const ChoiceBatch& cb, int64_t e0, int64_t e1, int64_t* first_row);
ChoiceShareCounts choice_counts(const ChoiceBatch& cb);
// The weights that make a share's choice_losses a term-by-term part of the whole batch's:
// each term's weight times the share's fraction of that term's count.
ChoiceLossWeights share_weights(const ChoiceLossWeights& w, const ChoiceShareCounts& share,
                                const ChoiceShareCounts& whole);

// Sums every parameter's gradient over the ranks in one fused buffer (`flat` is reused
// between steps). A parameter without a gradient on a rank counts as zero there, and has one
// afterwards iff some rank had one. No-op for one rank.
void allreduce_gradients(const NamedParams& params, std::vector<float>* flat);

// 64-bit FNV-1a, to check that every rank was given the same data, flags and model.
class Fingerprint {
 public:
  Fingerprint& add(const void* data, size_t bytes);
  template <class T>
  Fingerprint& add_vector(const std::vector<T>& v) {
    add_value(uint64_t(v.size()));
    return add(v.data(), v.size() * sizeof(T));
  }
  template <class T>
  Fingerprint& add_value(const T& v) {
    return add(&v, sizeof(v));
  }
  Fingerprint& add_string(const std::string& s) { return add_value(uint64_t(s.size())).add(s.data(), s.size()); }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 14695981039346656037ull;
};

// Fails on every rank, naming the first rank whose fingerprint differs from rank 0's, when
// the ranks disagree about `what` (e.g. "training data (--data)").
void check_same_on_every_rank(uint64_t fingerprint, const std::string& what);

}  // namespace qpeft
