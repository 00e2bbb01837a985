// A GGUF file's tokenizer (tokenizer.ggml.* metadata) as the Hugging Face files qpeft reads:
// a tokenizer_config.json's text (bos/eos/pad/unk, add_bos_token, the chat template) and
//  - for byte-level BPE ("gpt2"), a tokenizer.json's text: the pre-tokenizers llama.cpp names
//    llama-bpe, qwen2 and gpt-2 (the split patterns models/gguf_model.cpp writes); token
//    types 3 (control) and 4 (user-defined) become added tokens; add_bos_token becomes the
//    post-processor;
//  - for SentencePiece ("llama"), a tokenizer.model: the pieces, scores and types as a BPE
//    model, add_space_prefix as add_dummy_prefix, whitespace kept as llama.cpp keeps it.
#pragma once
#include <string>

namespace qpeft {

class GgufFile;

struct GgufTokenizerFiles {
  std::string tokenizer_json;       // "gpt2"; empty for "llama"
  std::string sentencepiece_model;  // "llama": a serialized ModelProto; empty for "gpt2"
  std::string tokenizer_config_json;
};
GgufTokenizerFiles gguf_tokenizer_files(const GgufFile& g);

// True when `path` names a GGUF file (by its name: it ends in ".gguf").
bool is_gguf_path(const std::string& path);

}  // namespace qpeft
