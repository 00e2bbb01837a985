// bitsandbytes 4-bit checkpoints (io/bnb_checkpoint.h): every quantized weight the file
// announces is read and dequantized.
#include "fuzz_util.h"
#include "io/bnb_checkpoint.h"
#include "io/safetensors.h"
#include "quant/quantized_weight.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = qpeft::fuzz::as_file(data, size, "model.safetensors");
  qpeft::fuzz::refuse_only_with_error([&] {
    qpeft::TensorStore store = qpeft::TensorStore::open_files({path});
    for (const auto& entry : qpeft::find_quantized_weights(store)) {
      qpeft::fuzz::refuse_only_with_error([&] {
        auto q = qpeft::read_bnb_weight(store, entry.first, entry.second, {});
        if (q->rows() * q->cols() <= (1 << 20)) (void)q->dequantize();
      });
    }
  });
  return 0;
}
