#include "loadgen/openai_client.hpp"

#include <httplib.h>

#include "core/error.hpp"
#include "loadgen/sse.hpp"

namespace sf::loadgen {

using nlohmann::json;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string shorten(std::string_view s, size_t n = 500) {
  return s.size() <= n ? std::string(s) : std::string(s.substr(0, n)) + "...";
}

// cpp-httplib's names for its errors ("Connection", "Read") say little on their own.
std::string transport_error(httplib::Error e) {
  switch (e) {
    case httplib::Error::Connection:
      return "could not connect (connection refused, or no such host or route)";
    case httplib::Error::ConnectionTimeout:
      return "timed out connecting";
    case httplib::Error::Read:
      return "the connection closed or timed out (--timeout) while reading the answer";
    case httplib::Error::Write:
      return "the connection closed while sending the request";
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLServerVerification:
    case httplib::Error::SSLLoadingCerts:
      return "the TLS handshake failed (" + httplib::to_string(e) + ")";
    default:
      return httplib::to_string(e);
  }
}

}  // namespace

ServerUrl parse_server_url(std::string_view url) {
  const auto bad = [&](const char* why) {
    fail(Status::InvalidArgument,
         "--url '{}': {}; expected http://HOST:PORT or https://HOST:PORT, optionally with a path "
         "prefix and /v1 (e.g. http://127.0.0.1:8080/v1)",
         url, why);
  };
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos) bad("no scheme");
  const std::string_view scheme = url.substr(0, sep);
  if (scheme != "http" && scheme != "https") bad("the scheme is not http or https");
  std::string_view rest = url.substr(sep + 3);
  const size_t slash = rest.find('/');
  const std::string_view authority = rest.substr(0, slash);
  if (authority.empty()) bad("no host");
  if (authority.find_first_of("?#@ ") != std::string_view::npos) bad("a malformed host");
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (path.find_first_of("?#") != std::string_view::npos) bad("a query or fragment");
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.size() >= 3 && path.substr(path.size() - 3) == "/v1") path.remove_suffix(3);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  return {std::string(scheme) + "://" + std::string(authority), std::string(path)};
}

StreamChunk read_chunk(const json& event, bool chat) {
  StreamChunk c;
  if (!event.is_object()) return c;
  if (const auto e = event.find("error"); e != event.end() && !e->is_null()) {
    c.error = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                  ? (*e)["message"].get<std::string>()
                  : e->dump();
    return c;
  }
  if (const auto u = event.find("usage"); u != event.end() && u->is_object()) {
    for (auto [key, slot] : {std::pair{"prompt_tokens", &c.prompt_tokens},
                             std::pair{"completion_tokens", &c.completion_tokens}})
      if (u->contains(key) && (*u)[key].is_number_integer()) *slot = (*u)[key].get<int64_t>();
  }
  const auto choices = event.find("choices");
  if (choices == event.end() || !choices->is_array() || choices->empty()) return c;
  const json& ch = (*choices)[0];
  if (!ch.is_object()) return c;
  const json* text = nullptr;
  if (chat) {
    if (ch.contains("delta") && ch["delta"].is_object() && ch["delta"].contains("content"))
      text = &ch["delta"]["content"];
  } else if (ch.contains("text")) {
    text = &ch["text"];
  }
  if (text && text->is_string()) c.text = text->get<std::string>();
  c.finished = ch.contains("finish_reason") && ch["finish_reason"].is_string();
  return c;
}

std::string http_error(int status, std::string_view body) {
  const json j = json::parse(body, nullptr, false);
  std::string message;
  if (!j.is_discarded() && j.is_object() && j.contains("error")) {
    const json& e = j["error"];
    if (e.is_object() && e.contains("message") && e["message"].is_string())
      message = e["message"].get<std::string>();
    else if (e.is_string())
      message = e.get<std::string>();
  }
  if (message.empty()) message = body.empty() ? "(empty body)" : shorten(body);
  return fmt::format("HTTP {}: {}", status, message);
}

json request_body(const std::string& model, const std::string& prompt, int64_t max_tokens,
                  bool chat) {
  json b = {{"model", model}};
  if (chat)
    b["messages"] = json::array({{{"role", "user"}, {"content", prompt}}});
  else
    b["prompt"] = prompt;
  b["max_tokens"] = max_tokens;
  b["temperature"] = 0;
  b["stream"] = true;
  b["stream_options"] = {{"include_usage", true}};
  return b;
}

OpenAiClient::OpenAiClient(const ClientOptions& o) : o_(o) {
  http_ = std::make_unique<httplib::Client>(o_.url.scheme_host_port);
  if (!http_->is_valid())
    fail(Status::InvalidArgument, "--url '{}': cpp-httplib cannot make a client for it",
         o_.url.display());
  http_->set_connection_timeout(10);
  const auto t = std::chrono::duration<double>(o_.timeout_s);
  http_->set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(t));
  http_->set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(t));
  http_->set_keep_alive(true);
}

OpenAiClient::~OpenAiClient() = default;

json OpenAiClient::get_json(std::string_view method, std::string_view path, const json* body) {
  const std::string full = o_.url.prefix + std::string(path);
  httplib::Headers h;
  if (!o_.api_key.empty()) h.emplace("Authorization", "Bearer " + o_.api_key);
  const auto res = method == "GET" ? http_->Get(full, h)
                                   : http_->Post(full, h, body->dump(), "application/json");
  if (!res)
    fail(Status::Io,
         "cannot reach {}{}: {}. Is the server running and listening there? Check --url "
         "(e.g. http://127.0.0.1:8080).",
         o_.url.scheme_host_port, full, transport_error(res.error()));
  if (res->status != 200)
    fail(Status::InvalidArgument, "{} {}{} answered {}{}", method, o_.url.scheme_host_port, full,
         http_error(res->status, res->body),
         res->status == 401 ? " (pass the server's key with --api-key)" : "");
  json j = json::parse(res->body, nullptr, false);
  if (j.is_discarded())
    fail(Status::InvalidArgument, "{} {}{} answered something that is not JSON: {}", method,
         o_.url.scheme_host_port, full, shorten(res->body));
  return j;
}

json OpenAiClient::models() {
  return get_json("GET", "/v1/models", nullptr);
}

json OpenAiClient::post(std::string_view path, const json& body) {
  return get_json("POST", path, &body);
}

RequestRecord OpenAiClient::stream(std::string_view path, const json& body, bool chat,
                                   Clock::time_point run_start) {
  RequestRecord r;
  int status = 0;
  std::string error_body, stream_error;
  bool done = false, finished = false;
  std::optional<Clock::time_point> first, last;
  SseParser sse([&](const std::string& data) {
    if (data == "[DONE]") {
      done = true;
      return true;
    }
    const json j = json::parse(data, nullptr, false);
    if (j.is_discarded()) {
      stream_error = "a stream event is not JSON: " + shorten(data, 200);
      return false;
    }
    const StreamChunk c = read_chunk(j, chat);
    if (c.error) {
      stream_error = "the server ended the stream with an error: " + *c.error;
      return false;
    }
    if (c.prompt_tokens) r.prompt_tokens = *c.prompt_tokens;
    if (c.completion_tokens) r.completion_tokens = *c.completion_tokens;
    finished = finished || c.finished;
    if (!c.text.empty()) {
      const auto now = Clock::now();
      if (last) r.itl_ms.push_back(ms_between(*last, now));
      if (!first) first = now;
      last = now;
      ++r.chunks;
    }
    return true;
  });

  httplib::Request req;
  req.method = "POST";
  req.path = o_.url.prefix + std::string(path);
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.set_header("Accept", "text/event-stream");
  if (!o_.api_key.empty()) req.set_header("Authorization", "Bearer " + o_.api_key);
  req.response_handler = [&](const httplib::Response& res) {
    status = res.status;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (status != 200) {
      if (error_body.size() < 4096) error_body.append(data, n);
      return true;
    }
    return sse.feed(std::string_view(data, n));
  };
  const auto sent = Clock::now();
  r.start_s = std::chrono::duration<double>(sent - run_start).count();
  const auto res = http_->send(req);
  const auto ended = Clock::now();
  r.end_s = std::chrono::duration<double>(ended - run_start).count();
  r.e2e_ms = ms_between(sent, ended);
  r.http_status = status;
  if (status == 200 && res && stream_error.empty()) sse.finish();
  if (status == 0)
    r.error = fmt::format("no answer from {}{}: {}", o_.url.scheme_host_port, req.path,
                          transport_error(res.error()));
  else if (status != 200)
    r.error = http_error(status, error_body);
  else if (!stream_error.empty())
    r.error = stream_error;
  else if (!res)
    r.error = "the stream broke off: " + transport_error(res.error());
  else if (!done && !finished)
    r.error = "the stream ended without a finish_reason or data: [DONE]";
  if (!r.error.empty()) return r;
  r.ttft_ms = first ? ms_between(sent, *first) : r.e2e_ms;
  r.ok = true;
  return r;
}

}  // namespace sf::loadgen
