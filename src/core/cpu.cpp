#include "core/cpu.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace qpeft {

#if defined(__x86_64__) || defined(__i386__)
// __builtin_cpu_supports knows these names on GCC and clang alike (not "f16c" on clang 14,
// so F16C is read from CPUID leaf 1, ECX bit 29).
static bool has_f16c() {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
}
bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
  return ok;
}
bool cpu_has_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && cpu_has_avx2();
  return ok;
}
bool cpu_has_avx512_bf16() {
  static const bool ok = [] {
    unsigned a, b, c, d;  // CPUID leaf 7 sub-leaf 1, EAX bit 5
    return cpu_has_avx512() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
  }();
  return ok;
}
#else
bool cpu_has_avx2() { return false; }
bool cpu_has_avx512() { return false; }
bool cpu_has_avx512_bf16() { return false; }
#endif

static SimdLevel parse_level(const char* var, const char* v) {
  if (!std::strcmp(v, "scalar")) return SimdLevel::scalar;
  if (!std::strcmp(v, "avx2")) return SimdLevel::avx2;
  if (!std::strcmp(v, "avx512")) return SimdLevel::avx512;
  std::fprintf(stderr, "qpeft: ignoring %s=%s (expected scalar, avx2 or avx512)\n", var, v);
  return SimdLevel::avx512;
}

SimdLevel simd_cap(const char* family_var) {
  if (family_var)
    if (const char* v = std::getenv(family_var); v && *v) return parse_level(family_var, v);
  const char* v = std::getenv("QPEFT_ISA");
  return v && *v ? parse_level("QPEFT_ISA", v) : SimdLevel::avx512;
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::scalar: return "scalar";
    case SimdLevel::avx2: return "avx2";
    case SimdLevel::avx512: return "avx512";
  }
  return "?";
}

}  // namespace qpeft
