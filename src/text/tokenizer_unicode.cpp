// Lenient UTF-8 and NFC (canonical decomposition, canonical ordering, canonical
// composition; Hangul syllables algorithmically), following UAX #15.
#include "text/tokenizer_unicode.h"

#include <algorithm>
#include <vector>

namespace qpeft::unicode {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp & kInvalidBit) {
    out.push_back(char(cp & 0xFF));
  } else if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0, len = 0; i < s.size(); i += len)
    if (decode_utf8(s, i, &len) & kInvalidBit) return false;
  return true;
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0, len = 0; i < s.size(); i += len) {
    uint32_t cp = decode_utf8(s, i, &len);
    if (!(cp & kInvalidBit)) {
      out.append(s.data() + i, len);
      continue;
    }
    // One U+FFFD per maximal subpart of an ill-formed sequence (Unicode 3.9, as Rust does).
    unsigned c = p[i];
    size_t need = c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2 : c >= 0xF0 && c <= 0xF4 ? 3 : 0;
    size_t k = 1;
    for (; k <= need && i + k < s.size(); ++k) {
      unsigned b = p[i + k];
      unsigned lo = 0x80, hi = 0xBF;
      if (k == 1) {
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
      }
      if (b < lo || b > hi) break;
    }
    len = k;
    out += "\xEF\xBF\xBD";
  }
  return out;
}

namespace {

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;

uint8_t ccc_of(uint32_t cp) {
  if (cp & kInvalidBit) return 0;
  const auto* end = tables::kCcc + tables::kCccCount;
  auto it = std::upper_bound(tables::kCcc, end, cp, [](uint32_t v, const tables::CccRange& r) { return v < r.lo; });
  if (it == tables::kCcc) return 0;
  --it;
  return cp <= it->hi ? it->ccc : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp & kInvalidBit) { out.push_back(cp); return; }
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto* end = tables::kDecomp + tables::kDecompCount;
  auto it = std::lower_bound(tables::kDecomp, end, cp, [](const tables::Decomposition& d, uint32_t v) { return d.cp < v; });
  if (it == end || it->cp != cp) { out.push_back(cp); return; }
  decompose(it->d0, out);
  if (it->d1) decompose(it->d1, out);
}

uint32_t compose_pair(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto* end = tables::kComp + tables::kCompCount;
  auto it = std::lower_bound(tables::kComp, end, std::pair(a, b), [](const tables::Composition& c, std::pair<uint32_t, uint32_t> v) {
    return c.a < v.first || (c.a == v.first && c.b < v.second);
  });
  return it != end && it->a == a && it->b == b ? it->composite : 0;
}

}  // namespace

bool nfc_may_change(std::string_view s) {
  for (size_t i = 0, len = 0; i < s.size(); i += len) {
    if (static_cast<unsigned char>(s[i]) < 0x80) { len = 1; continue; }
    if (props(decode_utf8(s, i, &len)) & 4) return true;
  }
  return false;
}

std::string nfc(std::string_view s) {
  if (!nfc_may_change(s)) return std::string(s);
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0, len = 0; i < s.size(); i += len) decompose(decode_utf8(s, i, &len), cps);
  // Canonical ordering: stable sort of each run of non-starters by ccc (runs are short;
  // insertion sort keeps it linear for real text).
  for (size_t i = 0; i < cps.size();) {
    if (ccc_of(cps[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < cps.size() && ccc_of(cps[j]) != 0) ++j;
    if (j - i > 1)
      std::stable_sort(cps.begin() + i, cps.begin() + j, [](uint32_t a, uint32_t b) { return ccc_of(a) < ccc_of(b); });
    i = j;
  }
  // Canonical composition.
  std::vector<uint32_t> out;
  out.reserve(cps.size());
  size_t starter = SIZE_MAX;  // index in out of the last starter
  int last_ccc = -1;
  for (uint32_t cp : cps) {
    int c = ccc_of(cp);
    if (starter != SIZE_MAX && (last_ccc < c || (last_ccc == 0 && out.size() == starter + 1))) {
      // Not blocked: nothing between the starter and cp has ccc 0 or ccc >= c.
      if (uint32_t comp = compose_pair(out[starter], cp)) {
        out[starter] = comp;
        continue;
      }
    }
    if (c == 0) {
      starter = out.size();
      last_ccc = 0;
    } else {
      last_ccc = c;
    }
    out.push_back(cp);
  }
  std::string r;
  r.reserve(s.size());
  for (uint32_t cp : out) append_utf8(r, cp);
  return r;
}

}  // namespace qpeft::unicode
