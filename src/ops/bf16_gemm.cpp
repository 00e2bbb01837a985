#include "ops/bf16_gemm.h"

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

}  // namespace

void bf16_gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
               int64_t ldb, float beta, float* C, int64_t ldc) {
  using dnnl::memory;
  if (M == 0 || N == 0) return;
  QP_CHECK(beta == 0.0f || beta == 1.0f, "[bf16_gemm] beta must be 0 or 1, got {}", beta);
  // One oneDNN thread per call from each pool thread (an OpenMP setting of the calling thread).
  thread_local const bool single_threaded = (omp_set_num_threads(1), true);
  (void)single_threaded;
  const memory::desc a_md({M, K}, memory::data_type::bf16, memory::dims{lda, 1});
  const memory::desc b_md({K, N}, memory::data_type::bf16, trans_b ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  const memory::desc c_md({M, N}, memory::data_type::f32, memory::dims{ldc, 1});
  dnnl::primitive_attr attr;
  if (beta == 1.0f) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  // oneDNN keeps created primitives in its own cache: the same shape again costs microseconds.
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, cpu_engine());
  const dnnl::matmul mm(pd);
  const dnnl::engine& eng = cpu_engine();
  memory a(a_md, eng, const_cast<uint16_t*>(A)), b(b_md, eng, const_cast<uint16_t*>(B)), c(c_md, eng, C);
  dnnl::stream s(eng);
  mm.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
  s.wait();
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

#endif

}  // namespace qpeft
