#include "chat/chat_template.hpp"

#include <nlohmann/json.hpp>

#include "chat/jinja_ast.hpp"
#include "chat/jinja_eval.hpp"
#include "chat/jinja_lexer.hpp"
#include "chat/pystr.hpp"
#include "core/error.hpp"

namespace sf::chat {

using jinja::Value;

struct ChatTemplate::Impl {
  jinja::Template tpl;
};

namespace {

Value from_json(const nlohmann::ordered_json& j, int depth) {
  if (depth > 256)
    sf::fail(Status::UnsupportedShape, "chat template input nested more than 256 levels deep");
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return Value::none();
    case nlohmann::ordered_json::value_t::boolean:
      return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const uint64_t u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) {
        sf::fail(Status::UnsupportedShape, "chat template input integer {} does not fit in 64 bits",
                 u);
      }
      return Value::integer(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value::number(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value::string(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      jinja::ValueList items;
      for (const auto& e : j) items.push_back(from_json(e, depth + 1));
      return Value::make_list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      jinja::Dict d;
      for (const auto& [k, v] : j.items()) d.set(Value::string(k), from_json(v, depth + 1));
      return Value::make_dict(std::move(d));
    }
    default:
      sf::fail(Status::InvalidArgument,
               "chat template input holds a JSON value of an unknown type");
  }
}

nlohmann::ordered_json parse_json(const std::string& text, const char* what) {
  try {
    return nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    sf::fail(Status::InvalidArgument,
             "ChatContext::{} is not valid JSON ({}); pass a JSON {} or leave it empty", what,
             e.what(), std::string_view(what) == "tools_json" ? "array" : "object");
  }
}

}  // namespace

ChatTemplate ChatTemplate::parse(std::string_view source) {
  if (!py::is_valid_utf8(source)) {
    sf::fail(Status::Format,
             "chat template is not valid UTF-8; expected the template text from "
             "tokenizer_config.json or the GGUF's tokenizer.chat_template");
  }
  auto impl = std::make_shared<Impl>();
  impl->tpl = jinja::parse(jinja::lex(jinja::normalize_source(source)));
  return ChatTemplate(std::move(impl));
}

std::string ChatTemplate::render(std::span<const ChatMessage> messages, bool add_generation_prompt,
                                 const ChatContext& ctx) const {
  std::unordered_map<std::string, Value> vars;
  auto put_token = [&](const std::string& name, const std::string& value) {
    if (!py::is_valid_utf8(value)) {
      sf::fail(Status::InvalidArgument, "chat template variable '{}' is not valid UTF-8", name);
    }
    if (!value.empty()) vars[name] = Value::string(value);
  };
  for (const auto& [name, value] : ctx.special_tokens) put_token(name, value);
  put_token("bos_token", ctx.bos_token);
  put_token("eos_token", ctx.eos_token);
  if (!ctx.extra_json.empty()) {
    const auto j = parse_json(ctx.extra_json, "extra_json");
    if (!j.is_object())
      sf::fail(Status::InvalidArgument, "ChatContext::extra_json must be a JSON object");
    for (const auto& [k, v] : j.items()) {
      if (k == "messages" || k == "tools" || k == "documents" || k == "add_generation_prompt") {
        sf::fail(Status::InvalidArgument,
                 "ChatContext::extra_json sets '{}', which render() passes itself; use its own "
                 "argument instead",
                 k);
      }
      vars[k] = from_json(v, 0);
    }
  }
  jinja::ValueList msgs;
  for (size_t k = 0; k < messages.size(); ++k) {
    const auto& m = messages[k];
    if (!py::is_valid_utf8(m.role) || !py::is_valid_utf8(m.content)) {
      sf::fail(Status::InvalidArgument, "chat message {} is not valid UTF-8", k);
    }
    jinja::Dict d;
    d.set(Value::string("role"), Value::string(m.role));
    d.set(Value::string("content"), Value::string(m.content));
    msgs.push_back(Value::make_dict(std::move(d)));
  }
  vars["messages"] = Value::make_list(std::move(msgs));
  vars["add_generation_prompt"] = Value::boolean(add_generation_prompt);
  vars["documents"] = Value::none();
  if (ctx.tools_json.empty()) {
    vars["tools"] = Value::none();
  } else {
    const auto j = parse_json(ctx.tools_json, "tools_json");
    if (!j.is_array())
      sf::fail(Status::InvalidArgument, "ChatContext::tools_json must be a JSON array");
    vars["tools"] = from_json(j, 0);
  }
  jinja::Limits limits;
  limits.max_steps = ctx.max_steps;
  limits.max_output = ctx.max_string_bytes;
  jinja::Interpreter in(impl_->tpl, limits);
  try {
    return in.render(vars);
  } catch (const jinja::JinjaError& e) {
    if (e.from_template) throw Error(e.status, e.message);
    throw Error(e.status,
                fmt::format("chat template line {}, column {}: {}", e.line, e.col, e.message));
  }
}

}  // namespace sf::chat
