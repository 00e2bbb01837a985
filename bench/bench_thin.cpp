// Benchmark: the short-matrix kernels (VecKernels::small_gemm / small_gemm_tn, ops/vec_math.h)
// against OpenBLAS's single-threaded sgemm computing the same product, side by side, on the
// shapes one pool thread meets in a training step of the `small` preset: LoRA's products at
// rank r (half of a 4 × 256 batch per thread) and attention's tiles (64 queries, head dim 64).
//   build/bench/bench_thin [--reps 21] [--rank 16] [--rows 512]
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "bench_sys.h"

using namespace qpeft;

namespace {

struct Case {
  std::string what;
  double flops;
  std::function<void()> ours, openblas;
};

std::vector<float> random_matrix(Rng& rng, int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = float(rng.uniform()) - 0.5f;
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 21;
  int64_t rank = 16, M = 512;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--reps") reps = std::stoi(v);
    else if (k == "--rank") rank = std::stoll(v);
    else if (k == "--rows") M = std::stoll(v);
    else {
      std::fprintf(stderr, "bench_thin: unknown option %s (options: --reps N, --rank R, --rows M)\n", k.c_str());
      return 2;
    }
  }
  bench::print_machine();
  const VecKernels* vk = vec_kernels_simd();
  if (!vk) {
    std::printf("bench_thin: no SIMD table on this CPU; the products go to sgemm, nothing to compare\n");
    return 0;
  }
  openblas_set_num_threads(1);
  Rng rng(1);
  const int64_t r = rank, T = 64, D = 64, keys = 256;
  std::vector<Case> cases;
  // Each case owns its operands; outputs are written in place (c_in = out), as training does.
  auto add_nn = [&](const std::string& what, int64_t m, int64_t J, int64_t n, bool with_c) {
    auto a = std::make_shared<std::vector<float>>(random_matrix(rng, m * J));
    auto w = std::make_shared<std::vector<float>>(random_matrix(rng, J * n));
    auto c = std::make_shared<std::vector<float>>(random_matrix(rng, m * n));
    auto c2 = std::make_shared<std::vector<float>>(*c);
    cases.push_back({what, 2.0 * double(m * J * n),
                     [=] { vk->small_gemm(a->data(), J, m, J, w->data(), n, n, 0.5f, with_c ? c->data() : nullptr, c->data(), n); },
                     [=] {
                       cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(n), int(J), 0.5f, a->data(), int(J),
                                   w->data(), int(n), with_c ? 1.0f : 0.0f, c2->data(), int(n));
                     }});
  };
  auto add_tn = [&](const std::string& what, int64_t m, int64_t rows, int64_t n) {
    auto a = std::make_shared<std::vector<float>>(random_matrix(rng, m * rows));
    auto b = std::make_shared<std::vector<float>>(random_matrix(rng, m * n));
    auto c = std::make_shared<std::vector<float>>(random_matrix(rng, rows * n));
    auto c2 = std::make_shared<std::vector<float>>(*c);
    cases.push_back({what, 2.0 * double(m * rows * n),
                     [=] { vk->small_gemm_tn(a->data(), rows, m, rows, b->data(), n, n, 1e-3f, c->data(), n); },
                     [=] {
                       cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(rows), int(n), int(m), 1e-3f, a->data(),
                                   int(rows), b->data(), int(n), 1.0f, c2->data(), int(n));
                     }});
  };
  for (int64_t width : {int64_t(512), int64_t(1536)}) {
    const std::string wn = std::to_string(width);
    add_nn("LoRA h = x A^T       [" + std::to_string(M) + "x" + std::to_string(r) + "x" + wn + "]", M, width, r, false);
    add_nn("LoRA y += h B^T      [" + std::to_string(M) + "x" + wn + "x" + std::to_string(r) + "]", M, r, width, true);
    add_nn("LoRA dh = dy B       [" + std::to_string(M) + "x" + std::to_string(r) + "x" + wn + "]", M, width, r, false);
    add_nn("LoRA dx += dh A      [" + std::to_string(M) + "x" + wn + "x" + std::to_string(r) + "]", M, r, width, true);
    add_tn("LoRA dA += dh^T x    [" + std::to_string(r) + "x" + wn + "x" + std::to_string(2 * M) + "]", 2 * M, r, width);
    add_tn("LoRA dB += dy^T h    [" + wn + "x" + std::to_string(r) + "x" + std::to_string(2 * M) + "]", 2 * M, width, r);
  }
  add_nn("attn S = Q K^T       [64x256x64]", T, D, keys, false);
  add_nn("attn O += P V        [64x64x256]", T, keys, D, true);
  add_tn("attn dV += P^T dO    [256x64x64]", T, keys, D);
  add_tn("attn dK += dS^T Q    [256x64x64]", T, keys, D);

  std::printf("bench_thin: one thread, rank %lld, %d interleaved repetitions, medians [M x N x K]\n", (long long)r, reps);
  std::printf("  %-38s %10s %10s %8s\n", "product", "ours GF/s", "OpenBLAS", "ratio");
  std::vector<double> ratios;
  for (const Case& c : cases) {
    // Enough calls per timing that one takes about a millisecond.
    const int calls = std::max(1, int(2e6 / c.flops * 50));
    auto ours = [&] { for (int i = 0; i < calls; ++i) c.ours(); };
    auto theirs = [&] { for (int i = 0; i < calls; ++i) c.openblas(); };
    const auto [t_ours, t_blas] = bench::interleaved_medians(reps, ours, theirs);
    const double g_ours = c.flops * calls / t_ours / 1e9, g_blas = c.flops * calls / t_blas / 1e9;
    ratios.push_back(g_ours / g_blas);
    std::printf("  %-38s %10.1f %10.1f %7.2fx\n", c.what.c_str(), g_ours, g_blas, g_ours / g_blas);
  }
  std::printf("  median ratio ours / OpenBLAS: %.2fx over %zu shapes\n", bench::median(ratios), ratios.size());
  return 0;
}
