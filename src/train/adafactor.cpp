#include "train/adafactor.h"
#include "core/profile.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/thread_pool.h"

namespace qpeft {

namespace {

// Unfactored parameters: partial sums of update² over fixed blocks, so the RMS (and so every
// bit of the step) does not depend on the thread count.
constexpr int64_t kRmsBlock = 4096;

int64_t* i64(const Tensor& t) { return static_cast<int64_t*>(t.raw()); }

// The scalars of one step, rounded to float as ATen rounds a Python scalar for an f32 tensor.
struct StepScalars {
  float eps1, beta2t, one_minus_beta2t, lr, decay;  // decay = -wd·lr (used only when wd != 0)
  bool weight_decay;
  StepScalars(const AdafactorConfig& c, double lr_, double beta2t_)
      : eps1(float(c.eps1)),
        beta2t(float(beta2t_)),
        one_minus_beta2t(float(1.0 - beta2t_)),
        lr(float(lr_)),
        decay(float(-c.weight_decay * lr_)),
        weight_decay(c.weight_decay != 0) {}
};

// update /= denom; update *= lr; p += decay·p (if wd); p -= update
inline void apply_update(float& w, float upd, float denom, const StepScalars& s) {
  upd = upd / denom;
  upd = upd * s.lr;
  if (s.weight_decay) w = w + s.decay * w;
  w = w - upd;
}

// max(1, RMS(update) / clip_threshold) from Σ update² over n elements:
// RMS = ||update||_2 / n ** 0.5 (a 0-d f32 tensor divided by a Python float).
float clip_denominator(double sumsq, int64_t n, double clip_threshold) {
  const float norm = float(std::sqrt(sumsq));
  const float rms = norm / float(std::sqrt(double(n)));
  return std::max(rms / float(clip_threshold), 1.0f);  // NaN stays NaN, as clamp_ keeps it
}

}  // namespace

Adafactor::Adafactor(NamedParams params, AdafactorConfig cfg) : params_(std::move(params)), cfg_(cfg) {
  QP_CHECK(cfg.eps1 >= 0 && cfg.clip_threshold > 0 && cfg.decay_rate <= 0 && cfg.weight_decay >= 0,
           "[adafactor] eps1 must be >= 0, clip_threshold > 0, decay_rate <= 0 and weight decay >= 0 (got eps1 {}, "
           "clip_threshold {}, decay_rate {}, weight decay {})",
           cfg.eps1, cfg.clip_threshold, cfg.decay_rate, cfg.weight_decay);
  for (auto& [name, p] : params_) {
    QP_CHECK(p.requires_grad() && p.value().dtype() == DType::F32,
             "[adafactor] parameter '{}' is not a trainable f32 tensor", name);
    const Shape& shape = p.shape();
    State s;
    s.factored = shape.size() >= 2;  // transformers' _get_options: len(shape) >= 2
    if (s.factored) {
      s.rows = shape[shape.size() - 2];
      s.cols = shape.back();
      for (size_t d = 0; d + 2 < shape.size(); ++d) s.batch *= shape[d];
      Shape row_shape(shape.begin(), shape.end() - 1);             // grad_shape[:-1]
      Shape col_shape(shape.begin(), shape.end() - 2);             // grad_shape[:-2] + grad_shape[-1:]
      col_shape.push_back(s.cols);
      s.row = Tensor::zeros(row_shape);
      s.col = Tensor::zeros(col_shape);
    } else {
      s.v = Tensor::zeros(shape);
    }
    s.step = Tensor::zeros({}, DType::I64);
    state_.push_back(std::move(s));
  }
}

int64_t Adafactor::param_steps(size_t k) const { return *i64(state_.at(k).step); }

void Adafactor::step(double lr) {
  profile::Scope prof("adafactor step");
  ++steps_;
  for (size_t k = 0; k < params_.size(); ++k) {
    Var& p = params_[k].second;
    if (!p.has_grad()) continue;  // transformers: `if p.grad is None: continue` (no step either)
    State& s = state_[k];
    const int64_t t = ++*i64(s.step);
    const double beta2t = 1.0 - std::pow(double(t), cfg_.decay_rate);  // math.pow(step, decay_rate)
    float* w = p.value().f32();
    const float* g = p.grad().f32();
    const int64_t n = p.value().numel();
    if (n == 0) continue;
    if (s.factored) {
      step_factored(s, w, g, lr, beta2t);
    } else {
      step_unfactored(s, w, g, n, lr, beta2t);
    }
  }
}

// w, g: [B, R, C]; row: [B, R]; col: [B, C].
void Adafactor::step_factored(State& s, float* w, const float* g, double lr, double beta2t) {
  const StepScalars sc(cfg_, lr, beta2t);
  const int64_t B = s.batch, R = s.rows, C = s.cols;
  float* row = s.row.f32();
  float* col = s.col.f32();
  // row = row·beta2t + (1 - beta2t)·mean(u, dim=-1), u = g² + eps1: [B·R]
  pool().parallel_for(B * R, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* gi = g + i * C;
      double sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += double(gi[c] * gi[c] + sc.eps1);
      const float mean = float(sum) / float(C);
      row[i] = row[i] * sc.beta2t;
      row[i] = row[i] + sc.one_minus_beta2t * mean;
    }
  });
  // col = col·beta2t + (1 - beta2t)·mean(u, dim=-2): [B·C]; each column summed over r in order.
  pool().parallel_for(B * C, [&](int64_t j0, int64_t j1) {
    std::vector<double> acc;
    for (int64_t j = j0; j < j1;) {
      const int64_t b = j / C, c0 = j % C, c1 = std::min(C, c0 + (j1 - j));
      acc.assign(size_t(c1 - c0), 0.0);
      for (int64_t r = 0; r < R; ++r) {
        const float* gr = g + (b * R + r) * C;
        for (int64_t c = c0; c < c1; ++c) acc[size_t(c - c0)] += double(gr[c] * gr[c] + sc.eps1);
      }
      for (int64_t c = c0; c < c1; ++c) {
        float& x = col[b * C + c];
        const float mean = float(acc[size_t(c - c0)]) / float(R);
        x = x * sc.beta2t;
        x = x + sc.one_minus_beta2t * mean;
      }
      j += c1 - c0;
    }
  });
  // _approx_sq_grad: r = rsqrt(row / mean(row, dim=-1)): [B·R];  c = rsqrt(col): [B·C]
  std::vector<float> rfac(static_cast<size_t>(B * R)), cfac(static_cast<size_t>(B * C));
  for (int64_t b = 0; b < B; ++b) {
    double sum = 0;
    for (int64_t r = 0; r < R; ++r) sum += row[b * R + r];
    const float mean = float(sum) / float(R);
    for (int64_t r = 0; r < R; ++r) rfac[size_t(b * R + r)] = 1.0f / std::sqrt(row[b * R + r] / mean);
  }
  for (int64_t j = 0; j < B * C; ++j) cfac[size_t(j)] = 1.0f / std::sqrt(col[j]);
  // update = (r ⊗ c) · g: [B, R, C]. First Σ update² (per row, summed in row order), then apply.
  std::vector<double> row_sumsq(static_cast<size_t>(B * R));
  pool().parallel_for(B * R, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float ri = rfac[size_t(i)];
      const float* ci = cfac.data() + (i / R) * C;
      const float* gi = g + i * C;
      double sum = 0;
      for (int64_t c = 0; c < C; ++c) {
        const float u = (ri * ci[c]) * gi[c];
        sum += double(u) * u;
      }
      row_sumsq[size_t(i)] = sum;
    }
  });
  double sumsq = 0;
  for (double x : row_sumsq) sumsq += x;
  const float denom = clip_denominator(sumsq, B * R * C, cfg_.clip_threshold);
  pool().parallel_for(B * R, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float ri = rfac[size_t(i)];
      const float* ci = cfac.data() + (i / R) * C;
      const float* gi = g + i * C;
      float* wi = w + i * C;
      for (int64_t c = 0; c < C; ++c) apply_update(wi[c], (ri * ci[c]) * gi[c], denom, sc);
    }
  });
}

// w, g, v: [n]
void Adafactor::step_unfactored(State& s, float* w, const float* g, int64_t n, double lr, double beta2t) {
  const StepScalars sc(cfg_, lr, beta2t);
  float* v = s.v.f32();
  const int64_t nb = (n + kRmsBlock - 1) / kRmsBlock;
  std::vector<double> block_sumsq(static_cast<size_t>(nb));
  // v = v·beta2t + (1 - beta2t)·(g² + eps1);  update = rsqrt(v)·g
  pool().parallel_for(nb, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double sum = 0;
      for (int64_t i = b * kRmsBlock, e = std::min(n, i + kRmsBlock); i < e; ++i) {
        const float u = g[i] * g[i] + sc.eps1;
        v[i] = v[i] * sc.beta2t;
        v[i] = v[i] + sc.one_minus_beta2t * u;
        const float upd = (1.0f / std::sqrt(v[i])) * g[i];
        sum += double(upd) * upd;
      }
      block_sumsq[size_t(b)] = sum;
    }
  });
  double sumsq = 0;
  for (double x : block_sumsq) sumsq += x;
  const float denom = clip_denominator(sumsq, n, cfg_.clip_threshold);
  pool().parallel_for(n, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) apply_update(w[i], (1.0f / std::sqrt(v[i])) * g[i], denom, sc);
  });
}

std::vector<std::pair<std::string, Tensor>> Adafactor::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t k = 0; k < params_.size(); ++k) {
    const std::string& n = params_[k].first;
    const State& s = state_[k];
    if (s.factored) {
      out.emplace_back("exp_avg_sq_row." + n, s.row);
      out.emplace_back("exp_avg_sq_col." + n, s.col);
    } else {
      out.emplace_back("exp_avg_sq." + n, s.v);
    }
    out.emplace_back("step." + n, s.step);
  }
  return out;
}

void Adafactor::load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps) {
  QP_CHECK(steps >= 0, "[adafactor] optimizer step count {} in the checkpoint is negative", steps);
  std::map<std::string, const Tensor*> by_name;
  for (auto& [n, t] : tensors) by_name[n] = &t;
  auto get = [&](const std::string& key, const Tensor& like) -> const Tensor& {
    auto it = by_name.find(key);
    QP_CHECK(it != by_name.end(),
             "[adafactor] optimizer state '{}' is missing from the checkpoint; was it written for other parameters "
             "or by another optimizer (adamw writes exp_avg.*)?",
             key);
    const Tensor& t = *it->second;
    QP_CHECK(t.shape() == like.shape() && t.dtype() == like.dtype(), "[adafactor] optimizer state '{}' is {}, expected {}",
             key, t.describe(), like.describe());
    return t;
  };
  // Check everything before changing anything.
  std::vector<std::pair<const Tensor*, const Tensor*>> copies;  // (src, dst)
  for (size_t k = 0; k < params_.size(); ++k) {
    const std::string& pname = params_[k].first;
    const State& s = state_[k];
    if (s.factored) {
      copies.emplace_back(&get("exp_avg_sq_row." + pname, s.row), &s.row);
      copies.emplace_back(&get("exp_avg_sq_col." + pname, s.col), &s.col);
    } else {
      copies.emplace_back(&get("exp_avg_sq." + pname, s.v), &s.v);
    }
    const Tensor& st = get("step." + pname, s.step);
    const int64_t t = *i64(st);
    QP_CHECK(t >= 0 && t <= steps, "[adafactor] optimizer state 'step.{}' is {}, outside [0, {}] (the checkpoint's steps)",
             pname, t, steps);
    copies.emplace_back(&st, &s.step);
  }
  for (auto [src, dst] : copies) std::memcpy(dst->raw(), src->raw(), dst->nbytes());
  steps_ = steps;
}

size_t Adafactor::state_bytes() const {
  size_t n = 0;
  for (const State& s : state_) n += s.factored ? s.row.nbytes() + s.col.nbytes() : s.v.nbytes();
  return n;
}

}  // namespace qpeft
