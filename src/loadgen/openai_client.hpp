// The client side of the OpenAI API that bench-serve needs, on cpp-httplib's client: the server's
// address, GET /v1/models, one non-streaming POST, and one streamed completion timed chunk by
// chunk. Works against any OpenAI-compatible server (sparseflow serve, llama.cpp's llama-server,
// vLLM). One client holds one connection and is used by one thread at a time.
#pragma once
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "loadgen/latency_stats.hpp"

namespace httplib {
class Client;
}

namespace sf::loadgen {

using Clock = std::chrono::steady_clock;

// "http://host:port[/prefix][/v1]": scheme_host_port for the connection, and the path prefix the
// endpoints go under ("" or "/prefix"; a trailing "/v1" is dropped, as OpenAI clients take the
// base URL with it). Throws Error(InvalidArgument) for anything else.
struct ServerUrl {
  std::string scheme_host_port, prefix;
  std::string display() const { return scheme_host_port + prefix; }
};
ServerUrl parse_server_url(std::string_view url);

// What one stream event carries: the text of choice 0 (completions' "text", chat's
// "delta.content"), the usage when the event has one, an error event's message, and whether it
// closed the choice (a finish_reason).
struct StreamChunk {
  std::string text;
  std::optional<int64_t> prompt_tokens, completion_tokens;
  std::optional<std::string> error;
  bool finished = false;
};
StreamChunk read_chunk(const nlohmann::json& event, bool chat);

// "HTTP 400: <the message of an OpenAI error body, or the body itself, shortened>".
std::string http_error(int status, std::string_view body);

// The body of one streamed request: greedy (temperature 0), max_tokens, the usage asked for in the
// stream (stream_options.include_usage); a completion prompt, or one user message for chat.
nlohmann::json request_body(const std::string& model, const std::string& prompt, int64_t max_tokens,
                            bool chat);

struct ClientOptions {
  ServerUrl url;
  std::string api_key;     // sent as "Authorization: Bearer KEY" when not empty
  double timeout_s = 300;  // the longest wait for the next bytes of an answer
};

class OpenAiClient {
 public:
  explicit OpenAiClient(const ClientOptions& o);
  ~OpenAiClient();
  OpenAiClient(const OpenAiClient&) = delete;
  OpenAiClient& operator=(const OpenAiClient&) = delete;

  // GET /v1/models. Throws Error(Io) when the server cannot be reached and Error(InvalidArgument)
  // with the server's own message for an HTTP error or an answer that is not JSON.
  nlohmann::json models();
  // POST `body` to `path` (e.g. "/v1/completions") and return the JSON answer; throws as models().
  nlohmann::json post(std::string_view path, const nlohmann::json& body);
  // One streamed request to `path`, timed from its send. Never throws for what the server or the
  // network did: the record says (ok, http_status, error). start_s and end_s count from run_start.
  RequestRecord stream(std::string_view path, const nlohmann::json& body, bool chat,
                       Clock::time_point run_start);

 private:
  nlohmann::json get_json(std::string_view method, std::string_view path,
                          const nlohmann::json* body);
  ClientOptions o_;
  std::unique_ptr<httplib::Client> http_;
};

}  // namespace sf::loadgen
