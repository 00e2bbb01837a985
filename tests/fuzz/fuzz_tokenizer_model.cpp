// SentencePiece tokenizer.model (text/tokenizer.h through libsentencepiece): load, encode, decode;
// and its vocabulary read and written back as GGUF export and import do (text/sentencepiece_vocab.h).
#include "fuzz_util.h"
#include "text/sentencepiece_vocab.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qpeft::fuzz::as_file(data, size, "tokenizer.model");
  qpeft::fuzz::refuse_only_with_error([&] {
    qpeft::Tokenizer t = qpeft::Tokenizer::load(path);
    const auto ids = t.encode("Hello, world! 123 \xC3\xA9", /*add_special=*/true);
    (void)t.decode(ids);
  });
  qpeft::fuzz::refuse_only_with_error([&] {
    qpeft::SentencePieceVocab v = qpeft::read_sentencepiece_vocab(
        std::string_view(reinterpret_cast<const char*>(data), size), "tokenizer.model");
    v.remove_extra_whitespaces = false;
    qpeft::Tokenizer t = qpeft::Tokenizer::from_sentencepiece(qpeft::sentencepiece_model_proto(v));
    (void)t.decode(t.encode("Hello,  world!", /*add_special=*/true));
  });
  return 0;
}
