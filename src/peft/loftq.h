// LoftQ (SPEC §4): quantization and LoRA initialisation solved together, so that
// Q + s·B·A ≈ W at step 0. Per targeted weight W [out, in], T alternating steps:
//   res = W
//   Q   = dequant(quant(res))              block-wise, the chosen format
//   U S Vh = svd_r(W - Q)                   rank-r truncation (exact or randomized, ops/linalg.h)
//   L = U sqrt(S) [out, r], R = sqrt(S) Vh [r, in]
//   res = W - L R                           (not after the last step)
// The reference (PEFT loftq_init) returns lora_B = L, lora_A = R, which is right only when the
// adapter's scaling s = 1. We divide the product by s and split it evenly:
//   B = L / sqrt(s),  A = R / sqrt(s)       so  s·B·A = L R  for every alpha, r and rsLoRA.
// Quantizers: nf2, nf3 and uniform2..4 use PEFT NFQuantizer's rule (n = x / absmax or
// x / (mean + 2.5 std), argmin over the code book, ties to the first index: bit-exact with the
// PEFT fixtures); nf4 uses bitsandbytes' midpoint rule, as PEFT's LoftQ calls bitsandbytes for
// 4 bits (and so the bnb checkpoint we write is what bitsandbytes itself would quantize to).
// The residual W - Q is formed in float32 as PEFT does; the SVD, L R and the errors in double.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ops/linalg.h"
#include "peft/lora.h"
#include "quant/quantized_weight.h"

namespace qpeft {

struct LoftqMatrixOptions {
  QuantFormat format = QuantFormat::NF4;
  int64_t block_size = 64;
  bool double_quant = false;
  std::optional<Rounding> rounding;  // default: nf4 bitsandbytes, others PEFT's argmin (above)
  int64_t rank = 16;
  double scaling = 1.0;  // the adapter's s = alpha / r (or alpha / sqrt(r))
  int iters = 1;         // T
  SvdOptions svd;
};

struct LoftqMatrixResult {
  std::shared_ptr<QuantizedWeight> q;  // the quantized base weight (last iteration)
  Tensor A, B;                         // f32 [r, in], [out, r]: Q + s·B·A ≈ W
  double weight_norm = 0;              // ‖W‖_F
  double plain_error = 0;              // ‖W − quant(W)‖_F (plain quantization, as QLoRA starts)
  double loftq_error = 0;              // ‖W − Q − s·B·A‖_F
  SvdMethod svd_method = SvdMethod::Exact;
};

// w: [out, in] f32/bf16/f16. `name` appears in errors.
LoftqMatrixResult loftq_matrix(const Tensor& w, const LoftqMatrixOptions& opt, const std::string& name);

// --layer-quant: a format per layer or module, e.g. "layers.0-3=nf4,*=nf2". Comma-separated
// SELECTOR=FORMAT entries; the first whose selector matches a linear layer gives its format,
// the default format the rest. Selectors: "*"; a module kind ("q_proj", ..., "down_proj");
// "self_attn" (q/k/v/o) or "mlp" (gate/up/down); "layers.N" or "layers.A-B" (inclusive), either
// optionally followed by ".KIND", ".self_attn" or ".mlp".
class LayerQuantPlan {
 public:
  LayerQuantPlan() = default;
  // Errors name the entry and the flag. An empty spec gives `fallback` everywhere.
  static LayerQuantPlan parse(const std::string& spec, QuantFormat fallback, const char* flag = "--layer-quant");
  QuantFormat format_for(const Linear& l) const;
  QuantFormat fallback() const { return fallback_; }
  const std::string& spec() const { return spec_; }

 private:
  struct Rule {
    int64_t layer_lo = -1, layer_hi = -1;  // -1: any layer
    std::vector<std::string> kinds;        // empty: any kind
    QuantFormat format = QuantFormat::NF4;
  };
  std::vector<Rule> rules_;
  QuantFormat fallback_ = QuantFormat::NF4;
  std::string spec_;
};

struct LoftqOptions {
  LayerQuantPlan quant;      // format of each targeted layer
  int64_t block_size = 64;
  bool double_quant = false;
  int iters = 1;
  SvdOptions svd;
  LoraConfig lora;           // r, alpha, rsLoRA, target_modules, rank/alpha patterns
  // Called after each layer with its result: (done, total, layer, result).
  std::function<void(int64_t, int64_t, const Linear&, const LoftqMatrixResult&)> on_layer;
};

struct LoftqSummary {
  int64_t layers = 0, quantized_params = 0;
  size_t quantized_bytes = 0;
  std::map<std::string, int64_t> params_by_format;
  double plain_error2 = 0, loftq_error2 = 0, weight_norm2 = 0;  // sums of squares over layers
  double bits_per_param() const {
    return quantized_params ? 8.0 * double(quantized_bytes) / double(quantized_params) : 0.0;
  }
};

// Checks everything that can be wrong before any work (targets, dense weights, rank against
// min(out, in), block size against the row length), then replaces each targeted linear weight
// by its LoftQ quantization and attaches a LoRA adapter initialised so that Q + s·B·A ≈ W.
// Weights are processed one at a time; only the quantized results stay in memory.
LoftqSummary apply_loftq(LlamaModel& model, const LoftqOptions& opt);

// Records the LoftQ run in the adapter's config (written as qpeft.* metadata).
void record_loftq(const LoftqOptions& opt, LoraConfig* cfg);

}  // namespace qpeft
