#include "train/optimizer_8bit.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "quant/codebook.h"

namespace qpeft {

std::span<const float> optim_map_signed() { return codebook(QuantFormat::Dynamic8); }

std::span<const float> optim_map_unsigned() {
  static const std::vector<float> m = dynamic_map_unsigned();
  return {m.data(), m.size()};
}

uint8_t quantize_to_map(const float* map, float x) {
  // bitsandbytes quantize_2D<SIGNED> (same path as dQuantize<0>): pivots 127 ± 64 ± 32 ... ± 1,
  // remembering the last pivot below x (lower) and at or above x (upper); then the midpoint test
  // against the neighbour on x's side. The kernel starts lower/upper at -1 or 0 and 1; that only
  // matters at the ends of the map, where it gives the same code on these maps (map[255] = 1; the
  // unsigned map[0] = 0; a signed x at or below map[0] gets code 0 either way).
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float val = map[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      pivot += i;
    } else {
      upper_pivot = pivot;
      pivot -= i;
    }
    val = map[pivot];
  }
  if (x > val) return uint8_t(x > (map[upper_pivot] + val) * 0.5f ? upper_pivot : pivot);
  return uint8_t(x < (map[lower_pivot] + val) * 0.5f ? lower_pivot : pivot);
}


MapCoder::MapCoder(std::span<const float> map) {
  QP_CHECK(map.size() == 256, "[adamw8bit] an 8-bit map has 256 values, got {}", map.size());
  std::copy(map.begin(), map.end(), map_);
  for (int j = 1; j < 256; ++j) QP_CHECK(map_[j - 1] < map_[j], "[adamw8bit] the 8-bit map is not strictly sorted");
  // start_[b] = #{j <= 254 : ord(map[j]) < b << 16}: a lower bound of q(x) for any x in bucket b.
  int j = 0;
  steps_ = 0;
  for (uint64_t b = 0; b < kBuckets; ++b) {
    while (j < 255 && uint64_t(optim_ord(map_[j])) < (b << 16)) ++j;
    start_[b] = uint8_t(j);
    int k = j;
    while (k < 255 && uint64_t(optim_ord(map_[k])) < ((b + 1) << 16)) ++k;
    steps_ = std::max(steps_, k - j);
  }
}

const MapCoder& optim_coder_signed() {
  static const MapCoder c(optim_map_signed());
  return c;
}

const MapCoder& optim_coder_unsigned() {
  static const MapCoder c(optim_map_unsigned());
  return c;
}

namespace {

// Code of one state value given its block's absmax (as the kernel requantizes).
inline uint8_t encode_m(const MapCoder& coder, float m, float absmax) {
  if (!(absmax > 0.0f)) return 127;  // map_s[127] = 0
  uint8_t c = coder.encode(m / absmax);
  // Keep the sign of m (bnb: "make sure state1 term has still the same sign after quantization").
  if (std::signbit(coder.map()[c]) != std::signbit(m)) c = uint8_t(m > 0.0f ? c + 1 : c - 1);
  return c;
}

inline uint8_t encode_v(const MapCoder& coder, float v, float absmax) {
  if (!(absmax > 0.0f)) return 0;  // map_u[0] = 0
  return coder.encode(v / absmax);
}

}  // namespace

void quantize_state_8bit(const float* x, int64_t n, bool is_signed, uint8_t* codes, float* absmax) {
  const MapCoder& coder = is_signed ? optim_coder_signed() : optim_coder_unsigned();
  for (int64_t b = 0; b < optim8bit_blocks(n); ++b) {
    const int64_t i0 = b * kOptim8bitBlock, i1 = std::min(n, i0 + kOptim8bitBlock);
    float amax = -FLT_MAX;
    for (int64_t i = i0; i < i1; ++i) amax = std::max(amax, std::fabs(x[i]));
    absmax[b] = amax;
    for (int64_t i = i0; i < i1; ++i) codes[i] = is_signed ? encode_m(coder, x[i], amax) : encode_v(coder, x[i], amax);
  }
}

void dequantize_state_8bit(const uint8_t* codes, const float* absmax, int64_t n, bool is_signed, float* out) {
  const float* map = is_signed ? optim_map_signed().data() : optim_map_unsigned().data();
  for (int64_t i = 0; i < n; ++i) out[i] = map[codes[i]] * absmax[i / kOptim8bitBlock];
}

BnbAdamScalars::BnbAdamScalars(double b1, double b2, double eps_, double wd, double lr_, int64_t step)
    : beta1(float(b1)), beta2(float(b2)), eps(float(eps_)), lr(float(lr_)), weight_decay(float(wd)) {
  QP_CHECK(step >= 1, "[adamw8bit] step {} must be >= 1", step);
  const float correction1 = 1.0f - std::pow(beta1, float(step));
  correction2 = std::sqrt(1.0f - std::pow(beta2, float(step)));
  step_size = -lr * correction2 / correction1;
}

void adam8bit_update_blocks(float* p, const float* g, uint8_t* cm, uint8_t* cv, float* absmax_m, float* absmax_v,
                            int64_t n, int64_t b0, int64_t b1, const BnbAdamScalars& s) {
  const MapCoder& coder_s = optim_coder_signed();
  const MapCoder& coder_u = optim_coder_unsigned();
  const float* map_s = coder_s.map();
  const float* map_u = coder_u.map();
  const float decay = 1.0f - s.lr * s.weight_decay;
  float m[kOptim8bitBlock], v[kOptim8bitBlock];
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t i0 = b * kOptim8bitBlock, len = std::min(n - i0, kOptim8bitBlock);
    const float am = absmax_m[b], av = absmax_v[b];
    float new_am = -FLT_MAX, new_av = -FLT_MAX;
    // 1. dequantize, update the moments, new block scales
    for (int64_t j = 0; j < len; ++j) {
      const float gj = g[i0 + j];
      if (std::isfinite(gj)) {
        v[j] = map_u[cv[i0 + j]] * av;
        v[j] = v[j] * s.beta2 + (1.0f - s.beta2) * gj * gj;
        m[j] = map_s[cm[i0 + j]] * am;
        m[j] = m[j] * s.beta1 + (1.0f - s.beta1) * gj;
      } else {
        m[j] = 0.0f;
        v[j] = 0.0f;
      }
      new_am = std::max(new_am, std::fabs(m[j]));
      new_av = std::max(new_av, std::fabs(v[j]));
    }
    absmax_m[b] = new_am;
    absmax_v[b] = new_av;
    // 2. parameter update from the fp32 moments
    for (int64_t j = 0; j < len; ++j) {
      if (!std::isfinite(g[i0 + j])) continue;
      float pj = p[i0 + j] + s.step_size * (m[j] / (std::sqrt(v[j]) + s.correction2 * s.eps));
      if (s.weight_decay > 0.0f) pj = pj * decay;
      p[i0 + j] = pj;
    }
    // 3. requantize with the new scales
    for (int64_t j = 0; j < len; ++j) {
      cm[i0 + j] = encode_m(coder_s, m[j], new_am);
      cv[i0 + j] = encode_v(coder_u, v[j], new_av);
    }
  }
}

void adam_bnb32_update(float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1, const BnbAdamScalars& s) {
  const float decay = 1.0f - s.lr * s.weight_decay;
  for (int64_t i = i0; i < i1; ++i) {
    const float gi = g[i];
    m[i] = m[i] * s.beta1 + (1.0f - s.beta1) * gi;
    v[i] = v[i] * s.beta2 + (1.0f - s.beta2) * (gi * gi);
    float pi = p[i] + s.step_size * (m[i] / (std::sqrt(v[i]) + s.eps * s.correction2));
    if (s.weight_decay > 0.0f) pi = pi * decay;
    p[i] = pi;
  }
}

}  // namespace qpeft
