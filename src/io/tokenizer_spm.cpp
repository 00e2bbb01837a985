// SentencePiece tokenizer.model files.
#include "core/error.h"
#include "io/tokenizer_impl.h"

namespace qpeft::tok_detail {

std::unique_ptr<TokenizerImpl> load_sentencepiece_model(const std::string& path, std::string_view) {
  fail("[tokenizer] {}: SentencePiece .model files are not supported yet; use the model's tokenizer.json", path);
}

}  // namespace qpeft::tok_detail
