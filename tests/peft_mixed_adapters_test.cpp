// Mixed-adapter batches (SPEC §1): LoRA, (IA)³ and base rows in one batch give what each
// adapter gives alone — eval loss, rank classification, greedy and sampled generation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"
#include "core/rng.h"
#include "models/checkpoint.h"
#include "models/choice_eval.h"
#include "models/generate.h"
#include "peft/adapter_io.h"
#include "peft/mixed_adapter.h"
#include "train/trainer.h"
#include "gen_fixtures.h"
#include "mixed_fixtures.h"
#include "test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

std::vector<int32_t> random_ids(Rng& rng, int64_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = int32_t(3 + rng.below(93));
  return v;
}

// adapter index of example i: the three adapters and the base, interleaved
int32_t adapter_of(size_t i) { return int32_t(i % 4) - 1; }

class MixedAdapters : public ::testing::Test {
 protected:
  void SetUp() override {
    model_dir = tmp / "model";
    gen_fixtures::make_model_dir(model_dir);
    dirs = mixed_fixtures::make_adapters(model_dir, tmp.path());
    mixed = load_model_with_adapters(model_dir, {{"lora", dirs.lora}, {"ia3", dirs.ia3}, {"qv", dirs.qv}}, "auto");
  }
  // The directory of adapter index a (kBaseAdapter: none).
  std::string dir_of(int32_t a) const {
    return a == kBaseAdapter ? std::string() : a == 0 ? dirs.lora : a == 1 ? dirs.ia3 : dirs.qv;
  }

  TempDir tmp{"mixed_adapters"};
  std::string model_dir;
  mixed_fixtures::AdapterDirs dirs;
  std::unique_ptr<LlamaModel> mixed;
};

}  // namespace

TEST_F(MixedAdapters, EvalLossPerAdapterEqualsEachAdapterAlone) {
  Rng rng(5);
  std::vector<Example> data;
  for (size_t i = 0; i < 19; ++i) {  // 19: the last batch wraps around
    Example e;
    e.input_ids = random_ids(rng, 6 + int64_t(rng.below(20)));
    e.labels = e.input_ids;
    if (i % 3 == 0) e.labels[0] = e.labels[1] = kIgnoreLabel;
    e.adapter = adapter_of(i);
    data.push_back(std::move(e));
  }
  const EvalResult r = evaluate(*mixed, data, 5, 64);
  ASSERT_EQ(r.adapters.size(), 4u);
  int64_t tokens = 0, examples = 0;
  double nll = 0;
  for (int32_t a : {kBaseAdapter, 0, 1, 2}) {
    std::vector<Example> own;
    for (const auto& e : data)
      if (e.adapter == a) own.push_back(e);
    auto alone = mixed_fixtures::single(model_dir, dir_of(a));
    const EvalResult want = evaluate(*alone, own, 5, 64);
    const LossStats& got = r.adapters.at(a);
    EXPECT_EQ(got.tokens, want.tokens) << a;
    EXPECT_EQ(got.examples, int64_t(own.size())) << a;
    EXPECT_NEAR(got.loss, want.loss, 1e-6 * want.loss) << "adapter " << a;
    EXPECT_NEAR(got.perplexity, want.perplexity, 1e-6 * want.perplexity) << "adapter " << a;
    tokens += got.tokens;
    examples += got.examples;
    nll += got.loss * double(got.tokens);
  }
  EXPECT_EQ(r.tokens, tokens);
  EXPECT_EQ(r.examples, examples);
  EXPECT_NEAR(r.loss, nll / double(tokens), 1e-9 * r.loss);
  // The adapters differ from each other and from the base.
  EXPECT_GT(std::abs(r.adapters.at(0).loss - r.adapters.at(kBaseAdapter).loss), 1e-3);
  EXPECT_GT(std::abs(r.adapters.at(1).loss - r.adapters.at(kBaseAdapter).loss), 1e-3);

  // Batches whose rows all use one adapter go straight to it: bit for bit the adapter alone.
  for (int32_t a : {kBaseAdapter, 0, 1}) {
    std::vector<Example> own = data;
    for (auto& e : own) e.adapter = a;
    auto alone = mixed_fixtures::single(model_dir, dir_of(a));
    EXPECT_EQ(evaluate(*mixed, own, 5, 64).loss, evaluate(*alone, own, 5, 64).loss) << a;
  }
}

TEST_F(MixedAdapters, LogitsOfEveryRowEqualItsAdapterAlone) {
  Rng rng(8);
  const int64_t B = 5, T = 9;
  const std::vector<int32_t> ids = random_ids(rng, B * T);
  const std::vector<int32_t> row_adapter = {1, kBaseAdapter, 0, 2, 1};
  Tensor got;
  {
    SequenceAdaptersScope scope(*mixed, row_adapter);
    got = mixed->logits(ids, B, T);
  }
  for (int64_t b = 0; b < B; ++b) {
    auto alone = mixed_fixtures::single(model_dir, dir_of(row_adapter[size_t(b)]));
    Tensor want = alone->logits(std::vector<int32_t>(ids.begin() + b * T, ids.begin() + (b + 1) * T), 1, T);
    for (int64_t i = 0; i < T * 96; ++i)
      ASSERT_NEAR(got.f32()[b * T * 96 + i], want.f32()[i], 1e-5 * (1 + std::abs(want.f32()[i]))) << b << " " << i;
  }
}

TEST_F(MixedAdapters, ChoiceScoresAndAccuracyEqualEachAdapterAlone) {
  Rng rng(3);
  std::vector<ChoiceExample> data;
  for (size_t i = 0; i < 11; ++i) {
    ChoiceExample ex;
    ex.prompt_ids = random_ids(rng, 3 + int64_t(rng.below(8)));
    for (int c = 0; c < 2 + int(i % 3); ++c) ex.choice_ids.push_back(random_ids(rng, 1 + int64_t(rng.below(4))));
    ex.answer = int(i % ex.choice_ids.size());
    ex.adapter = adapter_of(i + 1);
    data.push_back(std::move(ex));
  }
  for (ChoiceScore how : {ChoiceScore::kMean, ChoiceScore::kSum}) {
    const ChoiceEvalResult r = evaluate_choices(*mixed, data, how, 0, 4);
    ASSERT_EQ(r.scores.size(), data.size());
    ASSERT_EQ(r.adapters.size(), 4u);
    for (int32_t a : {kBaseAdapter, 0, 1, 2}) {
      std::vector<ChoiceExample> own;
      std::vector<size_t> where;
      for (size_t i = 0; i < data.size(); ++i)
        if (data[i].adapter == a) own.push_back(data[i]), where.push_back(i);
      auto alone = mixed_fixtures::single(model_dir, dir_of(a));
      const ChoiceEvalResult want = evaluate_choices(*alone, own, how);
      EXPECT_EQ(r.adapters.at(a).correct, want.correct) << a;
      EXPECT_EQ(r.adapters.at(a).total, want.total) << a;
      for (size_t j = 0; j < own.size(); ++j) {
        EXPECT_EQ(r.predictions[where[j]], want.predictions[j]) << a << " " << j;
        for (size_t c = 0; c < want.scores[j].size(); ++c)
          EXPECT_NEAR(r.scores[where[j]][c], want.scores[j][c], 1e-6 * std::abs(want.scores[j][c]))
              << "adapter " << a << " example " << j << " choice " << c;
      }
    }
  }
}

TEST_F(MixedAdapters, BatchedGenerationEqualsEachPromptAlone) {
  Rng rng(21);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> adapters;
  for (size_t i = 0; i < 7; ++i) {  // prompts of different lengths (a ragged cache)
    prompts.push_back(random_ids(rng, 2 + int64_t(rng.below(9))));
    adapters.push_back(adapter_of(i + 2));
  }
  GenerateOptions opt;
  opt.max_new_tokens = 12;
  // An EOS that the first prompt reaches at its 4th token.
  const int32_t eos = generate(*mixed_fixtures::single(model_dir, dir_of(adapters[0])), prompts[0], opt).tokens[3];
  for (int mode = 0; mode < 3; ++mode) {
    // 0: greedy, stopping at an EOS that some rows reach (rows leave the batch); 1: sampled with
    // a seed; 2: greedy, recomputing without a cache.
    opt.eos_ids = mode == 0 ? std::vector<int32_t>{eos} : std::vector<int32_t>{};
    opt.temperature = mode == 1 ? 0.9 : 0.0;
    opt.top_k = mode == 1 ? 20 : 0;
    opt.seed = 17;
    opt.use_cache = mode != 2;
    const std::vector<GenerateResult> got = generate_batch(*mixed, prompts, adapters, opt);
    ASSERT_EQ(got.size(), prompts.size());
    bool some_stopped = false;
    for (size_t i = 0; i < prompts.size(); ++i) {
      auto alone = mixed_fixtures::single(model_dir, dir_of(adapters[i]));
      const GenerateResult want = generate(*alone, prompts[i], opt);
      EXPECT_EQ(got[i].tokens, want.tokens) << "mode " << mode << " prompt " << i;
      EXPECT_EQ(got[i].stopped_on_eos, want.stopped_on_eos);
      EXPECT_EQ(got[i].prompt_tokens, int64_t(prompts[i].size()));
      for (size_t j = 0; j < 96; ++j) ASSERT_NEAR(got[i].last_logits[j], want.last_logits[j], 1e-4) << i << " " << j;
      // And a lone generate on the mixed model with the prompt's sequence adapter.
      SequenceAdaptersScope scope(*mixed, {adapters[i]});
      EXPECT_EQ(generate(*mixed, prompts[i], opt).tokens, want.tokens) << i;
      some_stopped = some_stopped || want.stopped_on_eos;
    }
    if (mode == 0) {
      EXPECT_TRUE(some_stopped);
    }
  }
  // The base model alone batches too (no sequence adapters).
  auto base = load_model(model_dir);
  opt = GenerateOptions();
  opt.max_new_tokens = 6;
  const auto got = generate_batch(*base, prompts, {}, opt);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(got[i].tokens, generate(*base, prompts[i], opt).tokens) << i;
}

TEST_F(MixedAdapters, ParamsCarryTheirAdapterNamesAndMixedModelsRefuseTrainingAndMerging) {
  std::map<std::string, Var> params;
  for (auto& [k, v] : adapter_params(*mixed)) params[k] = v;
  EXPECT_TRUE(params.count("base_model.model.model.layers.0.self_attn.q_proj.lora_A.lora.weight"));
  EXPECT_TRUE(params.count("base_model.model.model.layers.0.self_attn.q_proj.lora_B.qv.weight"));
  EXPECT_TRUE(params.count("base_model.model.model.layers.1.mlp.down_proj.ia3_l.ia3"));
  EXPECT_FALSE(params.count("base_model.model.model.layers.0.self_attn.k_proj.lora_A.qv.weight"));

  const std::vector<int32_t> ids = {1, 5, 9, 12};
  std::string e = error_of([&] {
    SequenceAdaptersScope scope(*mixed, {0, 1});
    Graph g(true);
    mixed->loss(g, ids, ids, 2, 2);
  });
  EXPECT_NE(e.find("for inference"), std::string::npos) << e;
  e = error_of([&] { mixed->logits(ids, 2, 2); });  // no sequence adapters with three loaded
  EXPECT_NE(e.find("which row uses which"), std::string::npos) << e;
  e = error_of([&] {
    SequenceAdaptersScope scope(*mixed, {0, 1, 2});
    mixed->logits(ids, 2, 2);
  });
  EXPECT_NE(e.find("sequence adapters for 3 rows"), std::string::npos) << e;
  e = error_of([&] { merged_weight(mixed->layers()[0].q_proj); });
  EXPECT_NE(e.find("merge each alone"), std::string::npos) << e;
}

TEST_F(MixedAdapters, LoadingChecksNamesAndTheBaseTheyShare) {
  std::string e = error_of([&] { load_model_with_adapters(model_dir, {{"a", dirs.lora}, {"a", dirs.ia3}}); });
  EXPECT_NE(e.find("the name 'a' is given twice"), std::string::npos) << e;
  e = error_of([&] { load_model_with_adapters(model_dir, {{"__base__", dirs.lora}}); });
  EXPECT_NE(e.find("reserved"), std::string::npos) << e;
  // An adapter recorded as trained on an NF4 base cannot share an unquantized one under auto.
  auto nf4 = mixed_fixtures::make_adapters(model_dir, tmp / "nf4", "nf4");
  e = error_of([&] { load_model_with_adapters(model_dir, {{"a", dirs.lora}, {"b", nf4.qv}}); });
  EXPECT_NE(e.find("adapters 'a' and 'b' were trained on differently quantized bases"), std::string::npos) << e;
  EXPECT_NE(e.find("--base-quant"), std::string::npos) << e;
  std::string note;
  auto m = load_model_with_adapters(model_dir, {{"a", dirs.lora}, {"b", nf4.qv}}, "nf4", &note);
  EXPECT_NE(note.find("quantized on load to nf4"), std::string::npos) << note;
  // Parsing --adapter values.
  EXPECT_EQ(parse_adapter_arg("x=some/dir").name, "x");
  EXPECT_EQ(parse_adapter_arg("x=some/dir").dir, "some/dir");
  EXPECT_EQ(parse_adapter_arg("some/dir").name, "default");
  EXPECT_EQ(parse_adapter_arg("out/lr=3e-4").dir, "out/lr=3e-4");
  EXPECT_EQ(parse_adapter_arg(dirs.lora).dir, dirs.lora);
}

TEST(MixedAdapterData, TheAdapterFieldResolvesToAnIndex) {
  DataOptions opt;
  opt.route_adapters = true;
  opt.adapter_names = {"a", "b"};
  Dataset ds = parse_jsonl(
      "{\"input_ids\": [1, 2, 3], \"adapter\": \"b\"}\n{\"input_ids\": [1, 2], \"adapter\": \"__base__\"}\n"
      "{\"adapter\": \"a\", \"input_ids\": [4, 5]}\n",
      "d.jsonl", nullptr, 96, opt);
  ASSERT_EQ(ds.examples.size(), 3u);
  EXPECT_EQ(ds.examples[0].adapter, 1);
  EXPECT_EQ(ds.examples[1].adapter, kBaseAdapter);
  EXPECT_EQ(ds.examples[2].adapter, 0);
  std::string e = error_of([&] { parse_jsonl("{\"input_ids\": [1, 2]}\n{\"input_ids\": [1]}\n", "d.jsonl", nullptr, 96, opt); });
  EXPECT_NE(e.find("d.jsonl:1: no \"adapter\" field, and 2 adapters are loaded; name one of a, b, __base__"),
            std::string::npos) << e;
  e = error_of([&] { parse_jsonl("{\"input_ids\": [1, 2], \"adapter\": \"a\"}\n{\"input_ids\": [1], \"adapter\": \"c\"}\n",
                                 "d.jsonl", nullptr, 96, opt); });
  EXPECT_NE(e.find("d.jsonl:2: unknown adapter 'c' (loaded: a, b, __base__)"), std::string::npos) << e;
  e = error_of([&] { parse_jsonl("{\"input_ids\": [1, 2], \"adapter\": 3}\n", "d.jsonl", nullptr, 96, opt); });
  EXPECT_NE(e.find("d.jsonl:1: \"adapter\" must be a string"), std::string::npos) << e;
  // One adapter: lines without the field use it; none: the base; not routed: the field is not read.
  opt.adapter_names = {"only"};
  EXPECT_EQ(parse_jsonl("{\"input_ids\": [1, 2]}\n", "d.jsonl", nullptr, 96, opt).examples[0].adapter, 0);
  opt.adapter_names = {};
  EXPECT_EQ(parse_jsonl("{\"input_ids\": [1, 2]}\n", "d.jsonl", nullptr, 96, opt).examples[0].adapter, kBaseAdapter);
  opt.route_adapters = false;
  EXPECT_EQ(parse_jsonl("{\"input_ids\": [1, 2], \"adapter\": 3}\n", "d.jsonl", nullptr, 96, opt).examples[0].adapter,
            kBaseAdapter);
}
