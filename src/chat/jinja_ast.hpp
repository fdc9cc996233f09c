// The parsed form of a template: one node type for expressions and statements alike, with the
// fields each kind uses named below.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_value.hpp"

namespace sf::chat::jinja {

enum class NodeKind : uint8_t {
  // Expressions
  Const,     // value
  Name,      // name
  NSRef,     // name.attr as an assignment target: name, attr
  Getattr,   // a.attr
  Getitem,   // a[b]
  Slice,     // a:b:c inside [], each may be null
  Call,      // a(args, kwargs)
  Filter,    // a|name(args, kwargs); a is null for the body of {% filter %} / {% set %}
  Test,      // a is name(args, kwargs)
  Unary,     // op a: "-", "+", "not"
  Binary,    // a op b: + - * / // % ** and or
  Concat,    // args joined with ~
  Compare,   // a ops[0] args[0] ops[1] args[1] ...
  CondExpr,  // b if a else c (c may be null)
  List,      // [args]
  Tuple,     // (args)
  Dict,      // {args[0]: args[1], ...}
  // Statements
  Text,         // attr holds template data
  Output,       // {{ a }}
  If,           // branches (test, body)..., else_body
  For,          // for a in b [if c]: body else else_body
  Set,          // set a = b
  SetBlock,     // set a [| b]: body endset
  Macro,        // macro name(params=defaults): body
  CallBlock,    // call(params) a: body endcall
  FilterBlock,  // filter b: body endfilter
  With,         // with params=defaults: body
  Break,
  Continue,
  Generation,  // transformers' {% generation %}: body rendered as is
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

struct Node {
  NodeKind kind;
  int line = 0, col = 0;
  std::string name, attr, op;
  Value value;
  NodePtr a, b, c;
  NodeList args;
  std::vector<std::pair<std::string, NodePtr>> kwargs;
  std::vector<std::string> ops;
  NodeList body, else_body;
  std::vector<std::pair<NodePtr, NodeList>> branches;
  std::vector<std::string> params;
  NodeList defaults;  // one per trailing parameter with a default
};

struct Template {
  NodeList body;
};

// Parses lexed tokens; throws sf::Error (Format for Jinja2 syntax errors, UnsupportedShape for
// constructs outside the supported subset), naming line and column.
Template parse(std::vector<struct Token> tokens);

}  // namespace sf::chat::jinja
