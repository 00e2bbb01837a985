#include "core/dtype.h"

#include <array>
#include <cmath>

#include "core/error.h"

namespace qpeft {

namespace {
constexpr std::array<DTypeInfo, size_t(DType::kCount)> kDTypes = {{
    {"f32", "F32", 4},
    {"f16", "F16", 2},
    {"bf16", "BF16", 2},
    {"u8", "U8", 1},
    {"i8", "I8", 1},
    {"i32", "I32", 4},
    {"i64", "I64", 8},
}};
static_assert(kDTypes.size() == size_t(DType::kCount), "one DTypeInfo per DType");
}  // namespace

const DTypeInfo& dtype_info(DType dt) { return kDTypes.at(size_t(dt)); }

bool parse_dtype(std::string_view s, DType* out) {
  for (size_t i = 0; i < kDTypes.size(); ++i) {
    if (s == kDTypes[i].name || s == kDTypes[i].safetensors_name) {
      *out = DType(i);
      return true;
    }
  }
  return false;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while (!(mant & 0x400));
      u = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | mant << 13;
  } else {
    u = sign | (exp + 112) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return sign | 0x7e00;                 // NaN
  if (absu >= 0x477ff000u) return sign | 0x7c00;                // overflow -> inf
  if (absu < 0x38800000u) {                                     // subnormal or zero
    float a;
    std::memcpy(&a, &absu, 4);
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));    // a / 2^-24
  }
  uint32_t r = absu - 0x38000000u;  // rebias exponent 127 -> 15
  r += 0xfffu + ((r >> 13) & 1u);   // round to nearest even
  return sign | uint16_t(r >> 13);
}

// dtype_avx2.cpp: the AVX2/F16C path; false when the CPU lacks it (then the scalar loop runs).
bool half_to_f32_avx2(const void* src, DType dt, float* dst, size_t n);

void convert_to_f32(const void* src, DType dt, float* dst, size_t n) {
  if ((dt == DType::BF16 || dt == DType::F16) && half_to_f32_avx2(src, dt, dst, n)) return;
  switch (dt) {
    case DType::F32:
      if (n) std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: {
      auto s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::F16: {
      auto s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    default:
      fail("[convert_to_f32] dtype {} is not a float type", dtype_name(dt));
  }
}

void convert_from_f32(const float* src, DType dt, void* dst, size_t n) {
  switch (dt) {
    case DType::F32:
      if (n) std::memcpy(dst, src, n * 4);
      return;
    case DType::BF16: {
      auto d = static_cast<uint16_t*>(dst);
      if (f32_to_bf16_avx512(src, d, n)) return;
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::F16: {
      auto d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    default:
      fail("[convert_from_f32] dtype {} is not a float type", dtype_name(dt));
  }
}

}  // namespace qpeft
