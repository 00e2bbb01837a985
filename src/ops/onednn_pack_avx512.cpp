// AVX-512 twin of onednn_gemm.cpp's pack_b_rows_portable: 16 weight rows × 16 columns per
// step, transposed in registers (the usual unpack / shuffle / 128-bit-lane shuffle ladder).
// Compiled with -mavx512f...; called only after a CPU check.
// GCC 12: false "may be used uninitialized" on the intrinsics' own pass-through operands.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "ops/onednn_gemm.h"

namespace qpeft {

namespace {

// r[i] lane j -> r[j] lane i.
__attribute__((always_inline)) inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // r[4i + j], 128-bit lane l: rows 4i..4i+3 of column 4l + j
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 ab_even = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88), ab_odd = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xdd);
    const __m512 cd_even = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88),
                 cd_odd = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xdd);
    t[j] = _mm512_shuffle_f32x4(ab_even, cd_even, 0x88);
    t[8 + j] = _mm512_shuffle_f32x4(ab_even, cd_even, 0xdd);
    t[4 + j] = _mm512_shuffle_f32x4(ab_odd, cd_odd, 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(ab_odd, cd_odd, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

void pack_b_rows_avx512(const float* src, int64_t ld, int64_t rows, int64_t K, int64_t n0, float* group) {
  const int64_t kp = packed_b_k_padded(K);
  int64_t k0 = 0;
  if (rows == 16)
    for (; k0 + 16 <= K; k0 += 16) {  // the common case, without masks
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld + k0);
      transpose16(r);
      float* out = group + (k0 / 16) * 1024 + n0;
      for (int i = 0; i < 16; ++i) _mm512_storeu_ps(out + i * 64, r[i]);
    }
  for (; k0 < kp; k0 += 16) {
    const __mmask16 cols = k0 + 16 <= K ? __mmask16(0xffff) : __mmask16((1u << (K - k0)) - 1);
    __m512 r[16];
    for (int i = 0; i < 16; ++i)
      r[i] = i < rows ? _mm512_maskz_loadu_ps(cols, src + i * ld + k0) : _mm512_setzero_ps();
    transpose16(r);
    float* out = group + (k0 / 16) * 1024 + n0;
    for (int i = 0; i < 16; ++i) _mm512_storeu_ps(out + i * 64, r[i]);
  }
}

}  // namespace

namespace detail {
PackBRowsFn pack_b_rows_avx512_kernel() { return pack_b_rows_avx512; }
}  // namespace detail

}  // namespace qpeft
