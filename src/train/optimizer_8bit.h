// Kernels of bitsandbytes' AdamW8bit (Dettmers et al., "8-bit Optimizers via Block-wise
// Quantization", 2022), reproduced from bitsandbytes' CUDA kernels (csrc/kernels.cu):
//   - kOptimizerStatic8bit2StateBlockwise<ADAM> for tensors of >= min_8bit_size (4096) elements:
//     exp_avg (m) and exp_avg_sq (v) are uint8 codes in blocks of 256 consecutive elements, one
//     fp32 absmax per block and moment; m indexes the signed dynamic map, v the unsigned one.
//   - kOptimizer32bit2State<ADAM> for smaller tensors (fp32 m and v).
//
// One step of a block, as the kernel does it (all float32, hyper-parameters rounded to float):
//   c1 = 1 - beta1^t,  c2 = sqrt(1 - beta2^t),  step_size = -lr · c2 / c1
//   for each element (g finite):
//     v = map_u[cv] · absmax_v · beta2 + ((1 - beta2) · g) · g
//     m = map_s[cm] · absmax_m · beta1 + (1 - beta1) · g
//   (g NaN/±Inf: m = v = 0 for that element and its parameter is left alone — bnb's rule)
//   absmax_m = max |m|, absmax_v = max |v| over the block (new scales, stored)
//   p = p + step_size · (m / (sqrt(v) + c2 · eps));   if wd > 0: p = p · (1 - lr · wd)
//   cm = quantize(map_s, m / absmax_m), then if sign(map_s[cm]) != sign(m): cm ± 1 (toward m)
//   cv = quantize(map_u, v / absmax_v)
// quantize() is the kernel's bisection on midpoints (quantize_2D / dQuantize<0>, identical
// results on these maps). Weight decay is decoupled but applied AFTER the Adam step, as in every
// bitsandbytes CUDA Adam kernel (torch.optim.AdamW decays first; the two differ by lr·wd·update).
//
// Differences from a CUDA run, all in the last bits: CUDA uses __powf / __fdividef (approximate)
// and contracts a·b + c into FMA; we use powf, IEEE division and no contraction. A value within
// an ulp of a code midpoint can therefore get the neighbouring code. Choices where the kernel's
// result is degenerate: a block whose new absmax is 0 stores the code of 0.0 (m: 127, v: 0)
// where CUDA divides 0/0 (decoded value 0 either way); the padding lanes of a last partial block
// take no part in the absmax (in CUDA they decode m to map_s[128] · absmax · beta1, never above
// the block's true max once any element is nonzero).
#pragma once
#include <cstdint>
#include <cstring>
#include <span>

namespace qpeft {

inline constexpr int64_t kOptim8bitBlock = 256;        // bitsandbytes >= 0.45 (2048 before)
inline constexpr int64_t kOptimMin8bitSize = 4096;     // Optimizer2State min_8bit_size
inline constexpr int64_t kOptimMinPagedSize = 100000;  // get_state_buffer: numel >= 1e5 is paged

inline int64_t optim8bit_blocks(int64_t n) { return (n + kOptim8bitBlock - 1) / kOptim8bitBlock; }

// The maps: signed = create_dynamic_map(signed=True) (= codebook(QuantFormat::Dynamic8)), for m;
// unsigned = create_dynamic_map(signed=False), for v. 256 sorted floats each.
std::span<const float> optim_map_signed();
std::span<const float> optim_map_unsigned();

// The kernel's code for a normalised x (bisection on midpoints of a sorted 256-entry map): the
// scalar reference.
uint8_t quantize_to_map(const float* map, float x);

// The same codes, fast: a table on the top 16 bits of x's order key gives a lower bound of
// q = #{j <= 254 : map[j] < x}, a fixed few compares finish it, and one midpoint test picks q - 1
// or q exactly as the bisection does. No branches on x. Tested equal to quantize_to_map.
// Floats in a monotone unsigned order (for non-NaN): a < b  <=>  ord(a) < ord(b); -0 sorts just
// below +0, which only a -0 map entry (there is none) could tell apart.
inline uint32_t optim_ord(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u ^ (uint32_t(int32_t(u) >> 31) | 0x80000000u);
}

class MapCoder {
 public:
  explicit MapCoder(std::span<const float> map);  // 256 strictly increasing values
  uint8_t encode(float x) const {
    // The bisection's code from q = #{j <= 254 : map[j] < x}: it ends at leaf p = q or q - 1 (the
    // even one) with both in-order neighbours on its path, so it picks between q - 1 and q by their
    // float midpoint, ties to the even index (see quantize_to_map).
    int q = start_[optim_ord(x) >> 16];
    for (int s = 0; s < steps_; ++s) q += int(q < 255) & int(map_[q] < x);
    const int lo = q - int(q > 0);
    const float mid = (map_[lo] + map_[q]) * 0.5f;
    const int take_q = (q & 1) ? int(x > mid) : int(x >= mid);
    const int mask = -take_q;
    return uint8_t((q & mask) | (lo & ~mask));
  }
  const float* map() const { return map_; }
  int steps() const { return steps_; }  // compares after the table look-up

 private:
  static constexpr size_t kBuckets = size_t(1) << 16;
  float map_[256];
  uint8_t start_[kBuckets];
  int steps_;
};
const MapCoder& optim_coder_signed();
const MapCoder& optim_coder_unsigned();

// Block-wise state (de)quantization exactly as the update requantizes: absmax[b] = max |x| over
// block b of 256, code = quantize(map, x / absmax) (+ the sign fix for the signed map). Used for
// tests and to convert a 32-bit checkpoint state.
void quantize_state_8bit(const float* x, int64_t n, bool is_signed, uint8_t* codes, float* absmax);
void dequantize_state_8bit(const uint8_t* codes, const float* absmax, int64_t n, bool is_signed, float* out);

// Per-step float scalars, as bitsandbytes passes them to its kernels.
struct BnbAdamScalars {
  float beta1, beta2, eps, lr, weight_decay;
  float correction2, step_size;
  BnbAdamScalars(double beta1, double beta2, double eps, double weight_decay, double lr, int64_t step);
};

// kOptimizerStatic8bit2StateBlockwise on blocks [b0, b1) of one tensor of n elements.
// p, g: [n] f32; cm, cv: [n] u8 codes; absmax_m, absmax_v: [optim8bit_blocks(n)].
void adam8bit_update_blocks(float* p, const float* g, uint8_t* cm, uint8_t* cv, float* absmax_m, float* absmax_v,
                            int64_t n, int64_t b0, int64_t b1, const BnbAdamScalars& s);

// kOptimizer32bit2State<ADAM> on elements [i0, i1): fp32 m, v (bnb's AdamW8bit for small tensors):
//   m = m·beta1 + (1 - beta1)·g;  v = v·beta2 + (1 - beta2)·(g·g)
//   p = p + step_size · (m / (sqrt(v) + eps · c2));  if wd > 0: p = p · (1 - lr · wd)
void adam_bnb32_update(float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1, const BnbAdamScalars& s);

}  // namespace qpeft
