#include "quant/ggml_weight.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"

namespace qpeft {

namespace {

std::atomic<GgmlActivations> g_activations{GgmlActivations::F32};

// Rows per tile: about 256K elements (1 MiB of f32), at least one row.
int64_t default_row_tile(int64_t cols) { return std::max<int64_t>(1, 262144 / std::max<int64_t>(1, cols)); }

}  // namespace

void GgmlWeight::check_shape(const GgmlTypeTraits& t, int64_t rows, int64_t cols, size_t bytes,
                             const std::string& name) {
  QP_CHECK(rows > 0 && cols > 0, "[GgmlWeight] '{}': shape [{}, {}] must be positive", name, rows, cols);
  QP_CHECK(cols % t.block == 0,
           "[GgmlWeight] '{}': {} columns are not a multiple of the {} block of {} elements; ggml stores whole "
           "blocks per row",
           name, cols, t.name, t.block);
  const int64_t want = rows * ggml_row_bytes(t, cols);
  QP_CHECK(int64_t(bytes) == want,
           "[GgmlWeight] '{}': {} bytes for {}[{}, {}], expected {} ({} rows of {} blocks of {} bytes); is the shape "
           "or type wrong?",
           name, bytes, t.name, rows, cols, want, rows, cols / t.block, t.block_bytes);
}

GgmlWeight GgmlWeight::from_bytes(GgmlType type, int64_t rows, int64_t cols, std::span<const uint8_t> data,
                                  std::shared_ptr<const void> owner, std::string name) {
  if (!owner) return from_bytes(type, rows, cols, std::vector<uint8_t>(data.begin(), data.end()), std::move(name));
  const GgmlTypeTraits& t = ggml_traits(type);
  check_shape(t, rows, cols, data.size(), name);
  // The blocks hold f16 fields; ggml aligns tensor data far beyond 2 bytes.
  QP_CHECK(reinterpret_cast<uintptr_t>(data.data()) % 2 == 0,
           "[GgmlWeight] '{}': {} data at an odd address; the file's tensor data is misaligned", name, t.name);
  GgmlWeight w;
  w.traits_ = &t;
  w.rows_ = rows;
  w.cols_ = cols;
  w.row_bytes_ = ggml_row_bytes(t, cols);
  w.row_tile_ = default_row_tile(cols);
  w.data_ = data.data();
  w.keep_alive_ = std::move(owner);
  w.name_ = std::move(name);
  return w;
}

GgmlWeight GgmlWeight::from_bytes(GgmlType type, int64_t rows, int64_t cols, std::vector<uint8_t> data,
                                  std::string name) {
  // The borrowing constructor over a vector this weight owns (its storage is 2-aligned and stays put).
  auto owned = std::make_shared<const std::vector<uint8_t>>(std::move(data));
  GgmlWeight w = from_bytes(type, rows, cols, std::span<const uint8_t>(*owned), owned, std::move(name));
  w.owned_ = true;
  return w;
}

GgmlWeight GgmlWeight::quantize(const Tensor& w, GgmlType type, std::string name) {
  QP_CHECK(w.defined() && w.ndim() == 2, "[GgmlWeight::quantize] weight '{}' must be 2-d [out, in], got {}", name,
           w.defined() ? w.describe() : std::string("an undefined tensor"));
  const DType dt = w.dtype();
  QP_CHECK(dt == DType::F32 || dt == DType::BF16 || dt == DType::F16,
           "[GgmlWeight::quantize] weight '{}' has dtype {}; expected f32, bf16 or f16", name, dtype_name(dt));
  const GgmlTypeTraits& t = ggml_traits(type);
  const int64_t rows = w.dim(0), cols = w.dim(1);
  check_shape(t, rows, cols, size_t(rows * ggml_row_bytes(t, cols)), name);
  const int64_t row_bytes = ggml_row_bytes(t, cols);
  std::vector<uint8_t> out(size_t(rows * row_bytes));
  const char* src = static_cast<const char*>(w.raw());
  const size_t esize = dtype_size(dt);
  pool().parallel_for(rows, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      convert_to_f32(src + size_t(r * cols) * esize, dt, row.data(), size_t(cols));
      t.quantize(row.data(), cols, out.data() + r * row_bytes);
    }
  });
  return from_bytes(type, rows, cols, std::move(out), std::move(name));
}

const float* GgmlWeight::decode_rows(int64_t r0, int64_t r1, float* scratch) const {
  QP_CHECK(0 <= r0 && r0 <= r1 && r1 <= rows_, "[GgmlWeight] '{}': rows [{}, {}) out of [0, {})", name_, r0, r1,
           rows_);
  traits_->dequantize(data_ + r0 * row_bytes_, (r1 - r0) * cols_, scratch);
  return scratch;
}

void GgmlWeight::set_row_tile(int64_t rows) {
  QP_CHECK(rows > 0, "[GgmlWeight] '{}': row tile {} must be positive", name_, rows);
  row_tile_ = rows;
}

Tensor GgmlWeight::dequantize() const {
  Tensor t = Tensor::empty({rows_, cols_});
  float* p = t.f32();
  const int64_t tile = row_tile_, n_tiles = (rows_ + tile - 1) / tile;
  pool().parallel_for(n_tiles, [&](int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ++ti) {
      const int64_t r0 = ti * tile, r1 = std::min(rows_, r0 + tile);
      decode_rows(r0, r1, p + r0 * cols_);
    }
  });
  return t;
}

void set_ggml_activations(GgmlActivations a) { g_activations = a; }
GgmlActivations ggml_activations() { return g_activations; }

// y[M, rows_] = x[M, cols_] Wᵀ: every input row rounded once to the type's activation blocks
// (rows split over threads), then each thread takes an equal share of the weight rows and dots
// each with all input rows (the kernel unpacks the weight row once per group of inputs).
bool GgmlWeight::own_forward(const float* x, int64_t M, float* y) const {
  if (g_activations.load(std::memory_order_relaxed) != GgmlActivations::Q8) return false;
  // A NaN or infinity has no 8-bit code: such an input takes the f32 product, which carries it.
  bool finite = true;
  for (int64_t i = 0; i < M * cols_; ++i) finite &= std::isfinite(x[i]);
  if (!finite) return false;
  const GgmlTypeTraits& t = *traits_;
  const int64_t act_row_bytes = cols_ / t.activation_block * int64_t(t.activation_block_bytes);
  std::vector<uint8_t> act(size_t(M * act_row_bytes));
  pool().parallel_for(M, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) t.quantize_activations(x + m * cols_, cols_, act.data() + m * act_row_bytes);
  });
  const int64_t N = rows_, K = cols_;
  pool().run([&](int ith, int nth) {
    const int64_t n0 = N * ith / nth, n1 = N * (ith + 1) / nth;
    for (int64_t r = n0; r < n1; ++r) t.vec_dot(data_ + r * row_bytes_, act.data(), act_row_bytes, M, K, y + r, N);
  });
  return true;
}

std::string GgmlWeight::describe() const { return fmt::format("{} {}[{}, {}]", name_, traits_->name, rows_, cols_); }

}  // namespace qpeft
