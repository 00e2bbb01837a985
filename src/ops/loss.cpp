#include "ops/loss.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/profile.h"
#include "core/scratch.h"
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

// Rows N of hidden states h [N, d] checked against a head [V, d] and the N targets.
int64_t check_head_input(const char* op, const Tensor& h, const FrozenWeight& head,
                         const std::vector<int32_t>& targets) {
  QP_CHECK(h.ndim() == 2 && h.dim(1) == head.cols(), "[{}] hidden {} does not match head {}", op, h.describe(),
           head.describe());
  check_targets(targets, h.dim(0), head.rows());
  return h.dim(0);
}

struct LogitsScratch;  // thread_scratch tag: one chunk of logits [rows, V]

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
  const int64_t N = check_head_input("linear_cross_entropy", hv, *head, targets);
  int64_t count = 0;
  for (int32_t t : targets) count += t != kIgnoreIndex;
  const bool head_rg = head_var && g.needs_grad({head_var}) && count > 0;
  const bool rg = (g.needs_grad({&h}) || head_rg) && count > 0;
  const int64_t rows = chunk_rows(V, max_chunk_bytes);
  const float inv_count = count ? 1.0f / float(count) : 0.0f;

  std::vector<double> nll(size_t(N), 0.0);
  Tensor dh = rg ? Tensor::empty({N, d}) : Tensor();
  Tensor dw = head_rg ? Tensor::zeros({V, d}) : Tensor();
  float* lg = thread_scratch<LogitsScratch>(size_t(std::min(rows, std::max<int64_t>(N, 1)) * V));
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t r1 = std::min(N, r0 + rows), n = r1 - r0;
    {
      profile::Scope prof("lm head fwd", n, V, d, 2.0 * double(n) * double(V) * double(d));
      linear_forward(hv.f32() + r0 * d, n, *head, lg);
    }
    profile::Scope prof_rows("cross-entropy rows");
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
    if (rg) {
      profile::Scope prof("lm head dX", n, V, d, 2.0 * double(n) * double(V) * double(d));
      linear_input_grad(lg, n, *head, dh.f32() + r0 * d, false);
    }
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
  res.nll = std::move(nll);
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

namespace {

Var linear_target_logprobs_impl(Graph& g, const Var& h, const std::shared_ptr<const FrozenWeight>& head,
                                const Var* head_var, const std::vector<int32_t>& targets) {
  profile::Scope prof("lm head log-softmax fwd");
  const Tensor& hv = h.value();
  const int64_t V = head->rows(), d = head->cols();
  const int64_t N = check_head_input("linear_target_logprobs", hv, *head, targets);
  std::vector<int64_t> rows;  // the rows with a target, in order
  for (int64_t i = 0; i < N; ++i)
    if (targets[size_t(i)] != kIgnoreIndex) rows.push_back(i);
  const int64_t M = int64_t(rows.size());
  const bool head_rg = head_var && g.needs_grad({head_var}) && M > 0;
  const bool rg = (g.needs_grad({&h}) || head_rg) && M > 0;

  Tensor hs = Tensor::empty({std::max<int64_t>(M, 1), d});  // gathered rows [M, d]
  for (int64_t m = 0; m < M; ++m) std::copy_n(hv.f32() + rows[size_t(m)] * d, d, hs.f32() + m * d);
  Tensor probs = Tensor::empty({std::max<int64_t>(M, 1), V});  // logits, then softmax [M, V]
  if (M > 0) {
    profile::Scope prof_head("lm head fwd", M, V, d, 2.0 * double(M) * double(V) * double(d));
    linear_forward(hs.f32(), M, *head, probs.f32());
  }
  Tensor out = Tensor::zeros({N});
  pool().parallel_for(M, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      float* row = probs.f32() + m * V;
      const int32_t t = targets[size_t(rows[size_t(m)])];
      const float target_logit = row[t];
      double sum;
      const double lse = row_exp_lse(row, V, &sum);
      out.f32()[rows[size_t(m)]] = float(double(target_logit) - lse);
      vec_kernels().scale(row, V, float(1.0 / sum));
    }
  });
  Var res = g.make_output(out, rg);
  if (rg) {
    Var hw = head_rg ? *head_var : Var();
    g.record([h, res, hw, head, hs, probs, rows, targets, V, d, M] {
      profile::Scope prof("lm head log-softmax bwd");
      if (!res.has_grad()) return;
      const float* dlp = res.grad().f32();
      // dlogits_m = dlp_m · (onehot(t_m) − softmax_m)
      Tensor dl = Tensor::empty({M, V});
      for (int64_t m = 0; m < M; ++m) {
        const float s = dlp[rows[size_t(m)]];
        const float* p = probs.f32() + m * V;
        float* o = dl.f32() + m * V;
        for (int64_t j = 0; j < V; ++j) o[j] = -s * p[j];
        o[targets[size_t(rows[size_t(m)])]] += s;
      }
      if (h.requires_grad()) {
        Tensor dhs = Tensor::empty({M, d});
        {
          profile::Scope prof_head("lm head dX", M, V, d, 2.0 * double(M) * double(V) * double(d));
          linear_input_grad(dl.f32(), M, *head, dhs.f32(), false);
        }
        float* dx = h.grad_buffer();
        for (int64_t m = 0; m < M; ++m) {
          float* dst = dx + rows[size_t(m)] * d;
          const float* src = dhs.f32() + m * d;
          for (int64_t k = 0; k < d; ++k) dst[k] += src[k];
        }
      }
      if (hw.defined()) {
        // dW[V, d] += dlᵀ[V, M] hs[M, d]; threads split the columns of dW (fixed sum order).
        float* dwp = hw.grad_buffer();
        pool().parallel_for(d, [&](int64_t k0, int64_t k1) {
          sgemm(true, false, V, k1 - k0, M, 1.0f, dl.f32(), V, hs.f32() + k0, d, 1.0f, dwp + k0, d);
        });
      }
    });
  }
  return res;
}

}  // namespace

Var linear_target_logprobs(Graph& g, const Var& h, const std::shared_ptr<const FrozenWeight>& head,
                           const std::vector<int32_t>& targets) {
  return linear_target_logprobs_impl(g, h, head, nullptr, targets);
}

Var linear_target_logprobs(Graph& g, const Var& h, const Var& head, const std::vector<int32_t>& targets) {
  QP_CHECK(head.value().dtype() == DType::F32, "[linear_target_logprobs] trainable head '{}' must be f32",
           head.name());
  auto view = std::make_shared<DenseWeight>(head.value(), head.name());
  return linear_target_logprobs_impl(g, h, view, &head, targets);
}

ChoiceLossResult choice_losses(Graph& g, const Var& logprobs, const ChoiceTokens& layout,
                               const ChoiceLossWeights& w) {
  profile::Scope prof("choice_losses fwd");
  const Tensor& lv = logprobs.value();
  const int64_t N = lv.numel(), C = int64_t(layout.choice_example.size());
  QP_CHECK(lv.ndim() == 1 && N == int64_t(layout.token_choice.size()),
           "[choice_losses] {} log-probabilities for {} token entries", lv.describe(), layout.token_choice.size());
  QP_CHECK(int64_t(layout.choice_correct.size()) == C, "[choice_losses] {} correctness flags for {} choices",
           layout.choice_correct.size(), C);
  int64_t E = 0;
  for (int64_t e : layout.choice_example) {
    QP_CHECK(e >= 0, "[choice_losses] negative example index {}", e);
    E = std::max(E, e + 1);
  }
  std::vector<int64_t> answer(size_t(E), -1), n_choices(size_t(E), 0);
  for (int64_t c = 0; c < C; ++c) {
    const size_t e = size_t(layout.choice_example[size_t(c)]);
    n_choices[e]++;
    if (layout.choice_correct[size_t(c)]) {
      QP_CHECK(answer[e] < 0, "[choice_losses] example {} has more than one right choice", e);
      answer[e] = c;
    }
  }
  for (int64_t e = 0; e < E; ++e)
    QP_CHECK(answer[size_t(e)] >= 0 && n_choices[size_t(e)] >= 2,
             "[choice_losses] example {} needs two or more choices, one of them right", e);

  const float* lp = lv.f32();
  std::vector<double> sum(size_t(C), 0.0), count(size_t(C), 0.0);
  double lm_sum = 0, ul_sum = 0;
  int64_t n_right = 0, n_wrong = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t c = layout.token_choice[size_t(i)];
    if (c < 0) continue;
    QP_CHECK(c < C, "[choice_losses] token {} names choice {} of {}", i, c, C);
    sum[size_t(c)] += lp[i];
    count[size_t(c)] += 1;
    if (layout.choice_correct[size_t(c)]) {
      lm_sum += lp[i];
      n_right++;
    } else {
      ul_sum += std::log(1.0 - std::exp(double(lp[i])) + 0.01);
      n_wrong++;
    }
  }
  for (int64_t c = 0; c < C; ++c)
    QP_CHECK(count[size_t(c)] > 0, "[choice_losses] choice {} has no tokens", c);

  // β_c and its softmax within each example.
  std::vector<double> beta(size_t(C), 0.0), soft(size_t(C), 0.0), lse(size_t(E), -INFINITY);
  for (int64_t c = 0; c < C; ++c) beta[size_t(c)] = sum[size_t(c)] / count[size_t(c)];
  std::vector<double> best_wrong(size_t(E), -INFINITY);
  for (int64_t c = 0; c < C; ++c) {
    const size_t e = size_t(layout.choice_example[size_t(c)]);
    const double m = std::max(lse[e], beta[size_t(c)]);
    lse[e] = m + std::log(std::exp(lse[e] - m) + std::exp(beta[size_t(c)] - m));
    if (!layout.choice_correct[size_t(c)]) best_wrong[e] = std::max(best_wrong[e], beta[size_t(c)]);
  }
  ChoiceLossResult res;
  res.examples = E;
  double ln_sum = 0;
  for (int64_t e = 0; e < E; ++e) {
    ln_sum += lse[size_t(e)] - beta[size_t(answer[size_t(e)])];
    res.right += beta[size_t(answer[size_t(e)])] > best_wrong[size_t(e)];
  }
  for (int64_t c = 0; c < C; ++c)
    soft[size_t(c)] = std::exp(beta[size_t(c)] - lse[size_t(layout.choice_example[size_t(c)])]);
  res.lm = n_right ? -lm_sum / double(n_right) : 0.0;
  res.ul = n_wrong ? -ul_sum / double(n_wrong) : 0.0;
  res.ln = E ? ln_sum / double(E) : 0.0;
  const double total = w.lm * res.lm + w.ul * res.ul + w.ln * res.ln;

  const bool rg = g.needs_grad({&logprobs}) && E > 0;
  res.loss = g.make_output(Tensor::full({1}, float(total)), rg);
  if (rg) {
    // d loss / d lp_i, a constant per token given the forward values.
    std::vector<float> coef(size_t(N), 0.0f);
    for (int64_t i = 0; i < N; ++i) {
      const int64_t c = layout.token_choice[size_t(i)];
      if (c < 0) continue;
      const bool right = layout.choice_correct[size_t(c)];
      double dc = w.ln / double(E) * (soft[size_t(c)] - (right ? 1.0 : 0.0)) / count[size_t(c)];
      if (right) {
        dc -= w.lm / double(n_right);
      } else {
        const double p = std::exp(double(lp[i]));
        dc += w.ul / double(n_wrong) * p / (1.0 - p + 0.01);
      }
      coef[size_t(i)] = float(dc);
    }
    Var out = res.loss;
    g.record([logprobs, out, coef] {
      profile::Scope prof("choice_losses bwd");
      if (!out.has_grad()) return;
      const float s = out.grad().f32()[0];
      float* dst = logprobs.grad_buffer();
      for (size_t i = 0; i < coef.size(); ++i) dst[i] += s * coef[i];
    });
  }
  return res;
}

std::vector<float> target_logprobs(const Tensor& h, const FrozenWeight& head, const std::vector<int32_t>& targets,
                                   int64_t max_chunk_bytes) {
  const int64_t V = head.rows(), d = head.cols(), N = check_head_input("target_logprobs", h, head, targets);
  const int64_t rows = chunk_rows(V, max_chunk_bytes);
  std::vector<float> out(size_t(N), 0.0f);
  float* logits = thread_scratch<LogitsScratch>(size_t(std::min(rows, std::max<int64_t>(N, 1)) * V));
  for (int64_t r0 = 0; r0 < N; r0 += rows) {
    const int64_t r1 = std::min(N, r0 + rows), n = r1 - r0;
    linear_forward(h.f32() + r0 * d, n, head, logits);
    pool().parallel_for(n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int32_t t = targets[r0 + i];
        if (t == kIgnoreIndex) continue;
        float* row = logits + i * V;
        const float target_logit = row[t];
        out[r0 + i] = float(double(target_logit) - row_exp_lse(row, V, nullptr));
      }
    });
  }
  return out;
}

}  // namespace qpeft
