// ggml's block formats (quant/ggml_blocks.h) and the GgmlWeight over them: byte layouts,
// hand-built known-answer blocks, every SIMD dequantizer this machine supports against the
// scalar reference bit for bit (random blocks with sane f16 scales, and quantized Gaussian
// data; 1, 2, 3 and 7 blocks per row), quantize→dequantize error bounds, and the weight through
// linear / decode_to_f32 / decode_rows_bf16 against a naive product.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "ops/autograd.h"
#include "ops/linear.h"
#include "quant/ggml_blocks.h"
#include "quant/ggml_weight.h"
#include "quant_test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

// The reference first, then each SIMD table the CPU supports. Prints which ran (once).
std::vector<const GgmlKernels*> tables() {
  std::vector<const GgmlKernels*> ks{&ggml_kernels_ref()};
  const GgmlKernels* avx2 = ggml_kernels_avx2();
  const GgmlKernels* avx512 = ggml_kernels_avx512();
  if (avx2) ks.push_back(avx2);
  if (avx512) ks.push_back(avx512);
  static bool printed = false;
  if (!printed) {
    printed = true;
    std::printf("ggml kernels: scalar ran, avx2 %s, avx512 %s; ggml_kernels() = %s\n",
                avx2 ? "ran" : "SKIPPED (not supported here)", avx512 ? "ran" : "SKIPPED (not supported here)",
                ggml_kernels().isa);
  }
  return ks;
}

uint16_t f16(float v) { return f32_to_f16(v); }

void put_f16(std::vector<uint8_t>& bytes, size_t at, float v) {
  const uint16_t h = f16(v);
  std::memcpy(bytes.data() + at, &h, 2);
}

// `nblocks` blocks of random bytes whose f16 fields are replaced by sane scales (finite, both
// signs, some zero), so every value decodes to a finite float.
std::vector<uint8_t> random_blocks(const GgmlTypeTraits& t, int64_t nblocks, uint64_t seed) {
  Rng r(seed);
  std::vector<uint8_t> b(size_t(nblocks) * t.block_bytes);
  for (auto& v : b) v = uint8_t(r.below(256));
  for (int64_t i = 0; i < nblocks; ++i) {
    const size_t o = size_t(i) * t.block_bytes;
    auto scale = [&] { return r.below(9) == 0 ? 0.0f : float(r.normal()) * 0.01f; };
    switch (t.type) {
      case GgmlType::Q8_0:
      case GgmlType::Q4_0: put_f16(b, o, scale()); break;
      case GgmlType::Q4_K:
      case GgmlType::Q5_K:
        put_f16(b, o + offsetof(GgmlBlockQ4_K, d), scale());
        put_f16(b, o + offsetof(GgmlBlockQ4_K, dmin), scale());
        break;
      case GgmlType::Q6_K: put_f16(b, o + offsetof(GgmlBlockQ6_K, d), scale()); break;
    }
  }
  return b;
}

// Dequantizes `rows` rows of `cols` with every table and compares each to the reference bit for
// bit; sentinels around the output catch writes outside it.
void expect_tables_agree(const GgmlTypeTraits& t, const std::vector<uint8_t>& blocks, int64_t rows, int64_t cols,
                         const std::string& what) {
  const int64_t row_bytes = ggml_row_bytes(t, cols);
  ASSERT_EQ(int64_t(blocks.size()), rows * row_bytes);
  std::vector<float> want(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    ggml_kernels_ref().dequantize[t.index](blocks.data() + r * row_bytes, cols, want.data() + r * cols);
  for (float v : want) ASSERT_TRUE(std::isfinite(v)) << t.name << " " << what;
  for (const GgmlKernels* k : tables()) {
    std::vector<float> got(size_t(rows * cols) + 2, -7.0f);
    for (int64_t r = 0; r < rows; ++r)
      k->dequantize[t.index](blocks.data() + r * row_bytes, cols, got.data() + 1 + r * cols);
    EXPECT_EQ(got.front(), -7.0f) << k->isa << " " << t.name << " wrote before out";
    EXPECT_EQ(got.back(), -7.0f) << k->isa << " " << t.name << " wrote after out";
    int64_t first_diff = -1;
    for (int64_t i = 0; i < rows * cols && first_diff < 0; ++i)
      if (bits_of(got[size_t(i) + 1]) != bits_of(want[size_t(i)])) first_diff = i;
    EXPECT_EQ(first_diff, -1) << k->isa << " " << t.name << " " << what << " [" << rows << ", " << cols
                              << "]: element " << first_diff << " is "
                              << (first_diff >= 0 ? got[size_t(first_diff) + 1] : 0.0f) << ", reference "
                              << (first_diff >= 0 ? want[size_t(first_diff)] : 0.0f);
  }
}

std::vector<float> dequantize_ref(const GgmlTypeTraits& t, const std::vector<uint8_t>& blocks, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  t.dequantize_ref(blocks.data(), n, out.data());
  return out;
}

std::vector<uint8_t> quantize_vec(const GgmlTypeTraits& t, const std::vector<float>& x) {
  std::vector<uint8_t> b(size_t(ggml_row_bytes(t, int64_t(x.size()))));
  t.quantize(x.data(), int64_t(x.size()), b.data());
  return b;
}

double relative_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double e = 0, s = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    e += double(x[i] - y[i]) * double(x[i] - y[i]);
    s += double(x[i]) * double(x[i]);
  }
  return std::sqrt(e / s);
}

Tensor random_matrix(int64_t r, int64_t c, uint64_t seed, float sd = 0.05f) {
  return Tensor::from_vector({r, c}, gaussian(r * c, seed, sd));
}

}  // namespace

TEST(GgmlBlocks, LayoutsAreGgmls) {
  EXPECT_EQ(offsetof(GgmlBlockQ8_0, qs), 2u);
  EXPECT_EQ(offsetof(GgmlBlockQ4_0, qs), 2u);
  EXPECT_EQ(offsetof(GgmlBlockQ4_K, dmin), 2u);
  EXPECT_EQ(offsetof(GgmlBlockQ4_K, scales), 4u);
  EXPECT_EQ(offsetof(GgmlBlockQ4_K, qs), 16u);
  EXPECT_EQ(offsetof(GgmlBlockQ5_K, qh), 16u);
  EXPECT_EQ(offsetof(GgmlBlockQ5_K, qs), 48u);
  EXPECT_EQ(offsetof(GgmlBlockQ6_K, qh), 128u);
  EXPECT_EQ(offsetof(GgmlBlockQ6_K, scales), 192u);
  EXPECT_EQ(offsetof(GgmlBlockQ6_K, d), 208u);

  struct Want {
    const char* name;
    uint32_t id;
    int64_t block;
    size_t bytes;
  };
  const Want want[] = {{"q8_0", 8, 32, 34}, {"q4_0", 2, 32, 18}, {"q4_K", 12, 256, 144}, {"q5_K", 13, 256, 176},
                       {"q6_K", 14, 256, 210}};
  ASSERT_EQ(ggml_all_types().size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    const GgmlTypeTraits& t = ggml_all_types()[i];
    EXPECT_STREQ(t.name, want[i].name);
    EXPECT_EQ(uint32_t(t.type), want[i].id);
    EXPECT_EQ(t.index, int(i));
    EXPECT_EQ(t.block, want[i].block);
    EXPECT_EQ(t.block_bytes, want[i].bytes);
    EXPECT_EQ(t.dequantize, ggml_kernels().dequantize[i]);
    EXPECT_EQ(&ggml_traits(t.type), &t);
    GgmlType by_id, by_name;
    ASSERT_TRUE(ggml_type_from_id(want[i].id, &by_id));
    ASSERT_TRUE(ggml_type_from_name(want[i].name, &by_name));
    EXPECT_EQ(by_id, t.type);
    EXPECT_EQ(by_name, t.type);
  }
  GgmlType unused;
  EXPECT_FALSE(ggml_type_from_id(1, &unused));   // f16
  EXPECT_FALSE(ggml_type_from_id(10, &unused));  // q2_K
  EXPECT_FALSE(ggml_type_from_name("q4_k", &unused));
  EXPECT_THROW(ggml_traits(GgmlType(3)), Error);
}

// ---- Known answers: one block built by hand from the documented layout ----

TEST(GgmlBlocks, KnownAnswerQ8_0AndQ4_0) {
  GgmlBlockQ8_0 b8{};
  b8.d = f16(0.25f);
  for (int j = 0; j < 32; ++j) b8.qs[j] = int8_t(j * 8 - 128);  // -128 .. 120
  GgmlBlockQ4_0 b4{};
  b4.d = f16(0.5f);
  for (int j = 0; j < 16; ++j) b4.qs[j] = uint8_t(j | (15 - j) << 4);  // nibbles 0..15 and 15..0
  for (const GgmlKernels* k : tables()) {
    float out[32];
    k->dequantize[ggml_traits(GgmlType::Q8_0).index](&b8, 32, out);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], (j * 8 - 128) * 0.25f) << k->isa << " q8_0 " << j;
    k->dequantize[ggml_traits(GgmlType::Q4_0).index](&b4, 32, out);
    EXPECT_EQ(out[0], -4.0f) << k->isa;
    EXPECT_EQ(out[8], 0.0f) << k->isa;
    EXPECT_EQ(out[15], 3.5f) << k->isa;
    EXPECT_EQ(out[16], 3.5f) << k->isa;  // high nibble of qs[0] = 15
    EXPECT_EQ(out[31], -4.0f) << k->isa;
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(out[j], (j - 8) * 0.5f) << k->isa << " q4_0 " << j;
      EXPECT_EQ(out[j + 16], (7 - j) * 0.5f) << k->isa << " q4_0 " << j + 16;
    }
  }
}

namespace {

// Scales and mins of the 8 sub-blocks, with top bits set so the 6-bit packing matters.
constexpr uint8_t kSc[8] = {1, 2, 3, 4, 17, 33, 49, 63};
constexpr uint8_t kMin[8] = {0, 5, 10, 63, 16, 32, 48, 7};

// scales[12] from the documented packing: sub-blocks 0..3 in the low 6 bits of bytes 0..3
// (scale) and 4..7 (min); 4..7 split into a low nibble in bytes 8..11 (scale low, min high)
// and 2 top bits in bits 6-7 of bytes 0..3 (scale) and 4..7 (min).
void hand_pack_scales(uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = uint8_t(kSc[j] | (kSc[j + 4] >> 4) << 6);
    s[j + 4] = uint8_t(kMin[j] | (kMin[j + 4] >> 4) << 6);
    s[j + 8] = uint8_t((kSc[j + 4] & 15) | (kMin[j + 4] & 15) << 4);
  }
}

}  // namespace

TEST(GgmlBlocks, KnownAnswerQ4_KAndQ5_K) {
  GgmlBlockQ4_K b4{};
  b4.d = f16(1.0f);
  b4.dmin = f16(0.5f);
  hand_pack_scales(b4.scales);
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    ggml_scale_min_k4(j, b4.scales, &sc, &m);
    EXPECT_EQ(sc, kSc[j]) << j;
    EXPECT_EQ(m, kMin[j]) << j;
  }
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) b4.qs[32 * c + l] = uint8_t((l & 15) | (15 - (l & 15)) << 4);
  GgmlBlockQ5_K b5{};
  b5.d = b4.d;
  b5.dmin = b4.dmin;
  std::memcpy(b5.scales, b4.scales, 12);
  std::memcpy(b5.qs, b4.qs, 128);
  b5.qh[3] = 0x01;  // value 3 (chunk 0, low nibble) +16
  b5.qh[7] = 0x80;  // value 64·3 + 32 + 7 (chunk 3, high nibble) +16
  b5.qh[9] = 0x0c;  // values 64 + 9 and 64 + 32 + 9 (chunk 1) +16

  // value = d·sc·q - dmin·m
  auto want = [](int v, int q) { return float(kSc[v / 32]) * float(q) - 0.5f * float(kMin[v / 32]); };
  for (const GgmlKernels* k : tables()) {
    float out[256];
    k->dequantize[ggml_traits(GgmlType::Q4_K).index](&b4, 256, out);
    EXPECT_EQ(out[0], want(0, 0)) << k->isa;            // 0
    EXPECT_EQ(out[5], want(5, 5)) << k->isa;            // 5
    EXPECT_EQ(out[32 + 5], want(37, 10)) << k->isa;     // 2·5 - 0.5·5
    EXPECT_EQ(out[128 + 15], want(143, 15)) << k->isa;  // 17·15 - 8
    EXPECT_EQ(out[255], want(255, 0)) << k->isa;        // -3.5
    EXPECT_EQ(out[255], -3.5f) << k->isa;
    EXPECT_EQ(out[143], 247.0f) << k->isa;
    for (int v = 0; v < 256; ++v) {
      const int l = v % 32, hi = (v / 32) % 2;
      EXPECT_EQ(out[v], want(v, hi ? 15 - (l & 15) : (l & 15))) << k->isa << " q4_K " << v;
    }
    k->dequantize[ggml_traits(GgmlType::Q5_K).index](&b5, 256, out);
    EXPECT_EQ(out[3], want(3, 3 + 16)) << k->isa;
    EXPECT_EQ(out[2], want(2, 2)) << k->isa;
    EXPECT_EQ(out[192 + 32 + 7], want(231, 15 - 7 + 16)) << k->isa;
    EXPECT_EQ(out[64 + 9], want(73, 9 + 16)) << k->isa;
    EXPECT_EQ(out[64 + 32 + 9], want(105, 6 + 16)) << k->isa;
    EXPECT_EQ(out[9], want(9, 9)) << k->isa;  // bits 2-3 of qh[9] belong to chunk 1 only
    EXPECT_EQ(out[32 + 9], want(41, 6)) << k->isa;
  }
}

TEST(GgmlBlocks, KnownAnswerQ6_K) {
  GgmlBlockQ6_K b{};
  b.d = f16(0.25f);
  for (int j = 0; j < 16; ++j) b.scales[j] = int8_t(j - 8);  // -8 .. 7: negative scales too
  // Every code 0 (value -32) except a few, set from the layout:
  b.ql[5] = 0x07;            // value 5: low nibble 7, qh bits 0-1 of qh[5]
  b.qh[5] = 0x02;            //   -> q = 7 | 2 << 4 = 39
  b.ql[64 + 32 + 3] = 0xa0;  // value 128 + 96 + 3: high nibble of ql[64 + 32 + 3]
  b.qh[32 + 3] = 0xc0;       //   bits 6-7 of qh[32 + 3] -> q = 10 | 3 << 4 = 58
  b.ql[20] = 0x30;           // value 64 + 20: high nibble of ql[20], bits 4-5 of qh[20]
  b.qh[20] = 0x10;           //   -> q = 3 | 1 << 4 = 19
  auto want = [&](int v, int q) { return 0.25f * float(b.scales[v / 16]) * float(q - 32); };
  for (const GgmlKernels* k : tables()) {
    float out[256];
    k->dequantize[ggml_traits(GgmlType::Q6_K).index](&b, 256, out);
    EXPECT_EQ(out[5], want(5, 39)) << k->isa;  // 0.25 · -8 · 7 = -14
    EXPECT_EQ(out[5], -14.0f) << k->isa;
    EXPECT_EQ(out[128 + 96 + 3], want(227, 58)) << k->isa;  // 0.25 · 6 · 26 = 39
    EXPECT_EQ(out[227], 39.0f) << k->isa;
    EXPECT_EQ(out[64 + 20], want(84, 19)) << k->isa;
    EXPECT_EQ(out[0], want(0, 0)) << k->isa;  // 0.25 · -8 · -32 = 64
    EXPECT_EQ(out[0], 64.0f) << k->isa;
    EXPECT_EQ(out[128], 0.0f) << k->isa;  // scale 0
    EXPECT_EQ(out[255], want(255, 0)) << k->isa;
  }
}

// ---- Every SIMD table against the reference ----

TEST(GgmlBlocks, SimdMatchesReferenceOnRandomBlocks) {
  uint64_t seed = 100;
  for (const GgmlTypeTraits& t : ggml_all_types())
    for (int64_t blocks_per_row : {1, 2, 3, 7})
      for (int64_t rows : {1, 5}) {
        const auto bytes = random_blocks(t, rows * blocks_per_row, ++seed);
        expect_tables_agree(t, bytes, rows, blocks_per_row * t.block, "random blocks");
      }
}

TEST(GgmlBlocks, SimdMatchesReferenceOnQuantizedGaussian) {
  for (const GgmlTypeTraits& t : ggml_all_types())
    for (int64_t blocks_per_row : {1, 2, 3, 7}) {
      const int64_t rows = 4, cols = blocks_per_row * t.block;
      auto x = gaussian(rows * cols, 7 + blocks_per_row, 0.02f);
      for (int64_t i = 0; i < cols; ++i) x[size_t(i)] = 0.0f;  // an all-zero row
      std::vector<uint8_t> bytes(size_t(rows * ggml_row_bytes(t, cols)));
      for (int64_t r = 0; r < rows; ++r)
        t.quantize(x.data() + r * cols, cols, bytes.data() + r * ggml_row_bytes(t, cols));
      expect_tables_agree(t, bytes, rows, cols, "quantized gaussian");
    }
}

// ---- Quantizers ----

// Q8_0 and Q4_0 follow ggml's reference exactly; values on their grid come back exactly.
TEST(GgmlBlocks, Q8_0AndQ4_0QuantizeAsGgml) {
  std::vector<float> x(64);
  for (int j = 0; j < 32; ++j) x[size_t(j)] = float(j * 8 - 127) / 64.0f;  // absmax 127/64: d = 1/64
  for (int j = 0; j < 32; ++j) x[size_t(32 + j)] = 0.0f;                              // all zero: d = 0
  const auto q8 = quantize_vec(ggml_traits(GgmlType::Q8_0), x);
  GgmlBlockQ8_0 b8[2];
  std::memcpy(b8, q8.data(), sizeof b8);
  EXPECT_EQ(b8[0].d, f16(1.0f / 64.0f));
  EXPECT_EQ(b8[0].qs[0], -127);
  EXPECT_EQ(b8[1].d, 0);
  EXPECT_EQ(dequantize_ref(ggml_traits(GgmlType::Q8_0), q8, 64), x);

  // Q4_0: the largest magnitude (-4, sign kept) gives d = -4 / -8 = 0.5 and code 0.
  std::vector<float> y(32);
  for (int j = 0; j < 32; ++j) y[size_t(j)] = float(j % 16 - 8) * 0.5f;
  const auto q4 = quantize_vec(ggml_traits(GgmlType::Q4_0), y);
  GgmlBlockQ4_0 b4;
  std::memcpy(&b4, q4.data(), sizeof b4);
  EXPECT_EQ(b4.d, f16(0.5f));
  EXPECT_EQ(b4.qs[0], 0x00);
  EXPECT_EQ(b4.qs[15], 0xff);
  EXPECT_EQ(dequantize_ref(ggml_traits(GgmlType::Q4_0), q4, 32), y);
  // A positive maximum gives a negative d: the extreme value still maps to code 0 (-8 · d).
  std::vector<float> z(32, 0.25f);
  z[3] = 2.0f;
  const auto qz = quantize_vec(ggml_traits(GgmlType::Q4_0), z);
  std::memcpy(&b4, qz.data(), sizeof b4);
  EXPECT_EQ(b4.d, f16(-0.25f));
  EXPECT_EQ(b4.qs[3] & 15, 0);
  EXPECT_EQ(dequantize_ref(ggml_traits(GgmlType::Q4_0), qz, 32)[3], 2.0f);
}

// Relative RMSE of quantize→dequantize on Gaussian data, 64K values. Measured: q8_0 0.0053,
// q4_0 0.085, q4_K 0.071, q5_K 0.036, q6_K 0.018; with offsets and outliers 0.0078, 0.131,
// 0.070, 0.033, 0.023. Bounds a little above.
TEST(GgmlBlocks, RoundTripErrorOnGaussian) {
  struct Bound {
    GgmlType type;
    double gaussian, shifted;
  };
  const Bound bounds[] = {{GgmlType::Q8_0, 0.006, 0.009},
                          {GgmlType::Q4_0, 0.095, 0.145},
                          {GgmlType::Q4_K, 0.08, 0.08},
                          {GgmlType::Q5_K, 0.04, 0.037},
                          {GgmlType::Q6_K, 0.02, 0.026}};
  const int64_t n = 65536;
  const auto x = gaussian(n, 31, 0.02f);
  for (const Bound& b : bounds) {
    const GgmlTypeTraits& t = ggml_traits(b.type);
    const double e = relative_rmse(x, dequantize_ref(t, quantize_vec(t, x), n));
    std::printf("%s relative rmse %.5f (bound %.4f)\n", t.name, e, b.gaussian);
    EXPECT_LT(e, b.gaussian) << t.name;
  }
  // Data with an offset and outliers: the K-quants' min and per-sub-block scales still fit.
  auto y = gaussian(n, 32, 0.02f);
  for (size_t i = 0; i < y.size(); ++i) y[i] += (i / 256 % 2) ? 0.05f : -0.01f;
  for (size_t i = 0; i < y.size(); i += 997) y[i] *= 20.0f;
  for (const Bound& b : bounds) {
    const GgmlTypeTraits& t = ggml_traits(b.type);
    const double e = relative_rmse(y, dequantize_ref(t, quantize_vec(t, y), n));
    std::printf("%s with offsets and outliers: relative rmse %.5f (bound %.4f)\n", t.name, e, b.shifted);
    EXPECT_LT(e, b.shifted) << t.name;
  }
}

// All-zero and constant blocks quantize without NaN and come back as themselves (or nearly).
TEST(GgmlBlocks, DegenerateBlocks) {
  for (const GgmlTypeTraits& t : ggml_all_types()) {
    const std::vector<float> zero(512, 0.0f);
    for (float v : dequantize_ref(t, quantize_vec(t, zero), 512)) EXPECT_EQ(v, 0.0f) << t.name;
    for (float c : {0.75f, -0.75f}) {
      const std::vector<float> same(512, c);
      for (float v : dequantize_ref(t, quantize_vec(t, same), 512)) EXPECT_NEAR(v, c, 0.01) << t.name << " " << c;
    }
  }
}

// ---- GgmlWeight ----

TEST(GgmlWeight, LinearForwardAndInputGradMatchDequantized) {
  for (const GgmlTypeTraits& t : ggml_all_types()) {
    const int64_t M = 5, N = 37, K = 2 * t.block + (t.block == 32 ? 64 : 256);  // 4 or 3 blocks per row
    auto w = std::make_shared<GgmlWeight>(GgmlWeight::quantize(random_matrix(N, K, 41), t.type, "blk.0.ffn_up.weight"));
    w->set_row_tile(6);  // several tiles, the last one short
    EXPECT_EQ(w->describe(), fmt::format("blk.0.ffn_up.weight {}[{}, {}]", t.name, N, K));
    EXPECT_EQ(w->type(), t.type);
    EXPECT_EQ(int64_t(w->bytes().size()), N * (K / t.block) * int64_t(t.block_bytes));
    EXPECT_FALSE(w->borrowed());
    const Tensor deq = w->dequantize();
    // decode_to_f32 (tile by tile through decode_rows) and the reference on the raw bytes agree.
    const Tensor tiles = decode_to_f32(*w);
    std::vector<float> ref(size_t(N * K));
    t.dequantize_ref(w->bytes().data(), N * K, ref.data());
    for (int64_t i = 0; i < N * K; ++i) {
      ASSERT_EQ(bits_of(tiles.f32()[i]), bits_of(ref[size_t(i)])) << t.name << " " << i;
      ASSERT_EQ(bits_of(deq.f32()[i]), bits_of(ref[size_t(i)])) << t.name << " " << i;
    }
    // The default bf16 decode rounds the f32 rows.
    std::vector<uint16_t> bf(size_t(N * K));
    const uint16_t* got = w->decode_rows_bf16(0, N, bf.data());
    for (int64_t i = 0; i < N * K; ++i) ASSERT_EQ(got[i], f32_to_bf16(ref[size_t(i)])) << t.name << " " << i;

    Graph g;
    Var x(random_matrix(M, K, 42, 1.0f), true, "x");
    Var y = linear(g, x, w);
    ASSERT_EQ(y.shape(), (Shape{M, N}));
    const float* xv = x.value().f32();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += double(xv[m * K + k]) * ref[size_t(n * K + k)];
        EXPECT_NEAR(y.value().f32()[m * N + n], s, 1e-5 * (1 + std::fabs(s))) << t.name;
      }
    Tensor dy = random_matrix(M, N, 43, 1.0f);
    g.backward(y, dy);
    ASSERT_TRUE(x.has_grad());
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += double(dy.f32()[m * N + n]) * ref[size_t(n * K + k)];
        EXPECT_NEAR(x.grad().f32()[m * K + k], s, 1e-5 * (1 + std::fabs(s))) << t.name;
      }
  }
}

// ---- 8-bit activations and dot products (llama.cpp's products) ----

// One weight row against one activation row.
float dot1(GgmlVecDotFn f, const void* w, const void* a, int64_t n) {
  float out = 0;
  f(w, a, 0, 1, n, &out, 1);
  return out;
}

// The activation blocks of row x (n a multiple of 256) for type t, and their values.
std::vector<uint8_t> activations_of(const GgmlTypeTraits& t, const std::vector<float>& x) {
  std::vector<uint8_t> a(x.size() / size_t(t.activation_block) * t.activation_block_bytes);
  t.quantize_activations(x.data(), int64_t(x.size()), a.data());
  return a;
}

std::vector<float> activation_values(const GgmlTypeTraits& t, const std::vector<uint8_t>& a, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  if (t.activation_block == 32) {
    const auto* b = reinterpret_cast<const GgmlBlockQ8_0*>(a.data());
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float(b[i / 32].qs[i % 32]) * f16_to_f32(b[i / 32].d);
  } else {
    const auto* b = reinterpret_cast<const GgmlBlockQ8_K*>(a.data());
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float(b[i / 256].qs[i % 256]) * b[i / 256].d;
  }
  return v;
}

// Q8_0: d = f16(max / 127), codes x · 127 / max rounded half to even (llama.cpp's AVX2 build;
// roundf would differ on ties). Q8_K: the scale is -127 over the largest-magnitude value, codes
// capped at 127, bsums the sums of 16, an all-zero block all zero.
TEST(GgmlDot, ActivationBlocksAreLlamaCpps) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f / 64;  // max: 127 / max = 64 exactly
  x[1] = 2.5f / 64;    // a tie: 2
  x[2] = 3.5f / 64;    // a tie: 4
  x[3] = -2.5f / 64;   // -2
  x[4] = -1.0f;        // -64
  GgmlBlockQ8_0 q{};
  ggml_quantize_activations_q8_0(x.data(), 32, &q);
  EXPECT_EQ(q.d, f32_to_f16(1.0f / 64));
  EXPECT_EQ(q.qs[0], 127);
  EXPECT_EQ(q.qs[1], 2);
  EXPECT_EQ(q.qs[2], 4);
  EXPECT_EQ(q.qs[3], -2);
  EXPECT_EQ(q.qs[4], -64);
  EXPECT_EQ(q.qs[5], 0);

  std::vector<float> y(512, 0.0f);
  for (int j = 0; j < 256; ++j) y[size_t(j)] = float(j % 17) - 8.0f;
  y[100] = -127.0f;  // the largest magnitude, negative: scale -127 / -127 = 1
  y[101] = 2.5f;     // a tie: 2
  std::vector<GgmlBlockQ8_K> k(2);
  ggml_quantize_activations_q8_K(y.data(), 512, k.data());
  EXPECT_EQ(k[0].d, 1.0f);
  for (int j = 0; j < 256; ++j)
    if (j != 101) {
      ASSERT_EQ(k[0].qs[j], int(y[size_t(j)])) << j;
    }
  EXPECT_EQ(k[0].qs[101], 2);
  for (int g = 0; g < 16; ++g) {
    int sum = 0;
    for (int j = 0; j < 16; ++j) sum += k[0].qs[16 * g + j];
    EXPECT_EQ(k[0].bsums[g], sum) << g;
  }
  EXPECT_EQ(k[1].d, 0.0f);  // the second block is all zero
  for (int j = 0; j < 256; ++j) ASSERT_EQ(k[1].qs[j], 0);
  // A positive maximum flips the codes' sign (llama.cpp's -127 / max), not the values.
  for (float& v : y) v = -v;
  ggml_quantize_activations_q8_K(y.data(), 256, k.data());
  EXPECT_EQ(k[0].d, -1.0f);
  EXPECT_EQ(k[0].qs[100], -127);
  EXPECT_EQ(k[0].qs[101], 2);  // -2.5 · -1 = 2.5 → 2 (a tie), the value 2 · d = -2
}

// Every SIMD dot product gives the reference's bits: random weight bytes (sane scales) against
// activations of Gaussian rows, and against raw random activation codes; 1, 2, 3 and 7 blocks.
TEST(GgmlDot, SimdMatchesReferenceBitForBit) {
  uint64_t seed = 300;
  for (const GgmlTypeTraits& t : ggml_all_types())
    for (int64_t blocks : {1, 2, 3, 7}) {
      const int64_t n = blocks * t.block;
      const auto w = random_blocks(t, blocks, ++seed);
      std::vector<float> x = gaussian(((n + 255) / 256) * 256, ++seed, 3.0f);
      x.resize(size_t(n));
      std::vector<std::vector<uint8_t>> acts = {activations_of(t, x)};
      std::vector<uint8_t> raw = acts[0];
      Rng r(++seed);
      if (t.activation_block == 32) {
        for (int64_t i = 0; i < n / 32; ++i)
          for (int j = 0; j < 32; ++j) reinterpret_cast<GgmlBlockQ8_0*>(raw.data())[i].qs[j] = int8_t(int(r.below(255)) - 127);
      } else {
        for (int64_t i = 0; i < n / 256; ++i) {
          auto& b = reinterpret_cast<GgmlBlockQ8_K*>(raw.data())[i];
          for (int j = 0; j < 256; ++j) b.qs[j] = int8_t(int(r.below(255)) - 127);
          for (int g = 0; g < 16; ++g) {
            int sum = 0;
            for (int j = 0; j < 16; ++j) sum += b.qs[16 * g + j];
            b.bsums[g] = int16_t(sum);
          }
        }
      }
      acts.push_back(raw);
      for (const auto& a : acts) {
        const float want = dot1(ggml_kernels_ref().vec_dot[t.index], w.data(), a.data(), n);
        ASSERT_TRUE(std::isfinite(want)) << t.name;
        for (const GgmlKernels* k : tables())
          EXPECT_EQ(bits_of(dot1(k->vec_dot[t.index], w.data(), a.data(), n)), bits_of(want))
              << k->isa << " " << t.name << " " << blocks << " blocks";
      }
    }
}

// Many activation rows at once (kernels unpack the weight once per group of rows) give each
// row's own bits, on every table; out_stride is honoured.
TEST(GgmlDot, ManyRowsAtOnceGiveEachRowsBits) {
  for (const GgmlTypeTraits& t : ggml_all_types()) {
    const int64_t n = 2 * kGgmlSuperBlock, rows = 19;  // two groups of 8 and a short one
    const auto w = random_blocks(t, n / t.block, 700 + t.index);
    const int64_t row_bytes = n / t.activation_block * int64_t(t.activation_block_bytes);
    std::vector<uint8_t> acts(size_t(rows * row_bytes));
    const std::vector<float> x = gaussian(rows * n, 800 + t.index, 1.5f);
    for (int64_t r = 0; r < rows; ++r) t.quantize_activations(x.data() + r * n, n, acts.data() + r * row_bytes);
    for (const GgmlKernels* k : tables()) {
      std::vector<float> out(size_t(rows * 3), -7.0f);
      k->vec_dot[t.index](w.data(), acts.data(), row_bytes, rows, n, out.data(), 3);
      for (int64_t r = 0; r < rows; ++r) {
        const float want = dot1(ggml_kernels_ref().vec_dot[t.index], w.data(), acts.data() + r * row_bytes, n);
        EXPECT_EQ(bits_of(out[size_t(3 * r)]), bits_of(want)) << k->isa << " " << t.name << " row " << r;
        EXPECT_EQ(out[size_t(3 * r + 1)], -7.0f) << k->isa << " " << t.name << " wrote between rows";
      }
    }
  }
}

// The reference dot product is the product of the decoded weight and decoded activations.
TEST(GgmlDot, DotIsTheProductOfTheDecodedBlocks) {
  for (const GgmlTypeTraits& t : ggml_all_types())
    for (int64_t blocks : {1, 3}) {
      const int64_t n = blocks * t.block;
      const auto w = random_blocks(t, blocks, 400 + blocks);
      std::vector<float> x = gaussian(((n + 255) / 256) * 256, 500 + blocks, 2.0f);
      x.resize(size_t(n));
      const auto a = activations_of(t, x);
      const std::vector<float> wv = dequantize_ref(t, w, n), av = activation_values(t, a, n);
      double want = 0, scale = 0;
      for (int64_t i = 0; i < n; ++i) {
        want += double(wv[size_t(i)]) * av[size_t(i)];
        scale += std::fabs(double(wv[size_t(i)]) * av[size_t(i)]);
      }
      // The activations are within half a code of x (Q8_0: plus d's f16 rounding, 127 · 2^-11 codes).
      for (int64_t i = 0; i < n; ++i) {
        const double bound =
            t.activation_block == 32 ? 0.57 * f16_to_f32(reinterpret_cast<const GgmlBlockQ8_0*>(a.data())[i / 32].d)
                                     : 0.5 * std::fabs(reinterpret_cast<const GgmlBlockQ8_K*>(a.data())[i / 256].d);
        ASSERT_LE(std::fabs(av[size_t(i)] - x[size_t(i)]), bound + 1e-7) << t.name << " " << i;
      }
      EXPECT_NEAR(dot1(t.vec_dot, w.data(), a.data(), n), want, 1e-5 * scale + 1e-6) << t.name;
    }
}

// With GgmlActivations::Q8, linear's forward is the dot of each weight row with the rounded
// input rows (any thread count gives those bits), close to the f32 product; its input gradient
// stays the f32 product.
TEST(GgmlWeight, Q8ActivationsMultiplyAsLlamaCpp) {
  for (const GgmlTypeTraits& t : ggml_all_types()) {
    const int64_t M = 3, N = 21, K = 512;
    auto w = std::make_shared<GgmlWeight>(GgmlWeight::quantize(random_matrix(N, K, 61), t.type, "w"));
    const Tensor xt = random_matrix(M, K, 62, 1.0f);
    std::vector<float> y_f32(size_t(M * N)), y_q8(size_t(M * N));
    linear_forward(xt.f32(), M, *w, y_f32.data());
    Graph g;
    Var x(xt, true, "x");
    Var y;
    {
      GgmlActivationsScope q8(GgmlActivations::Q8);
      EXPECT_EQ(ggml_activations(), GgmlActivations::Q8);
      y = linear(g, x, w);
    }
    EXPECT_EQ(ggml_activations(), GgmlActivations::F32);
    std::memcpy(y_q8.data(), y.value().f32(), y_q8.size() * sizeof(float));
    double diff = 0, norm = 0;
    for (int64_t m = 0; m < M; ++m) {
      const auto a = activations_of(t, std::vector<float>(xt.f32() + m * K, xt.f32() + (m + 1) * K));
      for (int64_t n = 0; n < N; ++n) {
        const float want = dot1(t.vec_dot, w->bytes().data() + n * w->row_bytes(), a.data(), K);
        ASSERT_EQ(bits_of(y_q8[size_t(m * N + n)]), bits_of(want)) << t.name << " " << m << " " << n;
        diff += std::pow(y_q8[size_t(m * N + n)] - y_f32[size_t(m * N + n)], 2);
        norm += std::pow(y_f32[size_t(m * N + n)], 2);
      }
    }
    EXPECT_GT(diff, 0.0) << t.name << ": the activations were not rounded";
    EXPECT_LT(std::sqrt(diff / norm), 0.02) << t.name;
    // The input gradient is the f32 product with the decoded weight.
    Tensor dy = random_matrix(M, N, 63, 1.0f);
    g.backward(y, dy);
    const Tensor deq = w->dequantize();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; k += 37) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += double(dy.f32()[m * N + n]) * deq.f32()[n * K + k];
        EXPECT_NEAR(x.grad().f32()[m * K + k], s, 1e-5 * (1 + std::fabs(s))) << t.name;
      }
  }
}

// A NaN or infinity in the input has no 8-bit code: the product falls back to f32 and carries it
// (NaN where the input row had one, ±inf or NaN where it had an infinity), other rows unchanged.
TEST(GgmlWeight, Q8ActivationsPassNonFiniteInputsThroughF32) {
  for (const GgmlTypeTraits& t : ggml_all_types()) {
    const int64_t M = 3, N = 5, K = 256;
    const GgmlWeight w = GgmlWeight::quantize(random_matrix(N, K, 71), t.type, "w");
    Tensor x = random_matrix(M, K, 72, 1.0f);
    std::vector<float> clean(size_t(M * N)), y(size_t(M * N));
    GgmlActivationsScope q8(GgmlActivations::Q8);
    linear_forward(x.f32(), M, w, clean.data());
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      x.f32()[1 * K + 17] = bad;
      EXPECT_FALSE(w.own_forward(x.f32(), M, y.data())) << t.name;
      linear_forward(x.f32(), M, w, y.data());
      for (int64_t n = 0; n < N; ++n) {
        EXPECT_FALSE(std::isfinite(y[size_t(N + n)])) << t.name << " " << n;
        EXPECT_NEAR(y[size_t(n)], clean[size_t(n)], 0.05 * (1 + std::fabs(clean[size_t(n)]))) << t.name;
      }
    }
  }
}

// Borrowed bytes stay alive through the owner; bf16/f16 input quantizes as its f32 values.
TEST(GgmlWeight, BorrowedBytesAndHalfInputs) {
  const GgmlTypeTraits& t = ggml_traits(GgmlType::Q4_K);
  const Tensor wf = random_matrix(3, 512, 51);
  const GgmlWeight owned = GgmlWeight::quantize(wf, t.type, "w");
  auto file = std::make_shared<std::vector<uint8_t>>(owned.bytes().begin(), owned.bytes().end());
  std::shared_ptr<const void> owner = file;
  const GgmlWeight borrowed =
      GgmlWeight::from_bytes(t.type, 3, 512, std::span<const uint8_t>(*file), std::move(owner), "w");
  EXPECT_TRUE(borrowed.borrowed());
  EXPECT_EQ(borrowed.bytes().data(), file->data());  // no copy
  std::weak_ptr<std::vector<uint8_t>> alive = file;
  file.reset();
  ASSERT_FALSE(alive.expired());  // the weight keeps it
  const Tensor a = owned.dequantize(), b = borrowed.dequantize();
  EXPECT_EQ(a.to_vector(), b.to_vector());

  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor half = Tensor::empty({3, 512}, dt);
    convert_from_f32(wf.f32(), dt, half.raw(), size_t(wf.numel()));
    Tensor back = Tensor::empty({3, 512});
    convert_to_f32(half.raw(), dt, back.f32(), size_t(wf.numel()));
    const GgmlWeight from_half = GgmlWeight::quantize(half, t.type, "w");
    const GgmlWeight from_f32 = GgmlWeight::quantize(back, t.type, "w");
    EXPECT_TRUE(std::equal(from_half.bytes().begin(), from_half.bytes().end(), from_f32.bytes().begin()))
        << dtype_name(dt);
  }
}

TEST(GgmlWeight, ClearErrors) {
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const std::string bad_bytes = message([] {
    GgmlWeight::from_bytes(GgmlType::Q6_K, 2, 256, std::vector<uint8_t>(419), "blk.3.attn_v.weight");
  });
  EXPECT_NE(bad_bytes.find("blk.3.attn_v.weight"), std::string::npos) << bad_bytes;
  EXPECT_NE(bad_bytes.find("419 bytes"), std::string::npos) << bad_bytes;
  EXPECT_NE(bad_bytes.find("expected 420"), std::string::npos) << bad_bytes;

  const std::string bad_cols = message([] {
    GgmlWeight::from_bytes(GgmlType::Q4_K, 2, 288, std::vector<uint8_t>(288), "blk.0.attn_k.weight");
  });
  EXPECT_NE(bad_cols.find("blk.0.attn_k.weight"), std::string::npos) << bad_cols;
  EXPECT_NE(bad_cols.find("288 columns are not a multiple"), std::string::npos) << bad_cols;
  EXPECT_NE(bad_cols.find("q4_K"), std::string::npos) << bad_cols;

  const std::string borrowed_cols = message([] {
    std::vector<uint8_t> bytes(34 * 3);
    GgmlWeight::from_bytes(GgmlType::Q8_0, 1, 96 + 16, std::span<const uint8_t>(bytes),
                           std::make_shared<int>(0), "tok_embd.weight");
  });
  EXPECT_NE(borrowed_cols.find("tok_embd.weight"), std::string::npos) << borrowed_cols;

  const std::string bad_quant = message([] { GgmlWeight::quantize(Tensor::zeros({4, 100}), GgmlType::Q8_0, "q.w"); });
  EXPECT_NE(bad_quant.find("q.w"), std::string::npos) << bad_quant;
  EXPECT_NE(bad_quant.find("multiple"), std::string::npos) << bad_quant;
  EXPECT_THROW(GgmlWeight::quantize(Tensor::zeros({64}), GgmlType::Q8_0, "v"), Error);
  EXPECT_THROW(GgmlWeight::quantize(Tensor::zeros({2, 64}, DType::I32), GgmlType::Q8_0, "i"), Error);
}
