// Adafactor (transformers' implementation, T-Few's settings): three steps against a double
// reference written here from transformers' formulas, factored (2-d, 3-d) and unfactored (0-d,
// 1-d) state, independence from the thread count, checkpoint round trips and their errors, and
// training through train(): it learns and resumes bit-identically.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "test_util.h"
#include "train/adafactor.h"
#include "train/trainer.h"
#include "tensor_compare.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

std::vector<float> random_vec(int64_t n, uint64_t seed, float scale = 1.0f) {
  Rng r(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = float(r.normal()) * scale;
  return v;
}

Var make_param(const std::string& name, const Shape& shape, uint64_t seed) {
  return Var(Tensor::from_vector(shape, random_vec(shape_numel(shape), seed, 0.5f)), true, name);
}

void set_grad(const Var& p, const std::vector<float>& g) {
  p.zero_grad();
  std::memcpy(p.grad_buffer(), g.data(), g.size() * sizeof(float));
}

NamedParams clone_params(const NamedParams& ps) {
  NamedParams out;
  for (auto& [n, p] : ps) out.emplace_back(n, Var(p.value().clone(), true, n));
  return out;
}

// transformers.optimization.Adafactor.step in double, for one parameter, written from its source
// (scale_parameter=False, relative_step=False, beta1=None):
//   step += 1; beta2t = 1 - step^decay_rate; update = grad² + eps1
//   factored (ndim >= 2): row = beta2t·row + (1-beta2t)·update.mean(-1)
//                         col = beta2t·col + (1-beta2t)·update.mean(-2)
//                         update = rsqrt(row / row.mean(-1))[..., None] · rsqrt(col)[..., None, :] · grad
//   else:                 v = beta2t·v + (1-beta2t)·update;  update = rsqrt(v) · grad
//   update /= max(1, RMS(update) / clip);  update *= lr;  p -= wd·lr·p;  p -= update
struct RefParam {
  bool factored;
  int64_t B = 1, R = 1, C = 1, n = 1;
  std::vector<double> p, row, col, v;
  int64_t step = 0;
  std::vector<double> rms;  // RMS(update) before clipping, per step

  RefParam(const Shape& shape, const float* init) {
    factored = shape.size() >= 2;
    n = shape_numel(shape);
    if (factored) {
      R = shape[shape.size() - 2];
      C = shape.back();
      B = n / (R * C);
      row.assign(size_t(B * R), 0.0);
      col.assign(size_t(B * C), 0.0);
    } else {
      v.assign(size_t(n), 0.0);
    }
    p.assign(init, init + n);
  }

  void update(const std::vector<float>& g, double lr, double wd) {
    const double eps1 = 1e-30, clip = 1.0, decay_rate = -0.8;
    ++step;
    const double beta2t = 1.0 - std::pow(double(step), decay_rate);
    std::vector<double> u(static_cast<size_t>(n)), upd(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) u[i] = double(g[i]) * g[i] + eps1;
    if (factored) {
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t r = 0; r < R; ++r) {
          double m = 0;
          for (int64_t c = 0; c < C; ++c) m += u[(b * R + r) * C + c];
          row[b * R + r] = beta2t * row[b * R + r] + (1 - beta2t) * (m / C);
        }
        for (int64_t c = 0; c < C; ++c) {
          double m = 0;
          for (int64_t r = 0; r < R; ++r) m += u[(b * R + r) * C + c];
          col[b * C + c] = beta2t * col[b * C + c] + (1 - beta2t) * (m / R);
        }
        double row_mean = 0;
        for (int64_t r = 0; r < R; ++r) row_mean += row[b * R + r] / R;
        for (int64_t r = 0; r < R; ++r)
          for (int64_t c = 0; c < C; ++c) {
            const int64_t i = (b * R + r) * C + c;
            upd[i] = 1.0 / std::sqrt(row[b * R + r] / row_mean) * (1.0 / std::sqrt(col[b * C + c])) * g[i];
          }
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        v[i] = beta2t * v[i] + (1 - beta2t) * u[i];
        upd[i] = g[i] / std::sqrt(v[i]);
      }
    }
    double ss = 0;
    for (double x : upd) ss += x * x;
    rms.push_back(std::sqrt(ss / double(n)));
    const double denom = std::max(1.0, rms.back() / clip);
    for (int64_t i = 0; i < n; ++i) {
      p[i] -= wd * lr * p[i];
      p[i] -= upd[i] / denom * lr;
    }
  }
};

// Checks |got - want| <= rel·|want| elementwise; returns the largest relative error.
double expect_close(const float* got, const std::vector<double>& want, double rel, const std::string& what) {
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], rel * std::fabs(want[i]) + 1e-30) << what << "[" << i << "]";
    if (want[i] != 0) worst = std::max(worst, std::fabs(got[i] - want[i]) / std::fabs(want[i]));
  }
  return worst;
}

}  // namespace

TEST(Adafactor, ThreeStepsMatchTransformersFormulasInDouble) {
  // A 3x4 matrix (factored), a 5-vector and a 0-d scalar (unfactored), a 2x3x4 tensor (factored
  // per leading index), weight decay on, a different lr each step.
  const std::vector<Shape> shapes = {{3, 4}, {5}, {}, {2, 3, 4}};
  NamedParams ps;
  std::vector<RefParam> ref;
  for (size_t k = 0; k < shapes.size(); ++k) {
    const std::string name = "p" + std::to_string(k);
    ps.emplace_back(name, make_param(name, shapes[k], 10 + k));
    ref.emplace_back(shapes[k], ps.back().second.value().f32());
  }
  AdafactorConfig cfg;
  cfg.weight_decay = 0.1;
  Adafactor opt(ps, cfg);
  EXPECT_TRUE(opt.factored(0));
  EXPECT_FALSE(opt.factored(1));
  EXPECT_FALSE(opt.factored(2));
  EXPECT_TRUE(opt.factored(3));
  const double lrs[3] = {1e-2, 3e-3, 2e-2};
  const float gscale[3] = {1.0f, 0.2f, 5.0f};  // step 2: RMS(update) < 1; step 3: clipped
  double worst_p = 0, worst_s = 0;
  for (int t = 0; t < 3; ++t) {
    for (size_t k = 0; k < ps.size(); ++k) {
      std::vector<float> g = random_vec(ps[k].second.value().numel(), 100 + 10 * t + k, gscale[t]);
      if (t == 1 && k == 0) g[5] = 0.0f;  // a zero gradient entry: only decay moves it
      set_grad(ps[k].second, g);
      ref[k].update(g, lrs[t], cfg.weight_decay);
    }
    opt.step(lrs[t]);
    for (size_t k = 0; k < ps.size(); ++k)
      worst_p = std::max(worst_p, expect_close(ps[k].second.value().f32(), ref[k].p, 1e-6,
                                               "p" + std::to_string(k) + " t=" + std::to_string(t)));
  }
  std::printf("adafactor vs double reference: largest relative error %.2e (parameters)", worst_p);
  // Both clipping branches were taken: step 2 unclipped, step 3 clipped.
  for (size_t k = 0; k < ps.size(); ++k) {
    EXPECT_LT(ref[k].rms[1], 1.0) << k;
    EXPECT_GT(ref[k].rms[2], 1.0) << k;
  }
  // The second moments themselves.
  auto st = opt.state_tensors();
  ASSERT_EQ(st.size(), 3u + 2u + 2u + 3u);  // row, col, step | v, step
  EXPECT_EQ(st[0].first, "exp_avg_sq_row.p0");
  EXPECT_EQ(st[1].first, "exp_avg_sq_col.p0");
  EXPECT_EQ(st[2].first, "step.p0");
  EXPECT_EQ(st[3].first, "exp_avg_sq.p1");
  EXPECT_EQ(st[0].second.shape(), (Shape{3}));
  EXPECT_EQ(st[1].second.shape(), (Shape{4}));
  EXPECT_EQ(st[3].second.shape(), (Shape{5}));
  EXPECT_EQ(st[5].second.shape(), (Shape{}));
  EXPECT_EQ(st[7].second.shape(), (Shape{2, 3}));
  EXPECT_EQ(st[8].second.shape(), (Shape{2, 4}));
  const std::pair<size_t, const std::vector<double>*> moments[] = {{0, &ref[0].row}, {1, &ref[0].col}, {3, &ref[1].v},
                                                                   {5, &ref[2].v},   {7, &ref[3].row}, {8, &ref[3].col}};
  for (auto [i, want] : moments) worst_s = std::max(worst_s, expect_close(st[i].second.f32(), *want, 1e-6, st[i].first));
  std::printf(", %.2e (second moments)\n", worst_s);
  for (size_t k = 0; k < ps.size(); ++k) EXPECT_EQ(opt.param_steps(k), 3);
  EXPECT_EQ(opt.steps(), 3);
  // Factored state: R + C floats per matrix (+ per leading index), not R·C.
  EXPECT_EQ(opt.state_bytes(), size_t(4 * ((3 + 4) + 5 + 1 + 2 * (3 + 4))));
}

TEST(Adafactor, FirstStepIsGradientOverRmsAndSkipsParamsWithoutGradient) {
  // Step 1: beta2t = 0, so v = g² + eps1 and the unfactored update is g / |g| (RMS 1, no clip).
  NamedParams ps = {{"v", make_param("v", {6}, 1)}, {"m", make_param("m", {2, 3}, 2)}};
  const std::vector<float> p0 = ps[0].second.value().to_vector();
  Adafactor opt(ps, {});
  const std::vector<float> g = {0.5f, -2.0f, 1e-3f, 3.0f, -0.25f, 7.0f};
  set_grad(ps[0].second, g);
  ps[1].second.zero_grad();  // no gradient: skipped, its step count stays 0
  opt.step(0.1);
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(ps[0].second.value().f32()[i], p0[i] - 0.1 * (g[i] > 0 ? 1 : -1), 1e-6);
  EXPECT_EQ(opt.param_steps(0), 1);
  EXPECT_EQ(opt.param_steps(1), 0);
  for (float x : opt.state_tensors()[2].second.to_vector()) EXPECT_EQ(x, 0.0f);  // row of m untouched
}

TEST(Adafactor, SameBitsForAnyThreadCount) {
  NamedParams base = {{"w", make_param("w", {67, 301}, 3)}, {"b", make_param("b", {10007}, 4)}};
  std::vector<NamedParams> results;
  for (int threads : {1, 3}) {
    set_num_threads(threads);
    NamedParams ps = clone_params(base);
    Adafactor opt(ps, {});
    for (int t = 0; t < 3; ++t) {
      for (size_t k = 0; k < ps.size(); ++k) set_grad(ps[k].second, random_vec(ps[k].second.value().numel(), 7 * t + k));
      opt.step(1e-2);
    }
    results.push_back(ps);
  }
  set_num_threads(2);
  for (size_t k = 0; k < base.size(); ++k)
    EXPECT_TRUE(same_bits(results[0][k].second.value(), results[1][k].second.value())) << base[k].first;
}

TEST(Adafactor, StateRoundTripContinuesBitIdentically) {
  TempDir tmp("adafactor_state");
  NamedParams base = {
      {"a", make_param("a", {8, 16}, 5)}, {"b", make_param("b", {33}, 6)}, {"s", make_param("s", {}, 7)}};
  AdafactorConfig cfg;
  cfg.weight_decay = 0.01;
  auto run_step = [](Optimizer& o, int t) {
    for (size_t k = 0; k < o.params().size(); ++k)
      set_grad(o.params()[k].second, random_vec(o.params()[k].second.value().numel(), 31 * t + k, 0.3f));
    o.step(5e-3);
  };
  Adafactor a(clone_params(base), cfg);
  for (int t = 0; t < 3; ++t) run_step(a, t);
  const std::string path = tmp / "optimizer.safetensors";
  save_safetensors(path, a.state_tensors(), {{"optimizer", a.name()}});
  auto file = SafetensorsFile::open(path);
  std::vector<std::pair<std::string, Tensor>> loaded;
  for (const auto& n : file->names()) loaded.emplace_back(n, file->get(n).clone());
  Adafactor b(clone_params(a.params()), cfg);
  b.load_state(loaded, a.steps());
  EXPECT_EQ(b.steps(), 3);
  for (size_t k = 0; k < 3; ++k) EXPECT_EQ(b.param_steps(k), 3);
  for (int t = 3; t < 6; ++t) {
    run_step(a, t);
    run_step(b, t);
  }
  for (size_t k = 0; k < 3; ++k) EXPECT_TRUE(same_bits(a.params()[k].second.value(), b.params()[k].second.value())) << k;
  auto sa = a.state_tensors(), sb = b.state_tensors();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(same_bits(sa[i].second, sb[i].second)) << sa[i].first;

  // Errors name the tensor: missing, misshapen, and an AdamW checkpoint.
  auto partial = a.state_tensors();
  partial.erase(partial.begin() + 1);
  EXPECT_NE(error_of([&] { b.load_state(partial, 6); }).find("exp_avg_sq_col.a"), std::string::npos);
  auto bad = a.state_tensors();
  bad[0].second = Tensor::zeros({16});
  const std::string err = error_of([&] { b.load_state(bad, 6); });
  EXPECT_NE(err.find("exp_avg_sq_row.a"), std::string::npos) << err;
  EXPECT_NE(err.find("f32[8]"), std::string::npos) << err;
  auto adamw = make_optimizer("adamw", clone_params(base), {});
  EXPECT_NE(error_of([&] { b.load_state(adamw->state_tensors(), 0); }).find("another optimizer"), std::string::npos);
  auto future = a.state_tensors();
  EXPECT_NE(error_of([&] { b.load_state(future, 2); }).find("step.a"), std::string::npos);  // step 6 > 2
  // A failed load changed nothing.
  sb = b.state_tensors();
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_TRUE(same_bits(sa[i].second, sb[i].second)) << sa[i].first;
  // Bad settings are refused.
  AdafactorConfig neg;
  neg.clip_threshold = 0;
  EXPECT_NE(error_of([&] { Adafactor x(clone_params(base), neg); }).find("[adafactor]"), std::string::npos);
}

TEST(Adafactor, DrivesAQuadraticDown) {
  // loss = 1/2 Σ a_ij (p_ij - t_ij)² over a matrix (factored) and a vector (unfactored).
  NamedParams ps = {{"w", make_param("w", {40, 50}, 9)}, {"b", make_param("b", {300}, 10)}};
  std::vector<std::vector<float>> a, t;
  for (size_t k = 0; k < ps.size(); ++k) {
    const int64_t n = ps[k].second.value().numel();
    t.push_back(random_vec(n, 20 + k, 0.3f));
    Rng r(30 + k);
    std::vector<float> ak(static_cast<size_t>(n));
    for (auto& x : ak) x = float(0.5 + 1.5 * r.uniform());
    a.push_back(ak);
  }
  auto loss = [&] {
    double l = 0;
    for (size_t k = 0; k < ps.size(); ++k) {
      const float* w = ps[k].second.value().f32();
      for (size_t i = 0; i < t[k].size(); ++i) l += 0.5 * a[k][i] * double(w[i] - t[k][i]) * (w[i] - t[k][i]);
    }
    return l;
  };
  auto opt = make_optimizer("adafactor", ps, {});
  const double l0 = loss();
  for (int step = 0; step < 300; ++step) {
    for (size_t k = 0; k < ps.size(); ++k) {
      const float* w = ps[k].second.value().f32();
      std::vector<float> g(t[k].size());
      for (size_t i = 0; i < g.size(); ++i) g[i] = a[k][i] * (w[i] - t[k][i]);
      set_grad(ps[k].second, g);
    }
    opt->step(step < 200 ? 1e-2 : 2e-3);
  }
  EXPECT_LT(loss(), 1e-2 * l0) << l0 << " -> " << loss();
}

namespace {

// As tests/train_loop_test.cpp: repetitive data and a model whose 0.15-scale head can learn it.
TrainOptions learnable_adafactor_run(const TempDir& tmp) {
  write_file(tmp / "data.jsonl", repetitive_jsonl(16, 16, 96, 3));
  write_random_model(ModelConfig::load(golden_dir("llama")), DType::F32, 5, tmp / "model", {}, 0.15);
  TrainOptions o;
  o.model_dir = tmp / "model";
  o.data_path = tmp / "data.jsonl";
  o.out_dir = tmp / "out";
  o.optimizer = "adafactor";
  o.lora.target_modules = {"all-linear"};
  o.lora.r = 8;
  o.lora.alpha = 8;
  o.lora.dropout = 0;
  o.steps = 80;
  o.batch = 2;
  o.seq_len = 16;
  o.lr = 2e-2;
  o.weight_decay = 0.01;
  o.schedule = "constant";
  o.warmup_steps = 0;
  o.quiet = true;
  o.packing = false;
  return o;
}

std::string final_output(const TrainOptions& o) {
  return o.out_dir + (o.method == "full" ? "/model/model.safetensors" : "/adapter_model.safetensors");
}

// 4 steps saved every 2, uninterrupted (tmp/a) and with its last checkpoint and output deleted
// and resumed from checkpoint-2 (tmp/b): the same final bytes.
void expect_resume_bit_identical(TrainOptions o, const TempDir& tmp, const std::string& tag) {
  TrainOptions a = o, b = o;
  a.out_dir = tmp / (tag + "_a");
  b.out_dir = tmp / (tag + "_b");
  a.steps = b.steps = 4;
  a.save_every = b.save_every = 2;
  train(a);
  train(b);
  std::filesystem::remove_all(b.out_dir + "/checkpoint-4");
  std::filesystem::remove_all(b.method == "full" ? b.out_dir + "/model" : final_output(b));
  b.resume = true;
  train(b);
  EXPECT_EQ(read_file(final_output(a)), read_file(final_output(b))) << tag;
  EXPECT_EQ(read_file(a.out_dir + "/checkpoint-4/optimizer.safetensors"),
            read_file(b.out_dir + "/checkpoint-4/optimizer.safetensors"))
      << tag;
}

}  // namespace

TEST(TrainLoop, AdafactorLearnsAndResumesBitIdentically) {
  TempDir tmp("adafactor_train");
  TrainOptions o = learnable_adafactor_run(tmp);
  TrainResult r = train(o);
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss) << r.first_loss << " -> " << r.last_loss;
  std::printf("adafactor, LoRA r=8, 80 steps at lr 2e-2: loss %.3f -> %.3f\n", r.first_loss, r.last_loss);
  auto st = SafetensorsFile::open(o.out_dir + "/checkpoint-80/optimizer.safetensors");
  int rows = 0;
  for (const auto& n : st->names()) rows += n.rfind("exp_avg_sq_row.", 0) == 0;
  EXPECT_GT(rows, 0);  // LoRA A and B are matrices: factored
  expect_resume_bit_identical(o, tmp, "lora");
  // Full fine-tuning: matrices factored, norm weights (vectors) unfactored.
  TrainOptions full = o;
  full.method = "full";
  full.save_dtype = DType::F32;
  full.lr = 3e-3;
  expect_resume_bit_identical(full, tmp, "full");
  auto fst = SafetensorsFile::open(tmp / "full_a/checkpoint-4/optimizer.safetensors");
  int factored = 0, unfactored = 0;
  for (const auto& n : fst->names()) {
    factored += n.rfind("exp_avg_sq_row.", 0) == 0;
    unfactored += n.rfind("exp_avg_sq.", 0) == 0;
  }
  EXPECT_GT(factored, 0);
  EXPECT_GT(unfactored, 0);
}
