#include "ops/norm.h"

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/profile.h"
#include "core/thread_pool.h"
#include "ops/vec_math.h"

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
  const VecKernels& vk = vec_kernels();
  pool().parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = xp + r * n;
      // llama.cpp's float steps (its CPU rms_norm): the mean rounded to float, then 1/sqrt in float.
      const float mean = float(vk.sum_squares(xr, n) / double(n));
      const float rs = 1.0f / std::sqrt(mean + eps);
      (*rstd)[r] = rs;
      vk.scale_mul(xr, rs, wp, yp + r * n, n);
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
        const VecKernels& vk = vec_kernels();
        pool().parallel_for(rows, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const float* xr = xp + r * n;
            const float* dyr = dy + r * n;
            const float rs = (*rstd)[r];
            const float m = float(vk.dot3(dyr, wp, xr, n) * double(rs) / double(n));  // mean(x̂ ⊙ w⊙dy)
            vk.rms_norm_backward(dyr, wp, xr, rs, rs * m, dx + r * n, n);
          }
        });
      }
      if (w.requires_grad()) {
        // dw[j] = Σ_rows dy ⊙ x̂; threads split columns so the sum order is fixed.
        float* dw = w.grad_buffer();
        const VecKernels& vk = vec_kernels();
        pool().parallel_for(n, [&](int64_t j0, int64_t j1) {
          for (int64_t r = 0; r < rows; ++r)
            vk.add_scaled_product(dy + r * n + j0, xp + r * n + j0, (*rstd)[r], dw + j0, j1 - j0);
        });
      }
    });
  }
  return out;
}

}  // namespace qpeft
