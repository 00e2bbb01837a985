#include "ops/elementwise.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/profile.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "ops/vec_math.h"

namespace qpeft {

Var add(Graph& g, const Var& a, const Var& b) {
  profile::Scope prof("add fwd");
  QP_CHECK(a.shape() == b.shape(), "[add] shapes {} and {} differ", a.value().describe(), b.value().describe());
  Tensor y = Tensor::empty(a.shape());
  const float *ap = a.value().f32(), *bp = b.value().f32();
  float* yp = y.f32();
  pool().parallel_for(y.numel(), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] = ap[i] + bp[i];
  });
  bool rg = g.needs_grad({&a, &b});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([a, b, out] {
      profile::Scope prof("add bwd");
      if (!out.has_grad()) return;
      // One input may take the gradient over; the other gets its own copy.
      if (a.requires_grad()) {
        if (b.requires_grad()) b.accumulate_grad(out.grad());
        a.adopt_grad(out.grad());
      } else if (b.requires_grad()) {
        b.adopt_grad(out.grad());
      }
    });
  }
  return out;
}

Var scale(Graph& g, const Var& x, float s) {
  profile::Scope prof("scale fwd");
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.value().f32();
  float* yp = y.f32();
  for (int64_t i = 0; i < y.numel(); ++i) yp[i] = s * xp[i];
  bool rg = g.needs_grad({&x});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([x, out, s] {
      profile::Scope prof("scale bwd");
      if (!out.has_grad()) return;
      float* dx = x.grad_buffer();
      const float* dy = out.grad().f32();
      for (int64_t i = 0; i < out.value().numel(); ++i) dx[i] += s * dy[i];
    });
  }
  return out;
}

Var add_bias(Graph& g, const Var& x, const Var& bias) {
  profile::Scope prof("add_bias fwd");
  const int64_t n = bias.value().numel();
  QP_CHECK(x.value().dim(-1) == n, "[add_bias] input {} does not match bias '{}' {}", x.value().describe(),
           bias.name(), bias.value().describe());
  const int64_t rows = x.value().numel() / n;
  Tensor y = x.value().clone();
  float* yp = y.f32();
  const float* bp = bias.value().f32();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) yp[r * n + j] += bp[j];
  bool rg = g.needs_grad({&x, &bias});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([x, bias, out, rows, n] {
      profile::Scope prof("add_bias bwd");
      if (!out.has_grad()) return;
      if (bias.requires_grad()) {
        float* db = bias.grad_buffer();
        const float* dy = out.grad().f32();
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < n; ++j) db[j] += dy[r * n + j];
      }
      if (x.requires_grad()) x.adopt_grad(out.grad());  // after the bias has read it
    });
  }
  return out;
}

Var silu_mul(Graph& g, const Var& gate, const Var& up) {
  profile::Scope prof("silu_mul fwd");
  QP_CHECK(gate.shape() == up.shape(), "[silu_mul] shapes {} and {} differ", gate.value().describe(),
           up.value().describe());
  Tensor y = Tensor::empty(gate.shape());
  const float *gp = gate.value().f32(), *up_ = up.value().f32();
  float* yp = y.f32();
  const VecKernels& vk = vec_kernels();
  pool().parallel_for(y.numel(), [&](int64_t i0, int64_t i1) { vk.silu_mul(gp + i0, up_ + i0, yp + i0, i1 - i0); });
  bool rg = g.needs_grad({&gate, &up});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([gate, up, out] {
      profile::Scope prof("silu_mul bwd");
      if (!out.has_grad()) return;
      const int64_t n = out.value().numel();
      const float* dy = out.grad().f32();
      const float *gp = gate.value().f32(), *upp = up.value().f32();
      // Each of dg, du is written where new, added to otherwise (one kernel call per buffer
      // then, unless both agree).
      bool acc_g = false, acc_u = false;
      float* dg = gate.requires_grad() ? gate.grad_for_update(&acc_g) : nullptr;
      float* du = up.requires_grad() ? up.grad_for_update(&acc_u) : nullptr;
      const VecKernels& vk = vec_kernels();
      pool().parallel_for(n, [&](int64_t i0, int64_t i1) {
        if (!dg || !du || acc_g == acc_u) {
          vk.silu_mul_backward(gp + i0, upp + i0, dy + i0, dg ? dg + i0 : nullptr, du ? du + i0 : nullptr, i1 - i0,
                               dg ? acc_g : acc_u);
        } else {
          vk.silu_mul_backward(gp + i0, upp + i0, dy + i0, dg + i0, nullptr, i1 - i0, acc_g);
          vk.silu_mul_backward(gp + i0, upp + i0, dy + i0, nullptr, du + i0, i1 - i0, acc_u);
        }
      });
    });
  }
  return out;
}

Var mul_lastdim(Graph& g, const Var& x, const Var& v) {
  profile::Scope prof("mul_lastdim fwd");
  // x is (..., n), v holds n values (any shape: [n], [n, 1], [1, n]); y = x ⊙ v over the last dim.
  const int64_t n = v.value().numel();
  QP_CHECK(x.value().dim(-1) == n, "[mul_lastdim] input {} does not match vector '{}' {}", x.value().describe(),
           v.name(), v.value().describe());
  const int64_t rows = x.value().numel() / n;
  Tensor y = Tensor::empty(x.shape());
  const float *xp = x.value().f32(), *vp = v.value().f32();
  float* yp = y.f32();
  pool().parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < n; ++j) yp[r * n + j] = xp[r * n + j] * vp[j];
  });
  bool rg = g.needs_grad({&x, &v});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([x, v, out, rows, n] {
      profile::Scope prof("mul_lastdim bwd");
      if (!out.has_grad()) return;
      const float* dy = out.grad().f32();
      const float *xp = x.value().f32(), *vp = v.value().f32();
      if (x.requires_grad()) {
        // dx[r, j] = dy[r, j] · v[j]
        float* dx = x.grad_buffer();
        pool().parallel_for(rows, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r)
            for (int64_t j = 0; j < n; ++j) dx[r * n + j] += dy[r * n + j] * vp[j];
        });
      }
      if (v.requires_grad()) {
        // dv[j] = Σ_r dy[r, j] · x[r, j], summed in row order: the same bits for any thread count.
        float* dv = v.grad_buffer();
        pool().parallel_for(n, [&](int64_t j0, int64_t j1) {
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = j0; j < j1; ++j) dv[j] += dy[r * n + j] * xp[r * n + j];
        });
      }
    });
  }
  return out;
}

Var dropout(Graph& g, const Var& x, float p) {
  profile::Scope prof("dropout fwd");
  QP_CHECK(p >= 0.0f && p < 1.0f, "[dropout] probability {} must be in [0, 1)", p);
  if (!g.training() || p == 0.0f) return x;
  const uint64_t stream = g.next_stream();
  const uint64_t seed = g.seed();
  const uint64_t first = g.element_offset(x.value().numel());
  const float keep_scale = 1.0f / (1.0f - p);
  Tensor y = Tensor::empty(x.shape());
  const float* xp = x.value().f32();
  float* yp = y.f32();
  pool().parallel_for(y.numel(), [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) yp[i] = hash_uniform(seed, stream, first + uint64_t(i)) < p ? 0.0f : xp[i] * keep_scale;
  });
  bool rg = g.needs_grad({&x});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([x, out, p, seed, stream, first, keep_scale] {
      profile::Scope prof("dropout bwd");
      if (!out.has_grad()) return;
      const float* dy = out.grad().f32();
      float* dx = x.grad_buffer();
      pool().parallel_for(out.value().numel(), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i)
          if (hash_uniform(seed, stream, first + uint64_t(i)) >= p) dx[i] += dy[i] * keep_scale;
      });
    });
  }
  return out;
}

}  // namespace qpeft

namespace qpeft {
Var concat(Graph& g, const std::vector<Var>& parts) {
  int64_t n = 0;
  bool rg = false;
  for (const Var& p : parts) {
    QP_CHECK(p.value().dtype() == DType::F32, "[concat] parts must be f32, got {}", p.value().describe());
    n += p.value().numel();
    rg = rg || g.needs_grad({&p});
  }
  Tensor y = Tensor::empty({n});
  int64_t at = 0;
  for (const Var& p : parts) {
    std::copy_n(p.value().f32(), p.value().numel(), y.f32() + at);
    at += p.value().numel();
  }
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([parts, out] {
      if (!out.has_grad()) return;
      int64_t at = 0;
      for (const Var& p : parts) {
        const int64_t k = p.value().numel();
        if (p.requires_grad()) {
          float* d = p.grad_buffer();
          const float* src = out.grad().f32() + at;
          for (int64_t i = 0; i < k; ++i) d[i] += src[i];
        }
        at += k;
      }
    });
  }
  return out;
}

Var reshape(Graph& g, const Var& x, const Shape& shape) {
  bool rg = g.needs_grad({&x});
  Var out = g.make_output(x.value().reshape(shape), rg);
  if (rg) {
    g.record([x, out] {
      if (out.has_grad()) x.adopt_grad(out.grad().reshape(x.shape()));
    });
  }
  return out;
}
}  // namespace qpeft
