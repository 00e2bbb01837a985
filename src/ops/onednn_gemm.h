// Matrix products through oneDNN's matmul (Debian's libdnnl-dev), each single-threaded:
// callers partition across the pool, so results do not depend on oneDNN's threading.
// * bf16 with f32 accumulation, for the bf16 compute path (QLoRA's bnb_4bit_compute_dtype):
//   its AVX512_BF16 / AMX kernels, when the CPU has AVX512_BF16.
// * f32, where oneDNN's AVX-512 kernels beat the BLAS (linear.h's sgemm asks
//   onednn_f32_gemm_available() and falls back to OpenBLAS);
// * f32 with B already in oneDNN's own blocked layout, for frozen weights decoded into it.
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

// ---- f32 products with B packed ahead in oneDNN's own blocked layout ----
// A frozen weight that is decoded anyway (NF4, q4_K, bf16, ...) is written straight into the
// layout oneDNN's AVX-512 matmul would otherwise copy B into on every call, so the product
// reads it as is. For B [K, N] (B = Wᵀ, N weight rows of K columns; oneDNN's "BA16a64b"),
// element (k, n) lies at
//   (n / 64) · Kp · 64 + (k / 16) · 1024 + (k % 16) · 64 + n % 64,   Kp = K rounded up to 16,
// i.e. groups of 64 weight rows, each Kp × 64 floats; padding (k ≥ K, n ≥ N) holds zeros.
int64_t packed_b_k_padded(int64_t K);              // Kp
int64_t packed_b_floats(int64_t K, int64_t N);    // Kp · (N rounded up to 64)

// Up to 16 weight rows into one 64-row group of the packed layout: row i of src (src[i·ld + k],
// i < rows ≤ 16, k < K) becomes column n0 + i of the group (n0 ∈ {0, 16, 32, 48}); all 16
// columns n0..n0+15 and the padded k are written, zeros past `rows` and K (rows may be 0).
// Shapes: src [rows, ld ≥ K], group [Kp · 64]. Pure data movement: every path gives the same bits.
using PackBRowsFn = void (*)(const float* src, int64_t ld, int64_t rows, int64_t K, int64_t n0, float* group);
PackBRowsFn pack_b_rows();            // the fastest this CPU supports (capped by QPEFT_ISA)
PackBRowsFn pack_b_rows_reference();  // portable
PackBRowsFn pack_b_rows_avx512();     // nullptr if the CPU lacks AVX-512

// Whether oneDNN's f32 matmul takes B packed as above for C[M, N] = A[M, K] · B, A and C dense
// (another oneDNN version or CPU may choose another layout): false leaves the caller to
// multiply unpacked.
bool onednn_f32_packed_b_accepted(int64_t M, int64_t N, int64_t K);

// C[M, N] = A[M, K] · B for B packed as above (Bp [packed_b_floats(K, N)]), A and C dense (oneDNN
// 2.6's packed kernels take no other: with strides it falls back to a plain-layout gemm);
// single-threaded like the others. Only for shapes onednn_f32_packed_b_accepted.
void onednn_f32_gemm_packed_b(int64_t M, int64_t N, int64_t K, const float* A, const float* Bp, float* C);

namespace detail {
PackBRowsFn pack_b_rows_avx512_kernel();  // onednn_pack_avx512.cpp (no CPU check)
}  // namespace detail

}  // namespace qpeft
