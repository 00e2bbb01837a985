// Tokenizer stages around the model: normalizers, pre-tokenizers (the Split regexes of
// GPT-2, Llama 3 and Qwen2 written out by hand, ByteLevel, Metaspace) and decoders.
#include <array>
#include <cstring>

#include "core/error.h"
#include "text/tokenizer_impl.h"
#include "text/tokenizer_unicode.h"

namespace qpeft::tok_detail {

using unicode::CharClass;

// ---------------------------------------------------------------- byte alphabet (GPT-2)

namespace {
struct ByteAlphabet {
  std::array<uint32_t, 256> to_char{};
  std::array<int16_t, 324> to_byte{};
  ByteAlphabet() {
    to_byte.fill(-1);
    uint32_t extra = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      to_char[b] = printable ? uint32_t(b) : extra++;
      to_byte[to_char[b]] = int16_t(b);
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}
}  // namespace

uint32_t byte_to_char(uint8_t b) { return alphabet().to_char[b]; }
int byte_of_char(uint32_t cp) { return cp < 324 ? alphabet().to_byte[cp] : -1; }

// ---------------------------------------------------------------- normalizers

static void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size() + s.size() / 4);
  size_t i = 0;
  for (size_t j; (j = s.find(from, i)) != std::string::npos; i = j + from.size()) {
    out.append(s, i, j - i);
    out.append(to);
  }
  out.append(s, i);
  s.swap(out);
}

std::string normalize(const std::vector<Normalizer>& steps, std::string_view in) {
  std::string s(in);
  for (const auto& n : steps) {
    switch (n.kind) {
      case Normalizer::kPrepend:
        if (!s.empty()) s.insert(0, n.a);
        break;
      case Normalizer::kReplace:
        replace_all(s, n.a, n.b);
        break;
      case Normalizer::kNfc:
        if (unicode::nfc_may_change(s)) s = unicode::nfc(s);
        break;
    }
  }
  return s;
}

// ---------------------------------------------------------------- Split patterns

// The patterns as they appear in tokenizer.json files.
static constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
static constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
static constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

SplitPattern parse_split_regex(std::string_view r) {
  if (r == kGpt2Regex) return SplitPattern::kGpt2;
  if (r == kLlama3Regex) return SplitPattern::kLlama3;
  if (r == kQwen2Regex) return SplitPattern::kQwen2;
  return SplitPattern::kNone;
}

namespace {
// The input decoded once: code point, class and byte offset of each character.
struct Chars {
  std::vector<uint32_t> cp;
  std::vector<uint8_t> cls;
  std::vector<uint32_t> off;  // size n + 1
  void decode(std::string_view s) {
    cp.clear(), cls.clear(), off.clear();
    for (size_t i = 0, len = 0; i < s.size(); i += len) {
      uint32_t c;
      if (static_cast<unsigned char>(s[i]) < 0x80) {
        c = static_cast<unsigned char>(s[i]);
        len = 1;
      } else {
        c = unicode::decode_utf8(s, i, &len);
      }
      cp.push_back(c);
      cls.push_back(unicode::char_class(c));
      off.push_back(uint32_t(i));
    }
    off.push_back(uint32_t(s.size()));
  }
};

inline bool is_nl(uint32_t c) { return c == '\r' || c == '\n'; }
inline uint32_t fold(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c == 0x17F) return 's';  // LATIN SMALL LETTER LONG S folds to 's' under (?i)
  return c;
}

// Length (in chars) of a contraction match at i, or 0.
size_t contraction(const Chars& t, size_t i, size_t n, bool icase) {
  if (t.cp[i] != '\'' || i + 1 >= n) return 0;
  uint32_t a = icase ? fold(t.cp[i + 1]) : t.cp[i + 1];
  uint32_t b = i + 2 < n ? (icase ? fold(t.cp[i + 2]) : t.cp[i + 2]) : 0;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// '\s+(?!\S)|\s+' at a whitespace run [i, j).
size_t trailing_space(size_t i, size_t j, size_t n) { return j == n || j - i < 2 ? j : j - 1; }

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const Chars& t, size_t i, size_t n) {
  if (size_t k = contraction(t, i, n, false)) return i + k;
  size_t j = i;
  if (t.cp[i] == ' ' && i + 1 < n && t.cls[i + 1] != unicode::kSpace) ++j;
  uint8_t c = t.cls[j];
  if (c != unicode::kSpace) {  // a letter, number or other run (after an optional space)
    while (j < n && t.cls[j] == c) ++j;
    return j;
  }
  while (j < n && t.cls[j] == unicode::kSpace) ++j;
  return trailing_space(i, j, n);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|
// \s*[\r\n]+|\s+(?!\S)|\s+
size_t match_llama3(const Chars& t, size_t i, size_t n, size_t max_digits) {
  if (size_t k = contraction(t, i, n, true)) return i + k;
  uint32_t c = t.cp[i];
  uint8_t cl = t.cls[i];
  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t j = i;
  if (cl != unicode::kLetter && cl != unicode::kNumber && !is_nl(c) && i + 1 < n && t.cls[i + 1] == unicode::kLetter)
    ++j;
  if (t.cls[j] == unicode::kLetter) {
    while (j < n && t.cls[j] == unicode::kLetter) ++j;
    return j;
  }
  if (cl == unicode::kNumber) {
    while (j < n && t.cls[j] == unicode::kNumber && j - i < max_digits) ++j;
    return j;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  if (c == ' ' && i + 1 < n && t.cls[i + 1] == unicode::kOther) ++j;
  if (t.cls[j] == unicode::kOther) {
    while (j < n && t.cls[j] == unicode::kOther) ++j;
    while (j < n && is_nl(t.cp[j])) ++j;
    return j;
  }
  // Whitespace: '\s*[\r\n]+' ends after the run's last newline; else '\s+(?!\S)|\s+'.
  size_t last_nl = SIZE_MAX;
  for (j = i; j < n && t.cls[j] == unicode::kSpace; ++j)
    if (is_nl(t.cp[j])) last_nl = j;
  if (last_nl != SIZE_MAX) return last_nl + 1;
  return trailing_space(i, j, n);
}
}  // namespace

void split_pattern(SplitPattern pat, std::string_view s, std::vector<std::pair<uint32_t, uint32_t>>& out) {
  thread_local Chars t;
  t.decode(s);
  size_t n = t.cp.size();
  for (size_t i = 0; i < n;) {
    size_t j = pat == SplitPattern::kGpt2     ? match_gpt2(t, i, n)
               : pat == SplitPattern::kLlama3 ? match_llama3(t, i, n, 3)
                                              : match_llama3(t, i, n, 1);
    if (j <= i) j = i + 1;  // cannot happen (every class is covered); keeps progress
    out.emplace_back(t.off[i], t.off[j]);
    i = j;
  }
}

// ---------------------------------------------------------------- pre-tokenizer

void pre_tokenize(const PreTokenizer& p, std::string_view s, bool at_start, std::string& scratch,
                  const std::function<void(std::string_view)>& emit) {
  std::string_view text = s;
  if (p.metaspace) {
    scratch.clear();
    bool prepend = p.prepend == PreTokenizer::kAlways || (p.prepend == PreTokenizer::kFirst && at_start);
    if (prepend && !(s.substr(0, p.replacement.size()) == p.replacement) && !(!s.empty() && s[0] == ' '))
      scratch = p.replacement;
    for (char c : s) {
      if (c == ' ')
        scratch += p.replacement;
      else
        scratch.push_back(c);
    }
    text = scratch;
    if (!p.metaspace_split) {
      if (!text.empty()) emit(text);
      return;
    }
    // Split before each replacement (MergedWithNext).
    size_t begin = 0;
    for (size_t i = text.find(p.replacement, 1); i != std::string_view::npos; i = text.find(p.replacement, i + 1)) {
      emit(text.substr(begin, i - begin));
      begin = i;
    }
    if (begin < text.size()) emit(text.substr(begin));
    return;
  }
  if (p.byte_level && p.add_prefix_space && !s.empty() && s[0] != ' ') {
    scratch.assign(1, ' ');
    scratch.append(s);
    text = scratch;
  }
  if (p.split == SplitPattern::kNone) {
    if (!text.empty()) emit(text);
    return;
  }
  thread_local std::vector<std::pair<uint32_t, uint32_t>> ranges;
  ranges.clear();
  split_pattern(p.split, text, ranges);
  for (auto [b, e] : ranges) emit(text.substr(b, e - b));
}

// ---------------------------------------------------------------- decoders

static bool parse_byte_token(const std::string& t, uint8_t* b) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return false;
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
  int h = hex(t[3]), l = hex(t[4]);
  if (h < 0 || l < 0) return false;
  *b = uint8_t(h * 16 + l);
  return true;
}

std::string decode_pipeline(const std::vector<Decoder>& steps, std::vector<std::string> tokens) {
  for (const auto& d : steps) {
    switch (d.kind) {
      case Decoder::kByteLevel: {
        std::string bytes;
        for (const auto& t : tokens) {
          size_t start = bytes.size();
          bool ok = true;
          for (size_t i = 0, len = 0; i < t.size(); i += len) {
            int b = byte_of_char(unicode::decode_utf8(t, i, &len));
            if (b < 0) { ok = false; break; }
            bytes.push_back(char(b));
          }
          if (!ok) bytes.replace(start, std::string::npos, t);  // not from the alphabet: as is
        }
        tokens.assign(1, unicode::to_valid_utf8(bytes));
        break;
      }
      case Decoder::kReplace:
        for (auto& t : tokens) replace_all(t, d.a, d.b);
        break;
      case Decoder::kByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        size_t n_pending = 0;
        auto flush = [&] {
          if (!n_pending) return;
          if (unicode::is_valid_utf8(pending)) {
            out.push_back(pending);
          } else {
            for (size_t k = 0; k < n_pending; ++k) out.emplace_back("\xEF\xBF\xBD");
          }
          pending.clear();
          n_pending = 0;
        };
        for (auto& t : tokens) {
          uint8_t b;
          if (parse_byte_token(t, &b)) {
            pending.push_back(char(b));
            ++n_pending;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens.swap(out);
        break;
      }
      case Decoder::kFuse: {
        std::string all;
        for (auto& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case Decoder::kStrip:
        for (auto& t : tokens) {
          size_t n = d.a.size(), b = 0, e = t.size();
          for (int k = 0; k < d.start && e - b >= n && t.compare(b, n, d.a) == 0; ++k) b += n;
          for (int k = 0; k < d.stop && e - b >= n && t.compare(e - n, n, d.a) == 0; ++k) e -= n;
          t = t.substr(b, e - b);
        }
        break;
      case Decoder::kMetaspace:
        for (size_t i = 0; i < tokens.size(); ++i)
          replace_all(tokens[i], d.a, i == 0 && d.prepend_first ? "" : " ");
        break;
    }
  }
  std::string out;
  for (auto& t : tokens) out += t;
  return out;
}

}  // namespace qpeft::tok_detail
