#include "chat/jinja_value.hpp"

#include <algorithm>

#include "chat/pystr.hpp"

namespace sf::chat::jinja {

Value Value::undefined(std::string hint) {
  Value v;
  if (!hint.empty()) v.s = std::make_shared<const std::string>(std::move(hint));
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::boolean(bool b) {
  Value v;
  v.kind = Kind::Bool;
  v.b = b;
  v.i = b;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.kind = Kind::Int;
  v.i = x;
  return v;
}
Value Value::number(double x) {
  Value v;
  v.kind = Kind::Float;
  v.f = x;
  return v;
}
Value Value::string(std::string x, bool markup) {
  Value v;
  v.kind = Kind::String;
  v.markup = markup;
  v.s = std::make_shared<const std::string>(std::move(x));
  return v;
}
Value Value::make_list(ValueList items, bool tuple) {
  Value v;
  v.kind = Kind::List;
  v.tuple = tuple;
  v.list = std::make_shared<const ValueList>(std::move(items));
  return v;
}
Value Value::make_dict(Dict d) {
  Value v;
  v.kind = Kind::Dict;
  v.dict = std::make_shared<const Dict>(std::move(d));
  return v;
}

const Value* Dict::find(const Value& key) const {
  for (const auto& [k, v] : items) {
    if (equals(k, key)) return &v;
  }
  return nullptr;
}

void Dict::set(Value key, Value value) {
  for (auto& [k, v] : items) {
    if (equals(k, key)) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(value));
}

void type_error(std::string message) {
  throw JinjaError{Status::InvalidArgument, std::move(message)};
}
void unsupported(std::string message) {
  throw JinjaError{Status::UnsupportedShape, std::move(message)};
}
void undefined_error(const Value& v) {
  throw JinjaError{Status::InvalidArgument, v.s ? *v.s : std::string("a value is undefined")};
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "Undefined";
    case Kind::None:
      return "NoneType";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::String:
      return v.markup ? "Markup" : "str";
    case Kind::List:
      switch (v.view) {
        case Value::View::DictItems:
          return "dict_items";
        case Value::View::DictKeys:
          return "dict_keys";
        case Value::View::DictValues:
          return "dict_values";
        case Value::View::Range:
          return "range";
        case Value::View::None:
          break;
      }
      return v.tuple ? "tuple" : "list";
    case Kind::Dict:
      return "dict";
    case Kind::Namespace:
      return "Namespace";
    case Kind::Loop:
      return "LoopContext";
    case Kind::Iterator:
      return "generator";
    case Kind::Callable:
      return "function";
  }
  return "object";
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
      return v.b;
    case Kind::Int:
      return v.i != 0;
    case Kind::Float:
      return v.f != 0;
    case Kind::String:
      return !v.s->empty();
    case Kind::List:
      return !v.list->empty();
    case Kind::Dict:
      return !v.dict->items.empty();
    case Kind::Loop:
      return static_cast<const LoopObj&>(*v.obj).length > 0;
    default:
      return true;
  }
}

namespace {

bool is_intlike(const Value& v) {
  return v.kind == Kind::Bool || v.kind == Kind::Int;
}
long double as_ld(const Value& v) {
  return v.kind == Kind::Float ? static_cast<long double>(v.f) : static_cast<long double>(v.i);
}

}  // namespace

bool equals(const Value& a, const Value& b) {
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.is_number() && b.is_number()) {
    if (is_intlike(a) && is_intlike(b)) return a.i == b.i;
    return as_ld(a) == as_ld(b);
  }
  if (a.kind != b.kind) return false;
  if (a.view != Value::View::None || b.view != Value::View::None) {
    unsupported("comparing a " + type_name(a) + " with a " + type_name(b) +
                " (Python compares these unlike lists); add |list first");
  }
  switch (a.kind) {
    case Kind::None:
      return true;
    case Kind::String:
      return *a.s == *b.s;
    case Kind::List: {
      if (a.tuple != b.tuple || a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!equals((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    }
    case Kind::Dict: {
      if (a.dict->items.size() != b.dict->items.size()) return false;
      for (const auto& [k, v] : a.dict->items) {
        const Value* other = b.dict->find(k);
        if (!other || !equals(v, *other)) return false;
      }
      return true;
    }
    default:
      return a.obj == b.obj;
  }
}

bool less(const Value& a, const Value& b) {
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  if (a.is_number() && b.is_number()) {
    if (is_intlike(a) && is_intlike(b)) return a.i < b.i;
    return as_ld(a) < as_ld(b);
  }
  if (a.is_string() && b.is_string()) return *a.s < *b.s;  // UTF-8 order is code point order
  for (const Value* v : {&a, &b}) {
    if (v->kind == Kind::List && v->view == Value::View::Range) break;  // unorderable: below
    if (v->kind == Kind::List && v->view != Value::View::None) {
      unsupported("ordering a " + type_name(*v) + " (Python compares these as sets)");
    }
  }
  if (a.kind == Kind::List && b.kind == Kind::List && a.tuple == b.tuple &&
      a.view == Value::View::None && b.view == Value::View::None) {
    const auto& x = *a.list;
    const auto& y = *b.list;
    for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
      if (!equals(x[k], y[k])) return less(x[k], y[k]);
    }
    return x.size() < y.size();
  }
  type_error("'<' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) +
             "'");
}

bool is_hashable(const Value& v) {
  if (v.kind == Kind::Dict) return false;
  if (v.kind == Kind::List) {
    // range and dict_values hash by identity; list, dict_keys and dict_items not at all.
    if (v.view == Value::View::Range || v.view == Value::View::DictValues) return true;
    if (!v.tuple) return false;
    return std::all_of(v.list->begin(), v.list->end(), is_hashable);
  }
  return true;
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "";
    case Kind::None:
      return "None";
    case Kind::Bool:
      return v.b ? "True" : "False";
    case Kind::Int:
      return std::to_string(v.i);
    case Kind::Float:
      return py::float_repr(v.f);
    case Kind::String:
      return *v.s;
    case Kind::List:
    case Kind::Dict:
      return to_repr(v);
    case Kind::Namespace:
      return "<Namespace " + to_repr(Value::make_dict(static_cast<NamespaceObj&>(*v.obj).attrs)) +
             ">";
    case Kind::Loop: {
      const auto& l = static_cast<const LoopObj&>(*v.obj);
      return "<LoopContext " + std::to_string(l.index0 + 1) + "/" + std::to_string(l.length) + ">";
    }
    case Kind::Iterator:
      unsupported("printing a generator (Python shows its memory address); add |list first");
    case Kind::Callable:
      unsupported("printing the function '" + static_cast<CallableObj&>(*v.obj).name +
                  "' (Python shows its memory address); call it instead");
  }
  return "";
}

std::string to_repr(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "Undefined";
    case Kind::String:
      return v.markup ? "Markup(" + py::repr(*v.s) + ")" : py::repr(*v.s);
    case Kind::List: {
      if (v.view != Value::View::None) {
        unsupported("printing a " + type_name(v) +
                    " (Python prints it unlike a list); add |list first");
      }
      std::string out = v.tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += ", ";
        out += to_repr((*v.list)[k]);
      }
      if (v.tuple && v.list->size() == 1) out += ",";
      return out + (v.tuple ? ")" : "]");
    }
    case Kind::Dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& [k, x] : v.dict->items) {
        if (!first) out += ", ";
        first = false;
        out += to_repr(k) + ": " + to_repr(x);
      }
      return out + "}";
    }
    default:
      return to_str(v);
  }
}

namespace {

std::string json_key(const Value& k) {
  switch (k.kind) {
    case Kind::String:
      return *k.s;
    case Kind::Int:
      return std::to_string(k.i);
    case Kind::Bool:
      return k.b ? "true" : "false";
    case Kind::None:
      return "null";
    case Kind::Float: {
      if (k.f != k.f) return "NaN";
      if (k.f == 1.0 / 0.0) return "Infinity";
      if (k.f == -1.0 / 0.0) return "-Infinity";
      return py::float_repr(k.f);
    }
    default:
      type_error("keys must be str, int, float, bool or None, not " + type_name(k));
  }
}

void json_rec(const Value& v, const JsonOptions& opt, int depth, std::string& out) {
  if (depth > 256) unsupported("tojson of a value nested more than 256 levels deep");
  auto newline = [&](int level) {
    if (!opt.has_indent) return;
    out += '\n';
    for (int k = 0; k < level; ++k) out += opt.indent;
  };
  switch (v.kind) {
    case Kind::None:
      out += "null";
      return;
    case Kind::Bool:
      out += v.b ? "true" : "false";
      return;
    case Kind::Int:
      out += std::to_string(v.i);
      return;
    case Kind::Float:
      if (v.f != v.f) {
        out += "NaN";
      } else if (v.f == 1.0 / 0.0) {
        out += "Infinity";
      } else if (v.f == -1.0 / 0.0) {
        out += "-Infinity";
      } else {
        out += py::float_repr(v.f);
      }
      return;
    case Kind::String:
      out += py::json_quote(*v.s, opt.ensure_ascii);
      return;
    case Kind::List: {
      if (v.view != Value::View::None) {
        type_error("Object of type " + type_name(v) + " is not JSON serializable");
      }
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += opt.item_sep;
        newline(depth + 1);
        json_rec((*v.list)[k], opt, depth + 1, out);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Kind::Dict: {
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<Value, Value>*> items;
      for (const auto& kv : v.dict->items) items.push_back(&kv);
      if (opt.sort_keys) {
        std::stable_sort(items.begin(), items.end(),
                         [](const auto* a, const auto* b) { return less(a->first, b->first); });
      }
      out += '{';
      bool first = true;
      for (const auto* kv : items) {
        if (!first) out += opt.item_sep;
        first = false;
        newline(depth + 1);
        out += py::json_quote(json_key(kv->first), opt.ensure_ascii);
        out += opt.key_sep;
        json_rec(kv->second, opt, depth + 1, out);
      }
      newline(depth);
      out += '}';
      return;
    }
    default:
      type_error("Object of type " + type_name(v) + " is not JSON serializable");
  }
}

}  // namespace

std::string to_json(const Value& v, const JsonOptions& opt) {
  std::string out;
  json_rec(v, opt, 0, out);
  return out;
}

ValueList iterate(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return {};
    case Kind::List:
      return *v.list;
    case Kind::Dict: {
      ValueList keys;
      for (const auto& kv : v.dict->items) keys.push_back(kv.first);
      return keys;
    }
    case Kind::String: {
      ValueList chars;
      const auto off = py::cp_offsets(*v.s);
      for (size_t k = 0; k + 1 < off.size(); ++k) {
        // Iterating a markupsafe.Markup yields plain str characters.
        chars.push_back(Value::string(v.s->substr(off[k], off[k + 1] - off[k])));
      }
      return chars;
    }
    case Kind::Iterator: {
      auto& it = static_cast<IteratorObj&>(*v.obj);
      ValueList rest(it.items.begin() + static_cast<std::ptrdiff_t>(it.pos), it.items.end());
      it.pos = it.items.size();
      return rest;
    }
    default:
      type_error("'" + type_name(v) + "' object is not iterable");
  }
}

int64_t py_len(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return 0;
    case Kind::String:
      return static_cast<int64_t>(py::length(*v.s));
    case Kind::List:
      return static_cast<int64_t>(v.list->size());
    case Kind::Dict:
      return static_cast<int64_t>(v.dict->items.size());
    case Kind::Loop:
      return static_cast<const LoopObj&>(*v.obj).length;
    default:
      type_error("object of type '" + type_name(v) + "' has no len()");
  }
}

std::string escape_html(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace sf::chat::jinja
