#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "peft/adapter_io.h"
#include "peft/lora.h"
#include "quant/quantized_weight.h"
#include "test_util.h"
#include "tensor_compare.h"

using namespace qpeft;
using namespace qpeft::testing;

namespace {

}  // namespace

TEST(Lora, FreshAdapterGivesExactlyTheBaseLogits) {
  for (const char* v : {"llama", "qwen2"}) {
    auto model = load_model(golden_dir(v));
    const auto ids = sample_ids(2 * 9, model->config().vocab_size);
    Tensor base = model->logits(ids, 2, 9);
    LoraConfig cfg;
    cfg.target_modules = {"all-linear"};
    cfg.r = 4;
    EXPECT_EQ(inject_lora(*model, cfg, 1), 7 * model->config().num_layers);
    Tensor with = model->logits(ids, 2, 9);
    EXPECT_EQ(0, std::memcmp(base.raw(), with.raw(), base.nbytes())) << v;
  }
}

TEST(Lora, ScalingRankAndAlphaPatterns) {
  LoraConfig c;
  c.r = 8;
  c.alpha = 16;
  c.rank_pattern = {{"q_proj", 4}, {"layers.1.mlp.down_proj", 2}};
  c.alpha_pattern = {{"v_proj", 4}};
  EXPECT_EQ(c.rank_for("model.layers.0.self_attn.q_proj"), 4);
  EXPECT_EQ(c.rank_for("model.layers.1.mlp.down_proj"), 2);
  EXPECT_EQ(c.rank_for("model.layers.0.mlp.down_proj"), 8);
  EXPECT_DOUBLE_EQ(c.scaling_for("model.layers.0.self_attn.q_proj"), 16.0 / 4);
  EXPECT_DOUBLE_EQ(c.scaling_for("model.layers.0.self_attn.v_proj"), 4.0 / 8);
  c.use_rslora = true;
  EXPECT_DOUBLE_EQ(c.scaling_for("model.layers.0.self_attn.k_proj"), 16.0 / std::sqrt(8.0));
  c.target_modules = {"q_proj", "lm_head"};
  EXPECT_THROW(c.resolved_targets(), Error);
}

TEST(Lora, KaimingUniformInitBoundsAndZeroB) {
  auto model = load_model(golden_dir("llama"));
  LoraConfig cfg;
  cfg.target_modules = {"q_proj", "v_proj"};
  inject_lora(*model, cfg, 3);
  auto params = adapter_params(*model);
  ASSERT_EQ(params.size(), size_t(2 * 2 * model->config().num_layers));
  for (auto& [key, p] : params) {
    const float* x = p.value().f32();
    if (key.find("lora_B") != std::string::npos) {
      for (int64_t i = 0; i < p.value().numel(); ++i) ASSERT_EQ(x[i], 0.0f) << key;
    } else {
      const double bound = 1.0 / std::sqrt(double(p.value().dim(1)));
      double maxabs = 0;
      for (int64_t i = 0; i < p.value().numel(); ++i) maxabs = std::max(maxabs, double(std::fabs(x[i])));
      EXPECT_LE(maxabs, bound) << key;
      EXPECT_GT(maxabs, 0.8 * bound) << key;  // really spread over the range
    }
  }
}

TEST(Lora, SaveLoadRoundTripAndPeftLayout) {
  TempDir tmp("lora_roundtrip");
  auto model = load_model(golden_dir("llama"));
  LoraConfig cfg = load_lora_adapter(*model, golden_dir("llama") + "/adapter_init");
  save_lora_adapter(*model, cfg, tmp / "adapter");
  auto st = SafetensorsFile::open(tmp / "adapter/adapter_model.safetensors");
  EXPECT_TRUE(st->has("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_EQ(st->find("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")->shape, (Shape{64, 4}));
  const std::string config = read_file(tmp / "adapter/adapter_config.json");
  for (const char* key : {"\"peft_type\": \"LORA\"", "\"task_type\": \"CAUSAL_LM\"", "\"r\": 4", "\"lora_alpha\"",
                          "\"bias\": \"none\"", "\"target_modules\""})
    EXPECT_NE(config.find(key), std::string::npos) << key;
  // use_rslora is written only when true (PEFT versions before it refuse unknown fields).
  EXPECT_EQ(config.find("use_rslora"), std::string::npos);

  auto reloaded = load_model(golden_dir("llama"));
  load_lora_adapter(*reloaded, tmp / "adapter");
  auto a = adapter_params(*model), b = adapter_params(*reloaded);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(0, std::memcmp(a[i].second.value().raw(), b[i].second.value().raw(), a[i].second.value().nbytes()));
  }
}

TEST(Lora, MergedCheckpointGivesTheSameLogits) {
  TempDir tmp("lora_merge");
  for (const char* v : {"llama", "qwen2"}) {
    auto model = load_model(golden_dir(v));
    load_lora_adapter(*model, golden_dir(v) + "/adapter_init");
    const auto ids = sample_ids(2 * 11, model->config().vocab_size);
    Tensor unmerged = model->logits(ids, 2, 11);
    SaveOptions opt;
    opt.dtype = DType::F32;
    opt.matrix = [](const WeightSlot& s) -> Tensor {
      if (s.linear) return merged_weight(*s.linear);
      return decode_to_f32(**s.frozen);
    };
    save_model(*model, tmp / v, opt);
    auto merged = load_model(tmp / v);
    EXPECT_LT(max_abs_diff(merged->logits(ids, 2, 11), unmerged), 2e-5) << v;
    // And the merge really changed the weights: the plain base differs.
    auto base = load_model(golden_dir(v));
    EXPECT_GT(max_abs_diff(base->logits(ids, 2, 11), unmerged), 1e-3) << v;
  }
}

TEST(Lora, LoadRejectsMismatchedAdapters) {
  TempDir tmp("lora_bad");
  auto model = load_model(golden_dir("qwen2"));
  // llama's adapter has other shapes than qwen2's layers.
  try {
    load_lora_adapter(*model, golden_dir("llama") + "/adapter_init");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not fit"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_lora_adapter(*model, tmp.path()), Error);  // no adapter_config.json
  write_file(tmp / "adapter_config.json", "{\"peft_type\": \"IA3\"}");
  EXPECT_THROW(read_lora_config(tmp.path()), Error);
}

TEST(Lora, AdapterRecordsTheBaseQuantizationItTrainedOn) {
  TempDir tmp("lora_base_quant");
  const std::string base = golden_dir("llama");
  LoadOptions nf4;
  nf4.quantize = {"nf4", 64, true};
  auto trained = load_model(base, nf4);
  LoraConfig cfg = load_lora_adapter(*trained, base + "/adapter_init");
  EXPECT_FALSE(cfg.base_quantization.enabled()) << "PEFT's files say nothing about the base";
  EXPECT_FALSE(adapter_base_quantization(base + "/adapter_init").enabled());
  cfg.base_quantization = nf4.quantize;
  save_lora_adapter(*trained, cfg, tmp / "adapter");

  const QuantizeOptions q = adapter_base_quantization(tmp / "adapter");
  EXPECT_EQ(q.format, "nf4");
  EXPECT_EQ(q.block_size, 64);
  EXPECT_TRUE(q.double_quant);

  auto count_quantized = [](LlamaModel& m) {
    int n = 0;
    m.visit_linears([&](Linear& l) { n += dynamic_cast<const QuantizedWeight*>(l.weight.get()) != nullptr; });
    return n;
  };
  const auto ids = sample_ids(2 * 9, trained->config().vocab_size);
  std::string note;
  auto same = load_model_with_adapter(base, tmp / "adapter", "auto", &note);
  EXPECT_GT(count_quantized(*same), 0);
  EXPECT_NE(note.find("nf4"), std::string::npos) << note;
  Tensor a = trained->logits(ids, 2, 9), b = same->logits(ids, 2, 9);
  EXPECT_EQ(0, std::memcmp(a.raw(), b.raw(), a.nbytes())) << "auto must load the base exactly as it trained";

  note.clear();
  auto dense = load_model_with_adapter(base, tmp / "adapter", "none", &note);
  EXPECT_EQ(count_quantized(*dense), 0);
  EXPECT_TRUE(note.empty()) << note;
  EXPECT_GT(max_abs_diff(dense->logits(ids, 2, 9), a), 1e-4);

  // A corrupt record is an error that names the key, not a silent fallback.
  auto st = SafetensorsFile::open(tmp / "adapter/adapter_model.safetensors");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const std::string& n : st->names()) tensors.emplace_back(n, st->get(n).to(DType::F32));
  std::filesystem::create_directories(tmp / "bad");
  save_safetensors(tmp / "bad/adapter_model.safetensors", tensors,
                   {{"qpeft.base_quantization", "nf4"}, {"qpeft.base_quantization_block_size", "sixty-four"}});
  write_file(tmp / "bad/adapter_config.json", read_file(tmp / "adapter/adapter_config.json"));
  try {
    adapter_base_quantization(tmp / "bad");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qpeft.base_quantization_block_size"), std::string::npos) << e.what();
  }
}
