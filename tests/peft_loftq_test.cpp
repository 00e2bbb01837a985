// LoftQ (SPEC §4): PEFT v0.9.0's own loftq_init outputs (tests/data/loftq), the scaling PEFT
// leaves out, the SVDs, --layer-quant, the model-level init and its errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/file.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "models/checkpoint.h"
#include "ops/linalg.h"
#include "peft/loftq.h"
#include "quant_test_util.h"
#include "small_config.h"
#include "test_util.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

struct Fixture {
  std::map<std::string, F32Tensor> t;
  nlohmann::json meta;
};

const Fixture& fixture(const std::string& input) {
  static std::map<std::string, Fixture> cache;
  auto it = cache.find(input);
  if (it != cache.end()) return it->second;
  Fixture f;
  for (const char* suffix : {"", "_k2", "_k4"}) {
    const std::string p = test_data("loftq/loftq_" + input + suffix + ".safetensors");
    if (!file_exists(p)) continue;
    for (auto& [k, v] : load_f32_safetensors(p)) f.t[k] = v;
  }
  f.meta = nlohmann::json::parse(read_text_file(test_data("loftq/loftq_" + input + ".json")));
  return cache[input] = std::move(f);
}

Tensor to_tensor(const F32Tensor& f) { return Tensor::from_vector(f.shape, f.data); }

std::vector<float> product_BA(const LoftqMatrixResult& r, double scale) {
  const int64_t m = r.B.dim(0), k = r.B.dim(1), n = r.A.dim(1);
  std::vector<float> out(size_t(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t) s += double(r.B.f32()[i * k + t]) * double(r.A.f32()[t * n + j]);
      out[size_t(i * n + j)] = float(scale * s);
    }
  return out;
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

LoftqMatrixOptions peft_options(int bits, int64_t rank, int iters) {
  LoftqMatrixOptions o;
  o.format = bits == 2 ? QuantFormat::NF2 : bits == 3 ? QuantFormat::NF3 : QuantFormat::NF4;
  o.rounding = Rounding::Argmin;  // PEFT's NFQuantizer (the fixtures ran without bitsandbytes)
  o.block_size = 64;
  o.rank = rank;
  o.iters = iters;
  o.svd.method = SvdMethod::Exact;
  return o;
}

}  // namespace

// Q exact for T = 1, within the README's tolerances for T = 5; B·A and the Frobenius errors too.
TEST(Loftq, MatchesPeftLoftqInit) {
  int cases = 0;
  for (const char* input : {"C", "A"}) {
    const Fixture& fx = fixture(input);
    const Tensor W = to_tensor(fx.t.at("W"));
    for (auto& [name, c] : fx.meta.at("loftq_cases").items()) {
      SCOPED_TRACE(std::string(input) + " " + name);
      const int bits = c.at("num_bits"), iters = c.at("num_iter");
      const int64_t rank = c.at("reduced_rank");
      LoftqMatrixResult r = loftq_matrix(W, peft_options(bits, rank, iters), name);
      const auto& Q = fx.t.at(name + "_Q").data;
      const auto& BA = fx.t.at(name + "_BA").data;
      Tensor q = r.q->dequantize();
      const double dq = max_abs_diff(q.f32(), Q.data(), Q.size());
      if (iters == 1) {
        EXPECT_EQ(dq, 0.0);
      } else {
        EXPECT_LE(dq, 1e-6);
      }
      const auto ba = product_BA(r, 1.0);
      EXPECT_LE(max_abs_diff(ba.data(), BA.data(), BA.size()), 1e-5);
      const double ref_plain = c.at("err_fro_W_minus_Q"), ref = c.at("err_fro_W_minus_Q_minus_BA");
      // err_fro_W_minus_Q is of the last iteration's Q; ours is of quant(W): equal for T = 1.
      if (iters == 1) {
        EXPECT_NEAR(r.plain_error, ref_plain, 1e-4 * ref_plain);
      }
      EXPECT_NEAR(r.loftq_error, ref, 1e-4 * ref);
      EXPECT_LT(r.loftq_error, r.plain_error);
      ++cases;
    }
  }
  EXPECT_EQ(cases, 10);
}

// PEFT never divides by the LoRA scaling, so its init is right only for alpha = r. Ours gives
// the same Q and Q + s·B·A = PEFT's Q + B·A for any alpha and for rsLoRA.
TEST(Loftq, ScalingIsDividedOutForEveryAlpha) {
  const Fixture& fx = fixture("C");
  const Tensor W = to_tensor(fx.t.at("W"));
  const std::string name = "loftq_k2_r16_T5";
  const auto& Q = fx.t.at(name + "_Q").data;
  const auto& BA = fx.t.at(name + "_BA").data;
  for (double s : {0.5, 2.0, 32.0 / 16.0, 16.0 / std::sqrt(16.0), 64.0 / std::sqrt(16.0)}) {
    SCOPED_TRACE(s);
    LoftqMatrixOptions o = peft_options(2, 16, 5);
    o.scaling = s;
    LoftqMatrixResult r = loftq_matrix(W, o, name);
    Tensor q = r.q->dequantize();
    EXPECT_LE(max_abs_diff(q.f32(), Q.data(), Q.size()), 1e-6);
    const auto sba = product_BA(r, s);
    EXPECT_LE(max_abs_diff(sba.data(), BA.data(), BA.size()), 1e-5);
    // Split evenly: |B| and |A| both carry 1/sqrt(s).
    LoftqMatrixResult r1 = loftq_matrix(W, peft_options(2, 16, 5), name);
    double a = 0, a1 = 0;
    for (int64_t i = 0; i < r.A.numel(); ++i) a += double(r.A.f32()[i]) * r.A.f32()[i], a1 += double(r1.A.f32()[i]) * r1.A.f32()[i];
    EXPECT_NEAR(std::sqrt(a / a1), 1.0 / std::sqrt(s), 1e-5);
  }
}

TEST(Loftq, Uniform2AndFourBitBitsandbytesRounding) {
  const Fixture& fx = fixture("C");
  const Tensor W = to_tensor(fx.t.at("W"));
  for (QuantFormat f : {QuantFormat::Uniform2, QuantFormat::Uniform4, QuantFormat::NF3, QuantFormat::NF4}) {
    SCOPED_TRACE(quant_format_name(f));
    LoftqMatrixOptions o;
    o.format = f;  // format's default rule: nf4 bitsandbytes' midpoints, others argmin
    o.rank = 8;
    o.iters = 1;
    LoftqMatrixResult r = loftq_matrix(W, o, "C");
    EXPECT_LT(r.loftq_error, 0.98 * r.plain_error);
    if (f == QuantFormat::Uniform2) {  // T = 1: Q is the plain quantizer's, as PEFT's uniform fixture
      Tensor q = r.q->dequantize();
      EXPECT_EQ(max_abs_diff(q.f32(), fx.t.at("q2_uniform").data.data(), size_t(q.numel())), 0.0);
    }
  }
}

// Randomized truncated SVD against the exact one on shaped matrices: the rank-k residual it
// leaves is within a few per cent of the optimum (Eckart–Young), singular values close.
TEST(Svd, RandomizedIsCloseToExactOnShapedMatrices) {
  struct Case {
    const char* name;
    int64_t m, n, k;
    double decay;  // singular value i ~ exp(-decay * i) times noise floor
    double max_ratio;
  };
  for (Case c : {Case{"decaying", 300, 500, 16, 0.15, 1.0005}, Case{"slow decay", 256, 640, 16, 0.02, 1.002},
                 Case{"flat (gaussian)", 200, 400, 8, 0.0, 1.01}, Case{"tall", 700, 150, 12, 0.1, 1.0005}}) {
    SCOPED_TRACE(c.name);
    // A = U diag(s) Vᵀ with random orthonormal-ish factors: Gaussian + the spectrum.
    Rng rng(7);
    const int64_t mn = std::min(c.m, c.n);
    std::vector<double> G1(size_t(c.m * mn)), G2(size_t(mn * c.n)), A(size_t(c.m * c.n), 0.0);
    for (auto& v : G1) v = rng.normal();
    for (auto& v : G2) v = rng.normal();
    for (int64_t j = 0; j < mn; ++j) {
      const double s = std::exp(-c.decay * double(j));
      for (int64_t i = 0; i < c.m; ++i) G1[size_t(i * mn + j)] *= s;
    }
    parallel_dgemm(false, false, c.m, c.n, mn, G1.data(), G2.data(), A.data());
    SvdOptions ex;
    ex.method = SvdMethod::Exact;
    SvdOptions rnd;
    rnd.method = SvdMethod::Randomized;
    TruncatedSvd e = truncated_svd(A.data(), c.m, c.n, c.k, ex, c.name);
    TruncatedSvd r = truncated_svd(A.data(), c.m, c.n, c.k, rnd, c.name);
    EXPECT_EQ(r.method, SvdMethod::Randomized);
    auto residual = [&](const TruncatedSvd& s) {
      std::vector<double> us(s.U);
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = 0; j < s.k; ++j) us[size_t(i * s.k + j)] *= s.S[size_t(j)];
      std::vector<double> rec(size_t(c.m * c.n));
      parallel_dgemm(false, false, c.m, c.n, s.k, us.data(), s.Vh.data(), rec.data());
      double e2 = 0;
      for (size_t i = 0; i < rec.size(); ++i) e2 += (A[i] - rec[i]) * (A[i] - rec[i]);
      return std::sqrt(e2);
    };
    const double re = residual(e), rr = residual(r);
    std::printf("%s: exact residual %.6g, randomized %.6g (ratio %.5f), S[0] %.6g vs %.6g\n", c.name, re, rr, rr / re,
                e.S[0], r.S[0]);
    EXPECT_GE(rr, re * (1 - 1e-9));  // the exact truncation is optimal
    EXPECT_LE(rr, re * c.max_ratio);
    EXPECT_NEAR(r.S[0], e.S[0], 1e-3 * e.S[0]);
    // Exact SVD reconstructs a full-rank decomposition exactly.
    TruncatedSvd full = truncated_svd(A.data(), c.m, c.n, mn, ex, c.name);
    EXPECT_LE(residual(full), 1e-9 * re) << "k = min(m, n)";
  }
}

TEST(Svd, ErrorsNameTheMatrix) {
  std::vector<double> a(12, 1.0);
  EXPECT_NE(error_of([&] { truncated_svd(a.data(), 3, 4, 4, {}, "w"); }).find("rank 4 must be in [1, min(3, 4)]"),
            std::string::npos);
  a[5] = std::nan("");
  EXPECT_NE(error_of([&] { truncated_svd(a.data(), 3, 4, 2, {}, "layer.q"); }).find("layer.q: element 5 (row 1, column 1) is nan"),
            std::string::npos);
  SvdOptions o;
  EXPECT_EQ(resolve_svd_method(4096, 11008, 16, o), SvdMethod::Randomized);
  EXPECT_EQ(resolve_svd_method(256, 768, 16, o), SvdMethod::Exact);
  EXPECT_EQ(resolve_svd_method(2048, 2048, 600, o), SvdMethod::Exact);
}

TEST(LayerQuantPlan, FirstMatchWinsAndErrorsNameTheEntry) {
  LayerQuantPlan p = LayerQuantPlan::parse("layers.0-1=nf4,layers.3.mlp=nf3,down_proj=uniform2,*=nf2", QuantFormat::NF4);
  auto fmt_of = [&](int64_t layer, const char* kind) {
    Linear l;
    l.layer = layer;
    l.kind = kind;
    return quant_format_name(p.format_for(l));
  };
  EXPECT_STREQ(fmt_of(0, "q_proj"), "nf4");
  EXPECT_STREQ(fmt_of(1, "down_proj"), "nf4");
  EXPECT_STREQ(fmt_of(3, "up_proj"), "nf3");
  EXPECT_STREQ(fmt_of(3, "o_proj"), "nf2");
  EXPECT_STREQ(fmt_of(2, "down_proj"), "uniform2");
  EXPECT_STREQ(fmt_of(2, "v_proj"), "nf2");
  LayerQuantPlan q = LayerQuantPlan::parse("self_attn=nf4", QuantFormat::NF2);
  Linear l;
  l.layer = 5;
  l.kind = "gate_proj";
  EXPECT_EQ(q.format_for(l), QuantFormat::NF2);
  l.kind = "k_proj";
  EXPECT_EQ(q.format_for(l), QuantFormat::NF4);
  for (auto [spec, want] : {std::pair{"layers.0-3=nf5", "unknown format 'nf5'"},
                            {"layers.3-1=nf4", "layer range '3-1'"}, {"layers.x=nf4", "layer range 'x'"},
                            {"attn=nf4", "unknown module 'attn'"}, {"nf4", "expected SELECTOR=FORMAT"},
                            {"layers.2.=nf4", "expected SELECTOR=FORMAT"}}) {
    SCOPED_TRACE(spec);
    const std::string e = error_of([&] { LayerQuantPlan::parse(spec, QuantFormat::NF2); });
    EXPECT_NE(e.find("--layer-quant"), std::string::npos) << e;
    EXPECT_NE(e.find(want), std::string::npos) << e;
  }
}

namespace {


double logit_error(LlamaModel& m, const Tensor& ref, const std::vector<int32_t>& ids) {
  Tensor l = m.logits(ids, 2, int64_t(ids.size()) / 2);
  double d = 0;
  for (int64_t i = 0; i < l.numel(); ++i) d += std::pow(double(l.f32()[i]) - ref.f32()[i], 2);
  return std::sqrt(d);
}

}  // namespace

// PEFT's test: the LoftQ-initialised model's logits are closer to the dense model's than those
// of the plainly quantized model (≥ 1.03×); at 2 bits we expect, and check, much more.
TEST(Loftq, ModelLogitsCloserToDenseThanPlainQuantization) {
  TempDir dir("loftq_model");
  // Weights with structure (as trained weights have): a low-rank part plus noise.
  write_random_model(small_test_config(2), DType::F32, 21, dir / "dense", {}, 0.02);
  const std::vector<int32_t> ids = {1, 5, 17, 33, 60, 2, 9, 95, 40, 41, 42, 7, 3, 3, 80, 11};
  auto dense = load_model(dir / "dense");
  const Tensor ref = dense->logits(ids, 2, 8);
  for (auto [fmt, rank, min_gain] : {std::tuple{"nf4", 16, 1.03}, {"nf2", 16, 1.03}, {"nf2", 64, 1.3}}) {
    SCOPED_TRACE(std::string(fmt) + " r" + std::to_string(rank));
    LoadOptions lo;
    lo.quantize = {fmt, 64, false};
    auto plain = load_model(dir / "dense", lo);
    auto lq = load_model(dir / "dense");
    LoftqOptions opt;
    QuantFormat f;
    ASSERT_TRUE(parse_quant_format(fmt, &f));
    opt.quant = LayerQuantPlan::parse("", f);
    opt.lora.r = rank;
    opt.lora.alpha = 2.0 * double(rank);  // s = 2: the scaling must be divided out
    opt.lora.target_modules = {"all-linear"};
    LoftqSummary s = apply_loftq(*lq, opt);
    EXPECT_EQ(s.layers, 14);
    const double e_plain = logit_error(*plain, ref, ids), e_loftq = logit_error(*lq, ref, ids);
    std::printf("%s r%d: logit error plain %.5g, LoftQ %.5g (%.2fx lower); weight error %.4f -> %.4f\n", fmt, rank,
                e_plain, e_loftq, e_plain / e_loftq, std::sqrt(s.plain_error2 / s.weight_norm2),
                std::sqrt(s.loftq_error2 / s.weight_norm2));
    EXPECT_GE(e_plain / e_loftq, min_gain);
  }
}

TEST(Loftq, ModelErrorsNameLayerAndFlag) {
  TempDir dir("loftq_errors");
  write_random_model(small_test_config(1), DType::BF16, 3, dir / "dense");
  write_random_model(small_test_config(1), DType::BF16, 3, dir / "q", {"nf4", 64, true});
  auto run = [&](const std::string& d, auto edit) {
    auto m = load_model(d);
    LoftqOptions o;
    o.quant = LayerQuantPlan::parse("", QuantFormat::NF2);
    o.lora.r = 8;
    o.lora.target_modules = {"all-linear"};
    edit(o);
    return error_of([&] { apply_loftq(*m, o); });
  };
  std::string e = run(dir / "dense", [](LoftqOptions& o) { o.lora.r = 200; });
  EXPECT_NE(e.find("rank 200 is above min(out, in) = 128 (--rank"), std::string::npos) << e;
  EXPECT_NE(e.find("model.layers.0.self_attn.q_proj"), std::string::npos) << e;
  e = run(dir / "dense", [](LoftqOptions& o) { o.block_size = 512; });
  EXPECT_NE(e.find("--block-size 512 does not divide the row length 128"), std::string::npos) << e;
  e = run(dir / "q", [](LoftqOptions&) {});
  EXPECT_NE(e.find("is already quantized"), std::string::npos) << e;
  e = run(dir / "dense", [](LoftqOptions& o) { o.lora.target_modules = {"qkv"}; });
  EXPECT_NE(e.find("'qkv'"), std::string::npos) << e;
}

// Same seed and thread count: the same bits (the randomized SVD included).
TEST(Loftq, DeterministicForAThreadCount) {
  Rng rng(3);
  Tensor w = Tensor::empty({1536, 1536});
  for (int64_t i = 0; i < w.numel(); ++i) w.f32()[i] = float(rng.normal() * 0.02);
  LoftqMatrixOptions o;
  o.format = QuantFormat::NF2;
  o.rank = 8;
  o.iters = 2;
  LoftqMatrixResult a = loftq_matrix(w, o, "w"), b = loftq_matrix(w, o, "w");
  EXPECT_EQ(a.svd_method, SvdMethod::Randomized);
  EXPECT_EQ(std::memcmp(a.A.raw(), b.A.raw(), a.A.nbytes()), 0);
  EXPECT_EQ(std::memcmp(a.B.raw(), b.B.raw(), a.B.nbytes()), 0);
  EXPECT_EQ(a.q->packed(), b.q->packed());
  EXPECT_LT(a.loftq_error, a.plain_error);
}
