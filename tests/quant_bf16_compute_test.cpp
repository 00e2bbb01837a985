// The bf16 compute path (--compute-dtype bf16) of the frozen-weight products against an
// independent reference: inputs and weights rounded to bf16 (nearest even), products summed in
// double. Dense f32, bf16 and f16 weights and an NF4 + DQ weight; odd shapes; one panel and
// many (small panels); the input gradient with and without accumulation. Where bf16 compute
// is not available (no AVX512_BF16, no oneDNN, or QPEFT_ISA below avx512) the fallback is f32
// in effect, a note saying why, and the f32 results bit for bit; that is tested everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "grad_check.h"
#include "ops/onednn_gemm.h"
#include "ops/linear.h"
#include "quant/quantized_weight.h"

using namespace qpeft;
using qpeft::testing::random_tensor;

namespace {

float bf16_round(float v) { return bf16_to_f32(f32_to_bf16(v)); }

// The weight as the bf16 path sees it: decoded to f32, then rounded to bf16.
std::vector<float> rounded_weight(const FrozenWeight& w) {
  std::vector<float> v = decode_to_f32(w).to_vector();
  for (float& e : v) e = bf16_round(e);
  return v;
}

struct Case {
  std::string what;
  std::shared_ptr<FrozenWeight> w;
};

std::vector<Case> weights(int64_t N, int64_t K) {
  Tensor t = random_tensor({N, K}, uint64_t(N * 7 + K), 0.5f);
  std::vector<Case> out;
  out.push_back({"f32", std::make_shared<DenseWeight>(t, "w")});
  out.push_back({"bf16", std::make_shared<DenseWeight>(t.to(DType::BF16), "w")});
  out.push_back({"f16", std::make_shared<DenseWeight>(t.to(DType::F16), "w")});
  out.push_back({"nf4+dq", std::make_shared<QuantizedWeight>(QuantizedWeight::quantize(t, QuantFormat::NF4, 64, true, "w"))});
  return out;
}

class Bf16Compute : public ::testing::Test {
 protected:
  void TearDown() override {
    set_linear_compute_dtype(DType::F32);
    set_linear_panel_bytes(size_t(8) << 20);
  }
};

TEST_F(Bf16Compute, ForwardAndInputGradMatchRoundedReference) {
  std::string note;
  if (set_linear_compute_dtype(DType::BF16, &note) != DType::BF16) {
    EXPECT_FALSE(note.empty());
    GTEST_SKIP() << "bf16 compute not available here (" << note << "); Bf16Compute.FallbackIsF32 covers this machine";
  }
  for (size_t panel_bytes : {size_t(8) << 20, size_t(8192)}) {
    set_linear_panel_bytes(panel_bytes);
    for (auto [M, N, K] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{{1, 17, 64}, {3, 100, 128}, {37, 257, 192}, {64, 64, 640}}) {
      for (const Case& c : weights(N, K)) {
        const std::string what = c.what + " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" +
                                 std::to_string(K) + " panel=" + std::to_string(panel_bytes);
        const std::vector<float> wr = rounded_weight(*c.w);
        Tensor x = random_tensor({M, K}, uint64_t(M + N + K));
        Tensor y = Tensor::empty({M, N});
        linear_forward(x.f32(), M, *c.w, y.f32());
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < N; ++n) {
            double ref = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double p = double(bf16_round(x.f32()[m * K + k])) * wr[size_t(n * K + k)];
              ref += p;
              mag += std::abs(p);
            }
            ASSERT_NEAR(y.f32()[m * N + n], ref, 1e-5 * mag + 1e-6) << what << " y[" << m << "," << n << "]";
          }
        Tensor dy = random_tensor({M, N}, uint64_t(3 * M + N));
        for (bool accumulate : {false, true}) {
          Tensor dx = Tensor::full({M, K}, 0.5f);
          linear_input_grad(dy.f32(), M, *c.w, dx.f32(), accumulate);
          for (int64_t m = 0; m < M; ++m)
            for (int64_t k = 0; k < K; ++k) {
              double ref = accumulate ? 0.5 : 0.0, mag = std::abs(ref);
              for (int64_t n = 0; n < N; ++n) {
                const double p = double(bf16_round(dy.f32()[m * N + n])) * wr[size_t(n * K + k)];
                ref += p;
                mag += std::abs(p);
              }
              ASSERT_NEAR(dx.f32()[m * K + k], ref, 1e-5 * mag + 1e-6)
                  << what << (accumulate ? " accumulate" : "") << " dx[" << m << "," << k << "]";
            }
        }
      }
    }
  }
}

TEST_F(Bf16Compute, DiffersFromF32ByBf16RoundingOnly) {
  // bf16 inputs carry 8 significant bits: the bf16 result is near, not equal to, the f32 one.
  std::string note;
  if (set_linear_compute_dtype(DType::BF16, &note) != DType::BF16) GTEST_SKIP() << note;
  const int64_t M = 16, N = 96, K = 256;
  auto w = std::make_shared<DenseWeight>(random_tensor({N, K}, 5, 0.5f), "w");
  Tensor x = random_tensor({M, K}, 6);
  Tensor yb = Tensor::empty({M, N}), yf = Tensor::empty({M, N});
  linear_forward(x.f32(), M, *w, yb.f32());
  set_linear_compute_dtype(DType::F32);
  linear_forward(x.f32(), M, *w, yf.f32());
  double max_rel = 0, norm = 0;
  for (int64_t i = 0; i < M * N; ++i) norm = std::max(norm, double(std::abs(yf.f32()[i])));
  bool any_differs = false;
  for (int64_t i = 0; i < M * N; ++i) {
    max_rel = std::max(max_rel, std::abs(double(yb.f32()[i]) - yf.f32()[i]) / norm);
    any_differs = any_differs || yb.f32()[i] != yf.f32()[i];
  }
  EXPECT_TRUE(any_differs) << "the bf16 path computed exactly the f32 result: is it running?";
  EXPECT_LT(max_rel, 2e-2);
}

TEST_F(Bf16Compute, FallbackIsF32) {
  // Where bf16 runs here, QPEFT_ISA=avx2 takes it away (read on every call), so the fallback is
  // tested on every machine.
  std::string why;
  const bool capped = bf16_gemm_available();
  const char* before = std::getenv("QPEFT_ISA");
  const std::string saved = before ? before : "";
  if (capped) setenv("QPEFT_ISA", "avx2", 1);
  ASSERT_FALSE(bf16_gemm_available(&why));
  std::string note;
  EXPECT_EQ(set_linear_compute_dtype(DType::BF16, &note), DType::F32);
  EXPECT_NE(note.find(why), std::string::npos) << note;
  EXPECT_EQ(linear_compute_dtype(), DType::F32);
  auto w = std::make_shared<DenseWeight>(random_tensor({40, 24}, 1), "w");
  Tensor x = random_tensor({5, 24}, 2), y1 = Tensor::empty({5, 40}), y2 = Tensor::empty({5, 40});
  linear_forward(x.f32(), 5, *w, y1.f32());
  set_linear_compute_dtype(DType::F32);
  linear_forward(x.f32(), 5, *w, y2.f32());
  for (int64_t i = 0; i < y1.numel(); ++i) ASSERT_EQ(y1.f32()[i], y2.f32()[i]);
  if (capped && before) setenv("QPEFT_ISA", saved.c_str(), 1);
  if (capped && !before) unsetenv("QPEFT_ISA");
}

}  // namespace
