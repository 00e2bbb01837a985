// The f32 products behind every op: sgemm (OpenBLAS for small products, oneDNN's AVX-512
// kernels for large ones where the CPU has them) and onednn_f32_gemm itself, against a double
// reference, for every transpose, alpha and beta, padded leading dimensions and odd sizes.
#include <gtest/gtest.h>

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

}  // namespace
