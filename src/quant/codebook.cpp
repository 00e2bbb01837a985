#include "quant/codebook.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

namespace qpeft {

const std::array<float, 16> kNF4Values = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// bitsandbytes csrc fp4_dequantization_lut (the literals as written there).
const std::array<float, 8> kFP4Magnitudes = {
    0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f,
};

namespace {

constexpr QuantFormatInfo kFormats[] = {
    {QuantFormat::NF4, "nf4", 4, 64, ScaleRule::Absmax, Rounding::Bitsandbytes, "nf4"},
    {QuantFormat::FP4, "fp4", 4, 64, ScaleRule::Absmax, Rounding::Bitsandbytes, "fp4"},
    {QuantFormat::NF2, "nf2", 2, 64, ScaleRule::Absmax, Rounding::Argmin, nullptr},
    {QuantFormat::NF3, "nf3", 3, 64, ScaleRule::Absmax, Rounding::Argmin, nullptr},
    {QuantFormat::Uniform2, "uniform2", 2, 64, ScaleRule::MeanStd, Rounding::Argmin, nullptr},
    {QuantFormat::Uniform3, "uniform3", 3, 64, ScaleRule::MeanStd, Rounding::Argmin, nullptr},
    {QuantFormat::Uniform4, "uniform4", 4, 64, ScaleRule::MeanStd, Rounding::Argmin, nullptr},
    {QuantFormat::Int8, "int8", 8, 256, ScaleRule::Absmax, Rounding::Bitsandbytes, nullptr},
    {QuantFormat::Dynamic8, "dynamic8", 8, 256, ScaleRule::Absmax, Rounding::Bitsandbytes, nullptr},
};
static_assert(std::size(kFormats) == size_t(QuantFormat::kCount), "one QuantFormatInfo per QuantFormat");

constexpr bool formats_in_order() {
  for (size_t i = 0; i < std::size(kFormats); ++i)
    if (size_t(kFormats[i].format) != i) return false;
  return true;
}
static_assert(formats_in_order(), "kFormats must be indexed by QuantFormat");

std::vector<float> make_codebook(QuantFormat f) {
  switch (f) {
    case QuantFormat::NF4:
      return {kNF4Values.begin(), kNF4Values.end()};
    case QuantFormat::FP4: {
      // bitsandbytes get_4bit_type("fp4"): [0, .0625, 8, 12, 4, 6, 2, 3, -0, -.0625, ...] / 12.
      static const float m[8] = {0.0f, 0.0625f, 8.0f, 12.0f, 4.0f, 6.0f, 2.0f, 3.0f};
      std::vector<float> v(16);
      for (int i = 0; i < 16; ++i) v[i] = ((i & 8) ? -m[i & 7] : m[i & 7]) / 12.0f;
      return v;
    }
    case QuantFormat::NF2:
      return normal_float_codebook(2);
    case QuantFormat::NF3:
      return normal_float_codebook(3);
    case QuantFormat::Uniform2:
      return uniform_codebook(2);
    case QuantFormat::Uniform3:
      return uniform_codebook(3);
    case QuantFormat::Uniform4:
      return uniform_codebook(4);
    case QuantFormat::Int8: {
      std::vector<float> v(256);
      for (int i = 0; i < 256; ++i) v[i] = float(int8_t(uint8_t(i))) / 127.0f;
      return v;
    }
    case QuantFormat::Dynamic8:
      return dynamic_map();
    case QuantFormat::kCount:
      break;
  }
  fail("[quant] unknown format {}", int(f));
}

}  // namespace

const QuantFormatInfo& quant_format_info(QuantFormat f) {
  QP_CHECK(size_t(f) < std::size(kFormats), "[quant] unknown quantization format id {}", int(f));
  return kFormats[size_t(f)];
}

bool parse_quant_format(std::string_view s, QuantFormat* out) {
  for (const auto& info : kFormats) {
    if (s == info.name) {
      *out = info.format;
      return true;
    }
  }
  return false;
}

std::span<const float> codebook(QuantFormat f) {
  // Built once, on first use, for every format.
  static const std::vector<std::vector<float>> books = [] {
    std::vector<std::vector<float>> b;
    for (size_t i = 0; i < size_t(QuantFormat::kCount); ++i) b.push_back(make_codebook(QuantFormat(i)));
    return b;
  }();
  const auto& v = books.at(size_t(quant_format_info(f).format));
  return {v.data(), v.size()};
}

double inverse_normal_cdf(double p) {
  QP_CHECK(p > 0.0 && p < 1.0, "[inverse_normal_cdf] p = {} is outside (0, 1)", p);
  // Acklam's algorithm (relative error < 1.15e-9) ...
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01,  -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  const double p_low = 0.02425, p_high = 1.0 - p_low;
  double x;
  if (p < p_low) {
    double q = std::sqrt(-2.0 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  } else if (p <= p_high) {
    double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1.0);
  } else {
    double q = std::sqrt(-2.0 * std::log1p(-p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1.0);
  }
  // ... refined by Halley's method on Φ(x) - p, Φ(x) = erfc(-x/√2)/2 (cubic convergence).
  for (int it = 0; it < 2; ++it) {
    double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
    double u = e * std::sqrt(2.0 * M_PI) * std::exp(0.5 * x * x);
    x = x - u / (1.0 + 0.5 * x * u);
  }
  return x;
}

std::vector<float> torch_linspace_f32(float start, float end, int64_t steps, TorchCpu cpu) {
  QP_CHECK(steps >= 1, "[linspace] steps = {} must be >= 1", steps);
  std::vector<float> out(static_cast<size_t>(steps));
  if (steps == 1) {
    out[0] = start;
    return out;
  }
  const bool fma = cpu != TorchCpu::Default;
  const int lanes = cpu == TorchCpu::Avx512 ? 16 : cpu == TorchCpu::Avx2 ? 8 : 0;
  // The kernel's lambdas (start + step·idx, end - step·(steps-idx-1)) are FMA-contracted in the
  // AVX2/AVX-512 builds; Vectorized::arange's base + k·step is not (both seen in the PEFT
  // fixture's uniform4 table).
  auto madd = [fma](float a, float b, float c) { return fma ? std::fma(a, b, c) : a * b + c; };
  const float step = (end - start) / float(steps - 1);
  const int64_t halfway = steps / 2;
  auto value_at = [&](int64_t i) -> float {
    return i < halfway ? madd(step, float(i), start) : madd(-step, float(steps - i - 1), end);
  };
  int64_t i = 0;
  if (lanes > 0) {
    // ATen vectorized_loop: two vectors per iteration, each arange(value_at(idx), step).
    for (; i + 2 * lanes <= steps; i += 2 * lanes) {
      for (int v = 0; v < 2; ++v) {
        const int64_t b = i + v * lanes;
        const float base = value_at(b);
        for (int k = 0; k < lanes; ++k) out[size_t(b + k)] = k == 0 ? base : base + float(k) * step;
      }
    }
  }
  for (; i < steps; ++i) out[size_t(i)] = value_at(i);
  return out;
}

std::vector<float> normal_float_codebook(int k, double offset) {
  QP_CHECK(k >= 2 && k <= 8, "[quant] NormalFloat needs 2..8 bits, got {}", k);
  const int64_t half = int64_t(1) << (k - 1);
  std::vector<float> v;
  // torch.Tensor(list of doubles) rounds each Φ⁻¹ value to float32.
  std::vector<float> pos = torch_linspace_f32(float(offset), 0.5f, half + 1);
  for (int64_t i = 0; i < half; ++i) v.push_back(float(inverse_normal_cdf(double(pos[size_t(i)]))));
  v.push_back(0.0f);
  std::vector<float> neg = torch_linspace_f32(float(offset), 0.5f, half);
  for (int64_t i = 0; i + 1 < half; ++i) v.push_back(float(-inverse_normal_cdf(double(neg[size_t(i)]))));
  std::sort(v.begin(), v.end());
  const float mx = v.back();
  for (float& x : v) x = x / mx;
  return v;
}

std::vector<float> uniform_codebook(int k) {
  QP_CHECK(k >= 1 && k <= 8, "[quant] uniform code book needs 1..8 bits, got {}", k);
  return torch_linspace_f32(-1.0f, 1.0f, int64_t(1) << k);
}

std::vector<float> dynamic_map(TorchCpu cpu) {
  // Python: for i in range(7): boundaries = torch.linspace(0.1, 1, 2**i + 1);
  // means = (b[:-1] + b[1:]) / 2.0; data += (10**(-6 + i) * means) and its negation
  // (float32 tensor times a Python scalar: the scalar is cast to float32 first).
  static const double pow10[7] = {1e-06, 1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0};
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    std::vector<float> b = torch_linspace_f32(0.1f, 1.0f, (int64_t(1) << i) + 1, cpu);
    const float scale = float(pow10[i]);
    std::vector<float> means;
    for (size_t j = 0; j + 1 < b.size(); ++j) means.push_back((b[j] + b[j + 1]) / 2.0f);
    for (float m : means) data.push_back(scale * m);
    for (float m : means) data.push_back(-scale * m);
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  QP_CHECK(data.size() == 256, "[quant] dynamic map has {} values, expected 256", data.size());
  std::sort(data.begin(), data.end());
  return data;
}

std::vector<float> dynamic_map_unsigned(TorchCpu cpu) {
  // Python (signed=False): fraction_items = 2**(i + 1) + 1; no negated copy. Same float32
  // arithmetic as dynamic_map above.
  static const double pow10[7] = {1e-06, 1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0};
  std::vector<float> data;
  for (int i = 0; i < 7; ++i) {
    std::vector<float> b = torch_linspace_f32(0.1f, 1.0f, (int64_t(1) << (i + 1)) + 1, cpu);
    const float scale = float(pow10[i]);
    for (size_t j = 0; j + 1 < b.size(); ++j) data.push_back(scale * ((b[j] + b[j + 1]) / 2.0f));
  }
  data.push_back(0.0f);
  data.push_back(1.0f);
  QP_CHECK(data.size() == 256, "[quant] unsigned dynamic map has {} values, expected 256", data.size());
  std::sort(data.begin(), data.end());
  return data;
}

}  // namespace qpeft
