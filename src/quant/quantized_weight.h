// A frozen [out, in] weight stored block-quantized (NF4/FP4/NF-k/uniform/int8/dynamic8), with
// fp32 or double-quantized block scales. It plugs into the GEMM drivers as a FrozenWeight
// (ops/linear.h): `linear(g, x, w)` decodes one row tile at a time, so the forward x·Wᵀ and the
// input gradient dY·W never hold the full-precision weight.
//
// No gradient for the packed weight, by type: a FrozenWeight is not a Var, so no op can record a
// rule for dW; `linear(g, x, w)` only ever produces dX (QLoRA: "No gradient for W"). Nothing
// here hands the packed weight to autograd; dequantize() returns a plain Tensor, and wrapping
// that in a trainable Var trains a dense copy, not this weight.
//
// bitsandbytes checkpoint layout (Linear4bit state dict, QuantState.as_dict(packed=True) with
// the prefix "<module>.weight."), which the buffers below map to one-to-one:
//   weight                               uint8 [ceil(numel/2), 1]   packed codes, element 2j in the
//                                        high nibble (Params4bit keeps this 2-d shape; the logical
//                                        shape lives in the JSON)
//   weight.absmax                        float32 [n_blocks]  or, with double quantization,
//                                        uint8 [n_blocks] (dynamic-map codes of absmax - offset)
//   weight.quant_map                     float32 [16]  the code book (NF4 values; FP4 = [0, .0625,
//                                        8, 12, 4, 6, 2, 3, -0, -.0625, ...] / 12)
//   weight.nested_absmax                 float32 [ceil(n_blocks/256)]     (double quant only)
//   weight.nested_quant_map              float32 [256] dynamic map        (double quant only)
//   weight.quant_state.bitsandbytes__nf4 uint8 [len]: UTF-8 of json.dumps of the non-tensor items:
//       {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [out, in],
//        "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": <float>}
//       (the nested_* keys only with double quantization; "dtype" is the original weight dtype
//        as str(torch.dtype) minus "torch."; the key suffix is bitsandbytes__fp4 for FP4).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "ops/linear.h"
#include "quant/blockwise.h"

namespace qpeft {

class QuantizedWeight final : public FrozenWeight {
 public:
  struct Options {
    int64_t block_size = 0;               // 0: the format's default (64 for 4-bit)
    bool double_quant = true;             // QLoRA double quantization of the scales
    std::optional<ScaleRule> scale;       // default: the format's
    std::optional<Rounding> rounding;     // default: the format's
    std::optional<DType> original_dtype;  // what the checkpoint records as "dtype"; default: w's
  };

  // Quantizes w (f32/bf16/f16 [out, in]) tile by tile on the thread pool: at most one tile of
  // f32 per thread is ever materialised. Bit-identical for any thread count.
  static QuantizedWeight quantize(const Tensor& w, QuantFormat format, int64_t block_size, bool double_quant,
                                  std::string name);
  static QuantizedWeight quantize(const Tensor& w, QuantFormat format, const Options& opt, std::string name);

  // Wraps existing buffers (e.g. read from a bitsandbytes checkpoint); validates every size.
  // Exactly one of absmax (f32 [n_blocks]) or dq (double-quantized scales) is given.
  static QuantizedWeight from_parts(QuantFormat format, int64_t rows, int64_t cols, int64_t block_size,
                                    std::vector<uint8_t> packed, std::vector<float> absmax,
                                    std::optional<DoubleQuantScales> dq, std::string name,
                                    DType original_dtype = DType::F32);

  // FrozenWeight
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  const float* decode_rows(int64_t r0, int64_t r1, float* scratch) const override;
  // 4-bit rows whose blocks tile them (cols a multiple of the block) decode straight into the
  // packed group (QuantKernels::pack4_rows); other formats stage rows like the default.
  void pack_rows_for_onednn(int64_t r0, int64_t rows, int64_t n0, float* staging, int64_t ld,
                            float* group) const override;
  int64_t row_tile() const override { return row_tile_; }
  std::string describe() const override;  // "q_proj.weight nf4[4096, 4096] block 64 dq"

  // Rows per decoded tile: rounded so that a tile holds whole blocks when cols allows.
  void set_row_tile(int64_t rows);

  Tensor dequantize() const;  // f32 [out, in]
  // Scales of blocks [b0, b0 + n), dequantized when double-quantized.
  void block_scales(int64_t b0, int64_t n, float* out) const;
  size_t storage_bytes() const;   // codes + scales (+ nested scales and offset)
  double bits_per_param() const;  // 8 · storage_bytes / numel

  // Raw buffers (bitsandbytes names in the header comment).
  QuantFormat format() const { return format_; }
  int64_t block_size() const { return block_; }
  int64_t numel() const { return rows_ * cols_; }
  int64_t num_blocks() const { return qpeft::num_blocks(numel(), block_); }
  bool double_quant() const { return dq_.has_value(); }
  const std::vector<uint8_t>& packed() const { return packed_; }           // weight
  const std::vector<float>& absmax() const { return absmax_; }             // weight.absmax (f32), empty with DQ
  const DoubleQuantScales* dq_scales() const { return dq_ ? &*dq_ : nullptr; }  // absmax u8, nested_absmax, nested_map, offset
  std::span<const float> quant_map() const { return codebook(format_); }    // weight.quant_map
  DType original_dtype() const { return original_dtype_; }
  const std::string& name() const { return name_; }

 private:
  QuantizedWeight() = default;
  void decode_span(int64_t e0, int64_t n, float* out) const;

  QuantFormat format_ = QuantFormat::NF4;
  int64_t rows_ = 0, cols_ = 0, block_ = 64, row_tile_ = 64;
  std::vector<uint8_t> packed_;
  std::vector<float> absmax_;
  std::optional<DoubleQuantScales> dq_;
  DType original_dtype_ = DType::F32;
  std::string name_;
};

}  // namespace qpeft
