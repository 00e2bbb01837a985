#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "ops/autograd.h"
#include "ops/linear.h"

namespace qpeft {

constexpr int32_t kIgnoreIndex = -100;

struct LossResult {
  Var loss;            // scalar [1]: mean over counted targets (0 if none)
  int64_t count = 0;   // targets not equal to kIgnoreIndex
  double sum = 0;      // summed negative log-likelihood (for token-weighted averages)
};

// Fused output head + cross-entropy: logits = h Wᵀ (W: [V, d], frozen), mean NLL over targets
// != kIgnoreIndex. Processes the rows in chunks so [N, V] logits never exist at once; as the
// loss ends the graph, the input gradient is computed chunk by chunk during the forward and
// only scaled by d(loss) in backward.  h: [N, d], targets: N.
LossResult linear_cross_entropy(Graph& g, const Var& h, const std::shared_ptr<const FrozenWeight>& head,
                                const std::vector<int32_t>& targets, int64_t max_chunk_bytes = 64 << 20);

// The same with a trainable f32 head [V, d] (full fine-tuning): also dW = Σ dlogitsᵀ h.
LossResult linear_cross_entropy(Graph& g, const Var& h, const Var& head, const std::vector<int32_t>& targets,
                                int64_t max_chunk_bytes = 64 << 20);

// Composite reference: mean NLL of explicit logits [N, V]; used by the tests of the fused op.
LossResult cross_entropy(Graph& g, const Var& logits, const std::vector<int32_t>& targets);

// Per-row log-probabilities of the targets under logits = h Wᵀ (kIgnoreIndex rows give 0);
// for evaluation and rank classification. No graph.
std::vector<float> target_logprobs(const Tensor& h, const FrozenWeight& head, const std::vector<int32_t>& targets,
                                   int64_t max_chunk_bytes = 64 << 20);

}  // namespace qpeft
