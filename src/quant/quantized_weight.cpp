#include "quant/quantized_weight.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "core/error.h"
#include "core/thread_pool.h"
#include "quant/kernels.h"

namespace qpeft {

namespace {

// Elements quantized per task: whole blocks, about 64K values (256 KB of f32).
int64_t chunk_blocks(int64_t block) { return std::max<int64_t>(1, 65536 / block); }

// Rows per tile: about `target` elements, a multiple of block / gcd(cols, block) so a tile holds
// whole blocks whenever cols allows it.
int64_t aligned_tile(int64_t rows_wanted, int64_t cols, int64_t block) {
  const int64_t unit = block / std::gcd(cols, block);
  int64_t t = std::max<int64_t>(unit, rows_wanted / unit * unit);
  return std::max<int64_t>(1, t);
}

}  // namespace

QuantizedWeight QuantizedWeight::quantize(const Tensor& w, QuantFormat format, int64_t block_size, bool double_quant,
                                          std::string name) {
  Options opt;
  opt.block_size = block_size;
  opt.double_quant = double_quant;
  return quantize(w, format, opt, std::move(name));
}

QuantizedWeight QuantizedWeight::quantize(const Tensor& w, QuantFormat format, const Options& opt,
                                          std::string name) {
  QP_CHECK(w.defined() && w.ndim() == 2, "[quantize] weight '{}' must be 2-d [out, in], got {}", name,
           w.defined() ? w.describe() : std::string("an undefined tensor"));
  const DType dt = w.dtype();
  QP_CHECK(dt == DType::F32 || dt == DType::BF16 || dt == DType::F16,
           "[quantize] weight '{}' has dtype {}; expected f32, bf16 or f16", name, dtype_name(dt));
  const QuantFormatInfo& info = quant_format_info(format);
  BlockQuantOptions bo = BlockQuantOptions::defaults(format);
  if (opt.block_size) bo.block_size = opt.block_size;
  if (opt.scale) bo.scale = *opt.scale;
  if (opt.rounding) bo.rounding = *opt.rounding;
  check_block_size(bo.block_size, "quantize");
  QP_CHECK(w.numel() > 0, "[quantize] weight '{}' {} is empty", name, w.describe());

  QuantizedWeight q;
  q.format_ = format;
  q.rows_ = w.dim(0);
  q.cols_ = w.dim(1);
  q.block_ = bo.block_size;
  q.original_dtype_ = opt.original_dtype.value_or(dt);
  q.name_ = std::move(name);
  q.row_tile_ = aligned_tile(std::max<int64_t>(1, 262144 / q.cols_), q.cols_, q.block_);

  const int64_t n = q.numel(), B = q.block_, nb = q.num_blocks();
  const int bits = info.bits;
  const uint8_t pad = encode_value(0.0f, 1.0f, format, bo.rounding);
  q.packed_.assign(size_t(packed_bytes(n, bits)), 0);
  std::vector<float> absmax(static_cast<size_t>(nb));
  const int64_t cb = chunk_blocks(B);
  const int64_t n_chunks = (nb + cb - 1) / cb;
  const char* src = static_cast<const char*>(w.raw());
  const size_t esize = dtype_size(dt);

  pool().run([&](int ith, int nth) {
    int64_t c0, c1;
    split_range(n_chunks, ith, nth, &c0, &c1);
    if (c0 >= c1) return;
    std::vector<float> tile(size_t(cb * B));
    std::vector<uint8_t> codes(size_t(cb * B));
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t e0 = c * cb * B, e1 = std::min(n, e0 + cb * B);
      const int64_t len = e1 - e0;
      convert_to_f32(src + size_t(e0) * esize, dt, tile.data(), size_t(len));
      quantize_blocks(tile.data(), len, bo, codes.data(), absmax.data() + e0 / B);
      // e0 is a multiple of the block (>= 32 codes), so it starts on a byte boundary.
      pack_codes(codes.data(), len, bits, q.packed_.data() + e0 * bits / 8, pad);
    }
  });

  if (opt.double_quant) {
    q.dq_ = double_quantize(absmax.data(), nb);
  } else {
    q.absmax_ = std::move(absmax);
  }
  return q;
}

QuantizedWeight QuantizedWeight::from_parts(QuantFormat format, int64_t rows, int64_t cols, int64_t block_size,
                                            std::vector<uint8_t> packed, std::vector<float> absmax,
                                            std::optional<DoubleQuantScales> dq, std::string name,
                                            DType original_dtype) {
  check_block_size(block_size, "QuantizedWeight::from_parts");
  QP_CHECK(rows > 0 && cols > 0, "[QuantizedWeight] '{}': shape [{}, {}] must be positive", name, rows, cols);
  QuantizedWeight q;
  q.format_ = format;
  q.rows_ = rows;
  q.cols_ = cols;
  q.block_ = block_size;
  q.original_dtype_ = original_dtype;
  q.name_ = std::move(name);
  q.row_tile_ = aligned_tile(std::max<int64_t>(1, 262144 / cols), cols, block_size);
  const int64_t n = rows * cols, nb = q.num_blocks();
  const int64_t want = packed_bytes(n, quant_bits(format));
  QP_CHECK(int64_t(packed.size()) == want,
           "[QuantizedWeight] '{}': {} packed bytes for {}[{}, {}], expected {}; is the shape or format wrong?",
           q.name_, packed.size(), quant_format_name(format), rows, cols, want);
  if (dq) {
    QP_CHECK(absmax.empty(), "[QuantizedWeight] '{}': give either f32 absmax or double-quantized scales", q.name_);
    QP_CHECK(dq->size() == nb, "[QuantizedWeight] '{}': {} quantized absmax values, expected {} (block {})",
             q.name_, dq->size(), nb, block_size);
    const int64_t nn = qpeft::num_blocks(nb, DoubleQuantScales::kNestedBlock);
    QP_CHECK(int64_t(dq->nested_absmax.size()) == nn,
             "[QuantizedWeight] '{}': {} nested absmax values, expected {} (blocks of 256)", q.name_,
             dq->nested_absmax.size(), nn);
    QP_CHECK(dq->nested_map.size() == 256, "[QuantizedWeight] '{}': nested quant map has {} values, expected 256",
             q.name_, dq->nested_map.size());
    q.dq_ = std::move(dq);
  } else {
    QP_CHECK(int64_t(absmax.size()) == nb, "[QuantizedWeight] '{}': {} absmax values, expected {} (block {})",
             q.name_, absmax.size(), nb, block_size);
    q.absmax_ = std::move(absmax);
  }
  q.packed_ = std::move(packed);
  return q;
}

void QuantizedWeight::set_row_tile(int64_t rows) {
  QP_CHECK(rows > 0, "[QuantizedWeight] '{}': row tile {} must be positive", name_, rows);
  row_tile_ = aligned_tile(rows, cols_, block_);
}

void QuantizedWeight::block_scales(int64_t b0, int64_t n, float* out) const {
  if (dq_) {
    dq_->decode(b0, n, out);
  } else {
    std::memcpy(out, absmax_.data() + b0, size_t(n) * sizeof(float));
  }
}

void QuantizedWeight::decode_span(int64_t e0, int64_t n, float* out) const {
  constexpr int64_t kMaxBlocks = 256;  // scales decoded per step
  float scales[kMaxBlocks + 1];
  const int64_t B = block_, end = e0 + n;
  const int bits = quant_bits(format_);
  const float* lut = codebook(format_).data();
  const QuantKernels& k = quant_kernels();
  int64_t e = e0;
  while (e < end) {
    const int64_t b = e / B;
    const int64_t stop = std::min(end, (b + kMaxBlocks) * B);
    const int64_t nb = (stop - 1) / B - b + 1;
    block_scales(b, nb, scales);
    if (bits == 4) {
      k.decode4(packed_.data(), e, stop - e, lut, scales, B, out + (e - e0));
    } else if (bits == 2) {
      k.decode2(packed_.data(), e, stop - e, lut, scales, B, out + (e - e0));
    } else if (bits == 3) {
      k.decode3(packed_.data(), e, stop - e, lut, scales, B, out + (e - e0));
    } else {  // 8 bits: one code per byte
      uint8_t codes[4096];
      for (int64_t s = e; s < stop;) {
        const int64_t t = std::min(stop, (s / B + 1) * B);
        unpack_codes(packed_.data(), s, t - s, bits, codes);
        const float sc = scales[s / B - b];
        float* o = out + (s - e0);
        for (int64_t i = 0; i < t - s; ++i) o[i] = lut[codes[i]] * sc;
        s = t;
      }
    }
    e = stop;
  }
}

const float* QuantizedWeight::decode_rows(int64_t r0, int64_t r1, float* scratch) const {
  QP_CHECK(0 <= r0 && r0 <= r1 && r1 <= rows_, "[QuantizedWeight] '{}': rows [{}, {}) out of [0, {})", name_, r0,
           r1, rows_);
  decode_span(r0 * cols_, (r1 - r0) * cols_, scratch);
  return scratch;
}

void QuantizedWeight::pack_rows_for_onednn(int64_t r0, int64_t rows, int64_t n0, float* staging, int64_t ld,
                                           float* group) const {
  const QuantKernels& k = quant_kernels();
  if (quant_bits(format_) != 4 || !k.pack4_rows || cols_ % block_ != 0 || block_ % 16 != 0)
    return FrozenWeight::pack_rows_for_onednn(r0, rows, n0, staging, ld, group);
  QP_CHECK(0 <= rows && rows <= 16 && (rows == 0 || (0 <= r0 && r0 + rows <= rows_)),
           "[QuantizedWeight] '{}': rows [{}, {}) out of [0, {}) or more than 16", name_, r0, r0 + rows, rows_);
  const int64_t per_row = cols_ / block_;
  float* scales = staging;  // rows · per_row floats: far less than the 16 rows staging holds
  if (rows > 0) block_scales(r0 * per_row, rows * per_row, scales);
  k.pack4_rows(packed_.data(), r0 * cols_, cols_, rows, cols_, codebook(format_).data(), scales, per_row, block_, n0,
               group);
}

Tensor QuantizedWeight::dequantize() const {
  Tensor t = Tensor::empty({rows_, cols_});
  float* p = t.f32();
  const int64_t tile = row_tile_;
  const int64_t n_tiles = (rows_ + tile - 1) / tile;
  pool().parallel_for(n_tiles, [&](int64_t t0, int64_t t1) {
    for (int64_t ti = t0; ti < t1; ++ti) {
      int64_t r0 = ti * tile, r1 = std::min(rows_, r0 + tile);
      decode_span(r0 * cols_, (r1 - r0) * cols_, p + r0 * cols_);
    }
  });
  return t;
}

std::string QuantizedWeight::describe() const {
  return fmt::format("{} {}[{}, {}] block {}{}", name_, quant_format_name(format_), rows_, cols_, block_,
                     dq_ ? " dq" : "");
}

size_t QuantizedWeight::storage_bytes() const {
  size_t s = packed_.size();
  if (dq_) {
    s += dq_->qabsmax.size() + dq_->nested_absmax.size() * sizeof(float) + sizeof(float);
  } else {
    s += absmax_.size() * sizeof(float);
  }
  return s;
}

double QuantizedWeight::bits_per_param() const { return 8.0 * double(storage_bytes()) / double(numel()); }

}  // namespace qpeft
