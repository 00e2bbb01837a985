// AVX-512 kernels (F, BW, VL, DQ); compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq and
// only called after a CPU check. The code book sits in one register, looked up with
// vpermps (_mm512_permutexvar_ps); tails use masked loads and stores, which read and write
// nothing outside the range.
// GCC 12 warns that the intrinsics' own _mm512_undefined_*() pass-through operands "may be
// used uninitialized" once inlined; a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstring>

#include "quant/kernels.h"

namespace qpeft {

namespace {

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

inline __mmask16 low_mask16(int64_t k) { return __mmask16((1u << k) - 1); }  // k in 0..16

// ---- 2 bits: four codes per byte, element 4j in the top bits ----

// Lane k of a broadcast little-endian word holds code k (of 16) at bit 8(k/4) + 6 - 2(k%4).
inline __m512 lookup2(__m512 lut, __m512i word) {
  const __m512i shift = _mm512_setr_epi32(6, 4, 2, 0, 14, 12, 10, 8, 22, 20, 18, 16, 30, 28, 26, 24);
  const __m512i idx = _mm512_and_si512(_mm512_srlv_epi32(word, shift), _mm512_set1_epi32(3));
  return _mm512_permutexvar_ps(idx, lut);
}

// m codes from byte p (element 4j of the run in the top bits of p[j]); slut [4] scaled.
inline void decode2_run(const uint8_t* p, int64_t m, const float* slut, float* out) {
  const __m512 lut = _mm512_castps128_ps512(_mm_load_ps(slut));  // lanes 4..15 unused (codes < 4)
  int64_t i = 0;
  for (; i + 64 <= m; i += 64) {  // 16 bytes
    const uint8_t* q = p + i / 4;
    _mm512_storeu_ps(out + i, lookup2(lut, _mm512_set1_epi32(int(load_u32(q)))));
    _mm512_storeu_ps(out + i + 16, lookup2(lut, _mm512_set1_epi32(int(load_u32(q + 4)))));
    _mm512_storeu_ps(out + i + 32, lookup2(lut, _mm512_set1_epi32(int(load_u32(q + 8)))));
    _mm512_storeu_ps(out + i + 48, lookup2(lut, _mm512_set1_epi32(int(load_u32(q + 12)))));
  }
  for (; i < m; i += 16) {  // 16 codes (4 bytes) at a time, the last masked
    const int64_t r = m - i < 16 ? m - i : 16;
    const __m128i x = _mm_maskz_loadu_epi8(low_mask16((r + 3) / 4), p + i / 4);
    _mm512_mask_storeu_ps(out + i, low_mask16(r), lookup2(lut, _mm512_broadcastd_epi32(x)));
  }
}

void decode2_avx512(const uint8_t* packed, int64_t e0, int64_t n, const float* lut4, const float* scales,
                    int64_t block, float* out) {
  detail::decode_by_block<2>(packed, e0, n, lut4, scales, block, out, decode2_run);
}

// ---- 3 bits: eight codes in three bytes, element 8j in the top bits of byte 3j ----

// vpshufb control (per 128-bit lane) making every 32-bit lane w = b0 << 16 | b1 << 8 | b2 of
// group g (bytes 3g..3g+2): the group's big-endian 24 bits, code k at bit 21 - 3k.
constexpr int group_word(int g) { return (3 * g + 2) | (3 * g + 1) << 8 | (3 * g) << 16 | int(0x80u << 24); }

// Lanes 0..7 take group ga, lanes 8..15 group gb, of the 16 bytes broadcast to every lane.
inline __m512 lookup3(__m512 lut, __m512i bytes, __m512i control) {
  const __m512i shift = _mm512_setr_epi32(21, 18, 15, 12, 9, 6, 3, 0, 21, 18, 15, 12, 9, 6, 3, 0);
  const __m512i w = _mm512_shuffle_epi8(bytes, control);
  return _mm512_permutexvar_ps(_mm512_and_si512(_mm512_srlv_epi32(w, shift), _mm512_set1_epi32(7)), lut);
}

// m codes from byte p (a whole group); slut [8] scaled.
inline void decode3_run(const uint8_t* p, int64_t m, const float* slut, float* out) {
  const __m512 lut = _mm512_castps256_ps512(_mm256_load_ps(slut));  // lanes 8..15 unused
  const int a0 = group_word(0), a1 = group_word(1), b0 = group_word(2), b1 = group_word(3);
  const __m512i ca = _mm512_setr_epi32(a0, a0, a0, a0, a0, a0, a0, a0, a1, a1, a1, a1, a1, a1, a1, a1);
  const __m512i cb = _mm512_setr_epi32(b0, b0, b0, b0, b0, b0, b0, b0, b1, b1, b1, b1, b1, b1, b1, b1);
  int64_t i = 0;
  for (; i + 32 <= m; i += 32) {  // 4 groups = 12 bytes, loaded exactly
    const __m512i x = _mm512_broadcast_i32x4(_mm_maskz_loadu_epi8(0x0fff, p + i / 8 * 3));
    _mm512_storeu_ps(out + i, lookup3(lut, x, ca));
    _mm512_storeu_ps(out + i + 16, lookup3(lut, x, cb));
  }
  if (i < m) {  // r < 32 codes: ceil(3r / 8) bytes
    const int64_t r = m - i;
    const __m512i x = _mm512_broadcast_i32x4(_mm_maskz_loadu_epi8(low_mask16((3 * r + 7) / 8), p + i / 8 * 3));
    _mm512_mask_storeu_ps(out + i, low_mask16(r < 16 ? r : 16), lookup3(lut, x, ca));
    if (r > 16) _mm512_mask_storeu_ps(out + i + 16, low_mask16(r - 16), lookup3(lut, x, cb));
  }
}

void decode3_avx512(const uint8_t* packed, int64_t e0, int64_t n, const float* lut8, const float* scales,
                    int64_t block, float* out) {
  detail::decode_by_block<3>(packed, e0, n, lut8, scales, block, out, decode3_run);
}

// ---- 4 bits: two codes per byte, element 2j in the high nibble ----

// 16 bytes -> codes 0..15 (lo) and 16..31 (hi), one per byte, in element order.
inline void split_nibbles(__m128i x, __m128i* lo, __m128i* hi) {
  const __m128i m0f = _mm_set1_epi8(0x0f);
  const __m128i h = _mm_and_si128(_mm_srli_epi16(x, 4), m0f), l = _mm_and_si128(x, m0f);
  *lo = _mm_unpacklo_epi8(h, l);
  *hi = _mm_unpackhi_epi8(h, l);
}

inline __m512 lookup4(__m512 lut, __m128i codes) { return _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes), lut); }

// m codes from byte p (element 2j of the run in the high nibble of p[j]); slut [16] scaled.
inline void decode4_run(const uint8_t* p, int64_t m, const float* slut, float* out) {
  const __m512 lut = _mm512_load_ps(slut);
  __m128i lo, hi;
  int64_t i = 0;
  for (; i + 32 <= m; i += 32) {  // 16 bytes
    split_nibbles(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i / 2)), &lo, &hi);
    _mm512_storeu_ps(out + i, lookup4(lut, lo));
    _mm512_storeu_ps(out + i + 16, lookup4(lut, hi));
  }
  if (i < m) {  // r < 32 codes: ceil(r / 2) bytes
    const int64_t r = m - i;
    split_nibbles(_mm_maskz_loadu_epi8(low_mask16((r + 1) / 2), p + i / 2), &lo, &hi);
    _mm512_mask_storeu_ps(out + i, low_mask16(r < 16 ? r : 16), lookup4(lut, lo));
    if (r > 16) _mm512_mask_storeu_ps(out + i + 16, low_mask16(r - 16), lookup4(lut, hi));
  }
}

void decode4_avx512(const uint8_t* packed, int64_t e0, int64_t n, const float* lut16, const float* scales,
                    int64_t block, float* out) {
  detail::decode_by_block<4>(packed, e0, n, lut16, scales, block, out, decode4_run);
}

// ---- 4 bits straight into oneDNN's packed B layout ----

// x[i]: 8 bytes (16 codes) of row i in the low half. Returns v[j] = byte j of rows 0..15, by the
// usual unpack ladder (bytes, words, dwords, qwords).
inline void transpose_bytes_16x8(const __m128i x[16], __m128i v[8]) {
  __m128i a[8], b[8];
  for (int p = 0; p < 8; ++p) a[p] = _mm_unpacklo_epi8(x[2 * p], x[2 * p + 1]);  // word j: rows 2p, 2p+1
  for (int q = 0; q < 4; ++q) {  // dword j: rows 4q..4q+3 at byte j (b[2q]: j < 4, b[2q+1]: j >= 4)
    b[2 * q] = _mm_unpacklo_epi16(a[2 * q], a[2 * q + 1]);
    b[2 * q + 1] = _mm_unpackhi_epi16(a[2 * q], a[2 * q + 1]);
  }
  __m128i c[2][4];  // c[s][t] qword h: rows 8s..8s+7 at byte 2t + h
  for (int s = 0; s < 2; ++s) {
    c[s][0] = _mm_unpacklo_epi32(b[4 * s], b[4 * s + 2]);
    c[s][1] = _mm_unpackhi_epi32(b[4 * s], b[4 * s + 2]);
    c[s][2] = _mm_unpacklo_epi32(b[4 * s + 1], b[4 * s + 3]);
    c[s][3] = _mm_unpackhi_epi32(b[4 * s + 1], b[4 * s + 3]);
  }
  for (int t = 0; t < 4; ++t) {
    v[2 * t] = _mm_unpacklo_epi64(c[0][t], c[1][t]);
    v[2 * t + 1] = _mm_unpackhi_epi64(c[0][t], c[1][t]);
  }
}

// The codes are transposed (16 rows of 8 bytes) before the look-up, so every look-up yields one
// output vector: 16 rows at one k, times the rows' scales.
void pack4_rows_avx512(const uint8_t* packed, int64_t e0, int64_t row_elems, int64_t rows, int64_t K,
                       const float* lut16, const float* scales, int64_t scale_stride, int64_t block, int64_t n0,
                       float* group) {
  const __m512 lut = _mm512_loadu_ps(lut16);
  const __mmask16 live = rows >= 16 ? __mmask16(0xffff) : __mmask16((1u << rows) - 1);
  const __m128i m0f = _mm_set1_epi8(0x0f);
  const uint8_t* row[16];
  for (int i = 0; i < 16; ++i) row[i] = i < rows ? packed + (e0 + i * row_elems) / 2 : nullptr;
  alignas(64) float block_scales[16] = {};
  __m512 scale = _mm512_setzero_ps();
  for (int64_t k0 = 0; k0 < K; k0 += 16) {
    if (k0 % block == 0) {
      for (int i = 0; i < rows && i < 16; ++i) block_scales[i] = scales[i * scale_stride + k0 / block];
      scale = _mm512_load_ps(block_scales);
    }
    __m128i x[16], v[8];
    for (int i = 0; i < 16; ++i)
      x[i] = row[i] ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(row[i] + k0 / 2)) : _mm_setzero_si128();
    transpose_bytes_16x8(x, v);
    float* out = group + (k0 / 16) * 1024 + n0;
    for (int j = 0; j < 8; ++j) {  // byte j: element 2j high nibble, 2j + 1 low
      const __m128i hi = _mm_and_si128(_mm_srli_epi16(v[j], 4), m0f), lo = _mm_and_si128(v[j], m0f);
      _mm512_storeu_ps(out + (2 * j) * 64, _mm512_maskz_mul_ps(live, lookup4(lut, hi), scale));
      _mm512_storeu_ps(out + (2 * j + 1) * 64, _mm512_maskz_mul_ps(live, lookup4(lut, lo), scale));
    }
  }
}

constexpr QuantKernels kAvx512 = {"avx512", decode2_avx512, decode3_avx512, decode4_avx512, pack4_rows_avx512};

}  // namespace

namespace detail {
const QuantKernels* avx512_table() { return &kAvx512; }
}  // namespace detail

}  // namespace qpeft
