#include "chat/jinja_eval.hpp"

#include <cmath>

#include "chat/jinja_builtins.hpp"
#include "chat/pystr.hpp"

namespace sf::chat::jinja {
namespace {

[[noreturn]] void operand_error(const std::string& op, const Value& a, const Value& b) {
  type_error("unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" +
             type_name(b) + "'");
}

bool intlike(const Value& v) {
  return v.kind == Kind::Bool || v.kind == Kind::Int;
}
double as_double(const Value& v) {
  return v.kind == Kind::Float ? v.f : static_cast<double>(v.i);
}

// CPython's float_divmod.
std::pair<double, double> float_divmod(double vx, double wx) {
  double mod = std::fmod(vx, wx);
  double div = (vx - mod) / wx;
  if (mod != 0) {
    if ((wx < 0) != (mod < 0)) {
      mod += wx;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, wx);
  }
  double floordiv;
  if (div != 0) {
    floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
  } else {
    floordiv = std::copysign(0.0, vx / wx);
  }
  return {floordiv, mod};
}

bool references(const Node& n, const std::string& name) {
  if (n.kind == NodeKind::Name && n.name == name) return true;
  for (const Node* c : {n.a.get(), n.b.get(), n.c.get()}) {
    if (c && references(*c, name)) return true;
  }
  for (const NodeList* l : {&n.args, &n.body, &n.else_body, &n.defaults}) {
    for (const auto& c : *l) {
      if (references(*c, name)) return true;
    }
  }
  for (const auto& kv : n.kwargs) {
    if (references(*kv.second, name)) return true;
  }
  for (const auto& br : n.branches) {
    if (references(*br.first, name)) return true;
    for (const auto& c : br.second) {
      if (references(*c, name)) return true;
    }
  }
  return false;
}

}  // namespace

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Kind::String:
      if (!item.is_string()) {
        type_error("'in <string>' requires string as left operand, not " + type_name(item));
      }
      return container.s->find(*item.s) != std::string::npos;
    case Kind::List:
      for (const auto& v : *container.list) {
        if (equals(v, item)) return true;
      }
      return false;
    case Kind::Dict:
      if (!is_hashable(item)) type_error("unhashable type: '" + type_name(item) + "'");
      return container.dict->find(item) != nullptr;
    case Kind::Undefined:
      return false;
    case Kind::Iterator: {
      auto& it = static_cast<IteratorObj&>(*container.obj);
      while (it.pos < it.items.size()) {
        if (equals(it.items[it.pos++], item)) return true;
      }
      return false;
    }
    default:
      type_error("argument of type '" + type_name(container) + "' is not iterable");
  }
}

Interpreter::~Interpreter() {
  for (auto& ns : namespaces_) ns->attrs.items.clear();
}

void Interpreter::step() {
  if (++steps_ > limits_.max_steps) {
    unsupported(
        fmt::format("rendering took more than {} steps; the template loops without end "
                    "or its input is too large",
                    limits_.max_steps));
  }
}

void Interpreter::check_size(size_t bytes) const {
  if (bytes > limits_.max_output) {
    unsupported(fmt::format("a string of {} bytes would exceed the {}-byte limit on rendered text",
                            bytes, limits_.max_output));
  }
}

void Interpreter::write(std::string_view s) {
  check_size(out_->size() + s.size());
  out_->append(s);
}

std::string Interpreter::render(const std::unordered_map<std::string, Value>& vars) {
  context_ = vars;
  std::string out;
  out_ = &out;
  frame_ = std::make_shared<Frame>();
  exec_list(tpl_.body);
  frame_.reset();
  return out;
}

Value Interpreter::lookup(const std::string& name) const {
  for (const Frame* f = frame_.get(); f; f = f->parent.get()) {
    const auto it = f->vars.find(name);
    if (it != f->vars.end()) return it->second;
  }
  const auto it = context_.find(name);
  if (it != context_.end()) return it->second;
  Value g = global_function(name);
  if (!g.is_undefined()) return g;
  return Value::undefined("'" + name + "' is undefined");
}

void Interpreter::assign(const Node& target, const Value& v, Frame& frame) {
  if (target.kind == NodeKind::Name) {
    frame.vars[target.name] = v;
    return;
  }
  if (target.kind == NodeKind::NSRef) {
    const Value ns = lookup(target.name);
    if (ns.kind != Kind::Namespace) type_error("cannot assign attribute on non-namespace object");
    if (!target.attr.empty() && target.attr[0] == '_') {
      type_error(
          "Chat templates cannot store underscore-prefixed attributes on a namespace, but "
          "got '" +
          target.attr + "'. Please rename the attribute.");
    }
    static_cast<NamespaceObj&>(*ns.obj).attrs.set(Value::string(target.attr), v);
    return;
  }
  // A tuple target unpacks any iterable, as Python does.
  const ValueList items = iterate(v);
  if (items.size() < target.args.size()) {
    type_error(fmt::format("not enough values to unpack (expected {}, got {})", target.args.size(),
                           items.size()));
  }
  if (items.size() > target.args.size()) {
    type_error(fmt::format("too many values to unpack (expected {})", target.args.size()));
  }
  for (size_t k = 0; k < items.size(); ++k) assign(*target.args[k], items[k], frame);
}

std::string Interpreter::capture(const NodeList& body, FramePtr frame) {
  std::string buf;
  std::string* saved_out = out_;
  FramePtr saved_frame = frame_;
  out_ = &buf;
  frame_ = std::move(frame);
  try {
    exec_list(body);
  } catch (...) {
    out_ = saved_out;
    frame_ = std::move(saved_frame);
    throw;
  }
  out_ = saved_out;
  frame_ = std::move(saved_frame);
  return buf;
}

Value Interpreter::make_macro(const Node& m, FramePtr def_frame, std::string name) {
  auto c = std::make_shared<CallableObj>();
  c->name = name;
  const bool uses_varargs = references(m, "varargs");
  const bool uses_kwargs = references(m, "kwargs");
  // The defining scope holds the macro, so the macro holds its scope weakly (no cycle).
  std::weak_ptr<Frame> scope = def_frame;
  c->fn = [&m, scope, name, uses_varargs, uses_kwargs](Interpreter& in, CallArgs& a) -> Value {
    auto f = std::make_shared<Frame>();
    f->parent = scope.lock();
    if (!f->parent) {
      unsupported("calling the macro '" + name + "' after the scope that defined it has ended");
    }
    const size_t np = m.params.size();
    ValueList extra;
    for (size_t k = 0; k < a.args.size(); ++k) {
      if (k < np) {
        f->vars[m.params[k]] = a.args[k];
      } else {
        extra.push_back(a.args[k]);
      }
    }
    if (!extra.empty() && !uses_varargs) {
      type_error(fmt::format("macro '{}' takes not more than {} argument(s)", name, np));
    }
    Dict kw;
    for (auto& [key, v] : a.kwargs) {
      const auto it = std::find(m.params.begin(), m.params.end(), key);
      if (it != m.params.end()) {
        if (static_cast<size_t>(it - m.params.begin()) < a.args.size()) {
          type_error(fmt::format("macro '{}' got multiple values for argument '{}'", name, key));
        }
        f->vars[key] = v;
      } else if (key == "caller") {
        f->vars["caller"] = v;
      } else if (uses_kwargs) {
        kw.set(Value::string(key), v);
      } else {
        type_error(fmt::format("macro '{}' takes no keyword argument '{}'", name, key));
      }
    }
    const size_t first_default = np - m.defaults.size();
    FramePtr saved = in.frame_;
    in.frame_ = f;
    try {
      for (size_t k = 0; k < np; ++k) {
        if (f->vars.count(m.params[k])) continue;
        f->vars[m.params[k]] =
            k >= first_default
                ? in.eval(*m.defaults[k - first_default])
                : Value::undefined("parameter '" + m.params[k] + "' was not provided");
      }
    } catch (...) {
      in.frame_ = saved;
      throw;
    }
    in.frame_ = saved;
    f->vars["varargs"] = Value::make_list(std::move(extra), true);
    f->vars["kwargs"] = Value::make_dict(std::move(kw));
    return Value::string(in.capture(m.body, f));
  };
  Value v;
  v.kind = Kind::Callable;
  v.obj = std::move(c);
  return v;
}

Value Interpreter::call(const Value& fn, CallArgs& args) {
  if (fn.is_undefined()) undefined_error(fn);
  if (fn.kind != Kind::Callable) type_error("'" + type_name(fn) + "' object is not callable");
  if (++depth_ > limits_.max_depth) {
    --depth_;
    unsupported(fmt::format("calls nested more than {} deep", limits_.max_depth));
  }
  try {
    Value r = static_cast<CallableObj&>(*fn.obj).fn(*this, args);
    --depth_;
    return r;
  } catch (...) {
    --depth_;
    throw;
  }
}

Interpreter::Flow Interpreter::exec_list(const NodeList& body) {
  for (const auto& n : body) {
    const Flow f = exec(*n);
    if (f != Flow::Normal) return f;
  }
  return Flow::Normal;
}

Interpreter::Flow Interpreter::exec(const Node& n) {
  step();
  if (++depth_ > limits_.max_depth) {
    --depth_;
    unsupported(fmt::format("statements and calls nested more than {} deep", limits_.max_depth));
  }
  struct Down {
    int& d;
    ~Down() { --d; }
  } down{depth_};
  try {
    switch (n.kind) {
      case NodeKind::Text:
        write(n.attr);
        return Flow::Normal;
      case NodeKind::Output:
        write(to_str(eval(*n.a)));
        return Flow::Normal;
      case NodeKind::If:
        for (const auto& [test, body] : n.branches) {
          if (truthy(eval(*test))) return exec_list(body);
        }
        return exec_list(n.else_body);
      case NodeKind::For: {
        Flow flow = Flow::Normal;
        exec_for(n, flow);
        return flow;
      }
      case NodeKind::Set:
        assign(*n.a, eval(*n.b), *frame_);
        return Flow::Normal;
      case NodeKind::SetBlock: {
        auto inner = std::make_shared<Frame>();
        inner->parent = frame_;
        const std::string text = capture(n.body, inner);
        assign(*n.a, n.b ? eval_filter(*n.b, &text) : Value::string(text), *frame_);
        return Flow::Normal;
      }
      case NodeKind::Macro:
        frame_->vars[n.name] = make_macro(n, frame_, n.name);
        return Flow::Normal;
      case NodeKind::CallBlock: {
        Value caller = make_macro(n, frame_, "caller");
        const Node& call_node = *n.a;
        Value callee = eval(*call_node.a);
        CallArgs args = eval_args(call_node);
        args.kwargs.emplace_back("caller", caller);
        write(to_str(call(callee, args)));
        return Flow::Normal;
      }
      case NodeKind::FilterBlock: {
        auto inner = std::make_shared<Frame>();
        inner->parent = frame_;
        const std::string text = capture(n.body, inner);
        write(to_str(eval_filter(*n.b, &text)));
        return Flow::Normal;
      }
      case NodeKind::With: {
        auto inner = std::make_shared<Frame>();
        inner->parent = frame_;
        for (size_t k = 0; k < n.params.size(); ++k)
          inner->vars[n.params[k]] = eval(*n.defaults[k]);
        write(capture(n.body, inner));
        return Flow::Normal;
      }
      case NodeKind::Break:
        return Flow::Break;
      case NodeKind::Continue:
        return Flow::Continue;
      case NodeKind::Generation:
        return exec_list(n.body);
      default:
        unsupported("internal: expression node in statement position");
    }
  } catch (JinjaError& e) {
    if (!e.line) {
      e.line = n.line;
      e.col = n.col;
    }
    throw;
  }
}

void Interpreter::exec_for(const Node& n, Flow& flow) {
  ValueList items = iterate(eval(*n.b));
  FramePtr outer = frame_;
  struct Restore {
    Interpreter& in;
    FramePtr f;
    ~Restore() { in.frame_ = f; }
  } restore{*this, outer};
  if (n.c) {
    ValueList kept;
    for (auto& item : items) {
      step();
      auto f = std::make_shared<Frame>();
      f->parent = outer;
      assign(*n.a, item, *f);
      frame_ = f;
      if (truthy(eval(*n.c))) kept.push_back(std::move(item));
    }
    frame_ = outer;
    items = std::move(kept);
  }
  if (items.empty()) {
    flow = exec_list(n.else_body);
    if (flow != Flow::Normal) flow = Flow::Normal;
    return;
  }
  const int64_t len = static_cast<int64_t>(items.size());
  for (int64_t k = 0; k < len; ++k) {
    step();
    auto f = std::make_shared<Frame>();
    f->parent = outer;
    assign(*n.a, items[static_cast<size_t>(k)], *f);
    auto loop = std::make_shared<LoopObj>();
    loop->index0 = k;
    loop->length = len;
    if (k > 0) loop->prev = items[static_cast<size_t>(k - 1)];
    if (k + 1 < len) loop->next = items[static_cast<size_t>(k + 1)];
    Value lv;
    lv.kind = Kind::Loop;
    lv.obj = std::move(loop);
    f->vars["loop"] = std::move(lv);
    frame_ = f;
    const Flow fl = exec_list(n.body);
    frame_ = outer;
    if (fl == Flow::Break) break;
  }
  flow = Flow::Normal;
}

CallArgs Interpreter::eval_args(const Node& n) {
  CallArgs a;
  for (const auto& x : n.args) a.args.push_back(eval(*x));
  for (const auto& [k, x] : n.kwargs) a.kwargs.emplace_back(k, eval(*x));
  return a;
}

Value Interpreter::eval_filter(const Node& n, const std::string* body_text) {
  const std::string* saved = block_text_;
  block_text_ = body_text;
  try {
    Value v = eval(n);
    block_text_ = saved;
    return v;
  } catch (...) {
    block_text_ = saved;
    throw;
  }
}

Value Interpreter::eval(const Node& n) {
  step();
  if (++depth_ > limits_.max_depth) {
    --depth_;
    unsupported(fmt::format("expressions and calls nested more than {} deep", limits_.max_depth));
  }
  struct Down {
    int& d;
    ~Down() { --d; }
  } down{depth_};
  try {
    return eval_inner(n);
  } catch (JinjaError& e) {
    if (!e.line) {
      e.line = n.line;
      e.col = n.col;
    }
    throw;
  }
}

Value Interpreter::binary(const std::string& op, const Value& a, const Value& b) {
  if (op == "%" && a.is_string()) {
    unsupported("printf-style string formatting with '%' is outside the supported Jinja subset");
  }
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  const bool nums = a.is_number() && b.is_number();
  const bool ints = intlike(a) && intlike(b);
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(a.i, b.i, &r)) unsupported("integer overflow beyond 64 bits");
      return Value::integer(r);
    }
    if (nums) return Value::number(as_double(a) + as_double(b));
    if (a.is_string() && b.is_string()) {
      check_size(a.s->size() + b.s->size());
      // markupsafe.Markup escapes a plain str joined to it, on either side.
      if (a.markup || b.markup) {
        return Value::string(
            (a.markup ? *a.s : escape_html(*a.s)) + (b.markup ? *b.s : escape_html(*b.s)), true);
      }
      return Value::string(*a.s + *b.s);
    }
    if (a.kind == Kind::List && b.kind == Kind::List && a.tuple == b.tuple &&
        a.view == Value::View::None && b.view == Value::View::None) {
      ValueList r = *a.list;
      r.insert(r.end(), b.list->begin(), b.list->end());
      check_size(r.size());
      return Value::make_list(std::move(r), a.tuple);
    }
    if (a.is_string() || (a.kind == Kind::List && a.view == Value::View::None)) {
      type_error("can only concatenate " + type_name(a) + " (not \"" + type_name(b) + "\") to " +
                 type_name(a));
    }
    operand_error("+", a, b);
  }
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(a.i, b.i, &r)) unsupported("integer overflow beyond 64 bits");
      return Value::integer(r);
    }
    if (nums) return Value::number(as_double(a) - as_double(b));
    operand_error("-", a, b);
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(a.i, b.i, &r)) unsupported("integer overflow beyond 64 bits");
      return Value::integer(r);
    }
    if (nums) return Value::number(as_double(a) * as_double(b));
    const Value* seq = intlike(b) ? &a : intlike(a) ? &b : nullptr;
    const Value* times = seq == &a ? &b : &a;
    if (seq && (seq->is_string() || (seq->kind == Kind::List && seq->view == Value::View::None))) {
      const int64_t t = std::max<int64_t>(0, times->i);
      const size_t unit = seq->is_string() ? seq->s->size() : seq->list->size();
      if (unit == 0)
        return seq->is_string() ? Value::string("", seq->markup) : Value::make_list({}, seq->tuple);
      if (static_cast<uint64_t>(t) > limits_.max_output / unit) check_size(limits_.max_output + 1);
      if (seq->is_string()) {
        std::string r;
        for (int64_t k = 0; k < t; ++k) r += *seq->s;
        return Value::string(std::move(r), seq->markup);
      }
      ValueList r;
      for (int64_t k = 0; k < t; ++k) r.insert(r.end(), seq->list->begin(), seq->list->end());
      return Value::make_list(std::move(r), seq->tuple);
    }
    operand_error("*", a, b);
  }
  if (op == "/") {
    if (!nums) operand_error("/", a, b);
    if (as_double(b) == 0) type_error(ints ? "division by zero" : "float division by zero");
    return Value::number(as_double(a) / as_double(b));
  }
  if (op == "//" || op == "%") {
    if (a.is_string() && op == "%") {
      unsupported("printf-style string formatting with '%' is outside the supported Jinja subset");
    }
    if (!nums) operand_error(op, a, b);
    if (ints) {
      if (b.i == 0) type_error("integer division or modulo by zero");
      if (a.i == INT64_MIN && b.i == -1) unsupported("integer overflow beyond 64 bits");
      int64_t q = a.i / b.i, r = a.i % b.i;
      if (r != 0 && ((r < 0) != (b.i < 0))) {
        --q;
        r += b.i;
      }
      return Value::integer(op == "//" ? q : r);
    }
    if (as_double(b) == 0) type_error("float divmod()");
    const auto [q, r] = float_divmod(as_double(a), as_double(b));
    return Value::number(op == "//" ? q : r);
  }
  if (op == "**") {
    if (!nums) operand_error("** or pow()", a, b);
    if (ints && b.i >= 0) {
      int64_t r = 1, base = a.i;
      for (int64_t e = b.i; e > 0; --e) {
        if (__builtin_mul_overflow(r, base, &r)) unsupported("integer overflow beyond 64 bits");
        if (r == 0 || r == 1) break;
      }
      return Value::integer(r);
    }
    const double x = as_double(a), y = as_double(b);
    if (x == 0 && y < 0) type_error("0.0 cannot be raised to a negative power");
    if (x < 0 && std::isfinite(y) && y != std::floor(y)) {
      unsupported("a power with a complex result");
    }
    const double r = std::pow(x, y);
    if (std::isinf(r) && std::isfinite(x) && std::isfinite(y)) {
      type_error("(34, 'Numerical result out of range')");
    }
    return Value::number(r);
  }
  unsupported("internal: unknown operator " + op);
}

bool Interpreter::compare(const std::string& op, const Value& a, const Value& b) {
  if (op == "==") return equals(a, b);
  if (op == "!=") return !equals(a, b);
  if (op == "<") return less(a, b);
  if (op == ">") return less(b, a);
  if (op == "<=") return less(a, b) || equals(a, b);
  if (op == ">=") return less(b, a) || equals(a, b);
  if (op == "in") return contains(b, a);
  return !contains(b, a);  // notin
}

Value Interpreter::eval_inner(const Node& n) {
  switch (n.kind) {
    case NodeKind::Const:
      return n.value;
    case NodeKind::Name:
      return lookup(n.name);
    case NodeKind::Getattr:
      return get_attr(*this, eval(*n.a), n.attr);
    case NodeKind::Getitem: {
      const Value obj = eval(*n.a);
      if (n.b->kind == NodeKind::Slice) {
        const Node& s = *n.b;
        Value parts[3];
        const Value* ptrs[3] = {nullptr, nullptr, nullptr};
        const Node* kids[3] = {s.a.get(), s.b.get(), s.c.get()};
        for (int k = 0; k < 3; ++k) {
          if (kids[k]) {
            parts[k] = eval(*kids[k]);
            ptrs[k] = &parts[k];
          }
        }
        return get_slice(obj, ptrs[0], ptrs[1], ptrs[2]);
      }
      return get_item(*this, obj, eval(*n.b));
    }
    case NodeKind::Slice:
      unsupported("a slice inside a tuple subscript is outside the supported Jinja subset");
    case NodeKind::Call: {
      Value fn = eval(*n.a);
      CallArgs args = eval_args(n);
      return call(fn, args);
    }
    case NodeKind::Filter: {
      if (!n.a && !block_text_) unsupported("internal: block filter without a body");
      Value input = n.a ? eval(*n.a) : Value::string(*block_text_);
      if (!has_filter(n.name)) {
        if (jinja_knows_filter(n.name)) {
          unsupported("the '" + n.name + "' filter is outside the supported Jinja subset");
        }
        type_error("No filter named '" + n.name + "' found.");
      }
      CallArgs args = eval_args(n);
      return apply_filter(*this, n.name, std::move(input), args);
    }
    case NodeKind::Test: {
      Value input = eval(*n.a);
      if (!has_test(n.name)) {
        if (jinja_knows_test(n.name)) {
          unsupported("the '" + n.name + "' test is outside the supported Jinja subset");
        }
        type_error("No test named '" + n.name + "' found.");
      }
      CallArgs args = eval_args(n);
      return Value::boolean(apply_test(*this, n.name, input, args));
    }
    case NodeKind::Unary: {
      const Value v = eval(*n.a);
      if (n.op == "not") return Value::boolean(!truthy(v));
      if (v.is_undefined()) undefined_error(v);
      if (!v.is_number())
        type_error("bad operand type for unary " + n.op + ": '" + type_name(v) + "'");
      if (n.op == "+") return v.kind == Kind::Bool ? Value::integer(v.i) : v;
      if (v.kind == Kind::Float) return Value::number(-v.f);
      if (v.i == INT64_MIN) unsupported("integer overflow beyond 64 bits");
      return Value::integer(-v.i);
    }
    case NodeKind::Binary: {
      if (n.op == "and") {
        Value l = eval(*n.a);
        return truthy(l) ? eval(*n.b) : l;
      }
      if (n.op == "or") {
        Value l = eval(*n.a);
        return truthy(l) ? l : eval(*n.b);
      }
      const Value l = eval(*n.a);
      const Value r = eval(*n.b);
      return binary(n.op, l, r);
    }
    case NodeKind::Concat: {
      std::string s;
      for (const auto& x : n.args) {
        s += to_str(eval(*x));
        check_size(s.size());
      }
      return Value::string(std::move(s));
    }
    case NodeKind::Compare: {
      Value left = eval(*n.a);
      for (size_t k = 0; k < n.ops.size(); ++k) {
        Value right = eval(*n.args[k]);
        if (!compare(n.ops[k], left, right)) return Value::boolean(false);
        left = std::move(right);
      }
      return Value::boolean(true);
    }
    case NodeKind::CondExpr:
      if (truthy(eval(*n.a))) return eval(*n.b);
      if (n.c) return eval(*n.c);
      return Value::undefined(fmt::format(
          "the inline if-expression on line {} evaluated to false and no else section was defined.",
          n.line));
    case NodeKind::List:
    case NodeKind::Tuple: {
      ValueList items;
      for (const auto& x : n.args) items.push_back(eval(*x));
      return Value::make_list(std::move(items), n.kind == NodeKind::Tuple);
    }
    case NodeKind::Dict: {
      Dict d;
      for (size_t k = 0; k + 1 < n.args.size(); k += 2) {
        Value key = eval(*n.args[k]);
        if (!is_hashable(key)) type_error("unhashable type: '" + type_name(key) + "'");
        d.set(std::move(key), eval(*n.args[k + 1]));
      }
      return Value::make_dict(std::move(d));
    }
    case NodeKind::NSRef:
      unsupported("internal: namespace reference outside an assignment");
    default:
      unsupported("internal: statement node in expression position");
  }
}

}  // namespace sf::chat::jinja
