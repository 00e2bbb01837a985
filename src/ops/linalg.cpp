#include "ops/linalg.h"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "core/thread_pool.h"

namespace qpeft {

bool parse_svd_method(const std::string& s, SvdMethod* out) {
  if (s == "auto") *out = SvdMethod::Auto;
  else if (s == "exact") *out = SvdMethod::Exact;
  else if (s == "randomized") *out = SvdMethod::Randomized;
  else return false;
  return true;
}

const char* svd_method_name(SvdMethod m) {
  return m == SvdMethod::Exact ? "exact" : m == SvdMethod::Randomized ? "randomized" : "auto";
}

void parallel_dgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* A, const double* B,
                    double* C, bool accumulate) {
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  const int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  const double beta = accumulate ? 1.0 : 0.0;
  if (m >= n) {  // split the rows of C: rows of op(A)
    pool().parallel_for(m, [&](int64_t i0, int64_t i1) {
      const double* a = trans_a ? A + i0 : A + i0 * k;
      cblas_dgemm(CblasRowMajor, ta, tb, int(i1 - i0), int(n), int(k), 1.0, a, int(lda), B, int(ldb), beta,
                  C + i0 * n, int(n));
    });
  } else {  // split the columns of C: columns of op(B)
    pool().parallel_for(n, [&](int64_t j0, int64_t j1) {
      const double* b = trans_b ? B + j0 * k : B + j0;
      cblas_dgemm(CblasRowMajor, ta, tb, int(m), int(j1 - j0), int(k), 1.0, A, int(lda), b, int(ldb), beta, C + j0,
                  int(n));
    });
  }
}

namespace {

int64_t sketch_width(int64_t m, int64_t n, int64_t k, const SvdOptions& opt) {
  const int64_t p = opt.oversample > 0 ? opt.oversample : std::max<int64_t>(10, k);
  return std::min(std::min(m, n), k + p);
}

// Orthonormal basis of the columns of Y [rows, cols] in place (Householder QR, thin Q).
void orthonormalize(std::vector<double>& Y, int64_t rows, int64_t cols, const std::string& what) {
  std::vector<double> tau(static_cast<size_t>(cols));
  lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, lapack_int(rows), lapack_int(cols), Y.data(), lapack_int(cols),
                                   tau.data());
  QP_CHECK(info == 0, "[svd] {}: QR factorisation failed (LAPACK dgeqrf info {})", what, int(info));
  info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, lapack_int(rows), lapack_int(cols), lapack_int(cols), Y.data(),
                        lapack_int(cols), tau.data());
  QP_CHECK(info == 0, "[svd] {}: forming Q failed (LAPACK dorgqr info {})", what, int(info));
}

// Full thin SVD of A [m, n] (destroyed): U [m, mn], S [mn], Vh [mn, n], mn = min(m, n).
void gesdd(std::vector<double>& A, int64_t m, int64_t n, std::vector<double>* U, std::vector<double>* S,
           std::vector<double>* Vh, const std::string& what) {
  const int64_t mn = std::min(m, n);
  U->assign(size_t(m * mn), 0.0);
  S->assign(size_t(mn), 0.0);
  Vh->assign(size_t(mn * n), 0.0);
  const lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', lapack_int(m), lapack_int(n), A.data(),
                                         lapack_int(n), S->data(), U->data(), lapack_int(mn), Vh->data(),
                                         lapack_int(n));
  QP_CHECK(info == 0,
           "[svd] {}: LAPACK dgesdd did not converge (info {}) on a [{}, {}] matrix; try --svd randomized", what,
           int(info), m, n);
}

// Keeps the first k columns of U [m, w] and the first k rows of Vh [w, n].
void truncate(TruncatedSvd& r, const std::vector<double>& U, int64_t w, const std::vector<double>& S,
              const std::vector<double>& Vh) {
  r.U.resize(size_t(r.m * r.k));
  for (int64_t i = 0; i < r.m; ++i)
    std::copy(U.begin() + i * w, U.begin() + i * w + r.k, r.U.begin() + i * r.k);
  r.S.assign(S.begin(), S.begin() + r.k);
  r.Vh.assign(Vh.begin(), Vh.begin() + r.k * r.n);
}

}  // namespace

SvdMethod resolve_svd_method(int64_t m, int64_t n, int64_t k, const SvdOptions& opt) {
  if (opt.method != SvdMethod::Auto) return opt.method;
  const int64_t mn = std::min(m, n);
  return mn > 1024 && 4 * sketch_width(m, n, k, opt) < mn ? SvdMethod::Randomized : SvdMethod::Exact;
}

TruncatedSvd truncated_svd(const double* A, int64_t m, int64_t n, int64_t k, const SvdOptions& opt,
                           const std::string& what) {
  QP_CHECK(m > 0 && n > 0, "[svd] {}: empty matrix [{}, {}]", what, m, n);
  QP_CHECK(k >= 1 && k <= std::min(m, n), "[svd] {}: rank {} must be in [1, min({}, {})]", what, k, m, n);
  for (int64_t i = 0; i < m * n; ++i)
    QP_CHECK(std::isfinite(A[i]), "[svd] {}: element {} (row {}, column {}) is {}; the matrix must be finite", what,
             i, i / n, i % n, A[i]);
  TruncatedSvd r;
  r.m = m;
  r.n = n;
  r.k = k;
  r.method = resolve_svd_method(m, n, k, opt);
  std::vector<double> U, S, Vh;
  if (r.method == SvdMethod::Exact) {
    std::vector<double> a(A, A + m * n);
    gesdd(a, m, n, &U, &S, &Vh, what);
    truncate(r, U, std::min(m, n), S, Vh);
    return r;
  }
  const int64_t l = sketch_width(m, n, k, opt);
  // Y = A Ω, Ω [n, l] standard normal from the seed (drawn sequentially: independent of threads).
  std::vector<double> omega(size_t(n * l));
  Rng rng(splitmix64(opt.seed));
  for (double& v : omega) v = rng.normal();
  std::vector<double> Y(size_t(m * l)), Z(size_t(n * l));
  parallel_dgemm(false, false, m, l, n, A, omega.data(), Y.data());  // [m, l]
  orthonormalize(Y, m, l, what);
  for (int q = 0; q < opt.power_iters; ++q) {
    parallel_dgemm(true, false, n, l, m, A, Y.data(), Z.data());  // Z = Aᵀ Y  [n, l]
    orthonormalize(Z, n, l, what);
    parallel_dgemm(false, false, m, l, n, A, Z.data(), Y.data());  // Y = A Z  [m, l]
    orthonormalize(Y, m, l, what);
  }
  // B = Yᵀ A [l, n]; its SVD B = Ub S Vh gives A ≈ (Y Ub) S Vh.
  std::vector<double> B(size_t(l * n));
  parallel_dgemm(true, false, l, n, m, Y.data(), A, B.data());
  std::vector<double> Ub;
  gesdd(B, l, n, &Ub, &S, &Vh, what);  // Ub [l, l], S [l], Vh [l, n]
  U.assign(size_t(m * l), 0.0);
  parallel_dgemm(false, false, m, l, l, Y.data(), Ub.data(), U.data());  // [m, l]
  truncate(r, U, l, S, Vh);
  return r;
}

}  // namespace qpeft
