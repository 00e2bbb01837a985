// LoRA adapters as llama.cpp's LoRA GGUF files (`llama-server --lora FILE.gguf`).
//
// general.type "adapter", general.architecture as the base's, adapter.type "lora",
// adapter.lora.alpha; per adapted layer blk.N.<attn_q|...|ffn_down>.weight.lora_a (PEFT's A,
// [r, in] = ggml ne [in, r]) and .lora_b (B, [out, r] = ne [r, out]), f32. llama.cpp scales
// each pair by alpha / r (r from the tensor): a layer whose PEFT scaling differs (rsLoRA,
// rank or alpha patterns) gets the ratio folded into its B. The rows of q/k's B are permuted
// as the base's q/k weights are (models/gguf_model.h); A is not.
#pragma once
#include <string>

#include "models/llama.h"

namespace qpeft {

// The model's LoRA adapters (loaded from a PEFT directory) as a llama.cpp LoRA GGUF, written
// atomically. An (IA)³ adapter has no llama.cpp form: an error says to export it merged.
void export_gguf_lora(LlamaModel& model, double lora_alpha, const std::string& out);

}  // namespace qpeft
