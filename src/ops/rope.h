// Rotary position embeddings, Hugging Face Llama convention (rotate_half: dimension i pairs
// with i + d/2, not interleaved).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ops/autograd.h"

namespace qpeft {

struct RopeConfig {
  int64_t head_dim = 0;
  double theta = 10000.0;
  std::string scaling_type = "default";  // "default" | "llama3" | "linear" | "factors"
  // "factors": inverse frequency i divided by freq_factors[i] (head_dim / 2 of them), as
  // llama.cpp applies a GGUF's rope_freqs tensor.
  std::vector<double> freq_factors;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position = 8192;
};

// head_dim / 2 inverse frequencies, with Llama-3 or linear scaling applied.
std::vector<double> rope_inv_freq(const RopeConfig& cfg);

// cos/sin for positions [0, max_pos): [max_pos, head_dim / 2] each.
class RopeTable {
 public:
  RopeTable(const RopeConfig& cfg, int64_t max_pos);
  int64_t head_dim() const { return head_dim_; }
  int64_t max_pos() const { return max_pos_; }
  const float* cos_row(int64_t pos) const { return cos_.data() + pos * (head_dim_ / 2); }
  const float* sin_row(int64_t pos) const { return sin_.data() + pos * (head_dim_ / 2); }

 private:
  int64_t head_dim_, max_pos_;
  std::vector<float> cos_, sin_;
};

// x is [B, T, H, D]; token t sits at position pos_offset + t.
Var rope(Graph& g, const Var& x, const std::shared_ptr<const RopeTable>& table, int64_t pos_offset = 0);

}  // namespace qpeft
