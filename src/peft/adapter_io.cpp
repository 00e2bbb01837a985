#include "peft/adapter_io.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <map>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"

namespace qpeft {

using nlohmann::json;

// adapter_model.safetensors metadata: how the base was quantized while the adapter trained.
constexpr const char* kBaseQuantFormat = "qpeft.base_quantization";
constexpr const char* kBaseQuantBlock = "qpeft.base_quantization_block_size";
constexpr const char* kBaseQuantDouble = "qpeft.base_double_quant";
// LoftQ adapters: initialised for the quantized base `qpeft loftq` wrote.
constexpr const char* kInit = "qpeft.init";
constexpr const char* kLoftqQuant = "qpeft.loftq_quantization";
constexpr const char* kLoftqBlock = "qpeft.loftq_block_size";
constexpr const char* kLoftqDouble = "qpeft.loftq_double_quant";
constexpr const char* kLoftqIters = "qpeft.loftq_iters";

static std::string config_json(LlamaModel& model, const LoraConfig& cfg) {
  json j;
  j["peft_type"] = "LORA";
  j["task_type"] = "CAUSAL_LM";
  j["r"] = cfg.r;
  j["lora_alpha"] = cfg.alpha;
  j["lora_dropout"] = cfg.dropout;
  j["use_rslora"] = cfg.use_rslora;
  j["target_modules"] = cfg.resolved_targets();
  j["rank_pattern"] = cfg.rank_pattern;
  j["alpha_pattern"] = cfg.alpha_pattern;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["inference_mode"] = true;
  j["init_lora_weights"] = cfg.init == "gaussian" ? json("gaussian") : json(true);
  j["modules_to_save"] = nullptr;
  j["use_dora"] = false;
  j["base_model_name_or_path"] = cfg.base_model_name_or_path;
  j["revision"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  j["library"] = "qpeft";
  return j.dump(2) + "\n";
}

void write_lora_adapter_files(LlamaModel& model, const LoraConfig& cfg, const std::string& dir) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [key, v] : adapter_params(model)) tensors.emplace_back(key, v.value());
  QP_CHECK(!tensors.empty(), "the model has no LoRA adapter to save");
  std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (cfg.base_quantization.enabled()) {
    metadata[kBaseQuantFormat] = cfg.base_quantization.format;
    metadata[kBaseQuantBlock] = std::to_string(cfg.base_quantization.block_size);
    metadata[kBaseQuantDouble] = cfg.base_quantization.double_quant ? "true" : "false";
  }
  if (!cfg.loftq_quant.empty()) {
    metadata[kInit] = "loftq";
    metadata[kLoftqQuant] = cfg.loftq_quant;
    metadata[kLoftqBlock] = std::to_string(cfg.loftq_block_size);
    metadata[kLoftqDouble] = cfg.loftq_double_quant ? "true" : "false";
    metadata[kLoftqIters] = std::to_string(cfg.loftq_iters);
  }
  save_safetensors(dir + "/adapter_model.safetensors", tensors, metadata);
  write_file_atomic(dir + "/adapter_config.json", config_json(model, cfg));
}

void save_lora_adapter(LlamaModel& model, const LoraConfig& cfg, const std::string& dir) {
  AtomicDir out(dir);
  std::string tmp = out.path("");
  tmp.pop_back();
  write_lora_adapter_files(model, cfg, tmp);
  out.commit();
}

LoraConfig read_lora_config(const std::string& dir) {
  const std::string path = dir + "/adapter_config.json";
  QP_CHECK(file_exists(path), "{}: no adapter_config.json; expected a PEFT adapter directory", dir);
  json j;
  try {
    j = json::parse(read_text_file(path));
  } catch (const json::parse_error& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  QP_CHECK(j.is_object(), "{}: expected a JSON object", path);
  const std::string type = j.value("peft_type", "");
  QP_CHECK(type == "LORA", "{}: peft_type '{}' is not LORA", path, type);
  QP_CHECK(!j.value("use_dora", false), "{}: DoRA adapters (use_dora) are not supported", path);
  QP_CHECK(!j.value("fan_in_fan_out", false), "{}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported", path);
  LoraConfig c;
  try {
    c.r = j.at("r").get<int64_t>();
    c.alpha = j.value("lora_alpha", double(c.r));
    c.dropout = j.value("lora_dropout", 0.0);
    c.use_rslora = j.value("use_rslora", false);
    c.base_model_name_or_path = j.value("base_model_name_or_path", std::string());
    if (j.contains("rank_pattern") && j["rank_pattern"].is_object())
      for (auto& [k, v] : j["rank_pattern"].items()) c.rank_pattern[k] = v.get<int64_t>();
    if (j.contains("alpha_pattern") && j["alpha_pattern"].is_object())
      for (auto& [k, v] : j["alpha_pattern"].items()) c.alpha_pattern[k] = v.get<double>();
    c.target_modules.clear();
    const json& t = j.at("target_modules");
    if (t.is_string()) {
      c.target_modules.push_back(t.get<std::string>());
    } else {
      for (const auto& x : t) c.target_modules.push_back(x.get<std::string>());
    }
  } catch (const json::exception& e) {
    fail("{}: {}", path, e.what());
  }
  return c;
}

// "base_model.model.<module>.lora_A[.default].weight" -> module, which ("lora_A"/"lora_B")
static bool split_key(const std::string& key, std::string* module, std::string* which) {
  static const std::string prefix = "base_model.model.";
  if (key.rfind(prefix, 0) != 0) return false;
  for (const char* w : {"lora_A", "lora_B"}) {
    for (const std::string& suffix : {std::string(".") + w + ".weight", std::string(".") + w + ".default.weight"}) {
      if (key.size() > prefix.size() + suffix.size() && key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0) {
        *module = key.substr(prefix.size(), key.size() - prefix.size() - suffix.size());
        *which = w;
        return true;
      }
    }
  }
  return false;
}

static std::string adapter_weights_file(const std::string& dir) {
  const std::string file = dir + "/adapter_model.safetensors";
  QP_CHECK(file_exists(file), "{}: no adapter_model.safetensors (adapter_model.bin is not supported; re-save with "
           "safe_serialization=True)", dir);
  return file;
}

using Metadata = std::map<std::string, std::string>;

static void metadata_int(const Metadata& meta, const char* key, const std::string& file, int64_t* out) {
  auto b = meta.find(key);
  if (b == meta.end()) return;
  try {
    size_t used = 0;
    *out = std::stoll(b->second, &used);
    QP_CHECK(used == b->second.size(), "trailing characters");
  } catch (const std::exception&) {
    fail("{}: metadata '{}' = '{}' is not an integer", file, key, b->second);
  }
}

static void metadata_bool(const Metadata& meta, const char* key, const std::string& file, bool* out) {
  auto d = meta.find(key);
  if (d == meta.end()) return;
  QP_CHECK(d->second == "true" || d->second == "false", "{}: metadata '{}' = '{}' is not true or false", file, key,
           d->second);
  *out = d->second == "true";
}

static QuantizeOptions base_quantization_of(const SafetensorsFile& st, const std::string& file) {
  const auto& meta = st.metadata();
  QuantizeOptions q;
  auto it = meta.find(kBaseQuantFormat);
  if (it == meta.end()) return q;
  q.format = it->second;
  QP_CHECK(!q.format.empty(), "{}: metadata '{}' is empty", file, kBaseQuantFormat);
  metadata_int(meta, kBaseQuantBlock, file, &q.block_size);
  metadata_bool(meta, kBaseQuantDouble, file, &q.double_quant);
  return q;
}

static void loftq_info_of(const SafetensorsFile& st, const std::string& file, LoraConfig* cfg) {
  const auto& meta = st.metadata();
  auto it = meta.find(kInit);
  if (it == meta.end() || it->second != "loftq") return;
  auto q = meta.find(kLoftqQuant);
  QP_CHECK(q != meta.end() && !q->second.empty(), "{}: metadata '{}' = loftq without '{}'", file, kInit, kLoftqQuant);
  cfg->loftq_quant = q->second;
  metadata_int(meta, kLoftqBlock, file, &cfg->loftq_block_size);
  metadata_bool(meta, kLoftqDouble, file, &cfg->loftq_double_quant);
  metadata_int(meta, kLoftqIters, file, &cfg->loftq_iters);
}

QuantizeOptions adapter_base_quantization(const std::string& dir) {
  const std::string file = adapter_weights_file(dir);
  return base_quantization_of(*SafetensorsFile::open(file), file);
}

LoraConfig load_lora_adapter(LlamaModel& model, const std::string& dir) {
  LoraConfig cfg = read_lora_config(dir);
  const std::string file = adapter_weights_file(dir);
  auto st = SafetensorsFile::open(file);
  cfg.base_quantization = base_quantization_of(*st, file);
  loftq_info_of(*st, file, &cfg);
  std::map<std::string, std::pair<Tensor, Tensor>> by_module;
  for (const std::string& key : st->names()) {
    std::string module, which;
    QP_CHECK(split_key(key, &module, &which), "{}: tensor '{}' is not a LoRA weight qpeft understands", file, key);
    Tensor t = st->get(key).to(DType::F32);
    (which == "lora_A" ? by_module[module].first : by_module[module].second) = t;
  }
  std::map<std::string, Linear*> linears;
  model.visit_linears([&](Linear& l) { linears[l.name] = &l; });
  for (auto& [module, ab] : by_module) {
    auto it = linears.find(module);
    QP_CHECK(it != linears.end(), "{}: adapter for '{}', which is not a linear layer of this model", file, module);
    Linear& l = *it->second;
    QP_CHECK(ab.first.defined() && ab.second.defined(), "{}: '{}' needs both lora_A and lora_B", file, module);
    const int64_t r = ab.first.dim(0);
    QP_CHECK(ab.first.shape() == (Shape{r, l.in_features}) && ab.second.shape() == (Shape{l.out_features, r}),
             "{}: '{}' lora_A {} / lora_B {} do not fit the layer [{} x {}]", file, module, ab.first.describe(),
             ab.second.describe(), l.out_features, l.in_features);
    QP_CHECK(r == cfg.rank_for(module), "{}: '{}' has rank {} but adapter_config.json gives {}", file, module, r,
             cfg.rank_for(module));
    QP_CHECK(!l.adapter, "{} already has an adapter", l.name);
    auto ad = std::make_shared<LoraAdapter>(l, r, cfg.scaling_for(module), cfg.dropout);
    std::memcpy(ad->A.value().f32(), ab.first.f32(), ab.first.nbytes());
    std::memcpy(ad->B.value().f32(), ab.second.f32(), ab.second.nbytes());
    l.adapter = ad;
  }
  QP_CHECK(!by_module.empty(), "{}: holds no LoRA tensors", file);
  return cfg;
}

std::unique_ptr<LlamaModel> load_model_with_adapter(const std::string& model_dir, const std::string& adapter_dir,
                                                    const std::string& base_quant, std::string* note) {
  LoadOptions load;
  if (base_quant == "auto") {
    if (!adapter_dir.empty()) load.quantize = adapter_base_quantization(adapter_dir);
  } else if (base_quant != "none") {
    load.quantize.format = base_quant;  // load_model checks the name
  }
  auto model = load_model(model_dir, load);
  if (!adapter_dir.empty()) {
    const LoraConfig cfg = load_lora_adapter(*model, adapter_dir);
    if (!cfg.loftq_quant.empty() && base_quant == "auto") {
      // A LoftQ init fits the base LoftQ quantized, not the dense weights it came from.
      std::string dense;
      model->visit_linears([&](Linear& l) {
        if (l.adapter && dense.empty() && !dynamic_cast<const QuantizedWeight*>(l.weight.get())) dense = l.name;
      });
      QP_CHECK(dense.empty(),
               "{}: this adapter was initialised by LoftQ ({}, T = {}) for the quantized base `qpeft loftq` wrote, "
               "but {} in {} is not quantized; pass that base as --model, or --base-quant none to use these weights "
               "anyway",
               adapter_dir, cfg.loftq_quant, cfg.loftq_iters, dense, model_dir);
    }
  }
  if (note && load.quantize.enabled())
    *note = fmt::format("base linear weights quantized on load to {} (block {}{}){}", load.quantize.format,
                        load.quantize.block_size, load.quantize.double_quant ? ", double quantization" : "",
                        base_quant == "auto" ? ", as the adapter was trained; --base-quant none uses the stored weights"
                                             : "");
  return model;
}

void load_lora_weights_into(LlamaModel& model, const std::string& file) {
  auto st = SafetensorsFile::open(file);
  for (auto& [key, v] : adapter_params(model)) {
    QP_CHECK(st->has(key), "{}: tensor '{}' missing", file, key);
    Tensor t = st->get(key);
    QP_CHECK(t.shape() == v.shape() && t.dtype() == DType::F32, "{}: '{}' is {}, expected f32{}", file, key,
             t.describe(), shape_str(v.shape()));
    std::memcpy(v.value().f32(), t.f32(), t.nbytes());
  }
}

}  // namespace qpeft
