// Matrix products through oneDNN's matmul (Debian's libdnnl-dev), each single-threaded:
// callers partition across the pool, so results do not depend on oneDNN's threading.
// * bf16 with f32 accumulation, for the bf16 compute path (QLoRA's bnb_4bit_compute_dtype):
//   its AVX512_BF16 / AMX kernels, when the CPU has AVX512_BF16.
// * f32, where oneDNN's AVX-512 kernels beat the BLAS (linear.h's sgemm asks
//   onednn_f32_gemm_available() and falls back to OpenBLAS).
#pragma once
#include <cstdint>
#include <string>

namespace qpeft {

// True when bf16_gemm can run here. why_not, when given, says what is missing otherwise.
bool bf16_gemm_available(std::string* why_not = nullptr);

// C[M, N] = A[M, K] · op(B) + beta · C, row-major; A and B bf16 (uint16 bits), C f32;
// op(B) = Bᵀ for B [N, K] when trans_b, else B [K, N]; beta 0 or 1. Single-threaded: callers
// partition across the pool, so results do not depend on oneDNN's threading.
void bf16_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
               int64_t ldb, float beta, float* C, int64_t ldc);

// True when onednn_f32_gemm can run here: built with oneDNN, AVX-512 present and allowed
// (QPEFT_ISA), and QPEFT_F32_GEMM is not "openblas". Read once.
bool onednn_f32_gemm_available();

// C[M, N] = alpha · op(A) op(B) + beta · C, row-major f32, as cblas_sgemm.
void onednn_f32_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace qpeft
