#include "quant/kernels.h"

#include <atomic>

#include "core/cpu.h"

namespace qpeft {

namespace {

// The scalar references: one element at a time, straight from blockwise.h's bit layout.

// out[i] = lut4[code(e0 + i)] * scale of its block; byte j = c[4j] << 6 | ... | c[4j+3].
void decode2_ref(const uint8_t* packed, int64_t e0, int64_t n, const float* lut4, const float* scales,
                 int64_t block, float* out) {
  const int64_t b0 = e0 / block;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = e0 + i;
    const int code = (packed[e >> 2] >> (6 - 2 * (e & 3))) & 3;
    out[i] = lut4[code] * scales[e / block - b0];
  }
}

// out[i] = lut8[code(e0 + i)] * scale of its block; code e in bits [3e, 3e + 3) of the
// big-endian stream (it may straddle two bytes; the second is read only then).
void decode3_ref(const uint8_t* packed, int64_t e0, int64_t n, const float* lut8, const float* scales,
                 int64_t block, float* out) {
  const int64_t b0 = e0 / block;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = e0 + i;
    const int64_t bit = 3 * e;
    const int shift = 13 - int(bit & 7);  // of the code's low bit in the 16-bit window
    unsigned w = unsigned(packed[bit >> 3]) << 8;
    if (shift < 8) w |= packed[(bit >> 3) + 1];
    out[i] = lut8[(w >> shift) & 7] * scales[e / block - b0];
  }
}

// out[i] = lut16[code(e0 + i)] * scale of its block; element 2j in the high nibble.
void decode4_ref(const uint8_t* packed, int64_t e0, int64_t n, const float* lut16, const float* scales,
                 int64_t block, float* out) {
  const int64_t b0 = e0 / block;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e = e0 + i;
    const uint8_t byte = packed[e >> 1];
    const int code = (e & 1) ? (byte & 15) : (byte >> 4);
    out[i] = lut16[code] * scales[e / block - b0];
  }
}

void pack4_rows_ref(const uint8_t* packed, int64_t e0, int64_t row_elems, int64_t rows, int64_t K,
                    const float* lut16, const float* scales, int64_t scale_stride, int64_t block, int64_t n0,
                    float* group) {
  for (int64_t k = 0; k < K; ++k) {
    float* out = group + (k / 16) * 1024 + (k % 16) * 64 + n0;
    for (int64_t i = 0; i < 16; ++i) {
      if (i >= rows) {
        out[i] = 0.0f;
        continue;
      }
      const int64_t e = e0 + i * row_elems + k;
      const uint8_t byte = packed[e >> 1];
      out[i] = lut16[(e & 1) ? (byte & 15) : (byte >> 4)] * scales[i * scale_stride + k / block];
    }
  }
}

constexpr QuantKernels kRef = {"scalar", decode2_ref, decode3_ref, decode4_ref, pack4_rows_ref};

std::atomic<const QuantKernels*> g_override{nullptr};

}  // namespace

const QuantKernels& quant_kernels_ref() { return kRef; }

const QuantKernels* quant_kernels_avx2() { return cpu_has_avx2() ? detail::avx2_table() : nullptr; }

const QuantKernels* quant_kernels_avx512() { return cpu_has_avx512() ? detail::avx512_table() : nullptr; }

const QuantKernels& quant_kernels() {
  if (const QuantKernels* o = g_override.load(std::memory_order_acquire)) return *o;
  static const QuantKernels* best = [] {
    const SimdLevel cap = simd_cap("QPEFT_QUANT_ISA");
    if (cap >= SimdLevel::avx512)
      if (const QuantKernels* k = quant_kernels_avx512()) return k;
    if (cap >= SimdLevel::avx2)
      if (const QuantKernels* k = quant_kernels_avx2()) return k;
    return &kRef;
  }();
  return *best;
}

QuantKernelsOverride::QuantKernelsOverride(const QuantKernels& k)
    : previous_(g_override.exchange(&k, std::memory_order_acq_rel)) {}

QuantKernelsOverride::~QuantKernelsOverride() { g_override.store(previous_, std::memory_order_release); }

}  // namespace qpeft
