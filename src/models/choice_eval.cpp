#include "models/choice_eval.h"

#include <algorithm>

#include "core/error.h"
#include "core/file.h"
#include "text/tokenizer.h"

namespace qpeft {

bool parse_choice_score(const std::string& s, ChoiceScore* out) {
  if (s == "mean") return *out = ChoiceScore::kMean, true;
  if (s == "sum") return *out = ChoiceScore::kSum, true;
  return false;
}

std::vector<std::vector<double>> batch_choice_logprobs(LlamaModel& model,
                                                       const std::vector<const ChoiceExample*>& examples,
                                                       int64_t max_len) {
  if (max_len <= 0) max_len = model.config().max_position_embeddings;
  QP_CHECK(!examples.empty(), "[choice] no examples");
  // Row i: the prompt of its example (its first tokens dropped to fit max_len) then choice i,
  // right-padded; position p predicts token p + 1, so choice token j is the target at position
  // start + j − 1.
  struct Row {
    const ChoiceExample* ex;
    const std::vector<int32_t>* choice;
    int64_t start;
  };
  std::vector<Row> rows;
  std::vector<int32_t> row_adapter;
  int64_t T = 0;
  for (const ChoiceExample* ex : examples) {
    QP_CHECK(!ex->choice_ids.empty(), "[choice] an example without choices");
    QP_CHECK(!ex->prompt_ids.empty(), "[choice] empty prompt: it needs at least one token (a BOS will do)");
    for (size_t i = 0; i < ex->choice_ids.size(); ++i) {
      const int64_t Lc = int64_t(ex->choice_ids[i].size());
      QP_CHECK(Lc > 0, "[choice] choice {} has no tokens; give every choice some text", i);
      QP_CHECK(Lc < max_len, "[choice] choice {} has {} tokens, more than the {} positions available", i, Lc, max_len);
      const int64_t start = std::min<int64_t>(int64_t(ex->prompt_ids.size()), max_len - Lc);
      rows.push_back({ex, &ex->choice_ids[i], start});
      row_adapter.push_back(ex->adapter);
      T = std::max(T, start + Lc);
    }
  }
  const int64_t B = int64_t(rows.size());
  const int32_t pad = std::max<int32_t>(model.config().pad_token_id, 0);
  std::vector<int32_t> ids(size_t(B * T), pad), targets(size_t(B * T), kIgnoreIndex);
  for (int64_t i = 0; i < B; ++i) {
    const Row& r = rows[size_t(i)];
    const auto& p = r.ex->prompt_ids;
    const auto& c = *r.choice;
    const int64_t skip = int64_t(p.size()) - r.start;
    std::copy(p.begin() + skip, p.end(), ids.begin() + i * T);
    std::copy(c.begin(), c.end(), ids.begin() + i * T + r.start);
    for (size_t j = 0; j < c.size(); ++j) targets[i * T + r.start + int64_t(j) - 1] = c[j];
  }
  // Right padding never changes the rows' real positions: attention is causal.
  SequenceAdaptersScope scope(model, row_adapter);
  Graph g(false);
  Var h = model.hidden_states(g, ids, B, T);
  std::vector<float> lp = target_logprobs(h.value(), *model.lm_head(), targets);
  std::vector<std::vector<double>> out;
  int64_t i = 0;
  for (const ChoiceExample* ex : examples) {
    std::vector<double> sums(ex->choice_ids.size(), 0.0);
    for (double& s : sums) {
      for (int64_t t = 0; t < T; ++t) s += double(lp[i * T + t]);  // ignored positions are 0
      ++i;
    }
    out.push_back(std::move(sums));
  }
  return out;
}

std::vector<double> choice_logprobs(LlamaModel& model, const ChoiceExample& ex, int64_t max_len) {
  return batch_choice_logprobs(model, {&ex}, max_len)[0];
}

namespace {

void normalise(std::vector<double>& s, const ChoiceExample& ex, ChoiceScore how) {
  if (how == ChoiceScore::kMean)
    for (size_t i = 0; i < s.size(); ++i) s[i] /= double(ex.choice_ids[i].size());
}

void finish(ChoiceStats& s) { s.accuracy = s.total ? double(s.correct) / double(s.total) : 0.0; }

}  // namespace

std::vector<double> score_choices(LlamaModel& model, const ChoiceExample& ex, ChoiceScore how, int64_t max_len) {
  std::vector<double> s = choice_logprobs(model, ex, max_len);
  normalise(s, ex, how);
  return s;
}

ChoiceEvalResult evaluate_choices(LlamaModel& model, const std::vector<ChoiceExample>& data, ChoiceScore how,
                                  int64_t max_len, int64_t batch) {
  QP_CHECK(batch > 0, "[choice] batch {} must be positive", batch);
  ChoiceEvalResult r;
  for (size_t b0 = 0; b0 < data.size(); b0 += size_t(batch)) {
    std::vector<const ChoiceExample*> exs;
    for (size_t i = b0; i < std::min(data.size(), b0 + size_t(batch)); ++i) exs.push_back(&data[i]);
    std::vector<std::vector<double>> sums = batch_choice_logprobs(model, exs, max_len);
    for (size_t e = 0; e < exs.size(); ++e) {
      std::vector<double>& s = sums[e];
      normalise(s, *exs[e], how);
      const int pick = int(std::max_element(s.begin(), s.end()) - s.begin());
      const bool right = pick == exs[e]->answer;
      r.predictions.push_back(pick);
      r.scores.push_back(std::move(s));
      r.correct += right;
      ChoiceStats& per = r.adapters[exs[e]->adapter];
      per.correct += right;
      per.total += 1;
    }
  }
  r.total = int64_t(data.size());
  finish(r);
  for (auto& [a, s] : r.adapters) finish(s);
  return r;
}

void check_choice_examples(const std::vector<ChoiceExample>& examples, const std::string& path, int64_t vocab_size) {
  for (size_t i = 0; i < examples.size(); ++i) {
    auto check = [&](const std::vector<int32_t>& ids) {
      for (int32_t id : ids)
        QP_CHECK(id >= 0 && id < vocab_size,
                 "{}: example {} has token id {} outside the model's vocabulary of {}; is this the model's tokenizer?",
                 path, i + 1, id, vocab_size);
    };
    check(examples[i].prompt_ids);
    for (const auto& c : examples[i].choice_ids) check(c);
  }
  QP_CHECK(!examples.empty(), "{}: no examples", path);
}

std::vector<ChoiceExample> load_choice_examples(const std::string& path, const std::string& model_dir,
                                                int64_t vocab_size, const DataOptions& data_opt) {
  QP_CHECK(has_tokenizer(model_dir),
           "{}: no tokenizer.json or tokenizer.model; multiple-choice data is text and needs the model's tokenizer",
           model_dir);
  Tokenizer tok = Tokenizer::load(model_dir);
  DataOptions opt = data_opt;
  opt.format = DataFormat::kChoice;
  Dataset ds = load_jsonl(path, tok, opt);
  check_choice_examples(ds.choices, path, vocab_size);
  return std::move(ds.choices);
}

}  // namespace qpeft
