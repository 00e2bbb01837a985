// AVX2 conversions of 16-bit floats to f32 (compiled with -mavx2 -mf16c; picked at start-up).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "core/cpu.h"
#include "core/dtype.h"

namespace qpeft {

namespace {

void bf16_to_f32_avx2(const uint16_t* s, float* d, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
    const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_ps(d + i, _mm256_castsi256_ps(w));
  }
  for (; i < n; ++i) d[i] = bf16_to_f32(s[i]);
}

void f16_to_f32_avx2(const uint16_t* s, float* d, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  for (; i < n; ++i) d[i] = f16_to_f32(s[i]);
}


}  // namespace

bool half_to_f32_avx2(const void* src, DType dt, float* dst, size_t n) {
  if (!cpu_has_avx2()) return false;
  if (dt == DType::BF16) bf16_to_f32_avx2(static_cast<const uint16_t*>(src), dst, n);
  else if (dt == DType::F16) f16_to_f32_avx2(static_cast<const uint16_t*>(src), dst, n);
  else return false;
  return true;
}

}  // namespace qpeft
