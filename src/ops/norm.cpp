#include "ops/norm.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/profile.h"
#include "core/thread_pool.h"

namespace qpeft {

Var rms_norm(Graph& g, const Var& x, const Var& w, float eps) {
  profile::Scope prof("rms_norm fwd");
  const int64_t n = w.value().numel();
  QP_CHECK(x.value().dim(-1) == n, "[rms_norm] input {} does not match weight '{}' {}", x.value().describe(),
           w.name(), w.value().describe());
  const int64_t rows = x.value().numel() / n;
  Tensor y = Tensor::empty(x.shape());
  auto rstd = std::make_shared<std::vector<float>>(size_t(rows));
  const float *xp = x.value().f32(), *wp = w.value().f32();
  float* yp = y.f32();
  pool().parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = xp + r * n;
      double ss = 0;
      for (int64_t j = 0; j < n; ++j) ss += double(xr[j]) * xr[j];
      float rs = float(1.0 / std::sqrt(ss / double(n) + eps));
      (*rstd)[r] = rs;
      for (int64_t j = 0; j < n; ++j) yp[r * n + j] = xr[j] * rs * wp[j];
    }
  });
  bool rg = g.needs_grad({&x, &w});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([x, w, out, rstd, rows, n] {
      profile::Scope prof("rms_norm bwd");
      if (!out.has_grad()) return;
      const float* dy = out.grad().f32();
      const float *xp = x.value().f32(), *wp = w.value().f32();
      if (x.requires_grad()) {
        // dx = rs · (w⊙dy − x̂ · mean(x̂ ⊙ w⊙dy)), x̂ = x · rs
        float* dx = x.grad_buffer();
        pool().parallel_for(rows, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const float* xr = xp + r * n;
            const float* dyr = dy + r * n;
            float rs = (*rstd)[r];
            double dot = 0;
            for (int64_t j = 0; j < n; ++j) dot += double(dyr[j]) * wp[j] * xr[j] * rs;
            float m = float(dot / double(n));
            for (int64_t j = 0; j < n; ++j) dx[r * n + j] += rs * (dyr[j] * wp[j] - xr[j] * rs * m);
          }
        });
      }
      if (w.requires_grad()) {
        // dw[j] = Σ_rows dy ⊙ x̂; threads split columns so the sum order is fixed.
        float* dw = w.grad_buffer();
        pool().parallel_for(n, [&](int64_t j0, int64_t j1) {
          for (int64_t r = 0; r < rows; ++r) {
            float rs = (*rstd)[r];
            for (int64_t j = j0; j < j1; ++j) dw[j] += dy[r * n + j] * xp[r * n + j] * rs;
          }
        });
      }
    });
  }
  return out;
}

}  // namespace qpeft
