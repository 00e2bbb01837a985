// Optimizers: torch AdamW against a hand-computed reference, bitsandbytes-style 8-bit AdamW
// (maps, quantization error budgets, closeness to fp32, convergence, the 4096 rule), paged state
// (lives in the mapping, bit-identical to unpaged), checkpoint round trips for every kind, and
// clip_grad_norm with torch's semantics.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "core/paged_memory.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "quant/codebook.h"
#include "train/optimizer.h"
#include "train/optimizer_8bit.h"
#include "test_util.h"
#include "tensor_compare.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

Var make_param(const std::string& name, int64_t n, uint64_t seed, float scale = 0.5f) {
  Rng r(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float(r.normal()) * scale;
  return Var(Tensor::from_vector({n}, v), true, name);
}

void set_grad(const Var& p, const std::vector<float>& g) {
  p.zero_grad();
  std::memcpy(p.grad_buffer(), g.data(), g.size() * sizeof(float));
}

std::vector<float> random_vec(int64_t n, uint64_t seed, float scale = 1.0f) {
  Rng r(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float(r.normal()) * scale;
  return v;
}

// Deep copies of parameters, so two optimizers can run side by side.
NamedParams clone_params(const NamedParams& ps) {
  NamedParams out;
  for (auto& [n, p] : ps) out.emplace_back(n, Var(p.value().clone(), true, n));
  return out;
}

// One step with gradients g_k = a_k · (p - t) + noise(step): a smooth problem with noise.
void noisy_step(Optimizer& opt, int step, double lr) {
  for (size_t k = 0; k < opt.params().size(); ++k) {
    const Var& p = opt.params()[k].second;
    const int64_t n = p.value().numel();
    std::vector<float> g = random_vec(n, 1000 + 17 * step + k, 0.1f);
    const float* w = p.value().f32();
    for (int64_t i = 0; i < n; ++i) g[i] += 0.5f * (w[i] - 0.1f);
    set_grad(p, g);
  }
  opt.step(lr);
}

NamedParams two_params(int64_t n0, int64_t n1) {
  return {{"layers.0.a", make_param("layers.0.a", n0, 1)}, {"layers.0.b", make_param("layers.0.b", n1, 2)}};
}

using qpeft::testing::error_of;

}  // namespace

TEST(OptimKinds, TableParseAndFactory) {
  EXPECT_EQ(optimizer_names(),
            (std::vector<std::string>{"adamw", "paged_adamw", "adamw8bit", "paged_adamw8bit", "adafactor"}));
  for (const auto& name : optimizer_names()) {
    OptimKind k;
    ASSERT_TRUE(parse_optim_kind(name, &k));
    EXPECT_STREQ(optim_kind_info(k).name, name.c_str());
    auto opt = make_optimizer(name, two_params(10, 20), {});
    EXPECT_STREQ(opt->name(), name.c_str());
  }
  const std::string err = error_of([] { make_optimizer("adam9bit", two_params(4, 4), {}); });
  EXPECT_NE(err.find("adam9bit"), std::string::npos) << err;
  EXPECT_NE(err.find("paged_adamw8bit"), std::string::npos) << err;
}

TEST(AdamWTorch, MatchesHandComputedReference) {
  // torch.optim.AdamW in double: p *= 1 - lr·wd; m = b1·m + (1-b1)·g; v = b2·v + (1-b2)·g²;
  // p -= lr / (1 - b1^t) · m / (sqrt(v) / sqrt(1 - b2^t) + eps).
  AdamWConfig cfg;
  cfg.beta1 = 0.8;
  cfg.beta2 = 0.95;
  cfg.eps = 1e-6;
  cfg.weight_decay = 0.1;
  const int64_t n = 7;
  NamedParams ps = {{"w", make_param("w", n, 3)}};
  std::vector<double> p(n), m(n, 0.0), v(n, 0.0);
  for (int64_t i = 0; i < n; ++i) p[i] = ps[0].second.value().f32()[i];
  const std::vector<double> p_init = p;
  AdamW opt(ps, cfg);
  const double lrs[4] = {1e-2, 2e-2, 5e-3, 1e-2};
  for (int t = 1; t <= 4; ++t) {
    std::vector<float> g = random_vec(n, 50 + t);
    if (t == 2) g[3] = 0.0f;  // a zero gradient still decays and moves by the momentum
    set_grad(ps[0].second, g);
    opt.step(lrs[t - 1]);
    const double lr = lrs[t - 1];
    for (int64_t i = 0; i < n; ++i) {
      p[i] *= 1.0 - lr * cfg.weight_decay;
      m[i] = cfg.beta1 * m[i] + (1 - cfg.beta1) * g[i];
      v[i] = cfg.beta2 * v[i] + (1 - cfg.beta2) * double(g[i]) * g[i];
      const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(cfg.beta2, t)) + cfg.eps;
      p[i] -= lr / (1 - std::pow(cfg.beta1, t)) * m[i] / denom;
    }
    if (t == 1) {  // bias correction: m̂ = g, v̂ = g², so p1 = p0·(1 - lr·wd) - lr·g / (|g| + eps)
      for (int64_t i = 0; i < n; ++i)
        EXPECT_NEAR(p[i], p_init[i] * (1 - lr * cfg.weight_decay) - lr * g[i] / (std::fabs(g[i]) + cfg.eps), 1e-12);
    }
    const float* w = ps[0].second.value().f32();
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(w[i], p[i], 2e-6 * std::max(1.0, std::fabs(p[i]))) << "t=" << t;
  }
  EXPECT_EQ(opt.steps(), 4);
  EXPECT_EQ(opt.state_bytes(), size_t(2 * n * 4));
}

TEST(Adam8bit, UnsignedMapIsBitsandbytes) {
  auto u = optim_map_unsigned();
  ASSERT_EQ(u.size(), 256u);
  EXPECT_EQ(u[0], 0.0f);
  EXPECT_EQ(u[255], 1.0f);
  for (size_t i = 1; i < 256; ++i) EXPECT_LT(u[i - 1], u[i]) << i;
  // Decade i has 2^(i+1) values: 2 in [1e-7, 1e-6), ..., 128 in [0.1, 1).
  int top = 0;
  for (float x : u) top += (x >= 0.1f && x < 1.0f);
  EXPECT_EQ(top, 128);
  // The first: float(1e-6) · (0.1 + 0.55) / 2 (linspace(0.1, 1, 3) = [0.1, 0.55, 1]).
  EXPECT_EQ(u[1], float(1e-6) * ((0.1f + 0.55f) / 2.0f));
  EXPECT_EQ(u[254], 1.0f * ((torch_linspace_f32(0.1f, 1.0f, 129)[127] + 1.0f) / 2.0f));
  // The signed map is the SPEC §2 dynamic map: 127 negatives, 0 at 127, 1.0 last.
  auto s = optim_map_signed();
  EXPECT_EQ(s[127], 0.0f);
  EXPECT_EQ(s[255], 1.0f);
  EXPECT_LT(s[126], 0.0f);
}

TEST(Adam8bit, QuantizeToMapPicksTheNearestCode) {
  Rng r(7);
  for (bool is_signed : {true, false}) {
    const float* map = is_signed ? optim_map_signed().data() : optim_map_unsigned().data();
    for (int it = 0; it < 20000; ++it) {
      // Log-uniform magnitudes over 8 decades, to visit every part of the map.
      float x = float(std::pow(10.0, -8.0 * r.uniform()));
      if (is_signed && r.uniform() < 0.5) x = -x;
      const uint8_t c = quantize_to_map(map, x);
      float best = std::numeric_limits<float>::infinity();
      for (int j = 0; j < 256; ++j) best = std::min(best, std::fabs(map[j] - x));
      ASSERT_EQ(std::fabs(map[c] - x), best) << "x=" << x << " code " << int(c);
    }
    EXPECT_EQ(quantize_to_map(map, 1.0f), 255);
    EXPECT_EQ(quantize_to_map(map, 0.0f), is_signed ? 127 : 0);
  }
}

TEST(Adam8bit, FastCoderEqualsTheBisection) {
  Rng r(8);
  for (bool is_signed : {true, false}) {
    const MapCoder& coder = is_signed ? optim_coder_signed() : optim_coder_unsigned();
    const float* map = coder.map();
    EXPECT_LE(coder.steps(), 3);
    // Adversarial: every code value, every float midpoint (ties) and their neighbours, the ends,
    // signed zeros, out-of-range values; then random ones over all decades.
    std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 2.0f, -2.0f, 1e-30f, -1e-30f, 3e38f, -3e38f};
    for (int j = 0; j < 256; ++j) {
      xs.push_back(map[j]);
      if (j > 0) xs.push_back((map[j - 1] + map[j]) * 0.5f);
    }
    for (size_t i = 0, n = xs.size(); i < n; ++i) {
      xs.push_back(std::nextafter(xs[i], 10.0f));
      xs.push_back(std::nextafter(xs[i], -10.0f));
    }
    for (int it = 0; it < 200000; ++it) {
      float x = float(std::pow(10.0, -9.0 * r.uniform()));
      xs.push_back(r.uniform() < 0.5 ? -x : x);
    }
    for (float x : xs) ASSERT_EQ(coder.encode(x), quantize_to_map(map, x)) << "x=" << x << " signed=" << is_signed;
  }
}

TEST(Adam8bit, StateRoundTripErrorBudget) {
  // m-like (signed Gaussian with outliers) and v-like (squares) states, a partial last block.
  const int64_t n = 5 * 256 + 77;
  std::vector<float> m = random_vec(n, 11, 1e-3f), v(static_cast<size_t>(n));
  m[300] = 0.05f;  // one outlier block
  for (int64_t i = 0; i < n; ++i) v[i] = m[i] * m[i];
  for (bool is_signed : {true, false}) {
    const std::vector<float>& x = is_signed ? m : v;
    std::vector<uint8_t> codes(static_cast<size_t>(n));
    std::vector<float> absmax(static_cast<size_t>(optim8bit_blocks(n))), back(static_cast<size_t>(n));
    quantize_state_8bit(x.data(), n, is_signed, codes.data(), absmax.data());
    dequantize_state_8bit(codes.data(), absmax.data(), n, is_signed, back.data());
    const float* map = is_signed ? optim_map_signed().data() : optim_map_unsigned().data();
    float max_gap = 0;
    for (int j = 1; j < 256; ++j) max_gap = std::max(max_gap, map[j] - map[j - 1]);
    double err2 = 0, ref2 = 0;
    int sign_flips = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float a = absmax[size_t(i / 256)];
      ASSERT_LE(std::fabs(back[i] - x[i]), 0.5f * max_gap * a * 1.0001f) << i;
      if (x[i] != 0 && (back[i] == 0 || std::signbit(back[i]) != std::signbit(x[i]))) ++sign_flips;
      err2 += double(back[i] - x[i]) * (back[i] - x[i]);
      ref2 += double(x[i]) * x[i];
    }
    // m keeps its sign (the kernel's sign fix); v = m² spans more decades than the map (its
    // smallest nonzero value is 3.25e-7 · absmax), so a few tiny v round to 0, as in bitsandbytes.
    if (is_signed)
      EXPECT_EQ(sign_flips, 0);
    else
      EXPECT_LT(sign_flips, n / 100);
    const double rel = std::sqrt(err2 / ref2);
    EXPECT_LT(rel, is_signed ? 0.02 : 0.01) << "signed=" << is_signed;
    for (int64_t b = 0; b < optim8bit_blocks(n); ++b) {
      float amax = 0;
      for (int64_t i = b * 256; i < std::min(n, b * 256 + 256); ++i) amax = std::max(amax, std::fabs(x[i]));
      EXPECT_EQ(absmax[size_t(b)], amax);
    }
  }
}

TEST(Adam8bit, SmallTensorsKeepFp32State) {
  AdamW opt(two_params(kOptimMin8bitSize - 1, kOptimMin8bitSize), {}, OptimKind::AdamW8bit);
  EXPECT_FALSE(opt.state_info(0).quantized);
  EXPECT_TRUE(opt.state_info(1).quantized);
  EXPECT_EQ(opt.state_info(0).bytes, size_t(2 * 4 * 4095));
  EXPECT_EQ(opt.state_info(1).bytes, size_t(2 * 4096 + 2 * 4 * 16));  // codes + one absmax per 256
  auto st = opt.state_tensors();
  ASSERT_EQ(st.size(), 6u);
  EXPECT_EQ(st[0].first, "exp_avg.layers.0.a");
  EXPECT_EQ(st[2].first, "exp_avg.layers.0.b.codes");
  EXPECT_EQ(st[2].second.dtype(), DType::U8);
  EXPECT_EQ(st[3].first, "exp_avg.layers.0.b.absmax");
  EXPECT_EQ(st[3].second.shape(), Shape{16});
  EXPECT_EQ(st[5].first, "exp_avg_sq.layers.0.b.absmax");
}

TEST(Adam8bit, StaysCloseToAdamW) {
  AdamWConfig cfg;
  cfg.weight_decay = 0.01;
  NamedParams base = {{"w", make_param("w", 16384, 5)}};
  AdamW ref(clone_params(base), cfg, OptimKind::AdamW);
  AdamW q8(clone_params(base), cfg, OptimKind::AdamW8bit);
  ASSERT_TRUE(q8.state_info(0).quantized);
  for (int t = 0; t < 20; ++t) {
    noisy_step(ref, t, 1e-3);
    noisy_step(q8, t, 1e-3);
  }
  // Compare the total movement of the weights.
  const float *w0 = base[0].second.value().f32(), *wr = ref.params()[0].second.value().f32(),
              *wq = q8.params()[0].second.value().f32();
  double diff2 = 0, move2 = 0;
  for (int64_t i = 0; i < 16384; ++i) {
    diff2 += double(wq[i] - wr[i]) * (wq[i] - wr[i]);
    move2 += double(wr[i] - w0[i]) * (wr[i] - w0[i]);
  }
  const double rel = std::sqrt(diff2 / move2);
  EXPECT_LT(rel, 0.05) << "8-bit vs fp32 AdamW relative difference of the update";
  std::printf("adamw8bit vs adamw after 20 steps: relative difference of the movement %.4f\n", rel);
}

TEST(Adam8bit, DrivesAQuadraticDown) {
  // loss = 1/2 Σ a_i (p_i - t_i)², a_i in [0.5, 2]
  std::vector<double> final_loss;
  for (const char* kind : {"adamw", "adamw8bit"}) {
    const int64_t n = 6000;
    NamedParams ps = {{"w", make_param("w", n, 9)}};
    std::vector<float> a(n), t = random_vec(n, 10, 0.3f);
    Rng r(12);
    for (auto& x : a) x = float(0.5 + 1.5 * r.uniform());
    auto opt = make_optimizer(kind, ps, {});
    auto loss = [&] {
      const float* w = ps[0].second.value().f32();
      double l = 0;
      for (int64_t i = 0; i < n; ++i) l += 0.5 * a[i] * double(w[i] - t[i]) * (w[i] - t[i]);
      return l;
    };
    const double l0 = loss();
    for (int step = 0; step < 300; ++step) {
      const float* w = ps[0].second.value().f32();
      std::vector<float> g(n);
      for (int64_t i = 0; i < n; ++i) g[i] = a[i] * (w[i] - t[i]);
      set_grad(ps[0].second, g);
      opt->step(step < 200 ? 1e-2 : 2e-3);
    }
    EXPECT_LT(loss(), 1e-2 * l0) << kind << ": " << l0 << " -> " << loss();
    final_loss.push_back(loss());
  }
  EXPECT_LT(final_loss[1], 1.5 * final_loss[0]) << "adamw8bit ends far above adamw";
}

TEST(Adam8bit, NonFiniteGradientZeroesThatStateAndSkipsTheWeight) {
  NamedParams ps = {{"w", make_param("w", 4096, 13)}};
  AdamW opt(ps, {}, OptimKind::AdamW8bit);
  std::vector<float> g = random_vec(4096, 14);
  set_grad(ps[0].second, g);
  opt.step(1e-2);
  g[5] = std::numeric_limits<float>::quiet_NaN();
  g[9] = std::numeric_limits<float>::infinity();
  const float w5 = ps[0].second.value().f32()[5], w9 = ps[0].second.value().f32()[9];
  set_grad(ps[0].second, g);
  opt.step(1e-2);
  EXPECT_EQ(ps[0].second.value().f32()[5], w5);
  EXPECT_EQ(ps[0].second.value().f32()[9], w9);
  auto st = opt.state_tensors();
  const uint8_t* cm = static_cast<const uint8_t*>(st[0].second.raw());
  const uint8_t* cv = static_cast<const uint8_t*>(st[2].second.raw());
  EXPECT_EQ(cm[5], 127);  // map_s[127] = 0
  EXPECT_EQ(cv[9], 0);    // map_u[0] = 0
  for (int64_t i = 0; i < 4096; ++i) EXPECT_TRUE(std::isfinite(ps[0].second.value().f32()[i]));
}

TEST(Adam8bit, SameBitsForAnyThreadCount) {
  NamedParams base = {{"w", make_param("w", 10000, 15)}};
  std::vector<NamedParams> runs;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    AdamW opt(clone_params(base), {}, OptimKind::AdamW8bit);
    for (int t = 0; t < 3; ++t) noisy_step(opt, t, 1e-3);
    runs.push_back(opt.params());
  }
  set_num_threads(2);
  for (size_t r = 1; r < runs.size(); ++r) EXPECT_TRUE(same_bits(runs[r][0].second.value(), runs[0][0].second.value()));
}

TEST(PagedMemory, AllocatesZeroedWritableMappings) {
  const size_t before = paged_bytes_in_use();
  {
    Tensor t = paged_zeros({1000});
    EXPECT_TRUE(is_paged(t));
    EXPECT_GE(paged_bytes_in_use(), before + 4000);
    for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(t.f32()[i], 0.0f);
    t.f32()[999] = 3.0f;
    EXPECT_EQ(t.clone().f32()[999], 3.0f);
    EXPECT_FALSE(is_paged(Tensor::zeros({1000})));
  }
  EXPECT_EQ(paged_bytes_in_use(), before);
}

TEST(PagedMemory, ClearErrorWhenTheDirectoryIsUnusable) {
  const char* old = std::getenv("QPEFT_PAGED_DIR");
  const std::string saved = old ? old : "";
  setenv("QPEFT_PAGED_DIR", "/nonexistent/qpeft-paged-dir", 1);
  const std::string err = error_of([] { allocate_paged(4096); });
  if (old)
    setenv("QPEFT_PAGED_DIR", saved.c_str(), 1);
  else
    unsetenv("QPEFT_PAGED_DIR");
  EXPECT_NE(err.find("/nonexistent/qpeft-paged-dir"), std::string::npos) << err;
  EXPECT_NE(err.find("QPEFT_PAGED_DIR"), std::string::npos) << err;
  EXPECT_EQ(paged_dir().source, old ? "QPEFT_PAGED_DIR" : "the system temp dir ($TMPDIR or /tmp)");
}

TEST(PagedOptim, LargeStatesLiveInTheMapping) {
  for (OptimKind kind : {OptimKind::PagedAdamW, OptimKind::PagedAdamW8bit}) {
    AdamW opt(two_params(kOptimMinPagedSize, kOptimMinPagedSize - 1), {}, kind);
    EXPECT_TRUE(opt.state_info(0).paged);
    EXPECT_FALSE(opt.state_info(1).paged);
    for (auto& [name, t] : opt.state_tensors()) {
      const bool big = name.find("layers.0.a") != std::string::npos && name.find("absmax") == std::string::npos;
      EXPECT_EQ(is_paged(t), big) << name;
    }
    const size_t per = kind == OptimKind::PagedAdamW ? 4 : 1;
    EXPECT_EQ(opt.paged_state_bytes(), 2 * per * size_t(kOptimMinPagedSize));
  }
  AdamW plain(two_params(kOptimMinPagedSize, 10), {}, OptimKind::AdamW8bit);
  EXPECT_EQ(plain.paged_state_bytes(), 0u);
  for (auto& [name, t] : plain.state_tensors()) EXPECT_FALSE(is_paged(t)) << name;
}

TEST(PagedOptim, BitIdenticalToUnpaged) {
  const std::pair<OptimKind, OptimKind> pairs[] = {{OptimKind::AdamW, OptimKind::PagedAdamW},
                                                   {OptimKind::AdamW8bit, OptimKind::PagedAdamW8bit}};
  NamedParams base = two_params(kOptimMinPagedSize + 300, 5000);
  for (auto [plain_kind, paged_kind] : pairs) {
    AdamWConfig cfg;
    cfg.weight_decay = 0.05;
    AdamW plain(clone_params(base), cfg, plain_kind), paged(clone_params(base), cfg, paged_kind);
    ASSERT_TRUE(paged.state_info(0).paged);
    for (int t = 0; t < 4; ++t) {
      noisy_step(plain, t, 1e-3);
      noisy_step(paged, t, 1e-3);
    }
    for (size_t k = 0; k < 2; ++k)
      EXPECT_TRUE(same_bits(plain.params()[k].second.value(), paged.params()[k].second.value())) << k;
    auto a = plain.state_tensors(), b = paged.state_tensors();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      EXPECT_TRUE(same_bits(a[i].second, b[i].second)) << a[i].first;
    }
  }
}

TEST(OptimCheckpoint, SaveLoadContinuesBitIdenticallyForEveryKind) {
  const std::string dir = ::testing::TempDir() + "/qpeft_optim_ckpt";
  std::filesystem::create_directories(dir);
  NamedParams base = two_params(kOptimMinPagedSize + 5, 3000);
  for (const auto& kind : optimizer_names()) {
    AdamWConfig cfg;
    cfg.weight_decay = 0.02;
    auto a = make_optimizer(kind, clone_params(base), cfg);
    for (int t = 0; t < 3; ++t) noisy_step(*a, t, 1e-3);
    // Through a safetensors file, as the trainer's checkpoints do.
    const std::string path = dir + "/" + kind + ".safetensors";
    save_safetensors(path, a->state_tensors(), {{"optimizer", a->name()}});
    auto file = SafetensorsFile::open(path);
    std::vector<std::pair<std::string, Tensor>> loaded;
    for (const auto& n : file->names()) loaded.emplace_back(n, file->get(n).clone());
    NamedParams resumed_params;
    for (auto& [n, p] : a->params()) resumed_params.emplace_back(n, Var(p.value().clone(), true, n));
    auto b = make_optimizer(kind, resumed_params, cfg);
    b->load_state(loaded, a->steps());
    EXPECT_EQ(b->steps(), 3);
    for (int t = 3; t < 6; ++t) {
      noisy_step(*a, t, 1e-3);
      noisy_step(*b, t, 1e-3);
    }
    for (size_t k = 0; k < 2; ++k)
      EXPECT_TRUE(same_bits(a->params()[k].second.value(), b->params()[k].second.value())) << kind << " param " << k;
    auto sa = a->state_tensors(), sb = b->state_tensors();
    for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(same_bits(sa[i].second, sb[i].second)) << kind << " " << sa[i].first;
  }
  std::filesystem::remove_all(dir);
}

TEST(OptimCheckpoint, ConvertsPrecisionAndExplainsMissingState) {
  NamedParams base = two_params(5000, 100);
  AdamW f32(clone_params(base), {}, OptimKind::AdamW);
  for (int t = 0; t < 2; ++t) noisy_step(f32, t, 1e-3);
  // fp32 checkpoint into 8-bit state: quantized like the update quantizes.
  AdamW q8(clone_params(base), {}, OptimKind::AdamW8bit);
  q8.load_state(f32.state_tensors(), f32.steps());
  auto st = q8.state_tensors();
  std::vector<float> m(5000);
  dequantize_state_8bit(static_cast<const uint8_t*>(st[0].second.raw()), st[1].second.f32(), 5000, true, m.data());
  const float* ref = f32.state_tensors()[0].second.f32();
  for (int64_t i = 0; i < 5000; ++i) EXPECT_NEAR(m[i], ref[i], 0.01 * std::fabs(st[1].second.f32()[i / 256]));
  // And back: 8-bit state into fp32.
  AdamW back(clone_params(base), {}, OptimKind::AdamW);
  back.load_state(q8.state_tensors(), q8.steps());
  for (int64_t i = 0; i < 5000; ++i) EXPECT_EQ(back.state_tensors()[0].second.f32()[i], m[i]);
  // Missing and misshapen entries: clear errors naming the tensor.
  auto partial = f32.state_tensors();
  partial.pop_back();
  std::string err = error_of([&] { q8.load_state(partial, 2); });
  EXPECT_NE(err.find("exp_avg_sq.layers.0.b"), std::string::npos) << err;
  auto bad = q8.state_tensors();
  bad[1].second = Tensor::zeros({3});
  err = error_of([&] { q8.load_state(bad, 2); });
  EXPECT_NE(err.find("exp_avg.layers.0.a.absmax"), std::string::npos) << err;
}

TEST(ClipGradNorm, TorchSemantics) {
  // torch.nn.utils.clip_grad_norm_: total = ||all grads||_2; coef = max_norm / (total + 1e-6);
  // grads *= min(coef, 1). Parameters without a gradient are ignored.
  NamedParams ps = {{"a", make_param("a", 2, 1)}, {"b", make_param("b", 1, 2)}, {"c", make_param("c", 3, 3)}};
  auto reset = [&] {
    set_grad(ps[0].second, {3.0f, 0.0f});
    set_grad(ps[1].second, {4.0f});
    ps[2].second.zero_grad();
  };
  reset();
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps, 0.0), 5.0);  // measure only
  EXPECT_EQ(ps[0].second.grad().f32()[0], 3.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps, 10.0), 5.0);  // coef > 1: untouched
  EXPECT_EQ(ps[0].second.grad().f32()[0], 3.0f);
  EXPECT_EQ(ps[1].second.grad().f32()[0], 4.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps, 5.0), 5.0);  // coef = 5 / (5 + 1e-6) < 1: applied
  EXPECT_EQ(ps[1].second.grad().f32()[0], float(4.0 * (5.0 / (5.0 + 1e-6))));
  reset();
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps, 1.0), 5.0);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_EQ(ps[0].second.grad().f32()[0], float(3.0 * coef));
  EXPECT_EQ(ps[1].second.grad().f32()[0], float(4.0 * coef));
  EXPECT_EQ(ps[0].second.grad().f32()[1], 0.0f);
  EXPECT_FALSE(ps[2].second.has_grad());
  EXPECT_NEAR(clip_grad_norm(ps, 0.0), 1.0, 1e-6);
}
