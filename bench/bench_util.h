// Shared pieces of the training benchmarks: the LoRA set-up they measure, random token
// batches and one timed optimizer step.
#pragma once
#include <chrono>
#include <cstdint>
#include <vector>

#include "core/profile.h"
#include "core/rng.h"
#include "models/llama.h"
#include "peft/lora.h"
#include "train/optimizer.h"

namespace qpeft::bench {

// LoRA r = rank, alpha = 2·rank on every linear layer; returns the adapter parameters.
inline NamedParams attach_lora(LlamaModel& model, int64_t rank) {
  LoraConfig lc;
  lc.r = rank;
  lc.alpha = 2.0 * double(rank);
  lc.target_modules = {"all-linear"};
  inject_lora(model, lc, 1);
  return adapter_params(model);
}

// FLOPs per token of the model's forward pass: 2 · linear parameters (the head included, the
// embedding lookup excluded) plus causal attention's QKᵀ and PV over `seq` positions. A
// training step's forward + input-gradient work is twice this (LoRA's own FLOPs excluded).
inline double forward_flops_per_token(const ModelConfig& cfg, int64_t seq) {
  const double lin = double(cfg.num_parameters() - cfg.vocab_size * cfg.hidden_size * (cfg.tie_word_embeddings ? 0 : 1) -
                            cfg.hidden_size * (2 * cfg.num_layers + 1));
  const double attn = 2.0 * 2.0 * double(cfg.num_layers) * double(seq) / 2.0 * double(cfg.num_heads * cfg.head_dim);
  return 2.0 * lin + attn;
}

inline std::vector<int32_t> random_ids(int64_t n, int64_t vocab) {
  Rng rng(3);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& t : ids) t = int32_t(rng.below(uint64_t(vocab)));
  return ids;
}

// One optimizer step on ids [B, T] (labels = ids); returns {seconds, loss}.
inline std::pair<double, float> timed_step(LlamaModel& model, const NamedParams& params, Optimizer& opt,
                                           const std::vector<int32_t>& ids, int64_t B, int64_t T, int step,
                                           double max_grad_norm, double lr) {
  float loss = 0;
  const auto t = std::chrono::steady_clock::now();
  {
    profile::Scope prof("step (other)");
    Graph g(true, uint64_t(step), true);
    LossResult res = model.loss(g, ids, ids, B, T);
    g.backward(res.loss);
    {
      profile::Scope prof_clip("clip_grad_norm");
      clip_grad_norm(params, max_grad_norm);
    }
    opt.step(lr);
    opt.zero_grad();
    loss = res.loss.value().f32()[0];
  }
  return {std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count(), loss};
}

}  // namespace qpeft::bench
