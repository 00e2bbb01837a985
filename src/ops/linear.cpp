#include "ops/linear.h"

#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/profile.h"
#include "core/scratch.h"
#include "core/thread_pool.h"
#include "ops/onednn_gemm.h"
#include "ops/vec_math.h"

namespace qpeft {

DenseWeight::DenseWeight(Tensor t, std::string name) : t_(std::move(t)), name_(std::move(name)) {
  QP_CHECK(t_.ndim() == 2, "[linear] weight '{}' must be 2-d [out, in], got {}", name_, t_.describe());
  QP_CHECK(t_.dtype() == DType::F32 || t_.dtype() == DType::BF16 || t_.dtype() == DType::F16,
           "[linear] weight '{}' has dtype {}; expected f32, bf16 or f16", name_, dtype_name(t_.dtype()));
}

const float* DenseWeight::decode_rows(int64_t r0, int64_t r1, float* scratch) const {
  const int64_t n = t_.dim(1);
  const char* base = static_cast<const char*>(t_.raw()) + size_t(r0 * n) * dtype_size(t_.dtype());
  if (t_.dtype() == DType::F32) return reinterpret_cast<const float*>(base);
  convert_to_f32(base, t_.dtype(), scratch, size_t((r1 - r0) * n));
  return scratch;
}

namespace {
struct Bf16DecodeScratch;  // thread_scratch tags
struct PanelScratch;
struct Bf16PanelScratch;
struct Bf16InputScratch;
struct PackedRowsScratch;
struct PackedPanelScratch;
struct PackedOutScratch;
}  // namespace

const uint16_t* FrozenWeight::decode_rows_bf16(int64_t r0, int64_t r1, uint16_t* scratch) const {
  const int64_t n = cols(), tile = std::max<int64_t>(1, std::min(r1 - r0, row_tile()));
  float* f = thread_scratch<Bf16DecodeScratch>(size_t(tile * n));
  for (int64_t t0 = r0; t0 < r1; t0 += tile) {
    const int64_t t1 = std::min(r1, t0 + tile);
    const float* src = decode_rows(t0, t1, f);
    convert_from_f32(src, DType::BF16, scratch + (t0 - r0) * n, size_t((t1 - t0) * n));
  }
  return scratch;
}

const uint16_t* DenseWeight::decode_rows_bf16(int64_t r0, int64_t r1, uint16_t* scratch) const {
  if (is_bf16()) return static_cast<const uint16_t*>(t_.raw()) + r0 * t_.dim(1);
  return FrozenWeight::decode_rows_bf16(r0, r1, scratch);
}

void FrozenWeight::pack_rows_for_onednn(int64_t r0, int64_t rows, int64_t n0, float* staging, int64_t ld,
                                        float* group) const {
  const int64_t K = cols();
  for (int64_t i = 0; i < rows; ++i) {
    float* dst = staging + i * ld;
    const float* src = decode_rows(r0 + i, r0 + i + 1, dst);
    if (src != dst) std::memcpy(dst, src, size_t(K) * sizeof(float));
  }
  pack_b_rows()(staging, ld, rows, K, n0, group);
}

Tensor decode_to_f32(const FrozenWeight& w) {
  const int64_t rows = w.rows(), cols = w.cols();
  Tensor t = Tensor::empty({rows, cols});
  const int64_t tile = std::max<int64_t>(1, w.row_tile());
  for (int64_t r0 = 0; r0 < rows; r0 += tile) {
    const int64_t r1 = std::min(rows, r0 + tile);
    float* dst = t.f32() + r0 * cols;
    const float* src = w.decode_rows(r0, r1, dst);
    if (src != dst) std::memcpy(dst, src, size_t((r1 - r0) * cols) * sizeof(float));
  }
  return t;
}

std::string DenseWeight::describe() const { return name_ + " " + t_.describe(); }

namespace {
constexpr double kOnednnMinMacs = double(1 << 21);
}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  if (M == 1) {
    // One row (decoding a token): a matrix-vector product streams B once, where sgemm would
    // first pack (copy) all of it: c[N] = alpha · a[K] op(B)[K, N] + beta · c.
    if (beta == 0.0f) std::fill(C, C + N, 0.0f);  // C may hold garbage (NaN · 0)
    const int inc_a = trans_a ? int(lda) : 1;
    if (trans_b) {  // B: [N, K]; c = B a
      cblas_sgemv(CblasRowMajor, CblasNoTrans, int(N), int(K), alpha, B, int(ldb), A, inc_a, beta, C, 1);
    } else {  // B: [K, N]; c = Bᵀ a
      cblas_sgemv(CblasRowMajor, CblasTrans, int(K), int(N), alpha, B, int(ldb), A, inc_a, beta, C, 1);
    }
    return;
  }
  // oneDNN's AVX-512 kernels where the CPU has them (about twice OpenBLAS's AVX2 ones here),
  // for products big enough to pay its per-call setup (~5 µs); OpenBLAS otherwise.
  if (double(M) * double(N) * double(K) >= kOnednnMinMacs && onednn_f32_gemm_available()) {
    onednn_f32_gemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

namespace {

size_t g_panel_bytes = size_t(8) << 20;

// Rows of a weight that a thread's share or a panel starts at: sgemm's column blocking is
// happiest with multiples of 16, and every format decodes from any row.
constexpr int64_t kRowAlign = 16;

// Part ith of nth of [0, n), cut at multiples of `align`, sizes within one unit of each other.
void split_rows(int64_t n, int ith, int nth, int64_t* r0, int64_t* r1, int64_t align = kRowAlign) {
  const int64_t units = (n + align - 1) / align;
  int64_t u0, u1;
  split_range(units, ith, nth, &u0, &u1);
  *r0 = std::min(n, u0 * align);
  *r1 = std::min(n, u1 * align);
}

// Rows per decoded panel for `rows` rows of a packed weight with `cols` columns: equal panels
// of about linear_panel_bytes() of f32 each. Small panels make sgemm re-pack x (forward) or
// re-read dx (input grad) once per panel, which costs more than the decode itself.
int64_t panel_rows(int64_t rows, int64_t cols) {
  const int64_t bytes = rows * cols * int64_t(sizeof(float));
  const int64_t panels = std::max<int64_t>(1, (bytes + int64_t(g_panel_bytes) - 1) / int64_t(g_panel_bytes));
  const int64_t per = (rows + panels - 1) / panels;
  return std::min(rows, (per + kRowAlign - 1) / kRowAlign * kRowAlign);
}

}  // namespace

void set_linear_panel_bytes(size_t bytes) { g_panel_bytes = std::max<size_t>(bytes, 4096); }
size_t linear_panel_bytes() { return g_panel_bytes; }

namespace {

DType g_compute_dtype = DType::F32;

// x[M, K] f32 → bf16 in the calling thread's scratch, rows split across the pool.
const uint16_t* to_bf16_rows(const float* x, int64_t M, int64_t K) {
  uint16_t* xb = thread_scratch<Bf16InputScratch, uint16_t>(size_t(M * K));
  pool().parallel_for(M, [&](int64_t m0, int64_t m1) {
    convert_from_f32(x + m0 * K, DType::BF16, xb + m0 * K, size_t((m1 - m0) * K));
  });
  return xb;
}

// linear_forward in bf16: each thread its share of weight rows, bf16 panels (the weight
// itself when stored as bf16), f32 output.
void linear_forward_bf16(const float* x, int64_t M, const FrozenWeight& w, float* y) {
  const int64_t N = w.rows(), K = w.cols();
  const uint16_t* xb = to_bf16_rows(x, M, K);
  pool().run([&](int ith, int nth) {
    int64_t n0, n1;
    split_rows(N, ith, nth, &n0, &n1);
    if (n0 >= n1) return;
    const int64_t panel = panel_rows(n1 - n0, K);
    // A bf16 weight is read in place: no panel to hold.
    uint16_t* scratch = w.is_bf16() ? nullptr : thread_scratch<Bf16PanelScratch, uint16_t>(size_t(panel * K));
    for (int64_t p0 = n0; p0 < n1; p0 += panel) {
      const int64_t p1 = std::min(n1, p0 + panel);
      const uint16_t* wr = w.decode_rows_bf16(p0, p1, scratch);
      bf16_gemm(true, M, p1 - p0, K, xb, K, wr, K, 0.0f, y + p0, N);
    }
  });
}

// linear_input_grad in bf16: dy rounded once; a weight not stored as bf16 is decoded panel
// by panel into one shared bf16 panel by all threads, then each thread multiplies its rows.
void linear_input_grad_bf16(const float* dy, int64_t M, const FrozenWeight& w, float* dx, bool accumulate) {
  const int64_t N = w.rows(), K = w.cols();
  const uint16_t* dyb = to_bf16_rows(dy, M, N);
  const int64_t panel = panel_rows(N, K);
  // The calling thread's panel, filled and read by all; a bf16 weight is read in place.
  uint16_t* shared = w.is_bf16() ? nullptr : thread_scratch<Bf16PanelScratch, uint16_t>(size_t(panel * K));
  for (int64_t p0 = 0; p0 < N; p0 += panel) {
    const int64_t rows = std::min(N, p0 + panel) - p0;
    const uint16_t* wp = nullptr;
    if (w.is_bf16()) {
      wp = w.decode_rows_bf16(p0, p0 + rows, nullptr);
    } else {
      pool().run([&](int ith, int nth) {
        int64_t r0, r1;
        split_rows(rows, ith, nth, &r0, &r1);
        if (r0 < r1) w.decode_rows_bf16(p0 + r0, p0 + r1, shared + r0 * K);
      });
      wp = shared;
    }
    const float beta = (accumulate || p0 > 0) ? 1.0f : 0.0f;
    pool().run([&](int ith, int nth) {
      int64_t m0, m1;
      split_range(M, ith, nth, &m0, &m1);
      if (m0 < m1) bf16_gemm(false, m1 - m0, K, rows, dyb + m0 * N + p0, N, wp, K, beta, dx + m0 * K, K);
    });
  }
}

}  // namespace

DType set_linear_compute_dtype(DType dt, std::string* note) {
  QP_CHECK(dt == DType::F32 || dt == DType::BF16, "[linear] compute dtype must be f32 or bf16, got {}",
           dtype_name(dt));
  std::string why;
  if (dt == DType::BF16 && !bf16_gemm_available(&why)) {
    if (note) *note = "bf16 compute is not available (" + why + "); computing in f32";
    dt = DType::F32;
  }
  g_compute_dtype = dt;
  return dt;
}

DType linear_compute_dtype() { return g_compute_dtype; }

// y[M, N] = x[M, K] Wᵀ for M ≤ kFusedRows: each thread takes an equal share of the weight rows
// and, a tile of 64 rows at a time (in cache for the next input row), dots them with each input row.
bool DenseWeight::own_forward(const float* x, int64_t M, float* y) const {
  if (!is_bf16() || M > kFusedRows || g_compute_dtype != DType::F32) return false;
  const int64_t N = rows(), K = cols();
  const uint16_t* w = static_cast<const uint16_t*>(t_.raw());
  const auto gemv = vec_kernels().bf16_gemv;
  pool().run([&](int ith, int nth) {
    int64_t n0, n1;
    split_rows(N, ith, nth, &n0, &n1);
    for (int64_t p0 = n0; p0 < n1; p0 += 64) {
      const int64_t p1 = std::min(n1, p0 + 64);
      for (int64_t m = 0; m < M; ++m) gemv(w + p0 * K, p1 - p0, K, x + m * K, y + m * N + p0);
    }
  });
  return true;
}

// Weight rows decoded and packed at a time by the forward's packed-B product: a panel of
// about 2 MiB stays in L2/L3 between its packing and its use.
constexpr int64_t kPackedPanelBytes = int64_t(2) << 20;

// Whether a product with this weight decodes it into oneDNN's packed B layout (onednn_gemm.h)
// rather than into plain rows that sgemm copies again.
bool packs_for_onednn(const FrozenWeight& w, int64_t M) {
  return M >= 2 && !w.is_f32() && onednn_f32_gemm_available() &&
         double(M) * double(w.rows()) * double(w.cols()) >= kOnednnMinMacs;
}

// The forward's packed panels: each thread takes a contiguous run of 64-row groups and packs
// it `panel` rows at a time.
struct ForwardPanels {
  int64_t panel;
  void share(int64_t N, int ith, int nth, int64_t* n0, int64_t* n1) const { split_rows(N, ith, nth, n0, n1, 64); }
  // Whether oneDNN takes every panel shape of every thread packed.
  bool accepted(int64_t M, int64_t N, int64_t K) const {
    const int nth = pool().size();
    for (int ith = 0; ith < nth; ++ith) {
      int64_t n0, n1;
      share(N, ith, nth, &n0, &n1);
      if (n0 >= n1) continue;
      if (!onednn_f32_packed_b_accepted(M, std::min(panel, n1 - n0), K)) return false;
      if ((n1 - n0) % panel && !onednn_f32_packed_b_accepted(M, (n1 - n0) % panel, K)) return false;
    }
    return true;
  }
};

ForwardPanels forward_panels(int64_t K) {
  return {std::max<int64_t>(1, kPackedPanelBytes / int64_t(sizeof(float)) / packed_b_k_padded(K) / 64) * 64};
}

// linear_forward for a weight decoded anyway (packs_for_onednn, shapes oneDNN takes packed):
// each thread decodes its share of weight rows, 16 at a time, straight into oneDNN's packed B
// layout, so the product does not copy B again; each panel's output columns come back dense
// and are copied into y.
void linear_forward_packed(const float* x, int64_t M, const FrozenWeight& w, const ForwardPanels& panels, float* y) {
  const int64_t N = w.rows(), K = w.cols(), kp = packed_b_k_padded(K), panel = panels.panel;
  const int64_t ld = kp + 16;  // staged rows one cache line off a multiple of 4 KiB: no L1 set conflicts
  pool().run([&](int ith, int nth) {
    int64_t n0, n1;
    panels.share(N, ith, nth, &n0, &n1);
    if (n0 >= n1) return;
    const int64_t most = std::min(panel, n1 - n0);
    float* staging = thread_scratch<PackedRowsScratch>(size_t(16 * ld));
    float* packed = thread_scratch<PackedPanelScratch>(size_t(packed_b_floats(K, most)));
    float* out = thread_scratch<PackedOutScratch>(size_t(M * most));
    for (int64_t p0 = n0; p0 < n1; p0 += panel) {
      const int64_t pn = std::min(panel, n1 - p0);
      for (int64_t s = 0; s < (pn + 63) / 64 * 64; s += 16)  // whole groups: their padding too
        w.pack_rows_for_onednn(p0 + s, std::clamp<int64_t>(pn - s, 0, 16), s % 64, staging, ld,
                               packed + (s / 64) * kp * 64);
      onednn_f32_gemm_packed_b(M, pn, K, x, packed, out);
      for (int64_t m = 0; m < M; ++m) std::memcpy(y + m * N + p0, out + m * pn, size_t(pn) * sizeof(float));
    }
  });
}

// y[M, N] = x[M, K] Wᵀ. Each thread owns an equal, contiguous share of the output columns
// (weight rows), so every weight row is decoded exactly once, and decodes it in panels.
void linear_forward(const float* x, int64_t M, const FrozenWeight& w, float* y) {
  if (w.own_forward(x, M, y)) return;
  if (g_compute_dtype == DType::BF16) return linear_forward_bf16(x, M, w, y);
  const int64_t N = w.rows(), K = w.cols();
  if (packs_for_onednn(w, M))
    if (const ForwardPanels panels = forward_panels(K); panels.accepted(M, N, K))
      return linear_forward_packed(x, M, w, panels, y);
  pool().run([&](int ith, int nth) {
    int64_t n0, n1;
    split_rows(N, ith, nth, &n0, &n1);
    if (n0 >= n1) return;
    if (w.is_f32()) {
      sgemm(false, true, M, n1 - n0, K, 1.0f, x, K, w.decode_rows(n0, n1, nullptr), K, 0.0f, y + n0, N);
      return;
    }
    // One row (decoding a token) takes the format's own tiles: gemv packs nothing, and a
    // tile stays in cache between its decode and its use.
    const int64_t panel = M == 1 ? std::max<int64_t>(1, w.row_tile()) : panel_rows(n1 - n0, K);
    float* scratch = thread_scratch<PanelScratch>(size_t(std::min(panel, n1 - n0) * K));
    for (int64_t p0 = n0; p0 < n1; p0 += panel) {
      const int64_t p1 = std::min(n1, p0 + panel);
      const float* wr = w.decode_rows(p0, p1, scratch);
      sgemm(false, true, M, p1 - p0, K, 1.0f, x, K, wr, K, 0.0f, y + p0, N);
    }
  });
}

// dx[M, K] (+)= dy[M, N] W[N, K]. Threads split the rows of dx; a packed weight is decoded
// once per panel by all threads together into one shared panel, then every thread multiplies
// its rows by it.
void linear_input_grad(const float* dy, int64_t M, const FrozenWeight& w, float* dx, bool accumulate) {
  if (g_compute_dtype == DType::BF16) return linear_input_grad_bf16(dy, M, w, dx, accumulate);
  const int64_t N = w.rows(), K = w.cols();
  if (w.is_f32()) {
    const float* wp = w.decode_rows(0, N, nullptr);
    pool().run([&](int ith, int nth) {
      int64_t m0, m1;
      split_range(M, ith, nth, &m0, &m1);
      if (m0 < m1) sgemm(false, false, m1 - m0, K, N, 1.0f, dy + m0 * N, N, wp, K, accumulate ? 1.0f : 0.0f, dx + m0 * K, K);
    });
    return;
  }
  const int64_t panel = panel_rows(N, K);
  float* shared = thread_scratch<PanelScratch>(size_t(panel * K));  // the calling thread's, used by all
  for (int64_t p0 = 0; p0 < N; p0 += panel) {
    const int64_t rows = std::min(N, p0 + panel) - p0;
    pool().run([&](int ith, int nth) {
      int64_t r0, r1;
      split_rows(rows, ith, nth, &r0, &r1);
      if (r0 >= r1) return;
      float* dst = shared + r0 * K;
      const float* src = w.decode_rows(p0 + r0, p0 + r1, dst);
      if (src != dst) std::memcpy(dst, src, size_t((r1 - r0) * K) * sizeof(float));
    });
    const float beta = (accumulate || p0 > 0) ? 1.0f : 0.0f;
    pool().run([&](int ith, int nth) {
      int64_t m0, m1;
      split_range(M, ith, nth, &m0, &m1);
      if (m0 < m1) sgemm(false, false, m1 - m0, K, rows, 1.0f, dy + m0 * N + p0, N, shared, K, beta, dx + m0 * K, K);
    });
  }
}

static Shape with_last_dim(const Shape& s, int64_t d) {
  Shape out = s;
  out.back() = d;
  return out;
}

Var linear(Graph& g, const Var& x, const std::shared_ptr<const FrozenWeight>& w) {
  const Tensor& xv = x.value();
  QP_CHECK(xv.ndim() >= 1 && xv.dim(-1) == w->cols(), "[linear] input {} does not match weight {}", xv.describe(),
           w->describe());
  const int64_t M = xv.numel() / w->cols();
  Tensor y = Tensor::empty(with_last_dim(xv.shape(), w->rows()));
  {
    profile::Scope prof("linear fwd", M, w->rows(), w->cols(), 2.0 * double(M) * double(w->rows()) * double(w->cols()));
    linear_forward(xv.f32(), M, *w, y.f32());
  }
  bool rg = g.needs_grad({&x});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([x, out, w, M] {
      if (!out.has_grad()) return;
      profile::Scope prof("linear dX", M, w->rows(), w->cols(), 2.0 * double(M) * double(w->rows()) * double(w->cols()));
      // dx[M, in] (+)= dy[M, out] W: written where x has no gradient yet
      bool accumulate = false;
      float* dx = x.grad_for_update(&accumulate);
      linear_input_grad(out.grad().f32(), M, *w, dx, accumulate);
    });
  }
  return out;
}

namespace {

// The thin-side kernels (vec_math.h) for an adapter product with its rank ≤ kThinMax, where
// the CPU has a SIMD table; sgemm otherwise.
constexpr int64_t kThinMax = 64;

const VecKernels* thin_kernels(int64_t N, int64_t K) { return std::min(N, K) <= kThinMax ? vec_kernels_simd() : nullptr; }

// Shared by matmul_nt and add_matmul_nt: y[M, N] = alpha · x[M, K] wᵀ (+ y_in[M, N] if given;
// each thread reads its rows of y_in just before it writes those of y, while they are in cache).
void matmul_nt_forward(const float* xp, const float* wp, float* yp, int64_t M, int64_t N, int64_t K, float alpha,
                       const float* y_in) {
  profile::Scope prof("adapter matmul fwd", M, N, K, 2.0 * double(M) * double(N) * double(K));
  if (const VecKernels* vk = thin_kernels(N, K)) {
    std::vector<float> wt(size_t(N * K));  // wᵀ [K, N]: small, one side is the rank
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) wt[size_t(k * N + n)] = wp[n * K + k];
    pool().parallel_for(M, [&](int64_t m0, int64_t m1) {
      vk->small_gemm(xp + m0 * K, K, m1 - m0, K, wt.data(), N, N, alpha, y_in ? y_in + m0 * N : nullptr, yp + m0 * N, N);
    });
    return;
  }
  // Threads split rows of y (N is usually a small rank here).
  pool().parallel_for(M, [&](int64_t m0, int64_t m1) {
    if (y_in && y_in != yp) std::copy(y_in + m0 * N, y_in + m1 * N, yp + m0 * N);
    sgemm(false, true, m1 - m0, N, K, alpha, xp + m0 * K, K, wp, K, y_in ? 1.0f : 0.0f, yp + m0 * N, N);
  });
}

void matmul_nt_backward(const Var& x, const Var& w, const float* dy, int64_t M, int64_t N, int64_t K, float alpha) {
  profile::Scope prof("adapter matmul bwd", M, N, K,
                      2.0 * double(M) * double(N) * double(K) * (int(x.requires_grad()) + int(w.requires_grad())));
  const VecKernels* vk = thin_kernels(N, K);
  if (x.requires_grad()) {
    // dx[M, K] (+)= alpha · dy[M, N] w[N, K]; threads split the rows. Written where x has no
    // gradient yet (LoRA's down-projection is the first of a layer input's users backward).
    bool accumulate = false;
    float* dx = x.grad_for_update(&accumulate);
    const float* wp = w.value().f32();
    pool().parallel_for(M, [&](int64_t m0, int64_t m1) {
      if (vk) {
        vk->small_gemm(dy + m0 * N, N, m1 - m0, N, wp, K, K, alpha, accumulate ? dx + m0 * K : nullptr, dx + m0 * K, K);
      } else {
        sgemm(false, false, m1 - m0, K, N, alpha, dy + m0 * N, N, wp, K, accumulate ? 1.0f : 0.0f, dx + m0 * K, K);
      }
    });
  }
  if (w.requires_grad()) {
    // dw[N, K] += alpha · dyᵀ x. Threads split dw (its longer side), so each sum over the
    // rows has one fixed order.
    float* dw = w.grad_buffer();
    const float* xp = x.value().f32();
    if (vk && N > K) {
      pool().parallel_for(N, [&](int64_t n0, int64_t n1) {
        vk->small_gemm_tn(dy + n0, N, M, n1 - n0, xp, K, K, alpha, dw + n0 * K, K);
      });
    } else {
      pool().parallel_for(K, [&](int64_t k0, int64_t k1) {
        if (vk) {
          vk->small_gemm_tn(dy, N, M, N, xp + k0, K, k1 - k0, alpha, dw + k0, K);
        } else {
          sgemm(true, false, N, k1 - k0, M, alpha, dy, N, xp + k0, K, 1.0f, dw + k0, K);
        }
      });
    }
  }
}

}  // namespace

Var matmul_nt(Graph& g, const Var& x, const Var& w) {
  const Tensor& xv = x.value();
  const Tensor& wv = w.value();
  QP_CHECK(wv.ndim() == 2 && xv.dim(-1) == wv.dim(1), "[matmul_nt] input {} does not match weight '{}' {}",
           xv.describe(), w.name(), wv.describe());
  const int64_t N = wv.dim(0), K = wv.dim(1), M = xv.numel() / K;
  Tensor y = Tensor::empty(with_last_dim(xv.shape(), N));
  matmul_nt_forward(xv.f32(), wv.f32(), y.f32(), M, N, K, 1.0f, nullptr);
  bool rg = g.needs_grad({&x, &w});
  Var out = g.make_output(y, rg);
  if (rg) {
    g.record([x, w, out, M, N, K] {
      if (out.has_grad()) matmul_nt_backward(x, w, out.grad().f32(), M, N, K, 1.0f);
    });
  }
  return out;
}

Var add_matmul_nt(Graph& g, const Var& y, const Var& x, const Var& w, float alpha, bool write_into_y) {
  const Tensor& xv = x.value();
  const Tensor& wv = w.value();
  QP_CHECK(wv.ndim() == 2 && xv.dim(-1) == wv.dim(1) && y.value().dim(-1) == wv.dim(0) &&
               y.value().numel() / wv.dim(0) == xv.numel() / wv.dim(1),
           "[add_matmul_nt] y {}, x {} and weight '{}' {} do not fit", y.value().describe(), xv.describe(), w.name(),
           wv.describe());
  const int64_t N = wv.dim(0), K = wv.dim(1), M = xv.numel() / K;
  Tensor out_t = write_into_y ? y.value() : Tensor::empty(y.value().shape());
  matmul_nt_forward(xv.f32(), wv.f32(), out_t.f32(), M, N, K, alpha, y.value().f32());
  bool rg = g.needs_grad({&y, &x, &w});
  Var out = g.make_output(out_t, rg);
  if (rg) {
    g.record([y, x, w, out, M, N, K, alpha] {
      if (!out.has_grad()) return;
      matmul_nt_backward(x, w, out.grad().f32(), M, N, K, alpha);
      if (y.requires_grad()) y.adopt_grad(out.grad());  // after the products have read it
    });
  }
  return out;
}

}  // namespace qpeft
