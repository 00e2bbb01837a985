// Reading JSON we did not write: one parser with the nesting limit (core/limits.h), and one
// checked reader of object fields. Every error is one line naming the file, the key, what was
// expected and what was found; no nlohmann exception reaches the user.
#pragma once
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace qpeft {

// Parses `text` (from `where`, e.g. a path or "file:line"); syntax errors, numbers out of
// range (1e400) and nesting deeper than limits::kMaxJsonDepth are errors naming `where`.
nlohmann::json parse_json(std::string_view text, const std::string& where);
nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& where);
// parse_json of a file's contents; a missing file is an error too.
nlohmann::json read_json_file(const std::string& path);

// A short description of a value for messages, never its whole dump: "the string \"abc\"",
// "the integer 7", "the number 1e+09", "a list of 3 items", "an object", "null".
template <class J>
std::string describe_json(const J& v);

// Checked access to the fields of one JSON object (J: nlohmann::json or ordered_json). `where`
// names it in messages: a file, or "file: quantization_config". A field that is absent or
// null takes the default.
template <class J>
class BasicJsonFields {
 public:
  BasicJsonFields(const J& object, std::string where);
  BasicJsonFields(const J&& object, std::string where) = delete;  // it keeps a reference

  bool has(const char* key) const;  // present and not null
  const J* find(const char* key) const;  // nullptr when absent or null
  const std::string& where() const { return where_; }

  std::string string(const char* key) const;  // required
  std::string string_or(const char* key, const std::string& fallback) const;
  bool boolean_or(const char* key, bool fallback) const;
  // Integers in [lo, hi]; a float, a string or an integer out of range is an error.
  int64_t integer(const char* key, int64_t lo, int64_t hi) const;
  int64_t integer_or(const char* key, int64_t fallback, int64_t lo, int64_t hi) const;
  // Finite numbers in [lo, hi] (integers accepted); `positive` makes it (0, hi].
  double number_or(const char* key, double fallback, double lo, double hi, bool positive = false) const;
  // A list of strings, or (when one_string_ok) a single string as a list of one.
  std::vector<std::string> strings_or_empty(const char* key, bool one_string_ok) const;
  BasicJsonFields object(const char* key) const;  // required to be an object

  // "<where>: key '<key>' <what> (found <description>)"
  [[noreturn]] void fail_key(const char* key, const std::string& what) const;

 private:
  const J& value(const char* key) const;  // requires has(key)
  const J& j_;
  std::string where_;
};

using JsonFields = BasicJsonFields<nlohmann::json>;
using OrderedJsonFields = BasicJsonFields<nlohmann::ordered_json>;
extern template class BasicJsonFields<nlohmann::json>;
extern template class BasicJsonFields<nlohmann::ordered_json>;

// An integer value in [lo, hi] (unsigned values above INT64_MAX count as out of range);
// false when it is not an integer or is out of range.
template <class J>
bool json_integer_in(const J& v, int64_t lo, int64_t hi, int64_t* out);

}  // namespace qpeft
