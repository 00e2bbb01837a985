#include "ops/onednn_gemm.h"

#include <cstdlib>
#include <string>

#include "core/cpu.h"
#include "core/error.h"

#ifdef QPEFT_HAVE_ONEDNN
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace qpeft {

#ifdef QPEFT_HAVE_ONEDNN

bool bf16_gemm_available(std::string* why_not) {
  std::string why;
  if (!cpu_has_avx512_bf16()) why = "this CPU has no AVX512_BF16 instructions";
  else if (simd_cap() < SimdLevel::avx512) why = "QPEFT_ISA caps the kernels below avx512";
  if (why_not) *why_not = why;
  return why.empty();
}

namespace {

const dnnl::engine& cpu_engine() {
  static const dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

// C = alpha · op(A) op(B) + beta · C through one single-threaded oneDNN matmul; A and B of
// type `ab`, C f32. Transposes are strides: oneDNN reads any layout.
void matmul(dnnl::memory::data_type ab, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            const void* A, int64_t lda, const void* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  using dnnl::memory;
  // One oneDNN thread per call from each pool thread (an OpenMP setting of the calling thread).
  thread_local const bool single_threaded = (omp_set_num_threads(1), true);
  (void)single_threaded;
  const memory::desc a_md({M, K}, ab, trans_a ? memory::dims{1, lda} : memory::dims{lda, 1});
  const memory::desc b_md({K, N}, ab, trans_b ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  const memory::desc c_md({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  // oneDNN keeps created primitives in its own cache: the same shape again costs microseconds.
  const dnnl::engine& eng = cpu_engine();
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, eng);
  const dnnl::matmul mm(pd);
  memory a(a_md, eng, const_cast<void*>(A)), b(b_md, eng, const_cast<void*>(B)), c(c_md, eng, C);
  dnnl::stream s(eng);
  mm.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
  s.wait();
}

}  // namespace

void bf16_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
               int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  QP_CHECK(beta == 0.0f || beta == 1.0f, "[bf16_gemm] beta must be 0 or 1, got {}", beta);
  matmul(dnnl::memory::data_type::bf16, false, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

bool onednn_f32_gemm_available() {
  static const bool ok = [] {
    const char* v = std::getenv("QPEFT_F32_GEMM");
    if (v && std::string(v) == "openblas") return false;
    return cpu_has_avx512() && simd_cap() >= SimdLevel::avx512;
  }();
  return ok;
}

void onednn_f32_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                     int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  matmul(dnnl::memory::data_type::f32, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

#else

bool bf16_gemm_available(std::string* why_not) {
  if (why_not) *why_not = "qpeft was built without oneDNN (install libdnnl-dev and rebuild)";
  return false;
}

void bf16_gemm(bool, int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t, float, float*,
               int64_t) {
  fail("[bf16_gemm] qpeft was built without oneDNN; use --compute-dtype f32");
}

bool onednn_f32_gemm_available() { return false; }

void onednn_f32_gemm(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t, float,
                     float*, int64_t) {
  fail("[onednn_f32_gemm] qpeft was built without oneDNN");
}

#endif

}  // namespace qpeft
