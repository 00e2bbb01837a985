// Quantization kernels behind one small interface. Every SIMD kernel has a scalar reference
// twin with the same signature (kernels.cpp); per-ISA files (kernels_avx2.cpp,
// kernels_avx512.cpp) hold the intrinsics, and quant_kernels() picks one table once, at
// start-up, with __builtin_cpu_supports: avx512 > avx2 > scalar. Tests run every table the
// machine supports against the reference, bit for bit.
//
// QPEFT_QUANT_ISA=scalar|avx2|avx512 (read once, at the first quant_kernels() call) caps that
// choice, e.g. to benchmark the AVX2 path on an AVX-512 machine; a cap the CPU cannot honour
// falls to the next path down, and an unknown value is ignored with one warning on stderr.
#pragma once
#include <cstdint>

namespace qpeft {

// The decode kernels of k-bit code streams packed as quant/blockwise.h documents (a big-endian
// bit stream, code i in bits [k·i, k·i + k) from the top of byte 0):
//   4 bits: two codes per byte, element 2j in the high nibble;
//   2 bits: four codes per byte, element 4j in the top two bits;
//   3 bits: eight codes in three bytes, element 8j in the top three bits of byte 3j.
// Each decodes elements [e0, e0 + n) of a tensor cut into blocks of `block` elements:
//   out[i] = lut[code(e0 + i)] * scales[(e0 + i) / block - e0 / block]
// i.e. scales[0] is the scale of the block holding e0; the product is one float multiply,
// so every table gives the same bits. Shapes: packed covers the elements (no byte past
// packed_bytes(e0 + n, k) is read), lut [2^k], scales [(e0 + n - 1) / block - e0 / block + 1],
// out [n]. block is a multiple of 8 (blockwise.h: a power of two in 32..4096); any e0, n >= 0.
using Decode2Fn = void (*)(const uint8_t* packed, int64_t e0, int64_t n, const float* lut4, const float* scales,
                           int64_t block, float* out);
using Decode3Fn = void (*)(const uint8_t* packed, int64_t e0, int64_t n, const float* lut8, const float* scales,
                           int64_t block, float* out);
using Decode4Fn = void (*)(const uint8_t* packed, int64_t e0, int64_t n, const float* lut16, const float* scales,
                           int64_t block, float* out);

// 4-bit rows decoded straight into oneDNN's packed f32 B layout (ops/onednn_gemm.h), for the
// forward's B = Wᵀ: row i < rows ≤ 16 holds elements e0 + i·row_elems + k, k < K, and
//   group[(k / 16)·1024 + (k % 16)·64 + n0 + i] = lut16[code] * scales[i·scale_stride + k / block]
// i.e. scales[i·scale_stride] is the scale of the block holding row i's element e0 + i·row_elems.
// Columns n0 + i with i ≥ rows get zeros (rows may be 0). K, row_elems and e0 (in each row)
// multiples of block, block a multiple of 16; n0 ∈ {0, 16, 32, 48}; group [K / 16 · 1024].
using Pack4RowsFn = void (*)(const uint8_t* packed, int64_t e0, int64_t row_elems, int64_t rows, int64_t K,
                             const float* lut16, const float* scales, int64_t scale_stride, int64_t block, int64_t n0,
                             float* group);

struct QuantKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  Decode2Fn decode2;
  Decode3Fn decode3;
  Decode4Fn decode4;
  Pack4RowsFn pack4_rows;  // nullptr where the table has none (the caller decodes, then packs)
};

const QuantKernels& quant_kernels();      // the fastest this CPU supports, capped by QPEFT_QUANT_ISA
const QuantKernels& quant_kernels_ref();  // scalar reference
// nullptr when not built or not supported by this CPU.
const QuantKernels* quant_kernels_avx2();
const QuantKernels* quant_kernels_avx512();

// Tests and benchmarks: quant_kernels() returns `k` while this lives (one at a time; create it
// before, and destroy it after, the decodes it should affect).
class QuantKernelsOverride {
 public:
  explicit QuantKernelsOverride(const QuantKernels& k);
  ~QuantKernelsOverride();
  QuantKernelsOverride(const QuantKernelsOverride&) = delete;
  QuantKernelsOverride& operator=(const QuantKernelsOverride&) = delete;

 private:
  const QuantKernels* previous_;
};

namespace detail {
const QuantKernels* avx2_table();    // defined in kernels_avx2.cpp (no CPU check)
const QuantKernels* avx512_table();  // defined in kernels_avx512.cpp (no CPU check)

// Code of element e of a K-bit stream (K = 2, 3, 4), reading no byte past the code's last.
template <int K>
inline int code_at(const uint8_t* packed, int64_t e) {
  if constexpr (K == 4) {
    return (e & 1) ? (packed[e >> 1] & 15) : (packed[e >> 1] >> 4);
  } else if constexpr (K == 2) {
    return (packed[e >> 2] >> (6 - 2 * (e & 3))) & 3;
  } else {
    static_assert(K == 3);
    const int64_t bit = 3 * e;
    const int shift = 13 - int(bit & 7);  // of the code's low bit in a 16-bit window
    unsigned w = unsigned(packed[bit >> 3]) << 8;
    if (shift < 8) w |= packed[(bit >> 3) + 1];
    return int((w >> shift) & 7);
  }
}

// The shared skeleton of the SIMD decoders: elements up to the next multiple of 8 one by one
// (they lie in e0's block, blocks being multiples of 8), then one call per block of
//   run(p, m, slut, out): decode m codes starting at byte p (a whole 8-code group), with
//   slut[c] = lut[c] * that block's scale (2^K floats), into out [m].
template <int K, class Run>
inline void decode_by_block(const uint8_t* packed, int64_t e0, int64_t n, const float* lut, const float* scales,
                            int64_t block, float* out, Run run) {
  constexpr int kLut = 1 << K;
  int64_t i = 0;
  for (const int64_t head = n < ((-e0) & 7) ? n : ((-e0) & 7); i < head; ++i)
    out[i] = lut[code_at<K>(packed, e0 + i)] * scales[0];
  if (i == n) return;
  const int64_t end = e0 + n;
  int64_t e = e0 + i;
  int64_t b = e / block;
  const float* s = scales + (b - e0 / block);
  alignas(64) float slut[kLut];
  for (; e < end; ++b, ++s) {
    const int64_t stop = end < (b + 1) * block ? end : (b + 1) * block;
    for (int c = 0; c < kLut; ++c) slut[c] = lut[c] * *s;
    run(packed + e / 8 * K, stop - e, slut, out + (e - e0));
    e = stop;
  }
}
}  // namespace detail

}  // namespace qpeft
