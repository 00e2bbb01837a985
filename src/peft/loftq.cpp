#include "peft/loftq.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/error.h"
#include "core/rng.h"

namespace qpeft {

namespace {

// Σ (a_i − b_i − c_i)² in double; c may be null.
double sq_diff(const float* a, const float* b, const double* c, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(b[i]) - (c ? c[i] : 0.0);
    s += d * d;
  }
  return s;
}

}  // namespace

LoftqMatrixResult loftq_matrix(const Tensor& w, const LoftqMatrixOptions& opt, const std::string& name) {
  QP_CHECK(w.defined() && w.ndim() == 2, "[loftq] '{}' must be a 2-d weight [out, in]", name);
  const int64_t m = w.dim(0), n = w.dim(1), r = opt.rank;
  QP_CHECK(r >= 1 && r <= std::min(m, n), "[loftq] '{}' [{}, {}]: rank {} must be in [1, min(out, in) = {}] (--rank)",
           name, m, n, r, std::min(m, n));
  QP_CHECK(opt.iters >= 1, "[loftq] '{}': --iters must be at least 1 (got {})", name, opt.iters);
  QP_CHECK(opt.scaling > 0 && std::isfinite(opt.scaling), "[loftq] '{}': LoRA scaling {} must be positive (--alpha)",
           name, opt.scaling);
  check_block_size(opt.block_size, "--block-size");
  QP_CHECK((m * n) % opt.block_size == 0,
           "[loftq] '{}' [{}, {}]: block size {} does not divide the {} elements; choose a --block-size that divides "
           "the row length",
           name, m, n, opt.block_size, m * n);
  QuantizedWeight::Options qo;
  qo.block_size = opt.block_size;
  qo.double_quant = opt.double_quant;
  qo.rounding = opt.rounding;
  qo.original_dtype = w.dtype();  // later iterations quantize an f32 residual of this weight
  if (!qo.rounding) qo.rounding = quant_format_info(opt.format).default_rounding;

  Tensor W = w.dtype() == DType::F32 ? w : w.to(DType::F32);
  const float* wp = W.f32();
  const int64_t numel = m * n;
  LoftqMatrixResult out;
  for (int64_t i = 0; i < numel; ++i) out.weight_norm += double(wp[i]) * double(wp[i]);
  out.weight_norm = std::sqrt(out.weight_norm);

  Tensor res = W;  // what the next quantization sees
  std::vector<double> work(static_cast<size_t>(numel));  // W − Q for the SVD, then L R
  std::vector<double> L(size_t(m * r)), R(size_t(r * n));
  Tensor deq;
  for (int t = 0; t < opt.iters; ++t) {
    out.q = std::make_shared<QuantizedWeight>(QuantizedWeight::quantize(res, opt.format, qo, name));
    deq = out.q->dequantize();
    const float* qp = deq.f32();
    if (t == 0) out.plain_error = std::sqrt(sq_diff(wp, qp, nullptr, numel));
    for (int64_t i = 0; i < numel; ++i) work[size_t(i)] = double(wp[i] - qp[i]);  // float32 residual, as PEFT
    TruncatedSvd svd = truncated_svd(work.data(), m, n, r, opt.svd, name);
    out.svd_method = svd.method;
    for (int64_t j = 0; j < r; ++j) {
      const double s = std::sqrt(std::max(0.0, svd.S[size_t(j)]));
      for (int64_t i = 0; i < m; ++i) L[size_t(i * r + j)] = svd.U[size_t(i * r + j)] * s;
      for (int64_t i = 0; i < n; ++i) R[size_t(j * n + i)] = s * svd.Vh[size_t(j * n + i)];
    }
    if (t + 1 < opt.iters) {
      parallel_dgemm(false, false, m, n, r, L.data(), R.data(), work.data());  // L R [m, n]
      Tensor next = Tensor::empty({m, n});
      float* np = next.f32();
      for (int64_t i = 0; i < numel; ++i) np[i] = float(double(wp[i]) - work[size_t(i)]);
      res = next;
    }
  }
  // s·B·A = L R: B = L / sqrt(s), A = R / sqrt(s).
  const double inv = 1.0 / std::sqrt(opt.scaling);
  out.A = Tensor::empty({r, n});
  out.B = Tensor::empty({m, r});
  for (int64_t i = 0; i < r * n; ++i) out.A.f32()[i] = float(R[size_t(i)] * inv);
  for (int64_t i = 0; i < m * r; ++i) out.B.f32()[i] = float(L[size_t(i)] * inv);
  // ‖W − Q − s·B·A‖ from the stored f32 factors.
  std::vector<double> a(size_t(r * n)), b(size_t(m * r));
  for (int64_t i = 0; i < r * n; ++i) a[size_t(i)] = double(out.A.f32()[i]);
  for (int64_t i = 0; i < m * r; ++i) b[size_t(i)] = double(out.B.f32()[i]) * opt.scaling;
  parallel_dgemm(false, false, m, n, r, b.data(), a.data(), work.data());
  out.loftq_error = std::sqrt(sq_diff(wp, deq.f32(), work.data(), numel));
  return out;
}

// ---- --layer-quant ----

namespace {

const std::vector<std::string> kAttnKinds = {"q_proj", "k_proj", "v_proj", "o_proj"};
const std::vector<std::string> kMlpKinds = {"gate_proj", "up_proj", "down_proj"};

bool parse_kinds(const std::string& s, std::vector<std::string>* kinds) {
  if (s == "self_attn") *kinds = kAttnKinds;
  else if (s == "mlp") *kinds = kMlpKinds;
  else if (std::find(kAttnKinds.begin(), kAttnKinds.end(), s) != kAttnKinds.end() ||
           std::find(kMlpKinds.begin(), kMlpKinds.end(), s) != kMlpKinds.end())
    *kinds = {s};
  else return false;
  return true;
}

bool parse_index(const std::string& s, int64_t* v) {
  if (s.empty() || s.size() > 9 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  *v = std::stoll(s);
  return true;
}

}  // namespace

LayerQuantPlan LayerQuantPlan::parse(const std::string& spec, QuantFormat fallback, const char* flag) {
  LayerQuantPlan p;
  p.fallback_ = fallback;
  p.spec_ = spec;
  std::stringstream ss(spec);
  std::string entry;
  const char* help =
      "expected SELECTOR=FORMAT with SELECTOR one of *, a module (q_proj ... down_proj, self_attn, mlp), layers.N or "
      "layers.A-B (optionally followed by .MODULE), e.g. 'layers.0-3=nf4,*=nf2'";
  while (std::getline(ss, entry, ',')) {
    if (entry.empty()) continue;
    const size_t eq = entry.rfind('=');
    QP_CHECK(eq != std::string::npos && eq > 0, "{} entry '{}': {}", flag, entry, help);
    const std::string sel = entry.substr(0, eq), fmt_name = entry.substr(eq + 1);
    Rule rule;
    QP_CHECK(parse_quant_format(fmt_name, &rule.format) && rule.format != QuantFormat::Dynamic8 &&
                 rule.format != QuantFormat::Int8,
             "{} entry '{}': unknown format '{}' (choose nf2, nf3, nf4, fp4, uniform2, uniform3, uniform4)", flag,
             entry, fmt_name);
    if (sel != "*") {
      std::string rest = sel;
      if (rest.rfind("layers.", 0) == 0) {
        rest = rest.substr(7);
        const size_t dot = rest.find('.');
        const std::string range = rest.substr(0, dot);
        rest = dot == std::string::npos ? "" : rest.substr(dot + 1);
        const size_t dash = range.find('-');
        bool ok = dash == std::string::npos
                      ? parse_index(range, &rule.layer_lo)
                      : parse_index(range.substr(0, dash), &rule.layer_lo) &&
                            parse_index(range.substr(dash + 1), &rule.layer_hi);
        if (dash == std::string::npos) rule.layer_hi = rule.layer_lo;
        QP_CHECK(ok && rule.layer_lo <= rule.layer_hi, "{} entry '{}': layer range '{}' is not N or A-B with A <= B",
                 flag, entry, range);
        QP_CHECK(dot == std::string::npos || !rest.empty(), "{} entry '{}': {}", flag, entry, help);
      }
      QP_CHECK(rest.empty() || parse_kinds(rest, &rule.kinds), "{} entry '{}': unknown module '{}'; {}", flag, entry,
               rest, help);
    }
    p.rules_.push_back(rule);
  }
  return p;
}

QuantFormat LayerQuantPlan::format_for(const Linear& l) const {
  for (const Rule& r : rules_) {
    if (r.layer_lo >= 0 && (l.layer < r.layer_lo || l.layer > r.layer_hi)) continue;
    if (!r.kinds.empty() && std::find(r.kinds.begin(), r.kinds.end(), l.kind) == r.kinds.end()) continue;
    return r.format;
  }
  return fallback_;
}

// ---- the whole model ----

LoftqSummary apply_loftq(LlamaModel& model, const LoftqOptions& opt) {
  const auto targets = opt.lora.resolved_targets();
  QP_CHECK(opt.lora.dropout >= 0 && opt.lora.dropout < 1, "LoRA dropout must be in [0, 1) (got {})", opt.lora.dropout);
  std::vector<Linear*> todo;
  model.visit_linears([&](Linear& l) {
    if (std::find(targets.begin(), targets.end(), l.kind) == targets.end()) return;
    QP_CHECK(!l.adapter, "[loftq] {} already has an adapter", l.name);
    const auto* dense = dynamic_cast<const DenseWeight*>(l.weight.get());
    QP_CHECK(dense, "[loftq] {} is already quantized ({}); LoftQ needs the dense (bf16/f16/f32) weights: start "
             "from the original checkpoint, or `qpeft dequantize` it first (the result keeps the quantization error)",
             l.name, l.weight->describe());
    const int64_t r = opt.lora.rank_for(l.name);
    QP_CHECK(r >= 1 && r <= std::min(l.out_features, l.in_features),
             "[loftq] {} [{}, {}]: rank {} is above min(out, in) = {} (--rank / --rank-pattern)", l.name,
             l.out_features, l.in_features, r, std::min(l.out_features, l.in_features));
    QP_CHECK(l.in_features % opt.block_size == 0,
             "[loftq] {} [{}, {}]: --block-size {} does not divide the row length {}", l.name, l.out_features,
             l.in_features, opt.block_size, l.in_features);
    todo.push_back(&l);
  });
  QP_CHECK(!todo.empty(), "[loftq] no linear layer matched the targets");
  LoftqSummary sum;
  for (size_t i = 0; i < todo.size(); ++i) {
    Linear& l = *todo[i];
    const auto* dense = static_cast<const DenseWeight*>(l.weight.get());
    LoftqMatrixOptions mo;
    mo.format = opt.quant.format_for(l);
    mo.block_size = opt.block_size;
    mo.double_quant = opt.double_quant;
    mo.rank = opt.lora.rank_for(l.name);
    mo.scaling = opt.lora.scaling_for(l.name);
    mo.iters = opt.iters;
    mo.svd = opt.svd;
    mo.svd.seed = splitmix64(opt.svd.seed ^ fnv1a64(l.name.data(), l.name.size()));
    LoftqMatrixResult res = loftq_matrix(dense->tensor(), mo, l.name + ".weight");
    auto ad = std::make_shared<LoraAdapter>(l, mo.rank, mo.scaling, opt.lora.dropout);
    ad->A.mutable_value() = res.A;
    ad->B.mutable_value() = res.B;
    l.weight = res.q;
    l.adapter = ad;
    sum.layers++;
    sum.quantized_params += res.q->numel();
    sum.quantized_bytes += res.q->storage_bytes();
    sum.params_by_format[quant_format_name(mo.format)] += res.q->numel();
    sum.plain_error2 += res.plain_error * res.plain_error;
    sum.loftq_error2 += res.loftq_error * res.loftq_error;
    sum.weight_norm2 += res.weight_norm * res.weight_norm;
    if (opt.on_layer) opt.on_layer(int64_t(i + 1), int64_t(todo.size()), l, res);
  }
  return sum;
}

void record_loftq(const LoftqOptions& opt, LoraConfig* cfg) {
  const char* fallback = quant_format_name(opt.quant.fallback());
  cfg->loftq_quant =
      opt.quant.spec().empty() ? std::string(fallback) : fmt::format("{};default={}", opt.quant.spec(), fallback);
  cfg->loftq_block_size = opt.block_size;
  cfg->loftq_double_quant = opt.double_quant;
  cfg->loftq_iters = opt.iters;
}

}  // namespace qpeft
