// The SIMD bodies of VecKernels::small_gemm and small_gemm_tn (vec_math.h), written once for
// a vector type V and included by vec_math_avx2.cpp and vec_math_avx512.cpp. Every output
// element is one fused multiply-add chain in the reference's order, then one fused
// multiply-add with alpha, so every table gives the reference's bits.
//
// V provides: reg, W (lanes), kMaxNZ (vectors of columns per chunk) and kTnRows (rows of c per
// small_gemm_tn pass), both sized to its register file; zero(), bcast(const float*),
// load(p, valid), store(p, v, valid) (valid ≤ W lanes; the rest are not touched),
// fma(a, b, c) = a·b + c, mul(a, b).
#pragma once
#include <algorithm>
#include <cstdint>

// The loops over accumulators must unroll for them to live in registers.
#define QP_UNROLL _Pragma("GCC unroll 16")

namespace qpeft::small_gemm_impl {

// out[m0 : m0 + R, c0 : c0 + NZ·W] of small_gemm: R rows × NZ vectors of accumulators.
template <class V, int R, int NZ>
inline void gemm_block(const float* a, int64_t lda, int64_t m0, int64_t J, const float* w, int64_t ldw, int64_t c0,
                       int valid_last, float alpha, const float* c_in, float* out, int64_t ldc) {
  using reg = typename V::reg;
  reg acc[R][NZ];
  QP_UNROLL for (int i = 0; i < R; ++i)
    QP_UNROLL for (int z = 0; z < NZ; ++z) acc[i][z] = V::zero();
  for (int64_t j = 0; j < J; ++j) {
    reg wv[NZ];
    QP_UNROLL for (int z = 0; z < NZ; ++z) wv[z] = V::load(w + j * ldw + c0 + z * V::W, z == NZ - 1 ? valid_last : V::W);
    QP_UNROLL for (int i = 0; i < R; ++i) {
      const reg b = V::bcast(a + (m0 + i) * lda + j);
      QP_UNROLL for (int z = 0; z < NZ; ++z) acc[i][z] = V::fma(b, wv[z], acc[i][z]);
    }
  }
  const reg al = V::bcast(&alpha);
  QP_UNROLL for (int i = 0; i < R; ++i)
    QP_UNROLL for (int z = 0; z < NZ; ++z) {
      const int valid = z == NZ - 1 ? valid_last : V::W;
      const int64_t at = (m0 + i) * ldc + c0 + z * V::W;
      const reg r = c_in ? V::fma(al, acc[i][z], V::load(c_in + at, valid)) : V::mul(al, acc[i][z]);
      V::store(out + at, r, valid);
    }
}

// The rows [m0, m1) of one column chunk, R rows at a time, then the remainder row by row.
template <class V, int NZ>
inline void gemm_chunk(const float* a, int64_t lda, int64_t m0, int64_t m1, int64_t J, const float* w, int64_t ldw,
                       int64_t c0, int valid_last, float alpha, const float* c_in, float* out, int64_t ldc) {
  constexpr int R = NZ == 1 ? 8 : 4;  // R · NZ ≤ 16 accumulators
  int64_t m = m0;
  for (; m + R <= m1; m += R) gemm_block<V, R, NZ>(a, lda, m, J, w, ldw, c0, valid_last, alpha, c_in, out, ldc);
  for (; m < m1; ++m) gemm_block<V, 1, NZ>(a, lda, m, J, w, ldw, c0, valid_last, alpha, c_in, out, ldc);
}

// small_gemm: out[M, n] = (c_in ? c_in : 0) + alpha · a[M, J] w[J, n] (rows lda, ldw, ldc
// apart; c_in and out share ldc). Blocks of rows go in
// order, so c_in and out stream; within a block, columns go in chunks of up to kMaxNZ vectors
// (w stays in cache while every row block passes it).
template <class V>
void small_gemm(const float* a, int64_t lda, int64_t M, int64_t J, const float* w, int64_t ldw, int64_t n, float alpha,
                const float* c_in, float* out, int64_t ldc) {
  constexpr int64_t kChunk = V::kMaxNZ * V::W, kRows = 8;
  for (int64_t m0 = 0; m0 < M; m0 += kRows) {
    const int64_t m1 = std::min(M, m0 + kRows);
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
      const int64_t cols = std::min(kChunk, n - c0);
      const int nz = int((cols + V::W - 1) / V::W);
      const int valid_last = int(cols - (nz - 1) * V::W);
      switch (nz) {
        case 1: gemm_chunk<V, 1>(a, lda, m0, m1, J, w, ldw, c0, valid_last, alpha, c_in, out, ldc); break;
        case 2: gemm_chunk<V, 2>(a, lda, m0, m1, J, w, ldw, c0, valid_last, alpha, c_in, out, ldc); break;
        case 3: gemm_chunk<V, std::min(3, V::kMaxNZ)>(a, lda, m0, m1, J, w, ldw, c0, valid_last, alpha, c_in, out, ldc); break;
        default: gemm_chunk<V, V::kMaxNZ>(a, lda, m0, m1, J, w, ldw, c0, valid_last, alpha, c_in, out, ldc); break;
      }
    }
  }
}

// c[r0 : r0 + R, c0 : c0 + valid] of small_gemm_tn: one vector of columns, R rows of c.
template <class V, int R>
inline void tn_block(const float* a, int64_t lda, int64_t M, int64_t r0, const float* b, int64_t ldb, int64_t c0,
                     int valid, float alpha, float* c, int64_t ldc) {
  using reg = typename V::reg;
  reg acc[R];
  QP_UNROLL for (int i = 0; i < R; ++i) acc[i] = V::zero();
  for (int64_t m = 0; m < M; ++m) {
    const reg bv = V::load(b + m * ldb + c0, valid);
    QP_UNROLL for (int i = 0; i < R; ++i) acc[i] = V::fma(V::bcast(a + m * lda + r0 + i), bv, acc[i]);
  }
  const reg al = V::bcast(&alpha);
  QP_UNROLL for (int i = 0; i < R; ++i) {
    float* at = c + (r0 + i) * ldc + c0;
    V::store(at, V::fma(al, acc[i], V::load(at, valid)), valid);
  }
}

template <class V, int R>
inline void tn_rows(const float* a, int64_t lda, int64_t M, int64_t r0, const float* b, int64_t ldb, int64_t n,
                    float alpha, float* c, int64_t ldc) {
  for (int64_t c0 = 0; c0 < n; c0 += V::W)
    tn_block<V, R>(a, lda, M, r0, b, ldb, c0, int(std::min<int64_t>(V::W, n - c0)), alpha, c, ldc);
}

// small_gemm_tn: c[r, n] += alpha · a[M, r]ᵀ b[M, n] (rows lda, ldb, ldc apart): per
// column vector, kTnRows rows of c at a time accumulate over all M.
template <class V>
void small_gemm_tn(const float* a, int64_t lda, int64_t M, int64_t r, const float* b, int64_t ldb, int64_t n, float alpha, float* c,
                   int64_t ldc) {
  constexpr int R = V::kTnRows;
  int64_t r0 = 0;
  for (; r0 + R <= r; r0 += R) tn_rows<V, R>(a, lda, M, r0, b, ldb, n, alpha, c, ldc);
  for (; r0 + 4 <= r; r0 += 4) tn_rows<V, 4>(a, lda, M, r0, b, ldb, n, alpha, c, ldc);
  for (; r0 < r; ++r0) tn_rows<V, 1>(a, lda, M, r0, b, ldb, n, alpha, c, ldc);
}

}  // namespace qpeft::small_gemm_impl

#undef QP_UNROLL
