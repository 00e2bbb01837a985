// (IA)³ (SPEC §5) with PEFT's semantics: vectors scaling the outputs of k_proj/v_proj and the
// input of down_proj, the identity at init, their gradients, merging, and PEFT's files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "grad_check.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "peft/adapter_io.h"
#include "peft/ia3.h"
#include "quant/quantized_weight.h"
#include "test_util.h"
#include "tensor_compare.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

// Moves every (IA)³ vector away from 1 (seeded), so that tests see a real adapter.
void randomize_vectors(LlamaModel& m, uint64_t seed, float spread = 0.3f) {
  Rng rng(seed);
  for (auto& [key, p] : adapter_params(m))
    for (int64_t i = 0; i < p.value().numel(); ++i) p.value().f32()[i] = 1.0f + spread * float(rng.normal());
}

int count_quantized(LlamaModel& m) {
  int n = 0;
  m.visit_linears([&](Linear& l) { n += dynamic_cast<const QuantizedWeight*>(l.weight.get()) != nullptr; });
  return n;
}

Ia3Config all_linear_config() {
  Ia3Config c;
  c.target_modules = {"all-linear"};
  c.feedforward_modules = {"down_proj", "o_proj"};
  return c;
}

// The merged model as `qpeft merge` writes it: adapted weights and biases folded, f32.
void save_merged(LlamaModel& m, const std::string& dir) {
  SaveOptions opt;
  opt.dtype = DType::F32;
  opt.matrix = [](const WeightSlot& s) -> Tensor {
    if (s.linear) return merged_weight(*s.linear);
    return decode_to_f32(**s.frozen);
  };
  opt.vector = [](const WeightSlot& s) -> Tensor { return s.linear ? merged_bias(*s.linear) : s.vector->value(); };
  save_model(m, dir, opt);
}

}  // namespace

TEST(Ia3, FreshAdapterGivesExactlyTheBaseLogits) {
  for (const char* v : {"llama", "qwen2"}) {
    for (const Ia3Config& cfg : {Ia3Config{}, all_linear_config()}) {
      auto model = load_model(golden_dir(v));
      const auto ids = sample_ids(2 * 9, model->config().vocab_size);
      Tensor base = model->logits(ids, 2, 9);
      const int64_t n = inject_ia3(*model, cfg);
      EXPECT_EQ(n, int64_t(cfg.resolved_targets().size()) * model->config().num_layers);
      Tensor with = model->logits(ids, 2, 9);
      EXPECT_TRUE(same_bits(base, with)) << v;
    }
  }
}

TEST(Ia3, DefaultsAreKeysValuesAndTheMlpInputWithTheirShapes) {
  auto model = load_model(golden_dir("llama"));
  const ModelConfig& mc = model->config();
  inject_ia3(*model, Ia3Config{});
  int64_t trainable = 0;
  for (auto& [key, p] : adapter_params(*model)) {
    trainable += p.value().numel();
    for (int64_t i = 0; i < p.value().numel(); ++i) ASSERT_EQ(p.value().f32()[i], 1.0f) << key;
  }
  // Exactly the vectors: per layer k_proj's and v_proj's outputs and down_proj's input.
  const int64_t kv = mc.num_kv_heads * mc.head_dim;
  EXPECT_EQ(trainable, mc.num_layers * (kv + kv + mc.intermediate_size));
  auto params = adapter_params(*model);
  ASSERT_EQ(params.size(), size_t(3 * mc.num_layers));
  EXPECT_EQ(params[0].first, "base_model.model.model.layers.0.self_attn.k_proj.ia3_l");
  EXPECT_EQ(params[0].second.shape(), (Shape{kv, 1}));
  EXPECT_EQ(params[1].first, "base_model.model.model.layers.0.self_attn.v_proj.ia3_l");
  EXPECT_EQ(params[2].first, "base_model.model.model.layers.0.mlp.down_proj.ia3_l");
  EXPECT_EQ(params[2].second.shape(), (Shape{1, mc.intermediate_size}));
  model->visit_linears([&](Linear& l) {
    auto* ad = dynamic_cast<Ia3Adapter*>(l.adapter.get());
    EXPECT_EQ(ad != nullptr, l.kind == "k_proj" || l.kind == "v_proj" || l.kind == "down_proj") << l.name;
    if (ad) {
      EXPECT_EQ(ad->feedforward, l.kind == "down_proj") << l.name;
    }
  });
}

TEST(Ia3, FeedforwardModulesMustBeASubsetOfTheTargets) {
  Ia3Config c;
  c.target_modules = {"k_proj", "v_proj"};
  c.feedforward_modules = {"down_proj"};
  EXPECT_NE(error_of([&] { c.resolved_feedforward(); }).find("subset"), std::string::npos);
  auto model = load_model(golden_dir("llama"));
  EXPECT_THROW(inject_ia3(*model, c), Error);
  c.target_modules = {"lm_head"};
  EXPECT_THROW(c.resolved_targets(), Error);
  // PEFT's rule for a list: the module name ends with an entry.
  Ia3Config d;
  EXPECT_TRUE(d.is_feedforward("model.layers.3.mlp.down_proj"));
  EXPECT_FALSE(d.is_feedforward("model.layers.3.mlp.up_proj"));
  d.feedforward_regex = ".*\\.mlp\\..*";  // a string: re.fullmatch
  EXPECT_TRUE(d.is_feedforward("model.layers.3.mlp.up_proj"));
  EXPECT_FALSE(d.is_feedforward("model.layers.3.self_attn.k_proj"));
}

// Finite differences of one adapted layer, y = (x W0ᵀ + b) ⊙ l or (x ⊙ l) W0ᵀ + b, with respect to
// x and l, on a dense and on an NF4 (double-quantized) weight.
TEST(Ia3, GradientsOfTheScalingTermsOnDenseAndNf4Bases) {
  const int64_t in = 128, out = 64;
  Tensor w = random_tensor({out, in}, 51, 0.1f);
  for (bool quantized : {false, true}) {
    for (bool ff : {false, true}) {
      Linear l;
      l.name = "model.layers.0.self_attn.k_proj";
      l.kind = "k_proj";
      l.in_features = in;
      l.out_features = out;
      if (quantized)
        l.weight = std::make_shared<QuantizedWeight>(QuantizedWeight::quantize(w, QuantFormat::NF4, 64, true, "w"));
      else
        l.weight = std::make_shared<DenseWeight>(w, "w");
      l.bias = Var(random_tensor({out}, 52, 0.5f), false, "b");
      auto ad = std::make_shared<Ia3Adapter>(l, ff);
      Rng rng(53);
      for (int64_t i = 0; i < ad->l.value().numel(); ++i) ad->l.value().f32()[i] = 1.0f + 0.5f * float(rng.normal());
      l.adapter = ad;
      check_gradients(std::string(quantized ? "nf4_" : "dense_") + (ff ? "input" : "output"),
                      {param({2, 3, in}, 54), ad->l},
                      [&](Graph& g, const std::vector<Var>& v) { return l.forward(g, v[0]); });
    }
  }
}

// The same through a whole model: every vector of the default targets, with respect to the
// final hidden states (the loss of the golden model's tiny head moves less than f32 resolves),
// on the dense and on the NF4-quantized base.
TEST(Ia3, ModelGradientsOfAllVectorsMatchFiniteDifferences) {
  for (bool nf4 : {false, true}) {
    LoadOptions load;
    if (nf4) load.quantize = {"nf4", 64, true};
    auto model = load_model(golden_dir("llama"), load);
    EXPECT_EQ(count_quantized(*model) > 0, nf4);
    inject_ia3(*model, Ia3Config{});
    randomize_vectors(*model, 61);
    const int64_t B = 2, T = 7;
    const auto ids = sample_ids(B * T, model->config().vocab_size);
    std::vector<Var> vecs;
    for (auto& [k, p] : adapter_params(*model)) vecs.push_back(p);
    GradCheckOptions o;
    o.samples = 16;
    check_gradients(nf4 ? "model_nf4" : "model_dense", vecs,
                    [&](Graph& g, const std::vector<Var>&) { return model->hidden_states(g, ids, B, T); }, o);
  }
}

TEST(Ia3, MergedCheckpointGivesTheSameLogits) {
  TempDir tmp("ia3_merge");
  // qwen2 has k/v biases: output scaling multiplies them too.
  for (const char* v : {"llama", "qwen2"}) {
    auto model = load_model(golden_dir(v));
    inject_ia3(*model, all_linear_config());
    randomize_vectors(*model, 7);
    const auto ids = sample_ids(2 * 11, model->config().vocab_size);
    Tensor unmerged = model->logits(ids, 2, 11);
    save_merged(*model, tmp / v);
    auto merged = load_model(tmp / v);
    EXPECT_LT(max_abs_diff(merged->logits(ids, 2, 11), unmerged), 2e-5) << v;
    auto base = load_model(golden_dir(v));
    EXPECT_GT(max_abs_diff(base->logits(ids, 2, 11), unmerged), 1e-3) << v;
  }
  // Into an NF4 base: the dequantized weights scaled, written dense.
  LoadOptions nf4;
  nf4.quantize = {"nf4", 64, true};
  auto q = load_model(golden_dir("llama"), nf4);
  inject_ia3(*q, Ia3Config{});
  randomize_vectors(*q, 8);
  const auto ids = sample_ids(2 * 11, q->config().vocab_size);
  Tensor unmerged = q->logits(ids, 2, 11);
  save_merged(*q, tmp / "nf4");
  auto merged = load_model(tmp / "nf4");
  EXPECT_EQ(count_quantized(*merged), 0);
  EXPECT_LT(max_abs_diff(merged->logits(ids, 2, 11), unmerged), 2e-5);
}

TEST(Ia3, MergeScalesRowsForOutputsAndColumnsForInputs) {
  Linear l;
  l.in_features = 3;
  l.out_features = 2;
  l.name = "m";
  for (bool ff : {false, true}) {
    Ia3Adapter ad(l, ff);
    float* v = ad.l.value().f32();
    for (int64_t i = 0; i < ad.l.value().numel(); ++i) v[i] = float(i + 2);
    Tensor w = Tensor::full({2, 3}, 1.0f), b = Tensor::full({2}, 1.0f);
    ad.merge_into(w);
    ad.merge_bias_into(b);
    for (int64_t o = 0; o < 2; ++o)
      for (int64_t i = 0; i < 3; ++i) EXPECT_EQ(w.f32()[o * 3 + i], float(ff ? i + 2 : o + 2));
    EXPECT_EQ(b.f32()[1], ff ? 1.0f : 3.0f);
  }
}

TEST(Ia3, SaveLoadRoundTripIsBitExactInPeftLayout) {
  TempDir tmp("ia3_roundtrip");
  for (bool nf4 : {false, true}) {
    LoadOptions load;
    if (nf4) load.quantize = {"nf4", 64, true};
    auto model = load_model(golden_dir("llama"), load);
    Ia3Config cfg;
    cfg.base_model_name_or_path = "golden/llama";
    cfg.base_quantization = load.quantize;
    inject_ia3(*model, cfg);
    randomize_vectors(*model, 11);
    const std::string dir = tmp / (nf4 ? "q" : "dense");
    save_adapter(*model, cfg, dir);

    auto st = SafetensorsFile::open(dir + "/adapter_model.safetensors");
    EXPECT_EQ(st->find("base_model.model.model.layers.1.self_attn.v_proj.ia3_l")->shape, (Shape{32, 1}));
    EXPECT_EQ(st->find("base_model.model.model.layers.1.mlp.down_proj.ia3_l")->shape, (Shape{1, 160}));
    EXPECT_EQ(st->names().size(), 6u);
    auto j = nlohmann::json::parse(read_file(dir + "/adapter_config.json"));
    EXPECT_EQ(j["peft_type"], "IA3");
    EXPECT_EQ(j["task_type"], "CAUSAL_LM");
    EXPECT_EQ(j["target_modules"], nlohmann::json({"k_proj", "v_proj", "down_proj"}));
    EXPECT_EQ(j["feedforward_modules"], nlohmann::json({"down_proj"}));
    EXPECT_EQ(j["init_ia3_weights"], true);
    EXPECT_EQ(j["fan_in_fan_out"], false);
    EXPECT_EQ(j["base_model_name_or_path"], "golden/llama");
    EXPECT_TRUE(j["modules_to_save"].is_null());
    EXPECT_TRUE(j["revision"].is_null());
    EXPECT_EQ(j["inference_mode"], true);

    // load_model_with_adapter tells the method from peft_type and quantizes the base as it trained.
    std::string note;
    auto reloaded = load_model_with_adapter(golden_dir("llama"), dir, "auto", &note);
    EXPECT_EQ(count_quantized(*reloaded) > 0, nf4) << note;
    auto a = adapter_params(*model), b = adapter_params(*reloaded);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].first, b[i].first);
      EXPECT_TRUE(same_bits(a[i].second.value(), b[i].second.value())) << a[i].first;
    }
    const auto ids = sample_ids(2 * 9, 96);
    EXPECT_TRUE(same_bits(model->logits(ids, 2, 9), reloaded->logits(ids, 2, 9)));
    AdapterConfig back = load_adapter(*load_model(golden_dir("llama"), load), dir);
    ASSERT_EQ(adapter_kind(back), AdapterMethodKind::kIa3);
    EXPECT_EQ(std::get<Ia3Config>(back).feedforward_modules, std::vector<std::string>{"down_proj"});
    EXPECT_EQ(std::get<Ia3Config>(back).base_quantization.format, nf4 ? "nf4" : "");
    // A LoRA-only reader refuses it by name.
    EXPECT_NE(error_of([&] { read_lora_config(dir); }).find("not LORA"), std::string::npos);
  }
}

// An adapter directory exactly as PEFT's save_pretrained writes it for
// get_peft_model(llama, IA3Config(task_type="CAUSAL_LM")): sorted keys, PeftConfig's and
// IA3Config's fields (auto_mapping, exclude_modules and a null base_model_name_or_path
// included), target_modules in set order, and the vectors under keys without the adapter name.
TEST(Ia3, LoadsAnAdapterLaidOutAsPeftWritesIt) {
  TempDir tmp("ia3_peft");
  const std::string config = R"({
  "auto_mapping": null,
  "base_model_name_or_path": null,
  "exclude_modules": null,
  "fan_in_fan_out": false,
  "feedforward_modules": [
    "down_proj"
  ],
  "inference_mode": true,
  "init_ia3_weights": true,
  "modules_to_save": null,
  "peft_type": "IA3",
  "revision": null,
  "target_modules": [
    "v_proj",
    "down_proj",
    "k_proj"
  ],
  "task_type": "CAUSAL_LM"
})";
  auto expected = load_model(golden_dir("llama"));
  inject_ia3(*expected, Ia3Config{});
  randomize_vectors(*expected, 21);
  // bf16-exact values, so that the bf16 file below holds the same numbers.
  for (auto& [k, p] : adapter_params(*expected)) p.mutable_value() = p.value().to(DType::BF16).to(DType::F32);
  const auto ids = sample_ids(2 * 9, 96);
  const Tensor want = expected->logits(ids, 2, 9);
  struct Variant {
    const char* name;
    const char* key_suffix;  // PEFT saves "ia3_l"; its in-memory names carry ".default"
    DType dtype;
  };
  for (const Variant& var : {Variant{"plain", "", DType::F32}, Variant{"default", ".default", DType::BF16}}) {
    SCOPED_TRACE(var.name);
    const std::string dir = tmp / var.name;
    std::filesystem::create_directories(dir);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (auto& [k, p] : adapter_params(*expected)) tensors.emplace_back(k + var.key_suffix, p.value().to(var.dtype));
    save_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
    write_file(dir + "/adapter_config.json", config);

    auto model = load_model_with_adapter(golden_dir("llama"), dir, "auto", nullptr);
    EXPECT_EQ(count_quantized(*model), 0);
    EXPECT_TRUE(same_bits(model->logits(ids, 2, 9), want));
    AdapterConfig c = read_adapter_config(dir);
    ASSERT_EQ(adapter_kind(c), AdapterMethodKind::kIa3);
    EXPECT_TRUE(std::get<Ia3Config>(c).base_model_name_or_path.empty());
  }

  // PEFT's string forms (regexes, re.fullmatch) and null module lists (PEFT's per-model table).
  std::string regex = config;
  regex.replace(regex.find("\"feedforward_modules\": [\n    \"down_proj\"\n  ]"), 44,
                "\"feedforward_modules\": \".*mlp\\\\.down_proj\"");
  regex.replace(regex.find("\"target_modules\": ["), std::string::npos,
                "\"target_modules\": \".*(k_proj|v_proj|down_proj)\",\n  \"task_type\": \"CAUSAL_LM\"\n}");
  std::string nulls = config;
  nulls.replace(nulls.find("\"feedforward_modules\": [\n    \"down_proj\"\n  ]"), 44, "\"feedforward_modules\": null");
  for (const std::string& text : {regex, nulls}) {
    write_file(tmp / "plain/adapter_config.json", text);
    auto model = load_model_with_adapter(golden_dir("llama"), tmp / "plain", "none", nullptr);
    EXPECT_TRUE(same_bits(model->logits(ids, 2, 9), want)) << text;
  }

  // A config that disagrees with the tensors' layout is an error naming the module.
  std::string wrong = config;
  wrong.replace(wrong.find("\"down_proj\"\n  ],\n  \"inference_mode\""), 11, "\"k_proj\"");
  write_file(tmp / "plain/adapter_config.json", wrong);
  const std::string e = error_of([&] { load_model_with_adapter(golden_dir("llama"), tmp / "plain", "none", nullptr); });
  EXPECT_NE(e.find("ia3_l"), std::string::npos) << e;
  EXPECT_NE(e.find("feedforward_modules"), std::string::npos) << e;
}
