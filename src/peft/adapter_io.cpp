#include "peft/adapter_io.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <iterator>
#include <map>
#include <set>

#include "core/error.h"
#include "core/file.h"
#include "io/json_reader.h"
#include "io/safetensors.h"

namespace qpeft {

// Kept in file order: PEFT tries rank_pattern/alpha_pattern keys in the order Python reads them.
using Json = nlohmann::ordered_json;
using Metadata = std::map<std::string, std::string>;
// A file's adapter tensors by module ("model.layers.0.self_attn.q_proj") and suffix ("lora_A.weight"), f32.
using ModuleTensors = std::map<std::string, std::map<std::string, Tensor>>;

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

namespace {

// ---- reading JSON the way PEFT writes it: a field may be missing or null (Python's None) ----

// A module list field: a list of names, one name, or (PEFT's str form) a regex in *regex.
std::vector<std::string> module_list(const OrderedJsonFields& f, const char* key, std::string* regex) {
  const Json* v = f.find(key);
  if (regex && v && v->is_string()) {
    *regex = v->get<std::string>();
    return {};
  }
  return f.strings_or_empty(key, /*one_string_ok=*/true);
}

Json string_or_null(const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); }

// The fields every PEFT config has (PeftConfig), in the order PEFT's sort_keys writes them among the rest.
void put_common(Json& j, const AdapterBaseInfo& base, const char* peft_type) {
  j["base_model_name_or_path"] = string_or_null(base.base_model_name_or_path);
  j["inference_mode"] = true;
  j["peft_type"] = peft_type;
  j["revision"] = nullptr;
  j["task_type"] = "CAUSAL_LM";
}

// Keys in alphabetical order, as PEFT writes its configs (json.dumps(sort_keys=True)).
Json sorted_object(const Json& j) {
  std::map<std::string, Json> by_key;
  for (auto it = j.begin(); it != j.end(); ++it) by_key.emplace(it.key(), it.value());
  Json out = Json::object();
  for (auto& [k, v] : by_key) out[k] = std::move(v);
  return out;
}

void metadata_int(const Metadata& meta, const char* key, const std::string& file, int64_t* out) {
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

void metadata_bool(const Metadata& meta, const char* key, const std::string& file, bool* out) {
  auto d = meta.find(key);
  if (d == meta.end()) return;
  QP_CHECK(d->second == "true" || d->second == "false", "{}: metadata '{}' = '{}' is not true or false", file, key,
           d->second);
  *out = d->second == "true";
}

std::map<std::string, Linear*> linears_by_name(LlamaModel& model) {
  std::map<std::string, Linear*> out;
  model.visit_linears([&](Linear& l) { out[l.name] = &l; });
  return out;
}

Linear& linear_for(const std::map<std::string, Linear*>& linears, const std::string& module, const std::string& file) {
  auto it = linears.find(module);
  QP_CHECK(it != linears.end(), "{}: adapter for '{}', which is not a linear layer of this model", file, module);
  return *it->second;
}

// Module kinds of the adapted layers, in model order (what a re-saved config names as targets).
std::vector<std::string> kinds_of(LlamaModel& model, const std::set<std::string>& modules) {
  std::vector<std::string> out;
  for (const auto& kind : linear_kinds()) {
    bool hit = false;
    model.visit_linears([&](Linear& l) { hit = hit || (l.kind == kind && modules.count(l.name)); });
    if (hit) out.push_back(kind);
  }
  return out;
}

// ---------------------------------- LoRA ----------------------------------

// A rank_pattern/alpha_pattern key that matches exactly this module under every PEFT version's
// rule (old: re.match(rf".*\.{key}$"); new: rf"(.*\.)?({key})$"): the name after its first
// component, dots escaped ("layers\.0\.self_attn\.q_proj").
std::string explicit_pattern_key(const std::string& module) {
  const size_t dot = module.find('.');
  const std::string rest = dot == std::string::npos ? module : module.substr(dot + 1);
  std::string key;
  for (char c : rest) {
    if (c == '.') key += '\\';
    key += c;
  }
  return key;
}

Json lora_config_json(LlamaModel& model, const AdapterConfig& any) {
  const LoraConfig& cfg = std::get<LoraConfig>(any);
  // PEFT before about 0.12 resolves a module's rank and alpha through ONE key, the first of
  // rank_pattern's then alpha_pattern's keys that matches (the alpha is looked up under that
  // key); later versions look each up in its own pattern. They disagree exactly when a module
  // matches a rank key and a different alpha key: such modules get an explicit key of their own
  // in both patterns, placed first, so that every version reads the values qpeft trained with.
  ModulePatterns<int64_t> ranks;
  ModulePatterns<double> alphas;
  model.visit_linears([&](Linear& l) {
    if (!dynamic_cast<const LoraAdapter*>(l.adapter.get())) return;
    const auto* rk = match_module_pattern(cfg.rank_pattern, l.name);
    const auto* ak = match_module_pattern(cfg.alpha_pattern, l.name);
    if (rk && ak && rk->first != ak->first) {
      const std::string key = explicit_pattern_key(l.name);
      ranks.emplace_back(key, rk->second);
      alphas.emplace_back(key, ak->second);
    }
  });
  ranks.insert(ranks.end(), cfg.rank_pattern.begin(), cfg.rank_pattern.end());
  alphas.insert(alphas.end(), cfg.alpha_pattern.begin(), cfg.alpha_pattern.end());

  // Only fields of PEFT's LoraConfig / PeftConfig. Those PEFT added after 0.6 (use_rslora) are
  // written only when they differ from their default, so an older PEFT either reads the adapter
  // exactly or refuses it, never misreads it.
  Json j;
  put_common(j, cfg, "LORA");
  j["r"] = cfg.r;
  j["lora_alpha"] = cfg.alpha;
  j["lora_dropout"] = cfg.dropout;
  if (cfg.use_rslora) j["use_rslora"] = true;
  j["target_modules"] = cfg.resolved_targets();
  Json rp = Json::object(), ap = Json::object();
  for (const auto& [k, v] : ranks) rp[k] = v;
  for (const auto& [k, v] : alphas) ap[k] = v;
  j["rank_pattern"] = rp;
  j["alpha_pattern"] = ap;
  j["bias"] = "none";
  j["fan_in_fan_out"] = false;
  j["init_lora_weights"] = cfg.init == "gaussian" ? Json("gaussian") : Json(true);
  j["modules_to_save"] = nullptr;
  j["layers_to_transform"] = nullptr;
  j["layers_pattern"] = nullptr;
  return sorted_object(j);
}

AdapterConfig lora_parse_config(const Json& j, const std::string& path) {
  const OrderedJsonFields f(j, path);
  QP_CHECK(!f.boolean_or("use_dora", false), "{}: DoRA adapters (use_dora) are not supported", path);
  QP_CHECK(!f.boolean_or("fan_in_fan_out", false), "{}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported", path);
  QP_CHECK(!f.has("layer_replication") || f.find("layer_replication")->empty(),
           "{}: layer_replication (a model with repeated layers) is not supported", path);
  QP_CHECK(!f.boolean_or("lora_bias", false), "{}: lora_bias adapters (a trainable bias in lora_B) are not supported",
           path);
  const std::string bias = f.string_or("bias", "none");
  QP_CHECK(bias == "none", "{}: bias '{}' (trained base biases) is not supported; only 'none'", path, bias);
  LoraConfig c;
  QP_CHECK(f.has("r"), "{}: 'r' (the LoRA rank) is missing", path);
  constexpr int64_t kMaxRank = int64_t(1) << 20;  // the tensors' shapes check the real bound
  c.r = f.integer("r", 1, kMaxRank);
  c.alpha = f.number_or("lora_alpha", 8.0, -1e9, 1e9);  // PEFT's default lora_alpha
  c.dropout = f.number_or("lora_dropout", 0.0, 0.0, 0.999);
  c.use_rslora = f.boolean_or("use_rslora", false);
  if (const Json* init = f.find("init_lora_weights"); init && *init == "gaussian") c.init = "gaussian";
  c.base_model_name_or_path = f.string_or("base_model_name_or_path", "");
  if (f.has("rank_pattern")) {
    const OrderedJsonFields rp = f.object("rank_pattern");
    for (auto it = j["rank_pattern"].begin(); it != j["rank_pattern"].end(); ++it)
      c.rank_pattern.emplace_back(it.key(), rp.integer(it.key().c_str(), 1, kMaxRank));
  }
  if (f.has("alpha_pattern")) {
    const OrderedJsonFields ap = f.object("alpha_pattern");
    for (auto it = j["alpha_pattern"].begin(); it != j["alpha_pattern"].end(); ++it)
      c.alpha_pattern.emplace_back(it.key(), ap.number_or(it.key().c_str(), 0.0, -1e9, 1e9));
  }
  // Which layers carry an adapter is read from the tensors (attach); the names here may be any
  // of PEFT's forms (a regex string, suffixes, "all-linear").
  c.target_modules = module_list(f, "target_modules", nullptr);
  return c;
}

void lora_attach(LlamaModel& model, AdapterConfig& any, const ModuleTensors& tensors, const std::string& file) {
  LoraConfig& cfg = std::get<LoraConfig>(any);
  const auto linears = linears_by_name(model);
  std::set<std::string> modules;
  for (const auto& [module, t] : tensors) {
    Linear& l = linear_for(linears, module, file);
    auto a = t.find("lora_A.weight"), b = t.find("lora_B.weight");
    QP_CHECK(a != t.end() && b != t.end(), "{}: '{}' needs both lora_A and lora_B", file, module);
    const Tensor &A = a->second, &B = b->second;
    const int64_t r = A.dim(0);
    QP_CHECK(A.shape() == (Shape{r, l.in_features}) && B.shape() == (Shape{l.out_features, r}),
             "{}: '{}' lora_A {} / lora_B {} do not fit the layer [{} x {}]", file, module, A.describe(), B.describe(),
             l.out_features, l.in_features);
    QP_CHECK(r == cfg.rank_for(module), "{}: '{}' has rank {} but adapter_config.json gives {}", file, module, r,
             cfg.rank_for(module));
    QP_CHECK(!l.adapter, "{} already has an adapter", l.name);
    auto ad = std::make_shared<LoraAdapter>(l, r, cfg.scaling_for(module), cfg.dropout);
    std::memcpy(ad->A.value().f32(), A.f32(), A.nbytes());
    std::memcpy(ad->B.value().f32(), B.f32(), B.nbytes());
    l.adapter = ad;
    modules.insert(module);
  }
  cfg.target_modules = kinds_of(model, modules);
}

void lora_write_metadata(const AdapterConfig& any, Metadata& meta) {
  const LoraConfig& cfg = std::get<LoraConfig>(any);
  if (cfg.loftq_quant.empty()) return;
  meta[kInit] = "loftq";
  meta[kLoftqQuant] = cfg.loftq_quant;
  meta[kLoftqBlock] = std::to_string(cfg.loftq_block_size);
  meta[kLoftqDouble] = cfg.loftq_double_quant ? "true" : "false";
  meta[kLoftqIters] = std::to_string(cfg.loftq_iters);
}

void lora_read_metadata(const Metadata& meta, const std::string& file, AdapterConfig& any) {
  LoraConfig& cfg = std::get<LoraConfig>(any);
  auto it = meta.find(kInit);
  if (it == meta.end() || it->second != "loftq") return;
  auto q = meta.find(kLoftqQuant);
  QP_CHECK(q != meta.end() && !q->second.empty(), "{}: metadata '{}' = loftq without '{}'", file, kInit, kLoftqQuant);
  cfg.loftq_quant = q->second;
  metadata_int(meta, kLoftqBlock, file, &cfg.loftq_block_size);
  metadata_bool(meta, kLoftqDouble, file, &cfg.loftq_double_quant);
  metadata_int(meta, kLoftqIters, file, &cfg.loftq_iters);
}

// A LoftQ init fits the base LoftQ quantized, not the dense weights it came from.
void lora_check_base(LlamaModel& model, const AdapterConfig& any, const std::string& adapter_dir,
                     const std::string& model_dir) {
  const LoraConfig& cfg = std::get<LoraConfig>(any);
  if (cfg.loftq_quant.empty()) return;
  const std::string dense = first_dense_adapted_layer(model);
  QP_CHECK(dense.empty(),
           "{}: this adapter was initialised by LoftQ ({}, T = {}) for the quantized base `qpeft loftq` wrote, "
           "but {} in {} is not quantized; pass that base as --model, or --base-quant none to use these weights "
           "anyway",
           adapter_dir, cfg.loftq_quant, cfg.loftq_iters, dense, model_dir);
}

// ---------------------------------- (IA)³ ----------------------------------

Json ia3_config_json(LlamaModel& model, const AdapterConfig& any) {
  const Ia3Config& cfg = std::get<Ia3Config>(any);
  // Only fields of PEFT's IA3Config / PeftConfig.
  Json j;
  put_common(j, cfg, "IA3");
  j["target_modules"] = cfg.resolved_targets();
  j["feedforward_modules"] = cfg.resolved_feedforward();
  j["init_ia3_weights"] = cfg.init_ia3_weights;
  j["fan_in_fan_out"] = false;
  j["modules_to_save"] = nullptr;
  return sorted_object(j);
}

AdapterConfig ia3_parse_config(const Json& j, const std::string& path) {
  const OrderedJsonFields f(j, path);
  QP_CHECK(!f.boolean_or("fan_in_fan_out", false), "{}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported", path);
  Ia3Config c;
  c.base_model_name_or_path = f.string_or("base_model_name_or_path", "");
  c.init_ia3_weights = f.boolean_or("init_ia3_weights", true);
  // null: PEFT fills both from its per-model table, which gives the defaults above for Llama.
  if (f.has("target_modules")) c.target_modules = module_list(f, "target_modules", &c.target_regex);
  if (f.has("feedforward_modules"))
    c.feedforward_modules = module_list(f, "feedforward_modules", &c.feedforward_regex);
  return c;
}

void ia3_attach(LlamaModel& model, AdapterConfig& any, const ModuleTensors& tensors, const std::string& file) {
  Ia3Config& cfg = std::get<Ia3Config>(any);
  const auto linears = linears_by_name(model);
  std::set<std::string> modules, ff_modules;
  for (const auto& [module, t] : tensors) {
    Linear& l = linear_for(linears, module, file);
    const Tensor& v = t.at("ia3_l");
    // PEFT's layout: [1, in] scales the input of a feed-forward module, [out, 1] the output of the rest.
    const bool ff = cfg.is_feedforward(module);
    const Shape want = ff ? Shape{1, l.in_features} : Shape{l.out_features, 1};
    QP_CHECK(v.shape() == want,
             "{}: '{}' ia3_l is {} but the layer [{} x {}] as adapter_config.json's feedforward_modules make it "
             "({}) needs {}",
             file, module, v.describe(), l.out_features, l.in_features,
             ff ? "feed-forward: input scaling" : "output scaling", shape_str(want));
    QP_CHECK(!l.adapter, "{} already has an adapter", l.name);
    auto ad = std::make_shared<Ia3Adapter>(l, ff);
    std::memcpy(ad->l.value().f32(), v.f32(), v.nbytes());
    l.adapter = ad;
    modules.insert(module);
    if (ff) ff_modules.insert(module);
  }
  // What the file holds, as qpeft names it (a re-saved config then says the same).
  cfg.target_modules = kinds_of(model, modules);
  cfg.feedforward_modules = kinds_of(model, ff_modules);
  cfg.target_regex.clear();
  cfg.feedforward_regex.clear();
}

// ------------------------------ the method table ------------------------------

struct AdapterMethod {
  AdapterMethodKind kind;
  const char* peft_type;  // adapter_config.json's "peft_type"
  const char* name;       // for messages
  // Tensor key suffixes after "base_model.model.<module>." as PEFT saves them; PEFT's in-memory
  // form with the adapter name after the first component ("lora_A.default.weight") is read too.
  std::vector<std::string> suffixes;
  // adapter_config.json: exactly the fields of PEFT's config class that qpeft has values for.
  Json (*config_json)(LlamaModel& model, const AdapterConfig& cfg);
  AdapterConfig (*parse_config)(const Json& j, const std::string& path);
  // Attaches adapters made from the file's tensors, checked against the config and the layers.
  void (*attach)(LlamaModel& model, AdapterConfig& cfg, const ModuleTensors& tensors, const std::string& file);
  // The method's own qpeft.* metadata (optional).
  void (*write_metadata)(const AdapterConfig& cfg, Metadata& meta);
  void (*read_metadata)(const Metadata& meta, const std::string& file, AdapterConfig& cfg);
  // With --base-quant auto: refuses a base the adapter does not fit (optional).
  void (*check_base)(LlamaModel& model, const AdapterConfig& cfg, const std::string& adapter_dir,
                     const std::string& model_dir);
};

const AdapterMethod kMethods[] = {
    {AdapterMethodKind::kLora, "LORA", "LoRA", {"lora_A.weight", "lora_B.weight"}, lora_config_json,
     lora_parse_config, lora_attach, lora_write_metadata, lora_read_metadata, lora_check_base},
    {AdapterMethodKind::kIa3, "IA3", "(IA)³", {"ia3_l"}, ia3_config_json, ia3_parse_config, ia3_attach, nullptr,
     nullptr, nullptr},
};
static_assert(std::size(kMethods) == size_t(AdapterMethodKind::kCount), "one table entry per adapter method");
static_assert(std::variant_size_v<AdapterConfig> == size_t(AdapterMethodKind::kCount),
              "one AdapterConfig alternative per adapter method");
static_assert(std::is_same_v<std::variant_alternative_t<size_t(AdapterMethodKind::kLora), AdapterConfig>, LoraConfig> &&
                  std::is_same_v<std::variant_alternative_t<size_t(AdapterMethodKind::kIa3), AdapterConfig>, Ia3Config>,
              "AdapterConfig's alternatives follow AdapterMethodKind");

const AdapterMethod& method(AdapterMethodKind kind) {
  const AdapterMethod& m = kMethods[size_t(kind)];
  QP_CHECK(m.kind == kind, "[adapter_io] the method table is out of order");
  return m;
}

const AdapterMethod& method_of(const AdapterConfig& c) { return method(adapter_kind(c)); }

std::string known_peft_types() {
  std::string s;
  for (const auto& m : kMethods) s += (s.empty() ? "" : ", ") + std::string(m.peft_type);
  return s;
}

// "base_model.model.<module>.<suffix>" with one of the method's suffixes (or their ".default" form).
bool split_key(const AdapterMethod& m, const std::string& key, std::string* module, std::string* suffix) {
  static const std::string prefix = "base_model.model.";
  if (key.rfind(prefix, 0) != 0) return false;
  for (const std::string& s : m.suffixes) {
    const size_t dot = s.find('.');
    const std::string with_name =
        dot == std::string::npos ? s + ".default" : s.substr(0, dot) + ".default" + s.substr(dot);
    for (const std::string& form : {"." + s, "." + with_name}) {
      if (key.size() > prefix.size() + form.size() &&
          key.compare(key.size() - form.size(), form.size(), form) == 0) {
        *module = key.substr(prefix.size(), key.size() - prefix.size() - form.size());
        *suffix = s;
        return true;
      }
    }
  }
  return false;
}

std::string adapter_weights_file(const std::string& dir) {
  const std::string file = dir + "/adapter_model.safetensors";
  QP_CHECK(file_exists(file), "{}: no adapter_model.safetensors (adapter_model.bin is not supported; re-save with "
           "safe_serialization=True)", dir);
  return file;
}

QuantizeOptions base_quantization_of(const SafetensorsFile& st, const std::string& file) {
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

}  // namespace

const char* adapter_method_name(AdapterMethodKind kind) { return method(kind).name; }
const char* adapter_peft_type(AdapterMethodKind kind) { return method(kind).peft_type; }

AdapterBaseInfo& adapter_base_info(AdapterConfig& c) {
  return std::visit([](auto& x) -> AdapterBaseInfo& { return x; }, c);
}
const AdapterBaseInfo& adapter_base_info(const AdapterConfig& c) {
  return std::visit([](const auto& x) -> const AdapterBaseInfo& { return x; }, c);
}

void write_adapter_files(LlamaModel& model, const AdapterConfig& cfg, const std::string& dir) {
  const AdapterMethod& m = method_of(cfg);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& [key, v] : adapter_params(model)) tensors.emplace_back(key, v.value());
  QP_CHECK(!tensors.empty(), "the model has no {} adapter to save", m.name);
  Metadata metadata = {{"format", "pt"}};
  const QuantizeOptions& q = adapter_base_info(cfg).base_quantization;
  if (q.enabled()) {
    metadata[kBaseQuantFormat] = q.format;
    metadata[kBaseQuantBlock] = std::to_string(q.block_size);
    metadata[kBaseQuantDouble] = q.double_quant ? "true" : "false";
  }
  if (m.write_metadata) m.write_metadata(cfg, metadata);
  const std::string config = m.config_json(model, cfg).dump(2) + "\n";
  save_safetensors(dir + "/adapter_model.safetensors", tensors, metadata);
  write_file_atomic(dir + "/adapter_config.json", config);
}

void save_adapter(LlamaModel& model, const AdapterConfig& cfg, const std::string& dir) {
  AtomicDir out(dir);
  std::string tmp = out.path("");
  tmp.pop_back();
  write_adapter_files(model, cfg, tmp);
  out.commit();
}

AdapterConfig read_adapter_config(const std::string& dir) {
  const std::string path = dir + "/adapter_config.json";
  QP_CHECK(file_exists(path), "{}: no adapter_config.json; expected a PEFT adapter directory", dir);
  return parse_adapter_config(read_text_file(path), path);
}

AdapterConfig parse_adapter_config(const std::string& text, const std::string& path) {
  const Json j = parse_ordered_json(text, path);
  const OrderedJsonFields f(j, path);
  QP_CHECK(f.has("peft_type"), "{}: no peft_type; expected a PEFT adapter config", path);
  const std::string type = f.string("peft_type");
  for (const auto& m : kMethods)
    if (type == m.peft_type) return m.parse_config(j, path);
  fail("{}: peft_type '{}' is not supported (qpeft reads {} adapters)", path, type, known_peft_types());
}

AdapterConfig load_adapter(LlamaModel& model, const std::string& dir) {
  AdapterConfig cfg = read_adapter_config(dir);
  const AdapterMethod& m = method_of(cfg);
  const std::string file = adapter_weights_file(dir);
  auto st = SafetensorsFile::open(file);
  adapter_base_info(cfg).base_quantization = base_quantization_of(*st, file);
  if (m.read_metadata) m.read_metadata(st->metadata(), file, cfg);
  ModuleTensors tensors;
  for (const std::string& key : st->names()) {
    std::string module, suffix;
    QP_CHECK(split_key(m, key, &module, &suffix), "{}: tensor '{}' is not a {} weight qpeft understands", file, key,
             m.name);
    tensors[module][suffix] = st->get(key).to(DType::F32);
  }
  QP_CHECK(!tensors.empty(), "{}: holds no {} tensors", file, m.name);
  m.attach(model, cfg, tensors, file);
  return cfg;
}

void save_lora_adapter(LlamaModel& model, const LoraConfig& cfg, const std::string& dir) {
  save_adapter(model, AdapterConfig(cfg), dir);
}

void write_lora_adapter_files(LlamaModel& model, const LoraConfig& cfg, const std::string& dir) {
  write_adapter_files(model, AdapterConfig(cfg), dir);
}

LoraConfig read_lora_config(const std::string& dir) {
  AdapterConfig c = read_adapter_config(dir);
  QP_CHECK(adapter_kind(c) == AdapterMethodKind::kLora, "{}/adapter_config.json: peft_type '{}' is not LORA; a LoRA "
           "adapter is needed here", dir, adapter_peft_type(adapter_kind(c)));
  return std::get<LoraConfig>(c);
}

LoraConfig load_lora_adapter(LlamaModel& model, const std::string& dir) {
  read_lora_config(dir);  // refuses other methods before touching the model
  return std::get<LoraConfig>(load_adapter(model, dir));
}

QuantizeOptions adapter_base_quantization(const std::string& dir) {
  const std::string file = adapter_weights_file(dir);
  return base_quantization_of(*SafetensorsFile::open(file), file);
}

LoadOptions base_load_options(const std::string& base_quant, const QuantizeOptions& recorded) {
  LoadOptions load;
  if (base_quant == "auto") {
    load.quantize = recorded;
  } else if (base_quant != "none") {
    load.quantize.format = base_quant;  // load_model checks the name
  }
  return load;
}

std::string describe_base_quantization(const QuantizeOptions& q) {
  if (!q.enabled()) return "the stored weights";
  return fmt::format("{} (block {}{})", q.format, q.block_size, q.double_quant ? ", double quantization" : "");
}

void check_adapter_base(LlamaModel& model, const AdapterConfig& cfg, const std::string& adapter_dir,
                        const std::string& model_dir) {
  const AdapterMethod& m = method_of(cfg);
  if (m.check_base) m.check_base(model, cfg, adapter_dir, model_dir);
}

std::unique_ptr<LlamaModel> load_model_with_adapter(const std::string& model_dir, const std::string& adapter_dir,
                                                    const std::string& base_quant, std::string* note) {
  const LoadOptions load =
      base_load_options(base_quant, adapter_dir.empty() ? QuantizeOptions() : adapter_base_quantization(adapter_dir));
  auto model = load_model(model_dir, load);
  if (!adapter_dir.empty()) {
    const AdapterConfig cfg = load_adapter(*model, adapter_dir);
    if (base_quant == "auto") check_adapter_base(*model, cfg, adapter_dir, model_dir);
  }
  if (note && load.quantize.enabled())
    *note = fmt::format("base linear weights quantized on load to {} (block {}{}){}", load.quantize.format,
                        load.quantize.block_size, load.quantize.double_quant ? ", double quantization" : "",
                        base_quant == "auto" ? ", as the adapter was trained; --base-quant none uses the stored weights"
                                             : "");
  return model;
}

void load_adapter_weights_into(LlamaModel& model, const std::string& file) {
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
