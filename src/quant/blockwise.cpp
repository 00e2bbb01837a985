#include "quant/blockwise.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace qpeft {

namespace {

// bitsandbytes dQuantizeNF4 decision-tree thresholds, ascending: code = #{t : x > t}.
constexpr float kNF4Thresholds[15] = {
    -0.8480964004993439f,  -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,  0.2920137718319893f,  0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,  0.8614784181118011f,
};
// bitsandbytes dQuantizeFP4 thresholds on |x|, ascending, and the 3-bit pattern of each
// magnitude rank (0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1).
constexpr float kFP4Thresholds[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                     0.4166667f,  0.583333f,  0.8333333f};
constexpr uint8_t kFP4RankToCode[8] = {0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011};

inline uint8_t quantize_nf4_bnb(float x) {
  int c = 0;
  for (float t : kNF4Thresholds) c += x > t;
  return uint8_t(c);
}

inline uint8_t quantize_fp4_bnb(float x) {
  int sign = x < 0 ? 0b1000 : 0;
  float a = std::fabs(x);
  int r = 0;
  for (float t : kFP4Thresholds) r += a > t;
  return uint8_t(kFP4RankToCode[r] + sign);
}

// bitsandbytes dQuantize<STOCHASTIC=0> (csrc/kernels.cu): bisection over the 256 sorted
// values, then the nearer neighbour by midpoint.
uint8_t quantize_dynamic_bnb(const float* code, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = code[pivot];
  }
  if (upper_pivot == 255) upper = code[upper_pivot];
  if (lower_pivot == 0) lower = code[lower_pivot];
  if (x > val) {
    float midpoint = (upper + val) * 0.5f;
    return uint8_t(x > midpoint ? upper_pivot : pivot);
  }
  float midpoint = (lower + val) * 0.5f;
  return uint8_t(x < midpoint ? lower_pivot : pivot);
}

inline uint8_t argmin_code(float n, const float* book, int size) {
  int best = 0;
  float bestd = std::fabs(n - book[0]);
  for (int j = 1; j < size; ++j) {
    float d = std::fabs(n - book[j]);
    if (d < bestd) {
      bestd = d;
      best = j;
    }
  }
  return uint8_t(best);
}

// Midpoints of a sorted book for the Bitsandbytes rule on formats without a bnb kernel.
struct Midpoints {
  float m[255];
  int count;
};
const Midpoints& midpoints(QuantFormat f) {
  static const std::vector<Midpoints> all = [] {
    std::vector<Midpoints> v(static_cast<size_t>(QuantFormat::kCount));
    for (size_t i = 0; i < v.size(); ++i) {
      auto book = codebook(QuantFormat(i));
      v[i].count = int(book.size()) - 1;
      for (int j = 0; j < v[i].count; ++j) v[i].m[j] = (book[j] + book[j + 1]) * 0.5f;
    }
    return v;
  }();
  return all[size_t(f)];
}

inline uint8_t int8_code(float x, float scale) {
  float q = scale == 0.0f ? 0.0f : std::nearbyint(x * (127.0f / scale));
  q = std::min(127.0f, std::max(-127.0f, q));
  return uint8_t(int8_t(q));
}

// ATen's multi_row_sum + row_sum (SumKernel.cpp) over `size` elements of `lanes` floats each:
// 4 interleaved accumulators (ilp), cascaded in levels of 2^level_power elements.
void aten_row_sum(const float* x, int64_t size, int lanes, float* out /* [lanes] */) {
  constexpr int kIlp = 4, kLevels = 4;
  const int64_t rows = size / kIlp;  // multi_row_sum over a (rows, kIlp) array
  int64_t ceil_log2 = 0;
  while ((int64_t(1) << ceil_log2) < rows) ++ceil_log2;
  const int64_t level_power = std::max<int64_t>(4, ceil_log2 / kLevels);
  const int64_t level_step = int64_t(1) << level_power, level_mask = level_step - 1;
  std::vector<float> acc(size_t(kLevels * kIlp * lanes), 0.0f);
  auto A = [&](int lv, int k, int l) -> float& { return acc[size_t((lv * kIlp + k) * lanes + l)]; };
  auto add_row = [&](int64_t i) {
    for (int k = 0; k < kIlp; ++k)
      for (int l = 0; l < lanes; ++l) A(0, k, l) += x[(i * kIlp + k) * lanes + l];
  };
  int64_t i = 0;
  for (; i + level_step <= rows;) {
    for (int64_t j = 0; j < level_step; ++j, ++i) add_row(i);
    for (int lv = 1; lv < kLevels; ++lv) {
      for (int k = 0; k < kIlp; ++k)
        for (int l = 0; l < lanes; ++l) {
          A(lv, k, l) += A(lv - 1, k, l);
          A(lv - 1, k, l) = 0.0f;
        }
      if ((i & (level_mask << (lv * level_power))) != 0) break;
    }
  }
  for (; i < rows; ++i) add_row(i);
  for (int lv = 1; lv < kLevels; ++lv)
    for (int k = 0; k < kIlp; ++k)
      for (int l = 0; l < lanes; ++l) A(0, k, l) += A(lv, k, l);
  // row_sum: leftover elements go into partial 0, then the partials are folded into 0.
  for (int64_t e = rows * kIlp; e < size; ++e)
    for (int l = 0; l < lanes; ++l) A(0, 0, l) += x[e * lanes + l];
  for (int k = 1; k < kIlp; ++k)
    for (int l = 0; l < lanes; ++l) A(0, 0, l) += A(0, k, l);
  for (int l = 0; l < lanes; ++l) out[l] = A(0, 0, l);
}

}  // namespace

float torch_sum_f32(const float* x, int64_t n, TorchCpu cpu) {
  const int lanes = cpu == TorchCpu::Avx512 ? 16 : 8;  // Vectorized<float>::size() (8 for Default too)
  if (n >= lanes) {
    // vectorized_inner_sum: whole vectors through row_sum, then the scalar tail, then the lanes.
    const int64_t nvec = n / lanes;
    float part[16];
    aten_row_sum(x, nvec, lanes, part);
    float acc = 0.0f;
    for (int64_t k = nvec * lanes; k < n; ++k) acc += x[k];
    for (int l = 0; l < lanes; ++l) acc += part[l];
    return acc;
  }
  float s;
  aten_row_sum(x, n, 1, &s);
  return s;
}

void check_block_size(int64_t block, const char* where) {
  QP_CHECK(block >= 32 && block <= 4096 && (block & (block - 1)) == 0,
           "[{}] block size {} is not a power of two in 32..4096; use 64 (the 4-bit default) or another power of two",
           where, block);
}

BlockQuantOptions BlockQuantOptions::defaults(QuantFormat f) {
  const auto& info = quant_format_info(f);
  return {f, info.default_block, info.default_scale, info.default_rounding};
}

float block_scale(const float* x, int64_t n, ScaleRule rule) {
  if (rule == ScaleRule::Absmax) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
    return m;
  }
  // LoftQ "uniform": block.mean() + 2.5 * block.std() (unbiased), as torch computes them:
  // mean = float sum (ATen's summation order) / n; std accumulated in double, rounded once.
  if (n == 0) return 0.0f;
  const float mean = torch_sum_f32(x, n, TorchCpu::Avx2) / float(n);
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  const double dmean = s / double(n);
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += (x[i] - dmean) * (x[i] - dmean);
  const float stdv = n > 1 ? float(std::sqrt(ss / double(n - 1))) : 0.0f;
  return mean + 2.5f * stdv;
}

uint8_t encode_value(float x, float scale, QuantFormat f, Rounding r) {
  uint8_t c;
  encode_block(&x, 1, scale, f, r, &c);
  return c;
}

void encode_block(const float* x, int64_t n, float scale, QuantFormat f, Rounding r, uint8_t* codes) {
  if (f == QuantFormat::Int8) {
    for (int64_t i = 0; i < n; ++i) codes[i] = int8_code(x[i], scale);
    return;
  }
  auto book = codebook(f);
  if (r == Rounding::Argmin) {
    for (int64_t i = 0; i < n; ++i) {
      float v = scale == 0.0f ? 0.0f : x[i] / scale;
      codes[i] = argmin_code(v, book.data(), int(book.size()));
    }
    return;
  }
  // Bitsandbytes: multiply by the reciprocal of the scale, as kQuantizeBlockwise does.
  const float inv = scale == 0.0f ? 0.0f : 1.0f / scale;
  switch (f) {
    case QuantFormat::NF4:
      for (int64_t i = 0; i < n; ++i) codes[i] = quantize_nf4_bnb(x[i] * inv);
      return;
    case QuantFormat::FP4:
      for (int64_t i = 0; i < n; ++i) codes[i] = quantize_fp4_bnb(x[i] * inv);
      return;
    case QuantFormat::Dynamic8:
      for (int64_t i = 0; i < n; ++i) codes[i] = quantize_dynamic_bnb(book.data(), x[i] * inv);
      return;
    default: {
      const Midpoints& m = midpoints(f);
      for (int64_t i = 0; i < n; ++i) {
        float v = x[i] * inv;
        int c = 0;
        for (int j = 0; j < m.count; ++j) c += v > m.m[j];
        codes[i] = uint8_t(c);
      }
      return;
    }
  }
}

void quantize_blocks_with_scales(const float* x, int64_t n, const BlockQuantOptions& opt, const float* scales,
                                 uint8_t* codes) {
  check_block_size(opt.block_size, "quantize");
  const int64_t B = opt.block_size;
  for (int64_t b = 0; b * B < n; ++b) {
    int64_t len = std::min(B, n - b * B);
    encode_block(x + b * B, len, scales[b], opt.format, opt.rounding, codes + b * B);
  }
}

void quantize_blocks(const float* x, int64_t n, const BlockQuantOptions& opt, uint8_t* codes, float* scales) {
  check_block_size(opt.block_size, "quantize");
  const int64_t B = opt.block_size;
  for (int64_t b = 0; b * B < n; ++b) {
    int64_t len = std::min(B, n - b * B);
    scales[b] = block_scale(x + b * B, len, opt.scale);
    encode_block(x + b * B, len, scales[b], opt.format, opt.rounding, codes + b * B);
  }
}

void dequantize_blocks(const uint8_t* codes, const float* scales, int64_t n, QuantFormat f, int64_t block,
                       float* out) {
  auto book = codebook(f);
  for (int64_t i = 0; i < n; ++i) out[i] = book[codes[i]] * scales[i / block];
}

void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* packed, uint8_t pad) {
  const int64_t nbytes = packed_bytes(n, bits);
  if (bits == 8) {
    std::copy(codes, codes + n, packed);
    return;
  }
  if (bits == 4) {
    for (int64_t j = 0; j < n / 2; ++j) packed[j] = uint8_t(codes[2 * j] << 4 | (codes[2 * j + 1] & 15));
    if (n & 1) packed[n / 2] = uint8_t(codes[n - 1] << 4 | (pad & 15));
    return;
  }
  QP_CHECK(bits >= 1 && bits < 8, "[pack] unsupported code width {}", bits);
  std::fill(packed, packed + nbytes, uint8_t(0));
  const unsigned mask = (1u << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    int64_t bit = i * bits;  // MSB-first bit position of code i
    unsigned v = codes[i] & mask;
    // The code may straddle two bytes: place it in a 16-bit big-endian window.
    int64_t byte = bit / 8;
    int shift = 16 - bits - int(bit % 8);
    unsigned w = v << shift;
    packed[byte] |= uint8_t(w >> 8);
    if (byte + 1 < nbytes) packed[byte + 1] |= uint8_t(w & 0xff);
  }
}

void unpack_codes(const uint8_t* packed, int64_t begin, int64_t n, int bits, uint8_t* codes) {
  if (bits == 8) {
    std::copy(packed + begin, packed + begin + n, codes);
    return;
  }
  if (bits == 4) {
    for (int64_t i = 0; i < n; ++i) {
      int64_t e = begin + i;
      uint8_t b = packed[e >> 1];
      codes[i] = (e & 1) ? (b & 15) : (b >> 4);
    }
    return;
  }
  const unsigned mask = (1u << bits) - 1;
  for (int64_t i = 0; i < n; ++i) {
    int64_t bit = (begin + i) * bits;
    int64_t byte = bit / 8;
    int shift = 16 - bits - int(bit % 8);
    // Reading one byte past the end is avoided: a code that fits in its byte needs only it.
    unsigned w = unsigned(packed[byte]) << 8;
    if (shift < 8) w |= packed[byte + 1];
    codes[i] = uint8_t((w >> shift) & mask);
  }
}

void DoubleQuantScales::decode(int64_t b0, int64_t n, float* out) const {
  const float* dyn = nested_map.data();
  for (int64_t i = 0; i < n; ++i) {
    int64_t b = b0 + i;
    float v = dyn[qabsmax[size_t(b)]] * nested_absmax[size_t(b / kNestedBlock)];
    out[i] = v + offset;
  }
}

DoubleQuantScales double_quantize(const float* absmax, int64_t n_blocks) {
  DoubleQuantScales dq;
  double s = 0.0;
  for (int64_t i = 0; i < n_blocks; ++i) s += absmax[i];
  dq.offset = n_blocks ? float(s / double(n_blocks)) : 0.0f;
  std::vector<float> centred(static_cast<size_t>(n_blocks));
  for (int64_t i = 0; i < n_blocks; ++i) centred[size_t(i)] = absmax[i] - dq.offset;
  dq.qabsmax.resize(size_t(n_blocks));
  dq.nested_absmax.resize(size_t(num_blocks(n_blocks, DoubleQuantScales::kNestedBlock)));
  BlockQuantOptions opt{QuantFormat::Dynamic8, DoubleQuantScales::kNestedBlock, ScaleRule::Absmax,
                        Rounding::Bitsandbytes};
  quantize_blocks(centred.data(), n_blocks, opt, dq.qabsmax.data(), dq.nested_absmax.data());
  return dq;
}

double bits_per_param(QuantFormat f, int64_t block, bool double_quant) {
  const double k = quant_bits(f), B = double(block);
  return double_quant ? k + 8.0 / B + 32.0 / (B * DoubleQuantScales::kNestedBlock) : k + 32.0 / B;
}

}  // namespace qpeft
