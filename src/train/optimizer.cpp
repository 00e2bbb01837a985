#include "train/optimizer.h"
#include "core/profile.h"

#include <cmath>
#include <cstring>
#include <map>
#include <optional>

#include "core/error.h"
#include "core/paged_memory.h"
#include "core/thread_pool.h"
#include "train/adafactor.h"
#include "train/optimizer_8bit.h"

namespace qpeft {

namespace {

constexpr OptimKindInfo kKinds[] = {
    {OptimKind::AdamW, "adamw", false, false, "torch.optim.AdamW, fp32 state"},
    {OptimKind::PagedAdamW, "paged_adamw", false, true, "adamw with large states in paged memory"},
    {OptimKind::AdamW8bit, "adamw8bit", true, false, "bitsandbytes AdamW8bit: block-wise 8-bit state"},
    {OptimKind::PagedAdamW8bit, "paged_adamw8bit", true, true, "adamw8bit with large states in paged memory"},
    {OptimKind::Adafactor, "adafactor", false, false, "transformers Adafactor (T-Few): factored second moments"},
};
static_assert(std::size(kKinds) == size_t(OptimKind::kCount), "one OptimKindInfo per OptimKind");
constexpr bool kinds_in_order() {
  for (size_t i = 0; i < std::size(kKinds); ++i)
    if (size_t(kKinds[i].kind) != i) return false;
  return true;
}
static_assert(kinds_in_order(), "kKinds must be indexed by OptimKind");

uint8_t* u8(const Tensor& t) { return static_cast<uint8_t*>(t.raw()); }

Tensor state_zeros(const Shape& shape, DType dt, bool paged) {
  return paged ? paged_zeros(shape, dt) : Tensor::zeros(shape, dt);
}

// torch.optim.AdamW (_single_tensor_adamw), float32 tensors with the Python-double scalars
// rounded to float as ATen does:
//   p = p·(1 - lr·wd);  m = m + (1 - b1)·(g - m)  (lerp);  v = v·b2 + ((1 - b2)·g)·g  (addcmul)
//   denom = sqrt(v) / sqrt(1 - b2^t) + eps;  p = p + (-lr / (1 - b1^t)) · (m / denom)  (addcdiv)
void torch_adamw_update(float* w, const float* g, float* m, float* v, int64_t i0, int64_t i1, const AdamWConfig& c,
                        double lr, int64_t t) {
  const float decay = float(1.0 - lr * c.weight_decay);
  const float w1 = float(1.0 - c.beta1), b2 = float(c.beta2), w2 = float(1.0 - c.beta2), eps = float(c.eps);
  const float bc2_sqrt = float(std::sqrt(1.0 - std::pow(c.beta2, double(t))));
  const float neg_step = float(-(lr / (1.0 - std::pow(c.beta1, double(t)))));
  for (int64_t i = i0; i < i1; ++i) {
    w[i] = w[i] * decay;
    m[i] = m[i] + w1 * (g[i] - m[i]);
    v[i] = v[i] * b2;
    v[i] = v[i] + w2 * g[i] * g[i];
    const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
    w[i] = w[i] + neg_step * (m[i] / denom);
  }
}

}  // namespace

const OptimKindInfo& optim_kind_info(OptimKind k) {
  QP_CHECK(size_t(k) < std::size(kKinds), "[optim] unknown optimizer kind {}", int(k));
  return kKinds[size_t(k)];
}

bool parse_optim_kind(std::string_view s, OptimKind* out) {
  for (const auto& info : kKinds) {
    if (s == info.name) {
      *out = info.kind;
      return true;
    }
  }
  return false;
}

std::vector<std::string> optimizer_names() {
  std::vector<std::string> v;
  for (const auto& info : kKinds) v.emplace_back(info.name);
  return v;
}

AdamW::AdamW(NamedParams params, AdamWConfig cfg, OptimKind kind) : params_(std::move(params)), cfg_(cfg), kind_(kind) {
  const OptimKindInfo& info = optim_kind_info(kind);
  QP_CHECK(kind != OptimKind::Adafactor, "[adamw] adafactor is not an AdamW kind: use make_optimizer or class Adafactor");
  QP_CHECK(cfg.beta1 >= 0 && cfg.beta1 < 1 && cfg.beta2 >= 0 && cfg.beta2 < 1 && cfg.eps >= 0 && cfg.weight_decay >= 0,
           "[{}] betas must be in [0, 1), eps and weight decay >= 0 (got betas {}, {}, eps {}, weight decay {})",
           info.name, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay);
  for (auto& [name, p] : params_) {
    QP_CHECK(p.requires_grad() && p.value().dtype() == DType::F32,
             "[{}] parameter '{}' is not a trainable f32 tensor", info.name, name);
    const int64_t n = p.value().numel();
    State s;
    s.q8 = info.state_8bit && n >= kOptimMin8bitSize;
    s.paged = info.paged && n >= kOptimMinPagedSize;
    const DType dt = s.q8 ? DType::U8 : DType::F32;
    s.m = state_zeros(p.shape(), dt, s.paged);
    s.v = state_zeros(p.shape(), dt, s.paged);
    if (s.q8) {
      s.absmax_m = Tensor::zeros({optim8bit_blocks(n)});
      s.absmax_v = Tensor::zeros({optim8bit_blocks(n)});
    }
    state_.push_back(std::move(s));
  }
}

void AdamW::step(double lr) {
  profile::Scope prof("adamw step");
  ++steps_;
  const bool bnb = optim_kind_info(kind_).state_8bit;
  std::optional<BnbAdamScalars> sc;
  if (bnb) sc.emplace(cfg_.beta1, cfg_.beta2, cfg_.eps, cfg_.weight_decay, lr, steps_);
  for (size_t k = 0; k < params_.size(); ++k) {
    Var& p = params_[k].second;
    if (!p.has_grad()) continue;  // torch and bitsandbytes skip parameters without a gradient
    State& s = state_[k];
    float* w = p.value().f32();
    const float* g = p.grad().f32();
    const int64_t n = p.value().numel();
    if (s.q8) {
      // Blocks of 256 are independent: any split gives the same bits.
      pool().parallel_for(optim8bit_blocks(n), [&](int64_t b0, int64_t b1) {
        adam8bit_update_blocks(w, g, u8(s.m), u8(s.v), s.absmax_m.f32(), s.absmax_v.f32(), n, b0, b1, *sc);
      });
    } else if (bnb) {
      pool().parallel_for(n, [&](int64_t i0, int64_t i1) { adam_bnb32_update(w, g, s.m.f32(), s.v.f32(), i0, i1, *sc); });
    } else {
      pool().parallel_for(
          n, [&](int64_t i0, int64_t i1) { torch_adamw_update(w, g, s.m.f32(), s.v.f32(), i0, i1, cfg_, lr, steps_); });
    }
  }
}

void Optimizer::zero_grad() {
  for (auto& [name, p] : params()) p.zero_grad();
}

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, NamedParams params, AdamWConfig cfg) {
  OptimKind kind;
  if (!parse_optim_kind(name, &kind)) {
    std::string all;
    for (const auto& n : optimizer_names()) all += (all.empty() ? "" : ", ") + n;
    fail("--optim '{}' is not known (choose one of {})", name, all);
  }
  if (kind == OptimKind::Adafactor) {
    AdafactorConfig acfg;
    acfg.weight_decay = cfg.weight_decay;
    return std::make_unique<Adafactor>(std::move(params), acfg);
  }
  return std::make_unique<AdamW>(std::move(params), cfg, kind);
}

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t k = 0; k < params_.size(); ++k) {
    const std::string& n = params_[k].first;
    const State& s = state_[k];
    if (s.q8) {
      out.emplace_back("exp_avg." + n + ".codes", s.m);
      out.emplace_back("exp_avg." + n + ".absmax", s.absmax_m);
      out.emplace_back("exp_avg_sq." + n + ".codes", s.v);
      out.emplace_back("exp_avg_sq." + n + ".absmax", s.absmax_v);
    } else {
      out.emplace_back("exp_avg." + n, s.m);
      out.emplace_back("exp_avg_sq." + n, s.v);
    }
  }
  return out;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t steps) {
  const char* me = name();
  QP_CHECK(steps >= 0, "[{}] optimizer step count {} in the checkpoint is negative", me, steps);
  std::map<std::string, const Tensor*> by_name;
  for (auto& [n, t] : tensors) by_name[n] = &t;
  auto find = [&](const std::string& key) -> const Tensor* {
    auto it = by_name.find(key);
    return it == by_name.end() ? nullptr : it->second;
  };
  auto expect = [&](const std::string& key, const Tensor* t, const Shape& shape, DType dt) {
    QP_CHECK(t->shape() == shape && t->dtype() == dt, "[{}] optimizer state '{}' is {}, expected {}{}", me, key,
             t->describe(), dtype_name(dt), shape_str(shape));
  };
  for (size_t k = 0; k < params_.size(); ++k) {
    const std::string& pname = params_[k].first;
    State& s = state_[k];
    const int64_t n = params_[k].second.value().numel();
    const Shape& shape = params_[k].second.shape();
    const Shape ablocks = {optim8bit_blocks(n)};
    for (bool second : {false, true}) {
      const std::string base = std::string(second ? "exp_avg_sq." : "exp_avg.") + pname;
      const Tensor& dst = second ? s.v : s.m;
      const Tensor* f32 = find(base);
      const Tensor* codes = find(base + ".codes");
      const Tensor* absmax = find(base + ".absmax");
      QP_CHECK(f32 || (codes && absmax),
               "[{}] optimizer state '{}' (or its .codes/.absmax) is missing from the checkpoint; was it written for "
               "other parameters?",
               me, base);
      if (!s.q8 && f32) {
        expect(base, f32, shape, DType::F32);
        std::memcpy(dst.raw(), f32->raw(), dst.nbytes());
      } else if (s.q8 && codes && absmax) {
        expect(base + ".codes", codes, shape, DType::U8);
        expect(base + ".absmax", absmax, ablocks, DType::F32);
        std::memcpy(dst.raw(), codes->raw(), dst.nbytes());
        Tensor& am = second ? s.absmax_v : s.absmax_m;
        std::memcpy(am.raw(), absmax->raw(), am.nbytes());
      } else if (s.q8) {  // fp32 state into 8-bit: quantize as the update does
        expect(base, f32, shape, DType::F32);
        quantize_state_8bit(f32->f32(), n, !second, u8(dst), (second ? s.absmax_v : s.absmax_m).f32());
      } else {  // 8-bit state into fp32: dequantize
        expect(base + ".codes", codes, shape, DType::U8);
        expect(base + ".absmax", absmax, ablocks, DType::F32);
        dequantize_state_8bit(u8(*codes), absmax->f32(), n, !second, dst.f32());
      }
    }
  }
  steps_ = steps;
}

AdamW::StateInfo AdamW::state_info(size_t k) const {
  const State& s = state_.at(k);
  size_t bytes = s.m.nbytes() + s.v.nbytes();
  if (s.q8) bytes += s.absmax_m.nbytes() + s.absmax_v.nbytes();
  return {s.q8, s.paged, bytes};
}

size_t AdamW::state_bytes() const {
  size_t n = 0;
  for (size_t k = 0; k < state_.size(); ++k) n += state_info(k).bytes;
  return n;
}

size_t AdamW::paged_state_bytes() const {
  size_t n = 0;
  for (const State& s : state_)
    if (s.paged) n += s.m.nbytes() + s.v.nbytes();
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
