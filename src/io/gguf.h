// GGUF: llama.cpp's model and adapter files (version 3; versions 2 and 3 are read).
//
// Layout, little-endian: "GGUF", u32 version, u64 tensor count, u64 metadata count; the
// metadata (key: string, u32 value type, value); the tensor infos (name: string, u32 n_dims,
// u64 ne[n_dims] innermost first, u32 ggml type, u64 offset within the data section); padding
// to `general.alignment` (default 32); the data section, each tensor at an aligned offset.
// A string is u64 length + bytes; an array is u32 element type + u64 count + elements.
// ggml's ne[0] is the innermost (contiguous) dimension: a PyTorch [out, in] weight has
// ne = [in, out].
//
// Reading checks every length, count, offset, alignment and type against the file size before
// anything is handed out (the file may come from anyone); tensors are views into the mapping.
// Writing streams into an AtomicFile. Errors are qpeft::Error starting with "[gguf]" and name
// the file and the key or tensor.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/file.h"

namespace qpeft {

enum class GgufType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7,
  kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

// ggml tensor types qpeft reads or writes (ggml.h's enum ggml_type values).
enum class GgufTensorType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ8_0 = 8, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kBF16 = 30,
};
// "f32", "q4_K", ...; nullptr for a type qpeft does not know.
const char* ggml_type_name(uint32_t type);
// Elements per block and bytes per block (1 and the element size for f32/f16/bf16); false
// for an unknown type.
bool ggml_type_block(uint32_t type, int64_t* block_elements, int64_t* block_bytes);

// One metadata value: a scalar (in the field for its kind) or an array of scalars.
struct GgufValue {
  GgufType type = GgufType::kUint32;
  GgufType array_type = GgufType::kUint32;  // arrays: the element type
  uint64_t u = 0;        // unsigned integers and bool
  int64_t i = 0;         // signed integers
  double f = 0;          // floats
  std::string s;         // strings
  std::vector<int64_t> ints;        // integer and bool arrays
  std::vector<double> floats;       // float arrays
  std::vector<std::string> strings; // string arrays

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue f32(float v);
  static GgufValue boolean(bool v);
  static GgufValue str(std::string v);
  static GgufValue str_array(std::vector<std::string> v);
  static GgufValue i32_array(std::vector<int32_t> v);
  static GgufValue f32_array(std::vector<float> v);
};

class GgufFile {
 public:
  struct Tensor {
    std::string name;
    uint32_t type = 0;
    std::vector<int64_t> ne;  // ggml order, innermost first
    uint64_t offset = 0;      // within the data section
    uint64_t nbytes = 0;
    const uint8_t* data = nullptr;  // into the mapping
    int64_t numel() const;
  };

  // Largest counts accepted before anything is allocated (each also bounded by the file size).
  static constexpr uint64_t kMaxTensors = 1'000'000;
  static constexpr uint64_t kMaxMetadata = 1'000'000;
  static constexpr uint64_t kMaxArray = 100'000'000;

  static std::shared_ptr<GgufFile> open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const Tensor* find_tensor(const std::string& name) const;
  // Keeps the mapping alive for views handed out.
  std::shared_ptr<const MappedFile> mapping() const { return file_; }

  // Typed look-ups that fail with the file and key named: a missing key, or one of another type.
  std::string get_string(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;  // any unsigned or non-negative signed integer
  double get_float(const std::string& key) const;   // float32/float64 (or an integer)
  bool get_bool(const std::string& key) const;
  const GgufValue& get_array(const std::string& key, GgufType element) const;

 private:
  std::string path_;
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> by_name_;
};

// Writes a GGUF file: metadata in insertion order, then tensors in the order added, each
// produced when it is written (so a model larger than memory streams through).
class GgufWriter {
 public:
  using Producer = std::function<std::vector<uint8_t>()>;
  void set(const std::string& key, GgufValue value);
  // `ne` in ggml order (innermost first); `produce` returns the type's bytes for ne.
  void add_tensor(const std::string& name, GgufTensorType type, std::vector<int64_t> ne, Producer produce);
  // Header, metadata, tensor infos and data, atomically (temporary file, then rename).
  void write(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  struct Pending {
    std::string name;
    GgufTensorType type;
    std::vector<int64_t> ne;
    uint64_t nbytes;
    Producer produce;
  };
  std::vector<Pending> tensors_;
};

}  // namespace qpeft
