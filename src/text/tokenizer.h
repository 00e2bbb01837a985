// Tokenizer: loads a Hugging Face tokenizer.json (byte-level BPE: GPT-2, Llama 3, Qwen2/3;
// SentencePiece-style BPE: Llama 2, Mistral, TinyLlama) and encodes/decodes exactly as the
// `tokenizers` library does, id for id; or a SentencePiece tokenizer.model, encoded and
// decoded by libsentencepiece itself (docs/tokenizers.md lists what is supported).
//
//   auto tok = qpeft::Tokenizer::load("models/llama3");   // dir, tokenizer.json or .model
//   std::vector<int32_t> ids = tok.encode("Hello world", /*add_special=*/true);
//   std::string text = tok.decode(ids, /*skip_special=*/true);
//
// Errors (unreadable or malformed files, unsupported components) are qpeft::Error naming the
// file and the JSON key. encode() accepts any bytes: invalid UTF-8 is tokenized byte by byte
// (byte-level models) or through byte fallback; it never throws on input text.
// encode/decode are safe to call from several threads at once; encode_batch uses the pool.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qpeft {

namespace tok_detail { struct TokenizerImpl; }

// True when `model_path` has a tokenizer Tokenizer::load reads: a directory with tokenizer.json
// or tokenizer.model, or a GGUF file with tokenizer.ggml.* metadata.
bool has_tokenizer(const std::string& model_path);

class Tokenizer {
 public:
  // path: a tokenizer.json, a SentencePiece tokenizer.model, a model directory holding
  // one of them, or a GGUF file (text/gguf_tokenizer.h). tokenizer_config.json next to it, when present, supplies bos/eos/pad and
  // the chat template.
  static Tokenizer load(const std::string& path);
  // From the text of a tokenizer.json (and optionally of tokenizer_config.json); `origin`
  // names the source in error messages.
  static Tokenizer from_json(std::string_view tokenizer_json, std::string_view config_json = {},
                             const std::string& origin = "tokenizer.json");
  // From a serialized SentencePiece ModelProto (the bytes of a tokenizer.model).
  static Tokenizer from_sentencepiece(std::string_view model_proto, std::string_view config_json = {},
                                      const std::string& origin = "tokenizer.model");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special: apply the post-processor (BOS/EOS) as HF's add_special_tokens=True does.
  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const;
  // encode() of each text, spread over the process-wide thread pool (core/thread_pool.h):
  // each thread takes the next text not yet taken. Result i is encode(texts[i]) whatever
  // the thread count.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string_view>& texts, bool add_special = false) const;
  // Ids outside the vocabulary are an error; the result is valid UTF-8 (U+FFFD for broken
  // byte sequences, like HF). No clean_up_tokenization_spaces post-pass.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  int32_t bos_id() const;  // -1 when the tokenizer has none
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  int32_t vocab_size() const;  // 1 + the largest id (model vocabulary and added tokens)
  const std::string& id_to_token(int32_t id) const;  // "" for an unused id; throws if out of range
  int32_t token_to_id(std::string_view token) const;  // -1 if unknown
  bool is_special(int32_t id) const;

  const std::string& bos_token() const;
  const std::string& eos_token() const;
  // tokenizer_config.json's chat_template ("" when none).
  const std::string& chat_template() const;
  // Where it was loaded from.
  const std::string& source() const;

 private:
  explicit Tokenizer(std::unique_ptr<tok_detail::TokenizerImpl> impl);
  std::unique_ptr<tok_detail::TokenizerImpl> impl_;
};

}  // namespace qpeft
