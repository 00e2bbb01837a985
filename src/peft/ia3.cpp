#include "peft/ia3.h"

#include <algorithm>
#include <regex>

#include "core/error.h"
#include "ops/elementwise.h"

namespace qpeft {

namespace {

bool contains(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool full_match(const std::string& s, const std::string& pattern, const char* field) {
  try {
    return std::regex_match(s, std::regex(pattern));
  } catch (const std::regex_error&) {
    fail("(IA)³ {} '{}' is not a valid regular expression", field, pattern);
  }
}

}  // namespace

std::vector<std::string> Ia3Config::resolved_targets() const {
  QP_CHECK(target_regex.empty(), "(IA)³ target_modules given as a regular expression ('{}'); name module kinds",
           target_regex);
  return resolve_target_kinds(target_modules, "(IA)³");
}

std::vector<std::string> Ia3Config::resolved_feedforward() const {
  QP_CHECK(feedforward_regex.empty(), "(IA)³ feedforward_modules given as a regular expression ('{}'); name module kinds",
           feedforward_regex);
  const auto targets = resolved_targets();
  std::string listed;
  for (const auto& t : targets) listed += (listed.empty() ? "" : ",") + t;
  std::vector<std::string> out;
  for (const auto& f : feedforward_modules) {
    QP_CHECK(contains(targets, f),
             "(IA)³ feed-forward module '{}' is not among the targets ({}): feedforward_modules must be a subset of "
             "target_modules, as PEFT requires",
             f, listed);
    out.push_back(f);
  }
  return out;
}

bool Ia3Config::is_feedforward(const std::string& name) const {
  if (!feedforward_regex.empty()) return full_match(name, feedforward_regex, "feedforward_modules");
  for (const auto& f : feedforward_modules)
    if (ends_with(name, f)) return true;
  return false;
}

Ia3Adapter::Ia3Adapter(const Linear& layer, bool ff)
    : l(Tensor::full(ff ? Shape{1, layer.in_features} : Shape{layer.out_features, 1}, 1.0f), true,
        peft_key(layer.name, "ia3_l")),
      feedforward(ff) {}

Var Ia3Adapter::adapt_input(Graph& g, const Var& x) {
  // x[..., in] ⊙ l[1, in]
  return feedforward ? mul_lastdim(g, x, l) : x;
}

Var Ia3Adapter::adapt_output(Graph& g, const Var& x, const Var& y) {
  // y[..., out] ⊙ l[out, 1]
  return feedforward ? y : mul_lastdim(g, y, l);
}

void Ia3Adapter::visit_params(const std::function<void(const std::string&, Var&)>& fn) { fn("ia3_l", l); }

void Ia3Adapter::merge_into(Tensor& w) const {
  QP_CHECK(w.dtype() == DType::F32 && w.shape().size() == 2, "[ia3 merge] weight {} is not an f32 matrix", w.describe());
  const int64_t out = w.dim(0), in = w.dim(1);
  const float* v = l.value().f32();
  float* p = w.f32();
  if (feedforward) {
    QP_CHECK(l.value().numel() == in, "[ia3 merge] vector {} does not fit weight {}", l.value().describe(), w.describe());
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) p[o * in + i] *= v[i];
  } else {
    QP_CHECK(l.value().numel() == out, "[ia3 merge] vector {} does not fit weight {}", l.value().describe(), w.describe());
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i) p[o * in + i] *= v[o];
  }
}

void Ia3Adapter::merge_bias_into(Tensor& b) const {
  if (feedforward) return;  // the input scaling does not reach the bias
  QP_CHECK(b.dtype() == DType::F32 && b.numel() == l.value().numel(), "[ia3 merge] bias {} does not fit vector {}",
           b.describe(), l.value().describe());
  const float* v = l.value().f32();
  float* p = b.f32();
  for (int64_t o = 0; o < b.numel(); ++o) p[o] *= v[o];
}

int64_t inject_ia3(LlamaModel& model, const Ia3Config& cfg) {
  const auto targets = cfg.resolved_targets();
  cfg.resolved_feedforward();  // the subset check
  int64_t n = 0;
  model.visit_linears([&](Linear& l) {
    if (!contains(targets, l.kind)) return;
    QP_CHECK(!l.adapter, "{} already has an adapter", l.name);
    l.adapter = std::make_shared<Ia3Adapter>(l, cfg.is_feedforward(l.name));
    ++n;
  });
  QP_CHECK(n > 0, "no linear layer matched the (IA)³ targets");
  return n;
}

}  // namespace qpeft
