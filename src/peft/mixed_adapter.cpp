#include "peft/mixed_adapter.h"

#include <cstring>

#include "core/error.h"
#include "core/file.h"

namespace qpeft {

namespace {

// rows of t viewed as [numel / d, d], gathered into [rows.size(), d].
Tensor gather_rows(const Tensor& t, const std::vector<int64_t>& rows, int64_t d) {
  Tensor out = Tensor::empty({int64_t(rows.size()), d});
  const float* src = t.f32();
  float* dst = out.f32();
  for (size_t i = 0; i < rows.size(); ++i) std::memcpy(dst + int64_t(i) * d, src + rows[i] * d, size_t(d) * 4);
  return out;
}

// dst[rows[i]] = src[i], rows of d values.
void scatter_rows(const Tensor& src, const std::vector<int64_t>& rows, int64_t d, Tensor& dst) {
  QP_CHECK(src.numel() == int64_t(rows.size()) * d, "[mixed adapter] an adapter changed the shape {} of its rows",
           src.describe());
  const float* s = src.f32();
  float* p = dst.f32();
  for (size_t i = 0; i < rows.size(); ++i) std::memcpy(p + rows[i] * d, s + int64_t(i) * d, size_t(d) * 4);
}

// PEFT's in-memory key of an adapter's tensor: the adapter name after the suffix's first component.
std::string named_suffix(const std::string& suffix, const std::string& name) {
  const size_t dot = suffix.find('.');
  if (dot == std::string::npos) return suffix + "." + name;
  return suffix.substr(0, dot) + "." + name + suffix.substr(dot);
}

}  // namespace

MixedAdapter::MixedAdapter(std::string layer, std::shared_ptr<const RowAdapters> routing,
                           std::vector<std::string> names, std::vector<std::shared_ptr<LinearAdapter>> adapters)
    : layer_(std::move(layer)), routing_(std::move(routing)), names_(std::move(names)), adapters_(std::move(adapters)) {
  QP_CHECK(routing_ && names_.size() == adapters_.size() && !adapters_.empty(),
           "[mixed adapter] {}: {} names for {} adapters", layer_, names_.size(), adapters_.size());
}

std::vector<std::vector<int64_t>> MixedAdapter::groups(Graph& g, int64_t rows, int32_t* only) const {
  QP_CHECK(!g.grad_enabled(),
           "[mixed adapter] {}: mixed-adapter batches are for inference (run them under Graph(false)); train one "
           "adapter at a time",
           layer_);
  const std::vector<int32_t>& assigned = routing_->rows;
  std::vector<std::vector<int64_t>> out;
  if (assigned.empty()) {
    QP_CHECK(adapters_.size() == 1,
             "[mixed adapter] {}: {} adapters are loaded together, but the batch does not say which row uses which "
             "(LlamaModel::set_sequence_adapters)",
             layer_, adapters_.size());
    *only = 0;
    return out;
  }
  QP_CHECK(int64_t(assigned.size()) == rows, "[mixed adapter] {}: adapters assigned to {} token rows, but the input has {}",
           layer_, assigned.size(), rows);
  const int32_t n = int32_t(adapters_.size());
  *only = assigned[0];
  for (int32_t a : assigned) {
    QP_CHECK(a == kBaseAdapter || (a >= 0 && a < n), "[mixed adapter] {}: adapter index {} of {}", layer_, a, n);
    if (a != *only) *only = kMixed;
  }
  if (*only != kMixed) return out;
  out.resize(size_t(n));
  for (int64_t r = 0; r < rows; ++r)
    if (assigned[size_t(r)] != kBaseAdapter) out[size_t(assigned[size_t(r)])].push_back(r);
  return out;
}

bool MixedAdapter::adapts_input() const {
  for (const auto& a : adapters_)
    if (a && a->adapts_input()) return true;
  return false;
}

Var MixedAdapter::adapt_input(Graph& g, const Var& x) {
  // x: [..., in]; x'[rows of adapter k] = adapter k's adapt_input of those rows.
  const int64_t in = x.value().dim(-1), rows = x.value().numel() / in;
  int32_t only;
  const auto gr = groups(g, rows, &only);
  if (only != kMixed) return only != kBaseAdapter && adapters_[size_t(only)] ? adapters_[size_t(only)]->adapt_input(g, x) : x;
  Tensor out;
  for (size_t k = 0; k < adapters_.size(); ++k) {
    if (!adapters_[k] || !adapters_[k]->adapts_input() || gr[k].empty()) continue;
    Var xk = adapters_[k]->adapt_input(g, Var(gather_rows(x.value(), gr[k], in)));
    if (!out.defined()) out = x.value().clone();
    scatter_rows(xk.value(), gr[k], in, out);
  }
  return out.defined() ? Var(out) : x;
}

Var MixedAdapter::adapt_output(Graph& g, const Var& x, const Var& y) {
  // x: [..., in] (after adapt_input), y: [..., out], the base product of every row;
  // y'[rows of adapter k] = adapter k's adapt_output of those rows.
  const int64_t in = x.value().dim(-1), out_dim = y.value().dim(-1), rows = y.value().numel() / out_dim;
  int32_t only;
  const auto gr = groups(g, rows, &only);
  if (only != kMixed)
    return only != kBaseAdapter && adapters_[size_t(only)] ? adapters_[size_t(only)]->adapt_output(g, x, y) : y;
  Tensor out = y.value().clone();
  for (size_t k = 0; k < adapters_.size(); ++k) {
    if (!adapters_[k] || gr[k].empty()) continue;
    Var yk = adapters_[k]->adapt_output(g, Var(gather_rows(x.value(), gr[k], in)),
                                        Var(gather_rows(y.value(), gr[k], out_dim)));
    scatter_rows(yk.value(), gr[k], out_dim, out);
  }
  return Var(out);
}

void MixedAdapter::visit_params(const std::function<void(const std::string&, Var&)>& fn) {
  for (size_t k = 0; k < adapters_.size(); ++k)
    if (adapters_[k])
      adapters_[k]->visit_params([&](const std::string& suffix, Var& p) { fn(named_suffix(suffix, names_[k]), p); });
}

void MixedAdapter::merge_into(Tensor&) const {
  fail("[mixed adapter] {}: {} adapters are loaded together and do not merge into one weight; merge each alone",
       layer_, adapters_.size());
}

NamedAdapterDir parse_adapter_arg(const std::string& arg) {
  if (dir_exists(arg)) return {"default", arg};
  const size_t eq = arg.find('=');
  if (eq != std::string::npos && eq > 0 && arg.substr(0, eq).find('/') == std::string::npos) {
    QP_CHECK(eq + 1 < arg.size(), "--adapter '{}': no directory after the name (NAME=DIR)", arg);
    return {arg.substr(0, eq), arg.substr(eq + 1)};
  }
  return {"default", arg};
}

std::unique_ptr<LlamaModel> load_model_with_adapters(const std::string& model_dir,
                                                     const std::vector<NamedAdapterDir>& adapters,
                                                     const std::string& base_quant, std::string* note,
                                                     std::vector<AdapterConfig>* configs) {
  QP_CHECK(!adapters.empty(), "[mixed adapter] no adapters to load");
  std::vector<std::string> names;
  for (const auto& a : adapters) {
    QP_CHECK(!a.name.empty(), "--adapter: an empty adapter name (NAME=DIR)");
    QP_CHECK(a.name != kBaseAdapterName, "--adapter: '{}' is reserved for rows without an adapter; choose another name",
             kBaseAdapterName);
    for (size_t i = 0; i < names.size(); ++i)
      QP_CHECK(names[i] != a.name, "--adapter: the name '{}' is given twice ({} and {}); give each adapter its own "
               "NAME=DIR", a.name, adapters[i].dir, a.dir);
    names.push_back(a.name);
  }
  // One base for all: with auto, the quantization every adapter recorded, which must agree.
  QuantizeOptions recorded;
  if (base_quant == "auto") {
    for (size_t i = 0; i < adapters.size(); ++i) {
      const QuantizeOptions q = adapter_base_quantization(adapters[i].dir);
      if (i == 0) {
        recorded = q;
      } else if (q.format != recorded.format ||
                 (q.enabled() && (q.block_size != recorded.block_size || q.double_quant != recorded.double_quant))) {
        fail("adapters '{}' and '{}' were trained on differently quantized bases ({} vs {}), but they share one base "
             "here; choose how to load it with --base-quant (none, nf4, ...)",
             names[0], names[i], describe_base_quantization(recorded), describe_base_quantization(q));
      }
    }
  }
  const LoadOptions load = base_load_options(base_quant, recorded);
  auto model = load_model(model_dir, load);

  std::vector<Linear*> linears;
  model->visit_linears([&](Linear& l) { linears.push_back(&l); });
  std::vector<std::vector<std::shared_ptr<LinearAdapter>>> slots(linears.size(),
                                                                 std::vector<std::shared_ptr<LinearAdapter>>(adapters.size()));
  for (size_t k = 0; k < adapters.size(); ++k) {
    AdapterConfig cfg = load_adapter(*model, adapters[k].dir);
    if (base_quant == "auto") check_adapter_base(*model, cfg, adapters[k].dir, model_dir);
    for (size_t i = 0; i < linears.size(); ++i) slots[i][k] = std::move(linears[i]->adapter);
    if (configs) configs->push_back(std::move(cfg));
  }
  for (size_t i = 0; i < linears.size(); ++i) {
    bool any = false;
    for (const auto& s : slots[i]) any = any || s;
    if (any)
      linears[i]->adapter =
          std::make_shared<MixedAdapter>(linears[i]->name, model->row_adapters(), names, std::move(slots[i]));
  }
  if (note && load.quantize.enabled())
    *note = fmt::format("base linear weights quantized on load to {} (block {}{}){}", load.quantize.format,
                        load.quantize.block_size, load.quantize.double_quant ? ", double quantization" : "",
                        base_quant != "auto"      ? ""
                        : adapters.size() == 1 ? ", as the adapter was trained; --base-quant none uses the stored weights"
                                               : ", as the adapters were trained; --base-quant none uses the stored weights");
  return model;
}

}  // namespace qpeft
