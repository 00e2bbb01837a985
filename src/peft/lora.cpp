#include "peft/lora.h"

#include <algorithm>
#include <cmath>
#include <regex>

#include "core/error.h"
#include "core/rng.h"
#include "ops/elementwise.h"
#include "ops/llama_cpp_order.h"

namespace qpeft {

std::vector<std::string> LoraConfig::resolved_targets() const { return resolve_target_kinds(target_modules, "LoRA"); }

template <class T>
const std::pair<std::string, T>* match_module_pattern(const ModulePatterns<T>& patterns, const std::string& name) {
  for (const auto& entry : patterns) {
    try {
      // PEFT's get_pattern_key: re.match(rf"(.*\.)?({key})$", name).
      if (std::regex_match(name, std::regex("(.*\\.)?(" + entry.first + ")"))) return &entry;
    } catch (const std::regex_error&) {
      fail("rank/alpha pattern '{}' is not a valid regular expression", entry.first);
    }
  }
  return nullptr;
}
template const std::pair<std::string, int64_t>* match_module_pattern(const ModulePatterns<int64_t>&, const std::string&);
template const std::pair<std::string, double>* match_module_pattern(const ModulePatterns<double>&, const std::string&);

int64_t LoraConfig::rank_for(const std::string& name) const {
  const auto* p = match_module_pattern(rank_pattern, name);
  return p ? p->second : r;
}

double LoraConfig::alpha_for(const std::string& name) const {
  const auto* p = match_module_pattern(alpha_pattern, name);
  return p ? p->second : alpha;
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
  return add_matmul_nt(g, y, low, B, float(scaling), /*write_into_y=*/true);
}

std::optional<Var> LoraAdapter::adapt_output_llama_cpp(Graph& g, const Var& x, const Var& y, int lanes) {
  return add_lora_llama_cpp(g, y, x, A, B, float(scaling), lanes);  // no dropout in inference
}

void LoraAdapter::visit_params(const std::function<void(const std::string&, Var&)>& fn) {
  fn("lora_A.weight", A);
  fn("lora_B.weight", B);
}

void LoraAdapter::merge_into(Tensor& w) const {
  const int64_t out = B.value().dim(0), in = A.value().dim(1);
  QP_CHECK(w.dtype() == DType::F32 && w.shape() == (Shape{out, in}), "[lora merge] weight {} does not fit A {} / B {}",
           w.describe(), A.value().describe(), B.value().describe());
  // W[out, in] += s · B[out, r] A[r, in]
  sgemm(false, false, out, in, r, float(scaling), B.value().f32(), r, A.value().f32(), in, 1.0f, w.f32(), in);
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
    // A rank above the layer's smaller side adds parameters but no expressiveness.
    const int64_t max_rank = std::min(l.in_features, l.out_features);
    QP_CHECK(r <= max_rank, "LoRA rank {} (--rank / --rank-pattern) is above the dimensions of {} [{} x {}]; use at most {}",
             r, l.name, l.out_features, l.in_features, max_rank);
    QP_CHECK(std::isfinite(cfg.scaling_for(l.name)), "LoRA alpha (--alpha / --alpha-pattern) for {} gives scaling {}; it must be finite",
             l.name, cfg.scaling_for(l.name));
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

}  // namespace qpeft
