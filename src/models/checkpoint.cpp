#include "models/checkpoint.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/file.h"
#include "core/rng.h"
#include "core/thread_pool.h"
#include "io/safetensors.h"

namespace qpeft {

std::unique_ptr<LlamaModel> load_model(const std::string& dir, const LoadOptions& opt) {
  QP_CHECK(dir_exists(dir), "{}: model directory not found", dir);
  QP_CHECK(opt.quantize.empty(), "quantize-on-load ({}) is not implemented yet", opt.quantize);
  ModelConfig cfg = ModelConfig::load(dir);
  TensorStore store = TensorStore::open_dir(dir);
  auto model = std::make_unique<LlamaModel>(cfg);
  model->visit_weights([&](WeightSlot& s) {
    if (!store.has(s.name)) {
      auto near = closest_names(s.name, store.names(), 1);
      fail("{}: tensor '{}' {} is missing from the checkpoint{}", dir, s.name, shape_str(s.shape),
           near.empty() ? std::string() : " (closest: '" + near[0] + "')");
    }
    const Shape got = store.shape_of(s.name);
    QP_CHECK(got == s.shape, "{}: tensor '{}' has shape {} but config.json implies {}", store.file_of(s.name), s.name,
             shape_str(got), shape_str(s.shape));
    Tensor t = store.get(s.name);
    if (s.frozen) {
      QP_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16,
               "{}: tensor '{}' has dtype {}; expected F32, BF16 or F16", store.file_of(s.name), s.name,
               dtype_name(t.dtype()));
      *s.frozen = std::make_shared<DenseWeight>(t, s.name);
    } else {
      *s.vector = Var(t.to(DType::F32), false, s.name);
    }
  });
  model->finish_loading();
  return model;
}

static Tensor dense_tensor(const FrozenWeight& w) {
  if (auto* d = dynamic_cast<const DenseWeight*>(&w)) return d->tensor();
  Tensor t = Tensor::empty({w.rows(), w.cols()});
  const float* src = w.decode_rows(0, w.rows(), t.f32());
  if (src != t.f32()) std::memcpy(t.f32(), src, t.nbytes());
  return t;
}

void save_model(LlamaModel& model, const std::string& dir, const SaveOptions& opt) {
  AtomicDir out(dir);
  write_file_atomic(out.path("config.json"), [&] {
    ModelConfig c = model.config();
    c.torch_dtype = opt.dtype == DType::F32 ? "float32" : opt.dtype == DType::F16 ? "float16" : "bfloat16";
    return c.to_json();
  }());
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  model.visit_weights([&](WeightSlot& s) {
    if (s.vector) {
      Tensor t = s.vector->value();
      w.add(s.name, opt.dtype, s.shape, [t, dt = opt.dtype](void* dst) { convert_from_f32(t.f32(), dt, dst, size_t(t.numel())); });
      return;
    }
    WeightSlot slot = s;
    auto weight = *s.frozen;
    const DType stored = dynamic_cast<const DenseWeight*>(weight.get()) ? dense_tensor(*weight).dtype() : opt.dtype;
    const DType dt = opt.matrix ? opt.dtype : stored;
    w.add(s.name, dt, s.shape, [slot, weight, dt, &opt](void* dst) {
      Tensor t = opt.matrix ? opt.matrix(slot) : dense_tensor(*weight);
      if (t.dtype() == dt) {
        std::memcpy(dst, t.raw(), t.nbytes());
      } else {
        Tensor f = t.dtype() == DType::F32 ? t : t.to(DType::F32);
        convert_from_f32(f.f32(), dt, dst, size_t(f.numel()));
      }
    });
  });
  std::string tmp_dir = out.path("");
  tmp_dir.pop_back();
  w.write_sharded(tmp_dir, opt.max_shard_bytes);
  out.commit();
}

void write_random_model(const ModelConfig& cfg, DType dtype, uint64_t seed, const std::string& dir,
                        double init_std) {
  LlamaModel skeleton(cfg);
  AtomicDir out(dir);
  ModelConfig c = cfg;
  c.torch_dtype = dtype == DType::F32 ? "float32" : "bfloat16";
  write_file_atomic(out.path("config.json"), c.to_json());
  SafetensorsWriter w;
  w.set_metadata("format", "pt");
  skeleton.visit_weights([&](WeightSlot& s) {
    const bool is_norm = s.vector && s.name.find("norm") != std::string::npos;
    const bool is_bias = s.vector && !is_norm;
    const uint64_t tensor_seed = splitmix64(seed ^ fnv1a64(s.name.data(), s.name.size()));
    const int64_t n = shape_numel(s.shape);
    w.add(s.name, dtype, s.shape, [=](void* dst) {
      // Counter-based normals: the value of element i depends only on (seed, name, i).
      pool().parallel_for((n + 1) / 2, [&](int64_t p0, int64_t p1) {
        std::vector<float> buf;
        buf.reserve(size_t(2 * (p1 - p0)));
        for (int64_t p = p0; p < p1; ++p) {
          if (is_norm || is_bias) {
            buf.push_back(is_norm ? 1.0f : 0.0f);
            buf.push_back(is_norm ? 1.0f : 0.0f);
            continue;
          }
          double u1 = std::max(1e-12, double(hash_uniform(tensor_seed, 0, uint64_t(p))));
          double u2 = double(hash_uniform(tensor_seed, 1, uint64_t(p)));
          double rad = std::sqrt(-2.0 * std::log(u1)) * init_std;
          buf.push_back(float(rad * std::cos(6.283185307179586 * u2)));
          buf.push_back(float(rad * std::sin(6.283185307179586 * u2)));
        }
        const int64_t i0 = 2 * p0, cnt = std::min(n, 2 * p1) - i0;
        convert_from_f32(buf.data(), dtype, static_cast<char*>(dst) + size_t(i0) * dtype_size(dtype), size_t(cnt));
      });
    });
  });
  std::string tmp_dir = out.path("");
  tmp_dir.pop_back();
  w.write_sharded(tmp_dir, uint64_t(5) << 30);
  out.commit();
}

void copy_tokenizer_files(const std::string& src_dir, const std::string& dst_dir) {
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                        "generation_config.json"}) {
    std::string src = src_dir + "/" + f;
    if (file_exists(src)) write_file_atomic(dst_dir + "/" + f, read_text_file(src));
  }
}

}  // namespace qpeft
