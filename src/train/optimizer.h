// AdamW with PyTorch's semantics (decoupled weight decay, bias correction, eps after the
// square root) and global-norm gradient clipping like torch.nn.utils.clip_grad_norm_.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "ops/autograd.h"

namespace qpeft {

using NamedParams = std::vector<std::pair<std::string, Var>>;

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
 public:
  AdamW(NamedParams params, AdamWConfig cfg);
  // One update at learning rate lr from the parameters' current gradients.
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return steps_; }
  const NamedParams& params() const { return params_; }

  // State for checkpoints: "exp_avg.<name>", "exp_avg_sq.<name>" tensors and the step count.
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps);
  size_t state_bytes() const;

 private:
  NamedParams params_;
  AdamWConfig cfg_;
  std::vector<Tensor> m_, v_;
  int64_t steps_ = 0;
};

// Global L2 norm of all gradients (params without a gradient count as zero); scales them by
// max_norm / (norm + 1e-6) when that is below 1. Returns the norm before clipping.
// max_norm <= 0 only measures.
double clip_grad_norm(const NamedParams& params, double max_norm);

}  // namespace qpeft
