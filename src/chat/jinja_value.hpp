// The values a chat template computes with, modelled on the Python objects Jinja2 hands around:
// None, bool, int, float, str (and markupsafe.Markup), list, tuple, dict, jinja2's Undefined,
// Namespace, loop, generators, and callables. Lists and dicts are shared and immutable (the
// sandbox transformers renders in forbids mutating them); only a namespace changes in place.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.hpp"

namespace sf::chat::jinja {

enum class Kind : uint8_t {
  Undefined,
  None,
  Bool,
  Int,
  Float,
  String,
  List,  // list or tuple (Value::tuple)
  Dict,
  Namespace,
  Loop,
  Iterator,  // a one-shot generator (what selectattr, map, items yield)
  Callable,
};

struct Value;
using ValueList = std::vector<Value>;
struct Dict;
struct Object {
  virtual ~Object() = default;
};

struct Value {
  Kind kind = Kind::Undefined;
  bool tuple = false;   // Kind::List: a Python tuple
  bool markup = false;  // Kind::String: a markupsafe.Markup (from |safe)
  // Kind::List standing for a Python object that prints and compares unlike a list.
  enum class View : uint8_t { None, DictItems, DictKeys, DictValues, Range } view = View::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  // String text; for Undefined the message an operation on it raises (empty: generic).
  std::shared_ptr<const std::string> s;
  std::shared_ptr<const ValueList> list;
  std::shared_ptr<const Dict> dict;
  std::shared_ptr<Object> obj;  // Namespace, Loop, Iterator, Callable

  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value string(std::string v, bool markup = false);
  static Value make_list(ValueList items, bool tuple = false);
  static Value make_dict(Dict d);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  // Python's numbers.Number: bool, int and float.
  bool is_number() const { return kind == Kind::Bool || kind == Kind::Int || kind == Kind::Float; }
  const std::string& str() const { return *s; }
  const ValueList& items() const { return *list; }
};

struct Dict {
  std::vector<std::pair<Value, Value>> items;
  const Value* find(const Value& key) const;
  // Inserts or replaces, keeping first-insertion order as Python dicts do.
  void set(Value key, Value value);
};

struct NamespaceObj : Object {
  Dict attrs;
};

struct IteratorObj : Object {
  ValueList items;
  size_t pos = 0;
};

struct LoopObj : Object {
  int64_t index0 = 0, length = 0, depth0 = 0;
  Value prev, next;  // neighbours in the iterated sequence (Undefined at the ends)
};

class Interpreter;
struct CallArgs {
  ValueList args;
  std::vector<std::pair<std::string, Value>> kwargs;
};
struct CallableObj : Object {
  std::string name;
  std::function<Value(Interpreter&, CallArgs&)> fn;
};

// A failure while rendering. The interpreter adds the template position, except for
// raise_exception(), whose message is the template author's own and is passed on unchanged.
struct JinjaError {
  Status status;
  std::string message;
  bool from_template = false;
  int line = 0, col = 0;  // set by the innermost node that saw the error
};
[[noreturn]] void type_error(std::string message);
[[noreturn]] void unsupported(std::string message);
// Using an undefined value: jinja2.exceptions.UndefinedError with Jinja's message.
[[noreturn]] void undefined_error(const Value& v);

// Python type(x).__name__, used in messages exactly as Jinja prints them.
std::string type_name(const Value& v);
bool truthy(const Value& v);
// Python == (1 == 1.0 == True; list != tuple; dicts compare as mappings).
bool equals(const Value& a, const Value& b);
// Python <, raising TypeError for unorderable operands.
bool less(const Value& a, const Value& b);
bool is_hashable(const Value& v);
// str(x) and repr(x) as CPython prints them.
std::string to_str(const Value& v);
std::string to_repr(const Value& v);

struct JsonOptions {
  bool ensure_ascii = false;
  bool sort_keys = false;
  bool has_indent = false;
  std::string indent;
  std::string item_sep = ", ", key_sep = ": ";
};
// json.dumps(x, ...) as transformers' tojson filter calls it.
std::string to_json(const Value& v, const JsonOptions& opt);

// Python iteration: list/tuple items, dict keys, str characters, a generator's remaining items
// (consuming them), nothing for Undefined; TypeError otherwise.
ValueList iterate(const Value& v);
// len(x), TypeError when x has none.
int64_t py_len(const Value& v);
// Jinja2's Markup escaping of a string (& < > " '), for |escape and for joining markup with text.
std::string escape_html(std::string_view s);

}  // namespace sf::chat::jinja
