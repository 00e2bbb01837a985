// llama.cpp's (ggml's) weight block formats, byte for byte, so GGUF tensors can be used in
// place as frozen weights: Q8_0, Q4_0 (blocks of 32) and the K-quants Q4_K, Q5_K, Q6_K
// (super-blocks of 256). A row of n elements is n / block blocks laid end to end; all f16
// fields are IEEE half bits, little-endian, as ggml writes them.
//
// Each type has a scalar reference dequantizer (the formula ggml documents, evaluated in the
// same float order: K-quants compute d·scale and dmin·min as floats first) and AVX2 / AVX-512
// twins with the same bits (ggml_blocks_avx2.cpp, ggml_blocks_avx512.cpp, built with
// -ffp-contract=off). ggml_kernels() picks one table once, at start-up: avx512 > avx2 > scalar,
// capped by QPEFT_QUANT_ISA (as quant/kernels.h). Quantizers are scalar: Q8_0 and Q4_0 give
// ggml's reference bits; the K-quants search scales like ggml's reference (least squares over
// candidate scales), close to but not always equal to its bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace qpeft {

// Values are ggml's type ids (enum ggml_type), as GGUF stores them.
enum class GgmlType : uint32_t { Q4_0 = 2, Q8_0 = 8, Q4_K = 12, Q5_K = 13, Q6_K = 14 };
inline constexpr int kGgmlTypeCount = 5;
inline constexpr int kGgmlSuperBlock = 256;  // QK_K

// value[j] = qs[j] · d
struct GgmlBlockQ8_0 {
  uint16_t d;  // f16
  int8_t qs[32];
};
// value[j] = ((qs[j] & 15) - 8) · d, value[j + 16] = ((qs[j] >> 4) - 8) · d   (j < 16)
struct GgmlBlockQ4_0 {
  uint16_t d;  // f16
  uint8_t qs[16];
};
// 8 sub-blocks of 32, each with a 6-bit scale sc and min m packed in scales[12] (see
// ggml_scale_min_k4): value = (d·sc)·q - (dmin·m). Chunk c (of 4) of 64 values: qs[32c + l]
// holds value 64c + l in its low nibble (sub-block 2c) and 64c + 32 + l in its high nibble.
struct GgmlBlockQ4_K {
  uint16_t d, dmin;  // f16
  uint8_t scales[12];
  uint8_t qs[128];
};
// Q4_K plus a fifth bit: value 64c + l adds 16 when bit 2c of qh[l] is set, 64c + 32 + l
// when bit 2c + 1 is.
struct GgmlBlockQ5_K {
  uint16_t d, dmin;  // f16
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
// 16 sub-blocks of 16 with int8 scales: value = (d·scales[v / 16])·(q - 32), q 6 bits. Half h
// (of 2) of 128 values, l < 32, ql = ql + 64h, qh = qh + 32h:
//   value 128h + l:      ql[l] & 15        | (qh[l] & 3) << 4
//   value 128h + 32 + l: ql[l + 32] & 15   | (qh[l] >> 2 & 3) << 4
//   value 128h + 64 + l: ql[l] >> 4        | (qh[l] >> 4 & 3) << 4
//   value 128h + 96 + l: ql[l + 32] >> 4   | (qh[l] >> 6 & 3) << 4
struct GgmlBlockQ6_K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;  // f16
};
static_assert(sizeof(GgmlBlockQ8_0) == 34);
static_assert(sizeof(GgmlBlockQ4_0) == 18);
static_assert(sizeof(GgmlBlockQ4_K) == 144);
static_assert(sizeof(GgmlBlockQ5_K) == 176);
static_assert(sizeof(GgmlBlockQ6_K) == 210);

// llama.cpp's CPU products with these weights first round their f32 input to 8-bit blocks —
// Q8_0 for Q8_0/Q4_0 weights, Q8_K for the K-quants — then multiply in integers. Q8_K:
// value[j] = qs[j] · d, with bsums[g] = Σ qs[16g .. 16g + 16).
struct GgmlBlockQ8_K {
  float d;
  int8_t qs[256];
  int16_t bsums[16];
};
static_assert(sizeof(GgmlBlockQ8_K) == 292);

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block: sub-blocks 0..3 sit in
// the low 6 bits of scales[j] and scales[j + 4]; 4..7 take their low 4 bits from the nibbles of
// scales[j + 4] and their top 2 bits from the top bits of scales[j - 4] and scales[j].
inline void ggml_scale_min_k4(int j, const uint8_t* scales, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *m = scales[j + 4] & 63;
  } else {
    *sc = uint8_t((scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4));
    *m = uint8_t((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

// Σ_j m_j · (bsums[2j] + bsums[2j + 1]): a Q4_K/Q5_K block's mins against the sums of its
// Q8_K activations over each sub-block of 32.
inline int32_t ggml_k4_min_sum(const uint8_t* scales, const int16_t* bsums) {
  int32_t s = 0;
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ggml_scale_min_k4(j, scales, &sc, &m);
    s += int32_t(m) * (bsums[2 * j] + bsums[2 * j + 1]);
  }
  return s;
}

// llama.cpp's hsum_float_8 of 8 lane sums: (hi + lo) halves, then (0 + 2, 1 + 3), then the two.
inline float ggml_hsum8(const float* acc) {
  const float r0 = acc[4] + acc[0], r1 = acc[5] + acc[1], r2 = acc[6] + acc[2], r3 = acc[7] + acc[3];
  return (r0 + r2) + (r1 + r3);
}

// Dequantizes n elements (n a multiple of the type's block) from n / block blocks into out [n].
using GgmlDequantizeFn = void (*)(const void* blocks, int64_t n, float* out);
// Quantizes x [n] (n a multiple of the block; finite values) into n / block blocks.
using GgmlQuantizeFn = void (*)(const float* x, int64_t n, void* blocks);

// Rounds x [n] (finite) into n / block activation blocks, as llama.cpp's x86 build does.
//   Q8_0: d = f16(max|x| / 127), q = round-half-even(x · (127 / max|x|)).
//   Q8_K: s = -127 / (the value of largest magnitude), q = min(127, round-half-even(x · s)), d = 1 / s.
void ggml_quantize_activations_q8_0(const float* x, int64_t n, void* blocks);
void ggml_quantize_activations_q8_K(const float* x, int64_t n, void* blocks);
using GgmlQuantizeActivationsFn = void (*)(const float* x, int64_t n, void* blocks);

// One weight row against `rows` activation rows: out[r · out_stride] = Σ over n elements of
// weight · activation row r, from n / block weight blocks and the activation blocks of row r
// (at activations + r · activation_row_bytes). The integer sums per block (and per scale) are
// exact; they are combined in f32 in the same order by every table, and for every row count,
// so all give the same bits. Several rows share the weight's unpacking (prompts, evaluation).
using GgmlVecDotFn = void (*)(const void* weight_blocks, const void* activations, int64_t activation_row_bytes,
                              int64_t rows, int64_t n, float* out, int64_t out_stride);

// One dequantizer and one dot product per type, indexed by GgmlTypeTraits::index.
struct GgmlKernels {
  const char* isa;  // "scalar", "avx2", "avx512"
  GgmlDequantizeFn dequantize[kGgmlTypeCount];
  GgmlVecDotFn vec_dot[kGgmlTypeCount];
};

const GgmlKernels& ggml_kernels();      // the fastest this CPU supports, capped by QPEFT_QUANT_ISA
const GgmlKernels& ggml_kernels_ref();  // scalar reference
// nullptr when not supported by this CPU.
const GgmlKernels* ggml_kernels_avx2();
const GgmlKernels* ggml_kernels_avx512();

struct GgmlTypeTraits {
  const char* name;  // ggml's spelling: "q8_0", "q4_0", "q4_K", "q5_K", "q6_K"
  GgmlType type;
  int index;  // into GgmlKernels::dequantize and ggml_all_types()
  int64_t block;  // elements per block
  size_t block_bytes;
  GgmlDequantizeFn dequantize_ref;
  GgmlQuantizeFn quantize;
  // The activation blocks llama.cpp multiplies this type with (Q8_0 or Q8_K).
  int64_t activation_block;
  size_t activation_block_bytes;
  GgmlQuantizeActivationsFn quantize_activations;
  GgmlDequantizeFn dequantize;  // ggml_kernels()'s, chosen at the first call
  GgmlVecDotFn vec_dot;         // likewise
};

std::span<const GgmlTypeTraits> ggml_all_types();  // q8_0, q4_0, q4_K, q5_K, q6_K
const GgmlTypeTraits& ggml_traits(GgmlType type);
// False for an id or name this library does not read (f16, q2_K, iq*, ...).
bool ggml_type_from_id(uint32_t id, GgmlType* out);
bool ggml_type_from_name(std::string_view name, GgmlType* out);
// Bytes of a row of n elements; n must be a multiple of the block (checked by callers).
inline int64_t ggml_row_bytes(const GgmlTypeTraits& t, int64_t n) { return n / t.block * int64_t(t.block_bytes); }

namespace detail {
const GgmlKernels* ggml_avx2_table();    // ggml_blocks_avx2.cpp (no CPU check)
const GgmlKernels* ggml_avx512_table();  // ggml_blocks_avx512.cpp (no CPU check)
}  // namespace detail

}  // namespace qpeft
