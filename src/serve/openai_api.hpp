// The OpenAI API's wire format, as far as `sparseflow serve` speaks it: request bodies of
// POST /v1/completions and /v1/chat/completions turned into scheduler requests, and the responses,
// stream chunks and errors built back in OpenAI's JSON shapes. No HTTP here (http_server.cpp
// carries the bytes), so every rule is testable on plain JSON.
//
// The subset (docs/SERVING.md): prompt (a string or token ids, one per request), messages (the
// model's chat template renders them), max_tokens (chat: also max_completion_tokens), temperature
// (0: greedy), top_p, top_k (an extension, as vLLM's), seed, stop (a string or up to 4), n = 1,
// stream and stream_options.include_usage, logprobs (completions: 0..5 alternatives; chat: logprobs
// + top_logprobs 0..20). Parameters that would change the output and are not implemented
// (penalties, logit_bias, echo, best_of > 1, suffix, tools) are refused with a 400 naming them
// rather than ignored; fields that do not change the output (user, metadata) are accepted.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "serve/scheduler.hpp"

namespace sf::session {
class Session;
}

namespace sf::serve {

// An error the client caused or must hear about, with its HTTP status and OpenAI's error fields.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string code = {});
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

 private:
  int status_;
  std::string param_, code_;
};

// {"error": {"message", "type", "param", "code"}}; the type follows from the status
// (invalid_request_error, authentication_error, not_found_error, rate_limit_error, server_error).
nlohmann::ordered_json error_body(int status, std::string_view message, std::string_view param = {},
                                  std::string_view code = {});

enum class Endpoint { Completions, Chat };

struct ApiRequest {
  Endpoint endpoint = Endpoint::Completions;
  RequestSpec spec;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
};

// Throw ApiError(400) naming the field that is malformed, out of range or not supported.
ApiRequest parse_completion_request(const nlohmann::json& body, const session::Session& s);
ApiRequest parse_chat_request(const nlohmann::json& body, const session::Session& s);

// The ApiError for a submission the scheduler refused (400, 429 or 503).
ApiError refusal(const Submitted& s);

// Builds one response's JSON: the whole of it, or its stream's chunks, from the request's events.
class ResponseBuilder {
 public:
  ResponseBuilder(Endpoint e, std::string id, std::string model, const session::Session& s);
  // Adds a Text event to the whole response (non-streaming).
  void add(const Event& e);
  // The whole response once Done came (finish stop or length).
  nlohmann::ordered_json response(const Event& done) const;
  // Stream chunks: the chat's first chunk (the assistant's role), one per Text event, the last
  // one with the finish reason, and the usage chunk (stream_options.include_usage).
  nlohmann::ordered_json role_chunk() const;
  nlohmann::ordered_json chunk(const Event& e);
  nlohmann::ordered_json final_chunk(const Event& done) const;
  nlohmann::ordered_json usage_chunk(const Event& done) const;

 private:
  nlohmann::ordered_json envelope(bool streaming) const;
  nlohmann::ordered_json logprobs_json(const Event& e);
  static nlohmann::ordered_json usage(const Event& done);
  Endpoint endpoint_;
  std::string id_, model_;
  int64_t created_;
  const session::Session& session_;
  std::string text_;
  bool want_logprobs_ = false;
  nlohmann::ordered_json logprobs_;  // accumulated for the whole response
  int64_t text_offset_ = 0;          // completions' logprobs.text_offset
};

}  // namespace sf::serve
