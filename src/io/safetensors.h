// safetensors: the checkpoint format of Hugging Face models and PEFT adapters.
//
// Layout: u64 little-endian N, then N bytes of UTF-8 JSON (padded with spaces), then the
// data section. The JSON maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets relative to the data section) plus an optional "__metadata__": {str: str}.
//
// Reading: SafetensorsFile maps one file and validates every length and offset in the header
// before anything is handed out; get() returns zero-copy views over the mapping. TensorStore
// reads a checkpoint directory (single file or sharded with model.safetensors.index.json).
// Writing: SafetensorsWriter streams one tensor at a time into an AtomicFile, so a checkpoint
// larger than memory can be written from tensors produced on demand.
//
// Errors are qpeft::Error, start with "[safetensors]" and name the file and the tensor.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/file.h"
#include "core/tensor.h"

namespace qpeft {

class SafetensorsFile {
 public:
  struct Entry {
    std::string name;
    std::string dtype_name;  // spelling in the file: "BF16", "F64", "F8_E4M3", ...
    bool supported = false;  // dtype_name is one of qpeft's DTypes; get() needs it
    DType dtype = DType::F32;  // meaningful only when supported
    Shape shape;
    uint64_t begin = 0, end = 0;  // byte range within the data section
    uint64_t nbytes() const { return end - begin; }
  };

  // Largest header accepted (the reference implementation's limit too).
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  // Maps the file and validates the header: length, JSON, and for every entry its dtype,
  // shape, offsets within the data section, size == numel * element size, and no overlap
  // with another tensor. Dtypes qpeft does not compute with (F64, BOOL, F8_*, ...) and even
  // unrecognised spellings are listed (sizes checked where the element size is known);
  // only get() refuses them. More lenient than the reference reader: gaps between tensors
  // and bytes after the last one are accepted (the writer never produces them).
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  size_t size() const { return entries_.size(); }
  // Tensor names, sorted.
  std::vector<std::string> names() const;
  // All entries in data order (ascending begin): reading them in this order is sequential I/O.
  const std::vector<Entry>& entries() const { return entries_; }
  bool has(const std::string& name) const { return find(name) != nullptr; }
  const Entry* find(const std::string& name) const;  // nullptr if absent

  // Zero-copy view into the mapping (READ-ONLY memory: clone() before writing to it). The
  // tensor keeps the mapping alive. Data not aligned to its element size is copied instead.
  // Errors name the file and tensor: missing name (with a close-name suggestion) or a dtype
  // qpeft cannot load.
  Tensor get(const std::string& name) const;
  Tensor get(const Entry& e) const;
  // After a tensor's bytes were copied elsewhere: lets the OS drop its resident pages.
  void release(const std::string& name) const;
  // Whether t is one of get()'s views into the mapping (not a copy).
  bool is_view(const Tensor& t) const { return t.storage() == storage_; }

  // "__metadata__" (empty if absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The data section: entry e's bytes are data_section() + e.begin.
  const uint8_t* data_section() const { return data_; }
  uint64_t data_size() const { return data_size_; }
  uint64_t header_size() const { return header_size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  std::shared_ptr<MappedFile> map_;
  std::shared_ptr<Storage> storage_;  // the whole data section, keeps map_ alive
  const uint8_t* data_ = nullptr;
  uint64_t data_size_ = 0, header_size_ = 0;
  std::vector<Entry> entries_;                // data order
  std::map<std::string, size_t> index_;       // name -> position in entries_
  std::map<std::string, std::string> metadata_;
};

// A set of tensors spread over one or more safetensors files (a checkpoint directory).
// Cheap to copy: files are shared.
class TensorStore {
 public:
  // `dir` holds model.safetensors, or model.safetensors.index.json plus its shards
  // ({"metadata": {...}, "weight_map": {tensor: shard file}}). Every shard must exist and
  // hold the tensors the index assigns to it; only the tensors the index lists are visible.
  // If both layouts are present, model.safetensors wins (as in transformers).
  static TensorStore open_dir(const std::string& dir);
  // The union of the files' tensors; a name in two files is an error.
  static TensorStore open_files(const std::vector<std::string>& paths);

  // "the directory D" or "the files a, b" - for messages.
  const std::string& source() const { return source_; }
  size_t size() const { return where_.size(); }
  std::vector<std::string> names() const;  // sorted
  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const SafetensorsFile::Entry* find(const std::string& name) const;  // nullptr if absent
  // Errors if missing: "tensor 'X' not found in DIR (N tensors; did you mean 'Y'?)".
  // A zero-copy view, or after set_in_memory(true) a copy in process memory whose mapped
  // pages are then released.
  Tensor get(const std::string& name) const;
  // Always the zero-copy view: for a tensor read only in part (an embedding's looked-up rows).
  Tensor get_mapped(const std::string& name) const;
  // Copies tensors into process memory as get() hands them out. Mapped pages are file cache,
  // which the kernel may drop and read back while they idle between uses; anonymous memory
  // stays (see LoadOptions::in_memory).
  void set_in_memory(bool on) { in_memory_ = on; }
  void release(const std::string& name) const;  // see SafetensorsFile::release
  DType dtype_of(const std::string& name) const;  // errors if missing or unsupported dtype
  Shape shape_of(const std::string& name) const;
  const std::string& file_of(const std::string& name) const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  size_t file_index(const std::string& name) const;  // errors if missing
  std::string source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // name -> index into files_
  bool in_memory_ = false;
};

// Streams tensors into a safetensors file. Tensors are declared first (name, dtype, shape,
// and a tensor or a fill callback); write() computes the header from the declarations, then
// produces and writes one tensor at a time, so only one tensor's buffer is alive at once.
//
// Layout (readable by the reference safetensors/transformers): header JSON lists
// "__metadata__" first, then tensors in insertion order, padded with spaces to a multiple of
// 8 bytes; the data section has no gaps and holds tensors in insertion order within each
// element size, larger element sizes first, so every tensor is aligned to its element size.
// (All tensors of one dtype: pure insertion order.) Metadata gets "format": "pt" unless set,
// as transformers requires it.
class SafetensorsWriter {
 public:
  // Fills dst (zeroed, nbytes = numel * dtype size, 64-byte aligned) with the tensor's data.
  // Not called for empty tensors.
  using Fill = std::function<void(void* dst)>;

  void add(const std::string& name, DType dtype, const Shape& shape, Fill fill);
  // Shares t's storage (no copy); t is read when written.
  void add(const std::string& name, const Tensor& t);
  void set_metadata(const std::string& key, const std::string& value);

  size_t size() const { return specs_.size(); }
  uint64_t total_bytes() const;  // sum of tensor data sizes

  // One file, written atomically (temporary file, fsync, rename).
  void write(const std::string& path) const;
  // Into directory `dir` (created if missing): a single model.safetensors if the data fits
  // in max_shard_bytes, else model-0000i-of-0000N.safetensors shards (tensors packed greedily
  // in insertion order; a tensor larger than the limit gets a shard of its own) and
  // model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map"}) written last.
  // Each file is atomic; files of the other layout and stale shards are removed afterwards.
  // For an all-or-nothing directory, write into an AtomicDir's path.
  void write_sharded(const std::string& dir, uint64_t max_shard_bytes) const;

 private:
  struct Spec {
    std::string name;
    DType dtype;
    Shape shape;
    uint64_t nbytes;
    Tensor tensor;  // either a tensor...
    Fill fill;      // ...or a fill callback
  };
  Spec& declare(const std::string& name, DType dtype, const Shape& shape);  // validates, appends
  void write_subset(const std::string& path, const std::vector<size_t>& which) const;
  std::vector<Spec> specs_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// The closest names to `name` among `candidates` (same suffix or small edit distance), at
// most `max` of them - for "did you mean" hints.
std::vector<std::string> closest_names(const std::string& name, const std::vector<std::string>& candidates,
                                       size_t max = 3);

}  // namespace qpeft
