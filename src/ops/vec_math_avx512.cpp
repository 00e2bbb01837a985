// AVX-512 versions of the row kernels in vec_math.h (compiled with -mavx512f/bw/vl/dq): 16
// lanes, tails through masked loads and stores, the reference's exp polynomial.
// GCC 12's avx512fintrin.h trips its own -Wuninitialized on _mm512_undefined_ps (GCC PR 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>

#include "core/cpu.h"
#include "ops/small_gemm_impl.h"
#include "ops/vec_math.h"

namespace qpeft {

namespace {

inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1); }

inline __m512 exp16(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.33654f);
  const __mmask16 underflow = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
  x = _mm512_max_ps(x, lo);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  __m512 y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
  return _mm512_mask_mov_ps(y, underflow, _mm512_setzero_ps());
}

inline __m512 sigmoid16(__m512 a) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), a))));
}

float avx512_max(const float* x, int64_t n) {
  __m512 m = _mm512_set1_ps(x[0]);
  for (int64_t i = 0; i < n; i += 16) m = _mm512_max_ps(m, _mm512_mask_loadu_ps(m, tail_mask(n - i), x + i));
  return _mm512_reduce_max_ps(m);
}

double avx512_exp_shift_sum(float* x, int64_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 e = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s)));
    _mm512_mask_storeu_ps(x + i, m, e);
    lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
    hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

void avx512_scale(float* x, int64_t n, float s) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs));
  }
}

void avx512_silu_mul(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 a = _mm512_maskz_loadu_ps(m, g + i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_mul_ps(a, sigmoid16(a)), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

void avx512_silu_mul_backward(const float* g, const float* u, const float* dy, float* dg, float* du, int64_t n,
                              bool accumulate) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __mmask16 keep = accumulate ? __mmask16(0xFFFF) : __mmask16(0);  // of the loaded accumulators
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 a = _mm512_maskz_loadu_ps(m, g + i), sig = sigmoid16(a), d = _mm512_maskz_loadu_ps(m, dy + i);
    if (dg) {
      // sig · (1 + a · (1 − sig))
      const __m512 ds = _mm512_mul_ps(sig, _mm512_fmadd_ps(a, _mm512_sub_ps(one, sig), one));
      const __m512 du_ = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(m, u + i));
      _mm512_mask_storeu_ps(dg + i, m, _mm512_fmadd_ps(du_, ds, _mm512_maskz_loadu_ps(m & keep, dg + i)));
    }
    if (du)
      _mm512_mask_storeu_ps(du + i, m, _mm512_fmadd_ps(d, _mm512_mul_ps(a, sig), _mm512_maskz_loadu_ps(m & keep, du + i)));
  }
}

inline __m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d hi_pd(__m512 v) {
  return _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

double avx512_sum_squares(const float* x, int64_t n) {
  __m512d a = _mm512_setzero_pd(), b = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), x + i);
    const __m512 sq = _mm512_mul_ps(v, v);
    a = _mm512_add_pd(a, lo_pd(sq));
    b = _mm512_add_pd(b, hi_pd(sq));
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(a, b));
}

void avx512_scale_mul(const float* x, float s, const float* w, float* y, int64_t n) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m,
                          _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vs), _mm512_maskz_loadu_ps(m, w + i)));
  }
}

double avx512_dot3(const float* a, const float* b, const float* c, int64_t n) {
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 ab = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
    const __m512 cv = _mm512_maskz_loadu_ps(m, c + i);
    lo = _mm512_fmadd_pd(lo_pd(ab), lo_pd(cv), lo);
    hi = _mm512_fmadd_pd(hi_pd(ab), hi_pd(cv), hi);
  }
  return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
}

void avx512_rms_norm_backward(const float* dy, const float* w, const float* x, float s, float t, float* dx, int64_t n) {
  const __m512 vs = _mm512_set1_ps(s), vt = _mm512_set1_ps(t);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 g = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, dy + i), _mm512_maskz_loadu_ps(m, w + i),
                                     _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vt));
    _mm512_mask_storeu_ps(dx + i, m, _mm512_fmadd_ps(vs, g, _mm512_maskz_loadu_ps(m, dx + i)));
  }
}

void avx512_add_scaled_product(const float* a, const float* b, float s, float* y, int64_t n) {
  const __m512 vs = _mm512_set1_ps(s);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 ab = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(ab, vs, _mm512_maskz_loadu_ps(m, y + i)));
  }
}

void avx512_rope_rotate(const float* x1, const float* x2, const float* c, const float* s, float sign, int64_t n,
                        bool accumulate, float* y1, float* y2) {
  const __m512 vsign = _mm512_set1_ps(sign);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 a = _mm512_maskz_loadu_ps(m, x1 + i), b = _mm512_maskz_loadu_ps(m, x2 + i);
    const __m512 vc = _mm512_maskz_loadu_ps(m, c + i), si = _mm512_mul_ps(vsign, _mm512_maskz_loadu_ps(m, s + i));
    __m512 ya = _mm512_sub_ps(_mm512_mul_ps(a, vc), _mm512_mul_ps(b, si));
    __m512 yb = _mm512_add_ps(_mm512_mul_ps(b, vc), _mm512_mul_ps(a, si));
    if (accumulate) {
      ya = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y1 + i), ya);
      yb = _mm512_add_ps(_mm512_maskz_loadu_ps(m, y2 + i), yb);
    }
    _mm512_mask_storeu_ps(y1 + i, m, ya);
    _mm512_mask_storeu_ps(y2 + i, m, yb);
  }
}

inline __m512 bf16x16(__m256i bits) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)); }

// Lanes added (j, j+8), (j, j+4), (j, j+2), (j, j+1), as the reference adds them.
inline float reduce16(__m512 v) {
  __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

// One row at a time, plain loads but for the tail (masked loads stall the stream from memory).
void avx512_bf16_gemv(const uint16_t* w, int64_t rows, int64_t K, const float* x, float* y) {
  const int64_t body = K / 16 * 16;
  const __mmask16 m = tail_mask(K - body);
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* wr = w + r * K;
    __m512 a = _mm512_setzero_ps();
    for (int64_t k = 0; k < body; k += 16)
      a = _mm512_fmadd_ps(bf16x16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + k))), _mm512_loadu_ps(x + k), a);
    if (body < K) a = _mm512_fmadd_ps(bf16x16(_mm256_maskz_loadu_epi16(m, wr + body)), _mm512_maskz_loadu_ps(m, x + body), a);
    y[r] = reduce16(a);
  }
}

// small_gemm_impl.h's vector type: 16 lanes, masked tails; 32 registers hold 16 accumulators.
struct V512 {
  using reg = __m512;
  static constexpr int W = 16, kMaxNZ = 4, kRows1 = 8, kRows = 4, kRowBlock = 8, kTnRows = 16, kTnNZ = 1;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg bcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg load(const float* p, int valid) { return _mm512_maskz_loadu_ps(tail_mask(valid), p); }
  static void store(float* p, reg v, int valid) { _mm512_mask_storeu_ps(p, tail_mask(valid), v); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
};

const VecKernels kAvx512 = {"avx512",          avx512_max,           avx512_exp_shift_sum,     avx512_scale,
                            avx512_silu_mul,   avx512_silu_mul_backward, avx512_sum_squares,   avx512_scale_mul,
                            avx512_dot3,       avx512_rms_norm_backward, avx512_add_scaled_product, avx512_rope_rotate,
                            avx512_bf16_gemv,  small_gemm_impl::small_gemm<V512>, small_gemm_impl::small_gemm_tn<V512>};

}  // namespace

const VecKernels* vec_kernels_avx512() { return cpu_has_avx512() ? &kAvx512 : nullptr; }

}  // namespace qpeft
