#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/json_reader.h"

namespace qpeft {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

constexpr int kMaxJsonDepth = 32;  // a valid header nests 3 deep (tighter than limits::kMaxJsonDepth)
constexpr size_t kMaxDims = 64;
constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kIndexName = "model.safetensors.index.json";

// Every dtype the safetensors format defines, with its element size in bits. The ones
// qpeft computes with map to a DType; the rest can be listed but not loaded.
struct StDType {
  const char* name;
  unsigned bits;
};
constexpr StDType kStDTypes[] = {
    {"BOOL", 8},     {"F4", 4},       {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},   {"I8", 8},   {"F8_E5M2", 8},
    {"F8_E4M3", 8},  {"F8_E8M0", 8},  {"I16", 16},    {"U16", 16},    {"F16", 16}, {"BF16", 16}, {"I32", 32},
    {"U32", 32},     {"F32", 32},     {"C64", 64},    {"F64", 64},    {"I64", 64}, {"U64", 64},
};

// 0 if the spelling is not a safetensors dtype at all.
unsigned st_dtype_bits(const std::string& s) {
  for (const auto& d : kStDTypes)
    if (s == d.name) return d.bits;
  return 0;
}

bool qpeft_dtype(const std::string& s, DType* out) {
  for (size_t i = 0; i < size_t(DType::kCount); ++i) {
    if (s == dtype_info(DType(i)).safetensors_name) {
      *out = DType(i);
      return true;
    }
  }
  return false;
}

std::string supported_list() {
  std::string s;
  for (size_t i = 0; i < size_t(DType::kCount); ++i) s += std::string(i ? ", " : "") + dtype_info(DType(i)).safetensors_name;
  return s;
}

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  fail("[safetensors] {}: {}; the file is damaged or not a safetensors file - re-download or re-export it", path,
       what);
}

[[noreturn]] void corrupt_tensor(const std::string& path, const std::string& name, const std::string& what) {
  fail("[safetensors] {}: tensor '{}': {}; the file is damaged or was written by a broken tool - re-download or "
       "re-export it",
       path, name, what);
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_le64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}

// A non-negative JSON integer that fits in uint64.
bool as_u64(const json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  *out = v.get<uint64_t>();
  return true;
}

std::string join_path(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// JSON parse errors quote the token read so far, which a damaged file can make huge.
std::string clip(const std::string& s, size_t max = 300) {
  return s.size() <= max ? s : s.substr(0, max) + "...";
}

std::string count_str(size_t n) { return fmt::format("{} tensor{}", n, n == 1 ? "" : "s"); }

std::string hint(const std::string& name, const std::vector<std::string>& names) {
  std::vector<std::string> near = closest_names(name, names);
  if (near.empty()) return count_str(names.size()) + ", none with a similar name";
  std::string s = count_str(names.size()) + "; did you mean ";
  for (size_t i = 0; i < near.size(); ++i) s += (i ? (i + 1 == near.size() ? " or '" : ", '") : "'") + near[i] + "'";
  return s + "?";
}

[[noreturn]] void unsupported_dtype(const std::string& path, const SafetensorsFile::Entry& e) {
  if (st_dtype_bits(e.dtype_name))
    fail("[safetensors] {}: tensor '{}' has dtype {}, which qpeft cannot load (it loads {}); convert the checkpoint "
         "first, e.g. to BF16 with PyTorch",
         path, e.name, e.dtype_name, supported_list());
  fail("[safetensors] {}: tensor '{}' has dtype '{}', which is not a safetensors dtype qpeft knows (it loads {}); "
       "convert the checkpoint first, e.g. to BF16 with PyTorch",
       path, e.name, e.dtype_name, supported_list());
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1])});
      diag = up;
    }
  }
  return row[b.size()];
}

// "a.b.c" ends with "b.c" at a dot boundary (or equals it).
bool dotted_suffix(const std::string& longer, const std::string& shorter) {
  if (shorter.empty() || longer.size() < shorter.size()) return false;
  if (longer.compare(longer.size() - shorter.size(), shorter.size(), shorter) != 0) return false;
  return longer.size() == shorter.size() || longer[longer.size() - shorter.size() - 1] == '.';
}

// "model-00001-of-00003.safetensors"
bool is_shard_name(const std::string& n) {
  const std::string pre = "model-", mid = "-of-", suf = ".safetensors";
  if (n.size() <= pre.size() + mid.size() + suf.size() + 1) return false;
  if (n.compare(0, pre.size(), pre) != 0 || n.compare(n.size() - suf.size(), suf.size(), suf) != 0) return false;
  std::string core = n.substr(pre.size(), n.size() - pre.size() - suf.size());
  size_t m = core.find(mid);
  if (m == std::string::npos || m == 0 || m + mid.size() == core.size()) return false;
  auto digits = [](const std::string& s) { return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }); };
  return digits(core.substr(0, m)) && digits(core.substr(m + mid.size()));
}

}  // namespace

std::vector<std::string> closest_names(const std::string& name, const std::vector<std::string>& candidates,
                                       size_t max) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& c : candidates) {
    if (c == name) continue;
    if (dotted_suffix(c, name) || dotted_suffix(name, c)) {
      scored.emplace_back(0, c);  // a prefix like "model." or "base_model.model." differs
      continue;
    }
    size_t limit = std::max<size_t>(2, name.size() / 4);
    size_t len_gap = c.size() > name.size() ? c.size() - name.size() : name.size() - c.size();
    if (len_gap > limit) continue;
    size_t d = edit_distance(name, c);
    if (d <= limit && 2 * d < std::max(name.size(), c.size())) scored.emplace_back(d, c);
  }
  std::stable_sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < max; ++i) out.push_back(scored[i].second);
  return out;
}

// ---------------------------------------------------------------------------------------
// SafetensorsFile

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<MappedFile> map;
  try {
    map = MappedFile::open(path);
  } catch (const Error& e) {
    fail("[safetensors] {}; check the path", e.what());
  }
  const uint64_t size = map->size();
  if (size < 8)
    corrupt(path, fmt::format("the file is {} bytes, too short for the 8-byte header length", size));
  const uint64_t n = read_le64(map->data());
  if (n > size - 8)
    corrupt(path, fmt::format("the header length {} runs past the end of the file ({} bytes; truncated download?)",
                              n, size));
  if (n > kMaxHeaderBytes)
    corrupt(path, fmt::format("the header length {} exceeds the limit of {} bytes", n, kMaxHeaderBytes));

  // Parse, refusing deep nesting and duplicate tensor names (JSON would keep the last).
  const char* hb = reinterpret_cast<const char*>(map->data() + 8);
  std::set<std::string> seen;
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    if ((ev == json::parse_event_t::object_start || ev == json::parse_event_t::array_start) && depth >= kMaxJsonDepth)
      corrupt(path, fmt::format("the header JSON nests deeper than {} levels", kMaxJsonDepth));
    if (ev == json::parse_event_t::key && depth == 1) {
      std::string k = parsed.get<std::string>();
      if (!seen.insert(k).second) corrupt(path, fmt::format("the header lists '{}' twice", k));
    }
    return true;
  };
  json j;
  try {
    j = json::parse(hb, hb + n, cb, /*allow_exceptions=*/true, /*ignore_comments=*/false);
  } catch (const json::exception& e) {
    corrupt(path, fmt::format("the {}-byte header is not valid JSON ({})", n, clip(e.what())));
  }
  if (!j.is_object()) corrupt(path, fmt::format("the header is a JSON {}, not an object of tensors", j.type_name()));

  auto f = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  f->path_ = path;
  f->header_size_ = n;
  f->data_ = map->data() + 8 + n;
  f->data_size_ = size - 8 - n;
  f->entries_.reserve(j.size());

  for (auto& [key, val] : j.items()) {
    if (key == "__metadata__") {
      if (!val.is_object()) corrupt(path, fmt::format("__metadata__ is a JSON {}, not an object", val.type_name()));
      for (auto& [mk, mv] : val.items()) {
        if (!mv.is_string())
          corrupt(path, fmt::format("__metadata__ '{}' is a JSON {}, not a string", mk, mv.type_name()));
        f->metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    Entry e;
    e.name = key;
    if (!val.is_object())
      corrupt_tensor(path, key, fmt::format("the entry is a JSON {}, not an object with dtype, shape and data_offsets",
                                            val.type_name()));
    auto dt = val.find("dtype");
    if (dt == val.end() || !dt->is_string()) corrupt_tensor(path, key, "\"dtype\" is missing or not a string");
    e.dtype_name = dt->get<std::string>();
    e.supported = qpeft_dtype(e.dtype_name, &e.dtype);

    auto sh = val.find("shape");
    if (sh == val.end() || !sh->is_array()) corrupt_tensor(path, key, "\"shape\" is missing or not an array");
    if (sh->size() > kMaxDims) corrupt_tensor(path, key, fmt::format("the shape has {} dimensions", sh->size()));
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : *sh) {
      uint64_t v;
      if (!as_u64(d, &v)) {
        if (d.is_number_integer())
          corrupt_tensor(path, key, fmt::format("the shape {} has a negative dimension", sh->dump()));
        corrupt_tensor(path, key, fmt::format("the shape {} holds something other than integers", sh->dump()));
      }
      if (v > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, v, &numel)) overflow = true;
      if (!overflow) e.shape.push_back(int64_t(v));
    }
    if (overflow || numel > uint64_t(INT64_MAX))
      corrupt_tensor(path, key, fmt::format("the shape {} has more elements than fit in 64 bits", sh->dump()));

    auto off = val.find("data_offsets");
    if (off == val.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0], &e.begin) ||
        !as_u64((*off)[1], &e.end))
      corrupt_tensor(path, key, "\"data_offsets\" is missing or not two non-negative integers [begin, end]");
    if (e.end < e.begin)
      corrupt_tensor(path, key, fmt::format("data_offsets [{}, {}] end before they begin", e.begin, e.end));
    if (e.end > f->data_size_)
      corrupt_tensor(path, key,
                     fmt::format("data_offsets [{}, {}] run past the end of the {}-byte data section (truncated file?)",
                                 e.begin, e.end, f->data_size_));
    if (unsigned bits = e.supported ? unsigned(dtype_size(e.dtype) * 8) : st_dtype_bits(e.dtype_name)) {
      uint64_t nbits;
      bool too_big = __builtin_mul_overflow(numel, uint64_t(bits), &nbits);
      if (too_big || nbits % 8 != 0 || nbits / 8 != e.nbytes())
        corrupt_tensor(path, key,
                       fmt::format("data_offsets [{}, {}] hold {} bytes, but {} {} needs {}", e.begin, e.end,
                                   e.nbytes(), e.dtype_name, sh->dump(),
                                   too_big           ? std::string("more than 2^64 bits")
                                   : nbits % 8 != 0 ? fmt::format("{} bits (not a whole number of bytes)", nbits)
                                                     : fmt::format("{} bytes", nbits / 8)));
    }
    f->entries_.push_back(std::move(e));
  }

  // Data order; no two non-empty tensors may share a byte.
  std::sort(f->entries_.begin(), f->entries_.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end != b.end ? a.end < b.end : a.name < b.name;
  });
  const Entry* last = nullptr;  // the non-empty entry reaching furthest so far
  for (const Entry& e : f->entries_) {
    if (e.begin == e.end) continue;
    if (last && e.begin < last->end)
      corrupt_tensor(path, e.name,
                     fmt::format("its bytes [{}, {}) overlap those of tensor '{}' [{}, {})", e.begin, e.end,
                                 last->name, last->begin, last->end));
    if (!last || e.end > last->end) last = &e;
  }
  for (size_t i = 0; i < f->entries_.size(); ++i) f->index_[f->entries_[i].name] = i;

  f->storage_ = Storage::wrap(const_cast<uint8_t*>(f->data_), size_t(f->data_size_), map);
  f->map_ = std::move(map);
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

const SafetensorsFile::Entry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const Entry* e = find(name);
  if (!e) fail("[safetensors] tensor '{}' not found in {} ({})", name, path_, hint(name, names()));
  return get(*e);
}

Tensor SafetensorsFile::get(const Entry& e) const {
  QP_CHECK(!entries_.empty() && &e >= entries_.data() && &e < entries_.data() + entries_.size(),
           "[safetensors] {}: get() was given the entry of tensor '{}' from another file", path_, e.name);
  if (!e.supported) unsupported_dtype(path_, e);
  const uint8_t* p = data_ + e.begin;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) != 0) {  // e.g. a header length not a multiple of 8
    Tensor t = Tensor::empty(e.shape, e.dtype);
    if (e.nbytes()) std::memcpy(t.raw(), p, e.nbytes());
    return t;
  }
  return Tensor::from_storage(storage_, size_t(e.begin), e.shape, e.dtype);
}

// ---------------------------------------------------------------------------------------
// TensorStore

TensorStore TensorStore::open_dir(const std::string& dir) {
  QP_CHECK(dir_exists(dir),
           "[safetensors] {}: no such directory; pass the checkpoint directory (the one holding {} or {})", dir,
           kSingleName, kIndexName);
  const std::string single = join_path(dir, kSingleName), index_path = join_path(dir, kIndexName);
  if (file_exists(single)) {
    TensorStore s = open_files({single});
    s.source_ = "the directory " + dir;
    return s;
  }
  if (!file_exists(index_path)) {
    std::vector<std::string> found;
    std::error_code ec;
    for (const auto& de : fs::directory_iterator(dir, ec))
      if (de.path().extension() == ".safetensors") found.push_back(de.path().filename().string());
    std::sort(found.begin(), found.end());
    std::string listing = found.empty() ? "no .safetensors files at all" : "only ";
    for (size_t i = 0; i < found.size() && i < 5; ++i) listing += (i ? ", " : "") + found[i];
    if (found.size() > 5) listing += fmt::format(" and {} more", found.size() - 5);
    fail("[safetensors] {}: holds neither {} nor {} ({}); pass a Hugging Face checkpoint directory, or open the "
         "files themselves",
         dir, kSingleName, kIndexName, listing);
  }

  std::error_code ec;
  uintmax_t isize = fs::file_size(index_path, ec);
  QP_CHECK(!ec && isize <= SafetensorsFile::kMaxHeaderBytes,
           "[safetensors] {}: cannot read the shard index or it is larger than {} bytes; re-download it", index_path,
           SafetensorsFile::kMaxHeaderBytes);
  const json idx = parse_json(read_text_file(index_path), "[safetensors] " + index_path);
  auto wm = idx.is_object() ? idx.find("weight_map") : idx.end();
  QP_CHECK(idx.is_object() && wm != idx.end() && wm->is_object() && !wm->empty(),
           "[safetensors] {}: no \"weight_map\" object of tensor name -> shard file; re-download the checkpoint's "
           "index file",
           index_path);

  std::map<std::string, std::vector<std::string>> by_shard;  // shard file -> tensors
  for (auto& [name, shard] : wm->items()) {
    QP_CHECK(shard.is_string(), "[safetensors] {}: weight_map entry for tensor '{}' is a JSON {}, not a file name",
             index_path, name, shard.type_name());
    std::string s = shard.get<std::string>();
    fs::path sp(s);
    bool escapes = s.empty() || sp.is_absolute() ||
                   std::any_of(sp.begin(), sp.end(), [](const fs::path& c) { return c == ".."; });
    QP_CHECK(!escapes,
             "[safetensors] {}: tensor '{}' maps to shard '{}', which is not a file name inside the checkpoint "
             "directory; the index is damaged - re-download it",
             index_path, name, s);
    by_shard[s].push_back(name);
  }

  TensorStore st;
  st.source_ = "the directory " + dir;
  for (const auto& [shard, names] : by_shard) {
    std::string sp = join_path(dir, shard);
    QP_CHECK(file_exists(sp),
             "[safetensors] {} lists shard '{}' (holding {} tensors, e.g. '{}'), but {} does not exist; the download "
             "is incomplete - fetch the missing shard",
             index_path, shard, names.size(), names.front(), sp);
    std::shared_ptr<SafetensorsFile> f;
    try {
      f = SafetensorsFile::open(sp);
    } catch (const Error& e) {
      fail("{} (a shard listed in {})", e.what(), index_path);
    }
    for (const auto& n : names) {
      QP_CHECK(f->has(n),
               "[safetensors] {} says tensor '{}' is in shard {}, but that shard does not hold it ({}); the index and "
               "shards do not belong together - re-download the checkpoint",
               index_path, n, sp, hint(n, f->names()));
      st.where_[n] = st.files_.size();
    }
    st.files_.push_back(std::move(f));
  }
  return st;
}

TensorStore TensorStore::open_files(const std::vector<std::string>& paths) {
  QP_CHECK(!paths.empty(), "[safetensors] open_files: no files given");
  TensorStore st;
  st.source_ = paths.size() == 1 ? "the file " : "the files ";
  for (size_t i = 0; i < paths.size() && i < 3; ++i) st.source_ += (i ? ", " : "") + paths[i];
  if (paths.size() > 3) st.source_ += fmt::format(" and {} more", paths.size() - 3);
  for (const auto& p : paths) {
    auto f = SafetensorsFile::open(p);
    for (const auto& e : f->entries()) {
      auto [it, fresh] = st.where_.emplace(e.name, st.files_.size());
      QP_CHECK(fresh, "[safetensors] tensor '{}' is in both {} and {}; pass each checkpoint file once", e.name,
               st.files_[it->second]->path(), p);
    }
    st.files_.push_back(std::move(f));
  }
  return st;
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

size_t TensorStore::file_index(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("[safetensors] tensor '{}' not found in {} ({})", name, source_, hint(name, names()));
  return it->second;
}

const SafetensorsFile::Entry* TensorStore::find(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second]->find(name);
}

Tensor TensorStore::get_mapped(const std::string& name) const { return files_[file_index(name)]->get(name); }

Tensor TensorStore::get(const std::string& name) const {
  if (!in_memory_) return get_mapped(name);
  const SafetensorsFile& f = *files_[file_index(name)];
  Tensor view = f.get(name);
  if (!f.is_view(view)) return view;  // already a copy (unaligned data)
  Tensor copy = view.clone();
  f.release(name);
  return copy;
}

void TensorStore::release(const std::string& name) const { files_[file_index(name)]->release(name); }

void SafetensorsFile::release(const std::string& name) const {
  const Entry* e = find(name);
  if (e && map_) map_->release(data_ + e->begin, size_t(e->nbytes()));
}

DType TensorStore::dtype_of(const std::string& name) const {
  const auto& f = files_[file_index(name)];
  const auto* e = f->find(name);
  if (!e->supported) unsupported_dtype(f->path(), *e);
  return e->dtype;
}

Shape TensorStore::shape_of(const std::string& name) const { return files_[file_index(name)]->find(name)->shape; }

const std::string& TensorStore::file_of(const std::string& name) const { return files_[file_index(name)]->path(); }

// ---------------------------------------------------------------------------------------
// SafetensorsWriter

SafetensorsWriter::Spec& SafetensorsWriter::declare(const std::string& name, DType dtype, const Shape& shape) {
  QP_CHECK(!name.empty() && name != "__metadata__",
           "[safetensors] writer: '{}' cannot be a tensor name; rename the tensor", name);
  QP_CHECK(!by_name_.count(name), "[safetensors] writer: tensor '{}' added twice; each name must be unique", name);
  QP_CHECK(size_t(dtype) < size_t(DType::kCount), "[safetensors] writer: tensor '{}' has an invalid dtype", name);
  uint64_t numel = 1;
  for (int64_t d : shape) {
    QP_CHECK(d >= 0, "[safetensors] writer: tensor '{}' has a negative dimension in shape {}", name,
             shape_str(shape));
    QP_CHECK(!__builtin_mul_overflow(numel, uint64_t(d), &numel) && numel <= uint64_t(INT64_MAX),
             "[safetensors] writer: tensor '{}' shape {} overflows", name, shape_str(shape));
  }
  uint64_t nbytes;
  QP_CHECK(!__builtin_mul_overflow(numel, uint64_t(dtype_size(dtype)), &nbytes),
           "[safetensors] writer: tensor '{}' shape {} overflows", name, shape_str(shape));
  by_name_[name] = specs_.size();
  specs_.push_back(Spec{name, dtype, shape, nbytes, Tensor(), Fill()});
  return specs_.back();
}

void SafetensorsWriter::add(const std::string& name, DType dtype, const Shape& shape, Fill fill) {
  Spec& s = declare(name, dtype, shape);
  if (!fill && s.nbytes) {
    by_name_.erase(name);
    specs_.pop_back();
    fail("[safetensors] writer: tensor '{}' has no fill function", name);
  }
  s.fill = std::move(fill);
}

void SafetensorsWriter::add(const std::string& name, const Tensor& t) {
  QP_CHECK(t.defined(), "[safetensors] writer: tensor '{}' is undefined", name);
  declare(name, t.dtype(), t.shape()).tensor = t;
}

void SafetensorsWriter::set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

uint64_t SafetensorsWriter::total_bytes() const {
  uint64_t n = 0;
  for (const auto& s : specs_) n += s.nbytes;
  return n;
}

void SafetensorsWriter::write_subset(const std::string& path, const std::vector<size_t>& which) const {
  // Data order: larger elements first, so every tensor is aligned without gaps.
  std::vector<size_t> order = which;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(specs_[a].dtype) > dtype_size(specs_[b].dtype);
  });
  std::vector<uint64_t> begin(specs_.size());
  uint64_t pos = 0;
  for (size_t i : order) {
    begin[i] = pos;
    pos += specs_[i].nbytes;
  }

  std::string header;
  try {
    nlohmann::ordered_json h = nlohmann::ordered_json::object();
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    if (!metadata_.count("format")) meta["format"] = "pt";
    for (const auto& [k, v] : metadata_) meta[k] = v;
    h["__metadata__"] = std::move(meta);
    for (size_t i : which) {
      const Spec& s = specs_[i];
      nlohmann::ordered_json e = nlohmann::ordered_json::object();
      e["dtype"] = dtype_info(s.dtype).safetensors_name;
      e["shape"] = s.shape;
      e["data_offsets"] = {begin[i], begin[i] + s.nbytes};
      h[s.name] = std::move(e);
    }
    header = h.dump();
  } catch (const nlohmann::json::exception& e) {
    fail("[safetensors] {}: cannot encode the header ({}); tensor names and metadata must be valid UTF-8", path,
         e.what());
  }
  header.append((8 - header.size() % 8) % 8, ' ');
  uint8_t len[8];
  put_le64(len, header.size());

  AtomicFile out(path);
  out.write(len, 8);
  out.write(header);
  for (size_t i : order) {
    const Spec& s = specs_[i];
    if (s.nbytes == 0) continue;
    if (s.tensor.defined()) {
      out.write(s.tensor.raw(), size_t(s.nbytes));
      continue;
    }
    auto buf = Storage::allocate(size_t(s.nbytes));  // only this tensor's bytes are alive
    try {
      s.fill(buf->data());
    } catch (const Error& e) {
      fail("[safetensors] {}: while producing tensor '{}': {}", path, s.name, e.what());
    }
    out.write(buf->data(), size_t(s.nbytes));
  }
  out.commit();
}

void SafetensorsWriter::write(const std::string& path) const {
  std::vector<size_t> all(specs_.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  write_subset(path, all);
}

void SafetensorsWriter::write_sharded(const std::string& dir, uint64_t max_shard_bytes) const {
  QP_CHECK(max_shard_bytes > 0, "[safetensors] {}: the maximum shard size must be positive", dir);
  make_dirs(dir);
  std::vector<std::vector<size_t>> shards;
  uint64_t cur = 0;
  for (size_t i = 0; i < specs_.size(); ++i) {
    if (shards.empty() || (cur > 0 && cur + specs_[i].nbytes > max_shard_bytes)) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(i);
    cur += specs_[i].nbytes;
  }

  std::set<std::string> keep;
  if (shards.size() <= 1) {
    write(join_path(dir, kSingleName));
    keep.insert(kSingleName);
  } else {
    json weight_map = json::object();
    for (size_t k = 0; k < shards.size(); ++k) {
      std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", k + 1, shards.size());
      write_subset(join_path(dir, name), shards[k]);
      for (size_t i : shards[k]) weight_map[specs_[i].name] = name;
      keep.insert(name);
    }
    json idx = {{"metadata", {{"total_size", total_bytes()}}}, {"weight_map", std::move(weight_map)}};
    write_file_atomic(join_path(dir, kIndexName), idx.dump(2) + "\n");
    keep.insert(kIndexName);
  }
  // Files of the other layout would shadow or contradict the new one.
  std::vector<fs::path> stale;
  std::error_code ec;
  for (const auto& de : fs::directory_iterator(dir, ec)) {
    std::string n = de.path().filename().string();
    if ((n == kSingleName || n == kIndexName || is_shard_name(n)) && !keep.count(n)) stale.push_back(de.path());
  }
  for (const auto& p : stale) fs::remove(p, ec);
}

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  SafetensorsWriter w;
  for (const auto& [name, t] : tensors) w.add(name, t);
  for (const auto& [k, v] : metadata) w.set_metadata(k, v);
  w.write(path);
}

}  // namespace qpeft
