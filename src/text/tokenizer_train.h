// Byte-level BPE training, as Hugging Face tokenizers' BpeTrainer does it with
// initial_alphabet = ByteLevel.alphabet(), written as a tokenizer.json that Tokenizer::load
// and @huggingface/tokenizers load identically.
//
//   qpeft::BpeTrainOptions o;
//   o.vocab_size = 8192;
//   o.special_tokens = {"<s>", "</s>"};
//   qpeft::BpeTrainer trainer(o);
//   trainer.feed_file("corpus.txt");              // or feed(text)
//   qpeft::TrainedBpe bpe = trainer.train();
//   qpeft::write_file_atomic("tokenizer.json", bpe.tokenizer_json());
//
// Vocabulary: the special tokens (ids 0..), then the 256 byte-level characters sorted by
// code point (as BpeTrainer's compute_alphabet does), then one token per merge. Training
// text is cut into lines (each keeps its "\n"), as Tokenizer.train_from_files feeds it,
// pre-tokenized with the chosen Split regex, and counted; merges then repeatedly join the
// most frequent adjacent pair (ties: the pair with the smaller (left id, right id)), with
// incremental pair counts and a priority queue, until vocab_size is reached, no pair is
// left, or the best count is below min_frequency. Deterministic: same input, same bytes.
// Special tokens occurring in the training text are counted as ordinary text (as HF does).
// Cost: each merge rescans the words that hold the pair, so one giant pre-token (megabytes
// of letters without a space, with split_lines off) trains slowly, as it does in HF.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace qpeft {

enum class BpeSplit : uint8_t { kLlama3, kGpt2 };

// "llama3" or "gpt2"; anything else is an error listing the choices.
BpeSplit parse_bpe_split(std::string_view name);

struct BpeTrainOptions {
  int32_t vocab_size = 8192;      // special tokens + 256 bytes + merges
  uint64_t min_frequency = 0;     // a pair seen fewer times is never merged
  std::vector<std::string> special_tokens;  // ids 0.. in this order
  BpeSplit split = BpeSplit::kLlama3;
  bool split_lines = true;        // false: each fed text is one sequence (pre-tokens may span lines)
  // true: the initial alphabet is all 256 bytes (any input encodes). false: only the bytes
  // seen in training, as BpeTrainer does without initial_alphabet (its default; for
  // comparing with it: unseen bytes are then dropped when encoding).
  bool all_bytes = true;
};

struct TokenizerConfigOptions {
  std::string bos_token, eos_token;  // "" = none; must be special tokens
  std::string chat_template;         // "" = none
  bool add_bos = true;               // the post-processor prepends bos_token
};

struct TrainedBpe {
  BpeTrainOptions options;
  std::vector<std::string> tokens;  // id -> bytes (special tokens: their text)
  // In rank order: (left id, right id) -> merged id. A pair appears once.
  std::vector<std::pair<std::pair<int32_t, int32_t>, int32_t>> merges;
  int32_t num_special = 0;
  int32_t num_bytes = 0;  // byte tokens in the alphabet (256 unless all_bytes is false)
  // Training statistics.
  uint64_t bytes = 0, sequences = 0, words = 0, unique_words = 0;

  int32_t vocab_size() const { return int32_t(tokens.size()); }
  // The Hugging Face tokenizer.json (pretty-printed, vocab in id order). With a bos token
  // and add_bos, the post-processor prepends it (Llama convention); decoder ByteLevel.
  std::string tokenizer_json(const TokenizerConfigOptions& cfg = {}) const;
  // tokenizer_config.json: bos/eos, chat template, added_tokens_decoder.
  std::string config_json(const TokenizerConfigOptions& cfg) const;
};

class BpeTrainer {
 public:
  explicit BpeTrainer(BpeTrainOptions options);
  // Counts the pre-tokens of `text` (cut into lines unless !split_lines).
  void feed(std::string_view text);
  void feed_file(const std::string& path);
  // Errors: vocab_size smaller than specials + 256, duplicate or empty special tokens.
  TrainedBpe train() const;

  // Pre-token -> count so far.
  const std::unordered_map<std::string, uint64_t>& word_counts() const { return counts_; }

 private:
  void feed_sequence(std::string_view seq);
  BpeTrainOptions o_;
  std::unordered_map<std::string, uint64_t> counts_;
  uint64_t bytes_ = 0, sequences_ = 0, words_ = 0;
};

}  // namespace qpeft
