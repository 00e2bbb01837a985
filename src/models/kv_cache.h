// Key/value cache for incremental decoding: the keys (after RoPE) and values of every
// position already run, per layer, so that a new token attends over them without
// recomputing the prefix.
//
//   KVCache cache(model.config(), /*batch=*/1, /*max_len=*/prompt.size() + max_new);
//   model.hidden_states(g, prompt, 1, Tp, &cache);   // prefill: positions 0 .. Tp-1
//   model.hidden_states(g, {next}, 1, 1, &cache);    // position Tp, and so on
//
// Rows may hold different lengths (batched generation of prompts of different lengths,
// generate_batch): after a right-padded prefill each row is truncated to its own prompt, and
// every later token of row b goes to position length(b).
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
  // Positions filled (the next token's position), the same in every row; an error when ragged().
  int64_t length() const;
  int64_t length(int64_t b) const { return len_.at(size_t(b)); }  // row b's
  int64_t max_length() const;                                    // the longest row's
  bool ragged() const;                                           // rows of different lengths
  int64_t num_layers() const { return int64_t(k_.size()); }
  void reset();

  // Writes k_new, v_new [B, T, Hkv, D] at positions length() .. length()+T-1 of `layer` and
  // returns the keys and values of positions 0 .. length()+T-1 as [B, length()+T, Hkv, D]
  // (a view of the cache when B == 1, a compact copy otherwise). length() itself moves on
  // only with advance(T), once every layer has appended. Rows of equal length only.
  void append(int64_t layer, const Tensor& k_new, const Tensor& v_new, Tensor* k_all, Tensor* v_all);
  // Row b alone (any lengths): k_new, v_new [1, T, Hkv, D] at positions length(b) .. +T-1;
  // returns views [1, length(b)+T, Hkv, D] of row b. advance() as for append.
  void append_row(int64_t layer, int64_t b, const Tensor& k_new, const Tensor& v_new, Tensor* k_all, Tensor* v_all);
  void advance(int64_t T);  // every row moves on by T
  // Row b keeps only its first `len` positions (a right-padded prefill drops its padding).
  void truncate(int64_t b, int64_t len);
  // Keeps the rows `rows` (in that order) and drops the rest (finished sequences of a batch).
  void keep_rows(const std::vector<int64_t>& rows);

 private:
  int64_t B_, max_len_, Hkv_, D_;
  std::vector<int64_t> len_;   // per row
  std::vector<Tensor> k_, v_;  // per layer: [B, max_len, Hkv, D]
};

}  // namespace qpeft
