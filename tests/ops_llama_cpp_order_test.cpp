// The llama.cpp-order kernels (ops/llama_cpp_order.h): their AVX2 code against scalar forms of
// the orders they state, and the ops against qpeft's ordinary ones. That the orders are
// llama.cpp's own is checked against llama.cpp itself: tests/cli_gguf_test.cpp and
// scripts/llama-cpp-products.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "core/cpu.h"
#include "core/error.h"
#include "grad_check.h"
#include "ops/attention.h"
#include "ops/linear.h"
#include "ops/llama_cpp_order.h"
#include "ops/rope.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

class LlamaCppOrder : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    if (llama_cpp_lanes() == 0) GTEST_SKIP() << "no AVX2 + FMA: llama.cpp's orders are not followed on this CPU";
  }
  int lanes() const { return GetParam(); }
};

uint32_t bits(float x) { return std::bit_cast<uint32_t>(x); }

// Scalar forms of the two reductions: halves added pairwise down to one lane (16 lanes, and
// llamafile's 8-lane hsum), and GGML_F32x8_REDUCE's (t0 + t1) + (t2 + t3) end.
float halving_sum(const float* v, int n) {
  std::vector<float> a(v, v + n);
  for (int w = n / 2; w >= 2; w /= 2)
    for (int i = 0; i < w; ++i) a[size_t(i)] = a[size_t(i)] + a[size_t(i + w)];
  return a[0] + a[1];
}
float vec_dot_order(const float* x, const float* y, int64_t n, int L) {
  std::vector<float> acc(size_t(4 * L), 0.0f);
  const int64_t np = n / (4 * L) * (4 * L);
  for (int64_t i = 0; i < np; ++i) acc[size_t(i % (4 * L))] = std::fma(x[i], y[i], acc[size_t(i % (4 * L))]);
  for (int l = 0; l < L; ++l) {
    acc[size_t(l)] = acc[size_t(l)] + acc[size_t(2 * L + l)];
    acc[size_t(L + l)] = acc[size_t(L + l)] + acc[size_t(3 * L + l)];
    acc[size_t(l)] = acc[size_t(l)] + acc[size_t(L + l)];
  }
  float s;
  if (L == 16) {
    s = halving_sum(acc.data(), 16);
  } else {
    float t[4];
    for (int i = 0; i < 4; ++i) t[i] = acc[size_t(i)] + acc[size_t(i + 4)];
    s = (t[0] + t[1]) + (t[2] + t[3]);
  }
  for (int64_t i = np; i < n; ++i) s = std::fma(x[i], y[i], s);
  return s;
}
float sgemm_order(const float* x, const float* y, int64_t n, int L) {
  std::vector<float> acc(size_t(L), 0.0f);
  for (int64_t i = 0; i < n; ++i) acc[size_t(i % L)] = std::fma(x[i], y[i], acc[size_t(i % L)]);
  return halving_sum(acc.data(), L);
}

}  // namespace

TEST_P(LlamaCppOrder, DotsSumInTheirStatedOrders) {
  const Tensor x = random_tensor({256}, 1, 3.0f), y = random_tensor({256}, 2, 3.0f);
  for (int64_t n : {1, 7, 16, 48, 64, 100, 128, 256}) {
    SCOPED_TRACE(n);
    EXPECT_EQ(bits(llama_cpp_vec_dot(x.f32(), y.f32(), n, lanes())), bits(vec_dot_order(x.f32(), y.f32(), n, lanes())));
    if (n % lanes() == 0)
      EXPECT_EQ(bits(llama_cpp_sgemm_dot(x.f32(), y.f32(), n, lanes())), bits(sgemm_order(x.f32(), y.f32(), n, lanes())));
  }
  EXPECT_THROW(llama_cpp_sgemm_dot(x.f32(), y.f32(), lanes() + 1, lanes()), Error);
}

TEST_P(LlamaCppOrder, ExponentialIsWithinTwoUlpsOfLibm) {
  for (float x = -103.0f; x < 88.0f; x += 0.0137f) {
    const double want = std::exp(double(x));
    const float got = llama_cpp_expf(x, lanes());
    ASSERT_LE(std::fabs(got - want), 2.5 * std::fabs(std::nextafter(float(want), INFINITY) - float(want)) + 1e-44)
        << "x = " << x;
  }
  EXPECT_EQ(llama_cpp_expf(-200.0f, lanes()), 0.0f);
  EXPECT_EQ(llama_cpp_expf(-std::numeric_limits<float>::infinity(), lanes()), 0.0f);
  EXPECT_TRUE(std::isinf(llama_cpp_expf(200.0f, lanes())));
  EXPECT_EQ(llama_cpp_expf(0.0f, lanes()), 1.0f);
}

// The vectorised exponential against its scalar form, through SwiGLU: whole groups of lanes
// use it (large |x| takes the scalar path), the last n % lanes elements libm's expf.
TEST_P(LlamaCppOrder, SwigluGroupsUseTheLaneExponentialAndTheTailLibm) {
  const int64_t n = 16 * 6 + 5;
  Tensor g = random_tensor({n}, 3, 4.0f), u = random_tensor({n}, 4);
  g.f32()[3] = 95.0f, g.f32()[20] = -100.0f, g.f32()[40] = 130.0f, g.f32()[n - 2] = -90.0f;
  std::vector<float> y(static_cast<size_t>(n));
  llama_cpp_swiglu_row(g.f32(), u.f32(), y.data(), n, lanes());
  const int64_t vectors = n / lanes() * lanes();
  for (int64_t i = 0; i < n; ++i) {
    const float x = g.f32()[i];
    const float e = i < vectors ? llama_cpp_expf(0.0f - x, lanes()) : std::exp(-x);
    EXPECT_EQ(bits(y[size_t(i)]), bits(x / (1.0f + e) * u.f32()[i])) << i;
  }
}

TEST_P(LlamaCppOrder, AttentionComputesCausalSoftmaxAttention) {
  struct Case {
    int64_t B, Tq, Tk, Hq, Hkv, D;
  };
  for (const Case c : {Case{2, 19, 19, 4, 2, 64}, Case{1, 1, 37, 4, 4, 128}, Case{1, 3, 40, 2, 1, 64}, Case{1, 5, 5, 2, 2, 6}}) {
    SCOPED_TRACE(::testing::Message() << c.B << "x" << c.Tq << "/" << c.Tk << " heads " << c.Hq << "/" << c.Hkv << " D " << c.D);
    Var q(random_tensor({c.B, c.Tq, c.Hq, c.D}, 5)), k(random_tensor({c.B, c.Tk, c.Hkv, c.D}, 6)),
        v(random_tensor({c.B, c.Tk, c.Hkv, c.D}, 7));
    Graph g(false);
    const Tensor want = causal_attention(g, q, k, v).value();
    for (bool interleaved : {false, true}) {
      const Tensor got = causal_attention_llama_cpp(g, q, k, v, lanes(), interleaved).value();
      ASSERT_EQ(got.shape(), want.shape());
      for (int64_t i = 0; i < got.numel(); ++i) ASSERT_NEAR(got.f32()[i], want.f32()[i], 2e-6) << i;
    }
  }
}

// Interleaved heads sum their scores over dimensions 0, D/2, 1, D/2 + 1, ...: the same bits as
// heads whose dimensions are stored in that order.
TEST_P(LlamaCppOrder, InterleavedHeadsAreHeadsStoredInterleaved) {
  const int64_t B = 1, T = 70, H = 2, D = 72;  // D: one vec_dot block and a tail for lanes 16
  Var q(random_tensor({B, T, H, D}, 16)), k(random_tensor({B, T, H, D}, 17)), v(random_tensor({B, T, H, D}, 18));
  auto interleave = [&](const Tensor& x) {
    Tensor y = Tensor::empty(x.shape());
    for (int64_t r = 0; r < x.numel() / D; ++r)
      for (int64_t i = 0; i < D / 2; ++i) {
        y.f32()[r * D + 2 * i] = x.f32()[r * D + i];
        y.f32()[r * D + 2 * i + 1] = x.f32()[r * D + D / 2 + i];
      }
    return y;
  };
  Graph g(false);
  for (int64_t Tq : {T, int64_t(1)}) {
    Tensor last = Tensor::empty({B, Tq, H, D});  // the last Tq queries (B = 1)
    std::copy(q.value().f32() + (T - Tq) * H * D, q.value().f32() + T * H * D, last.f32());
    Var qt(last);
    const Tensor a = causal_attention_llama_cpp(g, qt, k, v, lanes(), true).value();
    const Tensor b = causal_attention_llama_cpp(g, Var(interleave(qt.value())), Var(interleave(k.value())), v, lanes(), false).value();
    for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(bits(a.f32()[i]), bits(b.f32()[i])) << "Tq " << Tq << " element " << i;
  }
}

TEST_P(LlamaCppOrder, RopeRotatesAsTheTable) {
  for (const char* scaling : {"default", "linear", "factors"}) {
    SCOPED_TRACE(scaling);
    RopeConfig cfg;
    cfg.head_dim = 64;
    cfg.scaling_type = scaling;
    cfg.factor = 4.0;
    for (int i = 0; i < 32; ++i) cfg.freq_factors.push_back(1.0 + 0.25 * i);
    ASSERT_TRUE(rope_llama_cpp_supports(cfg));
    Var x(random_tensor({2, 9, 3, 64}, 8));
    Graph g(false);
    const Tensor want = rope(g, x, std::make_shared<RopeTable>(cfg, 128), 90).value();
    const Tensor got = rope_llama_cpp(g, x, cfg, 90).value();
    // Angles up to ~100 rad: float angles (llama.cpp's) against double ones are ~1e-5 apart.
    for (int64_t i = 0; i < got.numel(); ++i) ASSERT_NEAR(got.f32()[i], want.f32()[i], 1e-4) << i;
  }
  RopeConfig llama3;
  llama3.head_dim = 64;
  llama3.scaling_type = "llama3";
  EXPECT_FALSE(rope_llama_cpp_supports(llama3));
}

TEST_P(LlamaCppOrder, LoraAddsScaledLowRankProduct) {
  for (int64_t M : {1, 6}) {
    for (int64_t r : {4, 16}) {
      SCOPED_TRACE(::testing::Message() << "M " << M << " r " << r);
      const int64_t in = 64, out = 48;
      Var x(random_tensor({M, in}, 9)), A(random_tensor({r, in}, 10)), B(random_tensor({out, r}, 11)),
          y(random_tensor({M, out}, 12));
      Graph g(false);
      const Tensor got = add_lora_llama_cpp(g, y, x, A, B, 0.5f, lanes()).value();
      for (int64_t m = 0; m < M; ++m)
        for (int64_t o = 0; o < out; ++o) {
          double acc = 0;
          for (int64_t j = 0; j < r; ++j) {
            double low = 0;
            for (int64_t i = 0; i < in; ++i) low += double(x.value().f32()[m * in + i]) * A.value().f32()[j * in + i];
            acc += low * B.value().f32()[o * r + j];
          }
          ASSERT_NEAR(got.f32()[m * out + o], y.value().f32()[m * out + o] + 0.5 * acc, 1e-4);
        }
    }
  }
}

TEST_P(LlamaCppOrder, OpsAreForwardOnly) {
  Var q(random_tensor({1, 2, 2, 8}, 13), true), k(random_tensor({1, 2, 2, 8}, 14)), v(random_tensor({1, 2, 2, 8}, 15));
  Graph g(true);
  try {
    causal_attention_llama_cpp(g, q, k, v, lanes(), false);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no backward rule"), std::string::npos) << e.what();
  }
  Graph inference(false);
  EXPECT_THROW(causal_attention_llama_cpp(inference, q, k, v, 4, false), Error);
}

INSTANTIATE_TEST_SUITE_P(Lanes, LlamaCppOrder, ::testing::Values(8, 16),
                         [](const ::testing::TestParamInfo<int>& p) { return "lanes" + std::to_string(p.param); });

TEST(LlamaCppOrderLanes, FollowTheBuildThisCpuLoads) {
  if (std::getenv("QPEFT_LLAMA_CPP_LANES")) GTEST_SKIP() << "QPEFT_LLAMA_CPP_LANES is set";
  EXPECT_EQ(llama_cpp_lanes(), cpu_has_avx512() ? 16 : cpu_has_avx2() ? 8 : 0);
}
