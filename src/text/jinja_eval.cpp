// Jinja subset: evaluation. Values print as Python's str() does (True, None, ['a'], ...),
// tojson as transformers' filter (json.dumps, ensure_ascii=False), like @huggingface/jinja.
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/limits.h"
#include "text/jinja.h"
#include "io/json_reader.h"
#include "text/tokenizer_unicode.h"

namespace qpeft::jinja {

Value::~Value() {
  const bool last_list = arr && arr.use_count() == 1, last_dict = obj && obj.use_count() == 1;
  if (!last_list && !last_dict && !self) return;
  // Children of containers this value is the last owner of wait here; the outermost
  // destructor frees them one by one, each handing its own children back to the list.
  thread_local std::vector<Value> pending;
  thread_local bool draining = false;
  if (last_list)
    for (Value& x : *arr) pending.push_back(std::move(x));
  if (last_dict)
    for (auto& [k, x] : *obj) pending.push_back(std::move(x));
  if (self && self.use_count() == 1) pending.push_back(std::move(*self));
  if (draining) return;
  draining = true;
  while (!pending.empty()) {
    Value v = std::move(pending.back());
    pending.pop_back();
  }
  draining = false;
}

const Value* Value::get(const std::string& key) const {
  if (!obj) return nullptr;
  for (auto& [k, v] : *obj)
    if (k == key) return &v;
  return nullptr;
}

void Value::set(const std::string& key, Value v) {
  for (auto& [k, x] : *obj)
    if (k == key) { x = std::move(v); return; }
  obj->emplace_back(key, std::move(v));
}

static Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:  // above INT64_MAX: a float, as nothing wraps
      return j.get<uint64_t>() > uint64_t(INT64_MAX) ? Value::number(j.get<double>()) : Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_float: return Value::number(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      for (const auto& e : j) a.push_back(from_json(e));
      return Value::array(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object o;
      for (auto it = j.begin(); it != j.end(); ++it) o.emplace_back(it.key(), from_json(it.value()));
      return Value::object(std::move(o));
    }
    default: return Value();
  }
}

Value from_json_text(const std::string& text, const std::string& where) { return from_json(parse_ordered_json(text, where)); }

namespace {

struct Ctx;
[[noreturn]] void err(const Ctx& c, int line, const std::string& what);

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: case Value::kNone: return false;
    case Value::kBool: return v.b;
    case Value::kInt: return v.i != 0;
    case Value::kFloat: return v.f != 0;
    case Value::kString: return !v.s.empty();
    case Value::kArray: return !v.arr->empty();
    case Value::kObject: return v.is_namespace || !v.obj->empty();
    case Value::kFunc: return true;
  }
  return false;
}

std::string py_float(double f) {
  if (std::isnan(f)) return "nan";
  if (std::isinf(f)) return f > 0 ? "inf" : "-inf";
  if (f == std::floor(f) && std::fabs(f) < 1e16) return fmt::format("{:.1f}", f);
  return fmt::format("{}", f);
}

// Printing and comparing recurse on nested lists and dicts; check_nesting keeps what a template
// builds shallow, and this stops whatever is left.
constexpr int kMaxValueDepth = limits::kMaxJsonDepth + limits::kMaxTemplateDepth;
void value_depth_guard(int depth) {
  if (depth > kMaxValueDepth)
    fail("[chat template] a value nests deeper than {} levels (or contains itself)", kMaxValueDepth);
}

std::string repr(const Value& v, int depth = 0);
std::string str(const Value& v) {
  switch (v.kind) {
    case Value::kUndefined: return "";
    case Value::kNone: return "None";
    case Value::kBool: return v.b ? "True" : "False";
    case Value::kInt: return std::to_string(v.i);
    case Value::kFloat: return py_float(v.f);
    case Value::kString: return v.s;
    case Value::kFunc: return "<function " + v.s + ">";
    default: return repr(v);
  }
}
std::string repr(const Value& v, int depth) {
  value_depth_guard(depth);
  if (v.kind == Value::kString) {
    std::string q = v.s.find('\'') != std::string::npos && v.s.find('"') == std::string::npos ? "\"" : "'";
    std::string out = q;
    for (char c : v.s) {
      if (c == '\\') out += "\\\\";
      else if (c == '\n') out += "\\n";
      else if (c == '\t') out += "\\t";
      else if (c == '\r') out += "\\r";
      else if (std::string(1, c) == q) out += "\\" + q;
      else out += c;
    }
    return out + q;
  }
  if (v.kind == Value::kArray) {
    std::string out = "[";
    for (size_t i = 0; i < v.arr->size(); ++i) out += (i ? ", " : "") + repr((*v.arr)[i], depth + 1);
    return out + "]";
  }
  if (v.kind == Value::kObject) {
    std::string out = "{";
    for (size_t i = 0; i < v.obj->size(); ++i) out += (i ? ", " : "") + repr(Value::string((*v.obj)[i].first)) + ": " + repr((*v.obj)[i].second, depth + 1);
    return out + "}";
  }
  return str(v);
}

void tojson(const Value& v, std::string& out, int indent, int depth) {
  value_depth_guard(depth);
  auto nl = [&](int d) {
    if (indent < 0) return;
    out += '\n';
    out.append(size_t(indent * d), ' ');
  };
  switch (v.kind) {
    case Value::kUndefined: case Value::kNone: out += "null"; break;
    case Value::kBool: out += v.b ? "true" : "false"; break;
    case Value::kInt: out += std::to_string(v.i); break;
    case Value::kFloat: out += py_float(v.f); break;
    case Value::kString: out += nlohmann::json(v.s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); break;
    case Value::kArray:
      out += '[';
      for (size_t i = 0; i < v.arr->size(); ++i) {
        if (i) out += indent < 0 ? ", " : ",";
        nl(depth + 1);
        tojson((*v.arr)[i], out, indent, depth + 1);
      }
      if (!v.arr->empty()) nl(depth);
      out += ']';
      break;
    case Value::kObject:
      out += '{';
      for (size_t i = 0; i < v.obj->size(); ++i) {
        if (i) out += indent < 0 ? ", " : ",";
        nl(depth + 1);
        out += nlohmann::json((*v.obj)[i].first).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + ": ";
        tojson((*v.obj)[i].second, out, indent, depth + 1);
      }
      if (!v.obj->empty()) nl(depth);
      out += '}';
      break;
    case Value::kFunc: out += "null"; break;
  }
}

bool equal(const Value& a, const Value& b, int depth = 0) {
  value_depth_guard(depth);
  bool an = a.kind == Value::kInt || a.kind == Value::kFloat || a.kind == Value::kBool;
  bool bn = b.kind == Value::kInt || b.kind == Value::kFloat || b.kind == Value::kBool;
  auto num = [](const Value& v) { return v.kind == Value::kFloat ? v.f : v.kind == Value::kInt ? double(v.i) : double(v.b); };
  if (an && bn) return num(a) == num(b);
  if (a.kind != b.kind) return (a.kind == Value::kUndefined || a.kind == Value::kNone) && (b.kind == Value::kUndefined || b.kind == Value::kNone) && a.kind == b.kind;
  switch (a.kind) {
    case Value::kString: return a.s == b.s;
    case Value::kArray:
      if (a.arr->size() != b.arr->size()) return false;
      for (size_t i = 0; i < a.arr->size(); ++i)
        if (!equal((*a.arr)[i], (*b.arr)[i], depth + 1)) return false;
      return true;
    case Value::kObject: return a.obj == b.obj;
    default: return true;
  }
}

struct Scope {
  std::vector<std::pair<std::string, Value>> vars;
};

struct Ctx {
  const Template& t;
  std::vector<Scope> scopes;
  std::string out;
  enum Flow { kNormal, kBreak, kContinue } flow = kNormal;
  int64_t steps = 0;  // work done so far, within limits::kMaxTemplateSteps

  Value* lookup(const std::string& n) {
    for (auto s = scopes.rbegin(); s != scopes.rend(); ++s)
      for (auto& [k, v] : s->vars)
        if (k == n) return &v;
    return nullptr;
  }
  void assign(const std::string& n, Value v) {
    for (auto& [k, x] : scopes.back().vars)
      if (k == n) { x = std::move(v); return; }
    scopes.back().vars.emplace_back(n, std::move(v));
  }
};

void err(const Ctx& c, int line, const std::string& what) { fail("[chat template] {}:{}: {}", c.t.origin, line, what); }

// Render work: every node, loop iteration and expression costs a step, copies cost their
// items, strings their length / 16; nested loops and string doubling end here, not in a hang.
void charge(Ctx& c, int line, int64_t steps) {
  c.steps += steps;
  if (c.steps > limits::kMaxTemplateSteps)
    err(c, line, fmt::format("rendering takes more than {} steps (limits::kMaxTemplateSteps); the template loops too much "
                             "for its input", limits::kMaxTemplateSteps));
}
void check_size(const Ctx& c, int line, size_t bytes) {
  if (bytes > size_t(limits::kMaxTemplateOutputBytes))
    err(c, line, fmt::format("a string of the template grows past {} MiB (limits::kMaxTemplateOutputBytes)",
                             limits::kMaxTemplateOutputBytes >> 20));
}

// Lists and dicts are shared by reference, as in Python, so a template could nest them without
// end or put one inside itself (freeing, printing and comparing recurse on them): whatever is
// stored into a list or dict is walked for `container` and for depth.
void check_nesting(Ctx& c, int line, const Value& v, const void* container, int depth = 1) {
  if (v.kind != Value::kArray && v.kind != Value::kObject) return;
  if (depth > limits::kMaxJsonDepth)
    err(c, line, fmt::format("a list or dict nests deeper than {} levels (limits::kMaxJsonDepth)", limits::kMaxJsonDepth));
  const void* self = v.kind == Value::kArray ? static_cast<const void*>(v.arr.get()) : v.obj.get();
  if (container && self == container) err(c, line, "a list or dict cannot contain itself");
  charge(c, line, 1);
  if (v.kind == Value::kArray)
    for (const Value& x : *v.arr) check_nesting(c, line, x, container, depth + 1);
  else
    for (const auto& [k, x] : *v.obj) check_nesting(c, line, x, container, depth + 1);
}

// Integer arithmetic as Python's, but within int64: overflow is an error, not undefined.
int64_t checked(const Ctx& c, int line, bool overflowed, int64_t r, const char* op) {
  if (overflowed) err(c, line, fmt::format("integer overflow in '{}' (values beyond 64 bits are not supported)", op));
  return r;
}

const char* kind_name(const Value& v) {
  static const char* n[] = {"undefined", "none", "bool", "int", "float", "string", "list", "dict", "function"};
  return n[v.kind];
}

int64_t as_int(Ctx& c, int line, const Value& v, const char* what) {
  if (v.kind == Value::kInt) return v.i;
  if (v.kind == Value::kBool) return v.b;
  err(c, line, fmt::format("{} must be an integer, found {}", what, kind_name(v)));
}

Value eval(Ctx& c, const Expr& e);

std::vector<Value> items_of(Ctx& c, int line, const Value& v) {
  if (v.kind == Value::kArray) return charge(c, line, int64_t(v.arr->size())), *v.arr;
  if (v.kind == Value::kObject) charge(c, line, int64_t(v.obj->size()));
  if (v.kind == Value::kString) charge(c, line, int64_t(v.s.size()));
  if (v.kind == Value::kObject) {
    std::vector<Value> keys;
    for (auto& [k, x] : *v.obj) keys.push_back(Value::string(k));
    return keys;
  }
  if (v.kind == Value::kString) {
    std::vector<Value> chars;
    for (size_t i = 0; i < v.s.size();) {
      size_t n = 1;
      unsigned char b = static_cast<unsigned char>(v.s[i]);
      if (b >= 0xF0) n = 4; else if (b >= 0xE0) n = 3; else if (b >= 0xC0) n = 2;
      chars.push_back(Value::string(v.s.substr(i, n)));
      i += n;
    }
    return chars;
  }
  if (v.kind == Value::kUndefined || v.kind == Value::kNone) return {};
  err(c, line, fmt::format("cannot iterate over a {}", kind_name(v)));
}

Value attr(const Value& v, const std::string& name) {
  if (v.kind == Value::kObject) {
    if (const Value* x = v.get(name)) return *x;
  }
  static const char* methods[] = {"strip", "lstrip", "rstrip", "startswith", "endswith", "split", "upper", "lower", "title",
                                  "capitalize", "replace", "items", "keys", "values", "get", "append", "join", "count", "find"};
  if (v.kind == Value::kString || v.kind == Value::kObject || v.kind == Value::kArray)
    for (const char* m : methods)
      if (name == m) return Value::func(name, std::make_shared<Value>(v));
  return Value();
}

// Case mapping for ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic (Python maps all of
// Unicode; other scripts are left as they are).
uint32_t change_case(uint32_t c, bool upper) {
  if (c < 0x80) return upper ? uint32_t(std::toupper(int(c))) : uint32_t(std::tolower(int(c)));
  auto shift = [&](uint32_t lo_up, uint32_t hi_up, uint32_t d) -> int64_t {
    if (!upper && c >= lo_up && c <= hi_up) return c + d;
    if (upper && c >= lo_up + d && c <= hi_up + d) return c - d;
    return -1;
  };
  if (c != 0xD7 && c != 0xF7) if (int64_t r = shift(0xC0, 0xDE, 0x20); r >= 0) return uint32_t(r);
  if (c != 0x3A2) if (int64_t r = shift(0x391, 0x3A9, 0x20); r >= 0) return uint32_t(r);
  if (int64_t r = shift(0x410, 0x42F, 0x20); r >= 0) return uint32_t(r);
  if (int64_t r = shift(0x400, 0x40F, 0x50); r >= 0) return uint32_t(r);
  if (c >= 0x100 && c <= 0x17F && c != 0x130 && c != 0x131 && c != 0x138 && c != 0x149 && c != 0x17F) {
    bool odd_upper = (c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E);
    bool is_upper = odd_upper ? (c & 1) : !(c & 1);
    if (upper && !is_upper) return odd_upper ? c - 1 : c - 1;
    if (!upper && is_upper) return c + 1;
  }
  return c;
}

std::string map_case(const std::string& s, bool upper) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0, len = 0; i < s.size(); i += len) {
    uint32_t c = unicode::decode_utf8(s, i, &len);
    unicode::append_utf8(out, (c & unicode::kInvalidBit) ? c : change_case(c, upper));
  }
  return out;
}

std::string strip_chars(const std::string& s, const Value* chars, bool left, bool right) {
  std::string set = chars && chars->kind == Value::kString ? chars->s : std::string(" \t\n\r\v\f");
  size_t b = 0, e = s.size();
  if (left) while (b < e && set.find(s[b]) != std::string::npos) ++b;
  if (right) while (e > b && set.find(s[e - 1]) != std::string::npos) --e;
  return s.substr(b, e - b);
}

Value call_method(Ctx& c, int line, const Value& self, const std::string& m, const std::vector<Value>& a) {
  auto arg = [&](size_t k) -> const Value* { return k < a.size() ? &a[k] : nullptr; };
  if (self.kind == Value::kString) {
    const std::string& s = self.s;
    if (m == "strip") return Value::string(strip_chars(s, arg(0), true, true));
    if (m == "lstrip") return Value::string(strip_chars(s, arg(0), true, false));
    if (m == "rstrip") return Value::string(strip_chars(s, arg(0), false, true));
    if (m == "upper" || m == "lower") return Value::string(map_case(s, m == "upper"));
    if (m == "title" || m == "capitalize") {
      std::string r = s;
      bool start = true;
      for (auto& ch : r) {
        bool alpha = std::isalpha(static_cast<unsigned char>(ch));
        ch = char(start && alpha ? std::toupper(static_cast<unsigned char>(ch)) : (m == "capitalize" || !start) ? std::tolower(static_cast<unsigned char>(ch)) : ch);
        if (m == "capitalize") start = false;
        else start = !alpha;
      }
      return Value::string(r);
    }
    if (m == "startswith" || m == "endswith") {
      if (!arg(0) || arg(0)->kind != Value::kString) err(c, line, m + "() needs a string argument");
      const std::string& x = arg(0)->s;
      bool r = x.size() <= s.size() && (m == "startswith" ? s.compare(0, x.size(), x) == 0 : s.compare(s.size() - x.size(), x.size(), x) == 0);
      return Value::boolean(r);
    }
    if (m == "split") {
      Array parts;
      int64_t maxsplit = arg(1) ? as_int(c, line, *arg(1), "split's maxsplit") : -1;
      if (!arg(0) || arg(0)->kind == Value::kNone) {
        size_t i = 0;
        while (i < s.size()) {
          while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
          if (i >= s.size()) break;
          size_t j = i;
          if (maxsplit >= 0 && int64_t(parts.size()) == maxsplit) j = s.size();
          else while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
          parts.push_back(Value::string(s.substr(i, j - i)));
          i = j;
        }
        return Value::array(parts);
      }
      const std::string& sep = arg(0)->s;
      if (sep.empty()) err(c, line, "split(): empty separator");
      size_t i = 0;
      for (size_t j; (maxsplit < 0 || int64_t(parts.size()) < maxsplit) && (j = s.find(sep, i)) != std::string::npos; i = j + sep.size())
        parts.push_back(Value::string(s.substr(i, j - i)));
      parts.push_back(Value::string(s.substr(i)));
      return Value::array(parts);
    }
    if (m == "replace") {
      if (a.size() < 2 || a[0].kind != Value::kString || a[1].kind != Value::kString) err(c, line, "replace() needs two strings");
      std::string r;
      size_t i = 0;
      if (a[0].s.empty()) return self;
      for (size_t j; (j = s.find(a[0].s, i)) != std::string::npos; i = j + a[0].s.size()) {
        r += s.substr(i, j - i) + a[1].s;
        check_size(c, line, r.size());
      }
      return Value::string(r + s.substr(i));
    }
    if (m == "count" || m == "find") {
      if (!arg(0) || arg(0)->kind != Value::kString) err(c, line, m + "() needs a string argument");
      if (m == "find") { size_t p = s.find(arg(0)->s); return Value::integer(p == std::string::npos ? -1 : int64_t(p)); }
      int64_t n = 0;
      for (size_t p = s.find(arg(0)->s); p != std::string::npos && !arg(0)->s.empty(); p = s.find(arg(0)->s, p + arg(0)->s.size())) ++n;
      return Value::integer(n);
    }
    if (m == "join") {
      std::string r;
      auto items = items_of(c, line, a.empty() ? Value() : a[0]);
      for (size_t i = 0; i < items.size(); ++i) {
        r += (i ? s : "") + str(items[i]);
        check_size(c, line, r.size());
      }
      return Value::string(r);
    }
  }
  if (self.kind == Value::kObject) {
    if (m == "items") {
      Array r;
      for (auto& [k, v] : *self.obj) r.push_back(Value::array({Value::string(k), v}));
      return Value::array(r);
    }
    if (m == "keys" || m == "values") {
      Array r;
      for (auto& [k, v] : *self.obj) r.push_back(m == "keys" ? Value::string(k) : v);
      return Value::array(r);
    }
    if (m == "get") {
      if (!arg(0)) err(c, line, "get() needs a key");
      const Value* x = self.get(str(*arg(0)));
      return x ? *x : (arg(1) ? *arg(1) : Value::none());
    }
  }
  if (self.kind == Value::kArray && m == "append") {
    if (!a.empty()) check_nesting(c, line, a[0], self.arr.get(), 2);
    self.arr->push_back(a.empty() ? Value() : a[0]);
    return Value::none();
  }
  err(c, line, fmt::format("'{}' has no method {}()", kind_name(self), m));
}

Value call(Ctx& c, const Expr& e) {
  std::vector<Value> a;
  for (size_t k = 1; k < e.args.size(); ++k) a.push_back(eval(c, *e.args[k]));
  const Expr& callee = *e.args[0];
  if (callee.kind == Expr::kName && !c.lookup(callee.name)) {
    const std::string& n = callee.name;
    if (n == "raise_exception")
      fail("[chat template] {}:{}: the template raised an exception: {}", c.t.origin, e.line, a.empty() ? "" : str(a[0]));
    if (n == "namespace") {
      Value ns = Value::object();
      ns.is_namespace = true;
      for (auto& [k, x] : e.kwargs) ns.set(k, eval(c, *x));
      return ns;
    }
    if (n == "range") {
      int64_t lo = 0, hi = 0, step = 1;
      if (a.size() == 1) hi = as_int(c, e.line, a[0], "range()");
      else if (a.size() >= 2) lo = as_int(c, e.line, a[0], "range()"), hi = as_int(c, e.line, a[1], "range()");
      if (a.size() == 3) step = as_int(c, e.line, a[2], "range()");
      if (step == 0) err(c, e.line, "range() step must not be zero");
      // Python's len(range(lo, hi, step)), in 128 bits so that hi - lo cannot overflow.
      const __int128 span = step > 0 ? __int128(hi) - lo : __int128(lo) - hi;
      const __int128 mag = step > 0 ? __int128(step) : -__int128(step);
      const __int128 count = span <= 0 ? 0 : (span + mag - 1) / mag;
      if (count > limits::kMaxTemplateRange)
        err(c, e.line, fmt::format("range() of more than {} items (limits::kMaxTemplateRange)", limits::kMaxTemplateRange));
      charge(c, e.line, int64_t(count));
      Array r;
      r.reserve(size_t(count));
      for (int64_t k = 0; k < int64_t(count); ++k) r.push_back(Value::integer(int64_t(lo + __int128(k) * step)));
      return Value::array(std::move(r));
    }
    err(c, e.line, fmt::format("'{}' is undefined (not a supported function; supported: raise_exception, namespace, range)", n));
  }
  Value f = eval(c, callee);
  if (f.kind != Value::kFunc) err(c, e.line, fmt::format("a {} is not callable", kind_name(f)));
  if (f.self) return call_method(c, e.line, *f.self, f.s, a);
  err(c, e.line, fmt::format("'{}' cannot be called", f.s));
}

Value filter(Ctx& c, const Expr& e) {
  Value v = eval(c, *e.args[0]);
  std::vector<Value> a;
  for (size_t k = 1; k < e.args.size(); ++k) a.push_back(eval(c, *e.args[k]));
  auto kw = [&](const char* name) -> const Expr* {
    for (auto& [k, x] : e.kwargs)
      if (k == name) return x.get();
    return nullptr;
  };
  const std::string& f = e.name;
  if (f == "trim") return Value::string(strip_chars(str(v), a.empty() ? nullptr : &a[0], true, true));
  if (f == "upper" || f == "lower" || f == "title" || f == "capitalize") return call_method(c, e.line, Value::string(str(v)), f, {});
  if (f == "length" || f == "count") {
    if (v.kind == Value::kString) return Value::integer(int64_t(items_of(c, e.line, v).size()));
    if (v.kind == Value::kArray) return Value::integer(int64_t(v.arr->size()));
    if (v.kind == Value::kObject) return Value::integer(int64_t(v.obj->size()));
    err(c, e.line, fmt::format("length of a {}", kind_name(v)));
  }
  if (f == "default" || f == "d") {
    bool boolean = (a.size() > 1 && truthy(a[1])) || (kw("boolean") && truthy(eval(c, *kw("boolean"))));
    bool use_default = v.kind == Value::kUndefined || (boolean && !truthy(v));
    return use_default ? (a.empty() ? Value::string("") : a[0]) : v;
  }
  if (f == "tojson") {
    int indent = -1;
    if (const Expr* x = kw("indent")) indent = int(as_int(c, e.line, eval(c, *x), "tojson indent"));
    else if (!a.empty() && a[0].kind == Value::kInt) indent = int(a[0].i);
    std::string out;
    tojson(v, out, indent, 0);
    return Value::string(out);
  }
  if (f == "string") return Value::string(str(v));
  if (f == "safe" || f == "e" || f == "escape") {
    if (f == "safe") return v;
    err(c, e.line, "the escape filter is not supported");
  }
  if (f == "int") {
    if (v.kind == Value::kInt) return v;
    if (v.kind == Value::kFloat) return Value::integer(int64_t(v.f));
    if (v.kind == Value::kString) return Value::integer(std::strtoll(v.s.c_str(), nullptr, 10));
    return Value::integer(0);
  }
  if (f == "float") {
    if (v.kind == Value::kFloat) return v;
    if (v.kind == Value::kInt) return Value::number(double(v.i));
    if (v.kind == Value::kString) return Value::number(std::strtod(v.s.c_str(), nullptr));
    return Value::number(0);
  }
  if (f == "first" || f == "last") {
    auto items = items_of(c, e.line, v);
    if (items.empty()) return Value();
    return f == "first" ? items.front() : items.back();
  }
  if (f == "list") return Value::array(items_of(c, e.line, v));
  if (f == "reverse") {
    if (v.kind == Value::kString) {
      auto items = items_of(c, e.line, v);
      std::string r;
      for (auto it = items.rbegin(); it != items.rend(); ++it) r += it->s;
      return Value::string(r);
    }
    auto items = items_of(c, e.line, v);
    std::reverse(items.begin(), items.end());
    return Value::array(items);
  }
  if (f == "join") {
    std::string sep = a.empty() ? "" : str(a[0]);
    auto items = items_of(c, e.line, v);
    std::string r;
    for (size_t i = 0; i < items.size(); ++i) {
      r += (i ? sep : "") + str(items[i]);
      check_size(c, e.line, r.size());
    }
    return Value::string(r);
  }
  if (f == "replace") return call_method(c, e.line, Value::string(str(v)), "replace", a);
  if (f == "items") return call_method(c, e.line, v, "items", {});
  if (f == "selectattr" || f == "rejectattr") {
    if (a.empty()) err(c, e.line, f + " needs an attribute name");
    Array r;
    for (const Value& x : items_of(c, e.line, v)) {
      Value at = attr(x, str(a[0]));
      bool ok;
      if (a.size() == 1) ok = truthy(at);
      else {
        std::string test = str(a[1]);
        if (test == "equalto" || test == "eq" || test == "==") ok = a.size() > 2 && equal(at, a[2]);
        else if (test == "ne" || test == "!=") ok = a.size() > 2 && !equal(at, a[2]);
        else if (test == "defined") ok = at.kind != Value::kUndefined;
        else if (test == "undefined") ok = at.kind == Value::kUndefined;
        else if (test == "none") ok = at.kind == Value::kNone;
        else if (test == "string") ok = at.kind == Value::kString;
        else err(c, e.line, fmt::format("{} test '{}' is not supported", f, test));
      }
      if (ok == (f == "selectattr")) r.push_back(x);
    }
    return Value::array(r);
  }
  if (f == "map") {
    const Expr* at = kw("attribute");
    if (!at) err(c, e.line, "map is supported only as map(attribute=...)");
    std::string name = str(eval(c, *at));
    Array r;
    for (const Value& x : items_of(c, e.line, v)) r.push_back(attr(x, name));
    return Value::array(r);
  }
  err(c, e.line, fmt::format("filter '{}' is not supported", f));
}

bool test(Ctx& c, const Expr& e) {
  Value v = eval(c, *e.args[0]);
  const std::string& t = e.name;
  bool r;
  if (t == "defined") r = v.kind != Value::kUndefined;
  else if (t == "undefined") r = v.kind == Value::kUndefined;
  else if (t == "none") r = v.kind == Value::kNone;
  else if (t == "string") r = v.kind == Value::kString;
  else if (t == "number") r = v.kind == Value::kInt || v.kind == Value::kFloat;
  else if (t == "integer") r = v.kind == Value::kInt;
  else if (t == "float") r = v.kind == Value::kFloat;
  else if (t == "boolean") r = v.kind == Value::kBool;
  else if (t == "true") r = v.kind == Value::kBool && v.b;
  else if (t == "false") r = v.kind == Value::kBool && !v.b;
  else if (t == "mapping") r = v.kind == Value::kObject;
  else if (t == "sequence" || t == "iterable") r = v.kind == Value::kArray || v.kind == Value::kString || (t == "iterable" && v.kind == Value::kObject);
  else if (t == "callable") r = v.kind == Value::kFunc;
  else if (t == "odd" || t == "even") r = v.kind == Value::kInt && (std::llabs(v.i) % 2 == (t == "odd" ? 1 : 0));
  else if (t == "equalto" || t == "eq" || t == "sameas") r = e.args.size() > 1 && equal(v, eval(c, *e.args[1]));
  else if (t == "divisibleby") r = e.args.size() > 1 && v.kind == Value::kInt && as_int(c, e.line, eval(c, *e.args[1]), "divisibleby") != 0 && v.i % eval(c, *e.args[1]).i == 0;
  else err(c, e.line, fmt::format("test 'is {}' is not supported", t));
  return r != e.negate;
}

Value binary(Ctx& c, const Expr& e) {
  const std::string& op = e.name;
  if (op == "and") { Value a = eval(c, *e.args[0]); return truthy(a) ? eval(c, *e.args[1]) : a; }
  if (op == "or") { Value a = eval(c, *e.args[0]); return truthy(a) ? a : eval(c, *e.args[1]); }
  Value a = eval(c, *e.args[0]), b = eval(c, *e.args[1]);
  if (op == "~") {
    std::string x = str(a), y = str(b);
    check_size(c, e.line, x.size() + y.size());  // before building it
    return Value::string(std::move(x) + y);
  }
  if (op == "==") return Value::boolean(equal(a, b));
  if (op == "!=") return Value::boolean(!equal(a, b));
  if (op == "in" || op == "not in") {
    bool r = false;
    if (b.kind == Value::kString) r = a.kind == Value::kString && b.s.find(a.s) != std::string::npos;
    else if (b.kind == Value::kArray) r = std::any_of(b.arr->begin(), b.arr->end(), [&](const Value& x) { return equal(x, a); });
    else if (b.kind == Value::kObject) r = b.get(str(a)) != nullptr;
    else if (b.kind != Value::kUndefined && b.kind != Value::kNone) err(c, e.line, fmt::format("'in' on a {}", kind_name(b)));
    return Value::boolean(r == (op == "in"));
  }
  bool num = (a.kind == Value::kInt || a.kind == Value::kFloat || a.kind == Value::kBool) && (b.kind == Value::kInt || b.kind == Value::kFloat || b.kind == Value::kBool);
  auto d = [](const Value& v) { return v.kind == Value::kFloat ? v.f : v.kind == Value::kInt ? double(v.i) : double(v.b); };
  bool ints = num && a.kind != Value::kFloat && b.kind != Value::kFloat;
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    int cmp;
    if (num) cmp = d(a) < d(b) ? -1 : d(a) > d(b) ? 1 : 0;
    else if (a.kind == Value::kString && b.kind == Value::kString) cmp = a.s.compare(b.s) < 0 ? -1 : a.s == b.s ? 0 : 1;
    else err(c, e.line, fmt::format("cannot compare {} and {} with {}", kind_name(a), kind_name(b), op));
    return Value::boolean(op == "<" ? cmp < 0 : op == ">" ? cmp > 0 : op == "<=" ? cmp <= 0 : cmp >= 0);
  }
  if (op == "+") {
    if (a.kind == Value::kString && b.kind == Value::kString) {
      check_size(c, e.line, a.s.size() + b.s.size());
      return Value::string(a.s + b.s);
    }
    if (a.kind == Value::kArray && b.kind == Value::kArray) {
      charge(c, e.line, int64_t(a.arr->size() + b.arr->size()));
      Array r = *a.arr;
      r.insert(r.end(), b.arr->begin(), b.arr->end());
      return Value::array(r);
    }
    if (ints) {
      int64_t r = 0;
      const bool overflow = __builtin_add_overflow(as_int(c, e.line, a, "+"), as_int(c, e.line, b, "+"), &r);
      return Value::integer(checked(c, e.line, overflow, r, "+"));
    }
    if (num) return Value::number(d(a) + d(b));
    err(c, e.line, fmt::format("cannot add {} and {} (use ~ to join as strings)", kind_name(a), kind_name(b)));
  }
  if (!num) {
    if (op == "*" && a.kind == Value::kString && b.kind == Value::kInt) {
      const int64_t times = std::max<int64_t>(b.i, 0);
      if (!a.s.empty()) check_size(c, e.line, times > limits::kMaxTemplateOutputBytes ? SIZE_MAX : a.s.size() * size_t(times));
      std::string r;
      r.reserve(a.s.size() * size_t(times));
      for (int64_t k = 0; k < times; ++k) r += a.s;
      return Value::string(std::move(r));
    }
    err(c, e.line, fmt::format("operator {} on {} and {}", op, kind_name(a), kind_name(b)));
  }
  if (ints) {
    const int64_t x = as_int(c, e.line, a, op.c_str()), y = as_int(c, e.line, b, op.c_str());
    int64_t r = 0;
    if (op == "-") {
      const bool overflow = __builtin_sub_overflow(x, y, &r);
      return Value::integer(checked(c, e.line, overflow, r, "-"));
    }
    if (op == "*") {
      const bool overflow = __builtin_mul_overflow(x, y, &r);
      return Value::integer(checked(c, e.line, overflow, r, "*"));
    }
    if (y == 0) err(c, e.line, "division by zero");
    if (op == "/") return Value::number(double(x) / double(y));
    if (x == INT64_MIN && y == -1) checked(c, e.line, true, 0, op.c_str());
    if (op == "//" || op == "%") {  // Python floors: the remainder takes the divisor's sign
      int64_t q = x / y, m = x % y;
      if (m != 0 && ((m < 0) != (y < 0))) --q, m += y;
      return Value::integer(op == "//" ? q : m);
    }
  }
  if (op == "-") return Value::number(d(a) - d(b));
  if (op == "*") return Value::number(d(a) * d(b));
  if (d(b) == 0) err(c, e.line, "division by zero");
  if (op == "/") return Value::number(d(a) / d(b));
  if (op == "//") return Value::number(std::floor(d(a) / d(b)));
  if (op == "%") return Value::number(std::fmod(d(a), d(b)));
  err(c, e.line, "unknown operator " + op);
}

Value eval_expr(Ctx& c, const Expr& e);

Value eval(Ctx& c, const Expr& e) {
  charge(c, e.line, 1);
  Value v = eval_expr(c, e);
  if (v.kind == Value::kString) {
    check_size(c, e.line, v.s.size());
    charge(c, e.line, int64_t(v.s.size() / 16));
  }
  return v;
}

Value eval_expr(Ctx& c, const Expr& e) {
  switch (e.kind) {
    case Expr::kLiteral: return e.literal;
    case Expr::kName: {
      Value* v = c.lookup(e.name);
      return v ? *v : Value();
    }
    case Expr::kList: case Expr::kTuple: {
      Array a;
      for (auto& x : e.args) {
        a.push_back(eval(c, *x));
        check_nesting(c, e.line, a.back(), nullptr, 2);
      }
      return Value::array(std::move(a));
    }
    case Expr::kDict: {
      Value o = Value::object();
      for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
        std::string key = str(eval(c, *e.args[k]));
        Value v = eval(c, *e.args[k + 1]);
        check_nesting(c, e.line, v, nullptr, 2);
        o.set(key, std::move(v));
      }
      return o;
    }
    case Expr::kAttr: {
      Value v = eval(c, *e.args[0]);
      if (e.args[0]->kind == Expr::kName && e.args[0]->name == "loop" && v.kind == Value::kUndefined)
        err(c, e.line, "'loop' is used outside a for loop");
      return attr(v, e.name);
    }
    case Expr::kIndex: {
      Value v = eval(c, *e.args[0]), k = eval(c, *e.args[1]);
      if (v.kind == Value::kArray || v.kind == Value::kString) {
        if (k.kind != Value::kInt) err(c, e.line, fmt::format("a list index must be an integer, found {}", kind_name(k)));
        if (v.kind == Value::kArray) {  // no copy of the list: messages[i] in a loop stays linear
          const int64_t n = int64_t(v.arr->size());
          if (k.i < -n || k.i >= n) return Value();  // jinja: undefined
          return (*v.arr)[size_t(k.i < 0 ? k.i + n : k.i)];
        }
        auto items = items_of(c, e.line, v);
        const int64_t n = int64_t(items.size());
        if (k.i < -n || k.i >= n) return Value();
        return items[size_t(k.i < 0 ? k.i + n : k.i)];
      }
      if (v.kind == Value::kObject) return attr(v, str(k));
      return Value();
    }
    case Expr::kSlice: {
      Value v = eval(c, *e.args[0]);
      auto items = items_of(c, e.line, v);
      int64_t n = int64_t(items.size());
      int64_t step = e.args[3] ? as_int(c, e.line, eval(c, *e.args[3]), "slice step") : 1;
      if (step == 0) err(c, e.line, "slice step cannot be zero");
      auto norm = [&](const ExprP& x, int64_t def) {
        if (!x) return def;
        int64_t i = as_int(c, e.line, eval(c, *x), "slice bound");
        if (i < 0) i += n;
        return step > 0 ? std::clamp<int64_t>(i, 0, n) : std::clamp<int64_t>(i, -1, n - 1);
      };
      int64_t lo = norm(e.args[1], step > 0 ? 0 : n - 1), hi = norm(e.args[2], step > 0 ? n : -1);
      Array r;
      for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) r.push_back(items[size_t(i)]);
      if (v.kind == Value::kString) {
        std::string s;
        for (auto& x : r) s += x.s;
        return Value::string(s);
      }
      return Value::array(r);
    }
    case Expr::kCall: return call(c, e);
    case Expr::kFilter: return filter(c, e);
    case Expr::kTest: return Value::boolean(test(c, e));
    case Expr::kUnary: {
      Value v = eval(c, *e.args[0]);
      if (e.name == "not") return Value::boolean(!truthy(v));
      if (v.kind == Value::kInt) {
        if (v.i == INT64_MIN) checked(c, e.line, true, 0, "-");
        return Value::integer(-v.i);
      }
      if (v.kind == Value::kFloat) return Value::number(-v.f);
      err(c, e.line, fmt::format("unary minus on a {}", kind_name(v)));
    }
    case Expr::kBinary: return binary(c, e);
    case Expr::kTernary: return truthy(eval(c, *e.args[1])) ? eval(c, *e.args[0]) : eval(c, *e.args[2]);
  }
  return Value();
}

void exec(Ctx& c, const std::vector<NodeP>& nodes);

void exec_for(Ctx& c, const Node& n) {
  Value seq = eval(c, *n.expr);
  std::vector<Value> items = items_of(c, n.line, seq);
  if (seq.kind == Value::kObject && n.targets.size() == 2) items = *call_method(c, n.line, seq, "items", {}).arr;
  auto bind = [&](const Value& item) {
    if (n.targets.size() == 1) {
      c.assign(n.targets[0], item);
    } else {
      if (item.kind != Value::kArray || item.arr->size() != n.targets.size())
        err(c, n.line, fmt::format("cannot unpack a {} into {} loop variables", kind_name(item), n.targets.size()));
      for (size_t k = 0; k < n.targets.size(); ++k) c.assign(n.targets[k], (*item.arr)[k]);
    }
  };
  if (n.filter) {  // for x in xs if cond: filter first, so loop.* counts the kept items
    std::vector<Value> kept;
    for (const Value& item : items) {
      c.scopes.emplace_back();
      bind(item);
      bool keep = truthy(eval(c, *n.filter));
      c.scopes.pop_back();
      if (keep) kept.push_back(item);
    }
    items.swap(kept);
  }
  if (items.empty()) {
    exec(c, n.else_body);
    return;
  }
  size_t len = items.size();
  for (size_t k = 0; k < len; ++k) {
    charge(c, n.line, 10);  // the loop object's ten entries
    c.scopes.emplace_back();
    Value loop = Value::object();
    loop.set("index", Value::integer(int64_t(k + 1)));
    loop.set("index0", Value::integer(int64_t(k)));
    loop.set("revindex", Value::integer(int64_t(len - k)));
    loop.set("revindex0", Value::integer(int64_t(len - k - 1)));
    loop.set("first", Value::boolean(k == 0));
    loop.set("last", Value::boolean(k + 1 == len));
    loop.set("length", Value::integer(int64_t(len)));
    loop.set("previtem", k > 0 ? items[k - 1] : Value());
    loop.set("nextitem", k + 1 < len ? items[k + 1] : Value());
    c.assign("loop", loop);
    bind(items[k]);
    exec(c, n.body);
    c.scopes.pop_back();
    if (c.flow == Ctx::kBreak) { c.flow = Ctx::kNormal; break; }
    c.flow = Ctx::kNormal;
  }
}

void exec(Ctx& c, const std::vector<NodeP>& nodes) {
  for (const auto& np : nodes) {
    if (c.flow != Ctx::kNormal) return;
    const Node& n = *np;
    charge(c, n.line, 1);
    switch (n.kind) {
      case Node::kText: c.out += n.text; break;
      case Node::kOutput: c.out += str(eval(c, *n.expr)); break;
      case Node::kIf:
        for (const auto& [cond, body] : n.branches)
          if (!cond || truthy(eval(c, *cond))) {
            exec(c, body);
            break;
          }
        break;
      case Node::kFor: exec_for(c, n); break;
      case Node::kSet: {
        Value v = eval(c, *n.expr);
        if (n.targets.size() == 1) {
          c.assign(n.targets[0], std::move(v));
        } else {
          Value* ns = c.lookup(n.targets[0]);
          if (!ns || ns->kind != Value::kObject || !ns->is_namespace)
            err(c, n.line, fmt::format("'{{% set {}.{} %}}': {} is not a namespace()", n.targets[0], n.targets[1], n.targets[0]));
          check_nesting(c, n.line, v, ns->obj.get(), 2);
          ns->set(n.targets[1], std::move(v));
        }
        break;
      }
      case Node::kBreak: c.flow = Ctx::kBreak; return;
      case Node::kContinue: c.flow = Ctx::kContinue; return;
    }
    if (c.out.size() > size_t(limits::kMaxTemplateOutputBytes))
      err(c, n.line, fmt::format("the rendered text exceeds {} MiB (limits::kMaxTemplateOutputBytes)",
                                 limits::kMaxTemplateOutputBytes >> 20));
  }
}

}  // namespace

std::string render(const Template& t, const Value& context) {
  Ctx c{t, {}, {}};
  c.scopes.emplace_back();
  if (context.kind == Value::kObject)
    for (auto& [k, v] : *context.obj) c.scopes.back().vars.emplace_back(k, v);
  c.scopes.emplace_back();  // template-level sets
  exec(c, t.nodes);
  return c.out;
}

}  // namespace qpeft::jinja
