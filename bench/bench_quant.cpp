// Benchmark: fused NF4 (double-quant) GEMM through the FrozenWeight seam vs dense f32 sgemm
// with the same driver, plus quantize / dequantize throughput; and llama.cpp's Q4_K
// (GgmlWeight, a GGUF base's format) against NF4 in the same run.
//   build/bench/bench_quant [--threads 2] [--reps 3] [--shapes 4096x4096,11008x4096,4096x11008]
//                           [--rows 256,512,1024,2048] [--tile R] [--panel-mb 8]
//                           [--bf16 1]   (also NF4 with --compute-dtype bf16 against dense f32)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/thread_pool.h"
#include "ops/linear.h"
#include "quant/ggml_weight.h"
#include "quant/kernels.h"
#include "quant/quantized_weight.h"
#include "bench_sys.h"

using namespace qpeft;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <class F>
double median_seconds(int reps, F&& f) {
  std::vector<double> t;
  f();  // warm-up
  for (int i = 0; i < reps; ++i) {
    double t0 = now();
    f();
    t.push_back(now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> v;
  for (const char* p = s; *p;) {
    v.push_back(std::strtoll(p, const_cast<char**>(&p), 10));
    if (*p == ',' || *p == 'x') ++p;
  }
  return v;
}

Tensor random_tensor(int64_t rows, int64_t cols, uint64_t seed, float sd) {
  Tensor t = Tensor::empty({rows, cols});
  float* p = t.f32();
  const int64_t n = rows * cols;
  pool().parallel_for(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) p[i] = sd * (2.0f * hash_uniform(seed, 0, uint64_t(i)) - 1.0f);
  });
  return t;
}

// Medians of a and b timed alternately (a, b, a, b, ...): on a shared machine both see the
// same background load.

}  // namespace

int main(int argc, char** argv) {
  retain_freed_memory();  // as the CLI does
  int threads = 2, reps = 3;
  int64_t tile = 0;
  bool bf16 = false;
  std::vector<int64_t> shapes = {4096, 4096, 11008, 4096, 4096, 11008};
  std::vector<int64_t> rows = {256, 512, 1024, 2048};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--shapes") shapes = parse_list(argv[i + 1]);
    else if (a == "--rows") rows = parse_list(argv[i + 1]);
    else if (a == "--tile") tile = std::atoll(argv[i + 1]);
    else if (a == "--bf16") bf16 = std::atoi(argv[i + 1]) != 0;
    else if (a == "--panel-mb") set_linear_panel_bytes(size_t(std::atof(argv[i + 1]) * (1 << 20)));
    else {
      std::fprintf(stderr, "unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  set_num_threads(threads);
  bench::print_machine();
  const double openblas = bench::openblas_threaded_sgemm_gflops(threads);
  std::printf("OpenBLAS threaded sgemm %.2f GFLOP/s (2048^3, its own %d threads): the machine's anchor\n", openblas,
              threads);
  std::printf("threads %d, reps %d (median, dense and nf4 timed alternately), decode kernel %s, panel %.1f MiB\n",
              threads, reps, quant_kernels().isa, double(linear_panel_bytes()) / (1 << 20));
  std::printf("ratio = nf4 / dense f32 (the issue's target); 'of OB' = nf4 GFLOP/s / the OpenBLAS anchor\n");
  if (bf16) {
    std::string note;
    if (set_linear_compute_dtype(DType::BF16, &note) != DType::BF16) {
      std::printf("--bf16: bf16 compute is not available here (%s); skipped\n", note.c_str());
      bf16 = false;
    }
    set_linear_compute_dtype(DType::F32);
  }

  for (size_t s = 0; s + 1 < shapes.size(); s += 2) {
    const int64_t N = shapes[s], K = shapes[s + 1];  // W is [out = N, in = K]
    Tensor w = random_tensor(N, K, 1, 0.02f);
    const double wbytes = double(N * K) * 4.0;
    std::unique_ptr<QuantizedWeight> q;
    double tq = median_seconds(reps, [&] {
      q = std::make_unique<QuantizedWeight>(QuantizedWeight::quantize(w, QuantFormat::NF4, 64, true, "w"));
    });
    if (tile) q->set_row_tile(tile);
    Tensor deq;
    double td = median_seconds(reps, [&] { deq = q->dequantize(); });
    std::printf("\nW %lldx%lld  NF4+DQ b64 (%.3f bit/param, row tile %lld): quantize %.2f GB/s of f32 weights, "
                "dequantize %.2f GB/s (f32 out)\n",
                (long long)N, (long long)K, q->bits_per_param(), (long long)q->row_tile(), wbytes / tq / 1e9,
                wbytes / td / 1e9);
    auto dense = std::make_shared<DenseWeight>(w, "w");
    auto q4k = std::make_shared<GgmlWeight>(GgmlWeight::quantize(w, GgmlType::Q4_K, "w"));
    std::printf("%6s | %-58s | %-58s\n", "M", "forward y = x W^T  GFLOP/s", "input grad dx = dy W  GFLOP/s");
    std::printf("%6s | %9s %9s %7s %7s %9s %7s    | %9s %9s %7s %7s %9s %7s\n", "", "dense", "nf4", "ratio", "of OB",
                "q4_K", "/nf4", "dense", "nf4", "ratio", "of OB", "q4_K", "/nf4");
    for (int64_t M : rows) {
      Tensor x = random_tensor(M, K, 2, 1.0f), y = Tensor::empty({M, N});
      Tensor dy = random_tensor(M, N, 3, 1.0f), dx = Tensor::empty({M, K});
      const double flop = 2.0 * double(M) * double(N) * double(K);
      auto [f_dense, f_q] = bench::interleaved_medians(
          reps, [&] { linear_forward(x.f32(), M, *dense, y.f32()); }, [&] { linear_forward(x.f32(), M, *q, y.f32()); });
      auto [g_dense, g_q] = bench::interleaved_medians(
          reps, [&] { linear_input_grad(dy.f32(), M, *dense, dx.f32(), false); },
          [&] { linear_input_grad(dy.f32(), M, *q, dx.f32(), false); });
      // Q4_K against NF4, timed alternately too.
      auto [f_nf4, f_k] = bench::interleaved_medians(
          reps, [&] { linear_forward(x.f32(), M, *q, y.f32()); }, [&] { linear_forward(x.f32(), M, *q4k, y.f32()); });
      auto [g_nf4, g_k] = bench::interleaved_medians(
          reps, [&] { linear_input_grad(dy.f32(), M, *q, dx.f32(), false); },
          [&] { linear_input_grad(dy.f32(), M, *q4k, dx.f32(), false); });
      std::printf("%6lld | %9.1f %9.1f %6.2fx %7.3f %9.1f %6.2fx    | %9.1f %9.1f %6.2fx %7.3f %9.1f %6.2fx\n",
                  (long long)M, flop / f_dense / 1e9, flop / f_q / 1e9, f_dense / f_q, flop / f_q / 1e9 / openblas,
                  flop / f_k / 1e9, f_nf4 / f_k, flop / g_dense / 1e9, flop / g_q / 1e9, g_dense / g_q,
                  flop / g_q / 1e9 / openblas, flop / g_k / 1e9, g_nf4 / g_k);
      std::fflush(stdout);
    }
    if (!bf16) continue;
    // NF4 computed as QLoRA does (bnb_4bit_compute_dtype = bf16: decoded to bf16, products
    // accumulated in f32) against the dense f32 product: the precisions differ, the speeds count.
    std::printf("%6s | %-40s | %-40s\n", "M", "forward: dense f32, nf4 bf16-compute", "input grad: same");
    for (int64_t M : rows) {
      Tensor x = random_tensor(M, K, 2, 1.0f), y = Tensor::empty({M, N});
      Tensor dy = random_tensor(M, N, 3, 1.0f), dx = Tensor::empty({M, K});
      const double flop = 2.0 * double(M) * double(N) * double(K);
      auto in_bf16 = [](auto&& f) {
        set_linear_compute_dtype(DType::BF16);
        f();
        set_linear_compute_dtype(DType::F32);
      };
      auto [f_dense, f_q] = bench::interleaved_medians(
          reps, [&] { linear_forward(x.f32(), M, *dense, y.f32()); },
          [&] { in_bf16([&] { linear_forward(x.f32(), M, *q, y.f32()); }); });
      auto [g_dense, g_q] = bench::interleaved_medians(
          reps, [&] { linear_input_grad(dy.f32(), M, *dense, dx.f32(), false); },
          [&] { in_bf16([&] { linear_input_grad(dy.f32(), M, *q, dx.f32(), false); }); });
      std::printf("%6lld | %9.1f %9.1f %6.2fx %13s | %9.1f %9.1f %6.2fx\n", (long long)M, flop / f_dense / 1e9,
                  flop / f_q / 1e9, f_dense / f_q, "", flop / g_dense / 1e9, flop / g_q / 1e9, g_dense / g_q);
      std::fflush(stdout);
    }
  }
  return 0;
}
