// SentencePiece tokenizer.model (text/tokenizer.h through libsentencepiece): load, encode, decode.
#include "fuzz_util.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qpeft::fuzz::as_file(data, size, "tokenizer.model");
  qpeft::fuzz::refuse_only_with_error([&] {
    qpeft::Tokenizer t = qpeft::Tokenizer::load(path);
    const auto ids = t.encode("Hello, world! 123 \xC3\xA9", /*add_special=*/true);
    (void)t.decode(ids);
  });
  return 0;
}
