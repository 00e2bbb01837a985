#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "quant/codebook.h"
#include "quant_test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

TEST(QuantCodebook, TraitsTableAndParsing) {
  for (size_t i = 0; i < size_t(QuantFormat::kCount); ++i) {
    auto f = QuantFormat(i);
    const auto& info = quant_format_info(f);
    EXPECT_EQ(info.format, f);
    EXPECT_EQ(codebook(f).size(), size_t(1) << info.bits) << info.name;
    QuantFormat back;
    ASSERT_TRUE(parse_quant_format(info.name, &back));
    EXPECT_EQ(back, f);
  }
  QuantFormat dummy;
  EXPECT_FALSE(parse_quant_format("nf5", &dummy));
  EXPECT_EQ(quant_format_info(QuantFormat::NF4).default_block, 64);
  EXPECT_STREQ(quant_format_info(QuantFormat::NF4).bnb_quant_type, "nf4");
}

TEST(QuantCodebook, NF4IsBitExact) {
  // SPEC §2, as printed by bitsandbytes (float32 values written as doubles).
  const double spec[16] = {-1.0,
                           -0.6961928009986877,
                           -0.5250730514526367,
                           -0.39491748809814453,
                           -0.28444138169288635,
                           -0.18477343022823334,
                           -0.09105003625154495,
                           0.0,
                           0.07958029955625534,
                           0.16093020141124725,
                           0.24611230194568634,
                           0.33791524171829224,
                           0.44070982933044434,
                           0.5626170039176941,
                           0.7229568362236023,
                           1.0};
  auto nf4 = codebook(QuantFormat::NF4);
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(bits_of(nf4[i]), bits_of(float(spec[i]))) << i;
    // The printed doubles are exactly float32 values.
    EXPECT_EQ(double(nf4[i]), spec[i]) << i;
  }
}

TEST(QuantCodebook, NormalFloatFormulaReproducesNF4AndNF2) {
  auto nf4 = normal_float_codebook(4);
  ASSERT_EQ(nf4.size(), 16u);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(bits_of(nf4[i]), bits_of(kNF4Values[i])) << i;
  auto nf2 = normal_float_codebook(2);
  ASSERT_EQ(nf2.size(), 4u);
  EXPECT_EQ(nf2[0], -1.0f);
  EXPECT_EQ(nf2[1], 0.0f);
  EXPECT_NEAR(nf2[2], 0.337915, 1e-6);
  EXPECT_EQ(nf2[3], 1.0f);
  EXPECT_EQ(nf2[2], kNF4Values[11]);  // the same quantile as NF4's 0.33791524
}

TEST(QuantCodebook, TablesMatchPeftNFQuantizerFixtures) {
  auto fx = load_f32_safetensors(test_data("loftq/loftq_C.safetensors"));
  auto check = [&](const char* name, std::span<const float> ours) {
    const auto& t = fx.at(name).data;
    ASSERT_EQ(t.size(), ours.size()) << name;
    for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(bits_of(t[i]), bits_of(ours[i])) << name << "[" << i << "]";
  };
  check("table_nf2", codebook(QuantFormat::NF2));
  check("table_nf3", codebook(QuantFormat::NF3));
  check("table_nf4", codebook(QuantFormat::NF4));  // PEFT's NF4 == bitsandbytes' NF4, bit for bit
  check("table_uniform2", codebook(QuantFormat::Uniform2));
  check("table_uniform4", codebook(QuantFormat::Uniform4));
}

TEST(QuantCodebook, FP4MatchesBitsandbytes) {
  auto fp4 = codebook(QuantFormat::FP4);
  const float mag[8] = {0, 0.0625f, 8, 12, 4, 6, 2, 3};
  for (int i = 0; i < 16; ++i) {
    float want = ((i & 8) ? -mag[i & 7] : mag[i & 7]) / 12.0f;
    EXPECT_EQ(bits_of(fp4[i]), bits_of(want)) << i;
    // The CUDA kernel's literal LUT times the sign gives the same floats.
    float cuda = kFP4Magnitudes[i & 7] * ((i & 8) ? -1.0f : 1.0f);
    EXPECT_EQ(bits_of(fp4[i]), bits_of(cuda)) << i;
  }
  EXPECT_TRUE(std::signbit(fp4[8]));  // index 8 is -0
  EXPECT_EQ(fp4[3], 1.0f);
  EXPECT_EQ(fp4[11], -1.0f);
  EXPECT_EQ(fp4[1], 1.0f / 192.0f);
}

TEST(QuantCodebook, UniformIsFloat32Linspace) {
  auto u4 = codebook(QuantFormat::Uniform4);
  EXPECT_EQ(u4[0], -1.0f);
  EXPECT_EQ(u4[15], 1.0f);
  // Not exactly symmetric in float32 (README of the fixtures).
  bool all_symmetric = true;
  for (int i = 0; i < 8; ++i) all_symmetric &= (u4[i] == -u4[15 - i]);
  EXPECT_FALSE(all_symmetric);
  auto u3 = codebook(QuantFormat::Uniform3);
  EXPECT_TRUE(std::is_sorted(u3.begin(), u3.end()));
  EXPECT_NEAR(u3[1], -5.0 / 7.0, 1e-7);
}

TEST(QuantCodebook, DynamicMapStructure) {
  auto m = codebook(QuantFormat::Dynamic8);
  ASSERT_EQ(m.size(), 256u);
  EXPECT_TRUE(std::is_sorted(m.begin(), m.end()));
  EXPECT_EQ(std::adjacent_find(m.begin(), m.end()), m.end());  // distinct
  EXPECT_EQ(m[127], 0.0f);
  EXPECT_EQ(m[255], 1.0f);
  for (int i = 0; i < 127; ++i) EXPECT_EQ(m[i], -m[254 - i]) << i;  // symmetric apart from 1.0
  // Smallest magnitude: 1e-6 · (0.1 + 1)/2; the largest below 1: mean of the last two of
  // linspace(0.1, 1, 65) = (1 - 0.9/64 + 1) / 2.
  EXPECT_EQ(m[128], float(1e-6) * ((0.1f + 1.0f) / 2.0f));
  EXPECT_NEAR(m[254], 0.99296875, 1e-7);
  EXPECT_NEAR(m[0], -0.99296875, 1e-7);
  // Decade i holds 2^i positive values.
  int per_decade[7] = {0};
  for (int i = 128; i < 255; ++i) {
    int d = int(std::floor(std::log10(double(m[i])))) + 7;  // 5.5e-7 -> 0
    ASSERT_GE(d, 0);
    ASSERT_LT(d, 7);
    per_decade[d]++;
  }
  for (int i = 0; i < 7; ++i) EXPECT_EQ(per_decade[i], 1 << i) << i;
}

TEST(QuantCodebook, DynamicMapAcrossTorchBuilds) {
  // bitsandbytes builds the map with torch.linspace at run time; ATen's vectorised, FMA-
  // contracted linspace rounds a few boundaries differently per CPU build. Entries differ by at
  // most 2 ulps between builds; we pin the AVX2 build's values (a checkpoint carries its own
  // nested_quant_map, which DoubleQuantScales keeps and decodes with).
  auto a = dynamic_map(TorchCpu::Default), b = dynamic_map(TorchCpu::Avx2), c = dynamic_map(TorchCpu::Avx512);
  int diff_ab = 0, diff_bc = 0;
  for (int i = 0; i < 256; ++i) {
    EXPECT_LE(std::abs(int64_t(bits_of(a[i])) - int64_t(bits_of(b[i]))), 2) << i;
    EXPECT_LE(std::abs(int64_t(bits_of(b[i])) - int64_t(bits_of(c[i]))), 2) << i;
    diff_ab += a[i] != b[i];
    diff_bc += b[i] != c[i];
  }
  std::printf("dynamic map entries differing by 1-2 ulps: default vs avx2 %d, avx2 vs avx512 %d\n", diff_ab, diff_bc);
  auto m = codebook(QuantFormat::Dynamic8);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(bits_of(m[i]), bits_of(b[i]));
}

TEST(QuantCodebook, UniformTableNeedsTheFmaLinspace) {
  // The PEFT fixture's uniform4 table is exactly ATen's AVX2 linspace (vectorised + FMA);
  // plain float arithmetic gets 3 entries wrong by one ulp.
  auto fx = load_f32_safetensors(test_data("loftq/loftq_C.safetensors"));
  const auto& t = fx.at("table_uniform4").data;
  auto avx2 = torch_linspace_f32(-1.0f, 1.0f, 16, TorchCpu::Avx2);
  auto plain = torch_linspace_f32(-1.0f, 1.0f, 16, TorchCpu::Default);
  int d_avx2 = 0, d_plain = 0;
  for (int i = 0; i < 16; ++i) {
    d_avx2 += bits_of(avx2[i]) != bits_of(t[i]);
    d_plain += bits_of(plain[i]) != bits_of(t[i]);
  }
  EXPECT_EQ(d_avx2, 0);
  EXPECT_GT(d_plain, 0);
}

TEST(QuantCodebook, TorchLinspaceHalfwayRule) {
  auto v = torch_linspace_f32(-1.0f, 1.0f, 4, TorchCpu::Default);
  EXPECT_EQ(v[0], -1.0f);
  EXPECT_EQ(v[3], 1.0f);
  EXPECT_EQ(v[1], -1.0f + 2.0f / 3.0f);
  EXPECT_EQ(v[2], 1.0f - 2.0f / 3.0f);
  EXPECT_EQ(torch_linspace_f32(0.5f, 2.0f, 1)[0], 0.5f);
}

TEST(QuantCodebook, InverseNormalCdf) {
  EXPECT_NEAR(inverse_normal_cdf(0.975), 1.959963984540054, 1e-14);
  EXPECT_NEAR(inverse_normal_cdf(0.5), 0.0, 1e-15);
  EXPECT_NEAR(inverse_normal_cdf(0.01), -2.3263478740408408, 1e-13);
  EXPECT_NEAR(inverse_normal_cdf(1e-10), -6.361340902404056, 1e-10);
  for (double p : {1e-8, 0.001, 0.02425, 0.3, 0.7, 0.97575, 0.999, 1 - 1e-8}) {
    double x = inverse_normal_cdf(p);
    EXPECT_NEAR(0.5 * std::erfc(-x / std::sqrt(2.0)), p, 1e-15 + 1e-13 * p) << p;
  }
  EXPECT_THROW(inverse_normal_cdf(0.0), Error);
  EXPECT_THROW(inverse_normal_cdf(1.0), Error);
}
