// bf16 products with f32 accumulation, for the bf16 compute path (QLoRA's
// bnb_4bit_compute_dtype): oneDNN's matmul (its AVX512_BF16 / AMX kernels) when qpeft was built
// with oneDNN and the CPU has AVX512_BF16, else unavailable and callers stay in f32.
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

}  // namespace qpeft
