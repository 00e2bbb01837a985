// llama.cpp's f32 orders, lane by lane (ops/llama_cpp_order.h). Its 16-lane AVX-512 vectors
// are held as two 8-lane halves: each lane sees the same operations in the same order, so one
// AVX2 + FMA build follows both llama.cpp builds (every CPU whose llama.cpp build has these
// orders has AVX2 + FMA). Contraction is off: only the written fused multiply-adds are fused.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "ops/llama_cpp_order.h"

namespace qpeft {

namespace {

// The last steps both reductions share: (b0 + b2) + (b1 + b3) of four lanes.
float sum_pairs_across(__m128 b) {
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));  // b0 + b2, b1 + b3
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)));
}
__m128 halves(__m256 v) { return _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)); }

// _mm512_reduce_add_ps of the 16 lanes lo | hi: lane i + lane i + 8, then i + 4, i + 2, i + 1.
float reduce16(__m256 lo, __m256 hi) { return sum_pairs_across(halves(_mm256_add_ps(lo, hi))); }
// llamafile's hsum(__m256) and soft_max's AVX2 sum: the same from 8 lanes.
float hsum8(__m256 v) { return sum_pairs_across(halves(v)); }
// GGML_F32x8_REDUCE's end: halves added, then two hadds: (t0 + t1) + (t2 + t3).
float hadd8(__m256 v) {
  const __m128 t = halves(v);
  const __m128 h = _mm_hadd_ps(t, t);
  return _mm_cvtss_f32(_mm_hadd_ps(h, h));
}

// ggml_v_expf's steps both forms share: x = n·ln2 + b (z holds n in its low mantissa bits),
// and the polynomial's terms of degree 2 and up, before the last fused multiply-add.
struct ExpSteps {
  float z, n, b, u, inner;
  explicit ExpSteps(float x) {
    const float r = 0x1.8p23f;
    z = std::fma(x, 0x1.715476p+0f, r);
    n = z - r;
    b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
    u = b * b;
    inner = std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f));
  }
};

// ggml_v_expf, AVX-512 form: the polynomial's last term fused with 1, then scalef by n.
float expf16(float x) {
  const ExpSteps e(x);
  if (std::fabs(e.n) > 192) return e.n <= 0 ? 0.0f : INFINITY;
  return std::ldexp(std::fma(e.inner, e.u, std::fma(0x1.ffffecp-1f, e.b, 1.0f)), int(e.n));
}

// ggml_v_expf, AVX2 form: 2^n built in the exponent bits, the result k + j·k.
float expf8(float x) {
  const ExpSteps s(x);
  const uint32_t e = std::bit_cast<uint32_t>(s.z) << 23;
  const float k = std::bit_cast<float>(e + std::bit_cast<uint32_t>(1.0f));
  const float j = std::fma(s.inner, s.u, 0x1.ffffecp-1f * s.b);
  if (!(std::fabs(s.n) > 126)) return std::fma(j, k, k);
  const uint32_t g = s.n <= 0 ? 0x82000000u : 0u;
  const float s1 = std::bit_cast<float>(g + 0x7f000000u);
  const float s2 = std::bit_cast<float>(e - g);
  if (std::fabs(s.n) > 192) return s1 * s1;
  return std::fma(s2, j, s2) * s1;
}

// Eight lanes of expf16 / expf8 where every |n| <= 126 (2^n a normal float, so the product by
// it is scalef's single rounding); false leaves `out` to the scalar forms.
template <int L>
bool expf_8_lanes(__m256 x, __m256* out) {
  const __m256 r = _mm256_set1_ps(0x1.8p23f);
  const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
  const __m256 n = _mm256_sub_ps(z, r);
  const __m256 b =
      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f), _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
  const __m256 big = _mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), n), _mm256_set1_ps(126), _CMP_GT_OQ);
  if (_mm256_movemask_ps(big)) return false;
  const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
  const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0f))));  // 2^n
  const __m256 u = _mm256_mul_ps(b, b);
  const __m256 inner = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
      _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f)));
  if (L == 16) {
    const __m256 j = _mm256_fmadd_ps(inner, u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0f)));
    *out = _mm256_mul_ps(j, k);
  } else {
    const __m256 j = _mm256_fmadd_ps(inner, u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    *out = _mm256_fmadd_ps(j, k, k);
  }
  return true;
}

template <int L>
float expf_lanes(float x) {
  return L == 16 ? expf16(x) : expf8(x);
}

// tinyBLAS's and soft_max's horizontal sum of L lanes held in L / 8 halves.
template <int L>
float hsum(const __m256* v) {
  return L == 16 ? reduce16(v[0], v[1]) : hsum8(v[0]);
}

// exp of L consecutive lanes, as llama.cpp's L-lane build computes it.
template <int L>
void expf_block(const float* x, float* out) {
  for (int h = 0; h < L / 8; ++h) {
    __m256 v;
    if (expf_8_lanes<L>(_mm256_loadu_ps(x + 8 * h), &v)) {
      _mm256_storeu_ps(out + 8 * h, v);
    } else {
      for (int l = 0; l < 8; ++l) out[8 * h + l] = expf_lanes<L>(x[8 * h + l]);
    }
  }
}

// x read in place, or (Interleaved) a head row of llama.cpp's element order read from a row in
// Hugging Face's: element 2i is x[i], 2i + 1 is x[i + D/2] (see to_llama_cpp_order).
template <bool Interleaved>
struct RowReader {
  const float* x;
  int64_t half;
  __m256 load8(int64_t e) const {  // elements e .. e + 7, e a multiple of 8
    if (!Interleaved) return _mm256_loadu_ps(x + e);
    const __m128 a = _mm_loadu_ps(x + e / 2), b = _mm_loadu_ps(x + half + e / 2);
    return _mm256_set_m128(_mm_unpackhi_ps(a, b), _mm_unpacklo_ps(a, b));
  }
  float at(int64_t e) const { return Interleaved ? x[e / 2 + (e % 2) * half] : x[e]; }
};

// ggml_vec_dot_f32: four accumulators of L lanes over blocks of 4L, added pairwise, reduced;
// the last n % 4L products added one by one.
template <int L, class Reader>
float vec_dot_read(const Reader& x, const float* y, int64_t n) {
  constexpr int H = L / 8;
  __m256 acc[4][H];
  for (auto& a : acc)
    for (auto& h : a) h = _mm256_setzero_ps();
  const int64_t np = n & ~int64_t(4 * L - 1);
  for (int64_t i = 0; i < np; i += 4 * L)
    for (int j = 0; j < 4; ++j)
      for (int h = 0; h < H; ++h) {
        const int64_t o = i + j * L + 8 * h;
        acc[j][h] = _mm256_fmadd_ps(x.load8(o), _mm256_loadu_ps(y + o), acc[j][h]);
      }
  for (int h = 0; h < H; ++h) {
    acc[0][h] = _mm256_add_ps(acc[0][h], acc[2][h]);
    acc[1][h] = _mm256_add_ps(acc[1][h], acc[3][h]);
    acc[0][h] = _mm256_add_ps(acc[0][h], acc[1][h]);
  }
  float s = L == 16 ? reduce16(acc[0][0], acc[0][H - 1]) : hadd8(acc[0][0]);
  for (int64_t i = np; i < n; ++i) s = std::fma(x.at(i), y[i], s);
  return s;
}

template <int L>
float vec_dot(const float* x, const float* y, int64_t n) {
  return vec_dot_read<L>(RowReader<false>{x, 0}, y, n);
}

// tinyBLAS: lane l sums the products i ≡ l (mod L) in order; then hsum.
template <int L>
float sgemm_dot(const float* x, const float* y, int64_t n) {
  __m256 acc[L / 8];
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (int64_t i = 0; i < n; i += L)
    for (int h = 0; h < L / 8; ++h)
      acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8 * h), _mm256_loadu_ps(y + i + 8 * h), acc[h]);
  return hsum<L>(acc);
}

// ggml's f32 mul_mat: llamafile's tinyBLAS takes it where src1 has two or more rows, K is whole
// vectors and src0's rows come in fours; vec_dot does the rest.
bool takes_sgemm(int64_t rows, int64_t N, int64_t K, int L) { return rows >= 2 && K % L == 0 && N % 4 == 0; }

template <int L>
void swiglu_row(const float* gate, const float* up, float* y, int64_t n) {
  const int64_t vectors = n / L * L;
  int64_t i = 0;
  float neg[L], e[L];
  for (; i < vectors; i += L) {
    for (int l = 0; l < L; ++l) neg[l] = 0.0f - gate[i + l];
    expf_block<L>(neg, e);
    for (int l = 0; l < L; ++l) y[i + l] = gate[i + l] / (1.0f + e[l]) * up[i + l];
  }
  for (; i < n; ++i) y[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];  // ggml_silu_f32: libm's expf
}

// One head row in llama.cpp's element order: element 2i is dimension i and 2i + 1 is i + D/2
// (the q/k rows of llama-architecture GGUFs, permuted for ggml's RoPE).
void to_llama_cpp_order(const float* x, int64_t D, float* out) {
  const int64_t half = D / 2;
  int64_t i = 0;
  for (; i + 4 <= half; i += 4) {
    const __m128 a = _mm_loadu_ps(x + i), b = _mm_loadu_ps(x + half + i);
    _mm_storeu_ps(out + 2 * i, _mm_unpacklo_ps(a, b));
    _mm_storeu_ps(out + 2 * i + 4, _mm_unpackhi_ps(a, b));
  }
  for (; i < half; ++i) out[2 * i] = x[i], out[2 * i + 1] = x[half + i];
}

// out[0:D] = Σ_j p[j] · v[j][0:D] over keys j < n, in llama.cpp's mul_mat(V, P) order over the
// keys: slot j mod S accumulates its keys in order (tinyBLAS: S = L; vec_dot: S = 4L, its four
// accumulators), vec_dot's slots then add pairwise into L, and the L lanes reduce as one
// vector (hsum / GGML_F32x8_REDUCE). Vectorised over d instead of j: each (slot, d) sees the
// same operations as llama.cpp's lane. acc: 4L·D floats.
template <int L>
void weighted_values(const float* p, int64_t n, const float* v, int64_t v_stride, int64_t D, bool sgemm, float* acc,
                     float* out) {
  const int S = sgemm ? L : 4 * L;
  std::fill(acc, acc + S * D, 0.0f);
  const int64_t D8 = D / 8 * 8;
  for (int64_t j = 0; j < n; ++j) {
    float* a = acc + (j % S) * D;
    const float* row = v + j * v_stride;
    const __m256 pj = _mm256_set1_ps(p[j]);
    int64_t d = 0;
    for (; d < D8; d += 8) _mm256_storeu_ps(a + d, _mm256_fmadd_ps(pj, _mm256_loadu_ps(row + d), _mm256_loadu_ps(a + d)));
    for (; d < D; ++d) a[d] = std::fma(p[j], row[d], a[d]);
  }
  // acc[x] += acc[y] for whole slots, vectorised over d.
  auto add_into = [&](int x, int y) {
    float *ax = acc + x * D, *ay = acc + y * D;
    int64_t d = 0;
    for (; d < D8; d += 8) _mm256_storeu_ps(ax + d, _mm256_add_ps(_mm256_loadu_ps(ax + d), _mm256_loadu_ps(ay + d)));
    for (; d < D; ++d) ax[d] = ax[d] + ay[d];
  };
  if (!sgemm)
    for (int l = 0; l < L; ++l) add_into(l, 2 * L + l), add_into(L + l, 3 * L + l), add_into(l, L + l);
  // As reduce16 / hsum8 / hadd8: lanes i + 8 (16 lanes), i + 4, then (0 + 2) + (1 + 3), or
  // (0 + 1) + (2 + 3) for vec_dot's 8-lane end.
  if (L == 16)
    for (int i = 0; i < 8; ++i) add_into(i, i + 8);
  for (int i = 0; i < 4; ++i) add_into(i, i + 4);
  if (L == 8 && !sgemm)
    add_into(0, 1), add_into(2, 3), add_into(0, 2);
  else
    add_into(0, 2), add_into(1, 3), add_into(0, 1);
  std::memcpy(out, acc, size_t(D) * sizeof(float));
}

template <int L>
void attention_tasks(const LlamaCppAttnShape& s, const float* q, const float* k, const float* v, float* out,
                     int64_t task0, int64_t task1) {
  const int64_t group = s.Hq / s.Hkv, offset = s.Tk - s.Tq;
  const int64_t q_stride = s.Hq * s.D, kv_stride = s.Hkv * s.D;
  const float scale = 1.0f / std::sqrt(float(s.D));
  const int64_t groups = (s.Tk + L - 1) / L * L;
  std::vector<float> w(static_cast<size_t>(groups)), p(static_cast<size_t>(groups));
  std::vector<float> ql(static_cast<size_t>(s.D)), acc(static_cast<size_t>(4 * L * s.D));
  // mul_mat(V, P) over llama.cpp's padded cache (a multiple of 256 cells, so K is whole vectors).
  const bool sgemm = takes_sgemm(s.Tq, s.D, L, L);
  // Scores: q's row in llama.cpp's element order, each key's read in it in place.
  auto score = [&](const float* key, const float* q_row) {
    return s.interleaved ? vec_dot_read<L>(RowReader<true>{key, s.D / 2}, q_row, s.D) : vec_dot<L>(key, q_row, s.D);
  };
  for (int64_t task = task0; task < task1; ++task) {
    const int64_t b = task / s.Hq, h = task % s.Hq, hk = h / group;
    const float* kb = k + b * s.Tk * kv_stride + hk * s.D;
    const float* vb = v + b * s.Tk * kv_stride + hk * s.D;
    for (int64_t t = 0; t < s.Tq; ++t) {
      const float* q_row = q + (b * s.Tq + t) * q_stride + h * s.D;
      if (s.interleaved) {
        to_llama_cpp_order(q_row, s.D, ql.data());
        q_row = ql.data();
      }
      const int64_t n = t + offset + 1;  // visible keys
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        w[size_t(j)] = score(kb + j * kv_stride, q_row) * scale;
        mx = std::max(mx, w[size_t(j)]);
      }
      // soft_max_ext: exp by groups of L from key 0, each group's float sum added in double.
      double sum = 0;
      for (int64_t j0 = 0; j0 < n; j0 += L) {
        float shifted[L], e[L];
        for (int l = 0; l < L; ++l) shifted[l] = j0 + l < n ? w[size_t(j0 + l)] - mx : 0.0f;
        expf_block<L>(shifted, e);
        for (int l = 0; l < L; ++l) e[l] = j0 + l < n ? e[l] : 0.0f;  // masked keys: exp(−inf) = 0
        std::memcpy(&p[size_t(j0)], e, sizeof(e));
        __m256 halves8[L / 8];
        for (int i = 0; i < L / 8; ++i) halves8[i] = _mm256_loadu_ps(e + 8 * i);
        sum += double(hsum<L>(halves8));
      }
      const float inv = float(1.0 / sum);
      for (int64_t j = 0; j < n; ++j) p[size_t(j)] *= inv;
      weighted_values<L>(p.data(), n, vb, kv_stride, s.D, sgemm, acc.data(), out + (b * s.Tq + t) * q_stride + h * s.D);
    }
  }
}

}  // namespace

float llama_cpp_expf(float x, int lanes) { return lanes == 16 ? expf16(x) : expf8(x); }

float llama_cpp_vec_dot(const float* x, const float* y, int64_t n, int lanes) {
  return lanes == 16 ? vec_dot<16>(x, y, n) : vec_dot<8>(x, y, n);
}

float llama_cpp_sgemm_dot(const float* x, const float* y, int64_t n, int lanes) {
  QP_CHECK(n % lanes == 0, "[llama.cpp order] tinyBLAS dot of {} elements: not a multiple of {} lanes", n, lanes);
  return lanes == 16 ? sgemm_dot<16>(x, y, n) : sgemm_dot<8>(x, y, n);
}

void llama_cpp_matmul_nt(const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y, int64_t m0,
                         int64_t m1, int lanes) {
  float (*dot)(const float*, const float*, int64_t) =
      takes_sgemm(M, N, K, lanes) ? (lanes == 16 ? sgemm_dot<16> : sgemm_dot<8>) : (lanes == 16 ? vec_dot<16> : vec_dot<8>);
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t n = 0; n < N; ++n) y[m * N + n] = dot(w + n * K, x + m * K, K);
}

void llama_cpp_swiglu_row(const float* gate, const float* up, float* y, int64_t n, int lanes) {
  if (lanes == 16)
    swiglu_row<16>(gate, up, y, n);
  else
    swiglu_row<8>(gate, up, y, n);
}

void llama_cpp_rope_rotate(const float* x, const float* c, const float* s, int64_t half, float* y) {
  for (int64_t i = 0; i < half; ++i) {
    const float x0 = x[i], x1 = x[i + half];
    y[i] = std::fma(x0, c[i], -(x1 * s[i]));
    y[i + half] = std::fma(x0, s[i], x1 * c[i]);
  }
}

void llama_cpp_attention_tasks(const LlamaCppAttnShape& s, const float* q, const float* k, const float* v, float* out,
                               int64_t task0, int64_t task1, int lanes) {
  if (lanes == 16)
    attention_tasks<16>(s, q, k, v, out, task0, task1);
  else
    attention_tasks<8>(s, q, k, v, out, task0, task1);
}

}  // namespace qpeft
