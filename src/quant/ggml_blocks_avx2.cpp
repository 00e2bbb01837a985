// AVX2 dequantizers of ggml's blocks; compiled with -mavx2 -mfma -mf16c -ffp-contract=off and
// only called after a CPU check. Each computes the reference's float operations in its order
// (codes are small integers, exact in f32; K-quants multiply then subtract, no FMA).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "core/dtype.h"
#include "quant/ggml_blocks.h"

namespace qpeft {

namespace {

// The 8 signed bytes at the bottom of `b` as floats.
inline __m256 bytes_to_f32(__m128i b) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)); }

// out[0, 16) = q[i] · d for 16 signed bytes q.
inline void scale16(__m128i q, __m256 d, float* out) {
  _mm256_storeu_ps(out, _mm256_mul_ps(bytes_to_f32(q), d));
  _mm256_storeu_ps(out + 8, _mm256_mul_ps(bytes_to_f32(_mm_srli_si128(q, 8)), d));
}

// out[0, 32) = q[i] · d for 32 signed bytes q.
inline void scale32(__m256i q, __m256 d, float* out) {
  scale16(_mm256_castsi256_si128(q), d, out);
  scale16(_mm256_extracti128_si256(q, 1), d, out + 16);
}

// out[0, 32) = d · q[i] - m for 32 bytes q (values < 128).
inline void scale_sub32(__m256i q, __m256 d, __m256 m, float* out) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  _mm256_storeu_ps(out, _mm256_sub_ps(_mm256_mul_ps(d, bytes_to_f32(lo)), m));
  _mm256_storeu_ps(out + 8, _mm256_sub_ps(_mm256_mul_ps(d, bytes_to_f32(_mm_srli_si128(lo, 8))), m));
  _mm256_storeu_ps(out + 16, _mm256_sub_ps(_mm256_mul_ps(d, bytes_to_f32(hi)), m));
  _mm256_storeu_ps(out + 24, _mm256_sub_ps(_mm256_mul_ps(d, bytes_to_f32(_mm_srli_si128(hi, 8))), m));
}

inline __m256i load32(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline __m256 vset1(float x) { return _mm256_set1_ps(x); }

#define QPEFT_GGML_ISA "avx2"
#include "quant/ggml_blocks_simd.inc"

}  // namespace

namespace detail {
const GgmlKernels* ggml_avx2_table() { return &kSimdTable; }
}  // namespace detail

}  // namespace qpeft
