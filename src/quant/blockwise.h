// Block-wise quantization of a flat float tensor (SPEC §2): the tensor is flattened row-major
// and cut into blocks of B consecutive values (B a power of two in 32..4096; the last block may
// be partial); each block keeps one float32 scale and one k-bit code per value.
//
// Packing (our layout, identical to bitsandbytes for 4 bits): codes form a big-endian bit
// stream, code i in bits [k·i, k·i + k) counted from the most significant bit of byte 0.
//   4 bits: byte j = code[2j] << 4 | code[2j+1]   (element 2j in the HIGH nibble; bitsandbytes)
//   2 bits: byte j = c[4j] << 6 | c[4j+1] << 4 | c[4j+2] << 2 | c[4j+3]
//   3 bits: 8 codes in 3 bytes, c[8j] in the top 3 bits of byte 3j, ...
//   8 bits: one code per byte.
// (PEFT's NFQuantizer packs LIFO, first code in the low bits; we do not copy that.)
// A trailing partial byte is zero-padded. Blocks are multiples of 8 codes, so every block
// starts on a byte boundary.
#pragma once
#include <cstdint>
#include <vector>

#include "quant/codebook.h"

namespace qpeft {

// The smallest whole-byte unit of a k-bit code stream: 8 codes in k bytes.
template <int K>
struct CodeGroup {
  static constexpr int kCodes = 8;
  uint8_t bytes[K];
};
static_assert(sizeof(CodeGroup<2>) == 2 && sizeof(CodeGroup<3>) == 3 && sizeof(CodeGroup<4>) == 4 &&
              sizeof(CodeGroup<8>) == 8);

// One double-quantization super-block (QLoRA): 256 first-level scales stored as 8-bit codes of
// the dynamic map plus one float32 second-level absmax. Stored as bitsandbytes does: the codes
// of all super-blocks in one u8 array, their absmax in one f32 array.
struct DoubleQuantGroup {
  static constexpr int kScales = 256;
  uint8_t qabsmax[kScales];
  float nested_absmax;
};
static_assert(sizeof(DoubleQuantGroup) == 260);

inline int64_t num_blocks(int64_t n, int64_t block) { return (n + block - 1) / block; }
inline int64_t packed_bytes(int64_t n, int bits) { return (n * bits + 7) / 8; }
// Throws a clear error unless block is a power of two in [32, 4096].
void check_block_size(int64_t block, const char* where);

struct BlockQuantOptions {
  QuantFormat format = QuantFormat::NF4;
  int64_t block_size = 64;
  ScaleRule scale = ScaleRule::Absmax;
  Rounding rounding = Rounding::Bitsandbytes;
  // The format's defaults (block, scale rule, rounding).
  static BlockQuantOptions defaults(QuantFormat f);
};

// Scale of one block of n values under a rule. MeanStd reproduces torch's float32
// `block.mean() + 2.5 * block.std()`: the mean is torch_sum_f32 / n, the unbiased std is
// computed in double and rounded (matches all 300 PEFT fixture scales); std = 0 for n < 2.
float block_scale(const float* x, int64_t n, ScaleRule rule);

// torch.sum of n contiguous float32 values on CPU, in ATen's order (vectorised inner sum with 4
// interleaved accumulators, cascade levels, tail, then lanes).
float torch_sum_f32(const float* x, int64_t n, TorchCpu cpu = TorchCpu::Avx2);

// Codes of n values that share one scale (unpacked, one code per byte). scale == 0 gives the
// code of the value nearest 0 (bitsandbytes would compute 0 · inf = NaN there).
void encode_block(const float* x, int64_t n, float scale, QuantFormat f, Rounding r, uint8_t* codes);
// One code (for tests and the reference path).
uint8_t encode_value(float x, float scale, QuantFormat f, Rounding r);

// Quantizes n values: scales[num_blocks] and codes[n] (unpacked). Single-threaded.
void quantize_blocks(const float* x, int64_t n, const BlockQuantOptions& opt, uint8_t* codes, float* scales);
// Same with caller-given scales (e.g. to reproduce a reference's scales exactly).
void quantize_blocks_with_scales(const float* x, int64_t n, const BlockQuantOptions& opt, const float* scales,
                                 uint8_t* codes);
// out[i] = codebook[codes[i]] · scales[i / block].
void dequantize_blocks(const uint8_t* codes, const float* scales, int64_t n, QuantFormat f, int64_t block,
                       float* out);

// k-bit packing as documented above. pack: n codes -> packed_bytes(n, bits) bytes. For 4 bits
// and odd n the last low nibble is `pad` (bitsandbytes pads with the code of 0.0: NF4 7, FP4 0).
void pack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* packed, uint8_t pad = 0);
// Codes [begin, begin + n) of a packed stream.
void unpack_codes(const uint8_t* packed, int64_t begin, int64_t n, int bits, uint8_t* codes);

// ---- double quantization (SPEC §2 "Double quantization"; bitsandbytes compress_statistics) ----
// offset = mean(absmax) (float32 of the double-precision mean); absmax - offset quantized with
// the dynamic map in blocks of 256 (bitsandbytes quantize_blockwise rounding), one float32
// absmax per 256. Dequant: absmax[b] = float(dynamic[q[b]] · nested[b / 256]) + offset.
struct DoubleQuantScales {
  static constexpr int64_t kNestedBlock = 256;
  float offset = 0.0f;
  std::vector<uint8_t> qabsmax;       // [n_blocks]
  std::vector<float> nested_absmax;   // [ceil(n_blocks / 256)]
  // The 8-bit map the codes index (bitsandbytes' nested_quant_map): ours, or the one a
  // checkpoint was written with (its entries may differ from ours by an ulp, see codebook.h).
  std::vector<float> nested_map = std::vector<float>(codebook(QuantFormat::Dynamic8).begin(),
                                                     codebook(QuantFormat::Dynamic8).end());
  int64_t size() const { return int64_t(qabsmax.size()); }
  // Dequantized scales of blocks [b0, b0 + n).
  void decode(int64_t b0, int64_t n, float* out) const;
};
DoubleQuantScales double_quantize(const float* absmax, int64_t n_blocks);

// Storage cost in bits per parameter of a k-bit format with block size B, counting codes,
// scales (fp32, or 8-bit + fp32 per 256 with double quantization), ignoring code books and the
// offset: NF4 + DQ at B = 64 gives 4 + 8/64 + 32/(64·256) = 4.127.
double bits_per_param(QuantFormat f, int64_t block, bool double_quant);

}  // namespace qpeft
