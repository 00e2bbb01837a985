// What this CPU can run, asked once (CPUID), and the cap a user may put on the kernels chosen.
// Every SIMD kernel family selects its fastest table at start-up from these; each table has a
// scalar twin that tests compare it against.
#pragma once

namespace qpeft {

enum class SimdLevel { scalar = 0, avx2 = 1, avx512 = 2 };

bool cpu_has_avx2();         // AVX2 + FMA + F16C
bool cpu_has_avx512();       // AVX-512 F, BW, VL, DQ
bool cpu_has_avx512_bf16();  // AVX512_BF16 (vdpbf16ps) on top of cpu_has_avx512()

// The highest level kernels may use: QPEFT_ISA (scalar, avx2 or avx512; unset = avx512),
// or `family_var` when that is set, for one family (e.g. QPEFT_QUANT_ISA). A bad value is
// said once on stderr and ignored.
SimdLevel simd_cap(const char* family_var = nullptr);
const char* simd_level_name(SimdLevel level);

}  // namespace qpeft
