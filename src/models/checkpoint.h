// Hugging Face checkpoint directories in and out, through LlamaModel::visit_weights.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "models/llama.h"

namespace qpeft {

struct LoadOptions {
  // Quantize dense linear weights on load (QLoRA): "" = keep as stored, else "nf4", "fp4", ...
  std::string quantize;
  int64_t block_size = 64;
  bool double_quant = true;
};

// Loads config.json + model.safetensors (or a sharded index) from dir. Matrices stay in the
// file's dtype, memory-mapped (zero-copy); norms and biases become f32.
std::unique_ptr<LlamaModel> load_model(const std::string& dir, const LoadOptions& opt = {});

// Writes config.json + model.safetensors (sharded past max_shard_bytes) atomically.
// `matrix(slot)` returns a matrix's values in the output dtype when set; by default the
// loaded weight is written as it is (same dtype and bits).
struct SaveOptions {
  DType dtype = DType::BF16;  // for matrices produced as f32 (merged or freshly initialised)
  uint64_t max_shard_bytes = uint64_t(5) << 30;
  std::function<Tensor(const WeightSlot&)> matrix;  // optional override, may return f32
};
void save_model(LlamaModel& model, const std::string& dir, const SaveOptions& opt);

// init-model: a random checkpoint of this shape, generated tensor by tensor while it is
// written (the whole model is never in memory). Matrices N(0, init_std), norms 1, biases 0.
void write_random_model(const ModelConfig& cfg, DType dtype, uint64_t seed, const std::string& dir,
                        double init_std = 0.02);

// Copies tokenizer.json, tokenizer_config.json, tokenizer.model, special_tokens_map.json,
// generation_config.json from src_dir to dst_dir when present.
void copy_tokenizer_files(const std::string& src_dir, const std::string& dst_dir);

}  // namespace qpeft
