// Matrix products. PyTorch's convention throughout: a weight is [out, in] and y = x Wᵀ.
//
// FrozenWeight is the seam between dense and packed storage: the GEMM drivers ask it for
// f32 row blocks, so a bf16 or quantized base is decoded one tile at a time and never held
// in f32 as a whole. A frozen weight has no gradient, by construction.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "ops/autograd.h"

namespace qpeft {

class FrozenWeight {
 public:
  virtual ~FrozenWeight() = default;
  virtual int64_t rows() const = 0;  // out features
  virtual int64_t cols() const = 0;  // in features
  // Rows [r0, r1) as f32, row-major [r1 - r0, cols]. Returns a pointer into the weight itself
  // when it is stored as f32; otherwise decodes into scratch, which holds (r1 - r0) * cols floats.
  virtual const float* decode_rows(int64_t r0, int64_t r1, float* scratch) const = 0;
  // Rows [r0, r1) as bf16 bits, row-major, for the bf16 compute path: a pointer into the
  // weight when it is stored as bf16; otherwise decoded and rounded (nearest even) into
  // scratch, which holds (r1 - r0) * cols values. The default decodes f32 tile by tile.
  virtual const uint16_t* decode_rows_bf16(int64_t r0, int64_t r1, uint16_t* scratch) const;
  // Rows [r0, r0 + rows), rows <= 16, decoded into one 64-row group of oneDNN's packed B layout
  // at column n0, as ops/onednn_gemm.h's pack_b_rows lays them out (zeros past `rows`; with
  // rows 0, only zeros and r0 is not read). The
  // default decodes each row into staging (16 rows ld >= cols floats apart), then packs; a
  // format may decode straight into the group.
  virtual void pack_rows_for_onednn(int64_t r0, int64_t rows, int64_t n0, float* staging, int64_t ld,
                                    float* group) const;
  // Rows decoded per tile; formats with blocks make this a multiple of their block.
  virtual int64_t row_tile() const { return 64; }
  virtual bool is_f32() const { return false; }
  virtual bool is_bf16() const { return false; }  // decode_rows_bf16 returns the weight itself
  // y[M, rows] = x[M, cols] Wᵀ by a product of the weight's own, threaded on pool(), for a
  // weight and mode that have one (GgmlWeight's 8-bit products); false leaves the product to
  // linear_forward's decode-and-sgemm path.
  virtual bool own_forward(const float* x, int64_t M, float* y) const { return false; }
  virtual std::string describe() const = 0;  // "model.layers.0.self_attn.q_proj.weight bf16[256, 256]"
};

// The whole weight as an f32 tensor [out, in], decoded tile by tile (merge, export, tests).
Tensor decode_to_f32(const FrozenWeight& w);

// f32 / bf16 / f16 tensor [out, in] (zero-copy over an mmap when the file holds it).
class DenseWeight final : public FrozenWeight {
 public:
  DenseWeight(Tensor t, std::string name);
  int64_t rows() const override { return t_.dim(0); }
  int64_t cols() const override { return t_.dim(1); }
  const float* decode_rows(int64_t r0, int64_t r1, float* scratch) const override;
  const uint16_t* decode_rows_bf16(int64_t r0, int64_t r1, uint16_t* scratch) const override;
  bool is_f32() const override { return t_.dtype() == DType::F32; }
  bool is_bf16() const override { return t_.dtype() == DType::BF16; }
  // bf16 with up to kFusedRows input rows (decoding) in the f32 compute dtype: the rows of the
  // weight are read once, as bf16, into fused dot products (VecKernels::bf16_gemv).
  bool own_forward(const float* x, int64_t M, float* y) const override;
  static constexpr int64_t kFusedRows = 4;
  std::string describe() const override;
  const Tensor& tensor() const { return t_; }

 private:
  Tensor t_;
  std::string name_;
};

// C[M, N] = alpha · op(A) op(B) + beta · C, row-major, single-threaded (callers partition).
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Bytes of f32 a packed (non-f32) weight is decoded into per sgemm call (default 8 MiB per
// thread): panels of whole row tiles, so sgemm sees long panels instead of 64-row slivers.
void set_linear_panel_bytes(size_t bytes);
size_t linear_panel_bytes();

// The dtype the products with frozen weights (linear, its input gradient, the LM head) multiply
// in: F32 (the default) or BF16 — inputs and weights rounded to bf16, products accumulated in
// f32 (bitsandbytes' bnb_4bit_compute_dtype; oneDNN's kernels). Adapters, norms, attention,
// the loss and the optimizer stay f32. Returns the dtype in effect: BF16 where
// bf16_gemm_available() is false gives F32, and *note says why.
DType set_linear_compute_dtype(DType dt, std::string* note = nullptr);
DType linear_compute_dtype();

// set_linear_compute_dtype for a scope (a training run, an evaluation); the previous dtype
// comes back at its end.
class ComputeDtypeScope {
 public:
  explicit ComputeDtypeScope(DType dt, std::string* note = nullptr)
      : previous_(linear_compute_dtype()), in_effect_(set_linear_compute_dtype(dt, note)) {}
  ~ComputeDtypeScope() { set_linear_compute_dtype(previous_); }
  ComputeDtypeScope(const ComputeDtypeScope&) = delete;
  ComputeDtypeScope& operator=(const ComputeDtypeScope&) = delete;
  DType in_effect() const { return in_effect_; }

 private:
  DType previous_, in_effect_;
};

// Kernels on the thread pool. x is [M, in], y is [M, out], W is [out, in].
void linear_forward(const float* x, int64_t M, const FrozenWeight& w, float* y);              // y = x Wᵀ
void linear_input_grad(const float* dy, int64_t M, const FrozenWeight& w, float* dx, bool accumulate);  // dx (+)= dy W

// y[..., out] = x[..., in] · Wᵀ for a frozen weight: gradient flows to x only.
Var linear(Graph& g, const Var& x, const std::shared_ptr<const FrozenWeight>& w);
// y[..., out] = x[..., in] · wᵀ for a trainable f32 weight w [out, in]; dw = dyᵀ x, dx = dy w.
Var matmul_nt(Graph& g, const Var& x, const Var& w);
// out = y + alpha · x wᵀ in one output tensor (LoRA's up-projection added to the base output):
// y [..., out], x [..., r], w [out, r]. With write_into_y, out is written into y's storage, as
// PyTorch's in-place add: for a y made for this call whose value nothing reads again (no
// backward rule reads a product's output), so that no second [..., out] tensor is made.
Var add_matmul_nt(Graph& g, const Var& y, const Var& x, const Var& w, float alpha, bool write_into_y = false);

}  // namespace qpeft
