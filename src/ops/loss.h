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
  std::vector<double> nll;  // linear_cross_entropy: per row of h, its NLL (0 where ignored); sum adds them in order
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

// Per-row log-probabilities of the targets under logits = h Wᵀ as a graph value [N] (0 on
// kIgnoreIndex rows), for losses that are not a mean NLL (choice_losses). Only rows with a
// target form logits; backward: dh_i = dlp_i · (onehot(t_i) − softmax_i) W, and with a
// trainable head also dW = Σ_i dlogits_iᵀ h_i.  h: [N, d], head: [V, d].
Var linear_target_logprobs(Graph& g, const Var& h, const std::shared_ptr<const FrozenWeight>& head,
                           const std::vector<int32_t>& targets);
Var linear_target_logprobs(Graph& g, const Var& h, const Var& head, const std::vector<int32_t>& targets);

// T-Few's losses for training on multiple-choice examples (SPEC §5; Liu et al., 2022), from
// per-token log-probabilities lp [N] of every choice's tokens given its prompt:
//   L_LM = −mean over the right choices' tokens of lp
//   L_UL = −mean over the wrong choices' tokens of log(1 − exp(lp) + 0.01)
//   L_LN = mean over examples of −log softmax_c(β_c) at the answer, β_c = mean lp of choice c
// (batch reductions as in the T-Few code). loss = lm·L_LM + ul·L_UL + ln·L_LN.
struct ChoiceTokens {
  std::vector<int64_t> token_choice;    // per entry of lp: its choice, or −1 (no loss)
  std::vector<int64_t> choice_example;  // per choice: its example (0 .. examples − 1)
  std::vector<uint8_t> choice_correct;  // per choice: 1 for the example's answer
};
struct ChoiceLossWeights {
  double lm = 1, ul = 1, ln = 1;
};
struct ChoiceLossResult {
  Var loss;                         // scalar [1]
  double lm = 0, ul = 0, ln = 0;    // the unweighted terms
  int64_t examples = 0, right = 0;  // examples, and how many the β ranking gets right (ties: wrong)
};
ChoiceLossResult choice_losses(Graph& g, const Var& logprobs, const ChoiceTokens& layout,
                               const ChoiceLossWeights& weights = {});

// Per-row log-probabilities of the targets under logits = h Wᵀ (kIgnoreIndex rows give 0);
// for evaluation and rank classification. No graph.
std::vector<float> target_logprobs(const Tensor& h, const FrozenWeight& head, const std::vector<int32_t>& targets,
                                   int64_t max_chunk_bytes = 64 << 20);

}  // namespace qpeft
