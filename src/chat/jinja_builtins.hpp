// Jinja2's filters, tests, globals and the Python methods templates call (str.strip, dict.get,
// ...), implemented with the semantics of Jinja2 3.1 on CPython.
#pragma once
#include <string>
#include <string_view>

#include "chat/jinja_value.hpp"

namespace sf::chat::jinja {

// Names this interpreter implements, and names Jinja2 itself knows (implemented or not): a name
// in neither fails to compile in Jinja2 too.
bool has_filter(std::string_view name);
bool jinja_knows_filter(std::string_view name);
bool has_test(std::string_view name);
bool jinja_knows_test(std::string_view name);

Value apply_filter(Interpreter& in, std::string_view name, Value input, CallArgs& args);
bool apply_test(Interpreter& in, std::string_view name, const Value& input, CallArgs& args);

// obj.attr / obj[key] through jinja2.sandbox.ImmutableSandboxedEnvironment's getattr/getitem:
// methods of str, dict and list come back as bound callables, mutating ones as unsafe values.
Value get_attr(Interpreter& in, const Value& obj, const std::string& attr);
Value get_item(Interpreter& in, const Value& obj, const Value& key);
// obj[start:stop:step]; null arguments are omitted.
Value get_slice(const Value& obj, const Value* start, const Value* stop, const Value* step);

// The globals transformers' environment defines besides the template variables.
Value global_function(std::string_view name);

}  // namespace sf::chat::jinja
