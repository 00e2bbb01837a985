#include "quant/kernels.h"

namespace qpeft {

namespace {

// out[i] = lut16[code(e0 + i)] * scale of its block.
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

constexpr QuantKernels kRef = {"scalar", decode4_ref};

}  // namespace

const QuantKernels& quant_kernels_ref() { return kRef; }

const QuantKernels* quant_kernels_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok ? detail::avx2_table() : nullptr;
#else
  return nullptr;
#endif
}

const QuantKernels& quant_kernels() {
  static const QuantKernels* best = [] {
    if (const QuantKernels* k = quant_kernels_avx2()) return k;
    return &kRef;
  }();
  return *best;
}

}  // namespace qpeft
