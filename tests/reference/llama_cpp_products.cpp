// Every matrix product of one llama.cpp forward pass, recomputed by qpeft's GgmlWeight from the
// same inputs: llama.cpp (node-llama-cpp's prebuilt libllama/libggml, loaded as it loads them:
// weights repacked where its CPU backend repacks) hands each product's input and output to its
// evaluation callback; qpeft multiplies that input by the file's own bytes of the weight in its
// llama.cpp-compatible 8-bit mode and counts the elements that differ.
//   llama_cpp_products MODEL.gguf LIBDIR [TOKENS]   (scripts/llama-cpp-products.sh builds and runs it)
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
  if (llama_decode(ctx, llama_batch_get_one(tokens.data(), int32_t(tokens.size()))) != 0) return 1;
  std::printf("%d of %d quantized products differ somewhere\n", g_differing, g_products);
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}
