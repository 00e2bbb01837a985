// Llama-family models as llama.cpp's GGUF files (io/gguf.h): the tensor names, the metadata
// llama.cpp's loader reads, and the q/k row order it expects.
//
// Names: model.embed_tokens → token_embd, model.norm → output_norm, lm_head → output (absent
// when tied), model.layers.N.{input_layernorm → attn_norm, post_attention_layernorm → ffn_norm,
// self_attn.{q,k,v,o}_proj → attn_{q,k,v,output}, mlp.{gate,up,down}_proj → ffn_{gate,up,down}}.
// Architecture "llama" (Llama, Mistral) or "qwen2" (q/k/v biases). For "llama", llama.cpp
// rotates adjacent pairs (2i, 2i+1) where Hugging Face rotates halves (i, i + d/2), so its
// converter permutes the rows of q_proj and k_proj within each head: row j·d/2 + i moves to
// 2i + j. Llama-3 RoPE scaling travels as the tensor rope_freqs.weight (per-frequency
// divisors), linear scaling as metadata.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "models/checkpoint.h"
#include "models/llama.h"

namespace qpeft {

class GgufFile;

// How matrices are stored: f32, f16, bf16, q8_0, q4_0 or q4_k_m (llama.cpp's mix: q4_K, with
// q6_K for the head and for attn_v / ffn_down in the first and last eighth of the layers and
// every third between). Norms and biases are f32. A matrix whose rows do not fit the blocks
// falls back to q8_0, then f16.
struct GgufExportOptions {
  std::string dtype = "f16";
  std::string name;  // general.name ("" = the model directory's name)
  // The values of a matrix or vector slot, f32 (default: the loaded weight, decoded).
  std::function<Tensor(const WeightSlot&)> matrix, vector;
};

// The model (with `model_dir`'s tokenizer.json, tokenizer_config.json and chat template) as a
// GGUF file llama.cpp loads, written atomically. Byte-level BPE tokenizers only for now.
void export_gguf_model(LlamaModel& model, const std::string& model_dir, const std::string& out,
                       const GgufExportOptions& opt);

// A GGUF model file as a model: llama.cpp's llama or qwen2 layout (what export_gguf_model
// writes, and what llama.cpp's converter writes for these architectures). f32/f16/bf16
// matrices are used in place from the mapping (DenseWeight), q8_0/q4_0/q4_K/q5_K/q6_K ones as
// GgmlWeight (quant/ggml_weight.h), also in place; q/k rows are put back in Hugging Face's
// order (those weights are copied). opt.quantize quantizes the dense linear weights on load
// (QLoRA on a GGUF base); ggml-quantized ones stay as they are.
std::unique_ptr<LlamaModel> load_gguf_model(const std::string& path, const LoadOptions& opt);
// The config the metadata describes, through ModelConfig::parse's checks and limits.
ModelConfig gguf_model_config(const GgufFile& g);

// GGUF tensor name of a Hugging Face checkpoint name ("" for one llama.cpp has no place for).
std::string gguf_tensor_name(const std::string& hf_name);
// Rows of a q or k projection [n_heads · head_dim, cols] in llama.cpp's order (`inverse`:
// back to Hugging Face's). Works on any row payload of `row_bytes`.
void permute_qk_rows(uint8_t* rows, int64_t n_heads, int64_t head_dim, size_t row_bytes, bool inverse);
// True when the architecture needs permute_qk_rows ("llama"), false for "qwen2".
bool gguf_permutes_qk(const ModelConfig& cfg);

}  // namespace qpeft
