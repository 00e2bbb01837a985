// Row kernels for softmax-like work (cross-entropy, attention), selected once at start-up:
// an AVX2 version when the CPU has it, else the portable reference. Same signatures.
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
};

const VecKernels& vec_kernels();            // the selected kernels
const VecKernels& vec_kernels_reference();  // portable scalar reference
const VecKernels* vec_kernels_avx2();       // nullptr if not compiled or not supported

// exp with the same range reduction and polynomial as the SIMD kernels (≈1 ulp); 0 below −87.3.
float exp_approx(float x);

}  // namespace qpeft
