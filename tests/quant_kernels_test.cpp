// Every decode kernel table this machine supports (scalar, avx2, avx512; absent ones are
// skipped and named) against the scalar reference, bit for bit, for 2-, 3- and 4-bit codes:
// random codes and code books, odd starts, every n in 0..300 and large spans, block
// boundaries inside the range, blocks 32..4096. The packed bytes end right before a
// PROT_NONE page, so a kernel reading one byte past the range crashes the test; sentinels
// around the output catch writes outside it.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/rng.h"
#include "quant/blockwise.h"
#include "quant/kernels.h"
#include "quant/quantized_weight.h"
#include "quant_test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

// The reference first, then each SIMD table the CPU supports. Prints which ran (once).
std::vector<const QuantKernels*> tables() {
  std::vector<const QuantKernels*> ks{&quant_kernels_ref()};
  const QuantKernels* avx2 = quant_kernels_avx2();
  const QuantKernels* avx512 = quant_kernels_avx512();
  if (avx2) ks.push_back(avx2);
  if (avx512) ks.push_back(avx512);
  static bool printed = false;
  if (!printed) {
    printed = true;
    std::printf("quant kernels: scalar ran, avx2 %s, avx512 %s; quant_kernels() = %s\n",
                avx2 ? "ran" : "SKIPPED (not supported here)", avx512 ? "ran" : "SKIPPED (not supported here)",
                quant_kernels().isa);
  }
  return ks;
}

void decode(const QuantKernels& k, int bits, const uint8_t* packed, int64_t e0, int64_t n, const float* lut,
            const float* scales, int64_t block, float* out) {
  switch (bits) {
    case 2: k.decode2(packed, e0, n, lut, scales, block, out); break;
    case 3: k.decode3(packed, e0, n, lut, scales, block, out); break;
    default: k.decode4(packed, e0, n, lut, scales, block, out); break;
  }
}

// Bytes that end exactly at a PROT_NONE page: tail(len) returns where to copy `len` bytes so
// that their last byte is the last readable one.
class GuardedBytes {
 public:
  explicit GuardedBytes(size_t capacity) {
    page_ = size_t(sysconf(_SC_PAGESIZE));
    data_pages_ = (capacity + page_ - 1) / page_;
    void* m = mmap(nullptr, (data_pages_ + 1) * page_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("mmap failed");
    base_ = static_cast<uint8_t*>(m);
    if (mprotect(base_ + data_pages_ * page_, page_, PROT_NONE) != 0) throw std::runtime_error("mprotect failed");
  }
  ~GuardedBytes() { munmap(base_, (data_pages_ + 1) * page_); }
  GuardedBytes(const GuardedBytes&) = delete;
  GuardedBytes& operator=(const GuardedBytes&) = delete;
  uint8_t* tail(size_t len) const { return base_ + data_pages_ * page_ - len; }

 private:
  uint8_t* base_ = nullptr;
  size_t page_ = 0, data_pages_ = 0;
};

struct Stream {
  int bits;
  int64_t block, n;
  std::vector<uint8_t> packed;
  std::vector<float> scales, lut;
};

Stream random_stream(int bits, int64_t block, int64_t n, uint64_t seed) {
  Rng r(seed);
  Stream s{bits, block, n, {}, {}, {}};
  s.packed.resize(size_t(packed_bytes(n, bits)));
  for (auto& b : s.packed) b = uint8_t(r.below(256));
  s.scales.resize(size_t(num_blocks(n, block)));
  for (size_t i = 0; i < s.scales.size(); ++i) {
    s.scales[i] = float(r.normal()) * 0.05f;  // negative too
    if (i % 7 == 3) s.scales[i] = 0.0f;
  }
  s.lut.resize(size_t(1) << bits);
  for (auto& v : s.lut) v = float(r.normal());
  s.lut[0] = -0.0f;
  return s;
}

// Decodes [e0, e0 + len) with every table; the packed bytes covering the range end at the
// guard page. Returns false (after recording a failure) on the first mismatch.
bool check_span(const Stream& s, int64_t e0, int64_t len, const std::vector<const QuantKernels*>& ks,
                const GuardedBytes& guard) {
  const size_t used = size_t(packed_bytes(e0 + len, s.bits));
  uint8_t* p = guard.tail(used);
  std::memcpy(p, s.packed.data(), used);
  const float* scales = s.scales.data() + e0 / s.block;
  std::vector<float> want(static_cast<size_t>(len));
  decode(*ks[0], s.bits, p, e0, len, s.lut.data(), scales, s.block, want.data());
  std::vector<float> got(size_t(len) + 2);
  for (const QuantKernels* k : ks) {
    std::fill(got.begin(), got.end(), -7.0f);
    decode(*k, s.bits, p, e0, len, s.lut.data(), scales, s.block, got.data() + 1);
    const bool same = len == 0 || std::memcmp(got.data() + 1, want.data(), size_t(len) * 4) == 0;
    const bool inside = got.front() == -7.0f && got.back() == -7.0f;
    if (!same || !inside) {
      ADD_FAILURE() << k->isa << " decode" << s.bits << " block " << s.block << " e0 " << e0 << " n " << len
                    << (same ? "" : ": values differ from the reference") << (inside ? "" : ": wrote outside out[0, n)");
      return false;
    }
  }
  return true;
}

}  // namespace

// The reference itself against unpack_codes + the code book (blockwise.h's layout).
TEST(QuantKernels, ReferenceMatchesUnpackCodes) {
  for (int bits : {2, 3, 4}) {
    const Stream s = random_stream(bits, 64, 1000, 11 + bits);
    for (int64_t e0 : {0, 1, 5, 63, 64, 200}) {
      const int64_t len = 1000 - e0;
      std::vector<uint8_t> codes(static_cast<size_t>(len));
      unpack_codes(s.packed.data(), e0, len, bits, codes.data());
      std::vector<float> got(static_cast<size_t>(len));
      decode(quant_kernels_ref(), bits, s.packed.data(), e0, len, s.lut.data(), s.scales.data() + e0 / 64, 64,
             got.data());
      for (int64_t i = 0; i < len; ++i) {
        const float want = s.lut[codes[size_t(i)]] * s.scales[size_t((e0 + i) / 64)];
        ASSERT_EQ(bits_of(got[size_t(i)]), bits_of(want)) << bits << "-bit e0 " << e0 << " i " << i;
      }
    }
  }
}

TEST(QuantKernels, EveryTableEqualsReferenceOnAdversarialSpans) {
  const auto ks = tables();
  GuardedBytes guard(size_t(packed_bytes(5 * 4096 + 100, 4)) + 64);
  for (int bits : {2, 3, 4}) {
    for (int64_t B : {32, 64, 128, 4096}) {
      SCOPED_TRACE(fmt::format("{}-bit block {}", bits, B));
      const int64_t n = 4 * B + 77;  // a partial last block
      const Stream s = random_stream(bits, B, n, uint64_t(bits * 10007 + B));
      // Starts at and around block edges and every phase of the 8-code groups.
      std::vector<int64_t> starts = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, B - 9, B - 8, B - 1, B, B + 1, B + 3,
                                     2 * B - 5, 3 * B + 7};
      for (int64_t e0 : starts) {
        for (int64_t len = 0; len <= 300 && e0 + len <= n; ++len)
          if (!check_span(s, e0, len, ks, guard)) return;
        for (int64_t len : {B - 1, B, B + 1, 2 * B + 3, 3 * B + 31, n - e0})  // whole and several blocks
          if (len >= 0 && e0 + len <= n && !check_span(s, e0, len, ks, guard)) return;
      }
      Rng r(uint64_t(B + bits));
      for (int trial = 0; trial < 300; ++trial) {
        const int64_t e0 = int64_t(r.below(uint64_t(n)));
        const int64_t len = int64_t(r.below(uint64_t(n - e0) + 1));
        if (!check_span(s, e0, len, ks, guard)) return;
      }
    }
  }
}

// The real code books (NF4/FP4/NF2/NF3/uniform) through every table.
TEST(QuantKernels, EveryTableEqualsReferenceWithFormatCodeBooks) {
  const auto ks = tables();
  GuardedBytes guard(size_t(packed_bytes(7 * 97 * 3 + 5, 4)) + 64);
  for (QuantFormat f : {QuantFormat::NF4, QuantFormat::FP4, QuantFormat::Uniform4, QuantFormat::NF2,
                        QuantFormat::Uniform2, QuantFormat::NF3, QuantFormat::Uniform3}) {
    const int bits = quant_bits(f);
    for (int64_t B : {32, 64, 128}) {
      SCOPED_TRACE(fmt::format("{} block {}", quant_format_name(f), B));
      Stream s = random_stream(bits, B, 7 * 97 * 3 + 5, uint64_t(B) * 31 + uint64_t(f));
      auto cb = codebook(f);
      s.lut.assign(cb.begin(), cb.end());
      for (auto& v : s.scales) v = std::fabs(v) + 0.01f;
      Rng r(uint64_t(f) + uint64_t(B));
      for (int trial = 0; trial < 100; ++trial) {
        const int64_t e0 = int64_t(r.below(uint64_t(s.n)));
        const int64_t len = int64_t(r.below(uint64_t(s.n - e0) + 1));
        if (!check_span(s, e0, len, ks, guard)) return;
      }
    }
  }
}

// The low-bit formats through QuantizedWeight::dequantize() and decode_rows with each table
// equal unpack_codes + code book · block scale, on odd shapes.
TEST(QuantKernels, QuantizedWeightDecodesIdenticallyWithEveryTable) {
  const auto ks = tables();
  struct Case {
    int64_t rows, cols;
  };
  for (Case c : {Case{7, 97}, Case{33, 130}, Case{1, 31}, Case{300, 515}}) {
    for (QuantFormat f : {QuantFormat::NF2, QuantFormat::NF3, QuantFormat::Uniform2, QuantFormat::Uniform3,
                          QuantFormat::NF4}) {
      for (int64_t B : {32, 64, 128}) {
        for (bool dq : {false, true}) {
          SCOPED_TRACE(fmt::format("{}x{} {} B={} dq={}", c.rows, c.cols, quant_format_name(f), B, dq));
          const int64_t n = c.rows * c.cols;
          auto v = gaussian(n, uint64_t(n + B), 0.02f);
          auto q = QuantizedWeight::quantize(Tensor::from_vector({c.rows, c.cols}, v), f, B, dq, "w");
          std::vector<uint8_t> codes(static_cast<size_t>(n));
          unpack_codes(q.packed().data(), 0, n, quant_bits(f), codes.data());
          std::vector<float> scales(size_t(q.num_blocks())), want(static_cast<size_t>(n));
          q.block_scales(0, q.num_blocks(), scales.data());
          auto cb = codebook(f);
          for (int64_t i = 0; i < n; ++i) want[size_t(i)] = cb[codes[size_t(i)]] * scales[size_t(i / B)];
          std::vector<float> scratch(static_cast<size_t>(n));
          for (const QuantKernels* k : ks) {
            QuantKernelsOverride use(*k);
            ASSERT_STREQ(quant_kernels().isa, k->isa);
            Tensor got = q.dequantize();
            ASSERT_EQ(std::memcmp(got.f32(), want.data(), size_t(n) * 4), 0) << k->isa;
            for (int64_t r0 : {int64_t(0), c.rows / 3, c.rows - 1}) {
              const int64_t r1 = std::min(c.rows, r0 + 1 + c.rows / 2);
              const float* p = q.decode_rows(r0, r1, scratch.data());
              ASSERT_EQ(std::memcmp(p, want.data() + r0 * c.cols, size_t((r1 - r0) * c.cols) * 4), 0)
                  << k->isa << " rows " << r0 << ".." << r1;
            }
          }
        }
      }
    }
  }
}

// quant_kernels() is one of the tables this CPU supports, the fastest unless QPEFT_QUANT_ISA
// or QPEFT_ISA caps it; an override is undone when it goes out of scope.
TEST(QuantKernels, SelectionIsASupportedTable) {
  const std::string isa = quant_kernels().isa;
  const char* cap = std::getenv("QPEFT_QUANT_ISA");
  const char* cap_all = std::getenv("QPEFT_ISA");  // caps every kernel family
  if ((!cap || !*cap) && (!cap_all || !*cap_all)) {
    const char* best = quant_kernels_avx512() ? "avx512" : quant_kernels_avx2() ? "avx2" : "scalar";
    EXPECT_EQ(isa, best);
  }
  EXPECT_TRUE(isa == "scalar" || (isa == "avx2" && quant_kernels_avx2()) || (isa == "avx512" && quant_kernels_avx512()))
      << isa;
  {
    QuantKernelsOverride use(quant_kernels_ref());
    EXPECT_STREQ(quant_kernels().isa, "scalar");
  }
  EXPECT_EQ(std::string(quant_kernels().isa), isa);
}

// pack4_rows (4-bit rows straight into oneDNN's packed B layout): the reference against the
// decode reference placed by the layout's formula, then every table that has one against the
// reference bit for bit. Odd row counts, starts inside a row, several blocks per span; the
// last row's bytes end at a guard page, and columns outside the 16 written must stay as they were.
TEST(QuantKernels, Pack4RowsMatchesDecodePlacedInThePackedLayout) {
  const std::vector<const QuantKernels*> ks = tables();
  GuardedBytes guard(1 << 16);
  for (int64_t block : {32, 64, 128})
    for (int64_t K : {block, 3 * block})
      for (int64_t rows : {0, 1, 5, 16})
        for (int64_t n0 : {0, 16, 48}) {
          const int64_t row_elems = K + 2 * block, k0 = block;  // each row: a span starting one block in
          const int64_t n = 16 * row_elems;
          const Stream s = random_stream(4, block, n, uint64_t(block * 1000 + K + rows * 7 + n0));
          const int64_t last = rows > 0 ? k0 + (rows - 1) * row_elems + K : 0;  // elements the rows cover
          const size_t used = size_t(packed_bytes(std::max<int64_t>(last, 2), 4));
          uint8_t* p = guard.tail(used);
          std::memcpy(p, s.packed.data(), used);
          // Row i's scales, block_scales-style: row i's span starts at block (k0 + i·row_elems) / block.
          const int64_t stride = row_elems / block;
          const float* scales = s.scales.data() + k0 / block;
          std::vector<float> want(size_t(K / 16 * 1024), -7.0f), row(static_cast<size_t>(K));
          for (int64_t i = 0; i < 16; ++i) {
            if (i < rows)
              decode(quant_kernels_ref(), 4, p, k0 + i * row_elems, K, s.lut.data(), scales + i * stride, block,
                     row.data());
            for (int64_t k = 0; k < K; ++k)
              want[size_t((k / 16) * 1024 + (k % 16) * 64 + n0 + i)] = i < rows ? row[size_t(k)] : 0.0f;
          }
          for (const QuantKernels* k : ks) {
            if (!k->pack4_rows) continue;
            std::vector<float> got(want.size(), -7.0f);
            k->pack4_rows(p, k0, row_elems, rows, K, s.lut.data(), scales, stride, block, n0, got.data());
            ASSERT_EQ(std::memcmp(got.data(), want.data(), want.size() * 4), 0)
                << k->isa << " pack4_rows block " << block << " K " << K << " rows " << rows << " n0 " << n0;
          }
        }
}
