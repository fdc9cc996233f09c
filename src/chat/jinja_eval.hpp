// Renders a parsed template: Jinja2's scoping (a for-loop iteration and a macro call are scopes,
// an if is not; namespaces carry values out of loops), its Undefined, and the bounds that keep
// any template, however hostile, from running long, recursing deep or printing without end.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "chat/jinja_ast.hpp"
#include "chat/jinja_value.hpp"

namespace sf::chat::jinja {

struct Limits {
  int64_t max_steps = 20'000'000;  // expression and statement evaluations per render
  size_t max_output = 64u << 20;   // bytes of any one string, the output included
  int max_depth = 200;             // nested macro calls and expression evaluation
};

class Interpreter {
 public:
  Interpreter(const Template& tpl, Limits limits) : tpl_(tpl), limits_(limits) {}
  // Namespaces are the one mutable object, so the one way to build a reference cycle
  // ({% set ns.me = ns %}); every one made during a render is emptied when the render ends.
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  // Renders with `vars` as the template's context. Throws JinjaError.
  std::string render(const std::unordered_map<std::string, Value>& vars);

  // For the builtins: call a callable value; count work; bound a string about to be built.
  Value call(const Value& fn, CallArgs& args);
  void step();
  void check_size(size_t bytes) const;
  void adopt(std::shared_ptr<NamespaceObj> ns) { namespaces_.push_back(std::move(ns)); }

 private:
  struct Frame {
    std::unordered_map<std::string, Value> vars;
    std::shared_ptr<Frame> parent;
  };
  using FramePtr = std::shared_ptr<Frame>;
  enum class Flow { Normal, Break, Continue };

  const Template& tpl_;
  Limits limits_;
  int64_t steps_ = 0;
  int depth_ = 0;
  std::string* out_ = nullptr;
  FramePtr frame_;
  std::unordered_map<std::string, Value> context_;
  const std::string* block_text_ = nullptr;
  std::vector<std::shared_ptr<NamespaceObj>> namespaces_;

  Flow exec_list(const NodeList& body);
  Flow exec(const Node& n);
  void exec_for(const Node& n, Flow& flow);
  Value eval(const Node& n);
  Value eval_inner(const Node& n);
  Value lookup(const std::string& name) const;
  void assign(const Node& target, const Value& v, Frame& frame);
  std::string capture(const NodeList& body, FramePtr frame);
  Value make_macro(const Node& n, FramePtr frame, std::string name);
  Value binary(const std::string& op, const Value& a, const Value& b);
  bool compare(const std::string& op, const Value& a, const Value& b);
  void write(std::string_view s);
  // Evaluates a filter chain whose innermost input is the rendered body of a block.
  Value eval_filter(const Node& n, const std::string* body_text);
  CallArgs eval_args(const Node& n);
};

// `item in container` with Python's semantics.
bool contains(const Value& container, const Value& item);

}  // namespace sf::chat::jinja
