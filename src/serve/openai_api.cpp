#include "serve/openai_api.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <random>

#include "core/error.hpp"
#include "session/session.hpp"

namespace sf::serve {

using nlohmann::json;
using nlohmann::ordered_json;

namespace {

std::string_view error_type(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

[[noreturn]] void bad(std::string_view param, std::string message) {
  throw ApiError(400, std::move(message), std::string(param));
}

const char* type_name(const json& v) {
  return v.type_name();
}

bool present(const json& body, const char* key) {
  const auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

double number(const json& body, const char* key, double fallback, double lo, double hi) {
  if (!present(body, key)) return fallback;
  const json& v = body[key];
  if (!v.is_number()) bad(key, fmt::format("'{}' must be a number, got {}.", key, type_name(v)));
  const double d = v.get<double>();
  if (!(d >= lo && d <= hi))
    bad(key, fmt::format("'{}' must be in [{}, {}], got {}.", key, lo, hi, d));
  return d;
}

std::optional<int64_t> integer(const json& body, const char* key, int64_t lo, int64_t hi) {
  if (!present(body, key)) return std::nullopt;
  const json& v = body[key];
  if (!v.is_number_integer())
    bad(key, fmt::format("'{}' must be an integer, got {}.", key, type_name(v)));
  const int64_t i = v.get<int64_t>();
  if (i < lo || i > hi) bad(key, fmt::format("'{}' must be in [{}, {}], got {}.", key, lo, hi, i));
  return i;
}

bool boolean(const json& body, const char* key) {
  if (!present(body, key)) return false;
  if (!body[key].is_boolean())
    bad(key, fmt::format("'{}' must be true or false, got {}.", key, type_name(body[key])));
  return body[key].get<bool>();
}

// A parameter this server does not implement is refused unless it has its no-op value.
void refuse_unless(const json& body, const char* key, const json& neutral, std::string_view why) {
  if (present(body, key) && body[key] != neutral)
    bad(key, fmt::format("'{}' is not supported by this server ({}).", key, why));
}

std::vector<int32_t> token_ids(const json& a, const char* param, int64_t vocab) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].is_number_integer())
      bad(param,
          fmt::format("'{}' token {} must be an integer id, got {}.", param, i, type_name(a[i])));
    const int64_t id = a[i].get<int64_t>();
    if (id < 0 || id >= vocab)
      bad(param,
          fmt::format("'{}' token {} is {}, outside the vocabulary [0, {}).", param, i, id, vocab));
    ids.push_back(int32_t(id));
  }
  return ids;
}

// What every generation request shares: limits, sampling, stop strings, streaming.
void parse_common(const json& body, ApiRequest& r, const char* max_key) {
  if (present(body, "model") && !body["model"].is_string())
    bad("model", "'model' must be a string.");
  if (auto n = integer(body, "n", 0, std::numeric_limits<int32_t>::max()); n && *n != 1)
    bad("n", fmt::format("'n' must be 1 (one choice per request), got {}.", *n));
  refuse_unless(body, "best_of", 1, "one completion per request");
  refuse_unless(body, "presence_penalty", 0, "no repetition penalties");
  refuse_unless(body, "frequency_penalty", 0, "no repetition penalties");
  refuse_unless(body, "repetition_penalty", 1, "no repetition penalties");
  refuse_unless(body, "logit_bias", json::object(), "no logit bias");
  auto& sp = r.spec;
  if (auto m = integer(body, max_key, 1, std::numeric_limits<int32_t>::max())) sp.max_tokens = *m;
  const double t = number(body, "temperature", 1.0, 0.0, 2.0);
  sp.sampling.greedy = t == 0.0;
  sp.sampling.temperature = sp.sampling.greedy ? 1.0f : float(t);
  sp.sampling.top_p = float(number(body, "top_p", 1.0, 0.0, 1.0));
  if (sp.sampling.top_p <= 0.0f) bad("top_p", "'top_p' must be greater than 0.");
  const int64_t k = integer(body, "top_k", -1, std::numeric_limits<int32_t>::max()).value_or(0);
  sp.sampling.top_k = k < 0 ? 0 : k;  // -1, as vLLM spells "every token"
  if (auto seed = integer(body, "seed", std::numeric_limits<int64_t>::min(),
                          std::numeric_limits<int64_t>::max()))
    sp.sampling.seed = uint64_t(*seed);
  else
    sp.sampling.seed = std::random_device{}() * 0x9E3779B97F4A7C15ull ^ std::random_device{}();
  if (present(body, "stop")) {
    const json& s = body["stop"];
    if (s.is_string()) {
      sp.stop = {s.get<std::string>()};
    } else if (s.is_array()) {
      if (s.size() > 4)
        bad("stop", fmt::format("'stop' takes at most 4 strings, got {}.", s.size()));
      for (const auto& e : s) {
        if (!e.is_string()) bad("stop", "'stop' must be a string or an array of strings.");
        sp.stop.push_back(e.get<std::string>());
      }
    } else {
      bad("stop", "'stop' must be a string or an array of strings.");
    }
  }
  r.stream = boolean(body, "stream");
  if (present(body, "stream_options")) {
    const json& so = body["stream_options"];
    if (!so.is_object()) bad("stream_options", "'stream_options' must be an object.");
    if (!r.stream) bad("stream_options", "'stream_options' needs 'stream': true.");
    r.include_usage = boolean(so, "include_usage");
  }
}

void expect_object(const json& body) {
  if (!body.is_object())
    bad("", fmt::format("the request body must be a JSON object, got {}.", type_name(body)));
}

}  // namespace

ApiError::ApiError(int status, std::string message, std::string param, std::string code)
    : std::runtime_error(std::move(message)),
      status_(status),
      param_(std::move(param)),
      code_(std::move(code)) {}

ordered_json error_body(int status, std::string_view message, std::string_view param,
                        std::string_view code) {
  ordered_json e = {{"message", message},
                    {"type", error_type(status)},
                    {"param", param.empty() ? ordered_json() : ordered_json(param)},
                    {"code", code.empty() ? ordered_json() : ordered_json(code)}};
  return {{"error", std::move(e)}};
}

ApiRequest parse_completion_request(const json& body, const session::Session& s) {
  expect_object(body);
  ApiRequest r;
  r.endpoint = Endpoint::Completions;
  r.spec.endpoint = "completions";
  r.spec.max_tokens = 16;  // OpenAI's default for completions
  parse_common(body, r, "max_tokens");
  refuse_unless(body, "echo", false, "the prompt is not echoed");
  refuse_unless(body, "suffix", json(), "no insertion");
  if (auto lp = integer(body, "logprobs", 0, 5)) r.spec.logprobs = int(*lp);
  if (!present(body, "prompt")) bad("prompt", "'prompt' is required.");
  const json& p = body["prompt"];
  const int64_t V = s.model().config().vocab_size;
  auto one = [&](const json& x) -> std::vector<int32_t> {
    if (x.is_string()) {
      if (!s.has_tokenizer())
        bad("prompt", "this model has no tokenizer: give the prompt as token ids.");
      return s.tokenize(x.get<std::string>(), /*add_bos=*/true);
    }
    if (x.is_array() && (x.empty() || x[0].is_number())) return token_ids(x, "prompt", V);
    bad("prompt", "'prompt' must be a string, an array of token ids, or an array of one of them.");
  };
  if (p.is_array() && !p.empty() && (p[0].is_string() || p[0].is_array())) {
    if (p.size() != 1)
      bad("prompt", fmt::format("one prompt per request, got {}: send them as separate requests "
                                "(they are batched together anyway).",
                                p.size()));
    r.spec.prompt = one(p[0]);
  } else {
    r.spec.prompt = one(p);
  }
  if (r.spec.prompt.empty()) bad("prompt", "the prompt is empty.");
  return r;
}

ApiRequest parse_chat_request(const json& body, const session::Session& s) {
  expect_object(body);
  ApiRequest r;
  r.endpoint = Endpoint::Chat;
  r.spec.endpoint = "chat";
  parse_common(body, r,
               present(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens");
  if (present(body, "tools") && !body["tools"].empty())
    bad("tools", "'tools' is not supported by this server (no tool calling).");
  if (boolean(body, "logprobs"))
    r.spec.logprobs = int(integer(body, "top_logprobs", 0, 20).value_or(0));
  else if (present(body, "top_logprobs"))
    bad("top_logprobs", "'top_logprobs' needs 'logprobs': true.");
  if (!present(body, "messages") || !body["messages"].is_array() || body["messages"].empty())
    bad("messages", "'messages' must be a non-empty array of {role, content}.");
  std::vector<chat::ChatMessage> msgs;
  for (size_t i = 0; i < body["messages"].size(); ++i) {
    const json& m = body["messages"][i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      bad(where, fmt::format("'{}' must be an object with a string 'role'.", where));
    chat::ChatMessage cm{m["role"].get<std::string>(), {}};
    const json c = m.value("content", json());
    if (c.is_string()) {
      cm.content = c.get<std::string>();
    } else if (c.is_array()) {  // content parts: text only
      for (const auto& part : c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
          bad(where, fmt::format("'{}.content' parts must be {{\"type\": \"text\", \"text\": "
                                 "...}}: this model reads text only.",
                                 where));
        cm.content += part["text"].get<std::string>();
      }
    } else if (!c.is_null()) {
      bad(where, fmt::format("'{}.content' must be a string or an array of text parts.", where));
    }
    msgs.push_back(std::move(cm));
  }
  if (!s.has_chat_template())
    throw ApiError(400,
                   "this model has no chat template (it is probably a base model): use "
                   "/v1/completions with a plain prompt.",
                   "messages", "no_chat_template");
  try {
    r.spec.prompt = s.chat_ids(msgs);
  } catch (const Error& e) {  // the template's own raise_exception, an unsupported construct
    bad("messages",
        fmt::format("the model's chat template cannot render these messages: {}", e.what()));
  }
  return r;
}

ApiError refusal(const Submitted& s) {
  switch (s.outcome) {
    case Admission::QueueFull:
      return ApiError(429, s.message, {}, "queue_full");
    case Admission::Draining:
      return ApiError(503, s.message, {}, "draining");
    case Admission::TooLong:
      return ApiError(400, s.message, "max_tokens", "context_length_exceeded");
    default:
      return ApiError(400, s.message);
  }
}

ResponseBuilder::ResponseBuilder(Endpoint e, std::string id, std::string model,
                                 const session::Session& s)
    : endpoint_(e),
      id_(std::move(id)),
      model_(std::move(model)),
      created_(std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count()),
      session_(s) {}

ordered_json ResponseBuilder::envelope(bool streaming) const {
  const char* object = endpoint_ == Endpoint::Chat
                           ? (streaming ? "chat.completion.chunk" : "chat.completion")
                           : "text_completion";
  return {{"id", id_}, {"object", object}, {"created", created_}, {"model", model_}};
}

ordered_json ResponseBuilder::usage(const Event& done) {
  return {{"prompt_tokens", done.prompt_tokens},
          {"completion_tokens", done.completion_tokens},
          {"total_tokens", done.prompt_tokens + done.completion_tokens}};
}

// Completions: {tokens, token_logprobs, top_logprobs, text_offset}; chat: {content: [{token,
// logprob, bytes, top_logprobs}]}. A token's string is its own decoded text.
ordered_json ResponseBuilder::logprobs_json(const Event& e) {
  auto text_of = [&](int32_t id) {
    const int32_t one[] = {id};
    return session_.has_tokenizer() ? session_.detokenize(one) : std::string();
  };
  auto bytes_of = [&](int32_t id) {
    std::vector<int> b;
    if (session_.has_tokenizer())
      for (const unsigned char c : session_.token_bytes(id)) b.push_back(c);
    return b;
  };
  if (endpoint_ == Endpoint::Chat) {
    ordered_json content = ordered_json::array();
    for (const auto& lp : e.logprobs) {
      ordered_json top = ordered_json::array();
      for (const auto& [id, l] : lp.top)
        top.push_back({{"token", text_of(id)}, {"logprob", l}, {"bytes", bytes_of(id)}});
      content.push_back({{"token", text_of(lp.id)},
                         {"logprob", lp.logprob},
                         {"bytes", bytes_of(lp.id)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}};
  }
  ordered_json tokens = ordered_json::array(), lps = ordered_json::array(),
               tops = ordered_json::array(), offsets = ordered_json::array();
  for (const auto& lp : e.logprobs) {
    const std::string t = text_of(lp.id);
    tokens.push_back(t);
    lps.push_back(lp.logprob);
    ordered_json top = ordered_json::object();
    for (const auto& [id, l] : lp.top) top[text_of(id)] = l;
    tops.push_back(std::move(top));
    offsets.push_back(text_offset_);
    text_offset_ += int64_t(t.size());
  }
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(lps)},
          {"top_logprobs", std::move(tops)},
          {"text_offset", std::move(offsets)}};
}

void ResponseBuilder::add(const Event& e) {
  text_ += e.text;
  if (e.logprobs.empty()) return;
  ordered_json part = logprobs_json(e);
  if (logprobs_.is_null()) {
    logprobs_ = std::move(part);
    return;
  }
  for (auto& [key, arr] : part.items())
    for (auto& v : arr) logprobs_[key].push_back(std::move(v));
}

ordered_json ResponseBuilder::response(const Event& done) const {
  ordered_json r = envelope(false);
  ordered_json choice = {{"index", 0}};
  if (endpoint_ == Endpoint::Chat)
    choice["message"] = {{"role", "assistant"}, {"content", text_}};
  else
    choice["text"] = text_;
  choice["logprobs"] = logprobs_;
  choice["finish_reason"] = finish_name(done.finish);
  r["choices"] = ordered_json::array({std::move(choice)});
  r["usage"] = usage(done);
  return r;
}

ordered_json ResponseBuilder::role_chunk() const {
  ordered_json r = envelope(true);
  r["choices"] = ordered_json::array({{{"index", 0},
                                       {"delta", {{"role", "assistant"}, {"content", ""}}},
                                       {"logprobs", nullptr},
                                       {"finish_reason", nullptr}}});
  return r;
}

ordered_json ResponseBuilder::chunk(const Event& e) {
  ordered_json r = envelope(true);
  ordered_json choice = {{"index", 0}};
  if (endpoint_ == Endpoint::Chat)
    choice["delta"] = {{"content", e.text}};
  else
    choice["text"] = e.text;
  choice["logprobs"] = e.logprobs.empty() ? ordered_json() : logprobs_json(e);
  choice["finish_reason"] = nullptr;
  r["choices"] = ordered_json::array({std::move(choice)});
  return r;
}

ordered_json ResponseBuilder::final_chunk(const Event& done) const {
  ordered_json r = envelope(true);
  ordered_json choice = {{"index", 0}};
  if (endpoint_ == Endpoint::Chat)
    choice["delta"] = ordered_json::object();
  else
    choice["text"] = "";
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish_name(done.finish);
  r["choices"] = ordered_json::array({std::move(choice)});
  return r;
}

ordered_json ResponseBuilder::usage_chunk(const Event& done) const {
  ordered_json r = envelope(true);
  r["choices"] = ordered_json::array();
  r["usage"] = usage(done);
  return r;
}

}  // namespace sf::serve
