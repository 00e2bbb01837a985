// AVX2 kernels; compiled with -mavx2 -mfma -mf16c and only called after a CPU check.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

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

// ---- 2 bits: four codes per byte, element 4j in the top bits ----

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Lane k of a broadcast little-endian word holds code k (of 16) at bit shift2[k]: byte j's
// codes sit at bits 8j + 6, 8j + 4, 8j + 2, 8j.
inline __m256 lookup2(__m256 lut, uint32_t word, __m256i shift) {
  const __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(int(word)), shift), _mm256_set1_epi32(3));
  return _mm256_permutevar8x32_ps(lut, idx);
}

// m codes from byte p (element 4j of the run in the top bits of p[j]); slut [4] scaled.
inline void decode2_run(const uint8_t* p, int64_t m, const float* slut, float* out) {
  const __m256 lut = _mm256_castps128_ps256(_mm_load_ps(slut));  // lanes 4..7 unused (codes < 4)
  const __m256i lo = _mm256_setr_epi32(6, 4, 2, 0, 14, 12, 10, 8);
  const __m256i hi = _mm256_setr_epi32(22, 20, 18, 16, 30, 28, 26, 24);
  int64_t i = 0;
  for (; i + 32 <= m; i += 32) {  // 8 bytes
    const uint32_t w0 = load_u32(p + i / 4), w1 = load_u32(p + i / 4 + 4);
    _mm256_storeu_ps(out + i, lookup2(lut, w0, lo));
    _mm256_storeu_ps(out + i + 8, lookup2(lut, w0, hi));
    _mm256_storeu_ps(out + i + 16, lookup2(lut, w1, lo));
    _mm256_storeu_ps(out + i + 24, lookup2(lut, w1, hi));
  }
  for (; i + 8 <= m; i += 8) {  // 2 bytes
    const uint32_t w = uint32_t(p[i / 4]) | uint32_t(p[i / 4 + 1]) << 8;
    _mm256_storeu_ps(out + i, lookup2(lut, w, lo));
  }
  for (; i < m; ++i) out[i] = slut[detail::code_at<2>(p, i)];
}

void decode2_avx2(const uint8_t* packed, int64_t e0, int64_t n, const float* lut4, const float* scales,
                  int64_t block, float* out) {
  detail::decode_by_block<2>(packed, e0, n, lut4, scales, block, out, decode2_run);
}

// ---- 3 bits: eight codes in three bytes, element 8j in the top bits of byte 3j ----

// Lane k of a word w = b0 << 16 | b1 << 8 | b2 (a group's big-endian 24 bits) holds code k at
// bit 21 - 3k.
inline __m256 lookup3(__m256 lut, __m256i w) {
  const __m256i shift = _mm256_setr_epi32(21, 18, 15, 12, 9, 6, 3, 0);
  return _mm256_permutevar8x32_ps(lut, _mm256_and_si256(_mm256_srlv_epi32(w, shift), _mm256_set1_epi32(7)));
}

// pshufb control putting group g's bytes (3g, 3g + 1, 3g + 2 of 16) into every 32-bit lane as w.
inline __m256i group_control(int g) {
  const char b0 = char(3 * g), b1 = char(3 * g + 1), b2 = char(3 * g + 2), z = char(0x80);
  return _mm256_setr_epi8(b2, b1, b0, z, b2, b1, b0, z, b2, b1, b0, z, b2, b1, b0, z,  //
                          b2, b1, b0, z, b2, b1, b0, z, b2, b1, b0, z, b2, b1, b0, z);
}

// m codes from byte p (a whole group); slut [8] scaled.
inline void decode3_run(const uint8_t* p, int64_t m, const float* slut, float* out) {
  const __m256 lut = _mm256_load_ps(slut);
  const __m256i c0 = group_control(0), c1 = group_control(1), c2 = group_control(2), c3 = group_control(3);
  int64_t i = 0;
  for (; i + 32 <= m; i += 32) {  // 4 groups = exactly 12 bytes, read without going past them
    const uint8_t* q = p + i / 8 * 3;
    const __m128i x = _mm_insert_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q)), int(load_u32(q + 8)), 2);
    const __m256i xx = _mm256_broadcastsi128_si256(x);
    _mm256_storeu_ps(out + i, lookup3(lut, _mm256_shuffle_epi8(xx, c0)));
    _mm256_storeu_ps(out + i + 8, lookup3(lut, _mm256_shuffle_epi8(xx, c1)));
    _mm256_storeu_ps(out + i + 16, lookup3(lut, _mm256_shuffle_epi8(xx, c2)));
    _mm256_storeu_ps(out + i + 24, lookup3(lut, _mm256_shuffle_epi8(xx, c3)));
  }
  for (; i + 8 <= m; i += 8) {  // one group
    const uint8_t* q = p + i / 8 * 3;
    const uint32_t w = uint32_t(q[0]) << 16 | uint32_t(q[1]) << 8 | q[2];
    _mm256_storeu_ps(out + i, lookup3(lut, _mm256_set1_epi32(int(w))));
  }
  for (; i < m; ++i) out[i] = slut[detail::code_at<3>(p, i)];
}

void decode3_avx2(const uint8_t* packed, int64_t e0, int64_t n, const float* lut8, const float* scales,
                  int64_t block, float* out) {
  detail::decode_by_block<3>(packed, e0, n, lut8, scales, block, out, decode3_run);
}

// No pack4_rows: oneDNN's packed f32 products run only where AVX-512 is.
constexpr QuantKernels kAvx2 = {"avx2", decode2_avx2, decode3_avx2, decode4_avx2, nullptr};

}  // namespace

namespace detail {
const QuantKernels* avx2_table() { return &kAvx2; }
}  // namespace detail

}  // namespace qpeft
