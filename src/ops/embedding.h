#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "ops/autograd.h"
#include "ops/linear.h"

namespace qpeft {

// Rows of a frozen table [V, d] (any storage format): out [ids.size(), d]. No gradient.
Var embedding(Graph& g, const FrozenWeight& table, const std::vector<int32_t>& ids);
// Rows of a trainable f32 table [V, d]; backward scatter-adds into the table's gradient.
Var embedding(Graph& g, const Var& table, const std::vector<int32_t>& ids);

}  // namespace qpeft
