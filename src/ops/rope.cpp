#include "ops/rope.h"

#include <cmath>

#include "core/error.h"
#include "core/profile.h"
#include "core/thread_pool.h"
#include "ops/vec_math.h"

namespace qpeft {

std::vector<double> rope_inv_freq(const RopeConfig& cfg) {
  QP_CHECK(cfg.head_dim > 0 && cfg.head_dim % 2 == 0, "[rope] head_dim {} must be even and positive", cfg.head_dim);
  const int64_t half = cfg.head_dim / 2;
  std::vector<double> inv(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(cfg.theta, double(2 * i) / double(cfg.head_dim));
  if (cfg.scaling_type == "linear") {
    for (auto& f : inv) f /= cfg.factor;
  } else if (cfg.scaling_type == "llama3") {
    // transformers' _compute_llama3_parameters: long wavelengths divided by factor, short
    // ones kept, the band between interpolated smoothly.
    const double low_wavelen = double(cfg.original_max_position) / cfg.low_freq_factor;
    const double high_wavelen = double(cfg.original_max_position) / cfg.high_freq_factor;
    for (auto& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f = f / cfg.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (double(cfg.original_max_position) / wavelen - cfg.low_freq_factor) /
                              (cfg.high_freq_factor - cfg.low_freq_factor);
        f = (1.0 - smooth) * f / cfg.factor + smooth * f;
      }
    }
  } else if (cfg.scaling_type == "factors") {
    QP_CHECK(int64_t(cfg.freq_factors.size()) == half, "[rope] {} frequency factors for head_dim {} (need {})",
             cfg.freq_factors.size(), cfg.head_dim, half);
    for (int64_t i = 0; i < half; ++i) {
      QP_CHECK(std::isfinite(cfg.freq_factors[size_t(i)]) && cfg.freq_factors[size_t(i)] > 0,
               "[rope] frequency factor {} is {}; factors must be finite and positive", i, cfg.freq_factors[size_t(i)]);
      inv[size_t(i)] /= cfg.freq_factors[size_t(i)];
    }
  } else {
    QP_CHECK(cfg.scaling_type == "default", "[rope] unsupported rope scaling type '{}' (supported: llama3, linear)",
             cfg.scaling_type);
  }
  return inv;
}

RopeTable::RopeTable(const RopeConfig& cfg, int64_t max_pos) : head_dim_(cfg.head_dim), max_pos_(max_pos) {
  std::vector<double> inv = rope_inv_freq(cfg);
  const int64_t half = head_dim_ / 2;
  cos_.resize(size_t(max_pos * half));
  sin_.resize(size_t(max_pos * half));
  for (int64_t p = 0; p < max_pos; ++p)
    for (int64_t i = 0; i < half; ++i) {
      double a = double(p) * inv[i];
      cos_[p * half + i] = float(std::cos(a));
      sin_[p * half + i] = float(std::sin(a));
    }
}

// y[i] = x[i] cos − x[i+h] sin, y[i+h] = x[i+h] cos + x[i] sin (i < h = D/2).
// sign = −1 applies the inverse rotation (the backward rule).
static void rotate(const float* x, float* y, int64_t B, int64_t T, int64_t H, int64_t D, const RopeTable& tab,
                   int64_t pos_offset, float sign, bool accumulate) {
  const int64_t half = D / 2;
  const VecKernels& vk = vec_kernels();
  pool().parallel_for(B * T, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t pos = pos_offset + r % T;
      const float* c = tab.cos_row(pos);
      const float* s = tab.sin_row(pos);
      for (int64_t h = 0; h < H; ++h) {
        const float* xr = x + (r * H + h) * D;
        float* yr = y + (r * H + h) * D;
        vk.rope_rotate(xr, xr + half, c, s, sign, half, accumulate, yr, yr + half);
      }
    }
  });
}

Var rope(Graph& g, const Var& x, const std::shared_ptr<const RopeTable>& table, int64_t pos_offset) {
  profile::Scope prof("rope fwd");
  const Tensor& xv = x.value();
  QP_CHECK(xv.ndim() == 4 && xv.dim(3) == table->head_dim(), "[rope] input {} must be [B, T, H, {}]", xv.describe(),
           table->head_dim());
  const int64_t B = xv.dim(0), T = xv.dim(1), H = xv.dim(2), D = xv.dim(3);
  QP_CHECK(pos_offset + T <= table->max_pos(),
           "[rope] position {} exceeds the rotary table ({} positions); raise max_position_embeddings or shorten "
           "--seq-len",
           pos_offset + T, table->max_pos());
  Tensor y = Tensor::empty(xv.shape());
  rotate(xv.f32(), y.f32(), B, T, H, D, *table, pos_offset, 1.0f, false);
  bool rg = g.needs_grad({&x});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([x, out, table, B, T, H, D, pos_offset] {
      profile::Scope prof("rope bwd");
      if (!out.has_grad()) return;
      bool accumulate = false;
      float* dx = x.grad_for_update(&accumulate);
      rotate(out.grad().f32(), dx, B, T, H, D, *table, pos_offset, -1.0f, accumulate);
    });
  }
  return out;
}

}  // namespace qpeft
