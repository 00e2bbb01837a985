#include "ops/llama_cpp_order.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/cpu.h"
#include "core/error.h"
#include "core/profile.h"
#include "core/thread_pool.h"

namespace qpeft {

int llama_cpp_lanes() {
  // llama.cpp loads the CPU variant the CPU can run, whatever QPEFT_ISA caps ours to.
  static const int lanes = [] {
    const int native = cpu_has_avx512() ? 16 : cpu_has_avx2() ? 8 : 0;
    const char* e = std::getenv("QPEFT_LLAMA_CPP_LANES");
    if (!e || !*e || native == 0) return native;
    const std::string v = e;
    if (v == "0" || v == "8" || v == "16") return std::stoi(v);
    std::fprintf(stderr,
                 "qpeft: QPEFT_LLAMA_CPP_LANES=%s ignored (8: llama.cpp's AVX2 build, 16: its AVX-512 build, 0: "
                 "qpeft's own order)\n",
                 e);
    return native;
  }();
  return lanes;
}

namespace {

void check_forward_only(const Graph& g, std::initializer_list<const Var*> inputs, const char* op) {
  QP_CHECK(!g.needs_grad(inputs),
           "[{}] follows llama.cpp's inference order and has no backward rule; run it under Graph(false) or "
           "without trainable inputs",
           op);
}

void check_lanes(int lanes, const char* op) {
  QP_CHECK(lanes == 8 || lanes == 16, "[{}] lanes must be 8 or 16 (llama_cpp_lanes()), got {}", op, lanes);
}

}  // namespace

Var causal_attention_llama_cpp(Graph& g, const Var& q, const Var& k, const Var& v, int lanes, bool interleaved) {
  profile::Scope prof("causal_attention fwd (llama.cpp order)");
  check_forward_only(g, {&q, &k, &v}, "attention");
  check_lanes(lanes, "attention");
  const Tensor &qv = q.value(), &kv = k.value(), &vv = v.value();
  QP_CHECK(qv.ndim() == 4 && kv.ndim() == 4 && kv.shape() == vv.shape(),
           "[attention] expected q [B, T, Hq, D] and k, v [B, T, Hkv, D]; got q {}, k {}, v {}", qv.describe(),
           kv.describe(), vv.describe());
  const LlamaCppAttnShape s{qv.dim(0), qv.dim(1), kv.dim(1), qv.dim(2), kv.dim(2), qv.dim(3), interleaved};
  QP_CHECK(kv.dim(0) == s.B && kv.dim(3) == s.D && s.Hkv > 0 && s.Hq % s.Hkv == 0 && s.Tk >= s.Tq && s.D % 2 == 0,
           "[attention] incompatible q {} and k {}", qv.describe(), kv.describe());
  Tensor out = Tensor::empty(qv.shape());
  const float *qp = qv.f32(), *kp = kv.f32(), *vp = vv.f32();
  float* op = out.f32();
  pool().run([&](int ith, int nth) {
    int64_t t0, t1;
    split_range(s.B * s.Hq, ith, nth, &t0, &t1);
    llama_cpp_attention_tasks(s, qp, kp, vp, op, t0, t1, lanes);
  });
  return Var(out);
}

Var silu_mul_llama_cpp(Graph& g, const Var& gate, const Var& up, int lanes) {
  profile::Scope prof("silu_mul fwd (llama.cpp order)");
  check_forward_only(g, {&gate, &up}, "silu_mul");
  check_lanes(lanes, "silu_mul");
  const Tensor &gv = gate.value(), &uv = up.value();
  QP_CHECK(gv.shape() == uv.shape() && gv.ndim() >= 1, "[silu_mul] gate {} and up {} must have one shape",
           gv.describe(), uv.describe());
  const int64_t n = gv.dim(gv.ndim() - 1), rows = gv.numel() / std::max<int64_t>(n, 1);
  Tensor y = Tensor::empty(gv.shape());
  const float *gp = gv.f32(), *up_ = uv.f32();
  float* yp = y.f32();
  pool().parallel_for(rows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) llama_cpp_swiglu_row(gp + r * n, up_ + r * n, yp + r * n, n, lanes);
  });
  return Var(y);
}

Var add_lora_llama_cpp(Graph& g, const Var& y, const Var& x, const Var& A, const Var& B, float scale, int lanes) {
  profile::Scope prof("lora fwd (llama.cpp order)");
  check_forward_only(g, {&y, &x, &A, &B}, "lora");
  check_lanes(lanes, "lora");
  const Tensor &xv = x.value(), &av = A.value(), &bv = B.value(), &yv = y.value();
  const int64_t r = av.dim(0), in = av.dim(1), out = bv.dim(0);
  QP_CHECK(av.ndim() == 2 && bv.ndim() == 2 && bv.dim(1) == r && xv.ndim() >= 1 && xv.dim(xv.ndim() - 1) == in &&
               yv.ndim() == xv.ndim() && yv.dim(yv.ndim() - 1) == out && yv.numel() / out == xv.numel() / in,
           "[lora] x {}, A {}, B {} and y {} do not fit", xv.describe(), av.describe(), bv.describe(), yv.describe());
  const int64_t M = xv.numel() / in;
  std::vector<float> low(static_cast<size_t>(M * r)), ab(static_cast<size_t>(M * out));
  Tensor res = Tensor::empty(yv.shape());
  const float *xp = xv.f32(), *ap = av.f32(), *bp = bv.f32(), *yp = yv.f32();
  float* rp = res.f32();
  pool().parallel_for(M, [&](int64_t m0, int64_t m1) {
    llama_cpp_matmul_nt(xp, M, ap, r, in, low.data(), m0, m1, lanes);
  });
  pool().parallel_for(M, [&](int64_t m0, int64_t m1) {
    llama_cpp_matmul_nt(low.data(), M, bp, out, r, ab.data(), m0, m1, lanes);
    for (int64_t i = m0 * out; i < m1 * out; ++i) rp[i] = yp[i] + ab[size_t(i)] * scale;
  });
  return Var(res);
}

bool rope_llama_cpp_supports(const RopeConfig& cfg) {
  return cfg.scaling_type == "default" || cfg.scaling_type == "linear" || cfg.scaling_type == "factors";
}

Var rope_llama_cpp(Graph& g, const Var& x, const RopeConfig& cfg, int64_t pos_offset) {
  profile::Scope prof("rope fwd (llama.cpp order)");
  check_forward_only(g, {&x}, "rope");
  QP_CHECK(rope_llama_cpp_supports(cfg), "[rope] llama.cpp's order has no '{}' scaling (it sees such models' "
           "frequencies as a GGUF's rope_freqs factors)", cfg.scaling_type);
  const Tensor& xv = x.value();
  QP_CHECK(xv.ndim() == 4 && xv.dim(3) == cfg.head_dim && cfg.head_dim % 2 == 0,
           "[rope] input {} must be [B, T, H, {}]", xv.describe(), cfg.head_dim);
  const int64_t B = xv.dim(0), T = xv.dim(1), H = xv.dim(2), D = xv.dim(3), half = D / 2;
  QP_CHECK(cfg.scaling_type != "factors" || int64_t(cfg.freq_factors.size()) == half,
           "[rope] {} frequency factors for head_dim {} (need {})", cfg.freq_factors.size(), D, half);
  // ggml_rope_cache_init with ext_factor 0 and attn_factor 1 (llama.cpp's values without YaRN).
  const float theta_scale = std::pow(float(cfg.theta), -2.0f / float(D));
  const float freq_scale = cfg.scaling_type == "linear" ? 1.0f / float(cfg.factor) : 1.0f;
  std::vector<float> factors(size_t(half), 1.0f);
  if (cfg.scaling_type == "factors")
    for (int64_t i = 0; i < half; ++i) factors[size_t(i)] = float(cfg.freq_factors[size_t(i)]);
  Tensor y = Tensor::empty(xv.shape());
  const float* xp = xv.f32();
  float* yp = y.f32();
  pool().parallel_for(B * T, [&](int64_t r0, int64_t r1) {
    std::vector<float> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int64_t r = r0; r < r1; ++r) {
      float theta = float(pos_offset + r % T);
      for (int64_t i = 0; i < half; ++i) {
        const float angle = freq_scale * (theta / factors[size_t(i)]);
        c[size_t(i)] = std::cos(angle);
        s[size_t(i)] = std::sin(angle);
        theta *= theta_scale;
      }
      for (int64_t h = 0; h < H; ++h)
        llama_cpp_rope_rotate(xp + (r * H + h) * D, c.data(), s.data(), half, yp + (r * H + h) * D);
    }
  });
  return Var(y);
}

}  // namespace qpeft
