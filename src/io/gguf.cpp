#include "io/gguf.h"

#include <cstring>
#include <limits>

#include "core/error.h"

namespace qpeft {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr uint64_t kMaxStringBytes = 1ull << 30;

struct TypeInfo {
  uint32_t type;
  const char* name;
  int64_t block_elements, block_bytes;
};
constexpr TypeInfo kTypes[] = {
    {0, "f32", 1, 4},     {1, "f16", 1, 2},       {2, "q4_0", 32, 18},    {8, "q8_0", 32, 34},
    {12, "q4_K", 256, 144}, {13, "q5_K", 256, 176}, {14, "q6_K", 256, 210}, {30, "bf16", 1, 2},
};

const TypeInfo* type_info(uint32_t type) {
  for (const TypeInfo& t : kTypes)
    if (t.type == type) return &t;
  return nullptr;
}

// Bytes of one scalar of a metadata type; 0 for strings and arrays.
uint64_t scalar_bytes(GgufType t) {
  switch (t) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kBool: return 1;
    case GgufType::kUint16: case GgufType::kInt16: return 2;
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kFloat32: return 4;
    case GgufType::kUint64: case GgufType::kInt64: case GgufType::kFloat64: return 8;
    default: return 0;
  }
}

bool known_type(uint32_t t) { return t <= uint32_t(GgufType::kFloat64); }

// A bounds-checked cursor over the mapped file.
class Reader {
 public:
  Reader(const uint8_t* data, uint64_t size, const std::string& path) : p_(data), size_(size), path_(path) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }

  void need(uint64_t n, const std::string& what) const {
    QP_CHECK(n <= left(), "[gguf] {}: the file ends inside {} (needs {} bytes at offset {}, {} left); is it truncated?",
             path_, what, n, pos_, left());
  }
  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const std::string& what) {
    const uint64_t n = read<uint64_t>(what);
    QP_CHECK(n <= kMaxStringBytes, "[gguf] {}: {} claims a string of {} bytes", path_, what, n);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(n));
    pos_ += n;
    return s;
  }
  // One scalar of type t into v.
  void scalar(GgufType t, GgufValue& v, const std::string& what) {
    switch (t) {
      case GgufType::kUint8: v.u = read<uint8_t>(what); break;
      case GgufType::kInt8: v.i = read<int8_t>(what); break;
      case GgufType::kUint16: v.u = read<uint16_t>(what); break;
      case GgufType::kInt16: v.i = read<int16_t>(what); break;
      case GgufType::kUint32: v.u = read<uint32_t>(what); break;
      case GgufType::kInt32: v.i = read<int32_t>(what); break;
      case GgufType::kUint64: v.u = read<uint64_t>(what); break;
      case GgufType::kInt64: v.i = read<int64_t>(what); break;
      case GgufType::kFloat32: v.f = read<float>(what); break;
      case GgufType::kFloat64: v.f = read<double>(what); break;
      case GgufType::kBool: {
        const uint8_t b = read<uint8_t>(what);
        QP_CHECK(b <= 1, "[gguf] {}: {} is a bool of value {} (0 or 1)", path_, what, b);
        v.u = b;
        break;
      }
      case GgufType::kString: v.s = string(what); break;
      default: fail("[gguf] {}: {} has value type {}, which is not a scalar", path_, what, uint32_t(t));
    }
  }

 private:
  const uint8_t* p_;
  uint64_t size_, pos_ = 0;
  const std::string& path_;
};

bool is_signed(GgufType t) {
  return t == GgufType::kInt8 || t == GgufType::kInt16 || t == GgufType::kInt32 || t == GgufType::kInt64;
}
bool is_float(GgufType t) { return t == GgufType::kFloat32 || t == GgufType::kFloat64; }

const char* type_word(GgufType t) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                "bool",  "string", "array", "uint64", "int64", "float64"};
  return uint32_t(t) <= 12 ? names[uint32_t(t)] : "unknown";
}

}  // namespace

const char* ggml_type_name(uint32_t type) {
  const TypeInfo* t = type_info(type);
  return t ? t->name : nullptr;
}

bool ggml_type_block(uint32_t type, int64_t* block_elements, int64_t* block_bytes) {
  const TypeInfo* t = type_info(type);
  if (!t) return false;
  *block_elements = t->block_elements;
  *block_bytes = t->block_bytes;
  return true;
}

GgufValue GgufValue::u32(uint32_t v) {
  GgufValue x;
  x.type = GgufType::kUint32;
  x.u = v;
  return x;
}
GgufValue GgufValue::i32(int32_t v) {
  GgufValue x;
  x.type = GgufType::kInt32;
  x.i = v;
  return x;
}
GgufValue GgufValue::f32(float v) {
  GgufValue x;
  x.type = GgufType::kFloat32;
  x.f = v;
  return x;
}
GgufValue GgufValue::boolean(bool v) {
  GgufValue x;
  x.type = GgufType::kBool;
  x.u = v;
  return x;
}
GgufValue GgufValue::str(std::string v) {
  GgufValue x;
  x.type = GgufType::kString;
  x.s = std::move(v);
  return x;
}
GgufValue GgufValue::str_array(std::vector<std::string> v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.array_type = GgufType::kString;
  x.strings = std::move(v);
  return x;
}
GgufValue GgufValue::i32_array(std::vector<int32_t> v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.array_type = GgufType::kInt32;
  x.ints.assign(v.begin(), v.end());
  return x;
}
GgufValue GgufValue::f32_array(std::vector<float> v) {
  GgufValue x;
  x.type = GgufType::kArray;
  x.array_type = GgufType::kFloat32;
  x.floats.assign(v.begin(), v.end());
  return x;
}

int64_t GgufFile::Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

std::shared_ptr<GgufFile> GgufFile::open(const std::string& path) {
  auto g = std::shared_ptr<GgufFile>(new GgufFile());
  g->path_ = path;
  g->file_ = MappedFile::open(path);
  const uint64_t size = g->file_->size();
  Reader r(g->file_->data(), size, g->path_);
  QP_CHECK(size >= 4 && r.read<uint32_t>("the magic") == kMagic, "[gguf] {}: not a GGUF file (no \"GGUF\" magic)",
           path);
  g->version_ = r.read<uint32_t>("the version");
  QP_CHECK(g->version_ == 2 || g->version_ == 3, "[gguf] {}: GGUF version {} (qpeft reads versions 2 and 3)", path,
           g->version_);
  const uint64_t n_tensors = r.read<uint64_t>("the tensor count");
  const uint64_t n_kv = r.read<uint64_t>("the metadata count");
  // Each metadata entry takes at least 8 + 4 + 1 bytes, each tensor info 8 + 4 + 8 + 4 + 8.
  QP_CHECK(n_kv <= kMaxMetadata && n_kv <= r.left() / 13, "[gguf] {}: {} metadata entries cannot fit in {} bytes",
           path, n_kv, size);
  QP_CHECK(n_tensors <= kMaxTensors && n_tensors <= r.left() / 32, "[gguf] {}: {} tensors cannot fit in {} bytes",
           path, n_tensors, size);
  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string key = r.string(fmt::format("metadata entry {}'s key", k));
    const std::string what = fmt::format("metadata '{}'", key);
    QP_CHECK(!g->metadata_.count(key), "[gguf] {}: metadata key '{}' appears twice", path, key);
    const uint32_t t = r.read<uint32_t>(what);
    QP_CHECK(known_type(t), "[gguf] {}: {} has unknown value type {}", path, what, t);
    GgufValue v;
    v.type = GgufType(t);
    if (v.type == GgufType::kArray) {
      const uint32_t et = r.read<uint32_t>(what);
      QP_CHECK(known_type(et) && GgufType(et) != GgufType::kArray,
               "[gguf] {}: {} is an array of type {} (arrays of scalars or strings only)", path, what, et);
      v.array_type = GgufType(et);
      const uint64_t n = r.read<uint64_t>(what);
      const uint64_t min_bytes = v.array_type == GgufType::kString ? 8 : scalar_bytes(v.array_type);
      QP_CHECK(n <= kMaxArray && n <= r.left() / min_bytes, "[gguf] {}: {} claims {} elements, more than the file holds",
               path, what, n);
      GgufValue e;
      for (uint64_t i = 0; i < n; ++i) {
        r.scalar(v.array_type, e, what);
        if (v.array_type == GgufType::kString) v.strings.push_back(std::move(e.s));
        else if (is_float(v.array_type)) v.floats.push_back(e.f);
        else v.ints.push_back(is_signed(v.array_type) ? e.i : int64_t(e.u));
      }
    } else {
      r.scalar(v.type, v, what);
    }
    g->metadata_.emplace(key, std::move(v));
  }
  if (const GgufValue* a = g->find("general.alignment")) {
    QP_CHECK(a->type == GgufType::kUint32 && a->u > 0 && (a->u & (a->u - 1)) == 0 && a->u <= 1u << 20,
             "[gguf] {}: general.alignment must be a uint32 power of two up to 2^20", path);
    g->alignment_ = a->u;
  }
  for (uint64_t k = 0; k < n_tensors; ++k) {
    Tensor t;
    t.name = r.string(fmt::format("tensor info {}'s name", k));
    const std::string what = fmt::format("tensor '{}'", t.name);
    QP_CHECK(!g->by_name_.count(t.name), "[gguf] {}: tensor '{}' appears twice", path, t.name);
    const uint32_t n_dims = r.read<uint32_t>(what);
    QP_CHECK(n_dims >= 1 && n_dims <= 4, "[gguf] {}: {} has {} dimensions (1 to 4)", path, what, n_dims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = r.read<uint64_t>(what);
      QP_CHECK(ne >= 1 && ne <= uint64_t(1) << 40 && uint64_t(numel) <= (uint64_t(1) << 50) / ne,
               "[gguf] {}: {} has dimension {} of size {}", path, what, d, ne);
      t.ne.push_back(int64_t(ne));
      numel *= int64_t(ne);
    }
    t.type = r.read<uint32_t>(what);
    int64_t be = 0, bb = 0;
    QP_CHECK(ggml_type_block(t.type, &be, &bb),
             "[gguf] {}: {} has ggml type {}, which qpeft does not read (f32, f16, bf16, q8_0, q4_0, q4_K, q5_K, q6_K)",
             path, what, t.type);
    QP_CHECK(t.ne[0] % be == 0, "[gguf] {}: {} has rows of {} elements, not a multiple of {}'s block of {}", path, what,
             t.ne[0], ggml_type_name(t.type), be);
    t.nbytes = uint64_t(numel / be) * uint64_t(bb);
    t.offset = r.read<uint64_t>(what);
    QP_CHECK(t.offset % g->alignment_ == 0, "[gguf] {}: {} starts at offset {}, not a multiple of the alignment {}", path,
             what, t.offset, g->alignment_);
    g->by_name_[t.name] = g->tensors_.size();
    g->tensors_.push_back(std::move(t));
  }
  const uint64_t data_start = (r.pos() + g->alignment_ - 1) / g->alignment_ * g->alignment_;
  QP_CHECK(data_start <= size, "[gguf] {}: the file ends before its data section", path);
  const uint64_t data_bytes = size - data_start;
  for (Tensor& t : g->tensors_) {
    QP_CHECK(t.offset <= data_bytes && t.nbytes <= data_bytes - t.offset,
             "[gguf] {}: tensor '{}' ({} bytes at data offset {}) runs past the end of the file ({} data bytes); is it "
             "truncated?",
             path, t.name, t.nbytes, t.offset, data_bytes);
    t.data = g->file_->data() + data_start + t.offset;
  }
  return g;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

const GgufFile::Tensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  QP_CHECK(v, "[gguf] {}: metadata '{}' is missing", path_, key);
  QP_CHECK(v->type == GgufType::kString, "[gguf] {}: metadata '{}' is a {}, expected a string", path_, key,
           type_word(v->type));
  return v->s;
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue* v = find(key);
  QP_CHECK(v, "[gguf] {}: metadata '{}' is missing", path_, key);
  if (is_signed(v->type)) {
    QP_CHECK(v->i >= 0, "[gguf] {}: metadata '{}' is {}, expected a count >= 0", path_, key, v->i);
    return uint64_t(v->i);
  }
  QP_CHECK(scalar_bytes(v->type) > 0 && !is_float(v->type) && v->type != GgufType::kBool,
           "[gguf] {}: metadata '{}' is a {}, expected an integer", path_, key, type_word(v->type));
  return v->u;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  QP_CHECK(v, "[gguf] {}: metadata '{}' is missing", path_, key);
  if (is_float(v->type)) return v->f;
  if (is_signed(v->type)) return double(v->i);
  QP_CHECK(scalar_bytes(v->type) > 0 && v->type != GgufType::kBool, "[gguf] {}: metadata '{}' is a {}, expected a number",
           path_, key, type_word(v->type));
  return double(v->u);
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  QP_CHECK(v, "[gguf] {}: metadata '{}' is missing", path_, key);
  QP_CHECK(v->type == GgufType::kBool, "[gguf] {}: metadata '{}' is a {}, expected a bool", path_, key,
           type_word(v->type));
  return v->u != 0;
}

const GgufValue& GgufFile::get_array(const std::string& key, GgufType element) const {
  const GgufValue* v = find(key);
  QP_CHECK(v, "[gguf] {}: metadata '{}' is missing", path_, key);
  const bool ok = v->type == GgufType::kArray &&
                  (v->array_type == element ||
                   (element == GgufType::kInt32 && v->array_type != GgufType::kString && !is_float(v->array_type)) ||
                   (element == GgufType::kFloat32 && is_float(v->array_type)));
  QP_CHECK(ok, "[gguf] {}: metadata '{}' is a {}{}, expected an array of {}", path_, key, type_word(v->type),
           v->type == GgufType::kArray ? std::string(" of ") + type_word(v->array_type) : "", type_word(element));
  return *v;
}

void GgufWriter::set(const std::string& key, GgufValue value) {
  for (auto& [k, v] : metadata_)
    if (k == key) {
      v = std::move(value);
      return;
    }
  metadata_.emplace_back(key, std::move(value));
}

void GgufWriter::add_tensor(const std::string& name, GgufTensorType type, std::vector<int64_t> ne, Producer produce) {
  int64_t be = 0, bb = 0;
  QP_CHECK(ggml_type_block(uint32_t(type), &be, &bb), "[gguf] tensor '{}': unknown ggml type {}", name, uint32_t(type));
  QP_CHECK(!ne.empty() && ne.size() <= 4 && ne[0] % be == 0, "[gguf] tensor '{}': rows of {} elements for {} blocks of {}",
           name, ne.empty() ? 0 : ne[0], ggml_type_name(uint32_t(type)), be);
  int64_t numel = 1;
  for (int64_t d : ne) numel *= d;
  tensors_.push_back({name, type, std::move(ne), uint64_t(numel / be * bb), std::move(produce)});
}

namespace {

struct Bytes {
  std::string b;
  template <class T>
  void put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    b += s;
  }
  void scalar(GgufType t, const GgufValue& v) {
    switch (t) {
      case GgufType::kUint8: put<uint8_t>(uint8_t(v.u)); break;
      case GgufType::kInt8: put<int8_t>(int8_t(v.i)); break;
      case GgufType::kUint16: put<uint16_t>(uint16_t(v.u)); break;
      case GgufType::kInt16: put<int16_t>(int16_t(v.i)); break;
      case GgufType::kUint32: put<uint32_t>(uint32_t(v.u)); break;
      case GgufType::kInt32: put<int32_t>(int32_t(v.i)); break;
      case GgufType::kUint64: put<uint64_t>(v.u); break;
      case GgufType::kInt64: put<int64_t>(v.i); break;
      case GgufType::kFloat32: put<float>(float(v.f)); break;
      case GgufType::kFloat64: put<double>(v.f); break;
      case GgufType::kBool: put<uint8_t>(v.u ? 1 : 0); break;
      case GgufType::kString: str(v.s); break;
      default: fail("[gguf] cannot write a value of type {}", uint32_t(t));
    }
  }
};

}  // namespace

void GgufWriter::write(const std::string& path) const {
  constexpr uint64_t kAlign = 32;
  Bytes h;
  h.put<uint32_t>(kMagic);
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors_.size());
  h.put<uint64_t>(metadata_.size());
  for (const auto& [key, v] : metadata_) {
    h.str(key);
    h.put<uint32_t>(uint32_t(v.type));
    if (v.type != GgufType::kArray) {
      h.scalar(v.type, v);
      continue;
    }
    h.put<uint32_t>(uint32_t(v.array_type));
    GgufValue e;
    if (v.array_type == GgufType::kString) {
      h.put<uint64_t>(v.strings.size());
      for (const std::string& s : v.strings) h.str(s);
    } else if (is_float(v.array_type)) {
      h.put<uint64_t>(v.floats.size());
      for (double f : v.floats) {
        e.f = f;
        h.scalar(v.array_type, e);
      }
    } else {
      h.put<uint64_t>(v.ints.size());
      for (int64_t i : v.ints) {
        e.i = i;
        e.u = uint64_t(i);
        h.scalar(v.array_type, e);
      }
    }
  }
  uint64_t offset = 0;
  for (const Pending& t : tensors_) {
    h.str(t.name);
    h.put<uint32_t>(uint32_t(t.ne.size()));
    for (int64_t d : t.ne) h.put<uint64_t>(uint64_t(d));
    h.put<uint32_t>(uint32_t(t.type));
    h.put<uint64_t>(offset);
    offset += (t.nbytes + kAlign - 1) / kAlign * kAlign;
  }
  h.b.resize((h.b.size() + kAlign - 1) / kAlign * kAlign, '\0');
  AtomicFile out(path);
  out.write(h.b);
  const std::string zeros(kAlign, '\0');
  for (const Pending& t : tensors_) {
    const std::vector<uint8_t> data = t.produce();
    QP_CHECK(data.size() == t.nbytes, "[gguf] tensor '{}': produced {} bytes, expected {}", t.name, data.size(), t.nbytes);
    out.write(data.data(), data.size());
    out.write(zeros.data(), size_t((kAlign - t.nbytes % kAlign) % kAlign));
  }
  out.commit();
}

}  // namespace qpeft
