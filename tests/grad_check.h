// Table-driven gradient checks: analytic gradients from the tape vs central finite
// differences of L = Σ out ⊙ R for a fixed random R.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "ops/autograd.h"

namespace qpeft::testing {

inline Tensor random_tensor(const Shape& shape, uint64_t seed, float scale = 1.0f) {
  Tensor t = Tensor::empty(shape);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(rng.normal()) * scale;
  return t;
}

inline Var param(const Shape& shape, uint64_t seed, float scale = 1.0f, const char* name = "p") {
  return Var(random_tensor(shape, seed, scale), true, name);
}

using OpFn = std::function<Var(Graph&, const std::vector<Var>&)>;

struct GradCheckOptions {
  float eps = 1e-2f;
  float atol = 2e-3f;
  float rtol = 2e-2f;
  int samples = 48;  // elements checked per input
  bool training = false;
  uint64_t seed = 7;
};

inline double weighted_sum(const Tensor& out, const Tensor& R) {
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) s += double(out.f32()[i]) * R.f32()[i];
  return s;
}

inline void check_gradients(const std::string& name, std::vector<Var> inputs, const OpFn& fn,
                            GradCheckOptions opt = {}) {
  SCOPED_TRACE(name);
  Tensor R;
  {
    Graph g(true, opt.seed, opt.training);
    Var out = fn(g, inputs);
    R = random_tensor(out.shape(), 12345);
    g.backward(out, R);
  }
  Rng pick(99);
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Var& in = inputs[k];
    if (!in.requires_grad()) continue;
    ASSERT_TRUE(in.has_grad()) << "input " << k << " got no gradient";
    const int64_t n = in.value().numel();
    float* x = in.value().f32();
    for (int s = 0; s < std::min<int64_t>(opt.samples, n); ++s) {
      const int64_t i = n <= opt.samples ? s : int64_t(pick.below(uint64_t(n)));
      const float orig = x[i];
      auto eval = [&](float v) {
        x[i] = v;
        Graph g(false, opt.seed, opt.training);
        return weighted_sum(fn(g, inputs).value(), R);
      };
      const double fd = (eval(orig + opt.eps) - eval(orig - opt.eps)) / (2.0 * opt.eps);
      x[i] = orig;
      const double an = in.grad().f32()[i];
      EXPECT_NEAR(an, fd, opt.atol + opt.rtol * std::fabs(fd)) << "input " << k << " element " << i;
    }
  }
}

}  // namespace qpeft::testing
