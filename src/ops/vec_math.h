// Row kernels for softmax-like work (cross-entropy, attention), SwiGLU, RMSNorm and RoPE,
// selected once at start-up (core/cpu.h): AVX-512, else AVX2, else the portable reference.
// Same signatures; the SIMD tables agree with the reference to float rounding (tests).
#pragma once
#include <cstdint>

namespace qpeft {

struct VecKernels {
  const char* name;
  // max of x[0..n)  (n >= 1)
  float (*max)(const float* x, int64_t n);
  // x[i] = exp(x[i] − shift) in place; returns Σ x[i] (accumulated in double).
  double (*exp_shift_sum)(float* x, int64_t n, float shift);
  // x[i] *= s
  void (*scale)(float* x, int64_t n, float s);
  // y[i] = silu(g[i]) · u[i], silu(a) = a · sigmoid(a)  (SwiGLU)
  void (*silu_mul)(const float* g, const float* u, float* y, int64_t n);
  // Its backward: dg[i] (+)= dy·u·σ(g)·(1 + g(1 − σ(g))), du[i] (+)= dy·silu(g), added when
  // accumulate, else written. dg or du may be null (not wanted).
  void (*silu_mul_backward)(const float* g, const float* u, const float* dy, float* dg, float* du, int64_t n,
                            bool accumulate);
  // RMSNorm rows. Σ x[i]² of the squares rounded to float (as llama.cpp and PyTorch's f32
  // square them), summed in double.
  double (*sum_squares)(const float* x, int64_t n);
  // y[i] = x[i] · s · w[i]
  void (*scale_mul)(const float* x, float s, const float* w, float* y, int64_t n);
  // Σ (a[i] · b[i]) · c[i], products in float, the sum in double.
  double (*dot3)(const float* a, const float* b, const float* c, int64_t n);
  // dx[i] += s · (dy[i] · w[i] − x[i] · t)   (RMSNorm's input gradient, t = s · mean)
  void (*rms_norm_backward)(const float* dy, const float* w, const float* x, float s, float t, float* dx, int64_t n);
  // y[i] += (a[i] · b[i]) · s
  void (*add_scaled_product)(const float* a, const float* b, float s, float* y, int64_t n);
  // RoPE on the two halves (x1, x2) of one head (rotate-half layout), angle sines times
  // `sign` (−1: the inverse rotation): y1 = x1 c − x2 s', y2 = x2 c + x1 s'; added to (y1, y2)
  // when accumulate.
  void (*rope_rotate)(const float* x1, const float* x2, const float* c, const float* s, float sign, int64_t n,
                      bool accumulate, float* y1, float* y2);
  // y[r] = Σ_k w[r, k] · x[k] for a bf16 weight w [rows, K] and one f32 row x [K] (decoding a
  // token: each weight row read once, as bf16). Every table sums in the same order, so all give
  // the same bits: 16 lanes, lane j fused-multiply-adding k ≡ j (mod 16), then lanes added
  // (j, j+8), (j, j+4), (j, j+2), (j, j+1).
  void (*bf16_gemv)(const uint16_t* w, int64_t rows, int64_t K, const float* x, float* y);
  // Products with a thin side (LoRA's rank) or all sides short (attention's tiles), where
  // sgemm spends more on packing than on arithmetic. Each output element is one fused multiply-add chain from 0 in index order,
  // then one fused multiply-add with alpha, so every table gives the same bits.
  // out[M, n] = (c_in ? c_in : 0) + alpha · a[M, J] w[J, n]   (rows lda, ldw, ldc apart; c_in
  // shares out's ldc and may be out)
  void (*small_gemm)(const float* a, int64_t lda, int64_t M, int64_t J, const float* w, int64_t ldw, int64_t n,
                     float alpha, const float* c_in, float* out, int64_t ldc);
  // c[r, n] += alpha · a[M, r]ᵀ b[M, n], summed over m in order (rows lda, ldb, ldc apart)
  void (*small_gemm_tn)(const float* a, int64_t lda, int64_t M, int64_t r, const float* b, int64_t ldb, int64_t n,
                        float alpha, float* c, int64_t ldc);
};

const VecKernels& vec_kernels();            // the selected kernels
const VecKernels& vec_kernels_reference();  // portable scalar reference
const VecKernels* vec_kernels_avx2();       // nullptr if the CPU lacks AVX2 + FMA
const VecKernels* vec_kernels_avx512();     // nullptr if the CPU lacks AVX-512 F/BW/VL/DQ
// The selected kernels if they are a SIMD table, else nullptr: for callers whose fallback on
// such CPUs is a library (sgemm), not the scalar reference.
const VecKernels* vec_kernels_simd();

// exp with the same range reduction and polynomial as the SIMD kernels (≈1 ulp); 0 below −87.3.
float exp_approx(float x);
// sigmoid(a) = 1 / (1 + exp(−a)) through exp_approx, as the SIMD kernels compute it.
inline float sigmoid_approx(float a) { return 1.0f / (1.0f + exp_approx(-a)); }

}  // namespace qpeft
