// The Llama-family decoder (llama, mistral, qwen2): pre-norm blocks of grouped-query
// attention with RoPE and a SiLU-gated MLP. The base is frozen; PEFT methods attach to
// linear layers through LinearAdapter, so this file knows nothing of LoRA or (IA)³.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "text/data_formats.h"
#include "models/config.h"
#include "ops/autograd.h"
#include "ops/linear.h"
#include "ops/loss.h"
#include "ops/rope.h"

namespace qpeft {

class KVCache;

// A hook on one linear layer: y = adapt_output(x', base(x')) with x' = adapt_input(x).
class LinearAdapter {
 public:
  virtual ~LinearAdapter() = default;
  virtual Var adapt_input(Graph& g, const Var& x) { return x; }
  // False when adapt_input is the identity (the default).
  virtual bool adapts_input() const { return false; }
  // y is the base layer's output, made for this call: an adapter may write its result into
  // y's storage (nothing reads y's value afterwards).
  virtual Var adapt_output(Graph& g, const Var& x, const Var& y) = 0;
  // adapt_output in llama.cpp's float order (ops/llama_cpp_order.h), for a layer whose product
  // is llama.cpp's own (llama_cpp_order_lanes); llama.cpp adds the bias after the adapter.
  // Nothing (the default) where the method has no llama.cpp form: adapt_output then applies.
  virtual std::optional<Var> adapt_output_llama_cpp(Graph& g, const Var& x, const Var& y, int lanes) {
    return std::nullopt;
  }
  // Trainable tensors, named relative to the layer ("lora_A.weight").
  virtual void visit_params(const std::function<void(const std::string& suffix, Var& param)>& fn) = 0;
  // Merge: folds the adapter into the layer's own weight (f32 [out, in]) and bias (f32 [out]),
  // so that the plain layer computes what the adapted one does. Most adapters leave the bias.
  virtual void merge_into(Tensor& weight) const = 0;
  virtual void merge_bias_into(Tensor& bias) const {}
};

// Mixed-adapter batches (SPEC §1): the adapter of every token row of the forward in progress
// ([B·T] in batch-row order; an index into the adapters a MixedAdapter holds, kBaseAdapter for
// none), written by LlamaModel::hidden_states from the sequence adapters and read by the
// layers' adapters. Empty when the batch names no adapters.
struct RowAdapters {
  std::vector<int32_t> rows;
};

struct Linear {
  std::string name;  // "model.layers.0.self_attn.q_proj"
  std::string kind;  // "q_proj"
  int64_t layer = -1;
  int64_t in_features = 0, out_features = 0;
  std::shared_ptr<const FrozenWeight> weight;
  Var trainable;  // full fine-tuning: the f32 weight [out, in] that `weight` views; else undefined
  Var bias;  // undefined when the layer has none
  std::shared_ptr<LinearAdapter> adapter;

  Var forward(Graph& g, const Var& x) const;
};

// The lanes of llama.cpp's float order (ops/llama_cpp_order.h) for an inference product with
// `weight` where that product is llama.cpp's own (a GgmlWeight under GgmlActivations::Q8), so
// that what surrounds it follows llama.cpp too; 0 otherwise.
int llama_cpp_order_lanes(const Graph& g, const FrozenWeight& weight);

struct DecoderLayer {
  Var input_norm, post_attention_norm;  // f32 [hidden]
  Linear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
};

// One named tensor of the checkpoint and where it lives in the model. Exactly one of
// `frozen` (matrices, embeddings) and `vector` (norms, biases) is set.
struct WeightSlot {
  std::string name;
  Shape shape;
  std::shared_ptr<const FrozenWeight>* frozen = nullptr;
  Var* vector = nullptr;
  Linear* linear = nullptr;  // the layer owning a matrix or bias slot, if any
};

class LlamaModel {
 public:
  // An empty model of this shape: slots named, nothing loaded.
  explicit LlamaModel(ModelConfig cfg);

  const ModelConfig& config() const { return cfg_; }
  // Every checkpoint tensor in Hugging Face order. The one walk that load, save, merge,
  // init-model and adapter injection share.
  void visit_weights(const std::function<void(WeightSlot&)>& fn);
  void visit_linears(const std::function<void(Linear&)>& fn);
  // After loading: a tied model's head is its embedding.
  void finish_loading();
  // Full fine-tuning: every weight becomes a trainable f32 tensor (dense copies of the stored
  // weights; quantized bases are refused) and is returned with its checkpoint name. The frozen
  // views (`Linear::weight`, embed_tokens(), lm_head()) keep reading the same storage, so
  // saving and merging see the trained values.
  std::vector<std::pair<std::string, Var>> make_fully_trainable();

  // Final normed hidden states [B·T, hidden] for ids [B·T] (row-major [B, T]).
  // With a cache (inference only: g without gradients), the tokens sit at positions
  // cache->length() .. +T-1, attend over the cached prefix too, and are appended to it.
  Var hidden_states(Graph& g, const std::vector<int32_t>& ids, int64_t B, int64_t T, KVCache* cache = nullptr);
  // Causal-LM loss with Hugging Face's shift: position t predicts labels[t + 1];
  // labels are aligned with ids, kIgnoreIndex marks positions without loss.
  LossResult loss(Graph& g, const std::vector<int32_t>& ids, const std::vector<int32_t>& labels, int64_t B, int64_t T);
  // Log-probability of each next-token label, as a graph value [B·T] aligned like loss():
  // entry b·T + t is log p(labels[b·T + t + 1]), 0 where that label is kIgnoreIndex.
  Var label_logprobs(Graph& g, const std::vector<int32_t>& ids, const std::vector<int32_t>& labels, int64_t B,
                     int64_t T);
  // Full logits [B·T, vocab] (tests and generation; training uses the fused loss).
  Tensor logits(const std::vector<int32_t>& ids, int64_t B, int64_t T);

  const std::shared_ptr<const FrozenWeight>& embed_tokens() const { return embed_tokens_; }
  const std::shared_ptr<const FrozenWeight>& lm_head() const { return lm_head_; }
  std::vector<DecoderLayer>& layers() { return layers_; }
  void set_grad_checkpointing(bool on) { grad_checkpoint_ = on; }

  // Mixed-adapter batches (SPEC §1; PEFT's adapter_names): the adapter of each sequence (batch
  // row) in the forwards that follow, an index into the adapters loaded together
  // (peft/mixed_adapter.h) or kBaseAdapter; empty (the default): the batch names none. The
  // adapters of one method (LoraAdapter, Ia3Adapter) adapt every row whatever is set here.
  void set_sequence_adapters(std::vector<int32_t> per_sequence) { seq_adapters_ = std::move(per_sequence); }
  const std::vector<int32_t>& sequence_adapters() const { return seq_adapters_; }
  // Where hidden_states puts the token rows' adapters for the layers' adapters to read.
  std::shared_ptr<const RowAdapters> row_adapters() const { return row_adapters_; }

 private:
  // cache == nullptr: positions 0 .. T-1; else cache->length() onwards, keys/values appended
  // to the cache's layer `layer`.
  Var block(Graph& g, const DecoderLayer& L, const Var& x, int64_t B, int64_t T, int64_t layer = 0,
            KVCache* cache = nullptr);
  std::shared_ptr<const RopeTable> rope_table(int64_t T);

  ModelConfig cfg_;
  std::shared_ptr<const FrozenWeight> embed_tokens_, lm_head_;
  Var embed_trainable_, head_trainable_;  // full fine-tuning only
  std::vector<DecoderLayer> layers_;
  Var final_norm_;
  std::shared_ptr<const RopeTable> rope_;
  bool grad_checkpoint_ = false;
  std::vector<int32_t> seq_adapters_;
  std::shared_ptr<RowAdapters> row_adapters_ = std::make_shared<RowAdapters>();
};

// Sets a model's sequence adapters for a scope, restoring the previous ones after.
class SequenceAdaptersScope {
 public:
  SequenceAdaptersScope(LlamaModel& model, std::vector<int32_t> per_sequence)
      : model_(model), saved_(model.sequence_adapters()) {
    model.set_sequence_adapters(std::move(per_sequence));
  }
  ~SequenceAdaptersScope() { model_.set_sequence_adapters(std::move(saved_)); }
  SequenceAdaptersScope(const SequenceAdaptersScope&) = delete;
  SequenceAdaptersScope& operator=(const SequenceAdaptersScope&) = delete;

 private:
  LlamaModel& model_;
  std::vector<int32_t> saved_;
};

// Targets for the fused loss: targets[b·T + t] = labels[b·T + t + 1], last position ignored.
std::vector<int32_t> shift_labels(const std::vector<int32_t>& labels, int64_t B, int64_t T);

}  // namespace qpeft
