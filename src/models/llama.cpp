#include "models/llama.h"

#include <cstring>

#include "core/error.h"
#include "models/gguf_model.h"
#include "models/kv_cache.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/embedding.h"
#include "ops/llama_cpp_order.h"
#include "ops/norm.h"
#include "quant/ggml_weight.h"

namespace qpeft {

int llama_cpp_order_lanes(const Graph& g, const FrozenWeight& weight) {
  if (g.grad_enabled() || ggml_activations() != GgmlActivations::Q8) return 0;
  return dynamic_cast<const GgmlWeight*>(&weight) ? llama_cpp_lanes() : 0;
}

Var Linear::forward(Graph& g, const Var& x) const {
  QP_CHECK(weight, "[{}] weight not loaded", name);
  Var xin = adapter ? adapter->adapt_input(g, x) : x;
  Var y = trainable.defined() ? matmul_nt(g, xin, trainable) : linear(g, xin, weight);
  if (const int lanes = adapter ? llama_cpp_order_lanes(g, *weight) : 0)
    if (std::optional<Var> out = adapter->adapt_output_llama_cpp(g, xin, y, lanes))
      return bias.defined() ? add_bias(g, *out, bias) : *out;
  if (bias.defined()) y = add_bias(g, y, bias);
  return adapter ? adapter->adapt_output(g, xin, y) : y;
}

static Linear make_linear(const std::string& prefix, const char* kind, int64_t layer, int64_t in, int64_t out,
                          bool has_bias) {
  Linear l;
  l.name = prefix + kind;
  l.kind = kind;
  l.layer = layer;
  l.in_features = in;
  l.out_features = out;
  if (has_bias) l.bias = Var(Tensor::zeros({out}), false, l.name + ".bias");
  return l;
}

LlamaModel::LlamaModel(ModelConfig cfg) : cfg_(std::move(cfg)) {
  const int64_t h = cfg_.hidden_size, q = cfg_.num_heads * cfg_.head_dim, kv = cfg_.num_kv_heads * cfg_.head_dim,
                m = cfg_.intermediate_size;
  for (int64_t i = 0; i < cfg_.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    DecoderLayer L;
    L.input_norm = Var(Tensor::full({h}, 1.0f), false, p + ".input_layernorm.weight");
    L.post_attention_norm = Var(Tensor::full({h}, 1.0f), false, p + ".post_attention_layernorm.weight");
    L.q_proj = make_linear(p + ".self_attn.", "q_proj", i, h, q, cfg_.qkv_bias);
    L.k_proj = make_linear(p + ".self_attn.", "k_proj", i, h, kv, cfg_.qkv_bias);
    L.v_proj = make_linear(p + ".self_attn.", "v_proj", i, h, kv, cfg_.qkv_bias);
    L.o_proj = make_linear(p + ".self_attn.", "o_proj", i, q, h, cfg_.o_bias);
    L.gate_proj = make_linear(p + ".mlp.", "gate_proj", i, h, m, cfg_.mlp_bias);
    L.up_proj = make_linear(p + ".mlp.", "up_proj", i, h, m, cfg_.mlp_bias);
    L.down_proj = make_linear(p + ".mlp.", "down_proj", i, m, h, cfg_.mlp_bias);
    layers_.push_back(std::move(L));
  }
  final_norm_ = Var(Tensor::full({h}, 1.0f), false, "model.norm.weight");
}

void LlamaModel::visit_linears(const std::function<void(Linear&)>& fn) {
  for (auto& L : layers_)
    for (Linear* l : {&L.q_proj, &L.k_proj, &L.v_proj, &L.o_proj, &L.gate_proj, &L.up_proj, &L.down_proj}) fn(*l);
}

void LlamaModel::visit_weights(const std::function<void(WeightSlot&)>& fn) {
  auto matrix = [&](const std::string& name, Shape shape, std::shared_ptr<const FrozenWeight>* dst, Linear* owner) {
    WeightSlot s{name, std::move(shape), dst, nullptr, owner};
    fn(s);
  };
  auto vec = [&](Var* v, Linear* owner = nullptr) {
    WeightSlot s{v->name(), v->shape(), nullptr, v, owner};
    fn(s);
  };
  const int64_t h = cfg_.hidden_size, V = cfg_.vocab_size;
  matrix("model.embed_tokens.weight", {V, h}, &embed_tokens_, nullptr);
  for (auto& L : layers_) {
    vec(&L.input_norm);
    for (Linear* l : {&L.q_proj, &L.k_proj, &L.v_proj, &L.o_proj}) {
      matrix(l->name + ".weight", {l->out_features, l->in_features}, &l->weight, l);
      if (l->bias.defined()) vec(&l->bias, l);
    }
    vec(&L.post_attention_norm);
    for (Linear* l : {&L.gate_proj, &L.up_proj, &L.down_proj}) {
      matrix(l->name + ".weight", {l->out_features, l->in_features}, &l->weight, l);
      if (l->bias.defined()) vec(&l->bias, l);
    }
  }
  vec(&final_norm_);
  if (!cfg_.tie_word_embeddings) matrix("lm_head.weight", {V, h}, &lm_head_, nullptr);
}

std::vector<std::pair<std::string, Var>> LlamaModel::make_fully_trainable() {
  std::vector<std::pair<std::string, Var>> params;
  auto to_trainable = [&](const std::string& name, std::shared_ptr<const FrozenWeight>& w) {
    QP_CHECK(dynamic_cast<const DenseWeight*>(w.get()),
             "{}: full fine-tuning needs a dense (f32/bf16/f16) base; '{}' is quantized. Dequantize first (qpeft merge "
             "--dtype bf16) or train an adapter with --method lora/qlora",
             cfg_.source, name);
    Var v(decode_to_f32(*w), true, name);
    w = std::make_shared<DenseWeight>(v.value(), name);  // the frozen view now reads the trained values
    params.emplace_back(name, v);
    return v;
  };
  visit_weights([&](WeightSlot& s) {
    if (s.vector) {
      *s.vector = Var(s.vector->value(), true, s.name);
      params.emplace_back(s.name, *s.vector);
    } else if (s.linear) {
      s.linear->trainable = to_trainable(s.name, *s.frozen);
    } else if (s.name == "model.embed_tokens.weight") {
      embed_trainable_ = to_trainable(s.name, *s.frozen);
    } else {
      head_trainable_ = to_trainable(s.name, *s.frozen);
    }
  });
  if (cfg_.tie_word_embeddings) {
    head_trainable_ = embed_trainable_;
    lm_head_ = embed_tokens_;
  }
  return params;
}

void LlamaModel::finish_loading() {
  if (cfg_.tie_word_embeddings) lm_head_ = embed_tokens_;
  QP_CHECK(embed_tokens_ && lm_head_, "{}: model weights not loaded", cfg_.source);
}

std::shared_ptr<const RopeTable> LlamaModel::rope_table(int64_t T) {
  if (!rope_ || rope_->max_pos() < T) {
    int64_t n = std::max<int64_t>(T, std::min<int64_t>(cfg_.max_position_embeddings, 4096));
    rope_ = std::make_shared<RopeTable>(cfg_.rope, n);
  }
  return rope_;
}

Var LlamaModel::block(Graph& g, const DecoderLayer& L, const Var& x, int64_t B, int64_t T, int64_t layer,
                      KVCache* cache) {
  const float eps = float(cfg_.rms_norm_eps);
  const int64_t D = cfg_.head_dim;
  const bool ragged = cache && cache->ragged();
  const int64_t pos = cache && !ragged ? cache->length() : 0;
  // Where the layer's products are llama.cpp's own, its attention, RoPE and SwiGLU take
  // llama.cpp's float order too, so that the activations rounded to 8 bits are llama.cpp's.
  const int lanes = L.q_proj.weight ? llama_cpp_order_lanes(g, *L.q_proj.weight) : 0;
  const bool llama_cpp_rope = lanes && rope_llama_cpp_supports(cfg_.rope);
  auto rotate = [&](const Var& t, int64_t p) {
    return llama_cpp_rope ? rope_llama_cpp(g, t, cfg_.rope, p)
                          : qpeft::rope(g, t, rope_table((cache ? cache->max_length() : 0) + T), p);
  };
  auto attend = [&](const Var& q, const Var& k, const Var& v) {
    return lanes ? causal_attention_llama_cpp(g, q, k, v, lanes, gguf_permutes_qk(cfg_)) : causal_attention(g, q, k, v);
  };
  // x: [B, T, hidden]
  Var h = rms_norm(g, x, L.input_norm, eps);
  Var q = reshape(g, L.q_proj.forward(g, h), {B, T, cfg_.num_heads, D});
  Var k = reshape(g, L.k_proj.forward(g, h), {B, T, cfg_.num_kv_heads, D});
  Var v = reshape(g, L.v_proj.forward(g, h), {B, T, cfg_.num_kv_heads, D});
  Var a;
  if (ragged) {
    // Rows at different positions (batched generation): each row's RoPE, cache and attention
    // on its own; the linear layers around stay batched.
    Tensor out = Tensor::empty({B, T, cfg_.num_heads * D});
    const int64_t per_row = T * cfg_.num_heads * D;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t p = cache->length(b);
      Var qb = rotate(Var(q.value().rows(b, b + 1)), p);
      Var kb = rotate(Var(k.value().rows(b, b + 1)), p);
      Tensor k_all, v_all;  // [1, p + T, Hkv, D]
      cache->append_row(layer, b, kb.value(), v.value().rows(b, b + 1), &k_all, &v_all);
      Var ab = attend(qb, Var(k_all), Var(v_all));
      std::memcpy(out.f32() + b * per_row, ab.value().f32(), size_t(per_row) * 4);
    }
    a = Var(out);
  } else {
    q = rotate(q, pos);
    k = rotate(k, pos);
    if (cache) {
      // k, v: [B, pos + T, Hkv, D]; query t sees keys 0 .. pos + t.
      Tensor k_all, v_all;
      cache->append(layer, k.value(), v.value(), &k_all, &v_all);
      k = Var(k_all);
      v = Var(v_all);
    }
    a = reshape(g, attend(q, k, v), {B, T, cfg_.num_heads * D});
  }
  Var x1 = add(g, x, L.o_proj.forward(g, a));
  Var h2 = rms_norm(g, x1, L.post_attention_norm, eps);
  Var gate = L.gate_proj.forward(g, h2), up = L.up_proj.forward(g, h2);
  Var m = lanes ? silu_mul_llama_cpp(g, gate, up, lanes) : silu_mul(g, gate, up);
  return add(g, x1, L.down_proj.forward(g, m));
}

Var LlamaModel::hidden_states(Graph& g, const std::vector<int32_t>& ids, int64_t B, int64_t T, KVCache* cache) {
  QP_CHECK(int64_t(ids.size()) == B * T, "[model] {} ids for a batch of {} x {}", ids.size(), B, T);
  if (cache) {
    QP_CHECK(!g.grad_enabled(), "[model] the KV cache is for inference: run it under Graph(false)");
    QP_CHECK(cache->batch() == B && cache->num_layers() == int64_t(layers_.size()),
             "[model] KV cache for {} rows and {} layers used with {} rows and {} layers", cache->batch(),
             cache->num_layers(), B, layers_.size());
    QP_CHECK(cache->max_length() + T <= cache->max_len(),
             "[model] KV cache full: {} + {} positions exceed its {}; create it with a larger max_len",
             cache->max_length(), T, cache->max_len());
  }
  const int64_t total = T + (cache ? cache->max_length() : 0);
  if (cfg_.sliding_window > 0)
    QP_CHECK(total <= cfg_.sliding_window,
             "{}: sequence length {} exceeds sliding_window {}; qpeft does not implement sliding-window attention, "
             "use --seq-len {} or less",
             cfg_.source, total, cfg_.sliding_window, cfg_.sliding_window);
  // The token rows' adapters for mixed-adapter batches: row b·T + t uses sequence b's.
  row_adapters_->rows.clear();
  if (!seq_adapters_.empty()) {
    QP_CHECK(int64_t(seq_adapters_.size()) == B, "[model] sequence adapters for {} rows, but the batch has {}",
             seq_adapters_.size(), B);
    for (int64_t b = 0; b < B; ++b) row_adapters_->rows.insert(row_adapters_->rows.end(), size_t(T), seq_adapters_[b]);
  }
  Var x = reshape(g, embed_trainable_.defined() ? embedding(g, embed_trainable_, ids) : embedding(g, *embed_tokens_, ids),
                  {B, T, cfg_.hidden_size});
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DecoderLayer& L = layers_[i];
    if (grad_checkpoint_ && g.grad_enabled()) {
      x = checkpoint(g, x, [this, &L, B, T](Graph& sg, const Var& xin) { return block(sg, L, xin, B, T); });
    } else {
      x = block(g, L, x, B, T, int64_t(i), cache);
    }
  }
  if (cache) cache->advance(T);
  return reshape(g, rms_norm(g, x, final_norm_, float(cfg_.rms_norm_eps)), {B * T, cfg_.hidden_size});
}

std::vector<int32_t> shift_labels(const std::vector<int32_t>& labels, int64_t B, int64_t T) {
  std::vector<int32_t> t(size_t(B * T), kIgnoreIndex);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i + 1 < T; ++i) t[b * T + i] = labels[b * T + i + 1];
  return t;
}

LossResult LlamaModel::loss(Graph& g, const std::vector<int32_t>& ids, const std::vector<int32_t>& labels, int64_t B,
                            int64_t T) {
  QP_CHECK(labels.size() == ids.size(), "[model] {} labels for {} ids", labels.size(), ids.size());
  Var h = hidden_states(g, ids, B, T);
  if (head_trainable_.defined()) return linear_cross_entropy(g, h, head_trainable_, shift_labels(labels, B, T));
  return linear_cross_entropy(g, h, lm_head_, shift_labels(labels, B, T));
}

Var LlamaModel::label_logprobs(Graph& g, const std::vector<int32_t>& ids, const std::vector<int32_t>& labels,
                               int64_t B, int64_t T) {
  QP_CHECK(labels.size() == ids.size(), "[model] {} labels for {} ids", labels.size(), ids.size());
  Var h = hidden_states(g, ids, B, T);
  if (head_trainable_.defined()) return linear_target_logprobs(g, h, head_trainable_, shift_labels(labels, B, T));
  return linear_target_logprobs(g, h, lm_head_, shift_labels(labels, B, T));
}

Tensor LlamaModel::logits(const std::vector<int32_t>& ids, int64_t B, int64_t T) {
  Graph g(false);
  Var h = hidden_states(g, ids, B, T);
  Tensor out = Tensor::empty({B * T, cfg_.vocab_size});
  linear_forward(h.value().f32(), B * T, *lm_head_, out.f32());
  return out;
}

}  // namespace qpeft
