// Data parallelism's arithmetic, in one process: the shares of a global batch that N ranks
// compute, each weighted as the trainer weights it, add up to the whole batch's gradient (for
// the causal-LM loss and for T-Few's three terms), dropout masks included. The mpirun
// plumbing is tested end to end in cli_data_parallel_test.
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "models/checkpoint.h"
#include "peft/adapter.h"
#include "peft/lora.h"
#include "test_util.h"
#include "train/data_parallel.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

std::unique_ptr<LlamaModel> lora_model(NamedParams* params) {
  auto model = load_model(golden_dir("llama"));
  LoraConfig cfg;
  cfg.target_modules = {"all-linear"};
  cfg.r = 4;
  cfg.alpha = 8;
  cfg.dropout = 0.2;
  inject_lora(*model, cfg, 11);
  *params = adapter_params(*model);
  // LoRA's B starts at zero, which would leave A without gradient: give B values.
  Rng rng(3);
  for (auto& [name, p] : *params)
    if (name.find("lora_B") != std::string::npos)
      for (int64_t i = 0; i < p.value().numel(); ++i) p.value().f32()[i] = 0.05f * float(rng.normal());
  return model;
}

std::vector<std::vector<float>> take_grads(const NamedParams& params) {
  std::vector<std::vector<float>> out;
  for (const auto& [name, p] : params) {
    std::vector<float> g(size_t(p.value().numel()), 0.0f);
    if (p.has_grad()) std::copy(p.grad().f32(), p.grad().f32() + p.value().numel(), g.begin());
    out.push_back(std::move(g));
    p.zero_grad();
  }
  return out;
}

void expect_close(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  double max_abs = 0, max_diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < a[i].size(); ++j) {
      max_abs = std::max(max_abs, double(std::fabs(a[i][j])));
      max_diff = std::max(max_diff, double(std::fabs(a[i][j] - b[i][j])));
    }
  EXPECT_GT(max_abs, 1e-4);  // a gradient that is there
  EXPECT_LE(max_diff, 1e-5 * max_abs + 1e-8) << "largest gradient " << max_abs;
}

// Examples of several lengths, some with their first labels masked.
std::vector<Example> varied_examples() {
  std::vector<Example> out;
  for (int i = 0; i < 7; ++i) {
    Example e;
    for (int t = 0; t < 6 + 3 * i % 11; ++t) e.input_ids.push_back(3 + (5 * i + 7 * t) % 90);
    e.labels = e.input_ids;
    for (int t = 0; t < i % 3; ++t) e.labels[size_t(t)] = kIgnoreIndex;
    out.push_back(e);
  }
  return out;
}

}  // namespace

TEST(DataParallel, RowSharesCoverTheBatchInOrder) {
  for (int64_t rows : {1, 2, 5, 7, 16})
    for (int ranks = 1; ranks <= rows; ++ranks) {
      int64_t at = 0;
      for (int r = 0; r < ranks; ++r) {
        const RowShare s = row_share(rows, r, ranks);
        EXPECT_EQ(s.begin, at);
        EXPECT_GE(s.size(), rows / ranks);
        EXPECT_LE(s.size(), rows / ranks + 1);
        at = s.end;
      }
      EXPECT_EQ(at, rows);
    }
}

TEST(DataParallel, LmLossSharesAddUpToTheWholeBatchGradient) {
  NamedParams params;
  auto model = lora_model(&params);
  const std::vector<Example> data = varied_examples();
  Batcher batcher(data, 5, 24, 9, true, 0);
  const Batch whole = batcher.get(1);
  const uint64_t seed = 77;
  {
    Graph g(true, seed, true);
    g.backward(model->loss(g, whole.ids, whole.labels, whole.B, whole.T).loss);
  }
  const auto want = take_grads(params);
  for (int ranks : {2, 3, 5}) {
    const int64_t all = counted_targets(whole, 0, whole.B);
    for (int r = 0; r < ranks; ++r) {
      const RowShare rows = row_share(whole.B, r, ranks);
      const Batch b = slice_rows(whole, rows.begin, rows.end);
      EXPECT_EQ(b.T, whole.T);
      Graph g(true, seed, true);
      g.set_batch_share({rows.begin, rows.size()});
      const double share = double(counted_targets(whole, rows.begin, rows.end)) / double(all);
      g.backward(model->loss(g, b.ids, b.labels, b.B, b.T).loss, Tensor::full({1}, float(share)));
    }
    SCOPED_TRACE(ranks);
    expect_close(take_grads(params), want);
  }
}

TEST(DataParallel, ChoiceLossSharesAddUpToTheWholeBatchGradient) {
  NamedParams params;
  auto model = lora_model(&params);
  std::vector<ChoiceExample> data;
  for (int i = 0; i < 5; ++i) {
    ChoiceExample ex;
    ex.prompt_ids = {1, int32_t(10 + i), int32_t(20 + 2 * i), 30};
    for (int c = 0; c < 2 + i % 3; ++c) {
      std::vector<int32_t> ids;
      for (int t = 0; t <= (c + i) % 4; ++t) ids.push_back(int32_t(40 + 3 * c + t + i));
      ex.choice_ids.push_back(ids);
    }
    ex.answer = i % 2;
    data.push_back(ex);
  }
  ChoiceBatcher batcher(data, 4, 32, 5, true, 0);
  const ChoiceBatch whole = batcher.get(0);
  const ChoiceLossWeights w{1.0, 0.5, 2.0};
  const uint64_t seed = 78;
  double want_lm = 0, got_lm = 0;
  {
    Graph g(true, seed, true);
    Var lp = model->label_logprobs(g, whole.rows.ids, whole.rows.labels, whole.rows.B, whole.rows.T);
    ChoiceLossResult cr = choice_losses(g, lp, choice_layout(whole), w);
    want_lm = cr.lm;
    g.backward(cr.loss);
  }
  const auto want = take_grads(params);
  for (int ranks : {2, 4}) {
    got_lm = 0;
    for (int r = 0; r < ranks; ++r) {
      const RowShare ex = row_share(4, r, ranks);
      int64_t first_row = -1;
      const ChoiceBatch mine = slice_examples(whole, ex.begin, ex.end, &first_row);
      EXPECT_EQ(mine.row_example.front(), 0);
      const ChoiceLossWeights fraction = share_weights({1, 1, 1}, choice_counts(mine), choice_counts(whole));
      Graph g(true, seed, true);
      g.set_batch_share({first_row, mine.rows.B});
      Var lp = model->label_logprobs(g, mine.rows.ids, mine.rows.labels, mine.rows.B, mine.rows.T);
      ChoiceLossResult cr = choice_losses(g, lp, choice_layout(mine), share_weights(w, choice_counts(mine), choice_counts(whole)));
      got_lm += cr.lm * fraction.lm;
      g.backward(cr.loss);
    }
    SCOPED_TRACE(ranks);
    EXPECT_NEAR(got_lm, want_lm, 1e-6 * std::fabs(want_lm));
    expect_close(take_grads(params), want);
  }
}

TEST(DataParallel, AllReduceIsTheIdentityForOneProcess) {
  // One process: allreduce_gradients leaves gradients (and their absence) alone.
  NamedParams params;
  auto model = lora_model(&params);
  params[0].second.grad_buffer()[0] = 2.5f;
  std::vector<float> flat;
  allreduce_gradients(params, &flat);
  EXPECT_EQ(params[0].second.grad().f32()[0], 2.5f);
  EXPECT_FALSE(params[1].second.has_grad());
}
