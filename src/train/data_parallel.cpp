#include "train/data_parallel.h"

#include <algorithm>
#include <cstring>

#include "core/distributed.h"
#include "core/error.h"

namespace qpeft {

RowShare row_share(int64_t rows, int rank, int ranks) {
  const int64_t base = rows / ranks, extra = rows % ranks;
  RowShare s;
  s.begin = rank * base + std::min<int64_t>(rank, extra);
  s.end = s.begin + base + (rank < extra ? 1 : 0);
  return s;
}

Batch slice_rows(const Batch& b, int64_t begin, int64_t end, int64_t T) {
  QP_CHECK(begin >= 0 && begin <= end && end <= b.B, "[slice_rows] rows [{}, {}) of a batch of {}", begin, end, b.B);
  if (T < 0) T = b.T;
  QP_CHECK(T >= 1 && T <= b.T, "[slice_rows] {} positions of rows of {}", T, b.T);
  Batch out;
  out.B = end - begin;
  out.T = T;
  for (int64_t r = begin; r < end; ++r) {
    out.ids.insert(out.ids.end(), b.ids.begin() + r * b.T, b.ids.begin() + r * b.T + T);
    out.labels.insert(out.labels.end(), b.labels.begin() + r * b.T, b.labels.begin() + r * b.T + T);
  }
  return out;
}

int64_t counted_targets(const Batch& b, int64_t begin, int64_t end) {
  int64_t n = 0;
  for (int64_t r = begin; r < end; ++r)
    for (int64_t t = 0; t + 1 < b.T; ++t) n += b.labels[size_t(r * b.T + t + 1)] != kIgnoreIndex;
  return n;
}

ChoiceBatch slice_examples(const ChoiceBatch& cb, int64_t e0, int64_t e1, int64_t* first_row) {
  // Rows are grouped by example, in example order (ChoiceBatcher::get).
  int64_t r0 = 0;
  while (r0 < cb.rows.B && cb.row_example[size_t(r0)] < e0) ++r0;
  int64_t r1 = r0;
  while (r1 < cb.rows.B && cb.row_example[size_t(r1)] < e1) ++r1;
  *first_row = r0;
  ChoiceBatch out;
  out.rows = slice_rows(cb.rows, r0, r1);
  out.rows.truncated = 0;
  for (int64_t r = r0; r < r1; ++r) {
    out.row_example.push_back(cb.row_example[size_t(r)] - e0);
    out.row_correct.push_back(cb.row_correct[size_t(r)]);
  }
  return out;
}

ChoiceShareCounts choice_counts(const ChoiceBatch& cb) {
  ChoiceShareCounts c;
  for (int64_t r = 0; r < cb.rows.B; ++r) {
    const int64_t n = counted_targets(cb.rows, r, r + 1);
    (cb.row_correct[size_t(r)] ? c.right_tokens : c.wrong_tokens) += n;
    c.examples = std::max(c.examples, cb.row_example[size_t(r)] + 1);
  }
  return c;
}

ChoiceLossWeights share_weights(const ChoiceLossWeights& w, const ChoiceShareCounts& share,
                                const ChoiceShareCounts& whole) {
  auto frac = [](int64_t part, int64_t all) { return all > 0 ? double(part) / double(all) : 0.0; };
  return {w.lm * frac(share.right_tokens, whole.right_tokens), w.ul * frac(share.wrong_tokens, whole.wrong_tokens),
          w.ln * frac(share.examples, whole.examples)};
}

void allreduce_gradients(const NamedParams& params, std::vector<float>* flat) {
  if (dist::size() == 1) return;
  // [every gradient, zeros where absent | one presence flag per parameter]
  int64_t total = 0;
  for (const auto& [name, p] : params) total += p.value().numel();
  flat->assign(size_t(total) + params.size(), 0.0f);
  float* at = flat->data();
  float* flags = flat->data() + total;
  for (size_t i = 0; i < params.size(); ++i) {
    const Var& p = params[i].second;
    const int64_t n = p.value().numel();
    if (p.has_grad()) {
      std::memcpy(at, p.grad().f32(), size_t(n) * sizeof(float));
      flags[i] = 1.0f;
    }
    at += n;
  }
  dist::allreduce_sum(flat->data(), int64_t(flat->size()));
  at = flat->data();
  for (size_t i = 0; i < params.size(); ++i) {
    const Var& p = params[i].second;
    const int64_t n = p.value().numel();
    if (flags[i] > 0) {
      std::memcpy(p.grad_buffer(), at, size_t(n) * sizeof(float));
    } else {
      p.zero_grad();
    }
    at += n;
  }
}

Fingerprint& Fingerprint::add(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h_ ^= p[i];
    h_ *= 1099511628211ull;
  }
  return *this;
}

void check_same_on_every_rank(uint64_t fingerprint, const std::string& what) {
  const std::vector<uint64_t> all = dist::allgather(fingerprint);
  for (size_t r = 1; r < all.size(); ++r)
    QP_CHECK(all[r] == all[0],
             "rank {}'s {} differs from rank 0's: every rank of a data-parallel job must be started with the same "
             "flags and files (mpirun -np N qpeft train ...)",
             r, what);
}

}  // namespace qpeft
