// Tensor: a contiguous, row-major n-d array over shared storage (owned memory or a
// memory-mapped file). Views share storage; there are no strides, so every kernel can
// state its shapes plainly.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace qpeft {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// Keeps freed tensor memory in the process for reuse instead of returning it to the OS, so a
// training step does not fault its activations in again every step (~10% of a step on the
// `small` preset). Peak RSS is unchanged; idle RSS stays at the high-water mark. A process-wide
// malloc setting (glibc; a no-op elsewhere), so the program decides: qpeft's CLI and
// benchmarks call it once at start-up.
void retain_freed_memory();

class Storage {
 public:
  // 64-byte aligned; zero-filled unless zero = false.
  static std::shared_ptr<Storage> allocate(size_t bytes, bool zero = true);
  // Memory owned elsewhere (an mmap); keep_alive holds it.
  static std::shared_ptr<Storage> wrap(void* data, size_t bytes, std::shared_ptr<void> keep_alive);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  bool owned() const { return owned_; }

 private:
  Storage() = default;
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool owned_ = false;
  std::shared_ptr<void> keep_alive_;
};

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised: for outputs a kernel overwrites completely.
  static Tensor empty(const Shape& shape, DType dt = DType::F32);
  static Tensor zeros(const Shape& shape, DType dt = DType::F32);
  static Tensor full(const Shape& shape, float value);
  static Tensor from_storage(std::shared_ptr<Storage> st, size_t byte_offset, const Shape& shape, DType dt);
  static Tensor from_vector(const Shape& shape, const std::vector<float>& v);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const { return shape_.at(i < 0 ? shape_.size() + i : size_t(i)); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return size_t(numel_) * dtype_size(dtype_); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  float* f32() const;    // checks dtype == F32
  int32_t* i32() const;  // checks dtype == I32

  Tensor reshape(const Shape& shape) const;          // same storage; numel must match
  Tensor rows(int64_t begin, int64_t end) const;     // view of dim-0 slice
  Tensor clone() const;                              // deep copy, same dtype
  Tensor to(DType dt) const;                         // converted copy (float types)
  std::vector<float> to_vector() const;              // f32 copy of the values

  std::string describe() const;  // "f32[4, 8]"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
};

}  // namespace qpeft
