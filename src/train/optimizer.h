// AdamW with PyTorch's semantics (decoupled weight decay, bias correction, eps after the
// square root) and global-norm gradient clipping like torch.nn.utils.clip_grad_norm_.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ops/autograd.h"

namespace qpeft {

using NamedParams = std::vector<std::pair<std::string, Var>>;

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// An optimizer over named trainable parameters. State is saved as named tensors, so a
// checkpoint is a safetensors file plus the step count.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update at learning rate lr from the parameters' current gradients.
  virtual void step(double lr) = 0;
  virtual void zero_grad();
  virtual int64_t steps() const = 0;
  virtual const NamedParams& params() const = 0;
  virtual std::vector<std::pair<std::string, Tensor>> state_tensors() const = 0;
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps) = 0;
  virtual size_t state_bytes() const = 0;
  virtual const char* name() const = 0;
};

class AdamW final : public Optimizer {
 public:
  AdamW(NamedParams params, AdamWConfig cfg);
  void step(double lr) override;
  int64_t steps() const override { return steps_; }
  const NamedParams& params() const override { return params_; }
  // "exp_avg.<name>", "exp_avg_sq.<name>"
  std::vector<std::pair<std::string, Tensor>> state_tensors() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps) override;
  size_t state_bytes() const override;
  const char* name() const override { return "adamw"; }

 private:
  NamedParams params_;
  AdamWConfig cfg_;
  std::vector<Tensor> m_, v_;
  int64_t steps_ = 0;
};

// "adamw" (more kinds come with the 8-bit and paged optimizers).
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, NamedParams params, AdamWConfig cfg);

// Global L2 norm of all gradients (params without a gradient count as zero); scales them by
// max_norm / (norm + 1e-6) when that is below 1. Returns the norm before clipping.
// max_norm <= 0 only measures.
double clip_grad_norm(const NamedParams& params, double max_norm);

}  // namespace qpeft
