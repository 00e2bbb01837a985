// Optimizers and global-norm gradient clipping (torch.nn.utils.clip_grad_norm_).
//
// Five kinds (`qpeft train --optim NAME`); the four AdamW kinds are one class:
//   adamw            torch.optim.AdamW (decay first, bias correction, eps after the square root)
//   paged_adamw      adamw with its large states in paged memory: bit-identical to adamw
//   adamw8bit        bitsandbytes AdamW8bit: block-wise 8-bit m and v (train/optimizer_8bit.h);
//                    tensors under 4096 elements keep fp32 state and bnb's 32-bit Adam kernel
//   paged_adamw8bit  adamw8bit with its large states in paged memory: bit-identical to adamw8bit
//   adafactor        transformers' Adafactor as T-Few uses it (class Adafactor, train/adafactor.h):
//                    factored second moments for parameters with >= 2 dims, no first moment
// Paged (core/paged_memory.h): the per-element state of a tensor with >= 1e5 elements (fp32 m, v
// or their u8 codes) lives in a file-backed MAP_SHARED mapping the OS can page out; the rest
// (small tensors, the per-block absmax) stays in ordinary memory — bitsandbytes' rule.
//
// Checkpoint state of the AdamW kinds (state_tensors / load_state), the same for paged and unpaged
// kinds (adafactor's: train/adafactor.h):
//   fp32 state:  "exp_avg.<param>", "exp_avg_sq.<param>"                  f32, param shape
//   8-bit state: "exp_avg.<param>.codes", "exp_avg_sq.<param>.codes"      u8, param shape
//                "exp_avg.<param>.absmax", "exp_avg_sq.<param>.absmax"    f32 [ceil(n / 256)]
// load_state restores these bit-exactly, so a resumed run continues bit-identically. A state
// saved in the other precision is converted (dequantized, or quantized as the update does):
// allowed, but that resume is not bit-identical to an uninterrupted run.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ops/autograd.h"

namespace qpeft {

using NamedParams = std::vector<std::pair<std::string, Var>>;

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

enum class OptimKind : uint8_t { AdamW, PagedAdamW, AdamW8bit, PagedAdamW8bit, Adafactor, kCount };

struct OptimKindInfo {
  OptimKind kind;
  const char* name;  // the --optim spelling
  bool state_8bit;   // 8-bit block-wise moments for tensors >= 4096 elements
  bool paged;        // per-element state of tensors >= 1e5 elements in paged memory
  const char* what;  // one line for --help and reports
};
const OptimKindInfo& optim_kind_info(OptimKind k);
bool parse_optim_kind(std::string_view s, OptimKind* out);
std::vector<std::string> optimizer_names();  // in OptimKind order

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
  // Bytes of optimizer state, all of it / the part in paged memory.
  virtual size_t state_bytes() const = 0;
  virtual size_t paged_state_bytes() const { return 0; }
  virtual const char* name() const = 0;
};

class AdamW final : public Optimizer {
 public:
  AdamW(NamedParams params, AdamWConfig cfg, OptimKind kind = OptimKind::AdamW);
  void step(double lr) override;
  int64_t steps() const override { return steps_; }
  const NamedParams& params() const override { return params_; }
  std::vector<std::pair<std::string, Tensor>> state_tensors() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps) override;
  size_t state_bytes() const override;
  size_t paged_state_bytes() const override;
  const char* name() const override { return optim_kind_info(kind_).name; }
  OptimKind kind() const { return kind_; }

  // How parameter k's state is held.
  struct StateInfo {
    bool quantized;  // u8 codes + absmax (else fp32 m, v)
    bool paged;      // codes / m, v in paged memory
    size_t bytes;
  };
  StateInfo state_info(size_t k) const;

 private:
  struct State {
    bool q8 = false, paged = false;
    Tensor m, v;                // f32 (fp32 state) or u8 codes, param shape
    Tensor absmax_m, absmax_v;  // f32 [ceil(n / 256)] when q8
  };
  NamedParams params_;
  AdamWConfig cfg_;
  OptimKind kind_;
  std::vector<State> state_;
  int64_t steps_ = 0;
};

// Any OptimKind by its --optim name; a clear error listing the names otherwise. adafactor takes
// only cfg.weight_decay (its other settings are T-Few's, AdafactorConfig's defaults).
std::unique_ptr<Optimizer> make_optimizer(const std::string& name, NamedParams params, AdamWConfig cfg);

// Global L2 norm of all gradients (params without a gradient count as zero); scales them by
// max_norm / (norm + 1e-6) when that is below 1. Returns the norm before clipping.
// max_norm <= 0 only measures.
double clip_grad_norm(const NamedParams& params, double max_norm);

}  // namespace qpeft
