// Truncated singular value decomposition, A ≈ U diag(S) Vh, in double precision.
//
// Exact: LAPACK's divide-and-conquer dgesdd on the whole matrix (O(m·n·min(m, n)); cheap for
// the small and medium matrices of a test or a small model). Randomized (Halko, Martinsson &
// Tropp 2011, Algorithm 4.4 with re-orthonormalisation between power iterations): a seeded
// Gaussian sketch of k + oversample columns, `power_iters` subspace iterations, then an exact
// SVD of the small projected matrix; O(m·n·(k + p)·(2q + 2)), what makes LoftQ on 7B shapes
// take minutes instead of hours. Auto picks randomized when min(m, n) > 1024 and the sketch is
// under a quarter of min(m, n).
//
// Everything is computed in double: the residuals LoftQ decomposes have flat spectra, and
// float32 products lose the trailing singular values the rank-r truncation is judged by.
// Products run on the thread pool (rows or columns split statically): the same seed and thread
// count give the same bits.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace qpeft {

enum class SvdMethod : uint8_t { Auto, Exact, Randomized };
// "auto", "exact", "randomized"; false otherwise.
bool parse_svd_method(const std::string& s, SvdMethod* out);
const char* svd_method_name(SvdMethod m);

struct SvdOptions {
  SvdMethod method = SvdMethod::Auto;
  int64_t oversample = 0;  // randomized: extra sketch columns; 0 = max(10, k)
  int power_iters = 4;     // randomized: subspace iterations
  uint64_t seed = 0x5eed;  // randomized: the Gaussian sketch
};

struct TruncatedSvd {
  int64_t m = 0, n = 0, k = 0;
  SvdMethod method = SvdMethod::Exact;  // what was run (never Auto)
  std::vector<double> U;   // [m, k] row-major
  std::vector<double> S;   // [k], descending
  std::vector<double> Vh;  // [k, n] row-major
};

// The method Auto resolves to for this shape and rank.
SvdMethod resolve_svd_method(int64_t m, int64_t n, int64_t k, const SvdOptions& opt);

// Rank-k truncated SVD of A [m, n] (row-major double). 1 <= k <= min(m, n). `what` names the
// matrix in errors (non-finite input, LAPACK failure).
TruncatedSvd truncated_svd(const double* A, int64_t m, int64_t n, int64_t k, const SvdOptions& opt,
                           const std::string& what);

// C[m, n] (+)= op(A) op(B) in double on the thread pool, row-major; op = transpose when trans_*.
// A is [m, k] (or [k, m] transposed), B is [k, n] (or [n, k] transposed).
void parallel_dgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* A, const double* B,
                    double* C, bool accumulate = false);

}  // namespace qpeft
