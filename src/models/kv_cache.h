// Key/value cache for incremental decoding: the keys (after RoPE) and values of every
// position already run, per layer, so that a new token attends over them without
// recomputing the prefix.
//
//   KVCache cache(model.config(), /*batch=*/1, /*max_len=*/prompt.size() + max_new);
//   model.hidden_states(g, prompt, 1, Tp, &cache);   // prefill: positions 0 .. Tp-1
//   model.hidden_states(g, {next}, 1, 1, &cache);    // position Tp, and so on
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "models/config.h"

namespace qpeft {

class KVCache {
 public:
  // Zero-filled f32 storage for `batch` sequences of up to max_len positions.
  KVCache(const ModelConfig& cfg, int64_t batch, int64_t max_len);

  int64_t batch() const { return B_; }
  int64_t max_len() const { return max_len_; }
  int64_t length() const { return len_; }  // positions filled (the next token's position)
  int64_t num_layers() const { return int64_t(k_.size()); }
  void reset() { len_ = 0; }

  // Writes k_new, v_new [B, T, Hkv, D] at positions length() .. length()+T-1 of `layer` and
  // returns the keys and values of positions 0 .. length()+T-1 as [B, length()+T, Hkv, D]
  // (a view of the cache when B == 1, a compact copy otherwise). length() itself moves on
  // only with advance(T), once every layer has appended.
  void append(int64_t layer, const Tensor& k_new, const Tensor& v_new, Tensor* k_all, Tensor* v_all);
  void advance(int64_t T);

 private:
  int64_t B_, max_len_, Hkv_, D_, len_ = 0;
  std::vector<Tensor> k_, v_;  // per layer: [B, max_len, Hkv, D]
};

}  // namespace qpeft
