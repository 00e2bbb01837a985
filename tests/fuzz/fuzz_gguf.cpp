// GGUF files (io/gguf.h): open, then the typed look-ups a model load makes, every tensor's
// bytes (whose ranges the reader checked), and the tokenizer (text/gguf_tokenizer.h: gpt2's
// tokenizer.json, llama's SentencePiece model) with an encode and a decode.
#include "fuzz_util.h"
#include "io/gguf.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qpeft::fuzz::as_file(data, size, "model.gguf");
  qpeft::fuzz::refuse_only_with_error([&] {
    auto g = qpeft::GgufFile::open(path);
    for (const char* key : {"general.architecture", "llama.block_count", "llama.rope.freq_base",
                            "tokenizer.ggml.add_bos_token"})
      qpeft::fuzz::refuse_only_with_error([&] {
        (void)g->get_string(key);
        (void)g->get_uint(key);
        (void)g->get_float(key);
        (void)g->get_bool(key);
      });
    qpeft::fuzz::refuse_only_with_error([&] { (void)g->get_array("tokenizer.ggml.tokens", qpeft::GgufType::kString); });
    uint64_t sum = 0;
    for (const auto& t : g->tensors())
      for (uint64_t i = 0; i < t.nbytes; i += 4096) sum += t.data[i];
    if (sum == 1) std::fprintf(stderr, " ");  // keep the reads
  });
  qpeft::fuzz::refuse_only_with_error([&] {
    qpeft::Tokenizer t = qpeft::Tokenizer::load(path);
    (void)t.decode(t.encode("Hello, world!  123 \xC3\xA9", /*add_special=*/true));
  });
  return 0;
}
