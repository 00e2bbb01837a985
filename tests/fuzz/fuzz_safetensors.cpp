// safetensors files (io/safetensors.h): open, then read every tensor it lists.
#include "fuzz_util.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qpeft::fuzz::as_file(data, size, "model.safetensors");
  qpeft::fuzz::refuse_only_with_error([&] {
    auto f = qpeft::SafetensorsFile::open(path);
    for (const std::string& name : f->names()) {
      qpeft::fuzz::refuse_only_with_error([&] {
        qpeft::Tensor t = f->get(name);
        if (t.numel() > 0 && t.numel() < (1 << 20)) (void)t.to(qpeft::DType::F32);
      });
    }
  });
  return 0;
}
