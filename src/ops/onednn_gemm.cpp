#include "ops/onednn_gemm.h"

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/cpu.h"
#include "core/error.h"

#ifdef QPEFT_HAVE_ONEDNN
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace qpeft {

int64_t packed_b_k_padded(int64_t K) { return (K + 15) / 16 * 16; }
int64_t packed_b_floats(int64_t K, int64_t N) { return packed_b_k_padded(K) * ((N + 63) / 64 * 64); }

namespace {

void pack_b_rows_portable(const float* src, int64_t ld, int64_t rows, int64_t K, int64_t n0, float* group) {
  const int64_t kp = packed_b_k_padded(K);
  for (int64_t k = 0; k < kp; ++k) {
    float* out = group + (k / 16) * 1024 + (k % 16) * 64 + n0;
    for (int64_t i = 0; i < 16; ++i) out[i] = (i < rows && k < K) ? src[i * ld + k] : 0.0f;
  }
}

}  // namespace

PackBRowsFn pack_b_rows_reference() { return pack_b_rows_portable; }

PackBRowsFn pack_b_rows_avx512() {
  return cpu_has_avx512() ? detail::pack_b_rows_avx512_kernel() : nullptr;
}

PackBRowsFn pack_b_rows() {
  static const PackBRowsFn chosen = [] {
    if (simd_cap() >= SimdLevel::avx512)
      if (PackBRowsFn f = pack_b_rows_avx512()) return f;
    return pack_b_rows_portable;
  }();
  return chosen;
}

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

// One oneDNN thread per call from each pool thread (an OpenMP setting of the calling thread).
void use_one_onednn_thread() {
  thread_local const bool single_threaded = (omp_set_num_threads(1), true);
  (void)single_threaded;
}

// C = alpha · op(A) op(B) + beta · C through one single-threaded oneDNN matmul; A and B of
// type `ab`, C f32. Transposes are strides: oneDNN reads any layout.
void matmul(dnnl::memory::data_type ab, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
            const void* A, int64_t lda, const void* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  using dnnl::memory;
  use_one_onednn_thread();
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

// Whether oneDNN chose exactly the packed layout onednn_gemm.h documents for B [K, N].
bool is_packed_b_layout(const dnnl::memory::desc& md, int64_t K, int64_t N) {
  const dnnl_memory_desc_t& d = md.data;
  if (d.ndims != 2 || d.format_kind != dnnl_blocked || d.offset0 != 0) return false;
  const dnnl_blocking_desc_t& b = d.format_desc.blocking;
  const int64_t kp = packed_b_k_padded(K);
  return b.inner_nblks == 2 && b.inner_blks[0] == 16 && b.inner_idxs[0] == 0 && b.inner_blks[1] == 64 &&
         b.inner_idxs[1] == 1 && b.strides[0] == 1024 && b.strides[1] == kp * 64 && d.padded_dims[0] == kp &&
         d.padded_dims[1] == (N + 63) / 64 * 64 && md.get_size() == size_t(packed_b_floats(K, N)) * sizeof(float);
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

// The matmul onednn_f32_gemm_packed_b runs for one shape, and whether oneDNN took the packed
// B layout for it. Kept per thread (newest last, a few dozen shapes): the products come in
// panels of the same few shapes, and creating a primitive descriptor costs ~13 µs.
struct PackedMatmul {
  int64_t M, N, K;
  bool packed = false;
  dnnl::memory::desc a_md, b_md, c_md;
  dnnl::matmul prim;
};

const PackedMatmul& packed_b_matmul(int64_t M, int64_t N, int64_t K) {
  using dnnl::memory;
  thread_local std::vector<std::unique_ptr<PackedMatmul>> cache;
  for (const auto& e : cache)
    if (e->M == M && e->N == N && e->K == K) return *e;
  if (cache.size() >= 48) cache.erase(cache.begin());
  auto e = std::make_unique<PackedMatmul>();
  e->M = M, e->N = N, e->K = K;
  e->a_md = memory::desc({M, K}, memory::data_type::f32, memory::dims{K, 1});
  const memory::desc b_any({K, N}, memory::data_type::f32, memory::format_tag::any);
  // Dense A and C: with strides oneDNN 2.6 leaves its brgemm kernels for a plain-layout gemm.
  e->c_md = memory::desc({M, N}, memory::data_type::f32, memory::dims{N, 1});
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(e->a_md, b_any, e->c_md), cpu_engine());
  e->b_md = pd.weights_desc();
  e->packed = is_packed_b_layout(e->b_md, K, N);
  if (e->packed) e->prim = dnnl::matmul(pd);
  cache.push_back(std::move(e));
  return *cache.back();
}

bool onednn_f32_packed_b_accepted(int64_t M, int64_t N, int64_t K) {
  if (!onednn_f32_gemm_available() || M <= 0 || N <= 0 || K <= 0) return false;
  use_one_onednn_thread();  // oneDNN's choice of blocking depends on its thread count
  return packed_b_matmul(M, N, K).packed;
}

void onednn_f32_gemm_packed_b(int64_t M, int64_t N, int64_t K, const float* A, const float* Bp, float* C) {
  if (M == 0 || N == 0) return;
  use_one_onednn_thread();
  const PackedMatmul& mm = packed_b_matmul(M, N, K);
  QP_CHECK(mm.packed, "[onednn_f32_gemm_packed_b] oneDNN does not take the packed B layout for [{}, {}] x [{}, {}]; "
           "ask onednn_f32_packed_b_accepted first", M, K, K, N);
  const dnnl::engine& eng = cpu_engine();
  dnnl::memory a(mm.a_md, eng, const_cast<float*>(A)), b(mm.b_md, eng, const_cast<float*>(Bp)), c(mm.c_md, eng, C);
  thread_local dnnl::stream s(eng);
  mm.prim.execute(s, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
  s.wait();
}

#else

bool onednn_f32_packed_b_accepted(int64_t, int64_t, int64_t) { return false; }

void onednn_f32_gemm_packed_b(int64_t, int64_t, int64_t, const float*, const float*, float*) {
  fail("[onednn_f32_gemm_packed_b] qpeft was built without oneDNN");
}

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
