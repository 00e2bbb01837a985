#include "ops/vec_math.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "core/cpu.h"

namespace qpeft {

float exp_approx(float x) {
  if (x < -87.33654f) return 0.0f;
  x = std::min(x, 88.3762626647949f);
  // x = n·ln2 + r, |r| <= ln2/2 (Cephes expf)
  const float n = std::nearbyint(x * 1.44269504088896341f);
  const float r = x - n * 0.693359375f - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  return y * std::bit_cast<float>(int32_t(int32_t(n) + 127) << 23);
}

namespace {

float ref_max(const float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

double ref_exp_shift_sum(float* x, int64_t n, float shift) {
  // 8 interleaved partial sums: the same association as the AVX2 kernel's lanes.
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    x[i] = exp_approx(x[i] - shift);
    acc[i % 8] += x[i];
  }
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

void ref_scale(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void ref_silu_mul(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = g[i] * sigmoid_approx(g[i]) * u[i];
}

void ref_silu_mul_backward(const float* g, const float* u, const float* dy, float* dg, float* du, int64_t n,
                           bool accumulate) {
  for (int64_t i = 0; i < n; ++i) {
    const float a = g[i], sig = sigmoid_approx(a);
    if (dg) dg[i] = (accumulate ? dg[i] : 0.0f) + dy[i] * u[i] * (sig * (1.0f + a * (1.0f - sig)));
    if (du) du[i] = (accumulate ? du[i] : 0.0f) + dy[i] * (a * sig);
  }
}

double ref_sum_squares(const float* x, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += double(x[i] * x[i]);
  return acc;
}

void ref_scale_mul(const float* x, float s, const float* w, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * s * w[i];
}

double ref_dot3(const float* a, const float* b, const float* c, int64_t n) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += double(a[i] * b[i]) * double(c[i]);
  return acc;
}

void ref_rms_norm_backward(const float* dy, const float* w, const float* x, float s, float t, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] += s * (dy[i] * w[i] - x[i] * t);
}

void ref_add_scaled_product(const float* a, const float* b, float s, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a[i] * b[i] * s;
}

void ref_rope_rotate(const float* x1, const float* x2, const float* c, const float* s, float sign, int64_t n,
                     bool accumulate, float* y1, float* y2) {
  for (int64_t i = 0; i < n; ++i) {
    const float a = x1[i], b = x2[i], si = sign * s[i];
    const float ya = a * c[i] - b * si, yb = b * c[i] + a * si;
    y1[i] = accumulate ? y1[i] + ya : ya;
    y2[i] = accumulate ? y2[i] + yb : yb;
  }
}

void ref_bf16_gemv(const uint16_t* w, int64_t rows, int64_t K, const float* x, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    float lane[16] = {};
    const uint16_t* wr = w + r * K;
    for (int64_t k = 0; k < K; ++k) {
      const uint32_t bits = uint32_t(wr[k]) << 16;
      float wk;
      std::memcpy(&wk, &bits, 4);
      lane[k % 16] = std::fma(wk, x[k], lane[k % 16]);
    }
    for (int h = 8; h >= 1; h /= 2)
      for (int j = 0; j < h; ++j) lane[j] += lane[j + h];
    y[r] = lane[0];
  }
}

void ref_small_gemm(const float* a, int64_t lda, int64_t M, int64_t J, const float* w, int64_t ldw, int64_t n,
                    float alpha, const float* c_in, float* out, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t c = 0; c < n; ++c) {
      float sum = 0.0f;
      for (int64_t j = 0; j < J; ++j) sum = std::fma(a[m * lda + j], w[j * ldw + c], sum);
      out[m * ldc + c] = c_in ? std::fma(alpha, sum, c_in[m * ldc + c]) : alpha * sum;
    }
}

void ref_small_gemm_tn(const float* a, int64_t lda, int64_t M, int64_t r, const float* b, int64_t ldb, int64_t n,
                       float alpha, float* c, int64_t ldc) {
  for (int64_t i = 0; i < r; ++i)
    for (int64_t col = 0; col < n; ++col) {
      float sum = 0.0f;
      for (int64_t m = 0; m < M; ++m) sum = std::fma(a[m * lda + i], b[m * ldb + col], sum);
      c[i * ldc + col] = std::fma(alpha, sum, c[i * ldc + col]);
    }
}

const VecKernels kReference = {"reference",       ref_max,           ref_exp_shift_sum,     ref_scale,
                               ref_silu_mul,      ref_silu_mul_backward, ref_sum_squares,   ref_scale_mul,
                               ref_dot3,          ref_rms_norm_backward, ref_add_scaled_product, ref_rope_rotate,
                               ref_bf16_gemv,     ref_small_gemm,    ref_small_gemm_tn};

}  // namespace

const VecKernels& vec_kernels_reference() { return kReference; }

const VecKernels* vec_kernels_simd() {
  const VecKernels& vk = vec_kernels();
  return &vk != &kReference ? &vk : nullptr;
}

const VecKernels& vec_kernels() {
  static const VecKernels* chosen = [] {
    const SimdLevel cap = simd_cap();
    if (cap >= SimdLevel::avx512)
      if (const VecKernels* k = vec_kernels_avx512()) return k;
    if (cap >= SimdLevel::avx2)
      if (const VecKernels* k = vec_kernels_avx2()) return k;
    return &kReference;
  }();
  return *chosen;
}

}  // namespace qpeft
