// The SIMD bodies of VecKernels::small_gemm and small_gemm_tn (vec_math.h), written once for
// a vector type V and included by vec_math_avx2.cpp and vec_math_avx512.cpp. Every output
// element is one fused multiply-add chain in the reference's order, then one fused
// multiply-add with alpha, so every table gives the reference's bits.
//
// V provides: reg, W (lanes); the register blocking, sized to its register file: for
// small_gemm, kMaxNZ (vectors of columns per chunk), kRows1 and kRows (rows per block of a
// one-vector and of a wider chunk), kRowBlock (rows per pass over the columns, a multiple of
// both); for small_gemm_tn, kTnRows × kTnNZ (rows × vectors of c per block); zero(), bcast(const float*),
// load(p, valid), store(p, v, valid) (valid ≤ W lanes; the rest are not touched),
// fma(a, b, c) = a·b + c, mul(a, b).
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

// The loops over accumulators must unroll for them to live in registers.
#define QP_UNROLL _Pragma("GCC unroll 16")

namespace qpeft::small_gemm_impl {

// out[m0 : m0 + R, c0 : c0 + NZ·W] of small_gemm: R rows × NZ vectors of accumulators; wc is
// w's column c0 (rows ldw apart).
template <class V, int R, int NZ>
inline void gemm_block(const float* a, int64_t lda, int64_t m0, int64_t J, const float* wc, int64_t ldw, int64_t c0,
                       int valid_last, float alpha, const float* c_in, float* out, int64_t ldc) {
  using reg = typename V::reg;
  reg acc[R][NZ];
  QP_UNROLL for (int i = 0; i < R; ++i)
    QP_UNROLL for (int z = 0; z < NZ; ++z) acc[i][z] = V::zero();
  for (int64_t j = 0; j < J; ++j) {
    reg wv[NZ];
    QP_UNROLL for (int z = 0; z < NZ; ++z) wv[z] = V::load(wc + j * ldw + z * V::W, z == NZ - 1 ? valid_last : V::W);
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

// The rows [m0, m1) of one column chunk, R rows at a time, then 4, then the remainder row by row.
template <class V, int NZ>
inline void gemm_chunk(const float* a, int64_t lda, int64_t m0, int64_t m1, int64_t J, const float* wc, int64_t ldw,
                       int64_t c0, int valid_last, float alpha, const float* c_in, float* out, int64_t ldc) {
  constexpr int R = NZ == 1 ? V::kRows1 : V::kRows;
  int64_t m = m0;
  for (; m + R <= m1; m += R) gemm_block<V, R, NZ>(a, lda, m, J, wc, ldw, c0, valid_last, alpha, c_in, out, ldc);
  if constexpr (R > 4)
    for (; m + 4 <= m1; m += 4) gemm_block<V, 4, NZ>(a, lda, m, J, wc, ldw, c0, valid_last, alpha, c_in, out, ldc);
  for (; m < m1; ++m) gemm_block<V, 1, NZ>(a, lda, m, J, wc, ldw, c0, valid_last, alpha, c_in, out, ldc);
}

// small_gemm: out[M, n] = (c_in ? c_in : 0) + alpha · a[M, J] w[J, n] (rows lda, ldw, ldc
// apart; c_in and out share ldc). Blocks of rows go in order, so c_in and out stream; within a
// block, columns go in chunks of up to kMaxNZ vectors. Where several row blocks will pass it,
// w is first copied chunk by chunk into contiguous [J, kChunk] panels: read in place, its rows
// ldw apart (often a multiple of 2 KiB) fall into a few L1 sets and evict each other.
template <class V>
void small_gemm(const float* a, int64_t lda, int64_t M, int64_t J, const float* w, int64_t ldw, int64_t n, float alpha,
                const float* c_in, float* out, int64_t ldc) {
  constexpr int64_t kChunk = V::kMaxNZ * V::W, kRows = V::kRowBlock;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  thread_local std::vector<float> panels;
  const bool packed = M >= 2 * kRows && ldw != kChunk;
  if (packed) {
    panels.resize(size_t(chunks * J * kChunk));
    for (int64_t k = 0; k < chunks; ++k) {
      const int64_t c0 = k * kChunk, cols = std::min(kChunk, n - c0);
      float* panel = panels.data() + k * J * kChunk;
      for (int64_t j = 0; j < J; ++j) std::copy(w + j * ldw + c0, w + j * ldw + c0 + cols, panel + j * kChunk);
    }
  }
  for (int64_t m0 = 0; m0 < M; m0 += kRows) {
    const int64_t m1 = std::min(M, m0 + kRows);
    for (int64_t k = 0; k < chunks; ++k) {
      const int64_t c0 = k * kChunk, cols = std::min(kChunk, n - c0);
      const int nz = int((cols + V::W - 1) / V::W);
      const int valid_last = int(cols - (nz - 1) * V::W);
      const float* wc = packed ? panels.data() + k * J * kChunk : w + c0;
      const int64_t ldwc = packed ? kChunk : ldw;
      switch (nz) {
        case 1: gemm_chunk<V, 1>(a, lda, m0, m1, J, wc, ldwc, c0, valid_last, alpha, c_in, out, ldc); break;
        case 2: gemm_chunk<V, 2>(a, lda, m0, m1, J, wc, ldwc, c0, valid_last, alpha, c_in, out, ldc); break;
        case 3: gemm_chunk<V, std::min(3, V::kMaxNZ)>(a, lda, m0, m1, J, wc, ldwc, c0, valid_last, alpha, c_in, out, ldc); break;
        default: gemm_chunk<V, V::kMaxNZ>(a, lda, m0, m1, J, wc, ldwc, c0, valid_last, alpha, c_in, out, ldc); break;
      }
    }
  }
}

// c[r0 : r0 + R, c0 : c0 + NZ·W] of small_gemm_tn over the rows [m0, m1) of a and b (the last
// vector valid_last lanes wide). The sums start from 0 at m0 = 0, else from sums (the earlier
// rows' partial sums, stored exactly); at m1 = M they go into c, else back into sums.
template <class V, int R, int NZ>
inline void tn_block(const float* a, int64_t lda, int64_t m0, int64_t m1, bool first, bool last, int64_t r0, const float* b,
                     int64_t ldb, int64_t c0, int valid_last, float alpha, float* sums, float* c, int64_t ldc) {
  using reg = typename V::reg;
  reg acc[R][NZ];
  QP_UNROLL for (int i = 0; i < R; ++i)
    QP_UNROLL for (int z = 0; z < NZ; ++z)
      acc[i][z] = first ? V::zero() : V::load(sums + (r0 + i) * ldc + c0 + z * V::W, z == NZ - 1 ? valid_last : V::W);
  for (int64_t m = m0; m < m1; ++m) {
    reg bv[NZ];
    QP_UNROLL for (int z = 0; z < NZ; ++z) bv[z] = V::load(b + m * ldb + c0 + z * V::W, z == NZ - 1 ? valid_last : V::W);
    QP_UNROLL for (int i = 0; i < R; ++i) {
      const reg av = V::bcast(a + m * lda + r0 + i);
      QP_UNROLL for (int z = 0; z < NZ; ++z) acc[i][z] = V::fma(av, bv[z], acc[i][z]);
    }
  }
  const reg al = V::bcast(&alpha);
  QP_UNROLL for (int i = 0; i < R; ++i)
    QP_UNROLL for (int z = 0; z < NZ; ++z) {
      const int valid = z == NZ - 1 ? valid_last : V::W;
      const int64_t at = (r0 + i) * ldc + c0 + z * V::W;
      if (last) {
        V::store(c + at, V::fma(al, acc[i][z], V::load(c + at, valid)), valid);
      } else {
        V::store(sums + at, acc[i][z], valid);
      }
    }
}

// The rows of c for one column chunk and one block of a's rows: kTnRows at a time, then 4, then one.
template <class V, int NZ>
inline void tn_chunk(const float* a, int64_t lda, int64_t m0, int64_t m1, bool first, bool last, int64_t r, const float* b,
                     int64_t ldb, int64_t c0, int valid_last, float alpha, float* sums, float* c, int64_t ldc) {
  constexpr int R = V::kTnRows;
  int64_t r0 = 0;
  for (; r0 + R <= r; r0 += R) tn_block<V, R, NZ>(a, lda, m0, m1, first, last, r0, b, ldb, c0, valid_last, alpha, sums, c, ldc);
  for (; r0 + 4 <= r; r0 += 4) tn_block<V, 4, NZ>(a, lda, m0, m1, first, last, r0, b, ldb, c0, valid_last, alpha, sums, c, ldc);
  for (; r0 < r; ++r0) tn_block<V, 1, NZ>(a, lda, m0, m1, first, last, r0, b, ldb, c0, valid_last, alpha, sums, c, ldc);
}

// small_gemm_tn: c[r, n] += alpha · a[M, r]ᵀ b[M, n] (rows lda, ldb, ldc apart). a's and b's rows
// go in blocks of kTnMBlock, and within a block, chunks of kTnNZ column vectors × blocks of c's
// rows: a block's lines of b stay in cache while every row block of c passes them (streamed
// whole, b's rows — often a multiple of 2 KiB apart — would fall into a few cache sets and be
// read from memory once per row block). The partial sums between blocks are kept exactly, so
// each element is still one chain over m in order.
template <class V>
void small_gemm_tn(const float* a, int64_t lda, int64_t M, int64_t r, const float* b, int64_t ldb, int64_t n, float alpha, float* c,
                   int64_t ldc) {
  constexpr int64_t kChunk = V::kTnNZ * V::W, kMBlock = 128;
  thread_local std::vector<float> sum_buffer;
  float* sums = nullptr;
  if (M > kMBlock) {
    sum_buffer.resize(size_t(r * ldc));
    sums = sum_buffer.data();
  }
  for (int64_t m0 = 0; m0 < M || m0 == 0; m0 += kMBlock) {
    const int64_t m1 = std::min(M, m0 + kMBlock);
    const bool first = m0 == 0, last = m1 == M;
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
      const int64_t cols = std::min(kChunk, n - c0);
      const int nz = int((cols + V::W - 1) / V::W);
      const int valid_last = int(cols - (nz - 1) * V::W);
      if (nz == V::kTnNZ) {
        tn_chunk<V, V::kTnNZ>(a, lda, m0, m1, first, last, r, b, ldb, c0, valid_last, alpha, sums, c, ldc);
      } else {
        for (int z = 0; z < nz; ++z)
          tn_chunk<V, 1>(a, lda, m0, m1, first, last, r, b, ldb, c0 + z * V::W, z == nz - 1 ? valid_last : V::W, alpha, sums, c,
                         ldc);
      }
    }
    if (M == 0) break;
  }
}

}  // namespace qpeft::small_gemm_impl

#undef QP_UNROLL
