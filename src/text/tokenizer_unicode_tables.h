// Internal: generated Unicode data (see scripts/gen_unicode_tables.py). Use text/tokenizer_unicode.h.
#pragma once
#include <cstddef>
#include <cstdint>

namespace qpeft::unicode::tables {

struct CccRange { uint32_t lo, hi; uint8_t ccc; };
struct Decomposition { uint32_t cp, d0, d1; };  // d1 == 0: a singleton decomposition
struct Composition { uint32_t a, b, composite; };

extern const uint16_t kClassStage1[0x110000 / 256];
extern const uint8_t kClassStage2[];
extern const CccRange kCcc[];
extern const size_t kCccCount;
extern const Decomposition kDecomp[];
extern const size_t kDecompCount;
extern const Composition kComp[];
extern const size_t kCompCount;

}  // namespace qpeft::unicode::tables
