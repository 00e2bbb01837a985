// Multiple-choice evaluation by rank classification (T-Few, SPEC §5): each choice is scored
// by the log-likelihood of its tokens given the prompt, and the highest score is the model's
// answer. The choices of one example run together as one padded batch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/data_formats.h"
#include "models/llama.h"

namespace qpeft {

enum class ChoiceScore {
  kMean,  // (1/T) Σ_t log p(y_t | x, y_<t): length-normalised, T-Few's default
  kSum,   // Σ_t log p(y_t | x, y_<t)
};

// "mean" or "sum"; false if unknown.
bool parse_choice_score(const std::string& s, ChoiceScore* out);

// Summed log-probability of each choice's tokens after the prompt. Rows longer than max_len
// (0: the model's max_position_embeddings) lose their first prompt tokens.
std::vector<double> choice_logprobs(LlamaModel& model, const ChoiceExample& ex, int64_t max_len = 0);

// The scores under `how` (sum, or sum / number of tokens).
std::vector<double> score_choices(LlamaModel& model, const ChoiceExample& ex, ChoiceScore how, int64_t max_len = 0);

struct ChoiceEvalResult {
  double accuracy = 0;
  int64_t correct = 0, total = 0;
  std::vector<int> predictions;  // per example: the chosen index (first of equal scores)
};

ChoiceEvalResult evaluate_choices(LlamaModel& model, const std::vector<ChoiceExample>& data,
                                  ChoiceScore how = ChoiceScore::kMean, int64_t max_len = 0);

// Checks tokenized multiple-choice examples read from `path`: at least one, every id inside
// the model's vocabulary.
void check_choice_examples(const std::vector<ChoiceExample>& examples, const std::string& path, int64_t vocab_size);

// Reads multiple-choice JSON lines {"prompt", "choices": [...], "answer": i}, tokenized with
// the model directory's tokenizer (an error if it has none).
std::vector<ChoiceExample> load_choice_examples(const std::string& path, const std::string& model_dir,
                                                int64_t vocab_size);

}  // namespace qpeft
