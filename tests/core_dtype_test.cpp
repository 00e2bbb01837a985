// f32 → bf16 rounding: the AVX-512 path (where the CPU has it) against the scalar one, bit for
// bit, over ties, denormals, infinities, NaNs and random values, at every length 0..70.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "core/cpu.h"
#include "core/dtype.h"
#include "core/rng.h"

using namespace qpeft;

TEST(Bf16Rounding, Avx512MatchesScalarBitForBit) {
  if (!cpu_has_avx512()) GTEST_SKIP() << "no AVX-512 on this CPU: only the scalar path exists here";
  std::vector<float> v;
  for (uint32_t u : {0x00000000u, 0x80000000u, 0x00000001u, 0x007fffffu, 0x00008000u, 0x00018000u, 0x3f808000u,
                     0x3f818000u, 0x3f80ffffu, 0x7f7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0x7f800001u,
                     0xffffffffu, 0x7f7f8000u})
    v.push_back(std::bit_cast<float>(u));
  Rng rng(3);
  for (int i = 0; i < 100000; ++i) v.push_back(std::bit_cast<float>(uint32_t(rng.next_u64())));
  std::vector<uint16_t> simd(v.size() + 8, 0xABCD), ref(v.size());
  for (size_t i = 0; i < v.size(); ++i) ref[i] = f32_to_bf16(v[i]);
  ASSERT_TRUE(f32_to_bf16_avx512(v.data(), simd.data(), v.size()));
  for (size_t i = 0; i < v.size(); ++i)
    ASSERT_EQ(simd[i], ref[i]) << "input bits 0x" << std::hex << std::bit_cast<uint32_t>(v[i]);
  for (size_t i = v.size(); i < simd.size(); ++i) ASSERT_EQ(simd[i], 0xABCD) << "wrote past the end";
  for (size_t n = 0; n <= 70; ++n) {
    std::vector<uint16_t> out(n + 4, 0xABCD);
    f32_to_bf16_avx512(v.data() + 1, out.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], ref[i + 1]) << "n=" << n;
    for (size_t i = n; i < out.size(); ++i) ASSERT_EQ(out[i], 0xABCD) << "n=" << n << ": wrote past the end";
  }
}
