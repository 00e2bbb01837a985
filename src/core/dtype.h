// Storage element types and f32 conversion. Compute on CPU is f32; bf16/f16 are storage only.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace qpeft {

enum class DType : uint8_t { F32, F16, BF16, U8, I8, I32, I64, kCount };

struct DTypeInfo {
  const char* name;              // our spelling: "f32"
  const char* safetensors_name;  // "F32", "BF16", ...
  size_t size;                   // bytes per element
};

const DTypeInfo& dtype_info(DType dt);
inline size_t dtype_size(DType dt) { return dtype_info(dt).size; }
inline const char* dtype_name(DType dt) { return dtype_info(dt).name; }
// Parses "f32"/"bf16"/... or the safetensors spelling; returns false if unknown.
bool parse_dtype(std::string_view s, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest even; NaN stays NaN (quiet).
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
// The AVX-512 path of convert_from_f32(…, BF16), the same bits as f32_to_bf16; returns false
// (nothing written) where the CPU lacks AVX-512. Exposed for the tests of both paths.
bool f32_to_bf16_avx512(const float* src, uint16_t* dst, size_t n);

// Converts n elements of src (dtype dt, any float type) to f32 / from f32.
void convert_to_f32(const void* src, DType dt, float* dst, size_t n);
void convert_from_f32(const float* src, DType dt, void* dst, size_t n);

}  // namespace qpeft
