// AVX-512 dequantizers of ggml's blocks; compiled with -mavx512f/bw/vl/dq -ffp-contract=off and
// only called after a CPU check. The byte work is the AVX2 kernels' (256-bit); floats are
// converted and scaled 16 at a time, with the reference's operations in its order.
// GCC 12 warns that the intrinsics' own _mm512_undefined_*() pass-through operands "may be
// used uninitialized" once inlined; a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

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

// out [n] from n / 32 blocks.
void dequantize_q8_0_avx512(const void* blocks, int64_t n, float* out) {
  const auto* b = static_cast<const GgmlBlockQ8_0*>(blocks);
  for (int64_t i = 0; i < n / 32; ++i, out += 32) scale32(load32(b[i].qs), _mm512_set1_ps(f16_to_f32(b[i].d)), out);
}

// out [n] from n / 32 blocks.
void dequantize_q4_0_avx512(const void* blocks, int64_t n, float* out) {
  const auto* b = static_cast<const GgmlBlockQ4_0*>(blocks);
  const __m128i m0f = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  for (int64_t i = 0; i < n / 32; ++i, out += 32) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs));
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(q, m0f), eight);
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), m0f), eight);
    const __m512 d = _mm512_set1_ps(f16_to_f32(b[i].d));
    scale16(lo, d, out);
    scale16(hi, d, out + 16);
  }
}

// The per-sub-block factors of a Q4_K/Q5_K block: d·sc and dmin·m as the reference rounds them.
inline void k4_factors(const uint8_t* scales12, float d, float dmin, float* ds, float* ms) {
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ggml_scale_min_k4(j, scales12, &sc, &m);
    ds[j] = d * float(sc);
    ms[j] = dmin * float(m);
  }
}

// out [n] from n / 256 blocks.
void dequantize_q4_K_avx512(const void* blocks, int64_t n, float* out) {
  const auto* b = static_cast<const GgmlBlockQ4_K*>(blocks);
  const __m256i m0f = _mm256_set1_epi8(0x0f);
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i) {
    float ds[8], ms[8];
    k4_factors(b[i].scales, f16_to_f32(b[i].d), f16_to_f32(b[i].dmin), ds, ms);
    for (int c = 0; c < 4; ++c, out += 64) {
      const __m256i q = load32(b[i].qs + 32 * c);
      scale_sub32(_mm256_and_si256(q, m0f), _mm512_set1_ps(ds[2 * c]), _mm512_set1_ps(ms[2 * c]), out);
      scale_sub32(_mm256_and_si256(_mm256_srli_epi16(q, 4), m0f), _mm512_set1_ps(ds[2 * c + 1]),
                  _mm512_set1_ps(ms[2 * c + 1]), out + 32);
    }
  }
}

// out [n] from n / 256 blocks.
void dequantize_q5_K_avx512(const void* blocks, int64_t n, float* out) {
  const auto* b = static_cast<const GgmlBlockQ5_K*>(blocks);
  const __m256i m0f = _mm256_set1_epi8(0x0f), bit4 = _mm256_set1_epi8(0x10);
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i) {
    float ds[8], ms[8];
    k4_factors(b[i].scales, f16_to_f32(b[i].d), f16_to_f32(b[i].dmin), ds, ms);
    __m256i qh = load32(b[i].qh);  // shifted right by 2 per chunk: bits 0 and 1 are the chunk's
    for (int c = 0; c < 4; ++c, out += 64, qh = _mm256_srli_epi16(qh, 2)) {
      const __m256i q = load32(b[i].qs + 32 * c);
      const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m0f), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bit4));
      const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m0f),
                                         _mm256_and_si256(_mm256_slli_epi16(qh, 3), bit4));
      scale_sub32(lo, _mm512_set1_ps(ds[2 * c]), _mm512_set1_ps(ms[2 * c]), out);
      scale_sub32(hi, _mm512_set1_ps(ds[2 * c + 1]), _mm512_set1_ps(ms[2 * c + 1]), out + 32);
    }
  }
}

// out [n] from n / 256 blocks.
void dequantize_q6_K_avx512(const void* blocks, int64_t n, float* out) {
  const auto* b = static_cast<const GgmlBlockQ6_K*>(blocks);
  const __m256i m0f = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30), bias = _mm256_set1_epi8(32);
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int h = 0; h < 2; ++h, out += 128) {
      const __m256i ql0 = load32(b[i].ql + 64 * h), ql1 = load32(b[i].ql + 64 * h + 32);
      const __m256i qh = load32(b[i].qh + 32 * h);
      const int8_t* sc = b[i].scales + 8 * h;
      // Values 32k + l (k = 0..3, l < 32): the low nibbles, then the high ones, each with its
      // 2-bit field of qh moved to bits 4-5.
      auto code = [&](__m256i low4, __m256i high2) {  // (low4 & 15 | high2 & 0x30) - 32
        return _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(low4, m0f), _mm256_and_si256(high2, m30)), bias);
      };
      const __m256i q[4] = {code(ql0, _mm256_slli_epi16(qh, 4)), code(ql1, _mm256_slli_epi16(qh, 2)),
                            code(_mm256_srli_epi16(ql0, 4), qh),
                            code(_mm256_srli_epi16(ql1, 4), _mm256_srli_epi16(qh, 2))};
      for (int k = 0; k < 4; ++k) {  // 16 values per scale: sc[2k], sc[2k + 1]
        scale16(_mm256_castsi256_si128(q[k]), _mm512_set1_ps(d * float(sc[2 * k])), out + 32 * k);
        scale16(_mm256_extracti128_si256(q[k], 1), _mm512_set1_ps(d * float(sc[2 * k + 1])), out + 32 * k + 16);
      }
    }
  }
}

constexpr GgmlKernels kAvx512 = {"avx512",
                               {dequantize_q8_0_avx512, dequantize_q4_0_avx512, dequantize_q4_K_avx512,
                                dequantize_q5_K_avx512, dequantize_q6_K_avx512}};

}  // namespace

namespace detail {
const GgmlKernels* ggml_avx512_table() { return &kAvx512; }
}  // namespace detail

}  // namespace qpeft
