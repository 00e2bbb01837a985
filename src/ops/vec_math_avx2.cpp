// AVX2 + FMA versions of the row kernels in vec_math.h (compiled with -mavx2 -mfma).
#include <immintrin.h>

#include <algorithm>

#include "core/cpu.h"
#include "ops/small_gemm_impl.h"
#include "ops/vec_math.h"

namespace qpeft {

namespace {

inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  __m256 y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(underflow, y);
}

float avx2_max(const float* x, int64_t n) {
  int64_t i = 0;
  float m = x[0];
  if (n >= 8) {
    __m256 vm = _mm256_loadu_ps(x);
    for (i = 8; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    alignas(32) float t[8];
    _mm256_store_ps(t, vm);
    m = *std::max_element(t, t + 8);
  }
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

double avx2_exp_shift_sum(float* x, int64_t n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256d a03 = _mm256_setzero_pd(), a47 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    _mm256_storeu_ps(x + i, e);
    a03 = _mm256_add_pd(a03, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
    a47 = _mm256_add_pd(a47, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
  }
  alignas(32) double acc[8];
  _mm256_store_pd(acc, a03);
  _mm256_store_pd(acc + 4, a47);
  for (; i < n; ++i) {
    x[i] = exp_approx(x[i] - shift);
    acc[i % 8] += x[i];
  }
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void avx2_scale(float* x, int64_t n, float s) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
  vec_kernels_reference().scale(x + i, n - i, s);
}

inline __m256 sigmoid8(__m256 a) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), a))));
}

void avx2_silu_mul(const float* g, const float* u, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_loadu_ps(g + i);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(a, sigmoid8(a)), _mm256_loadu_ps(u + i)));
  }
  vec_kernels_reference().silu_mul(g + i, u + i, y + i, n - i);
}

void avx2_silu_mul_backward(const float* g, const float* u, const float* dy, float* dg, float* du, int64_t n,
                            bool accumulate) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_loadu_ps(g + i), sig = sigmoid8(a), d = _mm256_loadu_ps(dy + i);
    if (dg) {
      // sig · (1 + a · (1 − sig))
      const __m256 ds = _mm256_mul_ps(sig, _mm256_fmadd_ps(a, _mm256_sub_ps(one, sig), one));
      const __m256 acc = accumulate ? _mm256_loadu_ps(dg + i) : zero;
      _mm256_storeu_ps(dg + i, _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_loadu_ps(u + i)), ds, acc));
    }
    if (du)
      _mm256_storeu_ps(du + i, _mm256_fmadd_ps(d, _mm256_mul_ps(a, sig), accumulate ? _mm256_loadu_ps(du + i) : zero));
  }
  vec_kernels_reference().silu_mul_backward(g + i, u + i, dy + i, dg ? dg + i : nullptr, du ? du + i : nullptr, n - i,
                                            accumulate);
}

// Sum of the 4 double lanes.
inline double hsum4(__m256d v) {
  alignas(32) double t[4];
  _mm256_store_pd(t, v);
  return (t[0] + t[2]) + (t[1] + t[3]);
}

double avx2_sum_squares(const float* x, int64_t n) {
  __m256d a = _mm256_setzero_pd(), b = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 sq = _mm256_mul_ps(v, v);
    a = _mm256_add_pd(a, _mm256_cvtps_pd(_mm256_castps256_ps128(sq)));
    b = _mm256_add_pd(b, _mm256_cvtps_pd(_mm256_extractf128_ps(sq, 1)));
  }
  double acc = hsum4(_mm256_add_pd(a, b));
  for (; i < n; ++i) acc += double(x[i] * x[i]);
  return acc;
}

void avx2_scale_mul(const float* x, float s, const float* w, float* y, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs), _mm256_loadu_ps(w + i)));
  vec_kernels_reference().scale_mul(x + i, s, w + i, y + i, n - i);
}

double avx2_dot3(const float* a, const float* b, const float* c, int64_t n) {
  __m256d lo_acc = _mm256_setzero_pd(), hi_acc = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 ab = _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    const __m256 cv = _mm256_loadu_ps(c + i);
    lo_acc = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(ab)), _mm256_cvtps_pd(_mm256_castps256_ps128(cv)),
                             lo_acc);
    hi_acc = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(ab, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(cv, 1)),
                             hi_acc);
  }
  double acc = hsum4(_mm256_add_pd(lo_acc, hi_acc));
  for (; i < n; ++i) acc += double(a[i] * b[i]) * double(c[i]);
  return acc;
}

void avx2_rms_norm_backward(const float* dy, const float* w, const float* x, float s, float t, float* dx, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s), vt = _mm256_set1_ps(t);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_fmsub_ps(_mm256_loadu_ps(dy + i), _mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), vt));
    _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(vs, g, _mm256_loadu_ps(dx + i)));
  }
  vec_kernels_reference().rms_norm_backward(dy + i, w + i, x + i, s, t, dx + i, n - i);
}

void avx2_add_scaled_product(const float* a, const float* b, float s, float* y, int64_t n) {
  const __m256 vs = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)), vs,
                                            _mm256_loadu_ps(y + i)));
  vec_kernels_reference().add_scaled_product(a + i, b + i, s, y + i, n - i);
}

void avx2_rope_rotate(const float* x1, const float* x2, const float* c, const float* s, float sign, int64_t n,
                      bool accumulate, float* y1, float* y2) {
  const __m256 vsign = _mm256_set1_ps(sign);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_loadu_ps(x1 + i), b = _mm256_loadu_ps(x2 + i), vc = _mm256_loadu_ps(c + i);
    const __m256 si = _mm256_mul_ps(vsign, _mm256_loadu_ps(s + i));
    __m256 ya = _mm256_sub_ps(_mm256_mul_ps(a, vc), _mm256_mul_ps(b, si));
    __m256 yb = _mm256_add_ps(_mm256_mul_ps(b, vc), _mm256_mul_ps(a, si));
    if (accumulate) {
      ya = _mm256_add_ps(_mm256_loadu_ps(y1 + i), ya);
      yb = _mm256_add_ps(_mm256_loadu_ps(y2 + i), yb);
    }
    _mm256_storeu_ps(y1 + i, ya);
    _mm256_storeu_ps(y2 + i, yb);
  }
  vec_kernels_reference().rope_rotate(x1 + i, x2 + i, c + i, s + i, sign, n - i, accumulate, y1 + i, y2 + i);
}

inline __m256 bf16x8(const uint16_t* p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}

// Lanes 0..7 in lo, 8..15 in hi, added (j, j+8), (j, j+4), (j, j+2), (j, j+1) as the reference adds them.
inline float reduce16(__m256 lo, __m256 hi) {
  const __m256 h = _mm256_add_ps(lo, hi);
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

// 16 lanes as two vectors of 8; a tail of K is copied, zero-padded, to 16 values.
void avx2_bf16_gemv(const uint16_t* w, int64_t rows, int64_t K, const float* x, float* y) {
  const int64_t body = K / 16 * 16, tail = K - body;
  alignas(32) float xt[16] = {};
  for (int64_t k = 0; k < tail; ++k) xt[k] = x[body + k];
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* wr = w + r * K;
    __m256 lo = _mm256_setzero_ps(), hi = lo;
    for (int64_t k = 0; k < body; k += 16) {
      lo = _mm256_fmadd_ps(bf16x8(wr + k), _mm256_loadu_ps(x + k), lo);
      hi = _mm256_fmadd_ps(bf16x8(wr + k + 8), _mm256_loadu_ps(x + k + 8), hi);
    }
    if (tail) {
      alignas(32) uint16_t wt[16] = {};
      for (int64_t k = 0; k < tail; ++k) wt[k] = wr[body + k];
      lo = _mm256_fmadd_ps(bf16x8(wt), _mm256_load_ps(xt), lo);
      hi = _mm256_fmadd_ps(bf16x8(wt + 8), _mm256_load_ps(xt + 8), hi);
    }
    y[r] = reduce16(lo, hi);
  }
}

// small_gemm_impl.h's vector type: 8 lanes, tails through vmaskmovps; 16 registers hold 12
// accumulators (6 rows × 2 vectors, or 12 rows × 1) beside the loaded and broadcast operands.
struct V256 {
  using reg = __m256;
  static constexpr int W = 8, kMaxNZ = 2, kRows1 = 12, kRows = 6, kRowBlock = 12, kTnRows = 6, kTnNZ = 2;
  static __m256i mask(int valid) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static reg zero() { return _mm256_setzero_ps(); }
  static reg bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg load(const float* p, int valid) { return valid == W ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask(valid)); }
  static void store(float* p, reg v, int valid) {
    if (valid == W) {
      _mm256_storeu_ps(p, v);
    } else {
      _mm256_maskstore_ps(p, mask(valid), v);
    }
  }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
};

const VecKernels kAvx2 = {"avx2",           avx2_max,           avx2_exp_shift_sum,     avx2_scale,
                          avx2_silu_mul,    avx2_silu_mul_backward, avx2_sum_squares,   avx2_scale_mul,
                          avx2_dot3,        avx2_rms_norm_backward, avx2_add_scaled_product, avx2_rope_rotate,
                          avx2_bf16_gemv,   small_gemm_impl::small_gemm<V256>, small_gemm_impl::small_gemm_tn<V256>};

}  // namespace

const VecKernels* vec_kernels_avx2() { return cpu_has_avx2() ? &kAvx2 : nullptr; }

}  // namespace qpeft
