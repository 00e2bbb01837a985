#include "ops/embedding.h"

#include <cstring>

#include "core/error.h"
#include "core/profile.h"
#include "core/thread_pool.h"

namespace qpeft {

static void check_ids(const std::vector<int32_t>& ids, int64_t vocab, const std::string& what) {
  for (size_t i = 0; i < ids.size(); ++i)
    QP_CHECK(ids[i] >= 0 && ids[i] < vocab,
             "[embedding] token id {} at position {} is outside the vocabulary of {} ({}); the data was tokenized "
             "for another model?",
             ids[i], i, vocab, what);
}

Var embedding(Graph& g, const FrozenWeight& table, const std::vector<int32_t>& ids) {
  profile::Scope prof("embedding fwd");
  const int64_t d = table.cols();
  check_ids(ids, table.rows(), table.describe());
  Tensor y = Tensor::empty({int64_t(ids.size()), d});
  float* yp = y.f32();
  pool().parallel_for(int64_t(ids.size()), [&](int64_t i0, int64_t i1) {
    std::vector<float> scratch(static_cast<size_t>(d));
    for (int64_t i = i0; i < i1; ++i) {
      const float* row = table.decode_rows(ids[i], ids[i] + 1, scratch.data());
      std::memcpy(yp + i * d, row, size_t(d) * 4);
    }
  });
  return Var(y);
}

Var embedding(Graph& g, const Var& table, const std::vector<int32_t>& ids) {
  profile::Scope prof("embedding fwd");
  const Tensor& tv = table.value();
  QP_CHECK(tv.ndim() == 2, "[embedding] table '{}' must be [vocab, dim], got {}", table.name(), tv.describe());
  const int64_t d = tv.dim(1);
  check_ids(ids, tv.dim(0), table.name());
  Tensor y = Tensor::empty({int64_t(ids.size()), d});
  const float* tp = tv.f32();
  float* yp = y.f32();
  for (size_t i = 0; i < ids.size(); ++i) std::memcpy(yp + i * d, tp + int64_t(ids[i]) * d, size_t(d) * 4);
  bool rg = g.needs_grad({&table});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([table, out, ids, d] {
      profile::Scope prof("embedding bwd");
      if (!out.has_grad()) return;
      float* dt = table.grad_buffer();
      const float* dy = out.grad().f32();
      // Sequential scatter-add: repeated ids accumulate in a fixed order.
      for (size_t i = 0; i < ids.size(); ++i)
        for (int64_t j = 0; j < d; ++j) dt[int64_t(ids[i]) * d + j] += dy[i * d + j];
    });
  }
  return out;
}

}  // namespace qpeft
