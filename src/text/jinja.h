// Internal: a Jinja subset for chat templates (chat_template.h is the public face).
// Supported: {{ }}, {% if/elif/else %}, {% for x[, y] in ... [if ...] %}...{% else %}, {% set %}
// (names and namespace attributes), {% break/continue %}, comments, whitespace control
// (-) with trim_blocks and lstrip_blocks as transformers configures them; expressions with
// literals (str, int, float, bool, none, list, dict, tuple), ~ + - * / // % and or not,
// comparisons, in / not in, is [not] <test>, a if b else c, attribute/subscript/slice,
// loop.*, filters and string/dict methods listed in jinja_eval.cpp, and the globals
// raise_exception, namespace, range. Anything else is an error with its line.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace qpeft::jinja {

struct Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;  // keeps insertion order

struct Value {
  enum Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kFunc };
  Kind kind = kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                  // string; function name for kFunc
  std::shared_ptr<Array> arr;     // shared: lists are by reference, as in Python
  std::shared_ptr<Object> obj;    // dict or namespace
  bool is_namespace = false;
  std::shared_ptr<Value> self;    // bound method receiver (kFunc)

  Value() = default;
  Value(const Value&) = default;
  Value(Value&&) = default;
  Value& operator=(const Value&) = default;
  Value& operator=(Value&&) = default;
  // Frees nested lists and dicts without recursing: a template can build them deeper than the
  // stack (appending into inner lists in a loop).
  ~Value();

  static Value none() { Value v; v.kind = kNone; return v; }
  static Value boolean(bool x) { Value v; v.kind = kBool; v.b = x; return v; }
  static Value integer(int64_t x) { Value v; v.kind = kInt; v.i = x; return v; }
  static Value number(double x) { Value v; v.kind = kFloat; v.f = x; return v; }
  static Value string(std::string x) { Value v; v.kind = kString; v.s = std::move(x); return v; }
  static Value array(Array a = {}) { Value v; v.kind = kArray; v.arr = std::make_shared<Array>(std::move(a)); return v; }
  static Value object(Object o = {}) { Value v; v.kind = kObject; v.obj = std::make_shared<Object>(std::move(o)); return v; }
  static Value func(std::string name, std::shared_ptr<Value> self = nullptr) { Value v; v.kind = kFunc; v.s = std::move(name); v.self = std::move(self); return v; }

  const Value* get(const std::string& key) const;  // object member or nullptr
  void set(const std::string& key, Value v);
};

// Parsed with the nesting limit (io/json_reader.h); errors name `where`.
Value from_json_text(const std::string& json_text, const std::string& where);

struct Expr;
using ExprP = std::unique_ptr<Expr>;
struct Expr {
  enum Kind : uint8_t { kLiteral, kName, kList, kDict, kTuple, kAttr, kIndex, kSlice, kCall, kFilter, kTest, kUnary, kBinary, kTernary };
  Kind kind;
  int line = 0;
  Value literal;
  std::string name;            // name, attribute, filter/test name, operator
  std::vector<ExprP> args;     // operands / elements / call args (kDict: k0, v0, k1, v1...)
  std::vector<std::pair<std::string, ExprP>> kwargs;
  bool negate = false;         // "is not"
  int depth = 1;               // of this subtree, within limits::kMaxTemplateDepth
};

struct Node;
using NodeP = std::unique_ptr<Node>;
struct Node {
  enum Kind : uint8_t { kText, kOutput, kIf, kFor, kSet, kBreak, kContinue };
  Kind kind;
  int line = 0;
  std::string text;
  std::vector<std::pair<ExprP, std::vector<NodeP>>> branches;  // if/elif (cond null: else)
  std::vector<std::string> targets;  // for: loop variables; set: name [, attribute]
  ExprP expr;                         // output / for iterable / set value
  ExprP filter;                       // for ... if filter
  std::vector<NodeP> body, else_body;
};

struct Template {
  std::string origin;
  std::vector<NodeP> nodes;
};

Template parse(const std::string& source, const std::string& origin);
std::string render(const Template& t, const Value& context);

}  // namespace qpeft::jinja
