// Hugging Face checkpoint directories in and out, through LlamaModel::visit_weights.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "models/llama.h"
#include "quant/quantized_weight.h"

namespace qpeft {

// How linear weights are quantized (while a checkpoint is written, or on load).
struct QuantizeOptions {
  std::string format;  // "" = none; "nf4", "fp4", "nf2", "nf3", "uniform4", ...
  int64_t block_size = 64;
  bool double_quant = true;
  bool enabled() const { return !format.empty(); }
};

struct LoadOptions {
  // Quantize dense linear weights on load (QLoRA); disabled = keep them as stored.
  QuantizeOptions quantize;
  // Copy the matrices kept as stored into process memory instead of viewing the file's
  // mapping. Mapped pages are file cache: the kernel may drop them while they idle between a
  // step's forward and backward touches and read them back from disk (what training does
  // to every weight each step). An untied embedding table stays mapped: a step reads only
  // its looked-up rows.
  bool in_memory = false;
};
// The weights LoadOptions::in_memory leaves mapped (an untied embedding table).
bool read_only_in_part(const ModelConfig& cfg, const std::string& name);
// Whether a loader copies slot s into memory: with opt.in_memory, a matrix kept as stored (not
// quantized_here) and read whole each step. Vectors become f32 copies anyway.
bool copies_into_memory(const LoadOptions& opt, const ModelConfig& cfg, const WeightSlot& s, bool quantized_here);

// Loads config.json + model.safetensors (or a sharded index) from dir. Matrices stay in the
// file's dtype, memory-mapped (zero-copy) unless opt.in_memory; norms and biases become f32.
// Weights stored as bitsandbytes 4-bit (io/bnb_checkpoint.h) become QuantizedWeight, whatever
// config.json says.
// With opt.quantize, every other linear weight is quantized tile by tile from the mapping
// (never a whole f32 copy); embeddings and lm_head stay as stored (as bitsandbytes and PEFT's
// QLoRA leave them).
std::unique_ptr<LlamaModel> load_model(const std::string& dir, const LoadOptions& opt = {});

// Writes config.json + model.safetensors (sharded past max_shard_bytes) atomically.
// `matrix(slot)` returns a matrix's values in the output dtype when set; by default the
// loaded weight is written as it is (same dtype and bits; a QuantizedWeight in bitsandbytes'
// layout). Linear weights are quantized while written, one at a time, when `quant` is set (all
// of them) or with `requantize` (those loaded quantized, each in its own format). config.json
// gets quantization_config exactly when some weight is written quantized.
struct SaveOptions {
  DType dtype = DType::BF16;  // for matrices produced as f32 (merged or freshly initialised)
  uint64_t max_shard_bytes = uint64_t(5) << 30;
  std::function<Tensor(const WeightSlot&)> matrix;  // optional override, may return f32
  std::function<Tensor(const WeightSlot&)> vector;  // optional override of norms and biases, f32
  QuantizeOptions quant;
  bool requantize = false;
  // Called for each weight quantized while written, with the exact values it came from.
  std::function<void(const WeightSlot&, const QuantizedWeight&, const Tensor& exact)> on_quantized;
  // Writes further files (tokenizer, an adapter subdirectory) into the directory before it is
  // committed, so they appear together with the model or not at all.
  std::function<void(const std::string& tmp_dir)> extra_files;
};
void save_model(LlamaModel& model, const std::string& dir, const SaveOptions& opt);

// init-model: a random checkpoint of this shape, generated tensor by tensor while it is
// written (the whole model is never in memory). Matrices N(0, init_std), norms 1, biases 0.
// With quant, each linear weight is generated in `dtype` and quantized while written (the
// same bits as writing the dense model and quantizing it afterwards); embeddings, lm_head and
// norms are written dense in `dtype`.
void write_random_model(const ModelConfig& cfg, DType dtype, uint64_t seed, const std::string& dir,
                        const QuantizeOptions& quant = {}, double init_std = 0.02);

// Copies tokenizer.json, tokenizer_config.json, tokenizer.model, special_tokens_map.json,
// generation_config.json from src_dir to dst_dir when present.
void copy_tokenizer_files(const std::string& src_dir, const std::string& dst_dir);

}  // namespace qpeft
