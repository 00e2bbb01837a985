// tokenizer.json (text/tokenizer.h): load, then encode and decode a fixed text.
#include "fuzz_util.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  qpeft::fuzz::refuse_only_with_error([&] {
    qpeft::Tokenizer t = qpeft::Tokenizer::from_json(qpeft::fuzz::text_of(data, size), {}, "tokenizer.json");
    const auto ids = t.encode("Hello, world! <s> 123 \xC3\xA9\xF0\x9F\x98\x80 \n\t", /*add_special=*/true);
    (void)t.decode(ids);
  });
  return 0;
}
