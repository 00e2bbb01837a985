// Quantization formats and their code books (SPEC §2). Every value here is reproduced to the
// bit from the reference implementation named next to it, so codes we write decode identically
// in bitsandbytes / PEFT and back.
//
// A format is one entry of one traits table indexed by `QuantFormat`; the code book of a k-bit
// format has 2^k float32 values indexed by the stored code (for FP4 the index is the bit
// pattern, so the values are not sorted).
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace qpeft {

enum class QuantFormat : uint8_t {
  NF4,       // bitsandbytes NF4 (QLoRA), 16 values
  FP4,       // bitsandbytes e2m1 FP4, sign in bit 3
  NF2,       // NormalFloat-k by the SPEC formula (PEFT NFQuantizer "normal")
  NF3,
  Uniform2,  // linspace(-1, 1, 2^k) in float32 (LoftQ / PEFT NFQuantizer "uniform")
  Uniform3,
  Uniform4,
  Int8,      // symmetric absmax int8: code = two's-complement q, value q / 127
  Dynamic8,  // bitsandbytes create_dynamic_map(signed=True, 7, 8): 256 sorted values
  kCount
};

// How a block's scale is chosen.
enum class ScaleRule : uint8_t {
  Absmax,   // max |x| over the block (bitsandbytes, PEFT "normal")
  MeanStd,  // mean + 2.5 · std (unbiased) over the block (LoftQ / PEFT "uniform")
};

// How a normalised value picks its code.
enum class Rounding : uint8_t {
  // bitsandbytes CUDA kQuantizeBlockwise: n = x * (1 / scale) and the decision tree /
  // bisection on midpoints (NF4: dQuantizeNF4's literal thresholds, FP4: dQuantizeFP4 on |n|
  // with the sign from n < 0, Dynamic8: dQuantize<0>); other formats: n > midpoint goes up.
  Bitsandbytes,
  // PEFT NFQuantizer and bitsandbytes' torch (CPU/default) backend: n = x / scale (float32
  // division) and argmin_j |n - code[j]|, ties to the first index.
  Argmin,
};

struct QuantFormatInfo {
  QuantFormat format;
  const char* name;            // "nf4"
  int bits;                    // code width: 2, 3, 4 or 8
  int default_block;           // 64 for 4-bit formats
  ScaleRule default_scale;
  Rounding default_rounding;
  const char* bnb_quant_type;  // "nf4" / "fp4" for bitsandbytes' Params4bit, else nullptr
};

const QuantFormatInfo& quant_format_info(QuantFormat f);
inline int quant_bits(QuantFormat f) { return quant_format_info(f).bits; }
inline const char* quant_format_name(QuantFormat f) { return quant_format_info(f).name; }
// Parses "nf4", "fp4", "nf2", "nf3", "uniform2".."uniform4", "int8", "dynamic8".
bool parse_quant_format(std::string_view s, QuantFormat* out);

// The code book of a format: 2^bits values indexed by code.
std::span<const float> codebook(QuantFormat f);

// ---- constructions (exposed for tests and for other k) ----

// Standard normal quantile Φ⁻¹(p), p in (0, 1): Acklam's rational approximation followed by
// two Halley steps on erfc, accurate to a few ulps of double.
double inverse_normal_cdf(double p);

// Which ATen CPU kernel build computed a float32 result. Reference numbers computed by torch
// (code books built with torch.linspace, block means) depend on it at the last ulp:
//   Default: no vectors, no FMA; Avx2: 8 float lanes, a*b+c contracted to FMA (GCC builds the
//   AVX2 kernels with -mfma); Avx512: 16 lanes, FMA. The LoftQ fixtures were made on Avx2, the
//   capability most x86 torch installs run.
enum class TorchCpu : uint8_t { Default, Avx2, Avx512 };

// torch.linspace(start, end, steps) for float32 on CPU, reproducing ATen's linspace kernel:
// step = (end - start) / (steps - 1) in float; element i < steps/2 is start + step·i, the
// rest end - step·(steps - 1 - i) (both FMA-contracted in the vector builds); with vectors,
// blocks of 2·lanes elements take Vectorized::arange(base(idx), step) = base + k·step (not
// contracted) from the value at the block start.
std::vector<float> torch_linspace_f32(float start, float end, int64_t steps, TorchCpu cpu = TorchCpu::Avx2);

// NormalFloat-k (SPEC §2 / PEFT create_normal_map(offset=0.9677083, symmetric=False)):
// positives Φ⁻¹(linspace(offset, 0.5, 2^(k-1) + 1)[:-1]), negatives -Φ⁻¹(linspace(offset,
// 0.5, 2^(k-1))[:-1]), one exact 0; each rounded to float32, sorted, divided by the max in
// float32. k in [2, 8].
std::vector<float> normal_float_codebook(int k, double offset = 0.9677083);

// linspace(-1, 1, 2^k) in float32 (torch, as an AVX2 build computes it: the PEFT fixtures).
std::vector<float> uniform_codebook(int k);

// bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), sorted.
// bitsandbytes builds it at run time with torch.linspace, so a few entries differ by one ulp
// between torch CPU builds (see the test); Avx2 is the one we store and write.
std::vector<float> dynamic_map(TorchCpu cpu = TorchCpu::Avx2);
// bitsandbytes create_dynamic_map(signed=False, 7, 8), sorted: the map of 8-bit optimizers'
// second moment (exp_avg_sq). For i in 0..6: 2^(i+1) midpoints of linspace(0.1, 1, 2^(i+1) + 1)
// scaled by 10^(i-6) (254 values), plus 0 and 1.0; all >= 0, [0] = 0, [255] = 1.
std::vector<float> dynamic_map_unsigned(TorchCpu cpu = TorchCpu::Avx2);

// The 16 NF4 values exactly as bitsandbytes hard-codes them (nf4_dequantization_lut).
extern const std::array<float, 16> kNF4Values;
// bitsandbytes fp4_dequantization_lut: magnitude by the low 3 bits (0, .0625, 8, 12, 4, 6, 2, 3)/12.
extern const std::array<float, 8> kFP4Magnitudes;

}  // namespace qpeft
