// Unicode for the tokenizers: lenient UTF-8 decoding, the character classes the
// pre-tokenizer regexes use (\p{L}, \p{N}, \s) and NFC normalization.
// Invalid UTF-8 never throws here: each invalid byte is a one-byte "character" of class
// Other, kept as is, so a file's bytes are tokenized exactly as they are.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "text/tokenizer_unicode_tables.h"

namespace qpeft::unicode {

// A value no code point has: an invalid byte (its value is in the low 8 bits).
constexpr uint32_t kInvalidBit = 0x80000000u;

// Decodes the character at s[i] (i < s.size()); *len gets its byte length (>= 1).
// Returns the code point, or kInvalidBit | byte for a byte that starts no valid sequence
// (overlong forms, surrogates and values past U+10FFFF are invalid, as in Rust's str).
inline uint32_t decode_utf8(std::string_view s, size_t i, size_t* len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + i;
  size_t n = s.size() - i;
  unsigned c = p[0];
  if (c < 0x80) { *len = 1; return c; }
  auto cont = [&](size_t k) { return k < n && (p[k] & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF && cont(1)) { *len = 2; return ((c & 0x1F) << 6) | (p[1] & 0x3F); }
  if (c >= 0xE0 && c <= 0xEF && cont(1) && cont(2)) {
    uint32_t cp = ((c & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    if (cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF)) { *len = 3; return cp; }
  }
  if (c >= 0xF0 && c <= 0xF4 && cont(1) && cont(2) && cont(3)) {
    uint32_t cp = ((c & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    if (cp >= 0x10000 && cp <= 0x10FFFF) { *len = 4; return cp; }
  }
  *len = 1;
  return kInvalidBit | c;
}

void append_utf8(std::string& out, uint32_t cp);

enum CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

inline uint8_t props(uint32_t cp) {
  if (cp >= 0x110000) return 0;  // invalid bytes
  return tables::kClassStage2[size_t(tables::kClassStage1[cp >> 8]) * 256 + (cp & 0xFF)];
}
inline CharClass char_class(uint32_t cp) { return CharClass(props(cp) & 3); }
inline bool is_space(uint32_t cp) { return char_class(cp) == kSpace; }

// True if the string is valid UTF-8.
bool is_valid_utf8(std::string_view s);
// Replaces each maximal invalid subsequence by U+FFFD (like Rust's from_utf8_lossy).
std::string to_valid_utf8(std::string_view bytes);

// Canonical composition (NFC). Invalid bytes pass through unchanged. Linear time; strings
// whose characters NFC cannot change are returned as they are.
std::string nfc(std::string_view s);
bool nfc_may_change(std::string_view s);

}  // namespace qpeft::unicode
