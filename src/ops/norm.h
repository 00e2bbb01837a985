#pragma once
#include "ops/autograd.h"

namespace qpeft {

// RMSNorm over the last dimension: y = x / sqrt(mean(x²) + eps) ⊙ w.
// x is [..., n], w is [n]. Saves 1/rms per row for backward.
Var rms_norm(Graph& g, const Var& x, const Var& w, float eps);

}  // namespace qpeft
