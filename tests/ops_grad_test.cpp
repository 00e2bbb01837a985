#include <gtest/gtest.h>

#include <cstring>

#include "grad_check.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/linear.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/rope.h"

using namespace qpeft;
using namespace qpeft::testing;

TEST(OpsGrad, Elementwise) {
  check_gradients("add", {param({3, 5}, 1), param({3, 5}, 2)},
                  [](Graph& g, const std::vector<Var>& in) { return add(g, in[0], in[1]); });
  check_gradients("scale", {param({4, 3}, 3)}, [](Graph& g, const std::vector<Var>& in) { return scale(g, in[0], -1.7f); });
  check_gradients("add_bias", {param({2, 3, 5}, 4), param({5}, 5)},
                  [](Graph& g, const std::vector<Var>& in) { return add_bias(g, in[0], in[1]); });
  check_gradients("silu_mul", {param({3, 7}, 6), param({3, 7}, 7)},
                  [](Graph& g, const std::vector<Var>& in) { return silu_mul(g, in[0], in[1]); });
  check_gradients("mul_lastdim", {param({3, 7}, 8), param({7}, 9)},
                  [](Graph& g, const std::vector<Var>& in) { return mul_lastdim(g, in[0], in[1]); });
  // (IA)³'s vectors as PEFT shapes them, [out, 1] and [1, in], on a [B, T, n] activation.
  check_gradients("mul_lastdim_column", {param({2, 3, 7}, 33), param({7, 1}, 34)},
                  [](Graph& g, const std::vector<Var>& in) { return mul_lastdim(g, in[0], in[1]); });
  check_gradients("mul_lastdim_row", {param({2, 5, 130}, 35), param({1, 130}, 36)},
                  [](Graph& g, const std::vector<Var>& in) { return mul_lastdim(g, in[0], in[1]); });
  // A part used twice gets both slices of the gradient.
  check_gradients("concat", {param({2, 3}, 37), param({5}, 38), param({1, 4}, 39)},
                  [](Graph& g, const std::vector<Var>& in) { return concat(g, {in[0], in[1], in[2], in[0]}); });
  GradCheckOptions train;
  train.training = true;
  check_gradients("dropout", {param({6, 9}, 10)},
                  [](Graph& g, const std::vector<Var>& in) { return dropout(g, in[0], 0.3f); }, train);
}

TEST(OpsGrad, RmsNorm) {
  check_gradients("rms_norm", {param({4, 16}, 11), param({16}, 12)},
                  [](Graph& g, const std::vector<Var>& in) { return rms_norm(g, in[0], in[1], 1e-5f); });
}

TEST(OpsGrad, Rope) {
  RopeConfig cfg;
  cfg.head_dim = 8;
  cfg.scaling_type = "llama3";
  cfg.factor = 8;
  cfg.original_max_position = 4;
  auto tab = std::make_shared<RopeTable>(cfg, 32);
  check_gradients("rope", {param({2, 5, 3, 8}, 13)},
                  [&](Graph& g, const std::vector<Var>& in) { return rope(g, in[0], tab, 3); });
}

TEST(OpsGrad, AttentionGroupedQueryAcrossTiles) {
  // T = 70 spans two query tiles of 64; 4 query heads share 2 kv heads.
  check_gradients("attention", {param({2, 70, 4, 8}, 14, 0.5f), param({2, 70, 2, 8}, 15, 0.5f), param({2, 70, 2, 8}, 16)},
                  [](Graph& g, const std::vector<Var>& in) { return causal_attention(g, in[0], in[1], in[2]); });
  // q with a gradient already when attention's backward runs (the add's runs first): dq is
  // added to it, not written over it.
  check_gradients("attention_q_reused",
                  {param({2, 70, 4, 8}, 20, 0.5f), param({2, 70, 2, 8}, 21, 0.5f), param({2, 70, 2, 8}, 22)},
                  [](Graph& g, const std::vector<Var>& in) {
                    return add(g, causal_attention(g, in[0], in[1], in[2]), in[0]);
                  });
  // Queries continuing a cache: Tq = 3 new tokens after 5 cached.
  check_gradients("attention_cached", {param({1, 3, 2, 4}, 17), param({1, 8, 1, 4}, 18), param({1, 8, 1, 4}, 19)},
                  [](Graph& g, const std::vector<Var>& in) { return causal_attention(g, in[0], in[1], in[2]); });
}

// add_matmul_nt into y's storage: the same bits, forward and backward, as into a new tensor,
// and y's storage is the output's (wide enough for the short-matrix kernels' blocks and tails).
TEST(OpsGrad, AddMatmulNtIntoYMatchesANewOutput) {
  const std::vector<Var> ref = {param({3, 29, 40}, 41), param({37, 40}, 42), param({3, 29, 16}, 43), param({37, 16}, 44)};
  std::vector<Tensor> out, grads;
  for (bool into_y : {false, true}) {
    std::vector<Var> in;
    for (const Var& v : ref) in.push_back(Var(v.value().clone(), true));
    Graph g(true, 1, true);
    Var y = matmul_nt(g, in[0], in[1]);
    Var o = add_matmul_nt(g, y, in[2], in[3], 0.5f, into_y);
    EXPECT_EQ(o.value().storage() == y.value().storage(), into_y);
    out.push_back(o.value().clone());
    g.backward(o, random_tensor(o.shape(), 45));
    for (const Var& v : in) grads.push_back(v.grad().clone());
  }
  ASSERT_EQ(out[0].numel(), out[1].numel());
  EXPECT_EQ(std::memcmp(out[0].f32(), out[1].f32(), size_t(out[0].numel()) * 4), 0);
  for (size_t k = 0; k < ref.size(); ++k)
    EXPECT_EQ(std::memcmp(grads[k].f32(), grads[k + ref.size()].f32(), size_t(grads[k].numel()) * 4), 0) << "input " << k;
}

TEST(OpsGrad, Matmuls) {
  check_gradients("matmul_nt", {param({2, 3, 6}, 20), param({4, 6}, 21)},
                  [](Graph& g, const std::vector<Var>& in) { return matmul_nt(g, in[0], in[1]); });
  check_gradients("add_matmul_nt", {param({2, 3, 5}, 28), param({2, 3, 4}, 29), param({5, 4}, 30)},
                  [](Graph& g, const std::vector<Var>& in) { return add_matmul_nt(g, in[0], in[1], in[2], 0.7f); });
  // Written into y's storage, as LoRA adds to a base product made for it.
  check_gradients("add_matmul_nt_into_y", {param({2, 3, 6}, 31), param({5, 6}, 32), param({2, 3, 4}, 33), param({5, 4}, 34)},
                  [](Graph& g, const std::vector<Var>& in) {
                    return add_matmul_nt(g, matmul_nt(g, in[0], in[1]), in[2], in[3], 0.7f, /*write_into_y=*/true);
                  });
  for (DType dt : {DType::F32, DType::BF16}) {
    auto w = std::make_shared<DenseWeight>(random_tensor({130, 9}, 22).to(dt), "w");
    check_gradients(std::string("linear_") + dtype_name(dt), {param({5, 9}, 23)},
                    [&](Graph& g, const std::vector<Var>& in) { return linear(g, in[0], w); });
  }
}

TEST(OpsGrad, EmbeddingAndLosses) {
  std::vector<int32_t> ids = {3, 1, 3, 0};
  check_gradients("embedding", {param({5, 4}, 24)},
                  [&](Graph& g, const std::vector<Var>& in) { return embedding(g, in[0], ids); });
  std::vector<int32_t> targets = {2, kIgnoreIndex, 0, 6, 6};
  check_gradients("cross_entropy", {param({5, 7}, 25)},
                  [&](Graph& g, const std::vector<Var>& in) { return cross_entropy(g, in[0], targets).loss; });
  auto head = std::make_shared<DenseWeight>(random_tensor({7, 6}, 26), "head");
  // Tiny chunk budget: every row is its own chunk.
  check_gradients("linear_cross_entropy", {param({5, 6}, 27)}, [&](Graph& g, const std::vector<Var>& in) {
    return linear_cross_entropy(g, in[0], head, targets, 1).loss;
  });
  check_gradients("linear_cross_entropy_trainable_head", {param({5, 6}, 31), param({7, 6}, 32)},
                  [&](Graph& g, const std::vector<Var>& in) {
                    return linear_cross_entropy(g, in[0], in[1], targets, 2 * 7 * 4).loss;
                  });
}

TEST(OpsGrad, TargetLogprobsAndChoiceLosses) {
  std::vector<int32_t> targets = {2, kIgnoreIndex, 0, 6, 6};
  auto head = std::make_shared<DenseWeight>(random_tensor({7, 6}, 41), "head");
  check_gradients("linear_target_logprobs", {param({5, 6}, 42)}, [&](Graph& g, const std::vector<Var>& in) {
    return linear_target_logprobs(g, in[0], head, targets);
  });
  check_gradients("linear_target_logprobs_trainable_head", {param({5, 6}, 43), param({7, 6}, 44)},
                  [&](Graph& g, const std::vector<Var>& in) { return linear_target_logprobs(g, in[0], in[1], targets); });

  // Two examples: the first with choices of 2 and 1 tokens (answer 1), the second with
  // three one-token choices (answer 0); entries 2 and 7 carry no loss.
  ChoiceTokens layout;
  layout.token_choice = {0, 0, -1, 1, 2, 3, 4, -1};
  layout.choice_example = {0, 0, 1, 1, 1};
  layout.choice_correct = {0, 1, 1, 0, 0};
  const float values[] = {-0.3f, -1.7f, 0.4f, -0.9f, -2.2f, -0.05f, -1.1f, 0.0f};  // log-probabilities ≤ 0
  for (ChoiceLossWeights w : {ChoiceLossWeights{1, 1, 1}, ChoiceLossWeights{1, 0, 0}, ChoiceLossWeights{0, 1, 0},
                              ChoiceLossWeights{0, 0, 1}}) {
    Var lp(Tensor::empty({8}), true, "lp");
    std::copy(std::begin(values), std::end(values), lp.value().f32());
    check_gradients("choice_losses_" + std::to_string(w.lm) + std::to_string(w.ul) + std::to_string(w.ln), {lp},
                    [&](Graph& g, const std::vector<Var>& in) { return choice_losses(g, in[0], layout, w).loss; },
                    {.eps = 1e-3f});
  }
}
