#include "ops/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/vec_math.h"

namespace qpeft {

namespace {

// Turns a row of logits into exp(logit − max) in place; returns the log-sum-exp. The
// softmax is then row / exp(lse − max) = row / sum.
double row_exp_lse(float* row, int64_t V, double* sum_out) {
  const VecKernels& k = vec_kernels();
  const float m = k.max(row, V);
  const double sum = k.exp_shift_sum(row, V, m);
  if (sum_out) *sum_out = sum;
  return double(m) + std::log(sum);
}

void check_targets(const std::vector<int32_t>& targets, int64_t N, int64_t V) {
  QP_CHECK(int64_t(targets.size()) == N, "[cross_entropy] {} targets for {} rows", targets.size(), N);
  for (size_t i = 0; i < targets.size(); ++i)
    QP_CHECK(targets[i] == kIgnoreIndex || (targets[i] >= 0 && targets[i] < V),
             "[cross_entropy] target {} at row {} is outside the vocabulary of {}", targets[i], i, V);
}

int64_t chunk_rows(int64_t V, int64_t max_chunk_bytes) {
  return std::max<int64_t>(16, max_chunk_bytes / std::max<int64_t>(1, V * 4));
}

}  // namespace

namespace {

// head_var, when defined, is the trainable f32 tensor that `head` views: its gradient
// dW[V, d] = Σ_chunks dlogitsᵀ h_chunk is formed chunk by chunk during the forward too.
LossResult linear_cross_entropy_impl(Graph& g, const Var& h, const std::shared_ptr<const FrozenWeight>& head,
                                     const Var* head_var, const std::vector<int32_t>& targets,
                                     int64_t max_chunk_bytes) {
  const Tensor& hv = h.value();
  const int64_t V = head->rows(), d = head->cols();
  QP_CHECK(hv.ndim() == 2 && hv.dim(1) == d, "[linear_cross_entropy] hidden {} does not match head {}",
           hv.describe(), head->describe());
  const int64_t N = hv.dim(0);
  check_targets(targets, N, V);
  int64_t count = 0;
  for (int32_t t : targets) count += t != kIgnoreIndex;
  const bool head_rg = head_var && g.needs_grad({head_var}) && count > 0;
  const bool rg = (g.needs_grad({&h}) || head_rg) && count > 0;
  const int64_t rows = chunk_rows(V, max_chunk_bytes);
  const float inv_count = count ? 1.0f / float(count) : 0.0f;

  std::vector<double> nll(size_t(N), 0.0);
  Tensor dh = rg ? Tensor::empty({N, d}) : Tensor();
  Tensor dw = head_rg ? Tensor::zeros({V, d}) : Tensor();
  Tensor logits = Tensor::empty({std::min(rows, std::max<int64_t>(N, 1)), V});
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t r1 = std::min(N, r0 + rows), n = r1 - r0;
    float* lg = logits.f32();
    linear_forward(hv.f32() + r0 * d, n, *head, lg);
    pool().parallel_for(n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int32_t t = targets[r0 + i];
        float* row = lg + i * V;
        if (t == kIgnoreIndex) {
          if (rg) std::fill(row, row + V, 0.0f);
          continue;
        }
        const float target_logit = row[t];
        double sum;
        const double lse = row_exp_lse(row, V, &sum);
        nll[r0 + i] = lse - double(target_logit);
        if (rg) {
          // d nll / d logits = softmax − onehot, averaged over the counted targets
          vec_kernels().scale(row, V, float(double(inv_count) / sum));
          row[t] -= inv_count;
        }
      }
    });
    if (rg) linear_input_grad(lg, n, *head, dh.f32() + r0 * d, false);
    if (head_rg) {
      // dW[V, d] += dlogitsᵀ[V, n] h[n, d]; threads split the columns of dW (fixed sum order).
      const float* hp = hv.f32() + r0 * d;
      float* dwp = dw.f32();
      pool().parallel_for(d, [&](int64_t k0, int64_t k1) {
        sgemm(true, false, V, k1 - k0, n, 1.0f, lg, V, hp + k0, d, 1.0f, dwp + k0, d);
      });
    }
  }
  double sum = 0;
  for (double x : nll) sum += x;  // fixed order: same bits for any thread count
  LossResult res;
  res.count = count;
  res.sum = sum;
  Tensor loss = Tensor::full({1}, count ? float(sum / double(count)) : 0.0f);
  res.loss = g.make_output(loss, rg);
  if (rg) {
    Var out = res.loss;
    Var hw = head_rg ? *head_var : Var();
    g.record([h, out, dh, hw, dw] {
      if (!out.has_grad()) return;
      const float s = out.grad().f32()[0];
      if (h.requires_grad()) {
        float* dx = h.grad_buffer();
        const float* src = dh.f32();
        for (int64_t i = 0; i < dh.numel(); ++i) dx[i] += s * src[i];
      }
      if (hw.defined()) {
        float* dst = hw.grad_buffer();
        const float* src = dw.f32();
        for (int64_t i = 0; i < dw.numel(); ++i) dst[i] += s * src[i];
      }
    });
  }
  return res;
}

}  // namespace

LossResult linear_cross_entropy(Graph& g, const Var& h, const std::shared_ptr<const FrozenWeight>& head,
                                const std::vector<int32_t>& targets, int64_t max_chunk_bytes) {
  return linear_cross_entropy_impl(g, h, head, nullptr, targets, max_chunk_bytes);
}

LossResult linear_cross_entropy(Graph& g, const Var& h, const Var& head, const std::vector<int32_t>& targets,
                                int64_t max_chunk_bytes) {
  QP_CHECK(head.value().dtype() == DType::F32, "[linear_cross_entropy] trainable head '{}' must be f32", head.name());
  auto view = std::make_shared<DenseWeight>(head.value(), head.name());
  return linear_cross_entropy_impl(g, h, view, &head, targets, max_chunk_bytes);
}

LossResult cross_entropy(Graph& g, const Var& logits, const std::vector<int32_t>& targets) {
  const Tensor& lv = logits.value();
  QP_CHECK(lv.ndim() == 2, "[cross_entropy] logits must be [N, V], got {}", lv.describe());
  const int64_t N = lv.dim(0), V = lv.dim(1);
  check_targets(targets, N, V);
  LossResult res;
  std::vector<double> lse(size_t(N), 0.0);
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] == kIgnoreIndex) continue;
    std::vector<float> row(lv.f32() + i * V, lv.f32() + (i + 1) * V);
    lse[i] = row_exp_lse(row.data(), V, nullptr);
    res.sum += lse[i] - double(lv.f32()[i * V + targets[i]]);
    res.count++;
  }
  const bool rg = g.needs_grad({&logits}) && res.count > 0;
  res.loss = g.make_output(Tensor::full({1}, res.count ? float(res.sum / double(res.count)) : 0.0f), rg);
  if (rg) {
    Var out = res.loss;
    const int64_t count = res.count;
    g.record([logits, out, targets, lse, N, V, count] {
      if (!out.has_grad()) return;
      const float s = out.grad().f32()[0] / float(count);
      float* dl = logits.grad_buffer();
      const float* lp = logits.value().f32();
      for (int64_t i = 0; i < N; ++i) {
        if (targets[i] == kIgnoreIndex) continue;
        for (int64_t j = 0; j < V; ++j) dl[i * V + j] += s * float(std::exp(double(lp[i * V + j]) - lse[i]));
        dl[i * V + targets[i]] -= s;
      }
    });
  }
  return res;
}

std::vector<float> target_logprobs(const Tensor& h, const FrozenWeight& head, const std::vector<int32_t>& targets,
                                   int64_t max_chunk_bytes) {
  const int64_t V = head.rows(), d = head.cols(), N = h.dim(0);
  QP_CHECK(h.ndim() == 2 && h.dim(1) == d, "[target_logprobs] hidden {} does not match head {}", h.describe(),
           head.describe());
  check_targets(targets, N, V);
  const int64_t rows = chunk_rows(V, max_chunk_bytes);
  std::vector<float> out(size_t(N), 0.0f);
  Tensor logits = Tensor::empty({std::min(rows, std::max<int64_t>(N, 1)), V});
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t r1 = std::min(N, r0 + rows), n = r1 - r0;
    linear_forward(h.f32() + r0 * d, n, head, logits.f32());
    pool().parallel_for(n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int32_t t = targets[r0 + i];
        if (t == kIgnoreIndex) continue;
        float* row = logits.f32() + i * V;
        const float target_logit = row[t];
        out[r0 + i] = float(double(target_logit) - row_exp_lse(row, V, nullptr));
      }
    });
  }
  return out;
}

}  // namespace qpeft
