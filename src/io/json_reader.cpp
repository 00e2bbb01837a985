#include "io/json_reader.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "core/limits.h"

namespace qpeft {

using nlohmann::json;

namespace {

// nlohmann's what() without its "[json.exception.parse_error.101] " prefix, clipped: the
// "last read" part can quote a whole long token.
std::string plain_message(const char* what) {
  std::string s = what;
  if (s.rfind("[json.exception.", 0) == 0)
    if (size_t close = s.find("] "); close != std::string::npos) s.erase(0, close + 2);
  if (s.size() > 200) s = s.substr(0, 200) + "...";
  return s;
}

template <class J>
J parse_capped(std::string_view text, const std::string& where) {
  // The callback sees each container as it opens, before anything deeper is read.
  auto cap_depth = [&](int depth, typename J::parse_event_t ev, J&) {
    if ((ev == J::parse_event_t::object_start || ev == J::parse_event_t::array_start) &&
        depth >= limits::kMaxJsonDepth)
      fail("{}: the JSON nests deeper than {} levels (limits::kMaxJsonDepth); this is not a file qpeft reads", where,
           limits::kMaxJsonDepth);
    return true;
  };
  try {
    return J::parse(text.begin(), text.end(), cap_depth);
  } catch (const typename J::exception& e) {
    fail("{}: not valid JSON ({})", where, plain_message(e.what()));
  }
}

}  // namespace

json parse_json(std::string_view text, const std::string& where) { return parse_capped<json>(text, where); }

nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& where) {
  return parse_capped<nlohmann::ordered_json>(text, where);
}

json read_json_file(const std::string& path) {
  QP_CHECK(file_exists(path), "{}: no such file", path);
  return parse_json(read_text_file(path), path);
}

template <class J>
std::string describe_json(const J& v) {
  using T = typename J::value_t;
  switch (v.type()) {
    case T::null: return "null";
    case T::boolean: return v.template get<bool>() ? "true" : "false";
    case T::number_integer: return fmt::format("the integer {}", v.template get<int64_t>());
    case T::number_unsigned: return fmt::format("the integer {}", v.template get<uint64_t>());
    case T::number_float: return fmt::format("the number {:g}", v.template get<double>());
    case T::string: {
      const auto& s = v.template get_ref<const std::string&>();
      return s.size() > 40 ? fmt::format("the string \"{}...\"", s.substr(0, 40)) : fmt::format("the string \"{}\"", s);
    }
    case T::array: return fmt::format("a list of {} items", v.size());
    case T::object: return "an object";
    default: return v.type_name();
  }
}

template <class J>
bool json_integer_in(const J& v, int64_t lo, int64_t hi, int64_t* out) {
  int64_t x;
  if (v.is_number_unsigned()) {
    const uint64_t u = v.template get<uint64_t>();
    if (u > uint64_t(INT64_MAX)) return false;
    x = int64_t(u);
  } else if (v.is_number_integer()) {
    x = v.template get<int64_t>();
  } else {
    return false;
  }
  if (x < lo || x > hi) return false;
  *out = x;
  return true;
}

template <class J>
BasicJsonFields<J>::BasicJsonFields(const J& object, std::string where) : j_(object), where_(std::move(where)) {
  QP_CHECK(j_.is_object(), "{}: expected a JSON object, found {}", where_, describe_json(j_));
}

template <class J>
bool BasicJsonFields<J>::has(const char* key) const { return find(key) != nullptr; }

template <class J>
const J* BasicJsonFields<J>::find(const char* key) const {
  auto it = j_.find(key);
  return it == j_.end() || it->is_null() ? nullptr : &*it;
}

template <class J>
const J& BasicJsonFields<J>::value(const char* key) const {
  const J* v = find(key);
  if (!v) fail("{}: key '{}' is missing", where_, key);
  return *v;
}

template <class J>
void BasicJsonFields<J>::fail_key(const char* key, const std::string& what) const {
  const J* v = find(key);
  fail("{}: key '{}' {} (found {})", where_, key, what, v ? describe_json(*v) : std::string("nothing"));
}

template <class J>
std::string BasicJsonFields<J>::string(const char* key) const {
  const J& v = value(key);
  if (!v.is_string()) fail_key(key, "must be a string");
  return v.template get<std::string>();
}

template <class J>
std::string BasicJsonFields<J>::string_or(const char* key, const std::string& fallback) const {
  return has(key) ? string(key) : fallback;
}

template <class J>
bool BasicJsonFields<J>::boolean_or(const char* key, bool fallback) const {
  const J* v = find(key);
  if (!v) return fallback;
  if (!v->is_boolean()) fail_key(key, "must be true or false");
  return v->template get<bool>();
}

template <class J>
int64_t BasicJsonFields<J>::integer(const char* key, int64_t lo, int64_t hi) const {
  int64_t x = 0;
  if (!json_integer_in(value(key), lo, hi, &x)) fail_key(key, fmt::format("must be an integer in [{}, {}]", lo, hi));
  return x;
}

template <class J>
int64_t BasicJsonFields<J>::integer_or(const char* key, int64_t fallback, int64_t lo, int64_t hi) const {
  return has(key) ? integer(key, lo, hi) : fallback;
}

template <class J>
double BasicJsonFields<J>::number_or(const char* key, double fallback, double lo, double hi, bool positive) const {
  const J* v = find(key);
  if (!v) return fallback;
  const double x = v->is_number() ? v->template get<double>() : NAN;
  if (!std::isfinite(x) || x < lo || x > hi || (positive && x <= 0))
    fail_key(key, positive ? fmt::format("must be a number in (0, {:g}]", hi)
                           : fmt::format("must be a number in [{:g}, {:g}]", lo, hi));
  return x;
}

template <class J>
std::vector<std::string> BasicJsonFields<J>::strings_or_empty(const char* key, bool one_string_ok) const {
  std::vector<std::string> out;
  const J* v = find(key);
  if (!v) return out;
  if (one_string_ok && v->is_string()) return {v->template get<std::string>()};
  if (!v->is_array()) fail_key(key, one_string_ok ? "must be a list of strings or a string" : "must be a list of strings");
  for (size_t i = 0; i < v->size(); ++i) {
    if (!(*v)[i].is_string())
      fail("{}: key '{}'[{}] must be a string (found {})", where_, key, i, describe_json((*v)[i]));
    out.push_back((*v)[i].template get<std::string>());
  }
  return out;
}

template <class J>
BasicJsonFields<J> BasicJsonFields<J>::object(const char* key) const {
  const J& v = value(key);
  if (!v.is_object()) fail_key(key, "must be an object");
  return BasicJsonFields(v, where_ + ": " + key);
}

template class BasicJsonFields<json>;
template class BasicJsonFields<nlohmann::ordered_json>;
template std::string describe_json(const json&);
template std::string describe_json(const nlohmann::ordered_json&);
template bool json_integer_in(const json&, int64_t, int64_t, int64_t*);
template bool json_integer_in(const nlohmann::ordered_json&, int64_t, int64_t, int64_t*);

}  // namespace qpeft
