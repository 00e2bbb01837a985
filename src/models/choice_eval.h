// Multiple-choice evaluation by rank classification (T-Few, SPEC §5): each choice is scored
// by the log-likelihood of its tokens given the prompt, and the highest score is the model's
// answer. The choices of one example run together as one padded batch, and several examples'
// choices share a batch (`batch` examples per forward), each example with its own adapter
// (ChoiceExample::adapter, mixed-adapter batches).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "text/data_formats.h"
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
// The same for several examples in one forward (every choice of every example a row, right-padded
// to the longest), each under its own adapter: one vector of sums per example.
std::vector<std::vector<double>> batch_choice_logprobs(LlamaModel& model,
                                                       const std::vector<const ChoiceExample*>& examples,
                                                       int64_t max_len = 0);

// The scores under `how` (sum, or sum / number of tokens).
std::vector<double> score_choices(LlamaModel& model, const ChoiceExample& ex, ChoiceScore how, int64_t max_len = 0);

struct ChoiceStats {
  double accuracy = 0;
  int64_t correct = 0, total = 0;
};

struct ChoiceEvalResult : ChoiceStats {
  std::vector<int> predictions;               // per example: the chosen index (first of equal scores)
  std::vector<std::vector<double>> scores;    // per example: each choice's score
  std::map<int32_t, ChoiceStats> adapters;    // per adapter the examples name (kBaseAdapter: none)
};

// `batch` examples per forward (their choices together), in file order.
ChoiceEvalResult evaluate_choices(LlamaModel& model, const std::vector<ChoiceExample>& data,
                                  ChoiceScore how = ChoiceScore::kMean, int64_t max_len = 0, int64_t batch = 1);

// Checks tokenized multiple-choice examples read from `path`: at least one, every id inside
// the model's vocabulary.
void check_choice_examples(const std::vector<ChoiceExample>& examples, const std::string& path, int64_t vocab_size);

// Reads multiple-choice JSON lines {"prompt", "choices": [...], "answer": i}, tokenized with
// the model directory's tokenizer (an error if it has none). opt: the adapter routing (its
// format is ignored).
std::vector<ChoiceExample> load_choice_examples(const std::string& path, const std::string& model_dir,
                                                int64_t vocab_size, const DataOptions& opt = {});

}  // namespace qpeft
