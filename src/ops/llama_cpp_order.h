// llama.cpp's CPU backend (ggml-cpu) computes attention, RoPE and SwiGLU in f32, each in its
// own order: ggml_vec_dot_f32's four accumulators of 8 or 16 lanes, llamafile's tinyBLAS
// lanes, a polynomial exponential that differs between its AVX2 and AVX-512 builds, RoPE
// angles by repeated float multiplication. The ops here follow those orders to the bit
// (checked element by element against node-llama-cpp's builds: docs/gguf.md), so that a
// forward pass with llama.cpp's 8-bit products (GgmlActivations::Q8) rounds the same
// activations to the same 8-bit codes as llama.cpp does. Forward only.
#pragma once
#include <cstdint>

#include "ops/autograd.h"
#include "ops/rope.h"

namespace qpeft {

// The vector width, in floats, of the llama.cpp CPU build this CPU would load: 16 with
// AVX-512 (F, DQ), 8 with AVX2 + FMA, 0 with neither (then nothing here applies).
// QPEFT_LLAMA_CPP_LANES=8 or 16 follows the other build instead (to compare with llama.cpp
// on another machine; either runs on any CPU with AVX2 + FMA); 0 keeps qpeft's own kernels.
int llama_cpp_lanes();

// The kernels, for lanes 8 or 16 (defined in llama_cpp_order_avx2.cpp: only call them where
// llama_cpp_lanes() is not 0).
float llama_cpp_expf(float x, int lanes);                                         // ggml_v_expf
float llama_cpp_vec_dot(const float* x, const float* y, int64_t n, int lanes);    // ggml_vec_dot_f32
float llama_cpp_sgemm_dot(const float* x, const float* y, int64_t n, int lanes);  // tinyBLAS; n % lanes == 0
// Rows [m0, m1) of y[M, N] = x[M, K] · w[N, K]ᵀ as ggml's f32 mul_mat computes them: by tinyBLAS
// where M ≥ 2, K % lanes == 0 and N % 4 == 0, else by vec_dot.
void llama_cpp_matmul_nt(const float* x, int64_t M, const float* w, int64_t N, int64_t K, float* y, int64_t m0,
                         int64_t m1, int lanes);
// y[i] = silu(gate[i]) · up[i], one row as ggml_vec_swiglu_f32.
void llama_cpp_swiglu_row(const float* gate, const float* up, float* y, int64_t n, int lanes);
// One head row: y[i] = x[i] c[i] − x[i+h] s[i], y[i+h] = x[i] s[i] + x[i+h] c[i] (h = D/2), as
// ggml's rotate_pairs compiles (two fused multiply-adds).
void llama_cpp_rope_rotate(const float* x, const float* c, const float* s, int64_t half, float* y);
// q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D] -> out [B, Tq, Hq, D], for the (batch, query head)
// tasks [task0, task1) of B·Hq; see causal_attention_llama_cpp.
struct LlamaCppAttnShape {
  int64_t B, Tq, Tk, Hq, Hkv, D;
  bool interleaved;  // see causal_attention_llama_cpp
};
void llama_cpp_attention_tasks(const LlamaCppAttnShape& s, const float* q, const float* k, const float* v, float* out,
                               int64_t task0, int64_t task1, int lanes);

// Attention as llama.cpp computes it without flash attention: scores by vec_dot, soft_max_ext
// (scale 1/sqrtf(D), causal mask), the weighted values by tinyBLAS for batches of two or more
// tokens and by vec_dot for one. Shapes and masking as causal_attention; llama.cpp's KV cache
// padded to a multiple of 256 cells (its default) is assumed. `interleaved`: llama.cpp holds q
// and k with each head's halves interleaved (element 2i is dimension i, 2i + 1 is i + D/2), as
// for llama-architecture GGUFs, whose q/k rows are permuted for ggml's RoPE; the scores sum in
// that element order then.
Var causal_attention_llama_cpp(Graph& g, const Var& q, const Var& k, const Var& v, int lanes, bool interleaved);
// silu(gate) · up over the last dimension, as ggml's swiglu.
Var silu_mul_llama_cpp(Graph& g, const Var& gate, const Var& up, int lanes);
// RoPE as ggml's rope (on rows in Hugging Face's order: pairs i, i + D/2): angles
// freq_scale · p·θ^(−2i/D) / factor_i with θ^(−2/D) multiplied in float, cosf and sinf,
// rotation by fused multiply-adds. x: [B, T, H, D], token t at position pos_offset + t.
Var rope_llama_cpp(Graph& g, const Var& x, const RopeConfig& cfg, int64_t pos_offset);
// y + scale · (x Aᵀ) Bᵀ as llama.cpp adds a LoRA adapter (build_lora_mm): two f32 mul_mats,
// ggml_scale, ggml_add. x: [..., in], A: [r, in], B: [out, r], y: [..., out].
Var add_lora_llama_cpp(Graph& g, const Var& y, const Var& x, const Var& A, const Var& B, float scale, int lanes);
// Whether rope_llama_cpp has cfg's scaling: llama.cpp's own (none, linear, GGUF frequency
// factors), not Hugging Face's llama3 formula, which llama.cpp only sees as factors.
bool rope_llama_cpp_supports(const RopeConfig& cfg);

}  // namespace qpeft
