#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "core/thread_pool.h"
#include "ops/autograd.h"
#include "ops/linear.h"
#include "quant/kernels.h"
#include "quant/quantized_weight.h"
#include "quant_test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

Tensor random_matrix(int64_t rows, int64_t cols, uint64_t seed, float sd = 0.02f) {
  auto v = gaussian(rows * cols, seed, sd);
  return Tensor::from_vector({rows, cols}, v);
}

// The composite reference: quantize the flat tensor in one go, then dequantize_blocks with
// the (double-dequantized) scales. QuantizedWeight's tiled, threaded path must equal it.
std::vector<float> reference_dequant(const Tensor& w, QuantFormat f, int64_t B, bool dq) {
  const int64_t n = w.numel();
  auto x = w.to_vector();
  BlockQuantOptions opt = BlockQuantOptions::defaults(f);
  opt.block_size = B;
  std::vector<uint8_t> codes(x.size());
  std::vector<float> scales(size_t(num_blocks(n, B))), out(x.size());
  quantize_blocks(x.data(), n, opt, codes.data(), scales.data());
  if (dq) {
    DoubleQuantScales d = double_quantize(scales.data(), int64_t(scales.size()));
    d.decode(0, int64_t(scales.size()), scales.data());
  }
  dequantize_blocks(codes.data(), scales.data(), n, f, B, out.data());
  return out;
}

}  // namespace

TEST(QuantizedWeight, TiledThreadedQuantizeEqualsFlatReferenceOnOddShapes) {
  struct Case {
    int64_t rows, cols;
  };
  for (Case c : {Case{7, 97}, Case{33, 130}, Case{1, 31}, Case{64, 64}, Case{300, 515}}) {
    for (int64_t B : {32, 64, 128}) {
      for (QuantFormat f : {QuantFormat::NF4, QuantFormat::FP4, QuantFormat::NF2, QuantFormat::NF3, QuantFormat::Int8}) {
        for (bool dq : {false, true}) {
          SCOPED_TRACE(fmt::format("{}x{} {} B={} dq={}", c.rows, c.cols, quant_format_name(f), B, dq));
          Tensor w = random_matrix(c.rows, c.cols, uint64_t(c.rows * 1000 + c.cols));
          auto q = QuantizedWeight::quantize(w, f, B, dq, "w");
          auto want = reference_dequant(w, f, B, dq);
          Tensor got = q.dequantize();
          ASSERT_EQ(std::memcmp(got.f32(), want.data(), want.size() * 4), 0);
          // decode_rows on arbitrary row ranges (tiles that straddle blocks).
          std::vector<float> scratch(size_t(c.rows * c.cols));
          for (int64_t r0 : {int64_t(0), c.rows / 3, c.rows - 1}) {
            int64_t r1 = std::min(c.rows, r0 + 1 + c.rows / 2);
            const float* p = q.decode_rows(r0, r1, scratch.data());
            ASSERT_EQ(std::memcmp(p, want.data() + r0 * c.cols, size_t((r1 - r0) * c.cols) * 4), 0) << r0;
          }
        }
      }
    }
  }
}

TEST(QuantizedWeight, Bf16AndF16InputsQuantizeTheirValues) {
  Tensor w = random_matrix(17, 70, 9);
  for (DType dt : {DType::BF16, DType::F16}) {
    Tensor h = w.to(dt);
    Tensor hf = h.to(DType::F32);
    auto a = QuantizedWeight::quantize(h, QuantFormat::NF4, 64, true, "h");
    auto b = QuantizedWeight::quantize(hf, QuantFormat::NF4, 64, true, "hf");
    EXPECT_EQ(a.packed(), b.packed());
    EXPECT_EQ(a.dq_scales()->qabsmax, b.dq_scales()->qabsmax);
    EXPECT_EQ(a.original_dtype(), dt);
  }
}

TEST(QuantizedWeight, RowTilesAlignToBlocks) {
  Tensor w = random_matrix(40, 100, 2);  // 100 cols, block 64: tiles of 16 rows = 25 blocks
  auto q = QuantizedWeight::quantize(w, QuantFormat::NF4, 64, true, "w");
  q.set_row_tile(10);
  EXPECT_EQ(q.row_tile() * q.cols() % q.block_size(), 0);
  EXPECT_EQ(q.row_tile(), 16);
  Tensor w2 = random_matrix(40, 128, 2);
  auto q2 = QuantizedWeight::quantize(w2, QuantFormat::NF4, 64, true, "w2");
  q2.set_row_tile(3);
  EXPECT_EQ(q2.row_tile(), 3);
}

TEST(QuantizedWeight, StorageAndBitsPerParam) {
  Tensor w = random_matrix(256, 512, 4);
  auto q = QuantizedWeight::quantize(w, QuantFormat::NF4, 64, true, "w");
  const int64_t n = 256 * 512, nb = n / 64;
  EXPECT_EQ(q.packed().size(), size_t(n / 2));
  EXPECT_EQ(q.dq_scales()->qabsmax.size(), size_t(nb));
  EXPECT_EQ(q.dq_scales()->nested_absmax.size(), size_t(nb / 256));
  EXPECT_EQ(q.storage_bytes(), size_t(n / 2 + nb + 4 * (nb / 256) + 4));
  EXPECT_NEAR(q.bits_per_param(), 4.127, 1e-3);
  auto q32 = QuantizedWeight::quantize(w, QuantFormat::NF4, 64, false, "w");
  EXPECT_DOUBLE_EQ(q32.bits_per_param(), 4.5);
  EXPECT_TRUE(q32.dq_scales() == nullptr);
  EXPECT_EQ(q32.absmax().size(), size_t(nb));
  EXPECT_EQ(q.describe(), "w nf4[256, 512] block 64 dq");
}

TEST(QuantizedWeight, FromPartsRoundTripsAndValidates) {
  Tensor w = random_matrix(33, 130, 8);
  auto q = QuantizedWeight::quantize(w, QuantFormat::FP4, 64, true, "w");
  auto p = QuantizedWeight::from_parts(QuantFormat::FP4, 33, 130, 64, q.packed(), {}, *q.dq_scales(), "w");
  Tensor a = q.dequantize(), b = p.dequantize();
  EXPECT_EQ(std::memcmp(a.f32(), b.f32(), size_t(a.numel()) * 4), 0);
  EXPECT_THROW(QuantizedWeight::from_parts(QuantFormat::FP4, 33, 131, 64, q.packed(), {}, *q.dq_scales(), "w"), Error);
  EXPECT_THROW(QuantizedWeight::from_parts(QuantFormat::FP4, 33, 130, 64, q.packed(), {1.0f}, std::nullopt, "w"),
               Error);
}

TEST(QuantizedWeight, ClearErrors) {
  EXPECT_THROW(QuantizedWeight::quantize(Tensor::zeros({4}), QuantFormat::NF4, 64, true, "v"), Error);
  EXPECT_THROW(QuantizedWeight::quantize(Tensor::zeros({4, 64}, DType::I32), QuantFormat::NF4, 64, true, "i"), Error);
  try {
    QuantizedWeight::quantize(Tensor::zeros({4, 64}), QuantFormat::NF4, 48, true, "layers.0.q_proj.weight");
    FAIL() << "block 48 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("power of two"), std::string::npos) << e.what();
  }
  // An all-zero weight quantizes to zeros (scale 0 handled, no NaN).
  auto z = QuantizedWeight::quantize(Tensor::zeros({3, 64}), QuantFormat::NF4, 64, true, "z");
  for (float v : z.dequantize().to_vector()) EXPECT_EQ(v, 0.0f);
}

// y = x Wᵀ and dx = dy W through the frozen quantized weight equal the dense products with
// dequantize(W); no gradient exists for W (FrozenWeight is not a Var).
TEST(QuantizedWeight, LinearForwardAndInputGradMatchDequantizedDense) {
  for (int64_t B : {64, 128}) {
    const int64_t M = 9, N = 70, K = 130;  // K not a multiple of the block: tiles straddle
    Tensor wt = random_matrix(N, K, 21);
    auto q = std::make_shared<QuantizedWeight>(QuantizedWeight::quantize(wt, QuantFormat::NF4, B, true, "w"));
    q->set_row_tile(7);  // several tiles per thread
    Tensor deq = q->dequantize();
    Graph g;
    Var x(random_matrix(M, K, 22, 1.0f), true, "x");
    Var y = linear(g, x, q);
    ASSERT_EQ(y.shape(), (Shape{M, N}));
    const float* xv = x.value().f32();
    const float* dw = deq.f32();
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += double(xv[m * K + k]) * dw[n * K + k];
        EXPECT_NEAR(y.value().f32()[m * N + n], s, 1e-5 * (1 + std::fabs(s)));
      }
    Tensor dy = random_matrix(M, N, 23, 1.0f);
    g.backward(y, dy);
    ASSERT_TRUE(x.has_grad());
    for (int64_t m = 0; m < M; ++m)
      for (int64_t k = 0; k < K; ++k) {
        double s = 0;
        for (int64_t n = 0; n < N; ++n) s += double(dy.f32()[m * N + n]) * dw[n * K + k];
        EXPECT_NEAR(x.grad().f32()[m * K + k], s, 1e-5 * (1 + std::fabs(s)));
      }
    // The same through the dense driver on the dequantized weight: identical up to sgemm order.
    auto dense = std::make_shared<DenseWeight>(deq, "deq");
    Graph g2;
    Var x2(x.value(), true, "x2");
    Var y2 = linear(g2, x2, dense);
    for (int64_t i = 0; i < M * N; ++i) EXPECT_NEAR(y2.value().f32()[i], y.value().f32()[i], 1e-5);
  }
}

// Products large enough for the forward's oneDNN packed-B path (linear.cpp packs weights it
// decodes anyway): NF4 whose blocks tile the rows (the fused 4-bit packing), NF4 whose blocks
// straddle rows and a bf16 weight (rows staged, then packed), with row counts that are not
// multiples of 16 or 64. Forward and input gradient (plain panels) against a double reference
// on the decoded weight; every quant table gives the forward the same bits.
TEST(QuantizedWeight, LinearThroughPackedProductsMatchesDecodedReference) {
  struct Case {
    const char* what;
    int64_t M, N, K, block;
    bool bf16;
  };
  for (const Case c : {Case{"nf4, blocks tile rows", 40, 150, 640, 64, false},
                       Case{"nf4, blocks straddle rows", 33, 97, 1000, 64, false},
                       Case{"bf16", 40, 130, 600, 0, true}}) {
    SCOPED_TRACE(c.what);
    Tensor wt = random_matrix(c.N, c.K, 31);
    std::shared_ptr<FrozenWeight> w;
    if (c.bf16) w = std::make_shared<DenseWeight>(wt.to(DType::BF16), "w");
    else w = std::make_shared<QuantizedWeight>(QuantizedWeight::quantize(wt, QuantFormat::NF4, c.block, true, "w"));
    const Tensor deq = decode_to_f32(*w);
    const Tensor x = random_matrix(c.M, c.K, 32, 1.0f), dy = random_matrix(c.M, c.N, 33, 1.0f);
    std::vector<float> y(size_t(c.M * c.N)), dx(size_t(c.M * c.K), 0.5f);
    linear_forward(x.f32(), c.M, *w, y.data());
    linear_input_grad(dy.f32(), c.M, *w, dx.data(), /*accumulate=*/true);
    const float* d = deq.f32();
    for (int64_t m = 0; m < c.M; ++m) {
      for (int64_t n = 0; n < c.N; ++n) {
        double s = 0;
        for (int64_t k = 0; k < c.K; ++k) s += double(x.f32()[m * c.K + k]) * d[n * c.K + k];
        ASSERT_NEAR(y[size_t(m * c.N + n)], s, 1e-4 * (1 + std::fabs(s))) << "y[" << m << ", " << n << "]";
      }
      for (int64_t k = 0; k < c.K; ++k) {
        double s = 0.5;
        for (int64_t n = 0; n < c.N; ++n) s += double(dy.f32()[m * c.N + n]) * d[n * c.K + k];
        ASSERT_NEAR(dx[size_t(m * c.K + k)], s, 1e-4 * (1 + std::fabs(s))) << "dx[" << m << ", " << k << "]";
      }
    }
    if (!c.bf16) {
      std::vector<float> y_ref(y.size());
      QuantKernelsOverride use(quant_kernels_ref());
      linear_forward(x.f32(), c.M, *w, y_ref.data());
      EXPECT_EQ(std::memcmp(y.data(), y_ref.data(), y.size() * 4), 0) << "the scalar quant table changed the forward's bits";
    }
  }
}
