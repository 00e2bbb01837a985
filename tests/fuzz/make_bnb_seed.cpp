// Writes the seed of corpus/bnb_checkpoint: 64 x 64 weights in NF4 with double quantization
// and 16 x 128 in FP4, as qpeft (and bitsandbytes) lay them out. Usage: fuzz_make_bnb_seed OUT
#include <cmath>
#include <memory>

#include "io/bnb_checkpoint.h"
#include "io/safetensors.h"
#include "quant/quantized_weight.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  auto ramp = [](int64_t rows, int64_t cols) {
    qpeft::Tensor t = qpeft::Tensor::empty({rows, cols});
    for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(std::sin(0.37 * double(i)));
    return t;
  };
  qpeft::SafetensorsWriter w;
  qpeft::add_bnb_weight(w, "model.layers.0.self_attn.q_proj.weight",
                        std::make_shared<qpeft::QuantizedWeight>(qpeft::QuantizedWeight::quantize(
                            ramp(64, 64), qpeft::QuantFormat::NF4, 64, true, "q_proj")));
  qpeft::add_bnb_weight(w, "model.layers.0.mlp.up_proj.weight",
                        std::make_shared<qpeft::QuantizedWeight>(qpeft::QuantizedWeight::quantize(
                            ramp(16, 128), qpeft::QuantFormat::FP4, 128, false, "up_proj")));
  w.write(argv[1]);
  return 0;
}
