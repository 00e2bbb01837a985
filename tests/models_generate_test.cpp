// KV cache, sampling, generation, streaming and rank classification on the golden llama
// (vocab 96, 4 query heads over 2 kv heads).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <map>
#include <set>

#include "core/error.h"
#include "text/tokenizer.h"
#include "models/checkpoint.h"
#include "models/choice_eval.h"
#include "models/generate.h"
#include "models/kv_cache.h"
#include "peft/adapter_io.h"
#include "peft/lora.h"
#include "gen_fixtures.h"
#include "test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

std::vector<int32_t> some_ids(int n, int mul, int add) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[i] = (i * mul + add) % 96;
  return v;
}

// log softmax(logits row)[target], in double.
double log_prob(const float* row, int64_t V, int32_t target) {
  double m = row[0];
  for (int64_t j = 1; j < V; ++j) m = std::max(m, double(row[j]));
  double s = 0;
  for (int64_t j = 0; j < V; ++j) s += std::exp(double(row[j]) - m);
  return double(row[target]) - m - std::log(s);
}

}  // namespace

TEST(KVCache, ChunkedForwardEqualsFullForward) {
  auto model = load_model(golden_dir("llama"));
  const int64_t B = 2, T = 11, V = 96;  // B = 2 takes the cache's copying path
  std::vector<int32_t> ids = some_ids(int(B * T), 13, 5);
  Tensor full = model->logits(ids, B, T);  // [B·T, V]
  KVCache cache(model->config(), B, T);
  int64_t done = 0;
  for (int64_t chunk : {5, 1, 1, 3, 1}) {  // prefill, single tokens, a multi-token append
    std::vector<int32_t> part;
    for (int64_t b = 0; b < B; ++b)
      part.insert(part.end(), ids.begin() + b * T + done, ids.begin() + b * T + done + chunk);
    Graph g(false);
    Var h = model->hidden_states(g, part, B, chunk, &cache);
    Tensor lg = Tensor::empty({B * chunk, V});
    linear_forward(h.value().f32(), B * chunk, *model->lm_head(), lg.f32());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < chunk; ++t)
        for (int64_t j = 0; j < V; ++j)
          ASSERT_NEAR(lg.f32()[(b * chunk + t) * V + j], full.f32()[(b * T + done + t) * V + j], 1e-5)
              << "row " << b << " position " << done + t;
    done += chunk;
    EXPECT_EQ(cache.length(), done);
  }
  // Full: one more position is an error naming the cache.
  Graph g(false);
  try {
    model->hidden_states(g, {1, 2}, B, 1, &cache);
    ADD_FAILURE() << "overflow accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("KV cache full"), std::string::npos) << e.what();
  }
  Graph gg(true);
  KVCache c2(model->config(), 1, 4);
  EXPECT_THROW(model->hidden_states(gg, {1, 2}, 1, 2, &c2), Error);  // no cache under autograd
}

TEST(KVCache, RaggedRowsDecodeAtTheirOwnPositions) {
  auto model = load_model(golden_dir("llama"));
  const int64_t V = 96;
  // Row 0: 4 tokens and 3 of padding, row 1: 7 tokens; prefilled together, then row 0 drops
  // its padding and each row goes on at its own position.
  std::vector<int32_t> a = some_ids(4, 13, 5), b = some_ids(7, 11, 2);
  std::vector<int32_t> ids = a;
  ids.resize(7, 0);
  ids.insert(ids.end(), b.begin(), b.end());
  KVCache cache(model->config(), 2, 12);
  {
    Graph g(false);
    model->hidden_states(g, ids, 2, 7, &cache);
  }
  cache.truncate(0, 4);
  EXPECT_TRUE(cache.ragged());
  EXPECT_EQ(cache.length(0), 4);
  EXPECT_EQ(cache.length(1), 7);
  EXPECT_EQ(cache.max_length(), 7);
  EXPECT_THROW(cache.length(), Error);
  auto expect_next = [&](const std::vector<int32_t>& next, const std::vector<const std::vector<int32_t>*>& rows) {
    Graph g(false);
    const int64_t B = int64_t(rows.size());
    Var h = model->hidden_states(g, next, B, 1, &cache);
    Tensor lg = Tensor::empty({B, V});
    linear_forward(h.value().f32(), B, *model->lm_head(), lg.f32());
    for (int64_t r = 0; r < B; ++r) {
      const auto& seq = *rows[size_t(r)];
      Tensor full = model->logits(seq, 1, int64_t(seq.size()));
      for (int64_t j = 0; j < V; ++j)
        ASSERT_NEAR(lg.f32()[r * V + j], full.f32()[(int64_t(seq.size()) - 1) * V + j], 1e-5) << r << " " << j;
    }
  };
  for (int step = 0; step < 3; ++step) {
    const int32_t ta = (step * 5 + 3) % 96, tb = (step * 7 + 9) % 96;
    a.push_back(ta);
    b.push_back(tb);
    expect_next({ta, tb}, {&a, &b});
  }
  // Row 1 alone goes on (row 0 finished).
  cache.keep_rows({1});
  EXPECT_EQ(cache.batch(), 1);
  EXPECT_EQ(cache.length(), 10);
  b.push_back(42);
  expect_next({42}, {&b});
}

TEST(Generate, GreedyWithCacheEqualsWithout) {
  auto model = load_model(golden_dir("llama"));
  GenerateOptions opt;
  opt.max_new_tokens = 24;
  opt.stop_on_eos = false;
  const std::vector<int32_t> prompt = some_ids(7, 17, 3);
  GenerateResult with = generate(*model, prompt, opt);
  opt.use_cache = false;
  GenerateResult without = generate(*model, prompt, opt);
  ASSERT_EQ(with.tokens.size(), 24u);
  EXPECT_EQ(with.tokens, without.tokens);
  ASSERT_EQ(with.last_logits.size(), 96u);
  for (size_t j = 0; j < 96; ++j) EXPECT_NEAR(with.last_logits[j], without.last_logits[j], 1e-5) << j;
  // And the last logits are those of a plain forward over prompt + generated − last token.
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), with.tokens.begin(), with.tokens.end() - 1);
  Tensor ref = model->logits(seq, 1, int64_t(seq.size()));
  for (size_t j = 0; j < 96; ++j) EXPECT_NEAR(with.last_logits[j], ref.f32()[(seq.size() - 1) * 96 + j], 1e-5);
  // Greedy: each token is the argmax of its logits.
  std::vector<float> row(ref.f32() + (seq.size() - 1) * 96, ref.f32() + seq.size() * 96);
  EXPECT_EQ(with.tokens.back(), int32_t(std::max_element(row.begin(), row.end()) - row.begin()));
}

TEST(Generate, WithALoraAdapterCacheStillEqualsRecompute) {
  auto model = load_model(golden_dir("llama"));
  GenerateOptions opt;
  opt.max_new_tokens = 16;
  opt.stop_on_eos = false;
  const std::vector<int32_t> prompt = some_ids(5, 23, 4);
  const std::vector<int32_t> base = generate(*model, prompt, opt).tokens;
  load_lora_adapter(*model, golden_dir("llama") + "/adapter_init");
  Rng rng(9);
  for (auto& [key, p] : adapter_params(*model)) {  // B is zero at init: make the adapter matter
    float* v = p.value().f32();
    for (int64_t i = 0; i < p.value().numel(); ++i) v[i] = float(rng.normal() * 0.5);
  }
  GenerateResult with = generate(*model, prompt, opt);
  opt.use_cache = false;
  GenerateResult without = generate(*model, prompt, opt);
  EXPECT_EQ(with.tokens, without.tokens);
  EXPECT_NE(with.tokens, base);
  for (size_t j = 0; j < 96; ++j) EXPECT_NEAR(with.last_logits[j], without.last_logits[j], 1e-4) << j;
}

TEST(Generate, StopsAtEosAndOnCallback) {
  auto model = load_model(golden_dir("llama"));
  GenerateOptions opt;
  opt.max_new_tokens = 10;
  opt.stop_on_eos = false;
  const std::vector<int32_t> prompt = some_ids(5, 7, 1);
  GenerateResult all = generate(*model, prompt, opt);
  ASSERT_EQ(all.tokens.size(), 10u);
  // Make the 4th generated token an EOS: generation ends there, EOS included.
  opt.stop_on_eos = true;
  opt.eos_ids = {all.tokens[3]};
  GenerateResult stopped = generate(*model, prompt, opt);
  const size_t first = size_t(std::find(all.tokens.begin(), all.tokens.end(), all.tokens[3]) - all.tokens.begin());
  EXPECT_TRUE(stopped.stopped_on_eos);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(all.tokens.begin(), all.tokens.begin() + first + 1));
  // The callback sees every token and can stop early.
  std::vector<int32_t> seen;
  opt.eos_ids.clear();
  GenerateResult cb = generate(*model, prompt, opt, [&](int32_t id) {
    seen.push_back(id);
    return seen.size() < 6;
  });
  EXPECT_EQ(seen, cb.tokens);
  EXPECT_EQ(cb.tokens, std::vector<int32_t>(all.tokens.begin(), all.tokens.begin() + 6));
  EXPECT_THROW(generate(*model, {}, opt), Error);
  EXPECT_THROW(generate(*model, {1, 500}, opt), Error);
}

TEST(Sampling, TopKNeverLeavesTheTopK) {
  Rng init(3);
  std::vector<float> logits(96);
  for (float& x : logits) x = float(init.normal() * 2.0);
  std::vector<int32_t> order(96);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  SamplingOptions opt;
  opt.temperature = 3.0;  // flat: every kept token gets drawn
  opt.top_k = 5;
  std::set<int32_t> top(order.begin(), order.begin() + 5), seen;
  Rng rng(11);
  for (int i = 0; i < 3000; ++i) {
    std::vector<float> l = logits;
    int32_t id = sample_token(l.data(), 96, opt, rng);
    ASSERT_TRUE(top.count(id)) << "drew " << id << " outside the top 5";
    seen.insert(id);
  }
  EXPECT_EQ(seen, top);
}

TEST(Sampling, TopPAndTemperatureFollowTheDistribution) {
  // p = 0.5, 0.3, 0.15, 0.05 (ids 3, 0, 2, 1)
  const std::vector<float> logits = {std::log(0.3f), std::log(0.05f), std::log(0.15f), std::log(0.5f)};
  auto freq = [&](const SamplingOptions& opt, uint64_t seed) {
    Rng rng(seed);
    std::map<int32_t, double> f;
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
      std::vector<float> l = logits;
      f[sample_token(l.data(), 4, opt, rng)] += 1.0 / n;
    }
    return f;
  };
  SamplingOptions o;
  o.temperature = 1.0;
  auto f = freq(o, 1);
  EXPECT_NEAR(f[3], 0.5, 0.015);
  EXPECT_NEAR(f[1], 0.05, 0.01);
  o.top_p = 0.7;  // 0.5 < 0.7 keeps the second; 0.8 >= 0.7 stops: {3, 0} renormalised
  f = freq(o, 2);
  EXPECT_EQ(f.size(), 2u);
  EXPECT_NEAR(f[3], 0.625, 0.015);
  o.top_p = 0.85;  // three kept
  EXPECT_EQ(freq(o, 3).size(), 3u);
  o.top_p = 0.2;  // the top one alone
  f = freq(o, 4);
  EXPECT_EQ(f.size(), 1u);
  EXPECT_EQ(f.begin()->first, 3);
  o.top_p = 1.0;
  o.top_k = 2;  // top-k before top-p
  o.temperature = 2.0;  // softens: 0.5^(1/2) : 0.3^(1/2)
  f = freq(o, 5);
  EXPECT_EQ(f.size(), 2u);
  EXPECT_NEAR(f[3], std::sqrt(0.5) / (std::sqrt(0.5) + std::sqrt(0.3)), 0.015);
  // Bad options are errors.
  Rng rng(0);
  std::vector<float> l = logits;
  o.top_p = 0;
  EXPECT_THROW(sample_token(l.data(), 4, o, rng), Error);
}

TEST(Sampling, ReproducibleForASeedAndGreedyAsTemperatureGoesToZero) {
  auto model = load_model(golden_dir("llama"));
  GenerateOptions opt;
  opt.max_new_tokens = 20;
  opt.stop_on_eos = false;
  opt.temperature = 1.5;
  opt.top_k = 40;
  opt.top_p = 0.95;
  opt.seed = 7;
  const std::vector<int32_t> prompt = some_ids(6, 5, 2);
  GenerateResult a = generate(*model, prompt, opt), b = generate(*model, prompt, opt);
  EXPECT_EQ(a.tokens, b.tokens);
  opt.seed = 8;
  EXPECT_NE(generate(*model, prompt, opt).tokens, a.tokens);
  opt.top_k = 0;
  opt.top_p = 1.0;
  opt.temperature = 1e-7;
  GenerateResult cold = generate(*model, prompt, opt);
  opt.temperature = 0;
  EXPECT_EQ(cold.tokens, generate(*model, prompt, opt).tokens);
}

TEST(TextStreamer, HoldsBackSplitCharacters) {
  Tokenizer tok = Tokenizer::from_json(gen_fixtures::tokenizer_json().dump(), gen_fixtures::tokenizer_config_json());
  const std::string text = "the caf\xC3\xA9 \xC3\xA8t\xC3\xA9";  // "the café ètè"-like, é = Ã ©
  std::vector<int32_t> ids = tok.encode(text, true);
  ASSERT_EQ(ids[0], 1);
  ASSERT_EQ(tok.decode(ids, true), text);
  TextStreamer s(tok);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = s.push(id);
    // Every piece is whole characters: no lone lead byte, no U+FFFD.
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos);
    if (!piece.empty()) {
      EXPECT_NE(uint8_t(piece.back()), 0xC3u) << "split character emitted";
    }
    if (id == 77) {
      EXPECT_EQ(piece, "");  // Ã alone waits for ©
    }
    out += piece;
  }
  out += s.finish();
  EXPECT_EQ(out, text);
  // A character never completed is flushed at the end as U+FFFD, like decode().
  TextStreamer t(tok);
  EXPECT_EQ(t.push(35), "E");
  EXPECT_EQ(t.push(77), "");
  EXPECT_EQ(t.push(500), "");  // outside the tokenizer: no text
  EXPECT_EQ(t.finish(), "\xEF\xBF\xBD");
}

TEST(ChoiceEval, ScoresEqualIndependentLogLikelihoods) {
  auto model = load_model(golden_dir("llama"));
  ChoiceExample ex;
  ex.prompt_ids = {1, 20, 33, 47, 8, 61};
  // The greedy continuation and three other continuations of different lengths.
  GenerateOptions g;
  g.max_new_tokens = 3;
  g.stop_on_eos = false;
  ex.choice_ids = {some_ids(2, 31, 9), generate(*model, ex.prompt_ids, g).tokens, some_ids(4, 11, 50), {77}};
  std::vector<double> ref_sum, ref_mean;
  for (const auto& c : ex.choice_ids) {
    std::vector<int32_t> seq = ex.prompt_ids;
    seq.insert(seq.end(), c.begin(), c.end());
    Tensor lg = model->logits(seq, 1, int64_t(seq.size()));
    double s = 0;
    for (size_t j = 0; j < c.size(); ++j) s += log_prob(lg.f32() + (ex.prompt_ids.size() + j - 1) * 96, 96, c[j]);
    ref_sum.push_back(s);
    ref_mean.push_back(s / double(c.size()));
  }
  std::vector<double> sum = score_choices(*model, ex, ChoiceScore::kSum), mean = score_choices(*model, ex, ChoiceScore::kMean);
  for (size_t i = 0; i < ex.choice_ids.size(); ++i) {
    EXPECT_NEAR(sum[i], ref_sum[i], 1e-4) << i;
    EXPECT_NEAR(mean[i], ref_mean[i], 1e-4) << i;
  }
  // The greedy continuation is the most likely per token.
  const int best_mean = int(std::max_element(ref_mean.begin(), ref_mean.end()) - ref_mean.begin());
  const int best_sum = int(std::max_element(ref_sum.begin(), ref_sum.end()) - ref_sum.begin());
  EXPECT_EQ(best_mean, 1);
  ex.answer = best_mean;
  ChoiceEvalResult r = evaluate_choices(*model, {ex}, ChoiceScore::kMean);
  EXPECT_EQ(r.correct, 1);
  EXPECT_EQ(r.predictions, std::vector<int>{best_mean});
  ex.answer = best_sum;
  ChoiceExample wrong = ex;
  wrong.answer = (best_sum + 1) % 4;
  r = evaluate_choices(*model, {ex, wrong}, ChoiceScore::kSum);
  EXPECT_EQ(r.total, 2);
  EXPECT_EQ(r.correct, 1);
  EXPECT_DOUBLE_EQ(r.accuracy, 0.5);
  EXPECT_EQ(r.predictions, (std::vector<int>{best_sum, best_sum}));
  // A prompt longer than max_len keeps its last tokens.
  ChoiceExample longp = ex;
  std::vector<double> cut = choice_logprobs(*model, longp, 8);  // 6 + 4 > 8 for the longest
  ChoiceExample trimmed = ex;
  trimmed.choice_ids = {ex.choice_ids[2]};
  trimmed.prompt_ids.erase(trimmed.prompt_ids.begin(), trimmed.prompt_ids.begin() + 2);
  EXPECT_NEAR(cut[2], choice_logprobs(*model, trimmed)[0], 1e-4);
  ChoiceExample empty = ex;
  empty.choice_ids[0].clear();
  EXPECT_THROW(choice_logprobs(*model, empty), Error);
}
