#include "ops/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/profile.h"
#include "core/thread_pool.h"
#include "ops/linear.h"
#include "ops/vec_math.h"

namespace qpeft {

namespace {

constexpr int64_t kQueryTile = 64;

struct AttnShape {
  int64_t B, Tq, Tk, Hq, Hkv, D;
  float scale;
  int64_t q_stride() const { return Hq * D; }    // between consecutive tokens of one head
  int64_t kv_stride() const { return Hkv * D; }
  int64_t group() const { return Hq / Hkv; }
  int64_t offset() const { return Tk - Tq; }
};

// The tiles' products: the SIMD tables' short-matrix kernels where the CPU has them (with
// every side at most a few hundred, sgemm spends about as long packing as multiplying), sgemm
// otherwise. C[M, N] (+)= alpha · A[M, K] B[K, N]; rows lda, ldb, ldc apart.
void tile_nn(const VecKernels* vk, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, bool accumulate, float* C, int64_t ldc) {
  if (vk) {
    vk->small_gemm(A, lda, M, K, B, ldb, N, alpha, accumulate ? C : nullptr, C, ldc);
  } else {
    sgemm(false, false, M, N, K, alpha, A, lda, B, ldb, accumulate ? 1.0f : 0.0f, C, ldc);
  }
}

// C[M, N] += alpha · A[K, M]ᵀ B[K, N]
void tile_tn(const VecKernels* vk, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float* C, int64_t ldc) {
  if (vk) {
    vk->small_gemm_tn(A, lda, K, M, B, ldb, N, alpha, C, ldc);
  } else {
    sgemm(true, false, M, N, K, alpha, A, lda, B, ldb, 1.0f, C, ldc);
  }
}

// C[M, N] = A[M, K] B[N, K]ᵀ: with the kernels, from Bᵀ [K, N] (bt, rows ldbt apart), which
// the caller transposed once per head.
void tile_nt(const VecKernels* vk, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, const float* bt, int64_t ldbt, float* C, int64_t ldc) {
  if (vk) {
    vk->small_gemm(A, lda, M, K, bt, ldbt, N, alpha, nullptr, C, ldc);
  } else {
    sgemm(false, true, M, N, K, alpha, A, lda, B, ldb, 0.0f, C, ldc);
  }
}

// xt[D, T] = x[0:T, 0:D]ᵀ for one head's rows (stride apart), when the kernels want it.
void transpose_head(const VecKernels* vk, const float* x, int64_t T, int64_t D, int64_t stride, std::vector<float>* xt) {
  if (!vk) return;
  xt->resize(size_t(D * T));
  float* out = xt->data();
  // In 16 x 16 blocks: a head's rows are often a multiple of 2 KiB apart, so they share a few
  // L1 sets, and a pass over all T of them per d (the plain loop) found each line evicted.
  constexpr int64_t kBlock = 16;
  for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
    const int64_t t1 = std::min(T, t0 + kBlock);
    for (int64_t d0 = 0; d0 < D; d0 += kBlock) {
      const int64_t d1 = std::min(D, d0 + kBlock);
      for (int64_t d = d0; d < d1; ++d)
        for (int64_t t = t0; t < t1; ++t) out[d * T + t] = x[t * stride + d];
    }
  }
}

// S[nq, nk] = scale · Q_tile K[0:nk]ᵀ with the causal mask; returns nk (keys visible to the tile).
int64_t tile_scores(const VecKernels* vk, const AttnShape& s, const float* qt, const float* kb, const float* kt,
                    int64_t q0, int64_t q1, float* S) {
  const int64_t nq = q1 - q0, nk = std::min(s.Tk, q1 + s.offset());
  tile_nt(vk, nq, nk, s.D, s.scale, qt, s.q_stride(), kb, s.kv_stride(), kt, s.Tk, S, nk);
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t last = q0 + i + s.offset();  // last visible key
    for (int64_t j = last + 1; j < nk; ++j) S[i * nk + j] = -std::numeric_limits<float>::infinity();
  }
  return nk;
}

}  // namespace

Var causal_attention(Graph& g, const Var& q, const Var& k, const Var& v) {
  profile::Scope prof("causal_attention fwd");
  const Tensor &qv = q.value(), &kv = k.value(), &vv = v.value();
  QP_CHECK(qv.ndim() == 4 && kv.ndim() == 4 && kv.shape() == vv.shape(),
           "[attention] expected q [B, T, Hq, D] and k, v [B, T, Hkv, D]; got q {}, k {}, v {}", qv.describe(),
           kv.describe(), vv.describe());
  AttnShape s{qv.dim(0), qv.dim(1), kv.dim(1), qv.dim(2), kv.dim(2), qv.dim(3), 0.0f};
  QP_CHECK(kv.dim(0) == s.B && kv.dim(3) == s.D && s.Hkv > 0 && s.Hq % s.Hkv == 0 && s.Tk >= s.Tq,
           "[attention] incompatible q {} and k {}", qv.describe(), kv.describe());
  s.scale = float(1.0 / std::sqrt(double(s.D)));

  Tensor out_t = Tensor::empty(qv.shape());
  auto lse = std::make_shared<std::vector<float>>(size_t(s.B * s.Hq * s.Tq));
  const float *qp = qv.f32(), *kp = kv.f32(), *vp = vv.f32();
  float* op = out_t.f32();

  // Tasks: (batch, query head). Each writes its own output rows and lse entries.
  pool().run([&](int ith, int nth) {
    int64_t t0, t1;
    split_range(s.B * s.Hq, ith, nth, &t0, &t1);
    std::vector<float> S(size_t(kQueryTile * s.Tk)), kt;
    const VecKernels* vk_tiles = vec_kernels_simd();
    for (int64_t task = t0; task < t1; ++task) {
      const int64_t b = task / s.Hq, h = task % s.Hq, hk = h / s.group();
      const float* kb = kp + (b * s.Tk * s.Hkv + hk) * s.D;
      const float* vb = vp + (b * s.Tk * s.Hkv + hk) * s.D;
      if (task == t0 || h % s.group() == 0) transpose_head(vk_tiles, kb, s.Tk, s.D, s.kv_stride(), &kt);
      for (int64_t q0 = 0; q0 < s.Tq; q0 += kQueryTile) {
        const int64_t q1 = std::min(s.Tq, q0 + kQueryTile), nq = q1 - q0;
        const float* qt = qp + ((b * s.Tq + q0) * s.Hq + h) * s.D;
        const int64_t nk = tile_scores(vk_tiles, s, qt, kb, kt.data(), q0, q1, S.data());
        const VecKernels& vk = vec_kernels();
        for (int64_t i = 0; i < nq; ++i) {
          float* row = S.data() + i * nk;
          const float m = vk.max(row, nk);
          const double sum = vk.exp_shift_sum(row, nk, m);
          vk.scale(row, nk, float(1.0 / sum));
          (*lse)[(b * s.Hq + h) * s.Tq + q0 + i] = m + float(std::log(sum));
        }
        // O_tile[nq, D] = P[nq, nk] V[0:nk]
        tile_nn(vk_tiles, nq, s.D, nk, 1.0f, S.data(), nk, vb, s.kv_stride(), false,
                op + ((b * s.Tq + q0) * s.Hq + h) * s.D, s.q_stride());
      }
    }
  });

  bool rg = g.needs_grad({&q, &k, &v});
  Var out = g.make_output(out_t, rg);
  if (rg) {
    g.record([q, k, v, out, lse, s] {
      profile::Scope prof("causal_attention bwd");
      if (!out.has_grad()) return;
      const float *qp = q.value().f32(), *kp = k.value().f32(), *vp = v.value().f32();
      const float *op = out.value().f32(), *dop = out.grad().f32();
      // All three gradients are written by the owner of the kv head, so allocate them here.
      // Each element of dq comes from one (head, query tile): written where q has no gradient
      // yet, not zeroed and then added to; dk and dv sum over tiles and heads.
      bool dq_accumulate = false;
      float* dq = q.grad_for_update(&dq_accumulate);
      float* dk = k.grad_buffer();
      float* dv = v.grad_buffer();
      // Tasks: (batch, kv head): dK, dV of a kv head accumulate over its query heads and tiles
      // in a fixed order, so results do not depend on the thread count.
      pool().run([&](int ith, int nth) {
        int64_t t0, t1;
        split_range(s.B * s.Hkv, ith, nth, &t0, &t1);
        std::vector<float> P(size_t(kQueryTile * s.Tk)), dP(size_t(kQueryTile * s.Tk)), Dsum(kQueryTile), kt, vt;
        const VecKernels* vk_tiles = vec_kernels_simd();
        for (int64_t task = t0; task < t1; ++task) {
          const int64_t b = task / s.Hkv, hk = task % s.Hkv;
          const int64_t kv_off = (b * s.Tk * s.Hkv + hk) * s.D;
          transpose_head(vk_tiles, kp + kv_off, s.Tk, s.D, s.kv_stride(), &kt);
          transpose_head(vk_tiles, vp + kv_off, s.Tk, s.D, s.kv_stride(), &vt);
          for (int64_t h = hk * s.group(); h < (hk + 1) * s.group(); ++h) {
            for (int64_t q0 = 0; q0 < s.Tq; q0 += kQueryTile) {
              const int64_t q1 = std::min(s.Tq, q0 + kQueryTile), nq = q1 - q0;
              const int64_t q_off = ((b * s.Tq + q0) * s.Hq + h) * s.D;
              const int64_t nk = tile_scores(vk_tiles, s, qp + q_off, kp + kv_off, kt.data(), q0, q1, P.data());
              // P = exp(S − lse); Dsum_i = Σ_d dO_id O_id
              for (int64_t i = 0; i < nq; ++i) {
                const float l = (*lse)[(b * s.Hq + h) * s.Tq + q0 + i];
                float* row = P.data() + i * nk;
                vec_kernels().exp_shift_sum(row, nk, l);
                const float* o_i = op + q_off + i * s.q_stride();
                const float* do_i = dop + q_off + i * s.q_stride();
                double acc = 0;
                for (int64_t d = 0; d < s.D; ++d) acc += double(o_i[d]) * do_i[d];
                Dsum[i] = float(acc);
              }
              // dV[0:nk] += Pᵀ dO_tile   [nk, D]
              tile_tn(vk_tiles, nk, s.D, nq, 1.0f, P.data(), nk, dop + q_off, s.q_stride(), dv + kv_off, s.kv_stride());
              // dP[nq, nk] = dO_tile V[0:nk]ᵀ
              tile_nt(vk_tiles, nq, nk, s.D, 1.0f, dop + q_off, s.q_stride(), vp + kv_off, s.kv_stride(), vt.data(), s.Tk,
                      dP.data(), nk);
              // dS = P ⊙ (dP − Dsum) · scale  (stored in dP; restrict lets the loop vectorise)
              for (int64_t i = 0; i < nq; ++i) {
                float* __restrict ds = dP.data() + i * nk;
                const float* __restrict p = P.data() + i * nk;
                const float di = Dsum[i], scale = s.scale;
                for (int64_t j = 0; j < nk; ++j) ds[j] = p[j] * (ds[j] - di) * scale;
              }
              // dQ_tile += dS K[0:nk]   [nq, D]
              tile_nn(vk_tiles, nq, s.D, nk, 1.0f, dP.data(), nk, kp + kv_off, s.kv_stride(), dq_accumulate,
                      dq + q_off, s.q_stride());
              // dK[0:nk] += dSᵀ Q_tile  [nk, D]
              tile_tn(vk_tiles, nk, s.D, nq, 1.0f, dP.data(), nk, qp + q_off, s.q_stride(), dk + kv_off, s.kv_stride());
            }
          }
        }
      });
    });
  }
  return out;
}

}  // namespace qpeft
