// Every row-kernel table this machine supports (reference, avx2, avx512; absent ones are
// skipped and named) against the scalar reference and against double precision / std::exp, for every n in
// 0..100 and some large ones, odd starts, and inputs across exp's range (underflow and
// overflow edges included). Sentinels after each output catch writes past its end.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/rng.h"
#include "ops/vec_math.h"

using namespace qpeft;

namespace {

std::vector<const VecKernels*> tables() {
  std::vector<const VecKernels*> ks{&vec_kernels_reference()};
  const VecKernels* avx2 = vec_kernels_avx2();
  const VecKernels* avx512 = vec_kernels_avx512();
  if (avx2) ks.push_back(avx2);
  if (avx512) ks.push_back(avx512);
  static bool printed = false;
  if (!printed) {
    printed = true;
    std::printf("row kernels: reference ran, avx2 %s, avx512 %s; vec_kernels() = %s\n",
                avx2 ? "ran" : "SKIPPED (not supported here)", avx512 ? "ran" : "SKIPPED (not supported here)",
                vec_kernels().name);
  }
  return ks;
}

std::vector<int64_t> sizes() {
  std::vector<int64_t> n;
  for (int64_t i = 0; i <= 100; ++i) n.push_back(i);
  for (int64_t i : {127, 255, 256, 1000, 4099, 32000}) n.push_back(i);
  return n;
}

// Values in [lo, hi) with a sentinel tail.
std::vector<float> random_values(Rng& rng, int64_t n, float lo, float hi) {
  std::vector<float> v(size_t(n) + 16, 1234.5f);
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = lo + (hi - lo) * float(rng.uniform());
  return v;
}

void expect_sentinels(const std::vector<float>& v, int64_t n, const std::string& what) {
  for (size_t i = size_t(n); i < v.size(); ++i) ASSERT_EQ(v[i], 1234.5f) << what << ": wrote past the end";
}

constexpr float kRel = 2e-6f;  // FMA vs separate multiply-add in the same polynomial

TEST(VecKernels, ExpApproxMatchesStdExp) {
  for (float x = -87.0f; x < 88.0f; x += 0.01f)
    ASSERT_NEAR(exp_approx(x), std::exp(x), 2e-7 * std::exp(double(x))) << x;
  EXPECT_EQ(exp_approx(-100.0f), 0.0f);
  EXPECT_TRUE(std::isfinite(exp_approx(100.0f)));
}

TEST(VecKernels, MaxExpSumScaleMatchReference) {
  const VecKernels& ref = vec_kernels_reference();
  Rng rng(1);
  for (const VecKernels* k : tables()) {
    for (int64_t n : sizes()) {
      if (n == 0) continue;  // max and the softmax rows need n >= 1
      for (int64_t start : {0, 3}) {
        std::vector<float> x = random_values(rng, n + start, -30.0f, 30.0f);
        if (n > 2) x[size_t(start + n / 2)] = -200.0f;  // underflows to exactly 0
        const std::string what = std::string(k->name) + " n=" + std::to_string(n) + " start=" + std::to_string(start);
        const float* xs = x.data() + start;
        ASSERT_EQ(k->max(xs, n), ref.max(xs, n)) << what;
        std::vector<float> a(x), b(x);
        const float shift = ref.max(xs, n);
        const double sa = k->exp_shift_sum(a.data() + start, n, shift);
        const double sb = ref.exp_shift_sum(b.data() + start, n, shift);
        ASSERT_NEAR(sa, sb, 1e-5 * sb) << what;
        double direct = 0;
        for (int64_t i = 0; i < n; ++i) direct += std::exp(double(xs[i]) - shift);
        ASSERT_NEAR(sa, direct, 1e-5 * direct) << what;
        for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(a[size_t(start + i)], b[size_t(start + i)], kRel * b[size_t(start + i)] + 1e-30) << what << " i=" << i;
        expect_sentinels(a, n + start, what);
        k->scale(a.data() + start, n, 0.5f);
        for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(a[size_t(start + i)], 0.5f * b[size_t(start + i)], kRel * b[size_t(start + i)] + 1e-30) << what;
        expect_sentinels(a, n + start, what);
      }
    }
  }
}

TEST(VecKernels, SiluMulForwardAndBackwardMatchReferenceAndCalculus) {
  const VecKernels& ref = vec_kernels_reference();
  Rng rng(2);
  for (const VecKernels* k : tables()) {
    for (int64_t n : sizes()) {
      const std::string what = std::string(k->name) + " n=" + std::to_string(n);
      std::vector<float> g = random_values(rng, n, -12.0f, 12.0f), u = random_values(rng, n, -2.0f, 2.0f);
      std::vector<float> dy = random_values(rng, n, -1.0f, 1.0f);
      if (n > 1) g[0] = -95.0f, g[1] = 95.0f;  // exp over- and underflow inside sigmoid
      std::vector<float> y(size_t(n) + 16, 1234.5f), yr(y);
      k->silu_mul(g.data(), u.data(), y.data(), n);
      ref.silu_mul(g.data(), u.data(), yr.data(), n);
      expect_sentinels(y, n, what);
      for (int64_t i = 0; i < n; ++i) {
        const double a = g[size_t(i)], exact = a / (1.0 + std::exp(-a)) * u[size_t(i)];
        ASSERT_NEAR(y[size_t(i)], yr[size_t(i)], kRel * std::abs(yr[size_t(i)]) + 1e-30) << what << " i=" << i;
        ASSERT_NEAR(y[size_t(i)], exact, 1e-5 * std::abs(exact) + 1e-30) << what << " i=" << i;
      }
      // The backward, accumulating onto 0.25 and writing over NaN, both outputs, then each alone.
      for (int mode = 0; mode < 6; ++mode) {
        const bool accumulate = mode < 3;
        const float start = accumulate ? 0.25f : std::numeric_limits<float>::quiet_NaN();
        const double base = accumulate ? 0.25 : 0.0;
        std::vector<float> dg(size_t(n) + 16, 1234.5f), du(dg), dgr(dg), dur(dg);
        for (int64_t i = 0; i < n; ++i) dg[size_t(i)] = du[size_t(i)] = dgr[size_t(i)] = dur[size_t(i)] = start;
        const bool no_dg = mode % 3 == 2, no_du = mode % 3 == 1;
        k->silu_mul_backward(g.data(), u.data(), dy.data(), no_dg ? nullptr : dg.data(), no_du ? nullptr : du.data(), n,
                             accumulate);
        ref.silu_mul_backward(g.data(), u.data(), dy.data(), no_dg ? nullptr : dgr.data(), no_du ? nullptr : dur.data(),
                              n, accumulate);
        expect_sentinels(dg, n, what);
        expect_sentinels(du, n, what);
        for (int64_t i = 0; i < n; ++i) {
          const size_t j = size_t(i);
          const double a = g[j], s = 1.0 / (1.0 + std::exp(-a));
          const double dg_exact = base + dy[j] * u[j] * s * (1 + a * (1 - s));
          const double du_exact = base + dy[j] * a * s;
          if (no_dg) {
            ASSERT_TRUE(std::isnan(dg[j]) || dg[j] == 0.25f) << what << ": dg touched";
          } else {
            ASSERT_NEAR(dg[j], dg_exact, 2e-5 * std::abs(dg_exact) + 1e-6) << what << " i=" << i;
            // Relative to 0.25 (the accumulator's start) in both modes: near g = −1.28 the factor
            // 1 + g(1 − σ) cancels, and the tables round σ and the products differently.
            ASSERT_NEAR(dg[j], dgr[j], 1e-6 * (0.25 + std::abs(dgr[j]))) << what;
          }
          if (no_du) {
            ASSERT_TRUE(std::isnan(du[j]) || du[j] == 0.25f) << what << ": du touched";
          } else {
            ASSERT_NEAR(du[j], du_exact, 2e-5 * std::abs(du_exact) + 1e-6) << what << " i=" << i;
            ASSERT_NEAR(du[j], dur[j], 1e-6 * (0.25 + std::abs(dur[j]))) << what;
          }
        }
      }
    }
  }
}

TEST(VecKernels, RmsNormRowsMatchReferenceAndDouble) {
  const VecKernels& ref = vec_kernels_reference();
  Rng rng(4);
  for (const VecKernels* k : tables()) {
    for (int64_t n : sizes()) {
      const std::string what = std::string(k->name) + " n=" + std::to_string(n);
      std::vector<float> x = random_values(rng, n, -3.0f, 3.0f), w = random_values(rng, n, 0.5f, 1.5f);
      std::vector<float> dy = random_values(rng, n, -1.0f, 1.0f);
      double ss = 0, ss_exact = 0, d3 = 0, mag3 = 0;
      for (int64_t i = 0; i < n; ++i) {
        ss += double(x[size_t(i)] * x[size_t(i)]);  // squares rounded to float, as llama.cpp's
        ss_exact += double(x[size_t(i)]) * x[size_t(i)];
        d3 += double(dy[size_t(i)]) * w[size_t(i)] * x[size_t(i)];
        mag3 += std::abs(double(dy[size_t(i)]) * w[size_t(i)] * x[size_t(i)]);
      }
      ASSERT_NEAR(k->sum_squares(x.data(), n), ss, 1e-12 * ss + 1e-30) << what;
      ASSERT_NEAR(k->sum_squares(x.data(), n), ss_exact, 1e-7 * ss_exact + 1e-30) << what;
      ASSERT_NEAR(k->dot3(dy.data(), w.data(), x.data(), n), d3, 1e-7 * mag3 + 1e-30) << what;
      ASSERT_NEAR(k->dot3(dy.data(), w.data(), x.data(), n), ref.dot3(dy.data(), w.data(), x.data(), n),
                  1e-12 * mag3 + 1e-30) << what;
      std::vector<float> y(size_t(n) + 16, 1234.5f), yr(y);
      k->scale_mul(x.data(), 0.7f, w.data(), y.data(), n);
      ref.scale_mul(x.data(), 0.7f, w.data(), yr.data(), n);
      expect_sentinels(y, n, what);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[size_t(i)], yr[size_t(i)]) << what << " scale_mul i=" << i;
      std::vector<float> dx(size_t(n) + 16, 1234.5f), dxr(dx), acc(dx), accr(dx);
      for (int64_t i = 0; i < n; ++i) dx[size_t(i)] = dxr[size_t(i)] = acc[size_t(i)] = accr[size_t(i)] = 0.25f;
      k->rms_norm_backward(dy.data(), w.data(), x.data(), 0.9f, 0.3f, dx.data(), n);
      ref.rms_norm_backward(dy.data(), w.data(), x.data(), 0.9f, 0.3f, dxr.data(), n);
      k->add_scaled_product(dy.data(), x.data(), 0.6f, acc.data(), n);
      ref.add_scaled_product(dy.data(), x.data(), 0.6f, accr.data(), n);
      expect_sentinels(dx, n, what);
      expect_sentinels(acc, n, what);
      for (int64_t i = 0; i < n; ++i) {
        const size_t j = size_t(i);
        const double exact = 0.25 + 0.9 * (double(dy[j]) * w[j] - double(x[j]) * 0.3f);
        ASSERT_NEAR(dx[j], exact, 1e-6 * (0.25 + std::abs(exact) + std::abs(x[j]))) << what << " i=" << i;
        ASSERT_NEAR(dx[j], dxr[j], 1e-6 * (0.25 + std::abs(exact) + std::abs(x[j]))) << what << " i=" << i;
        const double exact_acc = 0.25 + double(dy[j]) * x[j] * 0.6f;
        ASSERT_NEAR(acc[j], exact_acc, 1e-6 * (0.25 + std::abs(exact_acc))) << what << " i=" << i;
        ASSERT_NEAR(acc[j], accr[j], 1e-6 * (0.25 + std::abs(exact_acc))) << what << " i=" << i;
      }
    }
  }
}

TEST(VecKernels, RopeRotateMatchesReferenceBitForBit) {
  // Plain multiplies and adds in the reference's order (no FMA): every table gives the same bits.
  const VecKernels& ref = vec_kernels_reference();
  Rng rng(5);
  for (const VecKernels* k : tables()) {
    for (int64_t h : sizes()) {
      const std::string what = std::string(k->name) + " h=" + std::to_string(h);
      std::vector<float> x = random_values(rng, 2 * h, -2.0f, 2.0f), c = random_values(rng, h, -1.0f, 1.0f);
      std::vector<float> sn = random_values(rng, h, -1.0f, 1.0f);
      for (float sign : {1.0f, -1.0f})
        for (bool accumulate : {false, true}) {
          std::vector<float> y(size_t(2 * h) + 16, 1234.5f), yr(y);
          for (int64_t i = 0; i < 2 * h; ++i) y[size_t(i)] = yr[size_t(i)] = 0.125f * float(i % 7);
          k->rope_rotate(x.data(), x.data() + h, c.data(), sn.data(), sign, h, accumulate, y.data(), y.data() + h);
          ref.rope_rotate(x.data(), x.data() + h, c.data(), sn.data(), sign, h, accumulate, yr.data(), yr.data() + h);
          expect_sentinels(y, 2 * h, what);
          for (int64_t i = 0; i < 2 * h; ++i) ASSERT_EQ(y[size_t(i)], yr[size_t(i)]) << what << " i=" << i;
          if (!accumulate && h > 0) {  // and it is a rotation: the norm of each pair is kept when c²+s²=1
            const double a = x[0], b = x[size_t(h)], cs = c[0], si = sign * sn[0];
            EXPECT_NEAR(y[0], a * cs - b * si, 1e-6) << what;
          }
        }
    }
  }
}

TEST(VecKernels, Bf16GemvMatchesReferenceBitForBitAndDouble) {
  // One summation order for every table (16 lanes, a fixed reduction): the same bits.
  const VecKernels& ref = vec_kernels_reference();
  Rng rng(6);
  for (const VecKernels* k : tables()) {
    for (int64_t K : sizes()) {
      if (K > 4099) continue;
      for (int64_t rows : {1, 3, 4, 5, 9}) {
        const std::string what = std::string(k->name) + " K=" + std::to_string(K) + " rows=" + std::to_string(rows);
        std::vector<uint16_t> w(size_t(rows * K));
        for (uint16_t& v : w) {
          const float f = float(rng.normal());
          uint32_t bits;
          std::memcpy(&bits, &f, 4);
          v = uint16_t(bits >> 16);
        }
        std::vector<float> x = random_values(rng, K, -2.0f, 2.0f);
        std::vector<float> y(size_t(rows) + 16, 1234.5f), yr(y);
        k->bf16_gemv(w.data(), rows, K, x.data(), y.data());
        ref.bf16_gemv(w.data(), rows, K, x.data(), yr.data());
        expect_sentinels(y, rows, what);
        for (int64_t r = 0; r < rows; ++r) {
          ASSERT_EQ(y[size_t(r)], yr[size_t(r)]) << what << " r=" << r;
          double want = 0, scale = 0;
          for (int64_t i = 0; i < K; ++i) {
            const uint32_t bits = uint32_t(w[size_t(r * K + i)]) << 16;
            float wf;
            std::memcpy(&wf, &bits, 4);
            want += double(wf) * double(x[size_t(i)]);
            scale += std::fabs(double(wf) * double(x[size_t(i)]));
          }
          ASSERT_NEAR(y[size_t(r)], want, 1e-6 * scale + 1e-30) << what << " r=" << r;
        }
      }
    }
  }
}

TEST(VecKernels, SmallGemmMatchesReferenceBitForBitAndDouble) {
  // Both the thin-output form (n = the rank, J long) and the thin-inner form (J = the rank,
  // n long), with every column tail of both vector widths, odd row counts, strided rows (a
  // block of wider matrices), and c_in absent, separate, or the output itself.
  const VecKernels& ref = vec_kernels_reference();
  Rng rng(7);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},  {3, 7},   {16, 16}, {512, 16}, {37, 9},
                                                           {70, 33}, {16, 200}, {5, 65},  {1, 130},  {64, 256}};
  for (const VecKernels* k : tables()) {
    for (auto [J, n] : shapes) {
      for (int64_t M : {1, 3, 8, 13, 29, 53}) {  // 29, 53: w packed, row blocks and their tails
        for (int mode = 0; mode < 3; ++mode) {  // 0: no c_in, 1: c_in separate, 2: c_in = out
          const std::string what = std::string(k->name) + " M=" + std::to_string(M) + " J=" + std::to_string(J) +
                                   " n=" + std::to_string(n) + " mode=" + std::to_string(mode);
          const int64_t lda = J + 3, ldw = n + 5, ldc = n + 2;
          const std::vector<float> a = random_values(rng, M * lda, -1.0f, 1.0f);
          const std::vector<float> w = random_values(rng, J * ldw, -1.0f, 1.0f);
          const std::vector<float> cin = random_values(rng, M * ldc, -2.0f, 2.0f);
          std::vector<float> out = random_values(rng, M * ldc, -2.0f, 2.0f);
          if (mode == 2) out = cin;
          std::vector<float> out_ref(out), out0(out);
          const float alpha = 0.75f;
          const float* c_in = mode == 0 ? nullptr : mode == 1 ? cin.data() : out.data();
          const float* c_in_ref = mode == 0 ? nullptr : mode == 1 ? cin.data() : out_ref.data();
          k->small_gemm(a.data(), lda, M, J, w.data(), ldw, n, alpha, c_in, out.data(), ldc);
          ref.small_gemm(a.data(), lda, M, J, w.data(), ldw, n, alpha, c_in_ref, out_ref.data(), ldc);
          for (size_t i = 0; i < out.size(); ++i) {
            ASSERT_EQ(out[i], out_ref[i]) << what << " i=" << i;
            const int64_t row = int64_t(i) / ldc, col = int64_t(i) % ldc;
            if (row >= M || col >= n) {
              ASSERT_EQ(out[i], out0[i]) << what << ": wrote outside out at " << i;
              continue;
            }
            double sum = 0, scale = 0;
            for (int64_t j = 0; j < J; ++j) {
              const double p = double(a[size_t(row * lda + j)]) * double(w[size_t(j * ldw + col)]);
              sum += p;
              scale += std::fabs(p);
            }
            const double c = mode == 0 ? 0.0 : double(cin[i]);
            ASSERT_NEAR(out[i], c + double(alpha) * sum, 1e-6 * (std::fabs(alpha) * scale + std::fabs(c)) + 1e-30)
                << what << " i=" << i;
          }
        }
      }
    }
  }
}

TEST(VecKernels, SmallGemmTnMatchesReferenceBitForBitAndDouble) {
  // c[r, n] += alpha · aᵀ b with strided rows (a sub-block of wider a, b and c), both a few
  // rows of c (the rank) over long rows and many rows over a few columns.
  const VecKernels& ref = vec_kernels_reference();
  Rng rng(8);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {16, 512}, {4, 37}, {7, 9},
                                                           {21, 17}, {37, 16}, {64, 5}, {3, 33}};
  for (const VecKernels* k : tables()) {
    for (auto [r, n] : shapes) {
      for (int64_t M : {1, 2, 9, 40}) {
        const std::string what = std::string(k->name) + " M=" + std::to_string(M) + " r=" + std::to_string(r) +
                                 " n=" + std::to_string(n);
        const int64_t lda = r + 3, ldb = n + 5, ldc = n + 2;
        const std::vector<float> a = random_values(rng, M * lda, -1.0f, 1.0f);
        const std::vector<float> b = random_values(rng, M * ldb, -1.0f, 1.0f);
        std::vector<float> c = random_values(rng, r * ldc, -2.0f, 2.0f), c_ref(c), c0(c);
        const float alpha = -1.25f;
        k->small_gemm_tn(a.data(), lda, M, r, b.data(), ldb, n, alpha, c.data(), ldc);
        ref.small_gemm_tn(a.data(), lda, M, r, b.data(), ldb, n, alpha, c_ref.data(), ldc);
        for (size_t i = 0; i < c.size(); ++i) {
          ASSERT_EQ(c[i], c_ref[i]) << what << " i=" << i;
          const int64_t row = int64_t(i) / ldc, col = int64_t(i) % ldc;
          if (row >= r || col >= n) {
            ASSERT_EQ(c[i], c0[i]) << what << ": wrote outside c at " << i;
            continue;
          }
          double s = 0, t = 0;
          for (int64_t m = 0; m < M; ++m) {
            const double p = double(a[size_t(m * lda + row)]) * double(b[size_t(m * ldb + col)]);
            s += p;
            t += std::fabs(p);
          }
          ASSERT_NEAR(c[i], double(c0[i]) + double(alpha) * s, 1e-6 * (std::fabs(alpha) * t + std::fabs(c0[i])) + 1e-30)
              << what << " i=" << i;
        }
      }
    }
  }
}

}  // namespace
