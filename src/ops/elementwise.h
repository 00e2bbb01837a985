// Element-wise ops with their backward rules.
#pragma once
#include "ops/autograd.h"

namespace qpeft {

// a + b (same shape).
Var add(Graph& g, const Var& a, const Var& b);
// s · x.
Var scale(Graph& g, const Var& x, float s);
// x[..., n] + bias[n].
Var add_bias(Graph& g, const Var& x, const Var& bias);
// silu(gate) ⊙ up, the SwiGLU core of the Llama MLP (same shapes).
Var silu_mul(Graph& g, const Var& gate, const Var& up);
// x[..., n] ⊙ v (n values, e.g. [n], [n, 1] or [1, n]): (IA)³'s scaling of the last dimension.
Var mul_lastdim(Graph& g, const Var& x, const Var& v);
// Inverted dropout: zero with probability p, scale the rest by 1/(1-p). Identity unless
// g.training() and p > 0. The mask comes from (graph seed, op stream, element index), so it
// does not depend on the thread count.
Var dropout(Graph& g, const Var& x, float p);

}  // namespace qpeft

namespace qpeft {
// The same values viewed with another shape (numel must match); zero-copy.
Var reshape(Graph& g, const Var& x, const Shape& shape);
// The parts' values one after another (each read flat, f32) as one [Σ numel] vector; each
// part's gradient is its slice of the output's.
Var concat(Graph& g, const std::vector<Var>& parts);
}  // namespace qpeft
