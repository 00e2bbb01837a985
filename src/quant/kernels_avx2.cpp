// AVX2 kernels; compiled with -mavx2 -mfma -mf16c and only called after a CPU check.
#include <immintrin.h>

#include <algorithm>

#include "quant/kernels.h"

namespace qpeft {

namespace {

// 8 code indices (0..15, one per 32-bit lane) -> the scaled code-book values.
inline __m256 lookup16(__m256 lo, __m256 hi, __m256i idx) {
  __m256 a = _mm256_permutevar8x32_ps(lo, idx);  // uses idx & 7
  __m256 b = _mm256_permutevar8x32_ps(hi, idx);
  return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));  // bit 3 selects
}

// Decodes n elements starting at an even element index, all in one block; lo/hi hold
// lut16[0..7] * scale and lut16[8..15] * scale (the same product the reference computes).
inline void decode_run(const uint8_t* p, int64_t n, __m256 lo, __m256 hi, float* out) {
  const __m128i m0f = _mm_set1_epi8(0x0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + i / 2));  // 8 bytes = 16 codes
    __m128i h = _mm_and_si128(_mm_srli_epi16(bytes, 4), m0f);
    __m128i l = _mm_and_si128(bytes, m0f);
    __m128i codes = _mm_unpacklo_epi8(h, l);  // h0 l0 h1 l1 ...: element order
    _mm256_storeu_ps(out + i, lookup16(lo, hi, _mm256_cvtepu8_epi32(codes)));
    _mm256_storeu_ps(out + i + 8, lookup16(lo, hi, _mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8))));
  }
  alignas(32) float lut[16];
  _mm256_store_ps(lut, lo);
  _mm256_store_ps(lut + 8, hi);
  for (; i < n; ++i) {
    const uint8_t byte = p[i >> 1];
    out[i] = lut[(i & 1) ? (byte & 15) : (byte >> 4)];
  }
}

void decode4_avx2(const uint8_t* packed, int64_t e0, int64_t n, const float* lut16, const float* scales,
                  int64_t block, float* out) {
  const int64_t b0 = e0 / block;
  const __m256 lut_lo = _mm256_loadu_ps(lut16), lut_hi = _mm256_loadu_ps(lut16 + 8);
  int64_t i = 0;
  if ((e0 & 1) && n > 0) {  // odd start: the low nibble of the first byte
    out[0] = lut16[packed[e0 >> 1] & 15] * scales[0];
    i = 1;
  }
  while (i < n) {
    const int64_t e = e0 + i;
    const int64_t b = e / block;
    const int64_t run = std::min(n - i, (b + 1) * block - e);  // to the end of this block
    const __m256 s = _mm256_set1_ps(scales[b - b0]);
    decode_run(packed + (e >> 1), run, _mm256_mul_ps(lut_lo, s), _mm256_mul_ps(lut_hi, s), out + i);
    i += run;
  }
}

constexpr QuantKernels kAvx2 = {"avx2", decode4_avx2};

}  // namespace

namespace detail {
const QuantKernels* avx2_table() { return &kAvx2; }
}  // namespace detail

}  // namespace qpeft
