// bitsandbytes 4-bit checkpoints: a Linear4bit weight in safetensors, read and written.
//
// bitsandbytes saves a quantized linear layer's weight as six tensors (Linear4bit state dict,
// QuantState.as_dict(packed=True) under the prefix "<module>.weight."):
//   W                                  uint8   [ceil(numel/2), 1]  packed codes (element 2j high nibble)
//   W.absmax                           float32 [n_blocks]          block scales, or with double
//                                      uint8   [n_blocks]          quantization their 8-bit codes
//   W.quant_map                        float32 [16]                the code book
//   W.nested_absmax                    float32 [ceil(n_blocks/256)]   (double quantization only)
//   W.nested_quant_map                 float32 [256]                  (double quantization only)
//   W.quant_state.bitsandbytes__<type> uint8   [len]   UTF-8 of json.dumps({"quant_type", "blocksize",
//                                      "dtype", "shape", ["nested_blocksize", "nested_dtype", "nested_offset"]})
// with W = "<module>.weight". A weight is quantized exactly when its quant_state tensor exists;
// everything else in the checkpoint (embeddings, norms, lm_head, biases) is a plain tensor.
//
// qpeft's formats beyond bitsandbytes use the same six tensors and JSON with their own tag,
// "qpeft__<name>" ("qpeft__nf2", "qpeft__nf3", "qpeft__uniform4", ...; quant_type "nf2", ...):
// bitsandbytes does not know them, so they must not pretend to be "bitsandbytes__". Codes of
// k-bit formats are packed as quant/blockwise.h documents (2 and 3 bits: big-endian bit stream);
// quant_map holds 2^k values.
//
// Reading validates every piece (JSON fields and types, quant_type against the tag, shape
// against the model's [out, in], dtypes and sizes of every buffer against numel and blocksize,
// the code book against ours) and names file and tensor in each error. Buffers are copied out
// of the mapping into the QuantizedWeight (4.1 bits per parameter for NF4 + DQ).
//
// Writing: add_bnb_weight declares the six tensors of a quantized weight on a SafetensorsWriter;
// add_bnb_weight_lazy quantizes a weight only when the writer reaches it, so a whole model is
// quantized while it is written with at most one weight in memory at a time.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "io/safetensors.h"
#include "quant/quantized_weight.h"

namespace qpeft {

// "bitsandbytes__nf4", "bitsandbytes__fp4", else "qpeft__<format name>".
std::string quant_state_tag(QuantFormat f);
// Inverse of quant_state_tag; false for an unknown tag.
bool parse_quant_state_tag(std::string_view tag, QuantFormat* f);
// nf4 and fp4: formats bitsandbytes itself reads.
bool is_bnb_format(QuantFormat f);

// Every quantized weight in store: weight name ("model.layers.0.self_attn.q_proj.weight") ->
// the key of its quant_state tensor. Errors on two quant_state tensors for one weight.
std::map<std::string, std::string> find_quantized_weights(const TensorStore& store);

// Reads the quantized weight `weight_name` whose quant_state tensor is `state_key`; `expected`
// is the model's [out, in] (empty: take the JSON's shape). Errors name file, tensor and fix.
std::shared_ptr<QuantizedWeight> read_bnb_weight(const TensorStore& store, const std::string& weight_name,
                                                 const std::string& state_key, const Shape& expected = {});

// The quant_state JSON exactly as bitsandbytes' pack_dict_to_tensor writes it (json.dumps:
// ", " and ": " separators, keys in as_dict order, floats as Python's repr).
std::string bnb_quant_state_json(const QuantizedWeight& q);

// Declares q's six (or four) tensors under weight_name on w; q is read when written.
void add_bnb_weight(SafetensorsWriter& w, const std::string& weight_name, std::shared_ptr<const QuantizedWeight> q);

struct LazyQuantSpec {
  QuantFormat format = QuantFormat::NF4;
  int64_t block_size = 64;
  bool double_quant = true;
};
// Called once per weight with the quantized weight and the exact values it was made from.
using QuantizedObserver = std::function<void(const QuantizedWeight& q, const Tensor& exact)>;

// Declares a weight of `shape` [out, in] that `source()` produces (f32/bf16/f16, e.g. a view of
// a mapped file or a freshly generated tensor) and that is quantized only while written.
// source() runs once for the scales (at declaration with double quantization, whose offset
// goes into the JSON; else when the writer reaches the scales) and once for the codes; both
// runs must give the same values. `original_dtype` is what the JSON records as "dtype".
void add_bnb_weight_lazy(SafetensorsWriter& w, const std::string& weight_name, const Shape& shape,
                         DType original_dtype, const LazyQuantSpec& spec, std::function<Tensor()> source,
                         QuantizedObserver observer = {});

}  // namespace qpeft
