// GGUF files (io/gguf.h): open, then the typed look-ups a model load makes and every tensor's
// bytes (whose ranges the reader checked).
#include "fuzz_util.h"
#include "io/gguf.h"

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
  return 0;
}
