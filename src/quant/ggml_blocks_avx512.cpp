// AVX-512 dequantizers of ggml's blocks; compiled with -mavx512f/bw/vl/dq -ffp-contract=off and
// only called after a CPU check. The byte work is the AVX2 kernels' (256-bit); floats are
// converted and scaled 16 at a time, with the reference's operations in its order.
// GCC 12 warns that the intrinsics' own _mm512_undefined_*() pass-through operands "may be
// used uninitialized" once inlined; a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "quant/ggml_blocks.h"

namespace qpeft {

namespace {

// 16 signed bytes as floats.
inline __m512 bytes_to_f32(__m128i b) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)); }

// out[0, 16) = q[i] · d for 16 signed bytes q.
inline void scale16(__m128i q, __m512 d, float* out) { _mm512_storeu_ps(out, _mm512_mul_ps(bytes_to_f32(q), d)); }

// out[0, 32) = q[i] · d for 32 signed bytes q.
inline void scale32(__m256i q, __m512 d, float* out) {
  scale16(_mm256_castsi256_si128(q), d, out);
  scale16(_mm256_extracti128_si256(q, 1), d, out + 16);
}

// out[0, 32) = d · q[i] - m for 32 bytes q (values < 128).
inline void scale_sub32(__m256i q, __m512 d, __m512 m, float* out) {
  _mm512_storeu_ps(out, _mm512_sub_ps(_mm512_mul_ps(d, bytes_to_f32(_mm256_castsi256_si128(q))), m));
  _mm512_storeu_ps(out + 16, _mm512_sub_ps(_mm512_mul_ps(d, bytes_to_f32(_mm256_extracti128_si256(q, 1))), m));
}

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline __m512 vset1(float x) { return _mm512_set1_ps(x); }

#define QPEFT_GGML_ISA "avx512"
#include "quant/ggml_blocks_simd.inc"

}  // namespace

namespace detail {
const GgmlKernels* ggml_avx512_table() { return &kSimdTable; }
}  // namespace detail

}  // namespace qpeft
