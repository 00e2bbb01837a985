// A SentencePiece tokenizer.model's vocabulary and the settings that decide how llama.cpp's
// "llama" (SentencePiece) GGUF tokenizer splits text, read from the model's protobuf
// (ModelProto) and written back as one libsentencepiece loads. GGUF export writes the first,
// GGUF import the second (text/gguf_tokenizer.h).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qpeft {

struct SentencePieceVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  // SentencePiece's piece types, numbered as llama.cpp's token types are: 1 normal,
  // 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
  std::vector<int32_t> types;
  bool bpe = true;  // trainer_spec.model_type: BPE, else unigram, word or char
  bool byte_fallback = false;
  std::string normalizer = "identity";  // normalizer_spec.name
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
};

// Every length is checked; a malformed protobuf is an error naming `origin`.
SentencePieceVocab read_sentencepiece_vocab(std::string_view model_proto, const std::string& origin);

// A ModelProto of v's pieces, model type, byte fallback, add_dummy_prefix and
// remove_extra_whitespaces, with identity normalization (no character map to carry).
std::string sentencepiece_model_proto(const SentencePieceVocab& v);

}  // namespace qpeft
