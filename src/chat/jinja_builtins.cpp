#include "chat/jinja_builtins.hpp"

#include <algorithm>
#include <cfenv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <set>

#include "chat/jinja_eval.hpp"
#include "chat/pystr.hpp"

namespace sf::chat::jinja {
namespace {

// ---- arguments ------------------------------------------------------------------------------

// Positional-or-keyword parameter `pos`/`name`; null when the caller left it out.
const Value* arg(const CallArgs& a, size_t pos, std::string_view name) {
  if (pos < a.args.size()) return &a.args[pos];
  for (const auto& [k, v] : a.kwargs) {
    if (k == name) return &v;
  }
  return nullptr;
}

void check_args(const CallArgs& a, std::string_view fn, size_t max_pos,
                std::initializer_list<std::string_view> names) {
  if (a.args.size() > max_pos) {
    type_error(fmt::format("{}() takes at most {} positional argument(s) ({} given)", fn, max_pos,
                           a.args.size()));
  }
  for (const auto& [k, v] : a.kwargs) {
    const auto it = std::find(names.begin(), names.end(), k);
    if (it == names.end())
      type_error(fmt::format("{}() got an unexpected keyword argument '{}'", fn, k));
    if (static_cast<size_t>(it - names.begin()) < a.args.size()) {
      type_error(fmt::format("{}() got multiple values for argument '{}'", fn, k));
    }
  }
}

int64_t to_index(const Value& v, std::string_view what) {
  if (v.kind == Kind::Int || v.kind == Kind::Bool) return v.i;
  if (v.is_undefined()) undefined_error(v);
  type_error(
      fmt::format("'{}' object cannot be interpreted as an integer ({})", type_name(v), what));
}

std::string str_arg(const Value& v, std::string_view what) {
  if (v.is_string()) return *v.s;
  type_error(fmt::format("{} must be str, not {}", what, type_name(v)));
}

Value make_iterator(ValueList items) {
  auto it = std::make_shared<IteratorObj>();
  it->items = std::move(items);
  Value v;
  v.kind = Kind::Iterator;
  v.obj = std::move(it);
  return v;
}

Value make_callable(std::string name, std::function<Value(Interpreter&, CallArgs&)> fn) {
  auto c = std::make_shared<CallableObj>();
  c->name = std::move(name);
  c->fn = std::move(fn);
  Value v;
  v.kind = Kind::Callable;
  v.obj = std::move(c);
  return v;
}

Value tuple2(Value a, Value b) {
  return Value::make_list({std::move(a), std::move(b)}, true);
}

// What jinja2.utils.object_type_repr says of an object in "has no attribute" messages.
std::string object_repr(const Value& v) {
  if (v.is_none()) return "None";
  return type_name(v) + " object";
}

Value no_attribute(const Value& obj, const std::string& attr) {
  return Value::undefined("'" + object_repr(obj) + "' has no attribute '" + attr + "'");
}

Value unsafe(const Value& obj, const std::string& attr) {
  return Value::undefined("access to attribute '" + attr + "' of '" + type_name(obj) +
                          "' object is unsafe.");
}

Value ignore_case(const Value& v) {
  return v.is_string() ? Value::string(py::lower(*v.s)) : v;
}

// jinja2.filters.make_attrgetter: "a.b.0" looks up item by item (getitem first, then getattr).
Value attr_path(Interpreter& in, const Value& item, const Value& attribute) {
  if (!attribute.is_string()) return get_item(in, item, attribute);
  Value cur = item;
  for (const auto& part : py::split(*attribute.s, ".", -1)) {
    const bool digits = !part.empty() && std::all_of(part.begin(), part.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    cur = get_item(in, cur, digits ? Value::integer(std::stoll(part)) : Value::string(part));
  }
  return cur;
}

void sort_values(ValueList& items, bool reverse, const std::function<Value(const Value&)>& key) {
  std::vector<std::pair<Value, Value>> keyed;
  for (auto& v : items) keyed.emplace_back(key(v), v);
  std::stable_sort(keyed.begin(), keyed.end(), [reverse](const auto& x, const auto& y) {
    return reverse ? less(y.first, x.first) : less(x.first, y.first);
  });
  for (size_t k = 0; k < items.size(); ++k) items[k] = std::move(keyed[k].second);
}

// ---- str.format -----------------------------------------------------------------------------

std::string format_string(const std::string& fmt_s, const CallArgs& a) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt_s.size(); ++i) {
    const char c = fmt_s[i];
    if (c == '}') {
      if (i + 1 < fmt_s.size() && fmt_s[i + 1] == '}') {
        out += '}';
        ++i;
        continue;
      }
      type_error("Single '}' encountered in format string");
    }
    if (c != '{') {
      out += c;
      continue;
    }
    if (i + 1 < fmt_s.size() && fmt_s[i + 1] == '{') {
      out += '{';
      ++i;
      continue;
    }
    const size_t close = fmt_s.find('}', i);
    if (close == std::string::npos) type_error("Single '{' encountered in format string");
    std::string field = fmt_s.substr(i + 1, close - i - 1);
    i = close;
    char conversion = 0;
    if (field.find(':') != std::string::npos || field.find('[') != std::string::npos ||
        field.find('.') != std::string::npos || field.find('{') != std::string::npos) {
      unsupported(
          "str.format() with format specs or attribute/index fields is outside the "
          "supported subset");
    }
    if (const size_t bang = field.find('!'); bang != std::string::npos) {
      if (bang + 2 != field.size() || (field[bang + 1] != 'r' && field[bang + 1] != 's')) {
        unsupported("str.format() conversion other than !r or !s");
      }
      conversion = field[bang + 1];
      field.resize(bang);
    }
    const Value* v = nullptr;
    if (field.empty()) {
      if (auto_index >= a.args.size())
        type_error("Replacement index out of range for positional args tuple");
      v = &a.args[auto_index++];
    } else if (std::all_of(field.begin(), field.end(),
                           [](char d) { return d >= '0' && d <= '9'; })) {
      const size_t idx = std::stoul(field);
      if (idx >= a.args.size())
        type_error("Replacement index out of range for positional args tuple");
      v = &a.args[idx];
    } else {
      for (const auto& [k, x] : a.kwargs) {
        if (k == field) v = &x;
      }
      if (!v) type_error("KeyError: '" + field + "'");
    }
    out += conversion == 'r' ? to_repr(*v) : to_str(*v);
  }
  return out;
}

// ---- methods of str, dict, list ---------------------------------------------------------------

const std::set<std::string>& str_method_names() {
  static const std::set<std::string> names = {
      "capitalize",   "casefold",    "center",    "count",      "encode",       "endswith",
      "expandtabs",   "find",        "format",    "format_map", "index",        "isalnum",
      "isalpha",      "isascii",     "isdecimal", "isdigit",    "isidentifier", "islower",
      "isnumeric",    "isprintable", "isspace",   "istitle",    "isupper",      "join",
      "ljust",        "lower",       "lstrip",    "maketrans",  "partition",    "removeprefix",
      "removesuffix", "replace",     "rfind",     "rindex",     "rjust",        "rpartition",
      "rsplit",       "rstrip",      "split",     "splitlines", "startswith",   "strip",
      "swapcase",     "title",       "translate", "upper",      "zfill"};
  return names;
}

std::optional<std::string> opt_chars(const CallArgs& a) {
  const Value* c = arg(a, 0, "chars");
  if (!c || c->is_none()) return std::nullopt;
  return str_arg(*c, "strip arg");
}

bool ascii_only(const std::string& s, std::string_view method) {
  if (!py::is_ascii(s)) {
    unsupported(fmt::format("str.{}() on non-ASCII text is outside the supported subset", method));
  }
  return true;
}

std::string pad(const std::string& s, const CallArgs& a, std::string_view method) {
  const Value* w = arg(a, 0, "width");
  if (!w) type_error(fmt::format("{}() takes at least 1 argument", method));
  const int64_t width = to_index(*w, "width");
  std::string fill = " ";
  if (const Value* f = arg(a, 1, "fillchar")) {
    fill = str_arg(*f, "fillchar");
    if (py::length(fill) != 1) type_error("The fill character must be exactly one character long");
  }
  const int64_t len = static_cast<int64_t>(py::length(s));
  if (width <= len) return s;
  if (width > (64 << 20)) unsupported("padding to more than 64 Mi characters");
  const int64_t total = width - len;
  int64_t left = 0;
  if (method == "center") {
    left = total / 2 + (total & width & 1);  // CPython's pad() split
  } else if (method == "rjust") {
    left = total;
  }
  std::string out;
  for (int64_t k = 0; k < left; ++k) out += fill;
  out += s;
  for (int64_t k = 0; k < total - left; ++k) out += fill;
  return out;
}

Value call_str_method(Interpreter& in, const Value& self, const std::string& m, CallArgs& a) {
  if (self.markup) unsupported("calling str." + m + "() on a |safe (Markup) value");
  const std::string& s = *self.s;
  auto nargs = [&](size_t n) {
    if (a.args.size() + a.kwargs.size() > n) {
      type_error(fmt::format("str.{}() takes at most {} argument(s)", m, n));
    }
  };
  if (m == "strip" || m == "lstrip" || m == "rstrip") {
    nargs(1);
    const auto side = m == "strip"    ? py::Side::Both
                      : m == "lstrip" ? py::Side::Left
                                      : py::Side::Right;
    return Value::string(py::strip(s, opt_chars(a), side));
  }
  if (m == "split" || m == "rsplit") {
    check_args(a, m, 2, {"sep", "maxsplit"});
    const Value* sep = arg(a, 0, "sep");
    const Value* mx = arg(a, 1, "maxsplit");
    const int64_t maxsplit = mx ? to_index(*mx, "maxsplit") : -1;
    std::vector<std::string> parts;
    if (!sep || sep->is_none()) {
      parts = m == "split" ? py::split_whitespace(s, maxsplit) : py::rsplit_whitespace(s, maxsplit);
    } else {
      const std::string sp = str_arg(*sep, "must be str or None");
      if (sp.empty()) type_error("empty separator");
      parts = m == "split" ? py::split(s, sp, maxsplit) : py::rsplit(s, sp, maxsplit);
    }
    ValueList out;
    for (auto& p : parts) out.push_back(Value::string(std::move(p)));
    return Value::make_list(std::move(out));
  }
  if (m == "splitlines") {
    check_args(a, m, 1, {"keepends"});
    const Value* k = arg(a, 0, "keepends");
    ValueList out;
    for (auto& p : py::splitlines(s, k && truthy(*k))) out.push_back(Value::string(std::move(p)));
    return Value::make_list(std::move(out));
  }
  if (m == "startswith" || m == "endswith") {
    if (a.args.size() != 1 || !a.kwargs.empty()) {
      unsupported("str." + m + "() with start/end arguments is outside the supported subset");
    }
    ValueList options;
    if (a.args[0].kind == Kind::List && a.args[0].tuple) {
      options = *a.args[0].list;
    } else if (a.args[0].is_string()) {
      options.push_back(a.args[0]);
    } else {
      type_error(m + " first arg must be str or a tuple of str, not " + type_name(a.args[0]));
    }
    for (const auto& o : options) {
      const std::string p = str_arg(o, "tuple for " + m + " must only contain str, not");
      if (p.size() > s.size()) continue;
      if (m == "startswith" ? s.compare(0, p.size(), p) == 0
                            : s.compare(s.size() - p.size(), p.size(), p) == 0) {
        return Value::boolean(true);
      }
    }
    return Value::boolean(false);
  }
  if (m == "upper" || m == "lower" || m == "title" || m == "capitalize") {
    nargs(0);
    if (m == "upper") return Value::string(py::upper(s));
    if (m == "lower") return Value::string(py::lower(s));
    if (m == "title") return Value::string(py::title(s));
    return Value::string(py::capitalize(s));
  }
  if (m == "replace") {
    check_args(a, m, 3, {"old", "new", "count"});
    const Value* o = arg(a, 0, "old");
    const Value* n = arg(a, 1, "new");
    if (!o || !n) type_error("replace expected at least 2 arguments");
    const Value* c = arg(a, 2, "count");
    std::string r =
        py::replace(s, str_arg(*o, "replace() argument 1"), str_arg(*n, "replace() argument 2"),
                    c ? to_index(*c, "count") : -1);
    in.check_size(r.size());
    return Value::string(std::move(r));
  }
  if (m == "find" || m == "rfind" || m == "index" || m == "rindex" || m == "count") {
    if (a.args.size() != 1 || !a.kwargs.empty()) {
      unsupported("str." + m + "() with start/end arguments is outside the supported subset");
    }
    const std::string sub = str_arg(a.args[0], "must be str");
    if (m == "count") return Value::integer(py::count(s, sub));
    const int64_t k = py::find(s, sub, m[0] == 'r');
    if (k < 0 && (m == "index" || m == "rindex")) type_error("substring not found");
    return Value::integer(k);
  }
  if (m == "join") {
    if (a.args.size() != 1 || !a.kwargs.empty())
      type_error("str.join() takes exactly one argument");
    const ValueList items = iterate(a.args[0]);
    std::string out;
    for (size_t k = 0; k < items.size(); ++k) {
      if (!items[k].is_string()) {
        type_error(fmt::format("sequence item {}: expected str instance, {} found", k,
                               type_name(items[k])));
      }
      if (k) out += s;
      out += *items[k].s;
      in.check_size(out.size());
    }
    return Value::string(std::move(out));
  }
  if (m == "format") {
    std::string r = format_string(s, a);
    in.check_size(r.size());
    return Value::string(std::move(r));
  }
  if (m == "center" || m == "ljust" || m == "rjust") return Value::string(pad(s, a, m));
  if (m == "zfill") {
    if (a.args.size() != 1) type_error("zfill() takes exactly one argument");
    const int64_t width = to_index(a.args[0], "width");
    const int64_t len = static_cast<int64_t>(py::length(s));
    if (width <= len) return self;
    if (width > (64 << 20)) unsupported("padding to more than 64 Mi characters");
    std::string out(static_cast<size_t>(width - len), '0');
    if (!s.empty() && (s[0] == '+' || s[0] == '-'))
      return Value::string(s.substr(0, 1) + out + s.substr(1));
    return Value::string(out + s);
  }
  if (m == "removeprefix" || m == "removesuffix") {
    if (a.args.size() != 1) type_error(m + "() takes exactly one argument");
    const std::string p = str_arg(a.args[0], m + "() argument");
    if (m == "removeprefix") {
      return Value::string(
          s.compare(0, p.size(), p) == 0 && p.size() <= s.size() ? s.substr(p.size()) : s);
    }
    if (p.size() <= s.size() && s.compare(s.size() - p.size(), p.size(), p) == 0) {
      return Value::string(s.substr(0, s.size() - p.size()));
    }
    return self;
  }
  if (m == "partition" || m == "rpartition") {
    if (a.args.size() != 1) type_error(m + "() takes exactly one argument");
    const std::string sep = str_arg(a.args[0], "must be str");
    if (sep.empty()) type_error("empty separator");
    const size_t k = m == "partition" ? s.find(sep) : s.rfind(sep);
    if (k == std::string::npos) {
      return m == "partition"
                 ? Value::make_list({self, Value::string(""), Value::string("")}, true)
                 : Value::make_list({Value::string(""), Value::string(""), self}, true);
    }
    return Value::make_list({Value::string(s.substr(0, k)), Value::string(sep),
                             Value::string(s.substr(k + sep.size()))},
                            true);
  }
  if (m == "isspace") {
    nargs(0);
    if (s.empty()) return Value::boolean(false);
    for (char32_t c : py::decode(s)) {
      if (!py::is_space(c)) return Value::boolean(false);
    }
    return Value::boolean(true);
  }
  if (m == "isdigit" || m == "isalpha" || m == "isalnum" || m == "isupper" || m == "islower") {
    nargs(0);
    ascii_only(s, m);
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    auto up = [](char c) { return c >= 'A' && c <= 'Z'; };
    auto lo = [](char c) { return c >= 'a' && c <= 'z'; };
    if (m == "isupper" || m == "islower") {
      bool cased = false;
      for (char c : s) {
        if (m == "isupper" ? lo(c) : up(c)) return Value::boolean(false);
        cased |= up(c) || lo(c);
      }
      return Value::boolean(cased);
    }
    if (s.empty()) return Value::boolean(false);
    for (char c : s) {
      const bool ok = m == "isdigit"   ? digit(c)
                      : m == "isalpha" ? up(c) || lo(c)
                                       : up(c) || lo(c) || digit(c);
      if (!ok) return Value::boolean(false);
    }
    return Value::boolean(true);
  }
  unsupported("str." + m + "() is outside the supported subset");
}

Value call_dict_method(const Value& self, const std::string& m, CallArgs& a) {
  if (m == "get") {
    if (!a.kwargs.empty() || a.args.empty() || a.args.size() > 2) {
      type_error("get expected 1 or 2 positional arguments");
    }
    if (!is_hashable(a.args[0])) type_error("unhashable type: '" + type_name(a.args[0]) + "'");
    const Value* v = self.dict->find(a.args[0]);
    if (v) return *v;
    return a.args.size() > 1 ? a.args[1] : Value::none();
  }
  if (!a.args.empty() || !a.kwargs.empty()) type_error("dict." + m + "() takes no arguments");
  if (m == "copy") return self;
  ValueList out;
  for (const auto& [k, v] : self.dict->items) {
    out.push_back(m == "items" ? tuple2(k, v) : m == "keys" ? k : v);
  }
  Value r = Value::make_list(std::move(out));
  r.view = m == "items"  ? Value::View::DictItems
           : m == "keys" ? Value::View::DictKeys
                         : Value::View::DictValues;
  return r;
}

Value call_list_method(const Value& self, const std::string& m, CallArgs& a) {
  if (m == "copy") return Value::make_list(*self.list, self.tuple);
  if (a.args.size() != 1 || !a.kwargs.empty()) {
    unsupported(type_name(self) + "." + m + "() with other than one argument");
  }
  int64_t n = 0;
  for (size_t k = 0; k < self.list->size(); ++k) {
    if (equals((*self.list)[k], a.args[0])) {
      if (m == "index") return Value::integer(static_cast<int64_t>(k));
      ++n;
    }
  }
  if (m == "index") type_error(to_repr(a.args[0]) + " is not in " + type_name(self));
  return Value::integer(n);
}

Value method(const Value& self, const std::string& name,
             Value (*impl)(Interpreter&, const Value&, const std::string&, CallArgs&)) {
  return make_callable(
      type_name(self) + "." + name,
      [self, name, impl](Interpreter& in, CallArgs& a) { return impl(in, self, name, a); });
}

Value loop_attr(const Value& loop, const std::string& attr) {
  const auto& l = static_cast<const LoopObj&>(*loop.obj);
  if (attr == "index") return Value::integer(l.index0 + 1);
  if (attr == "index0") return Value::integer(l.index0);
  if (attr == "revindex") return Value::integer(l.length - l.index0);
  if (attr == "revindex0") return Value::integer(l.length - l.index0 - 1);
  if (attr == "first") return Value::boolean(l.index0 == 0);
  if (attr == "last") return Value::boolean(l.index0 + 1 == l.length);
  if (attr == "length") return Value::integer(l.length);
  if (attr == "depth") return Value::integer(l.depth0 + 1);
  if (attr == "depth0") return Value::integer(l.depth0);
  if (attr == "previtem")
    return l.index0 == 0 ? Value::undefined("there is no previous item") : l.prev;
  if (attr == "nextitem")
    return l.index0 + 1 == l.length ? Value::undefined("there is no next item") : l.next;
  if (attr == "cycle") {
    const int64_t i = l.index0;
    return make_callable("loop.cycle", [i](Interpreter&, CallArgs& a) {
      if (a.args.empty()) type_error("no items for cycling given");
      return a.args[static_cast<size_t>(i) % a.args.size()];
    });
  }
  if (attr == "changed") {
    return make_callable("loop.changed", [](Interpreter&, CallArgs&) -> Value {
      unsupported("loop.changed() is outside the supported Jinja subset");
    });
  }
  return no_attribute(loop, attr);
}

// ---- filters ---------------------------------------------------------------------------------

const std::set<std::string_view>& our_filters() {
  static const std::set<std::string_view> names = {
      "abs",     "capitalize", "center", "count",  "d",      "default",    "dictsort", "e",
      "escape",  "first",      "float",  "indent", "int",    "items",      "join",     "last",
      "length",  "list",       "lower",  "map",    "max",    "min",        "reject",   "rejectattr",
      "replace", "reverse",    "round",  "safe",   "select", "selectattr", "sort",     "string",
      "sum",     "title",      "tojson", "trim",   "unique", "upper"};
  return names;
}

const std::set<std::string_view>& our_tests() {
  static const std::set<std::string_view> names = {
      "boolean", "callable", "defined",  "divisibleby", "eq",       "equalto", "escaped",
      "even",    "false",    "filter",   "float",       "ge",       "gt",      "greaterthan",
      "in",      "integer",  "iterable", "le",          "lessthan", "lower",   "lt",
      "mapping", "ne",       "none",     "number",      "odd",      "sameas",  "sequence",
      "string",  "test",     "true",     "undefined",   "upper",    "==",      "!=",
      "<",       "<=",       ">",        ">="};
  return names;
}

Value select_or_reject(Interpreter& in, const Value& v, CallArgs& a, bool select, bool by_attr) {
  ValueList out;
  if (!truthy(v)) return make_iterator({});
  size_t off = 0;
  Value attribute;
  if (by_attr) {
    if (a.args.empty()) type_error("Missing parameter for attribute name");
    attribute = a.args[0];
    off = 1;
  }
  std::string test;
  CallArgs targs;
  const bool has_test_name = a.args.size() > off;
  if (has_test_name) {
    test = str_arg(a.args[off], "test name");
    targs.args.assign(a.args.begin() + static_cast<std::ptrdiff_t>(off + 1), a.args.end());
    targs.kwargs = a.kwargs;
    if (!has_test(test)) {
      if (jinja_knows_test(test))
        unsupported("the '" + test + "' test is outside the supported Jinja subset");
      type_error("No test named '" + test + "'.");
    }
  }
  for (const auto& item : iterate(v)) {
    in.step();
    const Value x = by_attr ? attr_path(in, item, attribute) : item;
    const bool ok = has_test_name ? apply_test(in, test, x, targs) : truthy(x);
    if (ok == select) out.push_back(item);
  }
  return make_iterator(std::move(out));
}

Value do_round(const Value& v, CallArgs& a) {
  check_args(a, "round", 2, {"precision", "method"});
  const Value* p = arg(a, 0, "precision");
  const Value* m = arg(a, 1, "method");
  const int64_t precision = p ? to_index(*p, "precision") : 0;
  const std::string method = m ? str_arg(*m, "method") : "common";
  if (!v.is_number()) type_error("type " + type_name(v) + " doesn't define __round__ method");
  const double x = v.kind == Kind::Float ? v.f : static_cast<double>(v.i);
  if (method == "common" && v.kind != Kind::Float) {
    if (precision < 0) unsupported("round() of an integer to negative digits");
    return Value::integer(v.i);  // round(int, n >= 0) is the int itself
  }
  if (method == "common") {
    if (precision < 0 || precision > 17) unsupported("round() to a precision outside 0..17");
    // Python rounds the exact binary value half-to-even, as glibc's printf does.
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(precision), x);
    return Value::number(std::strtod(buf, nullptr));
  }
  if (method != "floor" && method != "ceil")
    type_error("method must be 'common', 'ceil' or 'floor'");
  const double scale = std::pow(10.0, static_cast<double>(precision));
  return Value::number((method == "floor" ? std::floor(x * scale) : std::ceil(x * scale)) / scale);
}

Value min_max(Interpreter& in, const Value& v, CallArgs& a, bool want_max) {
  check_args(a, want_max ? "max" : "min", 2, {"case_sensitive", "attribute"});
  const Value* cs = arg(a, 0, "case_sensitive");
  const Value* attribute = arg(a, 1, "attribute");
  const bool case_sensitive = cs && truthy(*cs);
  const ValueList items = iterate(v);
  if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
  auto key = [&](const Value& x) {
    Value k = attribute && !attribute->is_none() ? attr_path(in, x, *attribute) : x;
    return case_sensitive ? k : ignore_case(k);
  };
  size_t best = 0;
  Value best_key = key(items[0]);
  for (size_t k = 1; k < items.size(); ++k) {
    Value kk = key(items[k]);
    if (want_max ? less(best_key, kk) : less(kk, best_key)) {
      best = k;
      best_key = std::move(kk);
    }
  }
  return items[best];
}

}  // namespace

bool has_filter(std::string_view name) {
  return our_filters().count(name) > 0;
}
bool has_test(std::string_view name) {
  return our_tests().count(name) > 0;
}

bool jinja_knows_filter(std::string_view name) {
  static const std::set<std::string_view> names = {
      "abs",    "attr",       "batch",       "capitalize", "center",   "count",
      "d",      "default",    "dictsort",    "e",          "escape",   "filesizeformat",
      "first",  "float",      "forceescape", "format",     "groupby",  "indent",
      "int",    "items",      "join",        "last",       "length",   "list",
      "lower",  "map",        "max",         "min",        "pprint",   "random",
      "reject", "rejectattr", "replace",     "reverse",    "round",    "safe",
      "select", "selectattr", "slice",       "sort",       "string",   "striptags",
      "sum",    "title",      "tojson",      "trim",       "truncate", "unique",
      "upper",  "urlencode",  "urlize",      "wordcount",  "wordwrap", "xmlattr"};
  return names.count(name) > 0;
}

bool jinja_knows_test(std::string_view name) {
  return has_test(name);
}

Value apply_filter(Interpreter& in, std::string_view name, Value v, CallArgs& a) {
  const std::string n(name);
  if (n == "tojson") {
    check_args(a, "tojson", 4, {"ensure_ascii", "indent", "separators", "sort_keys"});
    JsonOptions opt;
    if (const Value* x = arg(a, 0, "ensure_ascii")) opt.ensure_ascii = truthy(*x);
    if (const Value* x = arg(a, 1, "indent"); x && !x->is_none()) {
      opt.has_indent = true;
      opt.item_sep = ",";
      if (x->is_string()) {
        opt.indent = *x->s;
      } else {
        opt.indent = std::string(
            static_cast<size_t>(std::clamp<int64_t>(to_index(*x, "indent"), 0, 4096)), ' ');
      }
    }
    if (const Value* x = arg(a, 2, "separators"); x && !x->is_none()) {
      const ValueList seps = iterate(*x);
      if (seps.size() != 2 || !seps[0].is_string() || !seps[1].is_string()) {
        type_error("separators must be a pair of strings");
      }
      opt.item_sep = *seps[0].s;
      opt.key_sep = *seps[1].s;
    }
    if (const Value* x = arg(a, 3, "sort_keys")) opt.sort_keys = truthy(*x);
    std::string r = to_json(v, opt);
    in.check_size(r.size());
    return Value::string(std::move(r));
  }
  if (n == "length" || n == "count") {
    check_args(a, n, 0, {});
    return Value::integer(py_len(v));
  }
  if (n == "default" || n == "d") {
    check_args(a, n, 2, {"default_value", "boolean"});
    const Value* dv = arg(a, 0, "default_value");
    const Value* b = arg(a, 1, "boolean");
    if (v.is_undefined() || (b && truthy(*b) && !truthy(v))) return dv ? *dv : Value::string("");
    return v;
  }
  if (n == "trim") {
    check_args(a, n, 1, {"chars"});
    return Value::string(py::strip(to_str(v), opt_chars(a), py::Side::Both), v.markup);
  }
  if (n == "upper" || n == "lower" || n == "capitalize") {
    check_args(a, n, 0, {});
    const std::string s = to_str(v);
    return Value::string(n == "upper"   ? py::upper(s)
                         : n == "lower" ? py::lower(s)
                                        : py::capitalize(s),
                         v.markup);
  }
  if (n == "title") {
    check_args(a, n, 0, {});
    // Jinja2's own title: split on runs of [-\s({\[<], then upper-case each piece's first
    // character and lower-case the rest.
    const auto cps = py::decode(to_str(v));
    auto sep = [](char32_t c) {
      return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py::is_space(c);
    };
    std::string out;
    size_t k = 0;
    while (k < cps.size()) {
      size_t e = k;
      const bool is_sep = sep(cps[k]);
      while (e < cps.size() && sep(cps[e]) == is_sep) ++e;
      const std::vector<char32_t> piece(cps.begin() + static_cast<std::ptrdiff_t>(k),
                                        cps.begin() + static_cast<std::ptrdiff_t>(e));
      if (is_sep) {
        out += py::encode(piece);
      } else {
        out += py::upper(py::encode({piece[0]}));
        out += py::lower(py::encode(std::vector<char32_t>(piece.begin() + 1, piece.end())));
      }
      k = e;
    }
    return Value::string(std::move(out), v.markup);
  }
  if (n == "replace") {
    check_args(a, n, 3, {"old", "new", "count"});
    const Value* o = arg(a, 0, "old");
    const Value* nw = arg(a, 1, "new");
    if (!o || !nw) type_error("do_replace() missing required arguments 'old' and 'new'");
    const Value* c = arg(a, 2, "count");
    std::string r = py::replace(to_str(v), to_str(*o), to_str(*nw),
                                c && !c->is_none() ? to_index(*c, "count") : -1);
    in.check_size(r.size());
    return Value::string(std::move(r));
  }
  if (n == "string") {
    check_args(a, n, 0, {});
    return v.is_string() ? v : Value::string(to_str(v));
  }
  if (n == "safe") {
    check_args(a, n, 0, {});
    return Value::string(to_str(v), true);
  }
  if (n == "escape" || n == "e") {
    check_args(a, n, 0, {});
    if (v.is_string() && v.markup) return v;
    return Value::string(escape_html(to_str(v)), true);
  }
  if (n == "join") {
    check_args(a, n, 2, {"d", "attribute"});
    const Value* d = arg(a, 0, "d");
    const Value* attribute = arg(a, 1, "attribute");
    const std::string sep = d ? to_str(*d) : "";
    std::string out;
    bool first = true;
    for (const auto& item : iterate(v)) {
      if (!first) out += sep;
      first = false;
      out += to_str(attribute && !attribute->is_none() ? attr_path(in, item, *attribute) : item);
      in.check_size(out.size());
    }
    return Value::string(std::move(out));
  }
  if (n == "first") {
    check_args(a, n, 0, {});
    if (v.kind == Kind::Iterator) {
      auto& it = static_cast<IteratorObj&>(*v.obj);
      if (it.pos < it.items.size()) return it.items[it.pos++];
      return Value::undefined("No first item, sequence was empty.");
    }
    const ValueList items = iterate(v);
    return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
  }
  if (n == "last") {
    check_args(a, n, 0, {});
    if (v.kind == Kind::Iterator) type_error("'generator' object is not reversible");
    const ValueList items = iterate(v);
    return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
  }
  if (n == "list") {
    check_args(a, n, 0, {});
    return Value::make_list(iterate(v));
  }
  if (n == "items") {
    check_args(a, n, 0, {});
    if (v.is_undefined()) return make_iterator({});
    if (v.kind != Kind::Dict) type_error("Can only get item pairs from a mapping.");
    ValueList out;
    for (const auto& [k, x] : v.dict->items) out.push_back(tuple2(k, x));
    return make_iterator(std::move(out));
  }
  if (n == "selectattr" || n == "rejectattr")
    return select_or_reject(in, v, a, n == "selectattr", true);
  if (n == "select" || n == "reject") return select_or_reject(in, v, a, n == "select", false);
  if (n == "map") {
    if (!truthy(v)) return make_iterator({});
    ValueList out;
    const Value* attribute = nullptr;
    for (const auto& [k, x] : a.kwargs) {
      if (k == "attribute") attribute = &x;
    }
    if (a.args.empty() && attribute) {
      const Value* dflt = nullptr;
      for (const auto& [k, x] : a.kwargs) {
        if (k == "default") {
          dflt = &x;
        } else if (k != "attribute") {
          type_error("Unexpected keyword argument '" + k + "'");
        }
      }
      for (const auto& item : iterate(v)) {
        in.step();
        Value x = attr_path(in, item, *attribute);
        out.push_back(x.is_undefined() && dflt ? *dflt : x);
      }
      return make_iterator(std::move(out));
    }
    if (a.args.empty()) type_error("map requires a filter argument");
    const std::string f = str_arg(a.args[0], "filter name");
    if (!has_filter(f)) {
      if (jinja_knows_filter(f))
        unsupported("the '" + f + "' filter is outside the supported Jinja subset");
      type_error("No filter named '" + f + "'.");
    }
    for (const auto& item : iterate(v)) {
      in.step();
      CallArgs fa;
      fa.args.assign(a.args.begin() + 1, a.args.end());
      fa.kwargs = a.kwargs;
      out.push_back(apply_filter(in, f, item, fa));
    }
    return make_iterator(std::move(out));
  }
  if (n == "indent") {
    check_args(a, n, 3, {"width", "first", "blank"});
    const Value* w = arg(a, 0, "width");
    const Value* f = arg(a, 1, "first");
    const Value* b = arg(a, 2, "blank");
    std::string indention = "    ";
    if (w) {
      indention =
          w->is_string()
              ? *w->s
              : std::string(
                    static_cast<size_t>(std::clamp<int64_t>(to_index(*w, "width"), 0, 4096)), ' ');
    }
    if (v.is_undefined()) undefined_error(v);
    if (!v.is_string()) {
      // do_indent appends "\n" to its input before splitting it into lines.
      if (v.kind == Kind::List && !v.tuple)
        type_error("'list' object has no attribute 'splitlines'");
      type_error("unsupported operand type(s) for +=: '" + type_name(v) + "' and 'str'");
    }
    const std::string s = *v.s + "\n";
    const auto lines = py::splitlines(s, false);
    std::string rv;
    if (b && truthy(*b)) {
      for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + indention : "") + lines[k];
    } else {
      rv = lines.empty() ? "" : lines[0];
      for (size_t k = 1; k < lines.size(); ++k)
        rv += "\n" + (lines[k].empty() ? "" : indention + lines[k]);
    }
    if (f && truthy(*f)) rv = indention + rv;
    in.check_size(rv.size());
    return Value::string(std::move(rv), v.markup);
  }
  if (n == "center") {
    check_args(a, n, 1, {"width"});
    CallArgs pa;
    pa.args.push_back(arg(a, 0, "width") ? *arg(a, 0, "width") : Value::integer(80));
    return Value::string(pad(to_str(v), pa, "center"));
  }
  if (n == "int") {
    check_args(a, n, 2, {"default", "base"});
    const Value* d = arg(a, 0, "default");
    const Value* b = arg(a, 1, "base");
    const Value dflt = d ? *d : Value::integer(0);
    if (v.is_undefined()) undefined_error(v);
    if (v.kind == Kind::Int || v.kind == Kind::Bool) return Value::integer(v.i);
    if (v.kind == Kind::Float) {
      if (!std::isfinite(v.f)) return dflt;
      if (std::fabs(v.f) >= 9.2e18) unsupported("integer overflow beyond 64 bits");
      return Value::integer(static_cast<int64_t>(v.f));
    }
    if (v.is_string()) {
      if (b && to_index(*b, "base") != 10) unsupported("|int with a base other than 10");
      const std::string s = py::strip(*v.s, std::nullopt, py::Side::Both);
      std::string digits;
      for (size_t k = 0; k < s.size(); ++k) {
        if (s[k] == '_' && k > 0 && k + 1 < s.size() &&
            std::isdigit(static_cast<unsigned char>(s[k - 1])) &&
            std::isdigit(static_cast<unsigned char>(s[k + 1]))) {
          continue;
        }
        digits += s[k];
      }
      size_t k = digits[0] == '+' || digits[0] == '-' ? 1 : 0;
      const bool all_digits =
          digits.size() > k &&
          std::all_of(digits.begin() + static_cast<std::ptrdiff_t>(k), digits.end(),
                      [](char c) { return c >= '0' && c <= '9'; });
      if (all_digits) {
        errno = 0;
        const long long r = std::strtoll(digits.c_str(), nullptr, 10);
        if (errno == ERANGE) unsupported("integer overflow beyond 64 bits");
        return Value::integer(r);
      }
      if (!py::is_ascii(s)) unsupported("|int of non-ASCII text");
      char* end = nullptr;
      const double f = std::strtod(s.c_str(), &end);
      const bool hexlike = s.find_first_of("xXpP") != std::string::npos;
      if (!s.empty() && end == s.c_str() + s.size() && !hexlike && std::isfinite(f)) {
        if (std::fabs(f) >= 9.2e18) unsupported("integer overflow beyond 64 bits");
        return Value::integer(static_cast<int64_t>(f));
      }
      return dflt;
    }
    return dflt;
  }
  if (n == "float") {
    check_args(a, n, 1, {"default"});
    const Value* d = arg(a, 0, "default");
    const Value dflt = d ? *d : Value::number(0.0);
    if (v.is_undefined()) undefined_error(v);
    if (v.is_number()) return Value::number(v.kind == Kind::Float ? v.f : static_cast<double>(v.i));
    if (v.is_string()) {
      const std::string s = py::strip(*v.s, std::nullopt, py::Side::Both);
      if (!py::is_ascii(s) || s.find('_') != std::string::npos) unsupported("|float of this text");
      char* end = nullptr;
      const double f = std::strtod(s.c_str(), &end);
      const bool hexlike = s.find_first_of("xXpP") != std::string::npos;
      if (!s.empty() && end == s.c_str() + s.size() && !hexlike) return Value::number(f);
    }
    return dflt;
  }
  if (n == "abs") {
    check_args(a, n, 0, {});
    if (v.kind == Kind::Float) return Value::number(std::fabs(v.f));
    if (v.kind == Kind::Int || v.kind == Kind::Bool) {
      if (v.i == INT64_MIN) unsupported("integer overflow beyond 64 bits");
      return Value::integer(v.i < 0 ? -v.i : v.i);
    }
    type_error("bad operand type for abs(): '" + type_name(v) + "'");
  }
  if (n == "round") return do_round(v, a);
  if (n == "sum") {
    check_args(a, n, 2, {"attribute", "start"});
    const Value* attribute = arg(a, 0, "attribute");
    const Value* start = arg(a, 1, "start");
    Value acc = start ? *start : Value::integer(0);
    for (const auto& item : iterate(v)) {
      const Value x = attribute && !attribute->is_none() ? attr_path(in, item, *attribute) : item;
      if (!acc.is_number() || !x.is_number()) {
        type_error("unsupported operand type(s) for +: '" + type_name(acc) + "' and '" +
                   type_name(x) + "'");
      }
      if (acc.kind != Kind::Float && x.kind != Kind::Float) {
        int64_t r;
        if (__builtin_add_overflow(acc.i, x.i, &r)) unsupported("integer overflow beyond 64 bits");
        acc = Value::integer(r);
      } else {
        acc = Value::number((acc.kind == Kind::Float ? acc.f : static_cast<double>(acc.i)) +
                            (x.kind == Kind::Float ? x.f : static_cast<double>(x.i)));
      }
    }
    return acc;
  }
  if (n == "min" || n == "max") return min_max(in, v, a, n == "max");
  if (n == "sort") {
    check_args(a, n, 3, {"reverse", "case_sensitive", "attribute"});
    const Value* r = arg(a, 0, "reverse");
    const Value* cs = arg(a, 1, "case_sensitive");
    const Value* attribute = arg(a, 2, "attribute");
    const bool case_sensitive = cs && truthy(*cs);
    ValueList items = iterate(v);
    sort_values(items, r && truthy(*r), [&](const Value& x) {
      Value k = attribute && !attribute->is_none() ? attr_path(in, x, *attribute) : x;
      return case_sensitive ? k : ignore_case(k);
    });
    return Value::make_list(std::move(items));
  }
  if (n == "dictsort") {
    check_args(a, n, 3, {"case_sensitive", "by", "reverse"});
    const Value* cs = arg(a, 0, "case_sensitive");
    const Value* by = arg(a, 1, "by");
    const Value* r = arg(a, 2, "reverse");
    const std::string by_s = by ? to_str(*by) : "key";
    if (by_s != "key" && by_s != "value")
      type_error("You can only sort by either \"key\" or \"value\"");
    if (v.kind != Kind::Dict) type_error("'" + type_name(v) + "' object has no attribute 'items'");
    ValueList items;
    for (const auto& [k, x] : v.dict->items) items.push_back(tuple2(k, x));
    const size_t pos = by_s == "key" ? 0 : 1;
    const bool case_sensitive = cs && truthy(*cs);
    sort_values(items, r && truthy(*r), [&](const Value& t) {
      const Value& k = (*t.list)[pos];
      return case_sensitive ? k : ignore_case(k);
    });
    return Value::make_list(std::move(items));
  }
  if (n == "unique") {
    check_args(a, n, 2, {"case_sensitive", "attribute"});
    const Value* cs = arg(a, 0, "case_sensitive");
    const Value* attribute = arg(a, 1, "attribute");
    const bool case_sensitive = cs && truthy(*cs);
    ValueList out, seen;
    for (const auto& item : iterate(v)) {
      in.step();
      Value k = attribute && !attribute->is_none() ? attr_path(in, item, *attribute) : item;
      if (!case_sensitive) k = ignore_case(k);
      if (!is_hashable(k)) type_error("unhashable type: '" + type_name(k) + "'");
      if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return equals(s, k); })) {
        seen.push_back(k);
        out.push_back(item);
      }
    }
    return make_iterator(std::move(out));
  }
  if (n == "reverse") {
    check_args(a, n, 0, {});
    if (v.is_string()) {
      auto cps = py::decode(*v.s);
      std::reverse(cps.begin(), cps.end());
      return Value::string(py::encode(cps), v.markup);
    }
    if (v.kind == Kind::Dict || v.kind == Kind::List) {
      ValueList items = iterate(v);
      std::reverse(items.begin(), items.end());
      return make_iterator(std::move(items));
    }
    ValueList items = iterate(v);
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  unsupported("the '" + n + "' filter is outside the supported Jinja subset");
}

bool apply_test(Interpreter& in, std::string_view name, const Value& v, CallArgs& a) {
  const std::string n(name);
  auto one = [&]() -> const Value& {
    if (a.args.size() != 1 || !a.kwargs.empty())
      type_error("test '" + n + "' takes exactly one argument");
    return a.args[0];
  };
  static const std::set<std::string> with_argument = {
      "sameas", "divisibleby", "eq",          "equalto", "==", "ne", "!=", "lt", "lessthan",
      "<",      "gt",          "greaterthan", ">",       "le", "<=", "ge", ">=", "in"};
  if (!with_argument.count(n) && (!a.args.empty() || !a.kwargs.empty())) {
    type_error(fmt::format("test_{}() takes 1 positional argument but {} were given", n,
                           1 + a.args.size() + a.kwargs.size()));
  }
  if (n == "defined") return !v.is_undefined();
  if (n == "undefined") return v.is_undefined();
  if (n == "none") return v.is_none();
  if (n == "boolean") return v.kind == Kind::Bool;
  if (n == "false") return v.kind == Kind::Bool && !v.b;
  if (n == "true") return v.kind == Kind::Bool && v.b;
  if (n == "integer") return v.kind == Kind::Int;
  if (n == "float") return v.kind == Kind::Float;
  if (n == "number") return v.is_number();
  if (n == "string") return v.is_string();
  if (n == "mapping") return v.kind == Kind::Dict;
  if (n == "iterable") {
    return v.kind == Kind::String || v.kind == Kind::List || v.kind == Kind::Dict ||
           v.kind == Kind::Iterator || v.kind == Kind::Undefined || v.kind == Kind::Loop;
  }
  if (n == "sequence") {
    return v.kind == Kind::String || (v.kind == Kind::List) || v.kind == Kind::Dict ||
           v.kind == Kind::Undefined;
  }
  if (n == "callable")
    return v.kind == Kind::Callable || v.kind == Kind::Undefined || v.kind == Kind::Loop;
  if (n == "escaped") return v.is_string() && v.markup;
  if (n == "sameas") {
    const Value& o = one();
    if (v.kind != o.kind) return false;
    switch (v.kind) {
      case Kind::None:
      case Kind::Undefined:
        return v.kind == Kind::None;
      case Kind::Bool:
        return v.b == o.b;
      case Kind::String:
        return v.s == o.s;
      case Kind::List:
        return v.list == o.list;
      case Kind::Dict:
        return v.dict == o.dict;
      case Kind::Int:
      case Kind::Float:
        unsupported("'sameas' on numbers depends on CPython's object caching");
      default:
        return v.obj == o.obj;
    }
  }
  if (n == "odd" || n == "even") {
    if (v.kind != Kind::Int && v.kind != Kind::Bool) {
      if (v.is_undefined()) undefined_error(v);
      unsupported("'" + n + "' on a non-integer");
    }
    const bool odd = (v.i % 2) != 0;
    return n == "odd" ? odd : !odd;
  }
  if (n == "divisibleby") {
    const Value& d = one();
    if ((v.kind != Kind::Int && v.kind != Kind::Bool) ||
        (d.kind != Kind::Int && d.kind != Kind::Bool)) {
      unsupported("'divisibleby' on non-integers");
    }
    if (d.i == 0) type_error("integer division or modulo by zero");
    if (d.i == -1) return true;
    return v.i % d.i == 0;
  }
  if (n == "eq" || n == "equalto" || n == "==") return equals(v, one());
  if (n == "ne" || n == "!=") return !equals(v, one());
  if (n == "lt" || n == "lessthan" || n == "<") return less(v, one());
  if (n == "gt" || n == "greaterthan" || n == ">") return less(one(), v);
  if (n == "le" || n == "<=") {
    const Value& o = one();
    return less(v, o) || equals(v, o);
  }
  if (n == "ge" || n == ">=") {
    const Value& o = one();
    return less(o, v) || equals(v, o);
  }
  if (n == "in") return contains(one(), v);
  if (n == "lower" || n == "upper") {
    const std::string s = to_str(v);
    ascii_only(s, n == "lower" ? "islower" : "isupper");
    bool cased = false;
    for (char c : s) {
      const bool up = c >= 'A' && c <= 'Z', lo = c >= 'a' && c <= 'z';
      if (n == "lower" ? up : lo) return false;
      cased |= up || lo;
    }
    return cased;
  }
  if (n == "filter" || n == "test") {
    if (!v.is_string()) return false;
    return n == "filter" ? jinja_knows_filter(*v.s) : jinja_knows_test(*v.s);
  }
  (void)in;
  unsupported("the '" + n + "' test is outside the supported Jinja subset");
}

Value get_attr(Interpreter& in, const Value& obj, const std::string& attr) {
  (void)in;
  if (obj.is_undefined()) undefined_error(obj);
  const bool dunder = attr.size() > 1 && attr[0] == '_' && attr[1] == '_';
  switch (obj.kind) {
    case Kind::String:
      if (dunder) return unsafe(obj, attr);
      if (str_method_names().count(attr)) return method(obj, attr, call_str_method);
      return no_attribute(obj, attr);
    case Kind::Dict: {
      static const std::set<std::string> mutating = {"clear", "pop", "popitem", "setdefault",
                                                     "update"};
      static const std::set<std::string> reading = {"get",    "items", "keys",
                                                    "values", "copy",  "fromkeys"};
      if (dunder) return unsafe(obj, attr);
      if (mutating.count(attr)) return unsafe(obj, attr);
      if (reading.count(attr)) {
        if (attr == "fromkeys") {
          return make_callable("dict.fromkeys", [](Interpreter&, CallArgs&) -> Value {
            unsupported("dict.fromkeys() is outside the supported subset");
          });
        }
        return method(obj, attr,
                      [](Interpreter&, const Value& self, const std::string& m, CallArgs& a) {
                        return call_dict_method(self, m, a);
                      });
      }
      if (const Value* v = obj.dict->find(Value::string(attr))) return *v;
      return no_attribute(obj, attr);
    }
    case Kind::List: {
      if (obj.view != Value::View::None) {
        unsupported("attributes of a " + type_name(obj) + " are outside the supported subset");
      }
      static const std::set<std::string> mutating = {"append", "clear",  "extend",  "insert",
                                                     "pop",    "remove", "reverse", "sort"};
      if (dunder || (!obj.tuple && mutating.count(attr))) return unsafe(obj, attr);
      if (attr == "count" || attr == "index" || (attr == "copy" && !obj.tuple)) {
        return method(obj, attr,
                      [](Interpreter&, const Value& self, const std::string& m, CallArgs& a) {
                        return call_list_method(self, m, a);
                      });
      }
      return no_attribute(obj, attr);
    }
    case Kind::Namespace: {
      if (const Value* v = static_cast<NamespaceObj&>(*obj.obj).attrs.find(Value::string(attr)))
        return *v;
      return no_attribute(obj, attr);
    }
    case Kind::Loop:
      return loop_attr(obj, attr);
    case Kind::Int:
    case Kind::Float:
    case Kind::Bool: {
      static const std::set<std::string> number_attrs = {
          "real",       "imag",      "numerator", "denominator", "conjugate",
          "bit_length", "bit_count", "to_bytes",  "from_bytes",  "as_integer_ratio",
          "is_integer", "hex",       "fromhex"};
      if (dunder || number_attrs.count(attr)) {
        unsupported("the attribute '" + attr + "' of a number is outside the supported subset");
      }
      return no_attribute(obj, attr);
    }
    default:
      if (dunder) return unsafe(obj, attr);
      return no_attribute(obj, attr);
  }
}

Value get_item(Interpreter& in, const Value& obj, const Value& key) {
  if (obj.is_undefined()) undefined_error(obj);
  auto fallback = [&]() -> Value {
    if (key.is_string()) return get_attr(in, obj, *key.s);
    return Value::undefined("'" + object_repr(obj) + "' has no element " + to_repr(key));
  };
  switch (obj.kind) {
    case Kind::List:
    case Kind::String: {
      if (key.kind != Kind::Int && key.kind != Kind::Bool) return fallback();
      if (obj.kind == Kind::List) {
        const int64_t n = static_cast<int64_t>(obj.list->size());
        const int64_t k = key.i < 0 ? key.i + n : key.i;
        if (k < 0 || k >= n) return fallback();
        return (*obj.list)[static_cast<size_t>(k)];
      }
      const auto off = py::cp_offsets(*obj.s);
      const int64_t n = static_cast<int64_t>(off.size()) - 1;
      const int64_t k = key.i < 0 ? key.i + n : key.i;
      if (k < 0 || k >= n) return fallback();
      const size_t b = off[static_cast<size_t>(k)], e = off[static_cast<size_t>(k) + 1];
      return Value::string(obj.s->substr(b, e - b), obj.markup);
    }
    case Kind::Dict:
      if (is_hashable(key)) {
        if (const Value* v = obj.dict->find(key)) return *v;
      }
      return fallback();
    default:
      return fallback();
  }
}

Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step) {
  if (obj.is_undefined()) undefined_error(obj);
  auto idx = [](const Value* v, bool& given) -> int64_t {
    given = v && !v->is_none();
    if (!given) return 0;
    if (v->kind != Kind::Int && v->kind != Kind::Bool) {
      type_error("slice indices must be integers or None or have an __index__ method");
    }
    return v->i;
  };
  bool has_start, has_stop, has_step;
  const int64_t b0 = idx(start, has_start), e0 = idx(stop, has_stop);
  int64_t st = idx(step, has_step);
  if (!has_step) st = 1;
  if (st == 0) type_error("slice step cannot be zero");
  if (obj.kind != Kind::List && obj.kind != Kind::String) {
    // Jinja2 subscripts with Python at run time (a TypeError) but folds constant operands at
    // compile time (an Undefined): which one a template gets depends on its constness.
    unsupported("slicing a '" + type_name(obj) + "' (only strings, lists and tuples slice)");
  }
  if (obj.view != Value::View::None && obj.view != Value::View::Range) {
    type_error("'" + type_name(obj) + "' object is not subscriptable");
  }
  if (obj.view == Value::View::Range) unsupported("slicing a range (Python gives a range back)");
  std::vector<size_t> off;
  int64_t n;
  if (obj.kind == Kind::String) {
    off = py::cp_offsets(*obj.s);
    n = static_cast<int64_t>(off.size()) - 1;
  } else {
    n = static_cast<int64_t>(obj.list->size());
  }
  // CPython's PySlice_AdjustIndices.
  auto adjust = [&](int64_t v, bool given, int64_t dflt) {
    if (!given) return dflt;
    if (v < 0) {
      v += n;
      if (v < 0) v = st < 0 ? -1 : 0;
    } else if (v >= n) {
      v = st < 0 ? n - 1 : n;
    }
    return v;
  };
  const int64_t b = adjust(b0, has_start, st < 0 ? n - 1 : 0);
  const int64_t e = adjust(e0, has_stop, st < 0 ? -1 : n);
  std::vector<int64_t> picks;
  if (st > 0) {
    for (int64_t k = b; k < e; k += st) picks.push_back(k);
  } else {
    for (int64_t k = b; k > e; k += st) picks.push_back(k);
  }
  if (obj.kind == Kind::String) {
    std::string out;
    for (int64_t k : picks)
      out += obj.s->substr(off[static_cast<size_t>(k)],
                           off[static_cast<size_t>(k) + 1] - off[static_cast<size_t>(k)]);
    return Value::string(std::move(out), obj.markup);
  }
  ValueList out;
  for (int64_t k : picks) out.push_back((*obj.list)[static_cast<size_t>(k)]);
  return Value::make_list(std::move(out), obj.tuple);
}

Value global_function(std::string_view name) {
  if (name == "raise_exception") {
    return make_callable("raise_exception", [](Interpreter&, CallArgs& a) -> Value {
      const Value* m = arg(a, 0, "message");
      throw JinjaError{Status::InvalidArgument, m ? to_str(*m) : std::string(), true};
    });
  }
  if (name == "strftime_now") {
    return make_callable("strftime_now", [](Interpreter&, CallArgs& a) -> Value {
      const Value* f = arg(a, 0, "format");
      if (!f || !f->is_string()) type_error("strftime_now() argument must be str");
      const auto now = std::chrono::system_clock::now();
      const std::time_t t = std::chrono::system_clock::to_time_t(now);
      const auto micros =
          std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() %
          1000000;
      std::tm tm{};
      localtime_r(&t, &tm);
      // datetime.strftime handles %f, %z and %Z itself (a naive datetime has no zone).
      std::string fmt_s;
      const std::string& src = *f->s;
      for (size_t k = 0; k < src.size(); ++k) {
        if (src[k] == '%' && k + 1 < src.size()) {
          const char c = src[k + 1];
          if (c == 'f') {
            char buf[16];
            std::snprintf(buf, sizeof buf, "%06lld", static_cast<long long>(micros));
            fmt_s += buf;
            ++k;
            continue;
          }
          if (c == 'z' || c == 'Z') {
            ++k;
            continue;
          }
          fmt_s += src.substr(k, 2);
          ++k;
          continue;
        }
        fmt_s += src[k];
      }
      if (fmt_s.empty()) return Value::string("");
      std::string out(fmt_s.size() * 8 + 256, '\0');
      const size_t len = std::strftime(out.data(), out.size(), fmt_s.c_str(), &tm);
      if (len == 0) unsupported("strftime_now() output longer than expected");
      out.resize(len);
      return Value::string(out);
    });
  }
  if (name == "range") {
    return make_callable("range", [](Interpreter&, CallArgs& a) -> Value {
      if (!a.kwargs.empty() || a.args.empty() || a.args.size() > 3) {
        type_error("range expected 1 to 3 integer arguments");
      }
      int64_t start = 0, stop, step = 1;
      if (a.args.size() == 1) {
        stop = to_index(a.args[0], "range");
      } else {
        start = to_index(a.args[0], "range");
        stop = to_index(a.args[1], "range");
        if (a.args.size() == 3) step = to_index(a.args[2], "range");
      }
      if (step == 0) type_error("range() arg 3 must not be zero");
      ValueList out;
      for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
        if (out.size() >= 100000) {
          type_error("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        }
        out.push_back(Value::integer(k));
        if ((step > 0 && k > INT64_MAX - step) || (step < 0 && k < INT64_MIN - step)) break;
      }
      Value r = Value::make_list(std::move(out));
      r.view = Value::View::Range;
      return r;
    });
  }
  if (name == "namespace" || name == "dict") {
    const bool ns = name == "namespace";
    return make_callable(std::string(name), [ns](Interpreter& in, CallArgs& a) -> Value {
      Dict d;
      if (a.args.size() > 1) type_error("expected at most 1 argument");
      if (!a.args.empty()) {
        const Value& src = a.args[0];
        if (src.kind == Kind::Dict) {
          d = *src.dict;
        } else {
          for (const auto& item : iterate(src)) {
            const ValueList kv = iterate(item);
            if (kv.size() != 2) type_error("dictionary update sequence element has wrong length");
            if (!is_hashable(kv[0])) type_error("unhashable type: '" + type_name(kv[0]) + "'");
            d.set(kv[0], kv[1]);
          }
        }
      }
      for (const auto& [k, v] : a.kwargs) d.set(Value::string(k), v);
      if (!ns) return Value::make_dict(std::move(d));
      for (const auto& [k, v] : d.items) {
        if (k.is_string() && !k.s->empty() && (*k.s)[0] == '_') {
          type_error(
              "Chat templates cannot store underscore-prefixed attributes on a namespace, "
              "but got '" +
              *k.s + "'. Please rename the attribute.");
        }
      }
      auto obj = std::make_shared<NamespaceObj>();
      obj->attrs = std::move(d);
      in.adopt(obj);
      Value v;
      v.kind = Kind::Namespace;
      v.obj = std::move(obj);
      return v;
    });
  }
  if (name == "lipsum" || name == "cycler" || name == "joiner") {
    const std::string n(name);
    return make_callable(n, [n](Interpreter&, CallArgs&) -> Value {
      unsupported("the global '" + n + "' is outside the supported Jinja subset");
    });
  }
  return Value::undefined();
}

}  // namespace sf::chat::jinja
