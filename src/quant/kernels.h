// Quantization kernels behind one small interface. Every SIMD kernel has a scalar reference
// twin with the same signature (kernels_ref.cpp); per-ISA files (kernels_avx2.cpp) hold the
// intrinsics, and quant_kernels() picks one table once, at start-up, with
// __builtin_cpu_supports. Tests run every table the machine supports against the reference.
#pragma once
#include <cstdint>

namespace qpeft {

// Decodes elements [e0, e0 + n) of a 4-bit code stream (two codes per byte, element 2j in the
// high nibble) of a tensor cut into blocks of `block` elements:
//   out[i] = lut16[code(e0 + i)] * scales[(e0 + i) / block - e0 / block]
// i.e. scales[0] is the scale of the block holding e0. Shapes: packed covers the elements,
// lut16 [16], scales [(e0 + n - 1) / block - e0 / block + 1], out [n]. block is even.
using Decode4Fn = void (*)(const uint8_t* packed, int64_t e0, int64_t n, const float* lut16, const float* scales,
                           int64_t block, float* out);

struct QuantKernels {
  const char* isa;  // "scalar", "avx2"
  Decode4Fn decode4;
};

const QuantKernels& quant_kernels();      // the fastest this CPU supports (chosen once)
const QuantKernels& quant_kernels_ref();  // scalar reference
// nullptr when not built or not supported by this CPU.
const QuantKernels* quant_kernels_avx2();

namespace detail {
const QuantKernels* avx2_table();  // defined in kernels_avx2.cpp (no CPU check)
}

}  // namespace qpeft
