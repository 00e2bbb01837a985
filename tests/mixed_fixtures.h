// Adapters for the mixed-adapter tests, saved in PEFT's layout next to a golden-llama model
// directory: a LoRA on every linear layer, an (IA)³ with PEFT's Llama defaults (k/v outputs,
// down_proj's input) and a LoRA on q/v only (rsLoRA), all with values far from the identity.
#pragma once
#include <string>

#include "core/rng.h"
#include "models/checkpoint.h"
#include "peft/adapter_io.h"
#include "test_util.h"

namespace mixed_fixtures {

struct AdapterDirs {
  std::string lora, ia3, qv;
};

// dir/lora, dir/ia3, dir/qv for the model in model_dir. base_quant_of_qv, when not empty, is
// recorded as the base quantization of the qv adapter (as QLoRA training would).
inline AdapterDirs make_adapters(const std::string& model_dir, const std::string& dir,
                                 const std::string& base_quant_of_qv = "") {
  using namespace qpeft;
  AdapterDirs d{dir + "/lora", dir + "/ia3", dir + "/qv"};
  auto randomize = [](LlamaModel& m, uint64_t seed, bool around_one) {
    Rng rng(seed);
    for (auto& [key, p] : adapter_params(m)) {
      float* v = p.value().f32();
      for (int64_t i = 0; i < p.value().numel(); ++i)
        v[i] = around_one ? 1.0f + 0.4f * float(rng.normal()) : v[i] + 0.3f * float(rng.normal());
    }
  };
  {
    auto m = load_model(model_dir);
    LoraConfig c;
    c.r = 4;
    c.alpha = 8;
    c.target_modules = {"all-linear"};
    inject_lora(*m, c, 7);
    randomize(*m, 11, false);
    save_adapter(*m, c, d.lora);
  }
  {
    auto m = load_model(model_dir);
    Ia3Config c;
    inject_ia3(*m, c);
    randomize(*m, 12, true);
    save_adapter(*m, c, d.ia3);
  }
  {
    auto m = load_model(model_dir);
    LoraConfig c;
    c.r = 2;
    c.alpha = 4;
    c.use_rslora = true;
    c.target_modules = {"q_proj", "v_proj"};
    if (!base_quant_of_qv.empty()) c.base_quantization.format = base_quant_of_qv;
    inject_lora(*m, c, 8);
    randomize(*m, 13, false);
    save_adapter(*m, c, d.qv);
  }
  return d;
}

// The model with one adapter attached the ordinary way (none for an empty dir).
inline std::unique_ptr<qpeft::LlamaModel> single(const std::string& model_dir, const std::string& adapter_dir) {
  auto m = qpeft::load_model(model_dir);
  if (!adapter_dir.empty()) qpeft::load_adapter(*m, adapter_dir);
  return m;
}

}  // namespace mixed_fixtures
