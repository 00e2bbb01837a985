// Training data: JSON lines -> tokenized examples. The format is detected from the keys of
// the first record (or forced):
//   text        {"text": ...}                                   loss on every token
//   completion  {"prompt": ..., "completion": ...}               loss on the completion
//   alpaca      {"instruction": ..., "input": ..., "output": ...} Alpaca prompt; loss on output
//   chat        {"messages": [{"role": ..., "content": ...}]}    chat template; loss on assistant turns
//   choice      {"prompt": ..., "choices": [...], "answer": i}   multiple choice (kept apart)
//   tokenized   {"input_ids": [...], "labels": [...]?}           used as is
// BOS (when the tokenizer has one) starts each text/completion/alpaca example and EOS ends
// it. Errors are "file:line: what is wrong", raised before any training starts.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qpeft {

class Tokenizer;

constexpr int32_t kIgnoreLabel = -100;  // no loss on this position

struct Example {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // same length; kIgnoreLabel = no loss
};

struct ChoiceExample {
  std::vector<int32_t> prompt_ids;                // BOS + prompt
  std::vector<std::vector<int32_t>> choice_ids;  // each choice's continuation
  int answer = 0;
};

enum class DataFormat { kAuto, kText, kCompletion, kAlpaca, kChat, kChoice, kTokenized };

const char* data_format_name(DataFormat f);
// "auto", "text", "completion", "alpaca", "chat", "choice", "tokenized"; false if unknown.
bool parse_data_format(std::string_view s, DataFormat* out);

struct DataOptions {
  DataFormat format = DataFormat::kAuto;
  bool train_on_prompt = false;  // loss on prompt tokens too
  bool add_bos = true;
  bool add_eos = true;
};

struct Dataset {
  DataFormat format = DataFormat::kAuto;  // the detected (or forced) format
  std::vector<Example> examples;          // every format but choice
  std::vector<ChoiceExample> choices;     // the choice format
  size_t size() const { return format == DataFormat::kChoice ? choices.size() : examples.size(); }
};

// Reads a .jsonl file; `origin` in errors is the path.
Dataset load_jsonl(const std::string& path, const Tokenizer& tok, const DataOptions& opt = {});
// Without a tokenizer (tok == nullptr) only pre-tokenized lines are accepted; ids are checked
// against vocab_size.
Dataset load_jsonl(const std::string& path, const Tokenizer* tok, int64_t vocab_size, const DataOptions& opt = {});
Dataset parse_jsonl(std::string_view text, const std::string& origin, const Tokenizer* tok, int64_t vocab_size,
                    const DataOptions& opt = {});
// Same, from text in memory (errors name `origin`).
Dataset parse_jsonl(std::string_view text, const std::string& origin, const Tokenizer& tok, const DataOptions& opt = {});

}  // namespace qpeft
