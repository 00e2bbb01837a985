// Text generation: prefill the prompt in one pass through a KV cache, then one token at a
// time; greedy or sampled (temperature → top-k → top-p, transformers' order), deterministic
// for a seed.
//
//   GenerateOptions opt;  opt.max_new_tokens = 64;  opt.eos_ids = {2};
//   GenerateResult r = generate(model, prompt_ids, opt, [&](int32_t id) { ...; return true; });
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "models/llama.h"

namespace qpeft {

class Tokenizer;

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: off; else keep the k highest logits (ties with the k-th kept)
  double top_p = 1.0;        // 1: off; else keep the smallest top set with probability >= top_p
};

struct GenerateOptions : SamplingOptions {
  int64_t max_new_tokens = 128;  // and never past the context (max_position_embeddings)
  uint64_t seed = 0;
  bool stop_on_eos = true;
  std::vector<int32_t> eos_ids;  // any of them ends generation (it is still reported)
  bool use_cache = true;         // false: rerun the whole sequence per token (the reference)
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (the EOS that stopped it included)
  bool stopped_on_eos = false;
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;  // first token / the tokens after it
  std::vector<float> last_logits;  // [vocab] logits that chose the last token
};

// Picks a token from logits [V] (modified in place): argmax when temperature == 0, else a draw
// from softmax(logits / temperature) restricted by top-k then top-p (nucleus).
int32_t sample_token(float* logits, int64_t V, const SamplingOptions& opt, Rng& rng);

// Logits [B, V] of the last position of each row after running ids [B·T] through the model
// (appending to `cache` when given).
Tensor last_logits(LlamaModel& model, const std::vector<int32_t>& ids, int64_t B, int64_t T, KVCache* cache = nullptr);

// How many of max_new_tokens fit after a prompt of prompt_tokens within the model's context
// (max_position_embeddings), which bounds the KV cache; an error if the prompt fills it.
int64_t new_tokens_within_context(const ModelConfig& cfg, int64_t prompt_tokens, int64_t max_new_tokens);

// on_token(id) is called for every generated token as it is chosen; returning false stops.
// With adapters loaded together (mixed_adapter.h), the model's sequence adapters say which one
// the prompt uses (a SequenceAdaptersScope of one entry).
using TokenCallback = std::function<bool(int32_t)>;
GenerateResult generate(LlamaModel& model, const std::vector<int32_t>& prompt_ids, const GenerateOptions& opt,
                        const TokenCallback& on_token = {});

// Several prompts in one batch, prompt i under adapter adapters[i] (an index into the adapters
// loaded together, kBaseAdapter for none; empty: the model's sequence adapters are left as they
// are): the prompts are prefilled together, right-padded to the longest, then every unfinished
// row decodes one token per step at its own position (a ragged KV cache), and rows leave the
// batch as they stop. Result i is what generate(prompts[i]) gives with only its adapter
// (sampling: each row draws from its own Rng(opt.seed), as a lone generate would), up to float
// rounding from the different batch shapes. Timings are the batch's: prefill_seconds for the
// shared prefill, decode_seconds up to the row's last token.
std::vector<GenerateResult> generate_batch(LlamaModel& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const std::vector<int32_t>& adapters, const GenerateOptions& opt);

// End-of-sequence ids of a model directory: config.json's eos_token_id(s), those of
// generation_config.json when present, and the tokenizer's EOS (when tok is given).
std::vector<int32_t> eos_token_ids(const ModelConfig& cfg, const std::string& model_dir, const Tokenizer* tok);

// Streams decoded text as tokens arrive: push() returns the text that became complete (whole
// UTF-8 characters only: a character split across tokens waits for its last byte); finish()
// returns whatever is left. Special tokens, and ids past the tokenizer's vocabulary (a model's
// padded rows), are skipped.
class TextStreamer {
 public:
  explicit TextStreamer(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);
  std::string finish();

 private:
  std::string flush(bool final);
  const Tokenizer& tok_;
  std::vector<int32_t> ids_;
  size_t printed_ = 0;  // bytes of decode(ids_) already returned
};

}  // namespace qpeft
