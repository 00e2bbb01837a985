#include "peft/gguf_lora.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/gguf.h"
#include "models/gguf_model.h"
#include "peft/lora.h"

namespace qpeft {

void export_gguf_lora(LlamaModel& model, double lora_alpha, const std::string& out) {
  const ModelConfig& cfg = model.config();
  GgufWriter w;
  w.set("general.architecture", GgufValue::str(cfg.model_type == "qwen2" ? "qwen2" : "llama"));
  w.set("general.type", GgufValue::str("adapter"));
  w.set("adapter.type", GgufValue::str("lora"));
  w.set("adapter.lora.alpha", GgufValue::f32(float(lora_alpha)));
  const bool permute = gguf_permutes_qk(cfg);
  int64_t n = 0;
  model.visit_linears([&](Linear& l) {
    if (!l.adapter) return;
    const auto* lora = dynamic_cast<const LoraAdapter*>(l.adapter.get());
    QP_CHECK(lora, "{}: an (IA)³ adapter has no llama.cpp form (llama.cpp loads LoRA adapters only); export the model "
             "with the adapter merged instead (qpeft export --model M --adapter A --out F.gguf, without --lora-only)",
             l.name);
    const std::string name = gguf_tensor_name(l.name + ".weight");
    QP_CHECK(!name.empty(), "{}: no GGUF name for this layer", l.name);
    const int64_t r = lora->r, in = l.in_features, outf = l.out_features;
    // llama.cpp applies alpha / r; fold what PEFT's scaling adds beyond it into B.
    const double fold = lora->scaling / (lora_alpha / double(r));
    const int64_t heads = l.kind == "q_proj" ? cfg.num_heads : l.kind == "k_proj" ? cfg.num_kv_heads : 0;
    auto bytes_of = [](const float* p, int64_t count) {
      std::vector<uint8_t> b(size_t(count) * 4);
      std::memcpy(b.data(), p, b.size());
      return b;
    };
    Var A = lora->A, B = lora->B;
    w.add_tensor(name + ".lora_a", GgufTensorType::kF32, {in, r}, [A, r, in, bytes_of]() {
      return bytes_of(A.value().f32(), r * in);
    });
    w.add_tensor(name + ".lora_b", GgufTensorType::kF32, {r, outf}, [B, r, outf, fold, heads, permute, &cfg, bytes_of]() {
      std::vector<float> b(B.value().f32(), B.value().f32() + outf * r);
      if (fold != 1.0)
        for (float& v : b) v = float(double(v) * fold);
      if (heads > 0 && permute)
        permute_qk_rows(reinterpret_cast<uint8_t*>(b.data()), heads, cfg.head_dim, size_t(r) * sizeof(float), false);
      return bytes_of(b.data(), outf * r);
    });
    ++n;
  });
  QP_CHECK(n > 0, "the model has no LoRA adapter to export (pass --adapter DIR)");
  w.write(out);
}

}  // namespace qpeft
