// A GGUF file's tokenizer (tokenizer.ggml.* metadata) as the Hugging Face files qpeft reads:
// the text of a tokenizer.json and of a tokenizer_config.json. Byte-level BPE ("gpt2") with the
// pre-tokenizers llama.cpp names llama-bpe, qwen2 and gpt-2 (the split patterns
// models/gguf_model.cpp writes); token types 3 (control) and 4 (user-defined) become added
// tokens; add_bos_token becomes the post-processor; the chat template goes with the config.
#pragma once
#include <string>

namespace qpeft {

class GgufFile;

struct GgufTokenizerFiles {
  std::string tokenizer_json, tokenizer_config_json;
};
GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& g);

// True when `path` names a GGUF file (by its name: it ends in ".gguf").
bool is_gguf_path(const std::string& path);

}  // namespace qpeft
