// A frozen [out, in] weight in one of ggml's block formats (quant/ggml_blocks.h), stored as
// ggml lays a 2-d tensor out: `out` rows of in / block blocks, row r in bytes
// [r·row_bytes, (r + 1)·row_bytes). The bytes are owned, or borrowed from a memory-mapped
// GGUF file that an owner handle keeps alive. As a FrozenWeight (ops/linear.h) it is decoded
// one row tile at a time by the GEMM drivers, so x·Wᵀ and dY·W never hold it in f32; it has
// no gradient, by type.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "ops/linear.h"
#include "quant/ggml_blocks.h"

namespace qpeft {

// What products with GgmlWeights do with their f32 input, process-wide (as the compute dtype):
//   F32 — decode the weight to f32 panels and multiply in f32 (training: gradients flow here);
//   Q8  — round each input row to llama.cpp's 8-bit blocks (Q8_0 / Q8_K) and multiply in
//         integers, as llama.cpp's CPU products do: its numbers, and its speed when decoding.
// Input gradients always multiply in f32.
enum class GgmlActivations { F32, Q8 };
void set_ggml_activations(GgmlActivations a);
GgmlActivations ggml_activations();

// set_ggml_activations for a scope; the previous mode comes back at its end.
class GgmlActivationsScope {
 public:
  explicit GgmlActivationsScope(GgmlActivations a) : previous_(ggml_activations()) { set_ggml_activations(a); }
  ~GgmlActivationsScope() { set_ggml_activations(previous_); }
  GgmlActivationsScope(const GgmlActivationsScope&) = delete;
  GgmlActivationsScope& operator=(const GgmlActivationsScope&) = delete;

 private:
  GgmlActivations previous_;
};

class GgmlWeight final : public FrozenWeight {
 public:
  // Wraps `data` (rows · cols / block blocks of `type`). With an owner (e.g. the MappedFile the
  // bytes live in) they are borrowed and owner is kept alive; without one they are copied.
  // Checks that cols is a multiple of the block and that the byte count matches.
  static GgmlWeight from_bytes(GgmlType type, int64_t rows, int64_t cols, std::span<const uint8_t> data,
                               std::shared_ptr<const void> owner, std::string name);
  // Takes ownership of `data`; the same checks.
  static GgmlWeight from_bytes(GgmlType type, int64_t rows, int64_t cols, std::vector<uint8_t> data,
                               std::string name);
  // Quantizes w (f32/bf16/f16 [out, in], in a multiple of the block) row by row on the pool.
  static GgmlWeight quantize(const Tensor& w, GgmlType type, std::string name);

  // FrozenWeight
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  const float* decode_rows(int64_t r0, int64_t r1, float* scratch) const override;
  int64_t row_tile() const override { return row_tile_; }
  std::string describe() const override;  // "blk.0.attn_q.weight q4_K[4096, 4096]"
  bool own_forward(const float* x, int64_t M, float* y) const override;  // GgmlActivations::Q8 only

  void set_row_tile(int64_t rows);
  Tensor dequantize() const;  // f32 [out, in]

  GgmlType type() const { return traits_->type; }
  const GgmlTypeTraits& traits() const { return *traits_; }
  std::span<const uint8_t> bytes() const { return {data_, size_t(rows_ * row_bytes_)}; }
  int64_t row_bytes() const { return row_bytes_; }
  bool borrowed() const { return !owned_; }
  const std::string& name() const { return name_; }

 private:
  GgmlWeight() = default;
  static void check_shape(const GgmlTypeTraits& t, int64_t rows, int64_t cols, size_t bytes, const std::string& name);

  const GgmlTypeTraits* traits_ = nullptr;
  int64_t rows_ = 0, cols_ = 0, row_bytes_ = 0, row_tile_ = 64;
  const uint8_t* data_ = nullptr;
  std::shared_ptr<const void> keep_alive_;  // the owner, or the owned vector
  bool owned_ = false;
  std::string name_;
};

}  // namespace qpeft
