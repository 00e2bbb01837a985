// Every matrix product of one llama.cpp forward pass, recomputed by qpeft's GgmlWeight from the
// same inputs: llama.cpp (node-llama-cpp's prebuilt libllama/libggml, loaded as it loads them:
// weights repacked where its CPU backend repacks) hands each product's input and output to its
// evaluation callback; qpeft multiplies that input by the file's own bytes of the weight in its
// llama.cpp-compatible 8-bit mode and counts the elements that differ. Then the whole forward
// pass: qpeft's logits of every token (its llama.cpp order, ops/llama_cpp_order.h) against
// llama.cpp's, bit for bit.
//   llama_cpp_products MODEL.gguf LIBDIR [TOKENS] [CPU_VARIANT]
// CPU_VARIANT (haswell, zen4, ...) loads that one of llama.cpp's CPU builds instead of the best
// for this CPU; qpeft then follows its lanes (QPEFT_LLAMA_CPP_LANES, set by the script).
// scripts/llama-cpp-products.sh builds and runs it.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"
#include "io/gguf.h"
#include "llama.h"
#include "models/checkpoint.h"
#include "models/kv_cache.h"
#include "ops/linear.h"
#include "ops/llama_cpp_order.h"
#include "quant/ggml_weight.h"

namespace {

std::shared_ptr<qpeft::GgufFile> g_file;
int g_products = 0, g_differing = 0;

bool on_tensor(ggml_tensor* t, bool ask, void*) {
  if (t->op != GGML_OP_MUL_MAT) return false;
  const ggml_tensor* a = t->src[0];
  const ggml_tensor* b = t->src[1];
  const qpeft::GgufFile::Tensor* w = g_file->find_tensor(a->name);
  const char* type = w ? qpeft::ggml_type_name(w->type) : nullptr;
  if (ask) return w && type && w->type != 0 && w->type != 1 && w->type != 30;  // quantized weights only
  if (b->type != GGML_TYPE_F32 || !ggml_is_contiguous(b) || b->ne[2] != 1 || b->ne[3] != 1) return true;
  const int64_t K = a->ne[0], N = a->ne[1], M = b->ne[1];
  std::vector<float> x(size_t(K * M)), theirs(size_t(N * M)), ours(size_t(N * M));
  ggml_backend_tensor_get(const_cast<ggml_tensor*>(b), x.data(), 0, x.size() * sizeof(float));
  ggml_backend_tensor_get(t, theirs.data(), 0, theirs.size() * sizeof(float));
  const auto weight = qpeft::GgmlWeight::from_bytes(qpeft::GgmlType(w->type), N, K, {w->data, size_t(w->nbytes)},
                                                    g_file->mapping(), a->name);
  weight.own_forward(x.data(), M, ours.data());
  int64_t differ = 0;
  double worst = 0;
  for (size_t i = 0; i < ours.size(); ++i)
    if (ours[i] != theirs[i]) {
      ++differ;
      worst = std::max(worst, double(std::fabs(ours[i] - theirs[i])) / (std::fabs(theirs[i]) + 1e-30));
    }
  ++g_products;
  g_differing += differ > 0;
  std::printf("%-26s %-6s [%ld x %ld] x %ld rows: %ld of %ld elements differ (largest relative %.2g)\n", a->name, type,
              long(N), long(K), long(M), long(differ), long(ours.size()), worst);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.gguf LIBDIR [TOKENS]\n", argv[0]);
    return 2;
  }
  const int n_tokens = argc > 3 ? std::atoi(argv[3]) : 20;
  qpeft::set_ggml_activations(qpeft::GgmlActivations::Q8);
  g_file = qpeft::GgufFile::open(argv[1]);
  llama_log_set([](ggml_log_level, const char*, void*) {}, nullptr);
  llama_backend_init();
  if (argc > 4)
    ggml_backend_load((std::string(argv[2]) + "/libggml-cpu-" + argv[4] + ".so").c_str());
  else
    ggml_backend_load_all_from_path(argv[2]);
  llama_model* model = llama_model_load_from_file(argv[1], llama_model_default_params());
  if (!model) return 1;
  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 256;
  cp.n_threads = cp.n_threads_batch = 1;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.type_k = cp.type_v = GGML_TYPE_F32;
  cp.cb_eval = on_tensor;
  llama_context* ctx = llama_init_from_model(model, cp);
  const int32_t vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
  std::vector<llama_token> tokens;
  for (int i = 0; i < n_tokens; ++i) tokens.push_back(llama_token((i * 977 + 5) % (vocab - 3) + 3));
  llama_batch batch = llama_batch_init(n_tokens, 0, 1);
  for (int t = 0; t < n_tokens; ++t) {
    batch.token[t] = tokens[t];
    batch.pos[t] = t;
    batch.n_seq_id[t] = 1;
    batch.seq_id[t][0] = 0;
    batch.logits[t] = 1;  // every row through the last layer and the head, as an evaluation
  }
  batch.n_tokens = n_tokens;
  if (llama_decode(ctx, batch) != 0) return 1;
  std::printf("%d of %d quantized products differ somewhere\n", g_differing, g_products);
  const auto ours_model = qpeft::load_model(argv[1]);
  const qpeft::Tensor ours = ours_model->logits(std::vector<int32_t>(tokens.begin(), tokens.end()), 1, n_tokens);
  const int64_t n_vocab = ours_model->config().vocab_size;
  int rows_differing = 0;
  for (int t = 0; t < n_tokens; ++t) {
    const float* theirs = llama_get_logits_ith(ctx, t);
    rows_differing += std::memcmp(ours.f32() + t * n_vocab, theirs, size_t(n_vocab) * sizeof(float)) != 0;
  }
  std::printf("logits: %d of %d tokens differ from llama.cpp's somewhere (qpeft following %d-lane llama.cpp)\n",
              rows_differing, n_tokens, qpeft::llama_cpp_lanes());
  // Then one token at a time after that prompt, as generation runs (llama.cpp's one-row
  // products take other paths than its batches).
  const int steps = 8;
  qpeft::KVCache cache(ours_model->config(), 1, n_tokens + steps);
  {
    qpeft::Graph g(false);
    ours_model->hidden_states(g, std::vector<int32_t>(tokens.begin(), tokens.end()), 1, n_tokens, &cache);
  }
  int steps_differing = 0;
  for (int k = 0; k < steps; ++k) {
    llama_token next = llama_token((k * 331 + 11) % (vocab - 3) + 3);
    llama_batch one = llama_batch_init(1, 0, 1);
    one.token[0] = next, one.pos[0] = n_tokens + k, one.n_seq_id[0] = 1, one.seq_id[0][0] = 0, one.logits[0] = 1;
    one.n_tokens = 1;
    if (llama_decode(ctx, one) != 0) return 1;
    qpeft::Graph g(false);
    const qpeft::Var h = ours_model->hidden_states(g, {int32_t(next)}, 1, 1, &cache);
    std::vector<float> row(static_cast<size_t>(n_vocab));
    qpeft::linear_forward(h.value().f32(), 1, *ours_model->lm_head(), row.data());
    steps_differing += std::memcmp(row.data(), llama_get_logits_ith(ctx, 0), row.size() * sizeof(float)) != 0;
    llama_batch_free(one);
  }
  std::printf("decoding: %d of %d one-token steps differ from llama.cpp's logits somewhere\n", steps_differing, steps);
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}
