#include "core/tensor.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace qpeft {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    QP_CHECK(d >= 0, "[tensor] negative dimension in shape {}", shape_str(s));
    QP_CHECK(d == 0 || n <= INT64_MAX / d, "[tensor] shape {} overflows", shape_str(s));
    n *= d;
  }
  return n;
}

void retain_freed_memory() {
#ifdef M_MMAP_THRESHOLD
  // glibc: blocks up to 32 MiB (its maximum) come from the heap, and the heap keeps up to
  // 1 GiB of freed memory instead of trimming it after each step.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes, bool zero) {
  auto st = std::shared_ptr<Storage>(new Storage());
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  st->data_ = std::aligned_alloc(64, rounded);
  if (!st->data_) fail("[tensor] out of memory allocating {} bytes", bytes);
  if (zero) std::memset(st->data_, 0, rounded);
  st->bytes_ = bytes;
  st->owned_ = true;
  return st;
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t bytes, std::shared_ptr<void> keep_alive) {
  auto st = std::shared_ptr<Storage>(new Storage());
  st->data_ = data;
  st->bytes_ = bytes;
  st->keep_alive_ = std::move(keep_alive);
  return st;
}

Storage::~Storage() {
  if (owned_) std::free(data_);
}

Tensor Tensor::empty(const Shape& shape, DType dt) {
  int64_t n = shape_numel(shape);
  return from_storage(Storage::allocate(size_t(n) * dtype_size(dt), false), 0, shape, dt);
}

Tensor Tensor::zeros(const Shape& shape, DType dt) {
  int64_t n = shape_numel(shape);
  return from_storage(Storage::allocate(size_t(n) * dtype_size(dt), true), 0, shape, dt);
}

Tensor Tensor::full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = value;
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> st, size_t byte_offset, const Shape& shape, DType dt) {
  Tensor t;
  t.numel_ = shape_numel(shape);
  size_t need = size_t(t.numel_) * dtype_size(dt);
  QP_CHECK(byte_offset <= st->bytes() && need <= st->bytes() - byte_offset,
           "[tensor] view {} {} at offset {} exceeds storage of {} bytes", dtype_name(dt), shape_str(shape),
           byte_offset, st->bytes());
  t.storage_ = std::move(st);
  t.offset_ = byte_offset;
  t.shape_ = shape;
  t.dtype_ = dt;
  return t;
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& v) {
  Tensor t = empty(shape);
  QP_CHECK(int64_t(v.size()) == t.numel(), "[tensor] {} values for shape {}", v.size(), shape_str(shape));
  if (!v.empty()) std::memcpy(t.f32(), v.data(), v.size() * 4);  // an empty tensor has no storage
  return t;
}

float* Tensor::f32() const {
  QP_CHECK(defined() && dtype_ == DType::F32, "[tensor] expected f32, got {}", describe());
  return static_cast<float*>(raw());
}

int32_t* Tensor::i32() const {
  QP_CHECK(defined() && dtype_ == DType::I32, "[tensor] expected i32, got {}", describe());
  return static_cast<int32_t*>(raw());
}

Tensor Tensor::reshape(const Shape& shape) const {
  QP_CHECK(shape_numel(shape) == numel_, "[reshape] cannot view {} as {}", describe(), shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  QP_CHECK(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0], "[rows] rows [{}, {}) of {}", begin,
           end, describe());
  int64_t row_elems = shape_[0] ? numel_ / shape_[0] : 0;
  Shape s = shape_;
  s[0] = end - begin;
  return from_storage(storage_, offset_ + size_t(begin * row_elems) * dtype_size(dtype_), s, dtype_);
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(t.raw(), raw(), nbytes());  // an empty tensor has no storage
  return t;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype_) return clone();
  Tensor t = empty(shape_, dt);
  if (dtype_ == DType::F32) {
    convert_from_f32(f32(), dt, t.raw(), size_t(numel_));
  } else if (dt == DType::F32) {
    convert_to_f32(raw(), dtype_, t.f32(), size_t(numel_));
  } else {
    Tensor tmp = to(DType::F32);
    return tmp.to(dt);
  }
  return t;
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(static_cast<size_t>(numel_));
  if (dtype_ == DType::I32) {
    for (int64_t i = 0; i < numel_; ++i) v[i] = float(i32()[i]);
  } else {
    convert_to_f32(raw(), dtype_, v.data(), v.size());
  }
  return v;
}

std::string Tensor::describe() const {
  if (!defined()) return "<undefined>";
  return std::string(dtype_name(dtype_)) + shape_str(shape_);
}

}  // namespace qpeft
