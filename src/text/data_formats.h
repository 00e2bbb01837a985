// Training data: JSON lines -> tokenized examples. The format is detected from the keys of
// the first record (or forced):
//   text        {"text": ...}                                   loss on every token
//   completion  {"prompt": ..., "completion": ...}               loss on the completion
//   alpaca      {"instruction": ..., "input": ..., "output": ...} Alpaca prompt; loss on output
//   chat        {"messages": [{"role": ..., "content": ...}]}    chat template; loss on assistant turns
//   choice      {"prompt": ..., "choices": [...], "answer": i}   multiple choice (kept apart)
//   tokenized   {"input_ids": [...], "labels": [...]?}           used as is
// Any line may name the adapter it is evaluated with, {..., "adapter": NAME} ("__base__": none),
// for mixed-adapter batches (SPEC §1; read only when DataOptions::route_adapters is set).
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

// Mixed-adapter batches: an example's adapter is an index into the adapters loaded together
// (peft/mixed_adapter.h); kBaseAdapter is none, named "__base__" as in PEFT's adapter_names.
constexpr int32_t kBaseAdapter = -1;
inline constexpr const char* kBaseAdapterName = "__base__";

struct Example {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> labels;  // same length; kIgnoreLabel = no loss
  int32_t adapter = kBaseAdapter;
};

struct ChoiceExample {
  std::vector<int32_t> prompt_ids;                // BOS + prompt
  std::vector<std::vector<int32_t>> choice_ids;  // each choice's continuation
  int answer = 0;
  int32_t adapter = kBaseAdapter;
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
  // Mixed-adapter batches (eval, generate): each line's "adapter" field is resolved against
  // adapter_names into Example::adapter (resolve_adapter_name). Off: the field is not read.
  bool route_adapters = false;
  std::vector<std::string> adapter_names;
};

// The index of adapter `name` among `names` ("__base__": kBaseAdapter). name == nullptr (a line
// without the field): the only adapter when there is exactly one, kBaseAdapter when there are
// none, and an error with several. Errors start with `where` ("file:line") and list the names.
int32_t resolve_adapter_name(const std::string* name, const std::vector<std::string>& names, const std::string& where);
// "a, b, __base__": the names an adapter field may take.
std::string adapter_names_list(const std::vector<std::string>& names);

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
