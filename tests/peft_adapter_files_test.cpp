// PEFT interoperability of the adapter files every method writes and reads (adapter_io.h):
// only fields PEFT's config classes know, every field PEFT may write accepted, and rank/alpha
// patterns whose meaning does not depend on the PEFT version.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/checkpoint.h"
#include "peft/adapter_io.h"
#include "test_util.h"
#include "tensor_compare.h"

using namespace qpeft;
using namespace qpeft::testing;
using OrderedJson = nlohmann::ordered_json;

namespace {

// The dataclass fields of PEFT's configs, from huggingface/peft's sources: src/peft/config.py
// (PeftConfigMixin: task_type, peft_type, auto_mapping; PeftConfig: base_model_name_or_path,
// revision, inference_mode; commit 0397041d), src/peft/tuners/lora/config.py and
// src/peft/tuners/ia3/config.py (commit 00a4d080, the late-2024 0.13/0.14 line; runtime_config
// is never saved). PEFT before 0.14 builds a config with LoraConfig(**json) / IA3Config(**json)
// and fails on any other key.
const std::set<std::string> kPeftConfigFields = {"task_type", "peft_type", "auto_mapping", "base_model_name_or_path",
                                                 "revision", "inference_mode"};
const std::set<std::string> kLoraConfigFields = {
    "r",           "target_modules",   "exclude_modules",     "lora_alpha",     "lora_dropout",
    "fan_in_fan_out", "bias",          "use_rslora",          "modules_to_save", "init_lora_weights",
    "layers_to_transform", "layers_pattern", "rank_pattern",  "alpha_pattern",  "megatron_config",
    "megatron_core", "loftq_config",   "use_dora",            "layer_replication"};
const std::set<std::string> kIa3ConfigFields = {"target_modules", "exclude_modules", "feedforward_modules",
                                                "fan_in_fan_out", "modules_to_save", "init_ia3_weights"};

void expect_only_fields(const nlohmann::json& j, const std::set<std::string>& method_fields, const char* what) {
  for (auto it = j.begin(); it != j.end(); ++it)
    EXPECT_TRUE(kPeftConfigFields.count(it.key()) || method_fields.count(it.key()))
        << what << " writes '" << it.key() << "', which PEFT's config class does not have";
}

// How PEFT resolves a module's rank and alpha. `combined`: PEFT up to about 0.11 (one key, the
// first match among rank_pattern's then alpha_pattern's keys, looked up in both, with
// re.match(rf".*\.{key}$")); otherwise PEFT's get_pattern_key per pattern (rf"(.*\.)?({key})$").
std::pair<int64_t, double> peft_rank_alpha(const OrderedJson& j, const std::string& module, bool combined) {
  const int64_t r = j["r"].get<int64_t>();
  const double alpha = j["lora_alpha"].get<double>();
  auto first_match = [&](const std::vector<std::string>& keys, const char* pre) -> std::string {
    for (const auto& k : keys)
      if (std::regex_match(module, std::regex(std::string(pre) + "(" + k + ")"))) return k;
    return module;
  };
  std::vector<std::string> rk, ak;
  for (auto it = j["rank_pattern"].begin(); it != j["rank_pattern"].end(); ++it) rk.push_back(it.key());
  for (auto it = j["alpha_pattern"].begin(); it != j["alpha_pattern"].end(); ++it) ak.push_back(it.key());
  auto lookup = [&](const char* field, const std::string& key, auto fallback) {
    const auto& p = j[field];
    return p.contains(key) ? p[key].get<decltype(fallback)>() : fallback;
  };
  if (combined) {
    std::vector<std::string> all = rk;
    all.insert(all.end(), ak.begin(), ak.end());
    const std::string key = first_match(all, ".*\\.");
    return {lookup("rank_pattern", key, r), lookup("alpha_pattern", key, alpha)};
  }
  return {lookup("rank_pattern", first_match(rk, "(.*\\.)?"), r), lookup("alpha_pattern", first_match(ak, "(.*\\.)?"), alpha)};
}

}  // namespace

TEST(AdapterFiles, ConfigsHoldOnlyFieldsOfPeftsConfigClasses) {
  TempDir tmp("adapter_fields");
  {
    auto model = load_model(golden_dir("llama"));
    LoraConfig c;
    c.target_modules = {"all-linear"};
    c.use_rslora = true;
    c.init = "gaussian";
    c.rank_pattern = {{"q_proj", 4}};
    c.alpha_pattern = {{"v_proj", 2}};
    c.base_quantization = {"nf4", 64, true};
    c.loftq_quant = "nf2";
    inject_lora(*model, c, 1);
    save_adapter(*model, c, tmp / "lora");
    auto j = nlohmann::json::parse(read_file(tmp / "lora/adapter_config.json"));
    expect_only_fields(j, kLoraConfigFields, "LoRA");
    EXPECT_EQ(j["peft_type"], "LORA");
    EXPECT_EQ(j["use_rslora"], true);
    EXPECT_FALSE(j.contains("library"));
    EXPECT_FALSE(j.contains("use_dora")) << "a field at its default that older PEFT lacks";
    // qpeft's own facts live in the safetensors metadata.
    auto st = SafetensorsFile::open(tmp / "lora/adapter_model.safetensors");
    EXPECT_EQ(st->metadata().at("qpeft.base_quantization"), "nf4");
    EXPECT_EQ(st->metadata().at("qpeft.loftq_quantization"), "nf2");
    // At its default, use_rslora is left out too.
    c.use_rslora = false;
    save_adapter(*model, c, tmp / "lora2");
    EXPECT_FALSE(nlohmann::json::parse(read_file(tmp / "lora2/adapter_config.json")).contains("use_rslora"));
  }
  {
    auto model = load_model(golden_dir("llama"));
    Ia3Config c;
    c.base_quantization = {"nf4", 64, true};
    inject_ia3(*model, c);
    save_adapter(*model, c, tmp / "ia3");
    auto j = nlohmann::json::parse(read_file(tmp / "ia3/adapter_config.json"));
    expect_only_fields(j, kIa3ConfigFields, "IA3");
    EXPECT_EQ(j["peft_type"], "IA3");
    EXPECT_TRUE(j["base_model_name_or_path"].is_null()) << "an unknown base is null, as PEFT writes it";
  }
}

// A LoRA directory as PEFT writes it in its many versions: null base_model_name_or_path,
// null patterns, target_modules as a string, newer fields at their defaults.
TEST(AdapterFiles, LoraConfigsWithEveryFieldPeftMayWriteLoad) {
  TempDir tmp("adapter_peft_lora");
  const std::string golden = golden_dir("llama") + "/adapter_init";
  auto reference = load_model(golden_dir("llama"));
  load_lora_adapter(*reference, golden);
  const auto ids = sample_ids(2 * 9, 96);
  const Tensor want = reference->logits(ids, 2, 9);
  const std::string config = R"({
  "alpha_pattern": null,
  "auto_mapping": null,
  "base_model_name_or_path": null,
  "bias": "none",
  "eva_config": null,
  "exclude_modules": null,
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 8,
  "lora_bias": false,
  "lora_dropout": null,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "peft_type": "LORA",
  "r": 4,
  "rank_pattern": null,
  "revision": null,
  "target_modules": ".*(q|k|v|o|gate|up|down)_proj",
  "task_type": "CAUSAL_LM",
  "use_dora": false,
  "use_rslora": null
})";
  std::filesystem::create_directories(tmp / "a");
  std::filesystem::copy_file(golden + "/adapter_model.safetensors", tmp / "a/adapter_model.safetensors");
  write_file(tmp / "a/adapter_config.json", config);
  auto model = load_model_with_adapter(golden_dir("llama"), tmp / "a", "auto", nullptr);
  EXPECT_TRUE(same_bits(model->logits(ids, 2, 9), want));
  LoraConfig c = read_lora_config(tmp / "a");
  EXPECT_TRUE(c.base_model_name_or_path.empty());
  EXPECT_TRUE(c.rank_pattern.empty() && c.alpha_pattern.empty());

  // Re-saved by qpeft, it names the module kinds the file holds.
  LoraConfig loaded = load_lora_adapter(*load_model(golden_dir("llama")), tmp / "a");
  EXPECT_EQ(loaded.target_modules.size(), 7u);

  // Fields that change the computation in ways qpeft does not implement are refused by name.
  for (const auto& [field, value] : std::vector<std::pair<std::string, std::string>>{
           {"use_dora", "true"}, {"lora_bias", "true"}, {"fan_in_fan_out", "true"}, {"bias", "\"all\""},
           {"layer_replication", "[[0, 2], [1, 2]]"}}) {
    std::string bad = config;
    const size_t at = bad.find("\"" + field + "\": ");
    ASSERT_NE(at, std::string::npos) << field;
    const size_t v = at + field.size() + 4, end = bad.find_first_of(",\n", v);
    bad.replace(v, end - v, value);
    write_file(tmp / "a/adapter_config.json", bad);
    EXPECT_NE(error_of([&] { read_adapter_config(tmp / "a"); }).find(field), std::string::npos) << field;
  }
  write_file(tmp / "a/adapter_config.json", "{\"peft_type\": \"PREFIX_TUNING\"}");
  const std::string e = error_of([&] { read_adapter_config(tmp / "a"); });
  EXPECT_NE(e.find("LORA, IA3"), std::string::npos) << e;
}

// rank_pattern {"q_proj": 4} and alpha_pattern {"layers.0.self_attn.q_proj": 32} both match
// layer 0's q_proj through different keys: old PEFT takes alpha under the rank key (the default
// 16), newer PEFT takes 32. qpeft writes an explicit key for that module in both patterns, first,
// so that both read r 4, alpha 32 (what qpeft trained with), and every other module as before.
TEST(AdapterFiles, RankAndAlphaPatternsMeanTheSameToEveryPeftVersion) {
  TempDir tmp("adapter_patterns");
  auto model = load_model(golden_dir("llama"));
  LoraConfig c;
  c.target_modules = {"all-linear"};
  c.r = 8;
  c.alpha = 16;
  c.rank_pattern = {{"q_proj", 4}, {"down_proj", 2}};
  c.alpha_pattern = {{"layers.0.self_attn.q_proj", 32}, {"v_proj", 4}, {"down_proj", 6}};
  inject_lora(*model, c, 2);
  EXPECT_EQ(c.rank_for("model.layers.0.self_attn.q_proj"), 4);
  EXPECT_EQ(c.alpha_for("model.layers.0.self_attn.q_proj"), 32);
  save_adapter(*model, c, tmp / "a");
  const auto j = OrderedJson::parse(read_file(tmp / "a/adapter_config.json"));
  // The conflicting module got its own key; down_proj matches one key in both and needs none.
  EXPECT_EQ(j["rank_pattern"].begin().key(), "layers\\.0\\.self_attn\\.q_proj");
  EXPECT_EQ(j["rank_pattern"].size(), 3u);
  int checked = 0;
  model->visit_linears([&](Linear& l) {
    for (bool combined : {true, false}) {
      const auto [r, a] = peft_rank_alpha(j, l.name, combined);
      EXPECT_EQ(r, c.rank_for(l.name)) << l.name << (combined ? " (old PEFT)" : " (new PEFT)");
      EXPECT_EQ(a, c.alpha_for(l.name)) << l.name << (combined ? " (old PEFT)" : " (new PEFT)");
      ++checked;
    }
  });
  EXPECT_EQ(checked, 2 * 14);
  // And qpeft reads its own file back to the same scalings and adapter.
  LoraConfig back = read_lora_config(tmp / "a");
  model->visit_linears([&](Linear& l) { EXPECT_DOUBLE_EQ(back.scaling_for(l.name), c.scaling_for(l.name)) << l.name; });
  auto reloaded = load_model(golden_dir("llama"));
  load_lora_adapter(*reloaded, tmp / "a");
  const auto ids = sample_ids(2 * 9, 96);
  EXPECT_TRUE(same_bits(model->logits(ids, 2, 9), reloaded->logits(ids, 2, 9)));
  // Without qpeft's explicit key the two PEFT rules would disagree on that module.
  OrderedJson plain = j;
  plain["rank_pattern"].erase("layers\\.0\\.self_attn\\.q_proj");
  plain["alpha_pattern"].erase("layers\\.0\\.self_attn\\.q_proj");
  EXPECT_NE(peft_rank_alpha(plain, "model.layers.0.self_attn.q_proj", true).second,
            peft_rank_alpha(plain, "model.layers.0.self_attn.q_proj", false).second);
}

TEST(AdapterFiles, TheMethodIsReadFromPeftType) {
  TempDir tmp("adapter_kind");
  auto model = load_model(golden_dir("llama"));
  inject_ia3(*model, Ia3Config{});
  save_adapter(*model, Ia3Config{}, tmp / "ia3");
  EXPECT_EQ(adapter_kind(read_adapter_config(tmp / "ia3")), AdapterMethodKind::kIa3);
  EXPECT_EQ(adapter_kind(read_adapter_config(golden_dir("llama") + "/adapter_init")), AdapterMethodKind::kLora);
  EXPECT_STREQ(adapter_peft_type(AdapterMethodKind::kIa3), "IA3");
  // Tensors of another method in the file are named in the error.
  std::filesystem::copy_file(golden_dir("llama") + "/adapter_init/adapter_model.safetensors",
                             tmp / "ia3/adapter_model.safetensors", std::filesystem::copy_options::overwrite_existing);
  const std::string e = error_of([&] { load_adapter(*load_model(golden_dir("llama")), tmp / "ia3"); });
  EXPECT_NE(e.find("lora_A"), std::string::npos) << e;
  EXPECT_NE(e.find("(IA)³"), std::string::npos) << e;
}
