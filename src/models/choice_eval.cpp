#include "models/choice_eval.h"

#include <algorithm>

#include "core/error.h"
#include "core/file.h"
#include "io/tokenizer.h"

namespace qpeft {

bool parse_choice_score(const std::string& s, ChoiceScore* out) {
  if (s == "mean") return *out = ChoiceScore::kMean, true;
  if (s == "sum") return *out = ChoiceScore::kSum, true;
  return false;
}

std::vector<double> choice_logprobs(LlamaModel& model, const ChoiceExample& ex, int64_t max_len) {
  if (max_len <= 0) max_len = model.config().max_position_embeddings;
  const int64_t B = int64_t(ex.choice_ids.size());
  QP_CHECK(B > 0, "[choice] an example without choices");
  QP_CHECK(!ex.prompt_ids.empty(), "[choice] empty prompt: it needs at least one token (a BOS will do)");
  // Row i: the prompt (its first tokens dropped to fit max_len) then choice i, right-padded;
  // position p predicts token p + 1, so choice token j is the target at position start + j − 1.
  std::vector<int64_t> start(static_cast<size_t>(B));
  int64_t T = 0;
  for (int64_t i = 0; i < B; ++i) {
    const int64_t Lc = int64_t(ex.choice_ids[i].size());
    QP_CHECK(Lc > 0, "[choice] choice {} has no tokens; give every choice some text", i);
    QP_CHECK(Lc < max_len, "[choice] choice {} has {} tokens, more than the {} positions available", i, Lc, max_len);
    start[i] = std::min<int64_t>(int64_t(ex.prompt_ids.size()), max_len - Lc);
    T = std::max(T, start[i] + Lc);
  }
  const int32_t pad = std::max<int32_t>(model.config().pad_token_id, 0);
  std::vector<int32_t> ids(size_t(B * T), pad), targets(size_t(B * T), kIgnoreIndex);
  for (int64_t i = 0; i < B; ++i) {
    const auto& c = ex.choice_ids[i];
    const int64_t skip = int64_t(ex.prompt_ids.size()) - start[i];
    std::copy(ex.prompt_ids.begin() + skip, ex.prompt_ids.end(), ids.begin() + i * T);
    std::copy(c.begin(), c.end(), ids.begin() + i * T + start[i]);
    for (size_t j = 0; j < c.size(); ++j) targets[i * T + start[i] + int64_t(j) - 1] = c[j];
  }
  // Right padding never changes the rows' real positions: attention is causal.
  Graph g(false);
  Var h = model.hidden_states(g, ids, B, T);
  std::vector<float> lp = target_logprobs(h.value(), *model.lm_head(), targets);
  std::vector<double> sums(size_t(B), 0.0);
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < T; ++t) sums[i] += double(lp[i * T + t]);  // ignored positions are 0
  return sums;
}

std::vector<double> score_choices(LlamaModel& model, const ChoiceExample& ex, ChoiceScore how, int64_t max_len) {
  std::vector<double> s = choice_logprobs(model, ex, max_len);
  if (how == ChoiceScore::kMean)
    for (size_t i = 0; i < s.size(); ++i) s[i] /= double(ex.choice_ids[i].size());
  return s;
}

ChoiceEvalResult evaluate_choices(LlamaModel& model, const std::vector<ChoiceExample>& data, ChoiceScore how,
                                  int64_t max_len) {
  ChoiceEvalResult r;
  for (const ChoiceExample& ex : data) {
    std::vector<double> s = score_choices(model, ex, how, max_len);
    const int pick = int(std::max_element(s.begin(), s.end()) - s.begin());
    r.predictions.push_back(pick);
    r.correct += pick == ex.answer;
  }
  r.total = int64_t(data.size());
  r.accuracy = r.total ? double(r.correct) / double(r.total) : 0.0;
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
                                                int64_t vocab_size) {
  QP_CHECK(file_exists(model_dir + "/tokenizer.json") || file_exists(model_dir + "/tokenizer.model"),
           "{}: no tokenizer.json or tokenizer.model; multiple-choice data is text and needs the model's tokenizer",
           model_dir);
  Tokenizer tok = Tokenizer::load(model_dir);
  DataOptions opt;
  opt.format = DataFormat::kChoice;
  Dataset ds = load_jsonl(path, tok, opt);
  check_choice_examples(ds.choices, path, vocab_size);
  return std::move(ds.choices);
}

}  // namespace qpeft
