// A recursive-descent parser following jinja2.parser.Parser rule for rule, so that operator
// precedence, where filters and tests bind, and what counts as a tuple are Jinja2's.
#include <set>

#include "chat/jinja_ast.hpp"
#include "chat/jinja_builtins.hpp"
#include "chat/jinja_lexer.hpp"
#include "core/error.hpp"

namespace sf::chat::jinja {
namespace {

constexpr int kMaxDepth = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  Template run() {
    Template tpl;
    tpl.body = subparse({});
    if (cur().type != Tok::Eof) fail_here("unexpected tag");
    return tpl;
  }

 private:
  std::vector<Token> t_;
  size_t p_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  int if_depth_ = 0;

  struct DepthGuard {
    Parser& p;
    explicit DepthGuard(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxDepth) {
        p.fail_here(fmt::format("the template nests more than {} levels deep", kMaxDepth),
                    Status::UnsupportedShape);
      }
    }
    ~DepthGuard() { --p.depth_; }
  };

  const Token& cur() const { return t_[p_]; }
  const Token& look() const { return t_[p_ + 1 < t_.size() ? p_ + 1 : p_]; }
  const Token& advance() {
    const Token& t = t_[p_];
    if (p_ + 1 < t_.size()) ++p_;
    return t;
  }

  [[noreturn]] void fail_at(const Token& t, const std::string& msg,
                            Status st = Status::Format) const {
    sf::fail(st, "chat template line {}, column {}: {}", t.line, t.col, msg);
  }
  [[noreturn]] void fail_here(const std::string& msg, Status st = Status::Format) const {
    fail_at(cur(), msg, st);
  }

  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::Data:
        return "template data";
      case Tok::VarBegin:
        return "begin of print statement";
      case Tok::VarEnd:
        return "end of print statement";
      case Tok::BlockBegin:
        return "begin of statement block";
      case Tok::BlockEnd:
        return "end of statement block";
      case Tok::Eof:
        return "end of template";
      case Tok::String:
        return "string";
      case Tok::Integer:
        return "integer";
      case Tok::Float:
        return "float";
      default:
        return t.text;
    }
  }

  bool is_name(std::string_view v) const { return cur().type == Tok::Name && cur().text == v; }
  bool is_op(std::string_view v) const { return cur().type == Tok::Op && cur().text == v; }
  bool skip_name(std::string_view v) {
    if (!is_name(v)) return false;
    advance();
    return true;
  }
  bool skip_op(std::string_view v) {
    if (!is_op(v)) return false;
    advance();
    return true;
  }
  void expect_op(std::string_view v) {
    if (!skip_op(v)) {
      fail_here(fmt::format("expected token '{}', got '{}'", v, describe(cur())));
    }
  }
  const Token& expect_name() {
    if (cur().type != Tok::Name)
      fail_here(fmt::format("expected token 'name', got '{}'", describe(cur())));
    return advance();
  }
  void expect_name(std::string_view v) {
    if (!skip_name(v)) fail_here(fmt::format("expected token '{}', got '{}'", v, describe(cur())));
  }
  void expect(Tok type) {
    if (cur().type != type) {
      Token want{type, ""};
      fail_here(fmt::format("expected token '{}', got '{}'", describe(want), describe(cur())));
    }
    advance();
  }

  NodePtr node(NodeKind k, const Token& at) {
    auto n = std::make_unique<Node>();
    n->kind = k;
    n->line = at.line;
    n->col = at.col;
    return n;
  }

  // ---- statements -------------------------------------------------------------------------

  // Parses until a block whose first name is one of `end`, leaving that name current.
  NodeList subparse(const std::set<std::string>& end) {
    DepthGuard g(*this);
    NodeList body;
    while (cur().type != Tok::Eof) {
      const Token& t = cur();
      if (t.type == Tok::Data) {
        auto n = node(NodeKind::Text, t);
        n->attr = t.text;
        body.push_back(std::move(n));
        advance();
      } else if (t.type == Tok::VarBegin) {
        advance();
        auto n = node(NodeKind::Output, t);
        n->a = parse_tuple(false, true, {}, false);
        body.push_back(std::move(n));
        expect(Tok::VarEnd);
      } else if (t.type == Tok::BlockBegin) {
        advance();
        if (cur().type == Tok::Name && end.count(cur().text)) return body;
        body.push_back(parse_statement());
        expect(Tok::BlockEnd);
      } else {
        fail_here("internal parsing error: unexpected " + describe(t), Status::Internal);
      }
    }
    return body;
  }

  // parse_statements: the block end of the opening tag, then the body up to an end tag.
  NodeList statements(const std::set<std::string>& end, bool drop_needle, const Token& opener) {
    skip_op(":");
    expect(Tok::BlockEnd);
    NodeList body = subparse(end);
    if (cur().type == Tok::Eof) {
      std::string want;
      for (const auto& e : end) want += (want.empty() ? "'" : " or '") + e + "'";
      fail_at(opener, fmt::format("Unexpected end of template. Jinja was looking for the following "
                                  "tags: {}. The innermost block that needs to be closed is '{}'.",
                                  want, opener.text));
    }
    if (drop_needle) advance();
    return body;
  }

  NodePtr parse_statement() {
    const Token& t = cur();
    if (t.type != Tok::Name) fail_here("tag name expected");
    const std::string& k = t.text;
    if (k == "if") return parse_if();
    if (k == "for") return parse_for();
    if (k == "set") return parse_set();
    if (k == "macro") return parse_macro();
    if (k == "call") return parse_call_block();
    if (k == "filter") return parse_filter_block();
    if (k == "with") return parse_with();
    if (k == "generation") {
      const Token& open = advance();
      auto n = node(NodeKind::Generation, open);
      n->body = statements({"endgeneration"}, true, open);
      return n;
    }
    if (k == "break" || k == "continue") {
      const Token& tok = advance();
      if (loop_depth_ == 0) fail_at(tok, "'" + k + "' outside loop");
      return node(k == "break" ? NodeKind::Break : NodeKind::Continue, tok);
    }
    static const std::set<std::string> jinja_tags = {"extends", "block", "include",
                                                     "import",  "from",  "autoescape"};
    if (jinja_tags.count(k)) {
      fail_at(t,
              fmt::format("the '{}' tag is outside the supported Jinja subset (chat templates are "
                          "one self-contained file); use a template without it",
                          k),
              Status::UnsupportedShape);
    }
    fail_at(t, fmt::format("Encountered unknown tag '{}'.", k));
  }

  NodePtr parse_if() {
    const Token& open = advance();
    auto n = node(NodeKind::If, open);
    ++if_depth_;
    while (true) {
      NodePtr test = parse_tuple(false, false, {}, false);
      NodeList body = statements({"elif", "else", "endif"}, false, open);
      n->branches.emplace_back(std::move(test), std::move(body));
      const Token& tok = advance();
      if (tok.text == "elif") continue;
      if (tok.text == "else") n->else_body = statements({"endif"}, true, open);
      break;
    }
    --if_depth_;
    return n;
  }

  NodePtr parse_for() {
    const Token& open = advance();
    auto n = node(NodeKind::For, open);
    n->a = parse_assign_target(true, {"in"}, false);
    expect_name("in");
    n->b = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) n->c = parse_expression(true);
    if (is_name("recursive")) {
      fail_here("recursive for loops are outside the supported Jinja subset",
                Status::UnsupportedShape);
    }
    ++loop_depth_;
    n->body = statements({"endfor", "else"}, false, open);
    --loop_depth_;
    if (advance().text == "else") n->else_body = statements({"endfor"}, true, open);
    return n;
  }

  NodePtr parse_set() {
    const Token& open = advance();
    NodePtr target = parse_assign_target(true, {}, true);
    if (skip_op("=")) {
      auto n = node(NodeKind::Set, open);
      n->a = std::move(target);
      n->b = parse_tuple(false, true, {}, false);
      return n;
    }
    auto n = node(NodeKind::SetBlock, open);
    n->a = std::move(target);
    n->b = parse_filter(nullptr, false);
    n->body = statements({"endset"}, true, open);
    return n;
  }

  void parse_signature(Node& n) {
    expect_op("(");
    while (!is_op(")")) {
      if (!n.params.empty()) expect_op(",");
      const Token& name = expect_name();
      n.params.push_back(name.text);
      if (skip_op("=")) {
        n.defaults.push_back(parse_expression(true));
      } else if (!n.defaults.empty()) {
        fail_at(name, "non-default argument follows default argument");
      }
    }
    expect_op(")");
  }

  NodePtr parse_macro() {
    const Token& open = advance();
    auto n = node(NodeKind::Macro, open);
    n->name = expect_name().text;
    parse_signature(*n);
    const int saved = loop_depth_;
    loop_depth_ = 0;  // a break in a macro body cannot leave the caller's loop
    n->body = statements({"endmacro"}, true, open);
    loop_depth_ = saved;
    return n;
  }

  NodePtr parse_call_block() {
    const Token& open = advance();
    auto n = node(NodeKind::CallBlock, open);
    if (is_op("(")) parse_signature(*n);
    n->a = parse_expression(true);
    if (n->a->kind != NodeKind::Call) fail_at(open, "expected call");
    const int saved = loop_depth_;
    loop_depth_ = 0;
    n->body = statements({"endcall"}, true, open);
    loop_depth_ = saved;
    return n;
  }

  NodePtr parse_filter_block() {
    const Token& open = advance();
    auto n = node(NodeKind::FilterBlock, open);
    n->b = parse_filter(nullptr, true);
    n->body = statements({"endfilter"}, true, open);
    return n;
  }

  NodePtr parse_with() {
    const Token& open = advance();
    auto n = node(NodeKind::With, open);
    while (cur().type != Tok::BlockEnd) {
      if (!n->params.empty()) expect_op(",");
      const Token& name = expect_name();
      if (is_op(",") || is_op(".")) {
        fail_at(name, "tuple targets in 'with' are outside the supported Jinja subset",
                Status::UnsupportedShape);
      }
      n->params.push_back(name.text);
      expect_op("=");
      n->defaults.push_back(parse_expression(true));
    }
    n->body = statements({"endwith"}, true, open);
    return n;
  }

  // ---- assignment targets -----------------------------------------------------------------

  NodePtr parse_assign_target(bool with_tuple, const std::set<std::string>& extra_end,
                              bool with_namespace) {
    NodePtr target;
    if (with_tuple) {
      target = parse_tuple(true, true, extra_end, false, with_namespace);
    } else {
      target = parse_primary(with_namespace);
    }
    check_target(*target);
    return target;
  }

  void check_target(const Node& t) {
    if (t.kind == NodeKind::Name) {
      if (t.name == "true" || t.name == "false" || t.name == "none" || t.name == "True" ||
          t.name == "False" || t.name == "None") {
        fail_at_node(t, "can't assign to const");
      }
      return;
    }
    if (t.kind == NodeKind::NSRef) return;
    if (t.kind == NodeKind::Tuple) {
      for (const auto& e : t.args) check_target(*e);
      return;
    }
    fail_at_node(
        t, "can't assign to " + std::string(t.kind == NodeKind::Const ? "const" : "expression"));
  }

  [[noreturn]] void fail_at_node(const Node& n, const std::string& msg) const {
    sf::fail(Status::Format, "chat template line {}, column {}: {}", n.line, n.col, msg);
  }

  // ---- expressions ------------------------------------------------------------------------

  bool is_tuple_end(const std::set<std::string>& extra_end) const {
    if (cur().type == Tok::VarEnd || cur().type == Tok::BlockEnd || is_op(")")) return true;
    return cur().type == Tok::Name && extra_end.count(cur().text);
  }

  NodePtr parse_tuple(bool simplified, bool with_condexpr, const std::set<std::string>& extra_end,
                      bool explicit_parens, bool with_namespace = false) {
    DepthGuard g(*this);
    const Token& start = cur();
    NodeList items;
    bool is_tuple = false;
    while (true) {
      if (!items.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      items.push_back(simplified ? parse_primary(with_namespace) : parse_expression(with_condexpr));
      if (is_op(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!is_tuple) {
      if (!items.empty()) return std::move(items[0]);
      if (!explicit_parens)
        fail_here(fmt::format("Expected an expression, got '{}'", describe(cur())));
    }
    auto n = node(NodeKind::Tuple, start);
    n->args = std::move(items);
    return n;
  }

  NodePtr parse_expression(bool with_condexpr) {
    DepthGuard g(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  NodePtr parse_condexpr() {
    const Token& start = cur();
    NodePtr expr1 = parse_or();
    while (skip_name("if")) {
      auto n = node(NodeKind::CondExpr, start);
      n->a = parse_or();
      n->b = std::move(expr1);
      if (skip_name("else")) n->c = parse_condexpr();
      expr1 = std::move(n);
    }
    return expr1;
  }

  NodePtr binary(const Token& at, std::string op, NodePtr l, NodePtr r) {
    auto n = node(NodeKind::Binary, at);
    n->op = std::move(op);
    n->a = std::move(l);
    n->b = std::move(r);
    return n;
  }

  NodePtr parse_or() {
    const Token& start = cur();
    NodePtr left = parse_and();
    while (skip_name("or")) left = binary(start, "or", std::move(left), parse_and());
    return left;
  }

  NodePtr parse_and() {
    const Token& start = cur();
    NodePtr left = parse_not();
    while (skip_name("and")) left = binary(start, "and", std::move(left), parse_not());
    return left;
  }

  NodePtr parse_not() {
    if (is_name("not")) {
      DepthGuard g(*this);
      const Token& t = advance();
      auto n = node(NodeKind::Unary, t);
      n->op = "not";
      n->a = parse_not();
      return n;
    }
    return parse_compare();
  }

  NodePtr parse_compare() {
    const Token& start = cur();
    NodePtr expr = parse_math1();
    auto n = node(NodeKind::Compare, start);
    while (true) {
      static const std::set<std::string> cmp = {"==", "!=", "<", "<=", ">", ">="};
      if (cur().type == Tok::Op && cmp.count(cur().text)) {
        n->ops.push_back(advance().text);
      } else if (skip_name("in")) {
        n->ops.push_back("in");
      } else if (is_name("not") && look().type == Tok::Name && look().text == "in") {
        advance();
        advance();
        n->ops.push_back("notin");
      } else {
        break;
      }
      n->args.push_back(parse_math1());
    }
    if (n->ops.empty()) return expr;
    n->a = std::move(expr);
    return n;
  }

  NodePtr parse_math1() {
    const Token& start = cur();
    NodePtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = advance().text;
      left = binary(start, op, std::move(left), parse_concat());
    }
    return left;
  }

  NodePtr parse_concat() {
    const Token& start = cur();
    NodeList args;
    args.push_back(parse_math2());
    while (skip_op("~")) args.push_back(parse_math2());
    if (args.size() == 1) return std::move(args[0]);
    auto n = node(NodeKind::Concat, start);
    n->args = std::move(args);
    return n;
  }

  NodePtr parse_math2() {
    const Token& start = cur();
    NodePtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = advance().text;
      left = binary(start, op, std::move(left), parse_pow());
    }
    return left;
  }

  NodePtr parse_pow() {
    const Token& start = cur();
    NodePtr left = parse_unary(true);
    while (skip_op("**")) left = binary(start, "**", std::move(left), parse_unary(true));
    return left;
  }

  NodePtr parse_unary(bool with_filter) {
    DepthGuard g(*this);
    NodePtr n;
    if (is_op("-") || is_op("+")) {
      const Token& t = advance();
      n = node(NodeKind::Unary, t);
      n->op = t.text;
      n->a = parse_unary(false);
    } else {
      n = parse_primary(false);
    }
    n = parse_postfix(std::move(n));
    if (with_filter) n = parse_filter_expr(std::move(n));
    return n;
  }

  NodePtr parse_primary(bool with_namespace) {
    DepthGuard g(*this);
    const Token& t = cur();
    if (t.type == Tok::Name) {
      advance();
      auto n = node(NodeKind::Const, t);
      if (t.text == "true" || t.text == "True") {
        n->value = Value::boolean(true);
      } else if (t.text == "false" || t.text == "False") {
        n->value = Value::boolean(false);
      } else if (t.text == "none" || t.text == "None") {
        n->value = Value::none();
      } else if (with_namespace && is_op(".")) {
        advance();
        n->kind = NodeKind::NSRef;
        n->name = t.text;
        n->attr = expect_name().text;
      } else {
        n->kind = NodeKind::Name;
        n->name = t.text;
      }
      return n;
    }
    if (t.type == Tok::String) {
      auto n = node(NodeKind::Const, t);
      std::string s;
      while (cur().type == Tok::String) s += advance().text;
      n->value = Value::string(std::move(s));
      return n;
    }
    if (t.type == Tok::Integer || t.type == Tok::Float) {
      advance();
      auto n = node(NodeKind::Const, t);
      n->value = t.type == Tok::Integer ? Value::integer(t.ival) : Value::number(t.fval);
      return n;
    }
    if (is_op("(")) {
      advance();
      NodePtr n = parse_tuple(false, true, {}, true);
      expect_op(")");
      return n;
    }
    if (is_op("[")) return parse_list();
    if (is_op("{")) return parse_dict();
    fail_here(fmt::format("unexpected '{}'", describe(t)));
  }

  NodePtr parse_list() {
    const Token& open = advance();
    auto n = node(NodeKind::List, open);
    while (!is_op("]")) {
      if (!n->args.empty()) expect_op(",");
      if (is_op("]")) break;
      n->args.push_back(parse_expression(true));
    }
    expect_op("]");
    return n;
  }

  NodePtr parse_dict() {
    const Token& open = advance();
    auto n = node(NodeKind::Dict, open);
    while (!is_op("}")) {
      if (!n->args.empty()) expect_op(",");
      if (is_op("}")) break;
      n->args.push_back(parse_expression(true));
      expect_op(":");
      n->args.push_back(parse_expression(true));
    }
    expect_op("}");
    return n;
  }

  NodePtr parse_postfix(NodePtr n) {
    while (true) {
      if (is_op(".") || is_op("[")) {
        n = parse_subscript(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  NodePtr parse_filter_expr(NodePtr n) {
    while (true) {
      if (is_op("|")) {
        n = parse_filter(std::move(n), false);
      } else if (is_name("is")) {
        n = parse_test(std::move(n));
      } else if (is_op("(")) {
        n = parse_call(std::move(n));
      } else {
        return n;
      }
    }
  }

  NodePtr parse_subscript(NodePtr obj) {
    DepthGuard g(*this);
    const Token& t = advance();
    if (t.text == ".") {
      const Token& attr = advance();
      if (attr.type == Tok::Name) {
        auto n = node(NodeKind::Getattr, t);
        n->a = std::move(obj);
        n->attr = attr.text;
        return n;
      }
      if (attr.type != Tok::Integer) fail_at(attr, "expected name or number");
      auto n = node(NodeKind::Getitem, t);
      n->a = std::move(obj);
      n->b = node(NodeKind::Const, attr);
      n->b->value = Value::integer(attr.ival);
      return n;
    }
    NodeList args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    auto n = node(NodeKind::Getitem, t);
    n->a = std::move(obj);
    if (args.size() == 1) {
      n->b = std::move(args[0]);
    } else {
      n->b = node(NodeKind::Tuple, t);
      n->b->args = std::move(args);
    }
    return n;
  }

  NodePtr parse_subscribed() {
    const Token& start = cur();
    NodePtr first;
    if (!skip_op(":")) {
      NodePtr e = parse_expression(true);
      if (!is_op(":")) return e;
      advance();
      first = std::move(e);
    }
    auto n = node(NodeKind::Slice, start);
    n->a = std::move(first);
    if (!is_op(":") && !is_op("]") && !is_op(",")) n->b = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) n->c = parse_expression(true);
    }
    return n;
  }

  void parse_call_args(Node& n) {
    const Token& open = cur();
    expect_op("(");
    bool require_comma = false;
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*") || is_op("**")) {
        fail_here("*args and **kwargs in calls are outside the supported Jinja subset",
                  Status::UnsupportedShape);
      }
      if (cur().type == Tok::Name && look().type == Tok::Op && look().text == "=") {
        std::string key = advance().text;
        advance();
        n.kwargs.emplace_back(std::move(key), parse_expression(true));
      } else {
        if (!n.kwargs.empty()) fail_at(open, "invalid syntax for function call expression");
        n.args.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
  }

  NodePtr parse_call(NodePtr callee) {
    DepthGuard g(*this);
    auto n = node(NodeKind::Call, cur());
    n->a = std::move(callee);
    parse_call_args(*n);
    return n;
  }

  NodePtr parse_filter(NodePtr n, bool start_inline) {
    while (is_op("|") || start_inline) {
      DepthGuard g(*this);
      if (!start_inline) advance();
      start_inline = false;
      const Token& name = expect_name();
      auto f = node(NodeKind::Filter, name);
      f->name = name.text;
      while (skip_op(".")) f->name += "." + expect_name().text;
      if (is_op("(")) parse_call_args(*f);
      if (!has_filter(f->name) && !jinja_knows_filter(f->name)) {
        if (if_depth_ == 0) fail_at(name, fmt::format("No filter named '{}'.", f->name));
      }
      f->a = std::move(n);
      n = std::move(f);
    }
    return n;
  }

  NodePtr parse_test(NodePtr input) {
    DepthGuard g(*this);
    const Token& is = advance();
    const bool negated = skip_name("not");
    const Token& name = expect_name();
    auto n = node(NodeKind::Test, is);
    n->name = name.text;
    while (skip_op(".")) n->name += "." + expect_name().text;
    if (is_op("(")) {
      parse_call_args(*n);
    } else if ((cur().type == Tok::Name || cur().type == Tok::String ||
                cur().type == Tok::Integer || cur().type == Tok::Float || is_op("(") ||
                is_op("[") || is_op("{")) &&
               !is_name("else") && !is_name("or") && !is_name("and")) {
      if (is_name("is")) fail_here("You cannot chain multiple tests with is");
      n->args.push_back(parse_postfix(parse_primary(false)));
    }
    if (!has_test(n->name) && !jinja_knows_test(n->name)) {
      if (if_depth_ == 0) fail_at(name, fmt::format("No test named '{}'.", n->name));
    }
    n->a = std::move(input);
    if (!negated) return n;
    auto neg = node(NodeKind::Unary, is);
    neg->op = "not";
    neg->a = std::move(n);
    return neg;
  }
};

}  // namespace

Template parse(std::vector<Token> tokens) {
  return Parser(std::move(tokens)).run();
}

}  // namespace sf::chat::jinja
