// Fused and tiled ops against plain scalar references.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "grad_check.h"
#include "ops/attention.h"
#include "ops/linear.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/rope.h"

using namespace qpeft;
using namespace qpeft::testing;

TEST(OpsValues, AttentionMatchesNaiveSoftmax) {
  const int64_t B = 2, T = 67, Hq = 4, Hkv = 2, D = 8;
  Var q(random_tensor({B, T, Hq, D}, 1)), k(random_tensor({B, T, Hkv, D}, 2)), v(random_tensor({B, T, Hkv, D}, 3));
  Graph g(false);
  Tensor out = causal_attention(g, q, k, v).value();
  const float* qp = q.value().f32();
  const float* kp = k.value().f32();
  const float* vp = v.value().f32();
  double max_err = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < Hq; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t hk = h / (Hq / Hkv);
        std::vector<double> s(t + 1);
        double m = -1e300, sum = 0;
        for (int64_t j = 0; j <= t; ++j) {
          double acc = 0;
          for (int64_t d = 0; d < D; ++d) acc += double(qp[((b * T + t) * Hq + h) * D + d]) * kp[((b * T + j) * Hkv + hk) * D + d];
          s[j] = acc / std::sqrt(double(D));
          m = std::max(m, s[j]);
        }
        for (auto& x : s) sum += (x = std::exp(x - m));
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t j = 0; j <= t; ++j) o += s[j] / sum * vp[((b * T + j) * Hkv + hk) * D + d];
          max_err = std::max(max_err, std::fabs(o - out.f32()[((b * T + t) * Hq + h) * D + d]));
        }
      }
  EXPECT_LT(max_err, 1e-5);
}

TEST(OpsValues, FusedCrossEntropyMatchesComposite) {
  const int64_t N = 37, V = 301, d = 16;
  Tensor h = random_tensor({N, d}, 4);
  Tensor w = random_tensor({V, d}, 5, 0.3f);
  std::vector<int32_t> targets(N);
  for (int64_t i = 0; i < N; ++i) targets[i] = i % 5 == 0 ? kIgnoreIndex : int32_t((i * 37) % V);
  auto head = std::make_shared<DenseWeight>(w, "head");
  Var h1(h.clone(), true), h2(h.clone(), true);
  Var wv(w);
  Graph g1, g2;
  LossResult fused = linear_cross_entropy(g1, h1, head, targets, 10 * V * 4);  // 10-row chunks
  LossResult comp = cross_entropy(g2, matmul_nt(g2, h2, wv), targets);
  EXPECT_EQ(fused.count, comp.count);
  EXPECT_NEAR(fused.loss.value().f32()[0], comp.loss.value().f32()[0], 1e-5);
  g1.backward(fused.loss);
  g2.backward(comp.loss);
  for (int64_t i = 0; i < N * d; ++i) EXPECT_NEAR(h1.grad().f32()[i], h2.grad().f32()[i], 1e-6) << i;
  std::vector<float> lp = target_logprobs(h, *head, targets);
  double s = 0;
  for (float x : lp) s -= x;
  EXPECT_NEAR(s / double(fused.count), fused.loss.value().f32()[0], 1e-5);
}

TEST(OpsValues, TargetLogprobsMatchLogSoftmaxOfFullLogits) {
  const int64_t N = 6, d = 5, V = 11;
  Tensor h = random_tensor({N, d}, 51);
  auto head = std::make_shared<DenseWeight>(random_tensor({V, d}, 52), "head");
  std::vector<int32_t> targets = {3, kIgnoreIndex, 10, 0, kIgnoreIndex, 7};
  Graph g(false);
  Tensor lp = linear_target_logprobs(g, Var(h), head, targets).value();
  std::vector<float> reference = target_logprobs(h, *head, targets);
  for (int64_t i = 0; i < N; ++i) {
    double expected = 0;
    if (targets[size_t(i)] != kIgnoreIndex) {
      double z[V], m = -1e30, s = 0;
      for (int64_t v = 0; v < V; ++v) {
        z[v] = 0;
        for (int64_t k = 0; k < d; ++k) z[v] += double(h.f32()[i * d + k]) * head->tensor().f32()[v * d + k];
        m = std::max(m, z[v]);
      }
      for (int64_t v = 0; v < V; ++v) s += std::exp(z[v] - m);
      expected = z[targets[size_t(i)]] - m - std::log(s);
    }
    EXPECT_NEAR(lp.f32()[i], expected, 1e-5) << i;
    EXPECT_EQ(lp.f32()[i], reference[size_t(i)]) << i;
  }
}

// T-Few's three losses written out for one batch (SPEC §5): example 0 has choices
// [a0 a1] (wrong) and [b0] (right); example 1 has [c0] (right), [d0 d1 d2] (wrong).
TEST(OpsValues, ChoiceLossesMatchTheTFewFormulas) {
  const double a0 = -0.4, a1 = -2.0, b0 = -0.7, c0 = -1.5, d0 = -0.2, d1 = -0.9, d2 = -3.0;
  ChoiceTokens layout;
  layout.token_choice = {0, 0, -1, 1, 2, 3, 3, 3};
  layout.choice_example = {0, 0, 1, 1};
  layout.choice_correct = {0, 1, 1, 0};
  Tensor v = Tensor::empty({8});
  const double vals[] = {a0, a1, 5.0, b0, c0, d0, d1, d2};
  for (int i = 0; i < 8; ++i) v.f32()[i] = float(vals[i]);
  Graph g(false);
  ChoiceLossResult r = choice_losses(g, Var(v), layout, {1, 1, 1});

  const double lm = -(b0 + c0) / 2;
  auto ul_term = [](double lp) { return -std::log(1 - std::exp(lp) + 0.01); };
  const double ul = (ul_term(a0) + ul_term(a1) + ul_term(d0) + ul_term(d1) + ul_term(d2)) / 5;
  auto ce = [](double right, double wrong) { return -right + std::log(std::exp(right) + std::exp(wrong)); };
  const double ln = (ce(b0, (a0 + a1) / 2) + ce(c0, (d0 + d1 + d2) / 3)) / 2;
  EXPECT_NEAR(r.lm, lm, 1e-6);
  EXPECT_NEAR(r.ul, ul, 1e-6);
  EXPECT_NEAR(r.ln, ln, 1e-6);
  EXPECT_NEAR(r.loss.value().f32()[0], lm + ul + ln, 1e-5);
  EXPECT_EQ(r.examples, 2);
  EXPECT_EQ(r.right, 1);  // example 0: −0.7 > −1.2; example 1: −1.5 < −1.37

  ChoiceTokens bad = layout;
  bad.choice_correct = {1, 1, 1, 0};
  EXPECT_THROW(choice_losses(g, Var(v), bad), Error);
}

TEST(OpsValues, AllTargetsIgnoredGivesZeroLossNotNaN) {
  auto head = std::make_shared<DenseWeight>(random_tensor({5, 3}, 6), "head");
  Graph g;
  Var h(random_tensor({2, 3}, 7), true);
  LossResult r = linear_cross_entropy(g, h, head, {kIgnoreIndex, kIgnoreIndex});
  EXPECT_EQ(r.count, 0);
  EXPECT_EQ(r.loss.value().f32()[0], 0.0f);
}

TEST(OpsValues, LinearBf16TilesMatchF32) {
  Tensor w = random_tensor({200, 33}, 8).to(DType::BF16);
  DenseWeight wb(w, "wb"), wf(w.to(DType::F32), "wf");
  Tensor x = random_tensor({7, 33}, 9);
  Tensor y1 = Tensor::empty({7, 200}), y2 = Tensor::empty({7, 200});
  linear_forward(x.f32(), 7, wb, y1.f32());
  linear_forward(x.f32(), 7, wf, y2.f32());
  for (int64_t i = 0; i < y1.numel(); ++i) EXPECT_FLOAT_EQ(y1.f32()[i], y2.f32()[i]);
  Tensor dy = random_tensor({7, 200}, 10);
  Tensor d1 = Tensor::empty({7, 33}), d2 = Tensor::empty({7, 33});
  linear_input_grad(dy.f32(), 7, wb, d1.f32(), false);
  linear_input_grad(dy.f32(), 7, wf, d2.f32(), false);
  for (int64_t i = 0; i < d1.numel(); ++i) EXPECT_NEAR(d1.f32()[i], d2.f32()[i], 1e-4);
}

// Decoding (M ≤ DenseWeight::kFusedRows) multiplies bf16 rows in place (VecKernels::bf16_gemv):
// the f32 product of the same values to float rounding, across a tile edge
// (64 rows) and an odd K included.
TEST(OpsValues, Bf16WeightFusedDecodeProductMatchesF32) {
  Tensor w = random_tensor({133, 77}, 21).to(DType::BF16);
  DenseWeight wb(w, "wb"), wf(w.to(DType::F32), "wf");
  for (int64_t M = 1; M <= DenseWeight::kFusedRows + 1; ++M) {
    Tensor x = random_tensor({M, 77}, 22 + M);
    Tensor yb = Tensor::empty({M, 133}), yf = Tensor::empty({M, 133});
    EXPECT_EQ(wb.own_forward(x.f32(), M, yb.f32()), M <= DenseWeight::kFusedRows) << M;
    linear_forward(x.f32(), M, wb, yb.f32());
    linear_forward(x.f32(), M, wf, yf.f32());
    for (int64_t i = 0; i < yb.numel(); ++i) ASSERT_NEAR(yb.f32()[i], yf.f32()[i], 2e-5f * (1 + std::fabs(yf.f32()[i]))) << M << " " << i;
    if (M == 1) {  // each row is its own dot: the same bits for the first input row of a batch
      Tensor x2 = Tensor::empty({2, 77});
      std::memcpy(x2.f32(), x.f32(), 77 * sizeof(float));
      std::memcpy(x2.f32() + 77, x.f32(), 77 * sizeof(float));
      Tensor y2 = Tensor::empty({2, 133});
      linear_forward(x2.f32(), 2, wb, y2.f32());
      for (int64_t i = 0; i < 133; ++i) ASSERT_EQ(y2.f32()[i], yb.f32()[i]) << i;
    }
  }
  // Not in the bf16 compute dtype, which rounds the input to bf16 too.
  ComputeDtypeScope bf16(DType::BF16);
  if (linear_compute_dtype() == DType::BF16) {
    Tensor x = random_tensor({1, 77}, 30), y = Tensor::empty({1, 133});
    EXPECT_FALSE(wb.own_forward(x.f32(), 1, y.f32()));
  }
}

// RMSNorm takes llama.cpp's float steps (ggml's CPU rms_norm): squares rounded to float and
// summed in double, the mean rounded to float, 1/sqrt in float, then (x · scale) · w. The same
// bits, so llama.cpp's 8-bit products see the same inputs (tests/cli_gguf_test.cpp).
TEST(OpsValues, RmsNormTakesLlamaCppsFloatSteps) {
  const int64_t n = 333;
  Tensor x = random_tensor({5, n}, 41), w = random_tensor({n}, 42);
  Graph g(false);
  const Tensor y = rms_norm(g, Var(x, false), Var(w, false), 1e-5f).value();
  for (int64_t r = 0; r < 5; ++r) {
    const float* xr = x.f32() + r * n;
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(xr[i] * xr[i]);
    const float mean = float(sum / double(n));
    const float scale = 1.0f / sqrtf(mean + 1e-5f);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y.f32()[r * n + i], xr[i] * scale * w.f32()[i]) << r << " " << i;
  }
}

TEST(OpsValues, RopeLlama3FrequenciesAndRotation) {
  RopeConfig cfg;
  cfg.head_dim = 64;
  cfg.theta = 500000;
  cfg.scaling_type = "llama3";
  cfg.factor = 32;
  cfg.low_freq_factor = 1;
  cfg.high_freq_factor = 4;
  cfg.original_max_position = 8192;
  auto inv = rope_inv_freq(cfg);
  // High frequencies (short wavelengths) are untouched, the lowest ones divided by factor.
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_NEAR(inv[31], 1.0 / std::pow(500000.0, 62.0 / 64) / 32, 1e-15);
  // Rotating position p by the table equals rotating by angle p·f.
  RopeConfig plain;
  plain.head_dim = 4;
  auto tab = std::make_shared<RopeTable>(plain, 8);
  Var x(Tensor::from_vector({1, 1, 1, 4}, {1, 2, 3, 4}));
  Graph g(false);
  Tensor y = rope(g, x, tab, 5).value();
  const double a0 = 5.0, a1 = 5.0 / 100.0;  // inv_freq = 1, 1/10000^(2/4)
  EXPECT_NEAR(y.f32()[0], 1 * std::cos(a0) - 3 * std::sin(a0), 1e-6);
  EXPECT_NEAR(y.f32()[2], 3 * std::cos(a0) + 1 * std::sin(a0), 1e-6);
  EXPECT_NEAR(y.f32()[1], 2 * std::cos(a1) - 4 * std::sin(a1), 1e-6);
}

TEST(OpsValues, SgemmSingleRowTakesGemvAndMatchesReference) {
  // M == 1 (decoding a token) goes through gemv: all four transposes, strides, beta 0 over
  // garbage and beta 1 accumulating.
  const int64_t N = 37, K = 19, lda_t = 3, ldb_pad = 5;
  std::vector<float> a(size_t(K * lda_t)), b(size_t(std::max(N, K) * (std::max(N, K) + ldb_pad)));
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(std::sin(0.7 * double(i)));
  for (size_t i = 0; i < b.size(); ++i) b[i] = float(std::cos(0.3 * double(i)));
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (float beta : {0.0f, 1.0f}) {
        const int64_t lda = ta ? lda_t : K, ldb = (tb ? K : N) + ldb_pad;
        std::vector<float> c(static_cast<size_t>(N), beta == 0.0f ? NAN : 0.5f), ref(static_cast<size_t>(N));
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t k = 0; k < K; ++k) s += double(ta ? a[k * lda] : a[k]) * double(tb ? b[j * ldb + k] : b[k * ldb + j]);
          ref[j] = float(1.5 * s + (beta == 0.0f ? 0.0 : 0.5));
        }
        sgemm(ta, tb, 1, N, K, 1.5f, a.data(), lda, b.data(), ldb, beta, c.data(), N);
        for (int64_t j = 0; j < N; ++j) ASSERT_NEAR(c[j], ref[j], 1e-4) << ta << tb << beta << " j=" << j;
      }
}
