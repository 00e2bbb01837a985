#include "quant/ggml_blocks.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/error.h"

namespace qpeft {

namespace {

// ---- Scalar reference dequantizers: the formulas of ggml_blocks.h, one value at a time ----

// out [n] from n / 32 blocks.
void dequantize_q8_0_ref(const void* blocks, int64_t n, float* out) {
  const auto* b = static_cast<const GgmlBlockQ8_0*>(blocks);
  for (int64_t i = 0; i < n / 32; ++i, out += 32) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < 32; ++j) out[j] = float(b[i].qs[j]) * d;
  }
}

// out [n] from n / 32 blocks.
void dequantize_q4_0_ref(const void* blocks, int64_t n, float* out) {
  const auto* b = static_cast<const GgmlBlockQ4_0*>(blocks);
  for (int64_t i = 0; i < n / 32; ++i, out += 32) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      out[j] = float((b[i].qs[j] & 15) - 8) * d;
      out[j + 16] = float((b[i].qs[j] >> 4) - 8) * d;
    }
  }
}

// The codes of Q4_K and Q5_K blocks, shared by their dequantizers and dot products: the code of
// value 64c + 32·high + l (c < 4, l < 32).
int q4_K_code(const GgmlBlockQ4_K& b, int c, int l, bool high) {
  return high ? b.qs[32 * c + l] >> 4 : b.qs[32 * c + l] & 15;
}
int q5_K_code(const GgmlBlockQ5_K& b, int c, int l, bool high) {
  const int low4 = high ? b.qs[32 * c + l] >> 4 : b.qs[32 * c + l] & 15;
  return low4 + ((b.qh[l] >> (2 * c + int(high))) & 1) * 16;
}

// Q4_K / Q5_K: out [n] from n / 256 blocks.
template <class Block, int (*Code)(const Block&, int, int, bool)>
void dequantize_k4_ref(const void* blocks, int64_t n, float* out) {
  const auto* b = static_cast<const Block*>(blocks);
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int c = 0; c < 4; ++c, out += 64) {
      uint8_t sc, m;
      ggml_scale_min_k4(2 * c, b[i].scales, &sc, &m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      ggml_scale_min_k4(2 * c + 1, b[i].scales, &sc, &m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l) out[l] = d1 * float(Code(b[i], c, l, false)) - m1;
      for (int l = 0; l < 32; ++l) out[32 + l] = d2 * float(Code(b[i], c, l, true)) - m2;
    }
  }
}

constexpr GgmlDequantizeFn dequantize_q4_K_ref = dequantize_k4_ref<GgmlBlockQ4_K, q4_K_code>;
constexpr GgmlDequantizeFn dequantize_q5_K_ref = dequantize_k4_ref<GgmlBlockQ5_K, q5_K_code>;

// out [n] from n / 256 blocks.
void dequantize_q6_K_ref(const void* blocks, int64_t n, float* out) {
  const auto* b = static_cast<const GgmlBlockQ6_K*>(blocks);
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int h = 0; h < 2; ++h, out += 128) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int s = l / 16;
        const int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        out[l] = d * float(sc[s]) * float(q1);
        out[l + 32] = d * float(sc[s + 2]) * float(q2);
        out[l + 64] = d * float(sc[s + 4]) * float(q3);
        out[l + 96] = d * float(sc[s + 6]) * float(q4);
      }
    }
  }
}

// ---- Quantizers ----

// Round half to even, as ggml's nearest_int (its magic-number add in the default rounding mode).
inline int nearest(float v) { return int(std::nearbyint(v)); }

// ggml's quantize_row_q8_0_ref: d = absmax / 127, codes round(x / d) (half away from zero).
void quantize_q8_0(const float* x, int64_t n, void* blocks) {
  auto* b = static_cast<GgmlBlockQ8_0*>(blocks);
  for (int64_t i = 0; i < n / 32; ++i, x += 32) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < 32; ++j) b[i].qs[j] = int8_t(std::round(x[j] * id));
  }
}

// ggml's quantize_row_q4_0_ref: the value of largest magnitude (sign kept) maps to code 0,
// d = max / -8, codes min(15, trunc(x / d + 8.5)).
void quantize_q4_0(const float* x, int64_t n, void* blocks) {
  auto* b = static_cast<GgmlBlockQ4_0*>(blocks);
  for (int64_t i = 0; i < n / 32; ++i, x += 32) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    b[i].d = f32_to_f16(d);
    for (int j = 0; j < 16; ++j) {
      const int lo = std::min(15, int(x[j] * id + 8.5f));
      const int hi = std::min(15, int(x[j + 16] * id + 8.5f));
      b[i].qs[j] = uint8_t(lo | hi << 4);
    }
  }
}

// Weighted least-squares fit x[i] ≈ scale·L[i] - min with L[i] in [0, nmax] and min >= 0 (the
// K-quant sub-block model). Levels are tried from the min-max grid and from steps + 1 stretched
// grids, inverse scale (nmax + rmin + rdelta·s) / (max - lo); for each, scale and min are
// refitted in closed form and the fit with the least weighted squared error is kept.
// Shapes: x, w, L [n]. Returns the scale; *min_out gets min.
float fit_scale_min(const float* x, const float* w, int n, int nmax, float rmin, float rdelta, int steps,
                    uint8_t* L, float* min_out) {
  float lo = x[0], hi = x[0], sum_w = 0.0f, sum_wx = 0.0f;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sum_w += w[i];
    sum_wx += w[i] * x[i];
  }
  lo = std::min(lo, 0.0f);  // the model's offset is never positive
  if (hi == lo) {
    std::fill(L, L + n, uint8_t(0));
    *min_out = -lo;
    return 0.0f;
  }
  auto levels = [&](float inv, uint8_t* out) {
    for (int i = 0; i < n; ++i) out[i] = uint8_t(std::clamp(nearest(inv * (x[i] - lo)), 0, nmax));
  };
  auto error = [&](const uint8_t* lv, float scale, float offset) {
    float e = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float diff = scale * float(lv[i]) + offset - x[i];
      e += w[i] * diff * diff;
    }
    return e;
  };
  float best_scale = (hi - lo) / float(nmax), best_offset = lo;
  levels(float(nmax) / (hi - lo), L);
  float best = error(L, best_scale, best_offset);
  uint8_t trial[kGgmlSuperBlock];
  for (int s = 0; s <= steps; ++s) {
    levels((float(nmax) + rmin + rdelta * float(s)) / (hi - lo), trial);
    float sl = 0.0f, sl2 = 0.0f, sxl = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float l = float(trial[i]);
      sl += w[i] * l;
      sl2 += w[i] * l * l;
      sxl += w[i] * l * x[i];
    }
    const float det = sum_w * sl2 - sl * sl;
    if (!(det > 0.0f)) continue;
    float scale = (sum_w * sxl - sum_wx * sl) / det;
    float offset = (sl2 * sum_wx - sl * sxl) / det;
    if (offset > 0.0f) {  // refit through the origin
      offset = 0.0f;
      scale = sxl / sl2;
    }
    const float e = error(trial, scale, offset);
    if (e < best) {
      best = e;
      best_scale = scale;
      best_offset = offset;
      std::copy(trial, trial + n, L);
    }
  }
  *min_out = -best_offset;
  return best_scale;
}

// Packs the 6-bit scales and mins of the 8 sub-blocks as ggml_scale_min_k4 unpacks them.
void pack_scales_k4(const uint8_t* sc, const uint8_t* m, uint8_t* scales12) {
  std::memset(scales12, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales12[j] = sc[j];
      scales12[j + 4] = m[j];
    } else {
      scales12[j + 4] = uint8_t((sc[j] & 15) | (m[j] & 15) << 4);
      scales12[j - 4] |= uint8_t((sc[j] >> 4) << 6);
      scales12[j] |= uint8_t((m[j] >> 4) << 6);
    }
  }
}

// One Q4_K/Q5_K super-block: x [256] -> f16 d and dmin, scales12 [12], levels L [256] in
// [0, nmax], requantized against the stored (rounded) scales. Sub-block weights as ggml's
// reference: rms(x) + |x[i]|.
void quantize_k_superblock(const float* x, int nmax, float rmin, float rdelta, int steps, uint16_t* d,
                           uint16_t* dmin, uint8_t* scales12, uint8_t* L) {
  float scales[8], mins[8], w[32];
  float max_scale = 0.0f, max_min = 0.0f;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    float sum_x2 = 0.0f;
    for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
    const float rms = std::sqrt(sum_x2 / 32.0f);
    for (int l = 0; l < 32; ++l) w[l] = rms + std::fabs(xs[l]);
    scales[j] = fit_scale_min(xs, w, 32, nmax, rmin, rdelta, steps, L + 32 * j, &mins[j]);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0.0f ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0.0f ? 63.0f / max_min : 0.0f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = uint8_t(std::clamp(nearest(inv_scale * scales[j]), 0, 63));
    lm[j] = uint8_t(std::clamp(nearest(inv_min * mins[j]), 0, 63));
  }
  pack_scales_k4(ls, lm, scales12);
  *d = f32_to_f16(max_scale / 63.0f);
  *dmin = f32_to_f16(max_min / 63.0f);
  const float df = f16_to_f32(*d), dminf = f16_to_f32(*dmin);
  for (int j = 0; j < 8; ++j) {
    const float dj = df * float(ls[j]), mj = dminf * float(lm[j]);
    uint8_t* Lj = L + 32 * j;
    if (dj == 0.0f) {  // every value decodes to -mj
      std::fill(Lj, Lj + 32, uint8_t(0));
      continue;
    }
    for (int l = 0; l < 32; ++l) Lj[l] = uint8_t(std::clamp(nearest((x[32 * j + l] + mj) / dj), 0, nmax));
  }
}

// Q4_K: 4-bit levels, ggml's search (rmin -1, rdelta 0.1, 20 steps).
void quantize_q4_K(const float* x, int64_t n, void* blocks) {
  auto* b = static_cast<GgmlBlockQ4_K*>(blocks);
  uint8_t L[kGgmlSuperBlock];
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i, x += kGgmlSuperBlock) {
    quantize_k_superblock(x, 15, -1.0f, 0.1f, 20, &b[i].d, &b[i].dmin, b[i].scales, L);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) b[i].qs[32 * c + l] = uint8_t(L[64 * c + l] | L[64 * c + 32 + l] << 4);
  }
}

// Q5_K: 5-bit levels, ggml's search (rmin -0.5, rdelta 0.1, 15 steps).
void quantize_q5_K(const float* x, int64_t n, void* blocks) {
  auto* b = static_cast<GgmlBlockQ5_K*>(blocks);
  uint8_t L[kGgmlSuperBlock];
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i, x += kGgmlSuperBlock) {
    quantize_k_superblock(x, 31, -0.5f, 0.1f, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
    std::memset(b[i].qh, 0, sizeof b[i].qh);
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) {
        const int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
        b[i].qs[32 * c + l] = uint8_t((lo & 15) | (hi & 15) << 4);
        b[i].qh[l] |= uint8_t((lo >> 4) << (2 * c) | (hi >> 4) << (2 * c + 1));
      }
  }
}

// Symmetric fit x[i] ≈ scale·L[i], L[i] in [-nmax, nmax - 1], weights x[i]² (ggml's
// make_qx_quants, rmse_type 1): the value of largest magnitude goes to the -nmax side, and 19
// inverse scales -(nmax + 0.1·s) / max, s = -9..9, are tried, keeping the one whose
// least-squares scale explains the most weighted energy (sxl² / sl2). Shapes: x, L [n].
float fit_scale_symmetric(const float* x, int n, int nmax, int8_t* L) {
  float amax = 0.0f, max = 0.0f;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  if (amax < 1e-15f) {
    std::fill(L, L + n, int8_t(0));
    return 0.0f;
  }
  float best_scale = 0.0f, best_sxl = 0.0f, best_sl2 = 0.0f;
  bool have = false;
  int8_t trial[32];
  for (int k = 0; k < 19; ++k) {
    const int s = k == 0 ? 0 : (k <= 9 ? -k : k - 9);  // the plain grid first
    const float inv = -(float(nmax) + 0.1f * float(s)) / max;
    float sxl = 0.0f, sl2 = 0.0f;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(inv * x[i]), -nmax, nmax - 1);
      trial[i] = int8_t(l);
      const float w = x[i] * x[i];
      sxl += w * x[i] * float(l);
      sl2 += w * float(l) * float(l);
    }
    if (!(sl2 > 0.0f)) continue;
    if (!have || sxl * sxl * best_sl2 > best_sxl * best_sxl * sl2) {
      have = true;
      best_sxl = sxl;
      best_sl2 = sl2;
      best_scale = sxl / sl2;
      std::copy(trial, trial + n, L);
    }
  }
  if (!have) std::fill(L, L + n, int8_t(0));
  return best_scale;
}

// Q6_K: 16 sub-blocks of 16, int8 scales relative to d = max_scale / -128.
void quantize_q6_K(const float* x, int64_t n, void* blocks) {
  auto* b = static_cast<GgmlBlockQ6_K*>(blocks);
  int8_t Ls[kGgmlSuperBlock];
  uint8_t L[kGgmlSuperBlock];
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i, x += kGgmlSuperBlock) {
    float scales[16], max_scale = 0.0f, amax_scale = 0.0f;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_scale_symmetric(x + 16 * j, 16, 32, Ls + 16 * j);
      if (std::fabs(scales[j]) > amax_scale) {
        amax_scale = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    GgmlBlockQ6_K& out = b[i];
    std::memset(&out, 0, sizeof out);
    if (amax_scale < 1e-15f) {  // all zero: d = 0, codes 0
      continue;
    }
    const float iscale = -128.0f / max_scale;
    out.d = f32_to_f16(1.0f / iscale);
    for (int j = 0; j < 16; ++j) out.scales[j] = int8_t(std::clamp(nearest(iscale * scales[j]), -128, 127));
    const float df = f16_to_f32(out.d);
    for (int j = 0; j < 16; ++j) {
      const float dj = df * float(out.scales[j]);
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = dj == 0.0f ? 32 : uint8_t(std::clamp(nearest(x[16 * j + l] / dj), -32, 31) + 32);
    }
    for (int h = 0; h < 2; ++h) {
      uint8_t* ql = out.ql + 64 * h;
      uint8_t* qh = out.qh + 32 * h;
      const uint8_t* Lh = L + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const int a = Lh[l], bq = Lh[l + 32], c = Lh[l + 64], e = Lh[l + 96];
        ql[l] = uint8_t((a & 15) | (c & 15) << 4);
        ql[l + 32] = uint8_t((bq & 15) | (e & 15) << 4);
        qh[l] = uint8_t((a >> 4) | (bq >> 4) << 2 | (c >> 4) << 4 | (e >> 4) << 6);
      }
    }
  }
}


// ---- Activation blocks and dot products (llama.cpp's 8-bit products) ----

// Round half to even, as ggml's nearest_int and _mm256_round_ps(_MM_ROUND_NEAREST) do.
inline int round_even(float v) { return int(std::nearbyint(v)); }

// The float combination every table shares (ggml_blocks_simd.inc repeats these expressions).
// Rounding the activations to 8 bits turns float-order differences upstream into whole-code
// flips downstream, so where llama.cpp's x86 kernels fix an order, these follow it:
//   Q8_0: 8 lanes, lane l summing bytes 4l..4l+3 of every block, acc_l = fma(d_w·d_a, isum_l,
//         acc_l), then its hsum_float_8 ((hi + lo) halves, then pairs); as its vec_dot and tinyBLAS.
//   Q4_0: sum = fma(isum, d_w·d_a, sum) block after block; as its repacked 8x8 kernels.
//   Q4_K / Q5_K, per block: sum += (d_w·d_a)·Σ sc·isum - (dmin_w·d_a)·Σ m·bsum
//   Q6_K, per block:        sum += (d_w·d_a)·Σ sc·isum

float vec_dot_q8_0_row(const void* w, const void* a, int64_t n) {
  const auto* x = static_cast<const GgmlBlockQ8_0*>(w);
  const auto* y = static_cast<const GgmlBlockQ8_0*>(a);
  float acc[8] = {};
  for (int64_t i = 0; i < n / 32; ++i) {
    const float d = f16_to_f32(x[i].d) * f16_to_f32(y[i].d);
    for (int l = 0; l < 8; ++l) {
      int32_t isum = 0;
      for (int j = 4 * l; j < 4 * l + 4; ++j) isum += int32_t(x[i].qs[j]) * y[i].qs[j];
      acc[l] = std::fma(d, float(isum), acc[l]);
    }
  }
  return ggml_hsum8(acc);
}

float vec_dot_q4_0_row(const void* w, const void* a, int64_t n) {
  const auto* x = static_cast<const GgmlBlockQ4_0*>(w);
  const auto* y = static_cast<const GgmlBlockQ8_0*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / 32; ++i) {
    int32_t isum = 0;
    for (int j = 0; j < 16; ++j)
      isum += ((x[i].qs[j] & 15) - 8) * y[i].qs[j] + ((x[i].qs[j] >> 4) - 8) * y[i].qs[j + 16];
    sum = std::fma(float(isum), f16_to_f32(x[i].d) * f16_to_f32(y[i].d), sum);
  }
  return sum;
}

// Q4_K and Q5_K (code: q4_K_code or q5_K_code).
template <class Block, class Code>
float vec_dot_k4_row(const void* w, const void* a, int64_t n, Code code) {
  const auto* x = static_cast<const Block*>(w);
  const auto* y = static_cast<const GgmlBlockQ8_K*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i) {
    int32_t isum = 0;
    for (int c = 0; c < 4; ++c) {
      uint8_t sc_lo, sc_hi, m;
      ggml_scale_min_k4(2 * c, x[i].scales, &sc_lo, &m);
      ggml_scale_min_k4(2 * c + 1, x[i].scales, &sc_hi, &m);
      int32_t lo = 0, hi = 0;
      for (int l = 0; l < 32; ++l) {
        lo += code(x[i], c, l, false) * y[i].qs[64 * c + l];
        hi += code(x[i], c, l, true) * y[i].qs[64 * c + 32 + l];
      }
      isum += int32_t(sc_lo) * lo + int32_t(sc_hi) * hi;
    }
    const float d = f16_to_f32(x[i].d) * y[i].d, dmin = f16_to_f32(x[i].dmin) * y[i].d;
    sum += d * float(isum) - dmin * float(ggml_k4_min_sum(x[i].scales, y[i].bsums));
  }
  return sum;
}

float vec_dot_q4_K_row(const void* w, const void* a, int64_t n) {
  return vec_dot_k4_row<GgmlBlockQ4_K>(w, a, n, q4_K_code);
}

float vec_dot_q5_K_row(const void* w, const void* a, int64_t n) {
  return vec_dot_k4_row<GgmlBlockQ5_K>(w, a, n, q5_K_code);
}

float vec_dot_q6_K_row(const void* w, const void* a, int64_t n) {
  const auto* x = static_cast<const GgmlBlockQ6_K*>(w);
  const auto* y = static_cast<const GgmlBlockQ8_K*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i) {
    int32_t isum = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const uint8_t* qh = x[i].qh + 32 * h;
      const int8_t* q8 = y[i].qs + 128 * h;
      const int8_t* sc = x[i].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int q0 = ((ql[l] & 15) | (qh[l] & 3) << 4) - 32;
        const int q1 = ((ql[l + 32] & 15) | (qh[l] >> 2 & 3) << 4) - 32;
        const int q2 = ((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (qh[l] >> 6 & 3) << 4) - 32;
        const int s = l / 16;  // values 32k + l use scale 2k + l / 16
        isum += sc[s] * q0 * q8[l] + sc[2 + s] * q1 * q8[32 + l] + sc[4 + s] * q2 * q8[64 + l] +
                sc[6 + s] * q3 * q8[96 + l];
      }
    }
    sum += (f16_to_f32(x[i].d) * y[i].d) * float(isum);
  }
  return sum;
}

// The references' multi-row form: each row alone.
template <float (*Row)(const void*, const void*, int64_t)>
void vec_dot_rows_ref(const void* w, const void* a, int64_t a_row_bytes, int64_t rows, int64_t n, float* out,
                      int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r) out[r * out_stride] = Row(w, static_cast<const uint8_t*>(a) + r * a_row_bytes, n);
}

constexpr GgmlKernels kRef = {"scalar",
                              {dequantize_q8_0_ref, dequantize_q4_0_ref, dequantize_q4_K_ref, dequantize_q5_K_ref,
                               dequantize_q6_K_ref},
                              {vec_dot_rows_ref<vec_dot_q8_0_row>, vec_dot_rows_ref<vec_dot_q4_0_row>,
                               vec_dot_rows_ref<vec_dot_q4_K_row>, vec_dot_rows_ref<vec_dot_q5_K_row>,
                               vec_dot_rows_ref<vec_dot_q6_K_row>}};

constexpr std::array<GgmlTypeTraits, kGgmlTypeCount> kTypes = {{
    {"q8_0", GgmlType::Q8_0, 0, 32, sizeof(GgmlBlockQ8_0), dequantize_q8_0_ref, quantize_q8_0,
     32, sizeof(GgmlBlockQ8_0), ggml_quantize_activations_q8_0, nullptr, nullptr},
    {"q4_0", GgmlType::Q4_0, 1, 32, sizeof(GgmlBlockQ4_0), dequantize_q4_0_ref, quantize_q4_0,
     32, sizeof(GgmlBlockQ8_0), ggml_quantize_activations_q8_0, nullptr, nullptr},
    {"q4_K", GgmlType::Q4_K, 2, kGgmlSuperBlock, sizeof(GgmlBlockQ4_K), dequantize_q4_K_ref, quantize_q4_K,
     kGgmlSuperBlock, sizeof(GgmlBlockQ8_K), ggml_quantize_activations_q8_K, nullptr, nullptr},
    {"q5_K", GgmlType::Q5_K, 3, kGgmlSuperBlock, sizeof(GgmlBlockQ5_K), dequantize_q5_K_ref, quantize_q5_K,
     kGgmlSuperBlock, sizeof(GgmlBlockQ8_K), ggml_quantize_activations_q8_K, nullptr, nullptr},
    {"q6_K", GgmlType::Q6_K, 4, kGgmlSuperBlock, sizeof(GgmlBlockQ6_K), dequantize_q6_K_ref, quantize_q6_K,
     kGgmlSuperBlock, sizeof(GgmlBlockQ8_K), ggml_quantize_activations_q8_K, nullptr, nullptr},
}};

}  // namespace

const GgmlKernels& ggml_kernels_ref() { return kRef; }

void ggml_quantize_activations_q8_0(const float* x, int64_t n, void* blocks) {
  auto* y = static_cast<GgmlBlockQ8_0*>(blocks);
  for (int64_t i = 0; i < n / 32; ++i, x += 32) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    y[i].d = f32_to_f16(amax / 127.f);
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    for (int j = 0; j < 32; ++j) y[i].qs[j] = int8_t(round_even(x[j] * id));
  }
}

void ggml_quantize_activations_q8_K(const float* x, int64_t n, void* blocks) {
  auto* y = static_cast<GgmlBlockQ8_K*>(blocks);
  for (int64_t i = 0; i < n / kGgmlSuperBlock; ++i, x += kGgmlSuperBlock) {
    float amax = 0, max = 0;
    for (int j = 0; j < kGgmlSuperBlock; ++j)
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    if (amax == 0) {
      std::memset(&y[i], 0, sizeof(GgmlBlockQ8_K));
      continue;
    }
    const float iscale = -127.f / max;
    for (int j = 0; j < kGgmlSuperBlock; ++j) y[i].qs[j] = int8_t(std::min(127, round_even(iscale * x[j])));
    for (int g = 0; g < 16; ++g) {
      int sum = 0;
      for (int j = 0; j < 16; ++j) sum += y[i].qs[16 * g + j];
      y[i].bsums[g] = int16_t(sum);
    }
    y[i].d = 1 / iscale;
  }
}

const GgmlKernels* ggml_kernels_avx2() { return cpu_has_avx2() ? detail::ggml_avx2_table() : nullptr; }

const GgmlKernels* ggml_kernels_avx512() { return cpu_has_avx512() ? detail::ggml_avx512_table() : nullptr; }

const GgmlKernels& ggml_kernels() {
  static const GgmlKernels* best = [] {
    const SimdLevel cap = simd_cap("QPEFT_QUANT_ISA");
    if (cap >= SimdLevel::avx512)
      if (const GgmlKernels* k = ggml_kernels_avx512()) return k;
    if (cap >= SimdLevel::avx2)
      if (const GgmlKernels* k = ggml_kernels_avx2()) return k;
    return &kRef;
  }();
  return *best;
}

std::span<const GgmlTypeTraits> ggml_all_types() {
  static const std::array<GgmlTypeTraits, kGgmlTypeCount> types = [] {
    std::array<GgmlTypeTraits, kGgmlTypeCount> t = kTypes;
    for (GgmlTypeTraits& e : t) {
      e.dequantize = ggml_kernels().dequantize[e.index];
      e.vec_dot = ggml_kernels().vec_dot[e.index];
    }
    return t;
  }();
  return types;
}

const GgmlTypeTraits& ggml_traits(GgmlType type) {
  for (const GgmlTypeTraits& t : ggml_all_types())
    if (t.type == type) return t;
  fail("[ggml] type id {} is not one of q8_0, q4_0, q4_K, q5_K, q6_K", uint32_t(type));
}

bool ggml_type_from_id(uint32_t id, GgmlType* out) {
  for (const GgmlTypeTraits& t : kTypes)
    if (uint32_t(t.type) == id) {
      *out = t.type;
      return true;
    }
  return false;
}

bool ggml_type_from_name(std::string_view name, GgmlType* out) {
  for (const GgmlTypeTraits& t : kTypes)
    if (name == t.name) {
      *out = t.type;
      return true;
    }
  return false;
}

}  // namespace qpeft
