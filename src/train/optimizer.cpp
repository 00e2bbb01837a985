#include "train/optimizer.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/thread_pool.h"

namespace qpeft {

AdamW::AdamW(NamedParams params, AdamWConfig cfg) : params_(std::move(params)), cfg_(cfg) {
  for (auto& [name, p] : params_) {
    QP_CHECK(p.requires_grad() && p.value().dtype() == DType::F32, "[adamw] parameter '{}' is not a trainable f32 tensor",
             name);
    m_.push_back(Tensor::zeros(p.shape()));
    v_.push_back(Tensor::zeros(p.shape()));
  }
}

void AdamW::step(double lr) {
  ++steps_;
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), eps = float(cfg_.eps);
  const double bc1 = 1.0 - std::pow(cfg_.beta1, double(steps_));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(cfg_.beta2, double(steps_)));
  const float step_size = float(lr / bc1), inv_bc2_sqrt = float(1.0 / bc2_sqrt);
  const float decay = float(1.0 - lr * cfg_.weight_decay);
  for (size_t k = 0; k < params_.size(); ++k) {
    Var& p = params_[k].second;
    if (!p.has_grad()) continue;  // torch skips parameters without a gradient
    float* w = p.value().f32();
    const float* g = p.grad().f32();
    float* m = m_[k].f32();
    float* v = v_[k].f32();
    pool().parallel_for(p.value().numel(), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        w[i] *= decay;
        m[i] += (g[i] - m[i]) * (1.0f - b1);
        v[i] = v[i] * b2 + (1.0f - b2) * g[i] * g[i];
        const float denom = std::sqrt(v[i]) * inv_bc2_sqrt + eps;
        w[i] -= step_size * m[i] / denom;
      }
    });
  }
}

void Optimizer::zero_grad() {
  for (auto& [name, p] : params()) p.zero_grad();
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, NamedParams params, AdamWConfig cfg) {
  if (name == "adamw") return std::make_unique<AdamW>(std::move(params), cfg);
  fail("--optim '{}' is not known (choose adamw)", name);
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t k = 0; k < params_.size(); ++k) {
    out.emplace_back("exp_avg." + params_[k].first, m_[k]);
    out.emplace_back("exp_avg_sq." + params_[k].first, v_[k]);
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps) {
  for (size_t k = 0; k < params_.size(); ++k) {
    for (auto [prefix, dst] : {std::pair<const char*, Tensor*>{"exp_avg.", &m_[k]}, {"exp_avg_sq.", &v_[k]}}) {
      const std::string key = prefix + params_[k].first;
      const Tensor* src = nullptr;
      for (auto& [n, t] : tensors)
        if (n == key) src = &t;
      QP_CHECK(src, "[adamw] optimizer state '{}' missing from the checkpoint", key);
      QP_CHECK(src->shape() == dst->shape() && src->dtype() == DType::F32, "[adamw] optimizer state '{}' is {}, expected {}",
               key, src->describe(), dst->describe());
      std::memcpy(dst->f32(), src->f32(), dst->nbytes());
    }
  }
  steps_ = steps;
}

size_t AdamW::state_bytes() const {
  size_t n = 0;
  for (size_t k = 0; k < m_.size(); ++k) n += m_[k].nbytes() + v_[k].nbytes();
  return n;
}

double clip_grad_norm(const NamedParams& params, double max_norm) {
  double total = 0;
  for (auto& [name, p] : params) {
    if (!p.has_grad()) continue;
    const float* g = p.grad().f32();
    double s = 0;
    for (int64_t i = 0; i < p.value().numel(); ++i) s += double(g[i]) * g[i];
    total += s;
  }
  const double norm = std::sqrt(total);
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0) {
      for (auto& [name, p] : params) {
        if (!p.has_grad()) continue;
        float* g = p.grad().f32();
        for (int64_t i = 0; i < p.value().numel(); ++i) g[i] = float(g[i] * coef);
      }
    }
  }
  return norm;
}

}  // namespace qpeft
