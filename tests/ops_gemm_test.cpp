// The f32 products behind every op: sgemm (OpenBLAS for small products, oneDNN's AVX-512
// kernels for large ones where the CPU has them) and onednn_f32_gemm itself, against a double
// reference, for every transpose, alpha and beta, padded leading dimensions and odd sizes; and
// oneDNN's packed-B layout: every pack_b_rows path against the element-by-element formula,
// and products on packed B against the double reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>
#include <vector>

#include "core/rng.h"
#include "ops/linear.h"
#include "ops/onednn_gemm.h"

using namespace qpeft;

namespace {

using Gemm = void (*)(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                      float, float*, int64_t);

void check_gemm(Gemm gemm, const std::string& name) {
  Rng rng(11);
  for (auto [M, N, K] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{2, 3, 5}, {17, 33, 9}, {130, 70, 150}, {256, 128, 200}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (auto [alpha, beta] : std::vector<std::pair<float, float>>{{1.0f, 0.0f}, {0.5f, 1.0f}, {2.0f, 0.25f}}) {
          const int64_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
          std::vector<float> A(size_t((ta ? K : M) * lda)), B(size_t((tb ? N : K) * ldb)), C(size_t(M * ldc));
          for (float& v : A) v = float(rng.uniform()) - 0.5f;
          for (float& v : B) v = float(rng.uniform()) - 0.5f;
          for (float& v : C) v = float(rng.uniform()) - 0.5f;
          std::vector<float> C0 = C;
          gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
          const std::string what = name + " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                                   std::to_string(K) + (ta ? " Aᵀ" : "") + (tb ? " Bᵀ" : "") + " alpha=" +
                                   std::to_string(alpha) + " beta=" + std::to_string(beta);
          for (int64_t i = 0; i < M; ++i) {
            for (int64_t j = 0; j < N; ++j) {
              double ref = beta * double(C0[size_t(i * ldc + j)]), mag = std::abs(ref);
              for (int64_t k = 0; k < K; ++k) {
                const double a = ta ? A[size_t(k * lda + i)] : A[size_t(i * lda + k)];
                const double b = tb ? B[size_t(j * ldb + k)] : B[size_t(k * ldb + j)];
                ref += alpha * a * b;
                mag += std::abs(alpha * a * b);
              }
              ASSERT_NEAR(C[size_t(i * ldc + j)], ref, 1e-6 * mag + 1e-7) << what << " C[" << i << "," << j << "]";
            }
            for (int64_t j = N; j < ldc; ++j)  // the padding is never written
              ASSERT_EQ(C[size_t(i * ldc + j)], C0[size_t(i * ldc + j)]) << what << " wrote into the padding";
          }
        }
}

TEST(Gemm, SgemmMatchesDoubleReference) { check_gemm(sgemm, "sgemm"); }

TEST(Gemm, OnednnF32MatchesDoubleReference) {
  std::printf("oneDNN f32 products %s\n", onednn_f32_gemm_available() ? "used for large products here" : "not available here (OpenBLAS only)");
  if (!onednn_f32_gemm_available()) GTEST_SKIP() << "no oneDNN AVX-512 path on this machine: sgemm is OpenBLAS alone";
  check_gemm(onednn_f32_gemm, "onednn_f32_gemm");
}

// Where element (k, n) of B = Wᵀ [K, N] lies in the packed layout (onednn_gemm.h's formula).
int64_t packed_offset(int64_t k, int64_t n, int64_t K) {
  return (n / 64) * packed_b_k_padded(K) * 64 + (k / 16) * 1024 + (k % 16) * 64 + n % 64;
}

TEST(Gemm, PackBRowsEveryPathPlacesRowsByTheFormula) {
  std::vector<std::pair<std::string, PackBRowsFn>> paths{{"reference", pack_b_rows_reference()}};
  if (PackBRowsFn f = pack_b_rows_avx512()) paths.emplace_back("avx512", f);
  std::printf("pack_b_rows: reference ran, avx512 %s\n", pack_b_rows_avx512() ? "ran" : "SKIPPED (not supported here)");
  Rng rng(5);
  for (int64_t K : {1, 15, 16, 17, 64, 100})
    for (int64_t rows : {0, 1, 7, 15, 16})
      for (int64_t n0 : {0, 16, 48}) {
        const int64_t ld = K + 3, kp = packed_b_k_padded(K);
        std::vector<float> src(size_t(16 * ld));
        for (float& v : src) v = float(rng.uniform()) - 0.5f;
        for (const auto& [name, pack] : paths) {
          std::vector<float> group(size_t(kp * 64), -7.0f);
          pack(src.data(), ld, rows, K, n0, group.data());
          for (int64_t k = 0; k < kp; ++k)
            for (int64_t n = 0; n < 64; ++n) {
              const float got = group[size_t(packed_offset(k, n, K))];
              const bool mine = n >= n0 && n < n0 + 16;
              const float want = !mine ? -7.0f : (n - n0 < rows && k < K) ? src[size_t((n - n0) * ld + k)] : 0.0f;
              ASSERT_EQ(got, want) << name << " K=" << K << " rows=" << rows << " n0=" << n0 << " at k=" << k
                                   << " n=" << n << (mine ? "" : " (outside its 16 columns: must stay untouched)");
            }
        }
      }
}

TEST(Gemm, OnednnPackedBMatchesDoubleReference) {
  if (!onednn_f32_gemm_available()) GTEST_SKIP() << "no oneDNN AVX-512 path on this machine";
  Rng rng(9);
  int ran = 0;
  for (auto [M, N, K] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{64, 64, 64}, {33, 130, 100}, {256, 192, 257}}) {
    if (!onednn_f32_packed_b_accepted(M, N, K)) {
      std::printf("oneDNN takes another B layout for %lldx%lldx%lld: skipped\n", (long long)M, (long long)N,
                  (long long)K);
      continue;
    }
    ++ran;
    std::vector<float> A(size_t(M * K)), W(size_t(N * K)), C(size_t(M * N), -5.0f), Bp(size_t(packed_b_floats(K, N)), -9.0f);
    for (float& v : A) v = float(rng.uniform()) - 0.5f;
    for (float& v : W) v = float(rng.uniform()) - 0.5f;
    for (int64_t n0 = 0; n0 < (N + 63) / 64 * 64; n0 += 16)  // W's rows are B's columns
      pack_b_rows()(W.data() + std::min(n0, N) * K, K, std::clamp<int64_t>(N - n0, 0, 16), K, n0 % 64,
                    Bp.data() + (n0 / 64) * packed_b_k_padded(K) * 64);
    onednn_f32_gemm_packed_b(M, N, K, A.data(), Bp.data(), C.data());
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += double(A[size_t(i * K + k)]) * W[size_t(j * K + k)];
        ASSERT_NEAR(C[size_t(i * N + j)], s, 1e-4 * (1 + std::fabs(s))) << M << "x" << N << "x" << K;
      }
  }
  EXPECT_GT(ran, 0) << "oneDNN took the packed layout for none of the shapes: the packed products never run here";
}

}  // namespace
