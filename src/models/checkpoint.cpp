#include "models/checkpoint.h"

#include "io/gguf.h"
#include "text/gguf_tokenizer.h"
#include "models/gguf_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "io/bnb_checkpoint.h"
#include "io/safetensors.h"

namespace qpeft {

namespace {

QuantFormat parse_format_or_fail(const std::string& name, const char* what) {
  QuantFormat f;
  QP_CHECK(parse_quant_format(name, &f) && f != QuantFormat::Dynamic8,
           "{}: unknown quantization format '{}' (choose nf4, fp4, nf2, nf3, uniform2, uniform3, uniform4 or int8)",
           what, name);
  return f;
}

const char* torch_dtype_of(DType dt) {
  return dt == DType::F32 ? "float32" : dt == DType::F16 ? "float16" : "bfloat16";
}

Tensor dense_tensor(const FrozenWeight& w) {
  if (auto* d = dynamic_cast<const DenseWeight*>(&w)) return d->tensor();
  if (auto* q = dynamic_cast<const QuantizedWeight*>(&w)) return q->dequantize();
  Tensor t = Tensor::empty({w.rows(), w.cols()});
  const float* src = w.decode_rows(0, w.rows(), t.f32());
  if (src != t.f32() && t.nbytes()) std::memcpy(t.f32(), src, t.nbytes());
  return t;
}

// The quantization config.json declares for the formats a checkpoint was written with.
QuantizationConfig quantization_for(const std::map<std::string, int>& formats, bool all_dq, DType compute,
                                    const QuantizationConfig& previous) {
  if (formats.empty()) return {};
  const std::string type = formats.size() == 1 ? formats.begin()->first : "mixed";
  QuantizationConfig q = QuantizationConfig::bnb_4bit(type, all_dq, torch_dtype_of(compute));
  if (previous.present() && previous.quant_method == q.quant_method) {
    QuantizationConfig keep = previous;  // unknown keys and skip_modules round-trip
    keep.quant_type = q.quant_type;
    keep.double_quant = q.double_quant;
    keep.load_in_4bit = true;
    return keep;
  }
  return q;
}

// init-model's values: counter-based normals N(0, 0.02) (element i depends only on seed, name
// and i), or constant 1 (norms) / 0 (biases). n values of `dtype` into dst.
enum class InitKind { Normal, One, Zero };
void fill_random(uint64_t tensor_seed, int64_t n, InitKind kind, double init_std, DType dtype, void* dst) {
  constexpr int64_t kPairs = 16384;  // pairs converted per step: 128 KB of f32 per thread
  pool().parallel_for((n + 1) / 2, [&](int64_t p0, int64_t p1) {
    std::vector<float> buf(size_t(2 * std::min(kPairs, p1 - p0)));
    for (int64_t c0 = p0; c0 < p1; c0 += kPairs) {
      const int64_t c1 = std::min(p1, c0 + kPairs);
      float* b = buf.data();
      for (int64_t p = c0; p < c1; ++p) {
        if (kind != InitKind::Normal) {
          *b++ = kind == InitKind::One ? 1.0f : 0.0f;
          *b++ = kind == InitKind::One ? 1.0f : 0.0f;
          continue;
        }
        double u1 = std::max(1e-12, double(hash_uniform(tensor_seed, 0, uint64_t(p))));
        double u2 = double(hash_uniform(tensor_seed, 1, uint64_t(p)));
        double rad = std::sqrt(-2.0 * std::log(u1)) * init_std;
        *b++ = float(rad * std::cos(6.283185307179586 * u2));
        *b++ = float(rad * std::sin(6.283185307179586 * u2));
      }
      const int64_t i0 = 2 * c0, cnt = std::min(n, 2 * c1) - i0;
      convert_from_f32(buf.data(), dtype, static_cast<char*>(dst) + size_t(i0) * dtype_size(dtype), size_t(cnt));
    }
  });
}

void write_into(const std::string& dir, const std::string& config_json, const SafetensorsWriter& w,
                uint64_t max_shard_bytes, const std::function<void(const std::string&)>& extra_files = {}) {
  AtomicDir out(dir);
  write_file_atomic(out.path("config.json"), config_json);
  std::string tmp_dir = out.path("");
  tmp_dir.pop_back();
  w.write_sharded(tmp_dir, max_shard_bytes);
  if (extra_files) extra_files(tmp_dir);
  out.commit();
}

}  // namespace

bool read_only_in_part(const ModelConfig& cfg, const std::string& name) {
  return !cfg.tie_word_embeddings && name == "model.embed_tokens.weight";
}

bool copies_into_memory(const LoadOptions& opt, const ModelConfig& cfg, const WeightSlot& s, bool quantized_here) {
  return opt.in_memory && s.frozen && !quantized_here && !read_only_in_part(cfg, s.name);
}

std::unique_ptr<LlamaModel> load_model(const std::string& dir, const LoadOptions& opt) {
  if (is_gguf_path(dir)) {
    QP_CHECK(file_exists(dir), "{}: no such GGUF file", dir);
    return load_gguf_model(dir, opt);
  }
  QP_CHECK(dir_exists(dir), "{}: model directory not found", dir);
  std::optional<QuantFormat> qf;
  if (opt.quantize.enabled()) {
    qf = parse_format_or_fail(opt.quantize.format, "quantize on load");
    check_block_size(opt.quantize.block_size, "quantize on load");
  }
  ModelConfig cfg = ModelConfig::load(dir);
  TensorStore store = TensorStore::open_dir(dir);
  store.set_in_memory(opt.in_memory);
  const auto quantized = find_quantized_weights(store);
  auto model = std::make_unique<LlamaModel>(cfg);
  model->visit_weights([&](WeightSlot& s) {
    if (s.frozen) {
      if (auto it = quantized.find(s.name); it != quantized.end()) {
        *s.frozen = read_bnb_weight(store, s.name, it->second, s.shape);
        return;
      }
    }
    if (!store.has(s.name)) {
      auto near = closest_names(s.name, store.names(), 1);
      fail("{}: tensor '{}' {} is missing from the checkpoint{}", dir, s.name, shape_str(s.shape),
           near.empty() ? std::string() : " (closest: '" + near[0] + "')");
    }
    const Shape got = store.shape_of(s.name);
    QP_CHECK(got == s.shape, "{}: tensor '{}' has shape {} but config.json implies {}", store.file_of(s.name), s.name,
             shape_str(got), shape_str(s.shape));
    const bool quantized_here = s.frozen && qf && s.linear;
    Tensor t = copies_into_memory(opt, cfg, s, quantized_here) ? store.get(s.name) : store.get_mapped(s.name);
    if (s.frozen) {
      QP_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16,
               "{}: tensor '{}' has dtype {}; expected F32, BF16 or F16", store.file_of(s.name), s.name,
               dtype_name(t.dtype()));
      if (quantized_here) {
        // Tile by tile from the mapping: at most one f32 tile per thread at a time.
        *s.frozen = std::make_shared<QuantizedWeight>(
            QuantizedWeight::quantize(t, *qf, opt.quantize.block_size, opt.quantize.double_quant, s.name));
      } else {
        *s.frozen = std::make_shared<DenseWeight>(t, s.name);
      }
    } else {
      *s.vector = Var(t.to(DType::F32), false, s.name);
    }
  });
  model->finish_loading();
  return model;
}

void save_model(LlamaModel& model, const std::string& dir, const SaveOptions& opt) {
  std::optional<LazyQuantSpec> all;
  if (opt.quant.enabled())
    all = LazyQuantSpec{parse_format_or_fail(opt.quant.format, "save"), opt.quant.block_size, opt.quant.double_quant};
  std::map<std::string, int> formats;  // written quantized: format name -> count
  bool all_dq = true;
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  model.visit_weights([&](WeightSlot& s) {
    if (s.vector) {
      Tensor t = opt.vector ? opt.vector(s) : s.vector->value();
      QP_CHECK(t.dtype() == DType::F32 && t.shape() == s.shape, "[save_model] '{}': the vector override gave {}, expected f32{}",
               s.name, t.describe(), shape_str(s.shape));
      w.add(s.name, opt.dtype, s.shape, [t, dt = opt.dtype](void* dst) { convert_from_f32(t.f32(), dt, dst, size_t(t.numel())); });
      return;
    }
    WeightSlot slot = s;
    auto weight = *s.frozen;
    auto* qw = dynamic_cast<const QuantizedWeight*>(weight.get());
    auto* dw = dynamic_cast<const DenseWeight*>(weight.get());
    std::optional<LazyQuantSpec> spec;
    if (all && s.linear) spec = all;
    else if (opt.requantize && qw) spec = LazyQuantSpec{qw->format(), qw->block_size(), qw->double_quant()};
    auto source = [slot, weight, &opt]() { return opt.matrix ? opt.matrix(slot) : dense_tensor(*weight); };
    if (spec) {
      const DType orig = qw ? qw->original_dtype() : (dw && !opt.matrix) ? dw->tensor().dtype() : opt.dtype;
      QuantizedObserver obs;
      if (opt.on_quantized)
        obs = [slot, &opt](const QuantizedWeight& q, const Tensor& exact) { opt.on_quantized(slot, q, exact); };
      add_bnb_weight_lazy(w, s.name, s.shape, orig, *spec, source, obs);
      formats[quant_format_name(spec->format)]++;
      all_dq = all_dq && spec->double_quant;
      return;
    }
    if (qw && !opt.matrix) {
      add_bnb_weight(w, s.name, std::static_pointer_cast<const QuantizedWeight>(weight));
      formats[quant_format_name(qw->format())]++;
      all_dq = all_dq && qw->double_quant();
      return;
    }
    const DType dt = opt.matrix || !dw ? opt.dtype : dw->tensor().dtype();
    if (!opt.matrix && dw) {  // as stored: written straight from the (mapped) tensor, no copy
      w.add(s.name, dw->tensor());
      return;
    }
    w.add(s.name, dt, s.shape, [source, dt](void* dst) {
      Tensor t = source();
      if (t.dtype() == dt) {
        if (t.nbytes()) std::memcpy(dst, t.raw(), t.nbytes());
      } else {
        Tensor f = t.dtype() == DType::F32 ? t : t.to(DType::F32);
        convert_from_f32(f.f32(), dt, dst, size_t(f.numel()));
      }
    });
  });
  ModelConfig c = model.config();
  c.torch_dtype = torch_dtype_of(opt.dtype);
  c.quantization = quantization_for(formats, all_dq, opt.dtype, c.quantization);
  write_into(dir, c.to_json(), w, opt.max_shard_bytes, opt.extra_files);
}

void write_random_model(const ModelConfig& cfg, DType dtype, uint64_t seed, const std::string& dir,
                        const QuantizeOptions& quant, double init_std) {
  std::optional<LazyQuantSpec> spec;
  if (quant.enabled())
    spec = LazyQuantSpec{parse_format_or_fail(quant.format, "init-model"), quant.block_size, quant.double_quant};
  LlamaModel skeleton(cfg);
  ModelConfig c = cfg;
  c.torch_dtype = torch_dtype_of(dtype);
  c.quantization = {};
  if (spec) c.quantization = quantization_for({{quant.format, 1}}, quant.double_quant, dtype, {});
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  skeleton.visit_weights([&](WeightSlot& s) {
    const bool is_norm = s.vector && s.name.find("norm") != std::string::npos;
    const InitKind kind = !s.vector ? InitKind::Normal : is_norm ? InitKind::One : InitKind::Zero;
    const uint64_t tensor_seed = splitmix64(seed ^ fnv1a64(s.name.data(), s.name.size()));
    const int64_t n = shape_numel(s.shape);
    if (spec && s.frozen && s.linear) {
      // Generated in `dtype` (as the dense checkpoint stores it), quantized while written.
      add_bnb_weight_lazy(w, s.name, s.shape, dtype, *spec, [=] {
        Tensor t = Tensor::empty(s.shape, dtype);
        fill_random(tensor_seed, n, kind, init_std, dtype, t.raw());
        return t;
      });
      return;
    }
    w.add(s.name, dtype, s.shape, [=](void* dst) { fill_random(tensor_seed, n, kind, init_std, dtype, dst); });
  });
  write_into(dir, c.to_json(), w, uint64_t(5) << 30);
}

void copy_tokenizer_files(const std::string& src_dir, const std::string& dst_dir) {
  if (is_gguf_path(src_dir)) {
    // A GGUF base: its tokenizer as the Hugging Face files (text/gguf_tokenizer.h).
    auto g = GgufFile::open(src_dir);
    if (!g->find("tokenizer.ggml.tokens")) return;
    const GgufTokenizerFiles f = gguf_tokenizer_files(*g);
    if (f.sentencepiece_model.empty())
      write_file_atomic(dst_dir + "/tokenizer.json", f.tokenizer_json);
    else
      write_file_atomic(dst_dir + "/tokenizer.model", f.sentencepiece_model);
    write_file_atomic(dst_dir + "/tokenizer_config.json", f.tokenizer_config_json);
    return;
  }
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                        "generation_config.json"}) {
    std::string src = src_dir + "/" + f;
    if (file_exists(src)) write_file_atomic(dst_dir + "/" + f, read_text_file(src));
  }
}

}  // namespace qpeft
