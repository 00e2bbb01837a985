#include "io/bnb_checkpoint.h"

#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/thread_pool.h"
#include "io/json_reader.h"

namespace qpeft {

using nlohmann::json;

namespace {

constexpr const char* kStateInfix = ".quant_state.";
constexpr const char* kBnbPrefix = "bitsandbytes__";
constexpr const char* kQpeftPrefix = "qpeft__";

const char* torch_dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    default: fail("[bnb] original weight dtype {} has no torch floating-point name", dtype_name(dt));
  }
}

bool parse_torch_dtype(const std::string& s, DType* dt) {
  if (s == "float32") *dt = DType::F32;
  else if (s == "float16") *dt = DType::F16;
  else if (s == "bfloat16") *dt = DType::BF16;
  else return false;
  return true;
}

// Python's repr of a float (what json.dumps writes): shortest round-trip digits, ".0" on
// integral values, exponent form below 1e-4 and from 1e16 ("1e-05", "1e+16").
std::string python_float(double v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".eni") == std::string::npos) s += ".0";
  return s;
}

std::string state_json(QuantFormat f, int64_t block, DType orig, int64_t rows, int64_t cols, bool dq, float offset) {
  std::string s = fmt::format(R"({{"quant_type": "{}", "blocksize": {}, "dtype": "{}", "shape": [{}, {}])",
                              quant_format_name(f), block, torch_dtype_name(orig), rows, cols);
  if (dq)
    s += fmt::format(R"(, "nested_blocksize": {}, "nested_dtype": "float32", "nested_offset": {})",
                     DoubleQuantScales::kNestedBlock, python_float(double(offset)));
  return s + "}";
}

// Names of the pieces of one weight.
struct PieceNames {
  std::string weight, absmax, quant_map, nested_absmax, nested_quant_map, state;
  PieceNames(const std::string& w, QuantFormat f)
      : weight(w),
        absmax(w + ".absmax"),
        quant_map(w + ".quant_map"),
        nested_absmax(w + ".nested_absmax"),
        nested_quant_map(w + ".nested_quant_map"),
        state(w + kStateInfix + quant_state_tag(f)) {}
};

void copy_floats(std::span<const float> v, void* dst) { std::memcpy(dst, v.data(), v.size_bytes()); }

// ---- reading ----

struct Reader {
  const TensorStore& store;
  const std::string& weight;

  const std::string& file(const std::string& name) const { return store.file_of(name); }

  const SafetensorsFile::Entry& entry(const std::string& name, const char* why) const {
    const SafetensorsFile::Entry* e = store.find(name);
    QP_CHECK(e, "[bnb] {}: tensor '{}' is missing; the quantized weight '{}' needs it ({}). Re-export the "
             "checkpoint with bitsandbytes or `qpeft quantize`",
             store.source(), name, weight, why);
    return *e;
  }

  // A tensor that must have exactly this dtype and shape.
  Tensor get(const std::string& name, DType dt, const Shape& shape, const char* why) const {
    const auto& e = entry(name, why);
    QP_CHECK(e.supported && e.dtype == dt && e.shape == shape,
             "[bnb] {}: tensor '{}' is {}{}, expected {}{} for {} ({}); is the file truncated or written for "
             "another shape or blocksize?",
             file(name), name, e.dtype_name, shape_str(e.shape), dtype_info(dt).safetensors_name, shape_str(shape),
             weight, why);
    return store.get(name);
  }

  std::vector<float> floats(const std::string& name, const Shape& shape, const char* why) const {
    Tensor t = get(name, DType::F32, shape, why);
    const float* p = static_cast<const float*>(t.raw());
    for (int64_t i = 0; i < t.numel(); ++i)
      QP_CHECK(std::isfinite(p[i]), "[bnb] {}: tensor '{}' holds a non-finite value ({}) at index {}", file(name),
               name, p[i], i);
    return std::vector<float>(p, p + t.numel());
  }
};

json parse_state(const Reader& rd, const std::string& key) {
  const auto& e = rd.entry(key, "its quant_state JSON");
  QP_CHECK(e.supported && e.dtype == DType::U8 && e.shape.size() == 1 && e.shape[0] > 0,
           "[bnb] {}: tensor '{}' must be a non-empty 1-d U8 tensor of JSON bytes, found {}{}", rd.file(key), key,
           e.dtype_name, shape_str(e.shape));
  Tensor t = rd.store.get(key);
  std::string text(static_cast<const char*>(t.raw()), t.nbytes());
  const json j = parse_json(text, fmt::format("[bnb] {}: tensor '{}'", rd.file(key), key));
  QP_CHECK(j.is_object(), "[bnb] {}: tensor '{}' must hold a JSON object, found {}", rd.file(key), key,
           describe_json(j));
  return j;
}

template <class Pred>
const json& field(const json& j, const char* name, Pred ok, const char* want, const Reader& rd,
                  const std::string& key) {
  auto it = j.find(name);
  QP_CHECK(it != j.end(), "[bnb] {}: tensor '{}': the quant_state JSON has no \"{}\" ({} expected)", rd.file(key),
           key, name, want);
  QP_CHECK(ok(*it), "[bnb] {}: tensor '{}': quant_state \"{}\" is {}, expected {}", rd.file(key), key, name,
           it->dump(), want);
  return *it;
}

}  // namespace

std::string quant_state_tag(QuantFormat f) {
  return std::string(is_bnb_format(f) ? kBnbPrefix : kQpeftPrefix) + quant_format_name(f);
}

bool is_bnb_format(QuantFormat f) { return f == QuantFormat::NF4 || f == QuantFormat::FP4; }

bool parse_quant_state_tag(std::string_view tag, QuantFormat* f) {
  QuantFormat g;
  if (tag.starts_with(kBnbPrefix)) {
    if (!parse_quant_format(tag.substr(std::strlen(kBnbPrefix)), &g) || !is_bnb_format(g)) return false;
  } else if (tag.starts_with(kQpeftPrefix)) {
    if (!parse_quant_format(tag.substr(std::strlen(kQpeftPrefix)), &g) || is_bnb_format(g)) return false;
  } else {
    return false;
  }
  *f = g;
  return true;
}

std::map<std::string, std::string> find_quantized_weights(const TensorStore& store) {
  std::map<std::string, std::string> out;
  for (const std::string& name : store.names()) {
    const size_t p = name.rfind(kStateInfix);
    if (p == std::string::npos || p == 0) continue;
    std::string weight = name.substr(0, p);
    auto [it, fresh] = out.emplace(weight, name);
    QP_CHECK(fresh, "[bnb] {}: weight '{}' has two quant_state tensors, '{}' and '{}'; keep one", store.source(),
             weight, it->second, name);
  }
  return out;
}

std::shared_ptr<QuantizedWeight> read_bnb_weight(const TensorStore& store, const std::string& weight_name,
                                                 const std::string& state_key, const Shape& expected) {
  Reader rd{store, weight_name};
  const std::string& sfile = rd.file(state_key);
  const std::string tag = state_key.substr(state_key.rfind(kStateInfix) + std::strlen(kStateInfix));
  QuantFormat format;
  if (!parse_quant_state_tag(tag, &format)) {
    std::string known;
    for (int i = 0; i < int(QuantFormat::kCount); ++i) known += (i ? ", " : "") + quant_state_tag(QuantFormat(i));
    fail("[bnb] {}: tensor '{}': unknown quantization type '{}' (qpeft reads {})", sfile, state_key, tag, known);
  }
  const json j = parse_state(rd, state_key);
  const std::string qt = field(j, "quant_type", [](const json& v) { return v.is_string(); }, "a string", rd, state_key)
                             .get<std::string>();
  QP_CHECK(qt == quant_format_name(format), "[bnb] {}: tensor '{}': quant_type \"{}\" does not match the key's '{}'",
           sfile, state_key, qt, tag);
  const int64_t block =
      field(j, "blocksize", [](const json& v) { return v.is_number_integer(); }, "an integer", rd, state_key)
          .get<int64_t>();
  QP_CHECK(block >= 32 && block <= 4096 && (block & (block - 1)) == 0,
           "[bnb] {}: tensor '{}': blocksize {} must be a power of two in [32, 4096]", sfile, state_key, block);
  DType orig;
  const std::string dts =
      field(j, "dtype", [](const json& v) { return v.is_string(); }, "a string", rd, state_key).get<std::string>();
  QP_CHECK(parse_torch_dtype(dts, &orig), "[bnb] {}: tensor '{}': dtype \"{}\" must be float32, float16 or bfloat16",
           sfile, state_key, dts);
  const json& js = field(
      j, "shape",
      [](const json& v) {
        if (!v.is_array() || v.size() != 2) return false;
        for (const auto& d : v)
          if (!d.is_number_integer() || d.get<int64_t>() <= 0 || d.get<int64_t>() > (int64_t(1) << 31)) return false;
        return true;
      },
      "[out, in] with two positive integers", rd, state_key);
  const int64_t rows = js[0].get<int64_t>(), cols = js[1].get<int64_t>();
  if (!expected.empty())
    QP_CHECK(expected == Shape({rows, cols}),
             "[bnb] {}: tensor '{}': quant_state shape [{}, {}] but the model (config.json) expects '{}' to be {}",
             sfile, state_key, rows, cols, weight_name, shape_str(expected));

  const PieceNames pn(weight_name, format);
  const bool nested = j.contains("nested_offset") || j.contains("nested_blocksize") || store.has(pn.nested_absmax);
  const int64_t n = rows * cols, nb = num_blocks(n, block), bits = quant_bits(format);
  const std::string why = fmt::format("{}[{}, {}] block {}", quant_format_name(format), rows, cols, block);

  // weight: packed codes. bitsandbytes keeps [bytes / storage size, 1] (quant_storage uint8 by default).
  const auto& we = rd.entry(pn.weight, "its packed codes");
  const uint64_t want_bytes = uint64_t(packed_bytes(n, int(bits)));
  QP_CHECK(we.supported && we.shape.size() == 2 && we.shape[1] == 1 && we.nbytes() == want_bytes &&
               dtype_size(we.dtype) * uint64_t(we.shape[0]) == want_bytes,
           "[bnb] {}: tensor '{}' is {}{} ({} bytes), expected U8[{}, 1] ({} bytes of packed {}-bit codes for {})",
           rd.file(pn.weight), pn.weight, we.dtype_name, shape_str(we.shape), we.nbytes(), want_bytes, want_bytes,
           bits, why);
  Tensor wt = store.get(pn.weight);
  const uint8_t* wp = static_cast<const uint8_t*>(wt.raw());
  std::vector<uint8_t> packed(wp, wp + want_bytes);

  // The code book must be ours (the kernels decode with it).
  const std::vector<float> qmap = rd.floats(pn.quant_map, {int64_t(1) << bits}, why.c_str());
  const auto book = codebook(format);
  for (size_t i = 0; i < qmap.size(); ++i)
    QP_CHECK(std::fabs(qmap[i] - book[i]) <= 1e-6f * std::max(1.0f, std::fabs(book[i])),
             "[bnb] {}: tensor '{}'[{}] = {} differs from the {} code book ({}); qpeft decodes with the standard "
             "code book only",
             rd.file(pn.quant_map), pn.quant_map, i, qmap[i], quant_format_name(format), book[i]);

  std::vector<float> absmax;
  std::optional<DoubleQuantScales> dq;
  if (nested) {
    const int64_t nblock = field(j, "nested_blocksize", [](const json& v) { return v.is_number_integer(); },
                                 "an integer", rd, state_key)
                               .get<int64_t>();
    QP_CHECK(nblock == DoubleQuantScales::kNestedBlock,
             "[bnb] {}: tensor '{}': nested_blocksize {} is not supported (bitsandbytes uses {})", sfile, state_key,
             nblock, DoubleQuantScales::kNestedBlock);
    const std::string ndt = field(j, "nested_dtype", [](const json& v) { return v.is_string(); }, "a string", rd,
                                  state_key)
                                .get<std::string>();
    QP_CHECK(ndt == "float32", "[bnb] {}: tensor '{}': nested_dtype \"{}\" is not supported (float32)", sfile,
             state_key, ndt);
    const double off = field(j, "nested_offset", [](const json& v) { return v.is_number(); }, "a number", rd,
                             state_key)
                           .get<double>();
    QP_CHECK(std::isfinite(off), "[bnb] {}: tensor '{}': nested_offset {} is not finite", sfile, state_key, off);
    DoubleQuantScales s;
    s.offset = float(off);
    Tensor q = rd.get(pn.absmax, DType::U8, {nb}, "double-quantized: one 8-bit scale code per block");
    const uint8_t* qp = static_cast<const uint8_t*>(q.raw());
    s.qabsmax.assign(qp, qp + nb);
    s.nested_absmax = rd.floats(pn.nested_absmax, {num_blocks(nb, DoubleQuantScales::kNestedBlock)},
                                "double-quantized: one f32 scale per 256 blocks");
    s.nested_map = rd.floats(pn.nested_quant_map, {256}, "double-quantized: the 8-bit dynamic map");
    dq = std::move(s);
  } else {
    QP_CHECK(!store.has(pn.nested_quant_map),
             "[bnb] {}: '{}' exists but the quant_state has no nested_* fields; the weight is half double-quantized",
             rd.file(pn.nested_quant_map), pn.nested_quant_map);
    absmax = rd.floats(pn.absmax, {nb}, "one f32 scale per block");
  }
  // The buffers were copied: let the OS drop the file pages, or a 7B model counts twice in RSS.
  for (const std::string& key : {pn.weight, pn.absmax, pn.nested_absmax})
    if (store.has(key)) store.release(key);
  return std::make_shared<QuantizedWeight>(QuantizedWeight::from_parts(format, rows, cols, block, std::move(packed),
                                                                       std::move(absmax), std::move(dq), weight_name,
                                                                       orig));
}

std::string bnb_quant_state_json(const QuantizedWeight& q) {
  return state_json(q.format(), q.block_size(), q.original_dtype(), q.rows(), q.cols(), q.double_quant(),
                    q.double_quant() ? q.dq_scales()->offset : 0.0f);
}

void add_bnb_weight(SafetensorsWriter& w, const std::string& weight_name, std::shared_ptr<const QuantizedWeight> q) {
  const PieceNames pn(weight_name, q->format());
  const int64_t nb = q->num_blocks();
  w.add(pn.weight, DType::U8, {int64_t(q->packed().size()), 1},
        [q](void* dst) { std::memcpy(dst, q->packed().data(), q->packed().size()); });
  if (q->dq_scales()) {
    w.add(pn.absmax, DType::U8, {nb}, [q](void* dst) { std::memcpy(dst, q->dq_scales()->qabsmax.data(), q->num_blocks()); });
  } else {
    w.add(pn.absmax, DType::F32, {nb}, [q](void* dst) { copy_floats(q->absmax(), dst); });
  }
  w.add(pn.quant_map, DType::F32, {int64_t(q->quant_map().size())}, [q](void* dst) { copy_floats(q->quant_map(), dst); });
  if (const DoubleQuantScales* dq = q->dq_scales()) {
    w.add(pn.nested_absmax, DType::F32, {int64_t(dq->nested_absmax.size())},
          [q](void* dst) { copy_floats(q->dq_scales()->nested_absmax, dst); });
    w.add(pn.nested_quant_map, DType::F32, {int64_t(dq->nested_map.size())},
          [q](void* dst) { copy_floats(q->dq_scales()->nested_map, dst); });
  }
  const std::string js = bnb_quant_state_json(*q);
  w.add(pn.state, DType::U8, {int64_t(js.size())}, [js](void* dst) { std::memcpy(dst, js.data(), js.size()); });
}

namespace {

// One weight quantized while written: the scales are computed once and kept until every
// piece that needs them is written; the codes are quantized again when the writer reaches
// them (bit-identical: same values, same scales), so only one weight is ever in memory.
struct LazyQuant {
  std::string name;
  int64_t rows, cols;
  DType orig;
  LazyQuantSpec spec;
  std::function<Tensor()> source;
  QuantizedObserver observer;
  bool have_scales = false;
  std::vector<float> absmax;  // without double quantization
  std::optional<DoubleQuantScales> dq;
  int scale_users = 0;  // pieces still to write that read the scales

  void set_scales(std::vector<float> a) {
    if (spec.double_quant) {
      dq = double_quantize(a.data(), int64_t(a.size()));
    } else {
      absmax = std::move(a);
    }
    have_scales = true;
  }

  // Block scales exactly as QuantizedWeight::quantize computes them, tile by tile.
  void ensure_scales() {
    if (have_scales) return;
    const Tensor t = source();
    check_source(t);
    const int64_t n = rows * cols, B = spec.block_size, nb = num_blocks(n, B);
    const ScaleRule rule = BlockQuantOptions::defaults(spec.format).scale;
    std::vector<float> a(size_t(nb), 0.0f);
    const int64_t cb = std::max<int64_t>(1, 65536 / B), n_chunks = (nb + cb - 1) / cb;
    const char* src = static_cast<const char*>(t.raw());
    const size_t es = dtype_size(t.dtype());
    pool().parallel_for(n_chunks, [&](int64_t c0, int64_t c1) {
      std::vector<float> tile(size_t(cb * B));
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t e0 = c * cb * B, len = std::min(n, e0 + cb * B) - e0;
        convert_to_f32(src + size_t(e0) * es, t.dtype(), tile.data(), size_t(len));
        for (int64_t b = 0; b * B < len; ++b)
          a[size_t(e0 / B + b)] = block_scale(tile.data() + b * B, std::min(B, len - b * B), rule);
      }
    });
    set_scales(std::move(a));
  }

  void check_source(const Tensor& t) const {
    QP_CHECK(t.defined() && t.shape() == Shape({rows, cols}),
             "[bnb] '{}': the weight to quantize is {}, expected [{}, {}]", name,
             t.defined() ? t.describe() : std::string("undefined"), rows, cols);
  }

  void release_scales() {
    if (--scale_users > 0) return;
    absmax = {};
    dq.reset();
  }

  void write_codes(void* dst) {
    const Tensor t = source();
    check_source(t);
    QuantizedWeight q = QuantizedWeight::quantize(t, spec.format, spec.block_size, spec.double_quant, name);
    if (!have_scales) {
      if (q.dq_scales()) dq = *q.dq_scales();
      else absmax = q.absmax();
      have_scales = true;
    } else if (scale_users > 0) {
      const bool same = q.dq_scales() ? q.dq_scales()->qabsmax == dq->qabsmax &&
                                            q.dq_scales()->nested_absmax == dq->nested_absmax &&
                                            q.dq_scales()->offset == dq->offset
                                      : q.absmax() == absmax;
      QP_CHECK(same, "[bnb] '{}': the weight's values changed between the two passes of quantize-while-writing", name);
    }
    std::memcpy(dst, q.packed().data(), q.packed().size());
    if (observer) observer(q, t);
  }
};

}  // namespace

void add_bnb_weight_lazy(SafetensorsWriter& w, const std::string& weight_name, const Shape& shape,
                         DType original_dtype, const LazyQuantSpec& spec, std::function<Tensor()> source,
                         QuantizedObserver observer) {
  QP_CHECK(shape.size() == 2 && shape[0] > 0 && shape[1] > 0, "[bnb] '{}': shape {} must be [out, in]", weight_name,
           shape_str(shape));
  check_block_size(spec.block_size, "quantize");
  auto job = std::make_shared<LazyQuant>();
  job->name = weight_name;
  job->rows = shape[0];
  job->cols = shape[1];
  job->orig = original_dtype;
  job->spec = spec;
  job->source = std::move(source);
  job->observer = std::move(observer);
  const QuantFormat f = spec.format;
  const PieceNames pn(weight_name, f);
  const int64_t n = shape[0] * shape[1], nb = num_blocks(n, spec.block_size);

  w.add(pn.weight, DType::U8, {packed_bytes(n, quant_bits(f)), 1}, [job](void* dst) { job->write_codes(dst); });
  job->scale_users = spec.double_quant ? 2 : 1;  // absmax (+ nested_absmax)
  w.add(pn.absmax, spec.double_quant ? DType::U8 : DType::F32, {nb}, [job](void* dst) {
    job->ensure_scales();
    if (job->dq) std::memcpy(dst, job->dq->qabsmax.data(), job->dq->qabsmax.size());
    else copy_floats(job->absmax, dst);
    job->release_scales();
  });
  w.add(pn.quant_map, DType::F32, {int64_t(1) << quant_bits(f)}, [f](void* dst) { copy_floats(codebook(f), dst); });
  float offset = 0.0f;
  if (spec.double_quant) {
    w.add(pn.nested_absmax, DType::F32, {num_blocks(nb, DoubleQuantScales::kNestedBlock)}, [job](void* dst) {
      job->ensure_scales();
      copy_floats(job->dq->nested_absmax, dst);
      job->release_scales();
    });
    w.add(pn.nested_quant_map, DType::F32, {256},
          [](void* dst) { copy_floats(codebook(QuantFormat::Dynamic8), dst); });
    job->ensure_scales();  // the offset goes into the header
    offset = job->dq->offset;
  }
  const std::string js = state_json(f, spec.block_size, original_dtype, shape[0], shape[1], spec.double_quant, offset);
  w.add(pn.state, DType::U8, {int64_t(js.size())}, [js](void* dst) { std::memcpy(dst, js.data(), js.size()); });
}

}  // namespace qpeft
