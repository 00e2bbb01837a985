#include "peft/lora.h"

#include <cmath>
#include <regex>

#include "core/error.h"
#include "core/rng.h"
#include "ops/elementwise.h"

namespace qpeft {

static const std::vector<std::string> kLinearKinds = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                      "gate_proj", "up_proj", "down_proj"};

std::vector<std::string> LoraConfig::resolved_targets() const {
  std::vector<std::string> out;
  for (const auto& t : target_modules) {
    if (t == "all-linear") return kLinearKinds;
    bool known = false;
    for (const auto& k : kLinearKinds) known |= k == t;
    QP_CHECK(known, "LoRA target module '{}' is not a linear layer of this model (choose from q_proj, k_proj, v_proj, "
             "o_proj, gate_proj, up_proj, down_proj, or all-linear)", t);
    out.push_back(t);
  }
  QP_CHECK(!out.empty(), "no LoRA target modules given");
  return out;
}

template <class T>
static const T* match_pattern(const std::map<std::string, T>& patterns, const std::string& name) {
  for (const auto& [key, value] : patterns) {
    try {
      if (std::regex_match(name, std::regex(".*\\." + key + "$")) || name == key) return &value;
    } catch (const std::regex_error&) {
      fail("rank/alpha pattern '{}' is not a valid regular expression", key);
    }
  }
  return nullptr;
}

int64_t LoraConfig::rank_for(const std::string& name) const {
  const int64_t* p = match_pattern(rank_pattern, name);
  return p ? *p : r;
}

double LoraConfig::alpha_for(const std::string& name) const {
  const double* p = match_pattern(alpha_pattern, name);
  return p ? *p : alpha;
}

double LoraConfig::scaling_for(const std::string& name) const {
  const double rr = double(rank_for(name)), a = alpha_for(name);
  return use_rslora ? a / std::sqrt(rr) : a / rr;
}

LoraAdapter::LoraAdapter(const Linear& layer, int64_t rank, double s, double p)
    : A(Tensor::zeros({rank, layer.in_features}), true, peft_key(layer.name, "lora_A.weight")),
      B(Tensor::zeros({layer.out_features, rank}), true, peft_key(layer.name, "lora_B.weight")),
      r(rank),
      scaling(s),
      dropout(p) {}

Var LoraAdapter::adapt_output(Graph& g, const Var& x, const Var& y) {
  // y + s · ((dropout(x) Aᵀ) Bᵀ)
  Var low = matmul_nt(g, qpeft::dropout(g, x, float(dropout)), A);
  return add_matmul_nt(g, y, low, B, float(scaling));
}

void LoraAdapter::visit_params(const std::function<void(const std::string&, Var&)>& fn) {
  fn("lora_A.weight", A);
  fn("lora_B.weight", B);
}

std::string peft_key(const std::string& module_name, const std::string& suffix) {
  return "base_model.model." + module_name + "." + suffix;
}

int64_t inject_lora(LlamaModel& model, const LoraConfig& cfg, uint64_t seed) {
  const auto targets = cfg.resolved_targets();
  QP_CHECK(cfg.r > 0, "LoRA rank must be positive (got {})", cfg.r);
  QP_CHECK(cfg.dropout >= 0 && cfg.dropout < 1, "LoRA dropout must be in [0, 1) (got {})", cfg.dropout);
  int64_t n = 0;
  model.visit_linears([&](Linear& l) {
    bool hit = false;
    for (const auto& t : targets) hit |= t == l.kind;
    if (!hit) return;
    QP_CHECK(!l.adapter, "{} already has an adapter", l.name);
    const int64_t r = cfg.rank_for(l.name);
    QP_CHECK(r > 0, "rank_pattern gives rank {} for {}", r, l.name);
    auto ad = std::make_shared<LoraAdapter>(l, r, cfg.scaling_for(l.name), cfg.dropout);
    // A: Kaiming-uniform with a = sqrt(5) is U(-1/sqrt(in), 1/sqrt(in)); Gaussian: N(0, 1/r).
    Rng rng(splitmix64(seed ^ fnv1a64(l.name.data(), l.name.size())));
    float* a = ad->A.value().f32();
    const double bound = 1.0 / std::sqrt(double(l.in_features));
    for (int64_t i = 0; i < ad->A.value().numel(); ++i)
      a[i] = cfg.init == "gaussian" ? float(rng.normal() / double(r)) : float((2.0 * rng.uniform() - 1.0) * bound);
    l.adapter = ad;
    ++n;
  });
  QP_CHECK(n > 0, "no linear layer matched the LoRA targets");
  return n;
}

std::vector<std::pair<std::string, Var>> adapter_params(LlamaModel& model) {
  std::vector<std::pair<std::string, Var>> out;
  model.visit_linears([&](Linear& l) {
    if (!l.adapter) return;
    l.adapter->visit_params([&](const std::string& suffix, Var& p) { out.emplace_back(peft_key(l.name, suffix), p); });
  });
  return out;
}

Tensor merged_weight(const Linear& layer) {
  Tensor w = decode_to_f32(*layer.weight);
  auto* lora = dynamic_cast<const LoraAdapter*>(layer.adapter.get());
  if (!lora) return w;
  // W[out, in] += s · B[out, r] A[r, in]
  sgemm(false, false, layer.out_features, layer.in_features, lora->r, float(lora->scaling), lora->B.value().f32(),
        lora->r, lora->A.value().f32(), layer.in_features, 1.0f, w.f32(), layer.in_features);
  return w;
}

}  // namespace qpeft
