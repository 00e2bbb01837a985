#pragma once
#include "ops/autograd.h"

namespace qpeft {

// Fused causal self-attention with grouped-query heads, memory-efficient: forward keeps only
// the log-sum-exp of each score row ([B, Hq, Tq]); backward recomputes the probabilities one
// query tile at a time. No [T, T] matrix outlives a tile.
//   q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D] with Hq % Hkv == 0 and Tk >= Tq.
//   Query t (0-based in q) sees keys 0 .. t + (Tk − Tq)  (so Tk > Tq continues a KV cache).
//   Query head h reads kv head h / (Hq / Hkv), as Hugging Face's repeat_kv.
//   out: [B, Tq, Hq, D] = softmax(q kᵀ / sqrt(D) + causal mask) v.
Var causal_attention(Graph& g, const Var& q, const Var& k, const Var& v);

}  // namespace qpeft
