// Jinja subset: lexer (with trim_blocks / lstrip_blocks / "-" whitespace control) and a
// recursive-descent parser following jinja2's operator precedence.
#include <algorithm>
#include <cctype>
#include <cstring>

#include "core/error.h"
#include "core/limits.h"
#include "text/jinja.h"

namespace qpeft::jinja {

namespace {

struct Segment {
  enum Kind { kText, kExpr, kBlock } kind;
  std::string text;
  int line;
};

std::vector<Segment> lex(const std::string& src, const std::string& origin) {
  std::vector<Segment> out;
  size_t pos = 0;
  int line = 1;
  bool strip_next = false, trim_newline = false;
  auto count_lines = [](const std::string& s, size_t a, size_t b) {
    int n = 0;
    for (size_t k = a; k < b; ++k) n += s[k] == '\n';
    return n;
  };
  while (pos <= src.size()) {
    size_t start = std::string::npos;
    for (size_t k = src.find('{', pos); k != std::string::npos && k + 1 < src.size(); k = src.find('{', k + 1))
      if (src[k + 1] == '{' || src[k + 1] == '%' || src[k + 1] == '#') { start = k; break; }
    std::string text = src.substr(pos, start == std::string::npos ? std::string::npos : start - pos);
    int text_line = line;
    line += count_lines(src, pos, start == std::string::npos ? src.size() : start);
    if (strip_next) {
      size_t k = text.find_first_not_of(" \t\r\n");
      text.erase(0, k == std::string::npos ? text.size() : k);
    } else if (trim_newline && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);
    } else if (trim_newline && text.size() >= 2 && text[0] == '\r' && text[1] == '\n') {
      text.erase(0, 2);
    }
    strip_next = trim_newline = false;
    if (start == std::string::npos) {
      if (!text.empty()) out.push_back({Segment::kText, text, text_line});
      break;
    }
    char kind = src[start + 1];
    char mod = start + 2 < src.size() ? src[start + 2] : 0;
    if (mod == '-') {
      size_t k = text.find_last_not_of(" \t\r\n");
      text.erase(k == std::string::npos ? 0 : k + 1);
    } else if (kind != '{' && mod != '+') {  // lstrip_blocks: the tag starts its line
      size_t k = start;
      while (k > 0 && (src[k - 1] == ' ' || src[k - 1] == '\t')) --k;
      if (k == 0 || src[k - 1] == '\n') {
        size_t t = text.size();
        while (t > 0 && (text[t - 1] == ' ' || text[t - 1] == '\t')) --t;
        text.erase(t);
      }
    }
    if (!text.empty()) out.push_back({Segment::kText, text, text_line});
    const char* close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    size_t body = start + 2 + (mod == '-' || mod == '+' ? 1 : 0);
    size_t end = std::string::npos;
    char quote = 0;
    for (size_t k = body; k + 1 < src.size(); ++k) {
      char c = src[k];
      if (kind != '#') {
        if (quote) {
          if (c == '\\') ++k;
          else if (c == quote) quote = 0;
          continue;
        }
        if (c == '\'' || c == '"') { quote = c; continue; }
      }
      if (c == close[0] && src[k + 1] == close[1]) { end = k; break; }
    }
    if (end == std::string::npos)
      fail("[chat template] {}:{}: unclosed '{}{}': no matching '{}'", origin, line, '{', kind, close);
    size_t content_end = end;
    if (content_end > body && src[content_end - 1] == '-') {
      strip_next = true;
      --content_end;
    } else if (content_end > body && src[content_end - 1] == '+') {
      --content_end;
    } else if (kind != '{') {
      trim_newline = true;  // trim_blocks
    }
    if (kind != '#') out.push_back({kind == '{' ? Segment::kExpr : Segment::kBlock, src.substr(body, content_end - body), line});
    line += count_lines(src, start, end + 2);
    pos = end + 2;
  }
  return out;
}

// ---------------------------------------------------------------- expression tokens

struct Tok {
  enum Kind { kName, kString, kInt, kFloat, kOp, kEnd } kind;
  std::string s;
  int64_t i = 0;
  double f = 0;
};

std::vector<Tok> tokenize(const std::string& s, const std::string& origin, int line) {
  std::vector<Tok> out;
  size_t i = 0;
  while (i < s.size()) {
    char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) { ++i; continue; }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Tok::kName, s.substr(i, j - i)});
      i = j;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool is_float = j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]));
      if (is_float) {
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      std::string num = s.substr(i, j - i);
      num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
      Tok t{is_float ? Tok::kFloat : Tok::kInt, num};
      if (is_float) t.f = std::strtod(num.c_str(), nullptr);
      else t.i = std::strtoll(num.c_str(), nullptr, 10);
      out.push_back(t);
      i = j;
    } else if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          char e = s[++j];
          switch (e) {
            case 'n': v += '\n'; break;
            case 't': v += '\t'; break;
            case 'r': v += '\r'; break;
            case '\\': v += '\\'; break;
            case '\'': v += '\''; break;
            case '"': v += '"'; break;
            default: v += '\\'; v += e;
          }
        } else {
          v += s[j];
        }
      }
      if (j >= s.size()) fail("[chat template] {}:{}: unterminated string literal", origin, line);
      out.push_back({Tok::kString, v});
      i = j + 1;
    } else {
      static const char* ops[] = {"==", "!=", "<=", ">=", "//", "**", "<", ">", "+", "-", "*", "/", "%", "~", "|", ".", ",", ":", "(", ")", "[", "]", "{", "}", "="};
      bool found = false;
      for (const char* op : ops) {
        size_t n = std::strlen(op);
        if (s.compare(i, n, op) == 0) {
          out.push_back({Tok::kOp, op});
          i += n;
          found = true;
          break;
        }
      }
      if (!found) fail("[chat template] {}:{}: unexpected character '{}' in an expression", origin, line, c);
    }
  }
  out.push_back({Tok::kEnd, ""});
  return out;
}

class ExprParser {
 public:
  ExprParser(std::vector<Tok> t, const std::string& origin, int line) : t_(std::move(t)), origin_(origin), line_(line) {}

  [[noreturn]] void err(const std::string& what) const { fail("[chat template] {}:{}: {}", origin_, line_, what); }
  const Tok& peek(size_t k = 0) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  bool is_op(const char* op, size_t k = 0) const { return peek(k).kind == Tok::kOp && peek(k).s == op; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).kind == Tok::kName && peek(k).s == n; }
  bool accept_op(const char* op) { return is_op(op) ? (++p_, true) : false; }
  bool accept_name(const char* n) { return is_name(n) ? (++p_, true) : false; }
  void expect_op(const char* op) {
    if (!accept_op(op)) err(fmt::format("expected '{}', found '{}'", op, peek().s));
  }
  std::string expect_name() {
    if (peek().kind != Tok::kName) err(fmt::format("expected a name, found '{}'", peek().s));
    return t_[p_++].s;
  }
  bool at_end() const { return peek().kind == Tok::kEnd; }

  ExprP make(Expr::Kind k) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = line_;
    return e;
  }

  // The parser, the evaluator and the tree's destructor all recurse on nesting, so both the
  // recursion here (Nest) and the depth of every tree built (deepen) stay within
  // limits::kMaxTemplateDepth; a chain like 1+1+1+... deepens without recursing.
  struct Nest {
    explicit Nest(ExprParser& p) : p_(p) {
      if (++p_.nest_ > limits::kMaxTemplateDepth) p_.too_deep();
    }
    ~Nest() { --p_.nest_; }
    ExprParser& p_;
  };
  [[noreturn]] void too_deep() const {
    err(fmt::format("the expression nests deeper than {} levels (limits::kMaxTemplateDepth)", limits::kMaxTemplateDepth));
  }
  ExprP deepen(ExprP e) {
    int d = 0;
    for (const auto& a : e->args)
      if (a) d = std::max(d, a->depth);
    for (const auto& [k, v] : e->kwargs) d = std::max(d, v->depth);
    e->depth = d + 1;
    if (e->depth > limits::kMaxTemplateDepth) too_deep();
    return e;
  }

  // Full expression with the inline conditional: a if cond else b
  ExprP expression() {
    Nest nest(*this);
    ExprP e = or_expr();
    if (accept_name("if")) {
      auto t = make(Expr::kTernary);
      t->args.push_back(std::move(e));
      t->args.push_back(or_expr());
      t->args.push_back(accept_name("else") ? expression() : nullptr);
      if (!t->args[2]) { auto u = make(Expr::kLiteral); t->args[2] = std::move(u); }
      return deepen(std::move(t));
    }
    return e;
  }
  ExprP binary(const char* op, ExprP a, ExprP b) {
    auto e = make(Expr::kBinary);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return deepen(std::move(e));
  }
  ExprP or_expr() {
    ExprP e = and_expr();
    while (accept_name("or")) e = binary("or", std::move(e), and_expr());
    return e;
  }
  ExprP and_expr() {
    ExprP e = not_expr();
    while (accept_name("and")) e = binary("and", std::move(e), not_expr());
    return e;
  }
  ExprP not_expr() {
    if (accept_name("not")) {
      Nest nest(*this);
      auto e = make(Expr::kUnary);
      e->name = "not";
      e->args.push_back(not_expr());
      return deepen(std::move(e));
    }
    return compare();
  }
  ExprP compare() {
    ExprP e = math1();
    for (;;) {
      static const char* ops[] = {"==", "!=", "<=", ">=", "<", ">"};
      bool matched = false;
      for (const char* op : ops)
        if (accept_op(op)) { e = binary(op, std::move(e), math1()); matched = true; break; }
      if (matched) continue;
      if (accept_name("in")) { e = binary("in", std::move(e), math1()); continue; }
      if (is_name("not") && is_name("in", 1)) { p_ += 2; e = binary("not in", std::move(e), math1()); continue; }
      if (accept_name("is")) {
        auto t = make(Expr::kTest);
        t->negate = accept_name("not");
        t->name = expect_name();
        t->args.push_back(std::move(e));
        if (accept_op("(")) {
          if (!accept_op(")")) {
            do t->args.push_back(expression()); while (accept_op(","));
            expect_op(")");
          }
        } else if (peek().kind == Tok::kString || peek().kind == Tok::kInt || (peek().kind == Tok::kName && !is_name("and") && !is_name("or") && !is_name("else") && !is_name("if"))) {
          t->args.push_back(primary_postfix());  // "is divisibleby 3", "is sameas x"
        }
        e = deepen(std::move(t));
        continue;
      }
      return e;
    }
  }
  ExprP math1() {
    ExprP e = concat();
    for (;;) {
      if (accept_op("+")) e = binary("+", std::move(e), concat());
      else if (accept_op("-")) e = binary("-", std::move(e), concat());
      else return e;
    }
  }
  ExprP concat() {
    ExprP e = math2();
    while (accept_op("~")) e = binary("~", std::move(e), math2());
    return e;
  }
  ExprP math2() {
    ExprP e = unary();
    for (;;) {
      if (accept_op("*")) e = binary("*", std::move(e), unary());
      else if (accept_op("//")) e = binary("//", std::move(e), unary());
      else if (accept_op("/")) e = binary("/", std::move(e), unary());
      else if (accept_op("%")) e = binary("%", std::move(e), unary());
      else return e;
    }
  }
  ExprP unary() {
    if (accept_op("-")) {
      Nest nest(*this);
      auto e = make(Expr::kUnary);
      e->name = "-";
      e->args.push_back(unary());
      return deepen(std::move(e));
    }
    if (accept_op("+")) {
      Nest nest(*this);
      return unary();
    }
    return filtered(primary_postfix());
  }
  ExprP filtered(ExprP e) {
    while (accept_op("|")) {
      auto f = make(Expr::kFilter);
      f->name = expect_name();
      f->args.push_back(std::move(e));
      if (accept_op("(")) call_args(*f);
      e = deepen(std::move(f));
    }
    return e;
  }
  void call_args(Expr& call) {
    if (accept_op(")")) return;
    do {
      if (peek().kind == Tok::kName && is_op("=", 1)) {
        std::string k = expect_name();
        expect_op("=");
        call.kwargs.emplace_back(k, expression());
      } else {
        call.args.push_back(expression());
      }
    } while (accept_op(","));
    expect_op(")");
  }
  ExprP primary_postfix() {
    ExprP e = primary();
    for (;;) {
      if (accept_op(".")) {
        auto a = make(Expr::kAttr);
        a->name = expect_name();
        a->args.push_back(std::move(e));
        e = deepen(std::move(a));
      } else if (accept_op("[")) {
        ExprP lo, hi, step;
        bool slice = false;
        if (!is_op(":")) lo = expression();
        if (accept_op(":")) {
          slice = true;
          if (!is_op("]") && !is_op(":")) hi = expression();
          if (accept_op(":") && !is_op("]")) step = expression();
        }
        expect_op("]");
        auto s = make(slice ? Expr::kSlice : Expr::kIndex);
        s->args.push_back(std::move(e));
        s->args.push_back(std::move(lo));
        if (slice) {
          s->args.push_back(std::move(hi));
          s->args.push_back(std::move(step));
        }
        e = deepen(std::move(s));
      } else if (accept_op("(")) {
        auto c = make(Expr::kCall);
        c->args.push_back(std::move(e));
        call_args(*c);
        e = deepen(std::move(c));
      } else {
        return e;
      }
    }
  }
  ExprP primary() {
    const Tok& t = peek();
    if (t.kind == Tok::kString) {
      std::string s;
      while (peek().kind == Tok::kString) s += t_[p_++].s;  // adjacent literals concatenate
      auto e = make(Expr::kLiteral);
      e->literal = Value::string(s);
      return e;
    }
    if (t.kind == Tok::kInt || t.kind == Tok::kFloat) {
      auto e = make(Expr::kLiteral);
      e->literal = t.kind == Tok::kInt ? Value::integer(t.i) : Value::number(t.f);
      ++p_;
      return e;
    }
    if (t.kind == Tok::kName) {
      ++p_;
      auto e = make(Expr::kLiteral);
      if (t.s == "true" || t.s == "True") e->literal = Value::boolean(true);
      else if (t.s == "false" || t.s == "False") e->literal = Value::boolean(false);
      else if (t.s == "none" || t.s == "None") e->literal = Value::none();
      else {
        e->kind = Expr::kName;
        e->name = t.s;
      }
      return e;
    }
    if (accept_op("(")) {
      if (accept_op(")")) return make(Expr::kTuple);
      ExprP first = expression();
      if (accept_op(")")) return first;
      auto tup = make(Expr::kTuple);
      tup->args.push_back(std::move(first));
      while (accept_op(",")) {
        if (is_op(")")) break;
        tup->args.push_back(expression());
      }
      expect_op(")");
      return deepen(std::move(tup));
    }
    if (accept_op("[")) {
      auto l = make(Expr::kList);
      if (!accept_op("]")) {
        do {
          if (is_op("]")) break;
          l->args.push_back(expression());
        } while (accept_op(","));
        expect_op("]");
      }
      return deepen(std::move(l));
    }
    if (accept_op("{")) {
      auto d = make(Expr::kDict);
      if (!accept_op("}")) {
        do {
          if (is_op("}")) break;
          d->args.push_back(expression());
          expect_op(":");
          d->args.push_back(expression());
        } while (accept_op(","));
        expect_op("}");
      }
      return deepen(std::move(d));
    }
    err(t.kind == Tok::kEnd ? std::string("unexpected end of expression") : fmt::format("unexpected '{}' in an expression", t.s));
  }

  size_t p_ = 0;

 private:
  int nest_ = 0;
  std::vector<Tok> t_;
  const std::string& origin_;
  int line_;
};

class Parser {
 public:
  Parser(std::vector<Segment> segs, const std::string& origin) : s_(std::move(segs)), origin_(origin) {}

  // Parses nodes until a block tag whose keyword is in `ends`; returns that keyword
  // (the tag's parser is left in *tail) or "" at the end of input.
  std::string body(std::vector<NodeP>& out, std::initializer_list<const char*> ends, std::unique_ptr<ExprParser>* tail) {
    while (i_ < s_.size()) {
      const Segment& seg = s_[i_++];
      if (seg.kind == Segment::kText) {
        auto n = node(Node::kText, seg.line);
        n->text = seg.text;
        out.push_back(std::move(n));
        continue;
      }
      auto p = std::make_unique<ExprParser>(tokenize(seg.text, origin_, seg.line), origin_, seg.line);
      if (seg.kind == Segment::kExpr) {
        auto n = node(Node::kOutput, seg.line);
        n->expr = p->expression();
        if (!p->at_end()) p->err(fmt::format("unexpected '{}' after the expression", p->peek().s));
        out.push_back(std::move(n));
        continue;
      }
      if (p->peek().kind != Tok::kName) p->err("expected a statement keyword after '{%'");
      std::string kw = p->peek().s;
      for (const char* e : ends)
        if (kw == e) {
          p->p_++;
          *tail = std::move(p);
          return kw;
        }
      p->p_++;
      if (kw == "if") {
        out.push_back(parse_if(*p, seg.line));
      } else if (kw == "for") {
        out.push_back(parse_for(*p, seg.line));
      } else if (kw == "set") {
        auto n = node(Node::kSet, seg.line);
        n->targets.push_back(p->expect_name());
        if (p->accept_op(".")) n->targets.push_back(p->expect_name());
        if (!p->is_op("=")) p->err("'{% set %}' blocks ({% set x %}...{% endset %}) are not supported; use {% set x = ... %}");
        p->expect_op("=");
        n->expr = p->expression();
        if (p->is_op(",")) p->err("tuple assignment in '{% set %}' is not supported");
        end_of_tag(*p);
        out.push_back(std::move(n));
      } else if (kw == "break" || kw == "continue") {
        if (loop_depth_ == 0) p->err(fmt::format("'{{% {} %}}' outside a for loop", kw));
        out.push_back(node(kw == "break" ? Node::kBreak : Node::kContinue, seg.line));
        end_of_tag(*p);
      } else if (kw == "endif" || kw == "endfor" || kw == "elif" || kw == "else") {
        p->err(fmt::format("'{{% {} %}}' without a matching opening tag", kw));
      } else {
        p->err(fmt::format("unsupported Jinja construct '{{% {} %}}' (supported: if/elif/else, for, set, break, continue)", kw));
      }
    }
    return "";
  }

  std::vector<NodeP> all() {
    std::vector<NodeP> out;
    std::unique_ptr<ExprParser> tail;
    body(out, {}, &tail);
    return out;
  }

 private:
  NodeP node(Node::Kind k, int line) {
    auto n = std::make_unique<Node>();
    n->kind = k;
    n->line = line;
    return n;
  }
  void end_of_tag(ExprParser& p) {
    if (!p.at_end()) p.err(fmt::format("unexpected '{}' at the end of the tag", p.peek().s));
  }
  // {% if %} / {% for %} nesting within limits::kMaxTemplateDepth (body() recurses on it).
  struct BlockNest {
    BlockNest(Parser& p, int line) : p_(p) {
      if (++p_.block_depth_ > limits::kMaxTemplateDepth)
        fail("[chat template] {}:{}: blocks nest deeper than {} levels (limits::kMaxTemplateDepth)", p_.origin_, line,
             limits::kMaxTemplateDepth);
    }
    ~BlockNest() { --p_.block_depth_; }
    Parser& p_;
  };
  NodeP parse_if(ExprParser& p, int line) {
    BlockNest nest(*this, line);
    auto n = node(Node::kIf, line);
    ExprP cond = p.expression();
    end_of_tag(p);
    for (;;) {
      std::vector<NodeP> b;
      std::unique_ptr<ExprParser> tail;
      std::string kw = body(b, {"elif", "else", "endif"}, &tail);
      if (kw.empty()) fail("[chat template] {}:{}: '{{% if %}}' is never closed with '{{% endif %}}'", origin_, line);
      n->branches.emplace_back(std::move(cond), std::move(b));
      if (kw == "endif") {
        end_of_tag(*tail);
        return n;
      }
      if (kw == "elif") {
        cond = tail->expression();
      } else {
        cond = nullptr;
        if (!n->branches.empty() && !n->branches.back().first) tail->err("two '{% else %}' in one '{% if %}'");
      }
      end_of_tag(*tail);
      if (!cond) {  // else: read to endif
        std::vector<NodeP> eb;
        std::unique_ptr<ExprParser> t2;
        std::string k2 = body(eb, {"endif", "elif", "else"}, &t2);
        if (k2 != "endif") fail("[chat template] {}:{}: expected '{{% endif %}}' after '{{% else %}}'", origin_, line);
        end_of_tag(*t2);
        n->branches.emplace_back(nullptr, std::move(eb));
        return n;
      }
    }
  }
  NodeP parse_for(ExprParser& p, int line) {
    BlockNest nest(*this, line);
    auto n = node(Node::kFor, line);
    n->targets.push_back(p.expect_name());
    while (p.accept_op(",")) n->targets.push_back(p.expect_name());
    if (!p.accept_name("in")) p.err("expected 'in' in '{% for %}'");
    n->expr = p.or_expr();  // not expression(): a trailing "if" is the loop filter
    if (p.accept_name("if")) n->filter = p.expression();
    if (p.accept_name("recursive")) p.err("recursive for loops are not supported");
    end_of_tag(p);
    ++loop_depth_;
    std::unique_ptr<ExprParser> tail;
    std::string kw = body(n->body, {"else", "endfor"}, &tail);
    --loop_depth_;
    if (kw.empty()) fail("[chat template] {}:{}: '{{% for %}}' is never closed with '{{% endfor %}}'", origin_, line);
    end_of_tag(*tail);
    if (kw == "else") {
      kw = body(n->else_body, {"endfor"}, &tail);
      if (kw.empty()) fail("[chat template] {}:{}: '{{% for %}}' is never closed with '{{% endfor %}}'", origin_, line);
      end_of_tag(*tail);
    }
    return n;
  }

  std::vector<Segment> s_;
  size_t i_ = 0;
  int loop_depth_ = 0, block_depth_ = 0;
  const std::string& origin_;
};

}  // namespace

Template parse(const std::string& source, const std::string& origin) {
  Template t;
  t.origin = origin;
  std::string src = source;
  if (!src.empty() && src.back() == '\n') src.pop_back();  // keep_trailing_newline=False
  if (!src.empty() && src.back() == '\r') src.pop_back();
  Parser p(lex(src, origin), t.origin);
  t.nodes = p.all();
  return t;
}

}  // namespace qpeft::jinja
