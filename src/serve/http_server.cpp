#include "serve/http_server.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "core/error.hpp"
#include "serve/openai_api.hpp"

namespace sf::serve {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

// SIGTERM / SIGINT reach the serving loop through a pipe: the handler only writes a byte, which
// is async-signal-safe whatever thread the signal lands on.
int g_signal_pipe[2] = {-1, -1};

void on_signal(int sig) {
  const unsigned char b = static_cast<unsigned char>(sig);
  ssize_t ignored = ::write(g_signal_pipe[1], &b, 1);
  (void)ignored;
}

void install_signals() {
  if (g_signal_pipe[0] < 0 && ::pipe2(g_signal_pipe, O_CLOEXEC) != 0)
    fail(Status::Internal, "cannot create the signal pipe: {}", std::strerror(errno));
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigfillset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT}) ::sigaction(sig, &sa, nullptr);
  // A client that closes its connection must fail our write, not kill the process: cpp-httplib
  // sends without MSG_NOSIGNAL.
  ::signal(SIGPIPE, SIG_IGN);
}

// Waits up to timeout_ms for a signal; true when one came.
bool wait_signal(int timeout_ms) {
  pollfd p{g_signal_pipe[0], POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return false;
  unsigned char b = 0;
  return ::read(g_signal_pipe[0], &b, 1) == 1;
}

std::string dump(const nlohmann::ordered_json& j) {
  // Text is valid UTF-8 by construction (Utf8Stream); replace rather than throw if not.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string sse(const nlohmann::ordered_json& j) {
  return "data: " + dump(j) + "\n\n";
}

enum class State { Loading, Ready, Draining };

class Server {
 public:
  explicit Server(const ServeOptions& o) : o_(o), metrics_(std::make_shared<Metrics>()) {}
  void run();

 private:
  void routes();
  bool admit(const httplib::Request& req, httplib::Response& res);
  void send_error(httplib::Response& res, const ApiError& e);
  void generate(const httplib::Request& req, httplib::Response& res, Endpoint ep);
  std::string next_id(Endpoint ep);

  const ServeOptions& o_;
  httplib::Server http_;
  std::shared_ptr<Metrics> metrics_;
  std::atomic<State> state_{State::Loading};
  std::unique_ptr<session::Session> session_;  // set before state_ turns Ready
  std::unique_ptr<Scheduler> sched_;
  std::atomic<int> active_{0};  // generation requests still being answered
  std::atomic<uint64_t> ids_{0};
  std::string id_prefix_;
};

void Server::send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(dump(error_body(e.status(), e.what(), e.param(), e.code())), "application/json");
}

// The checks every /v1 request passes first: the key, then the server's state.
bool Server::admit(const httplib::Request& req, httplib::Response& res) {
  if (!o_.api_key.empty() && req.get_header_value("Authorization") != "Bearer " + o_.api_key) {
    metrics_->request_rejected("unauthorized");
    send_error(res, ApiError(401,
                             req.has_header("Authorization")
                                 ? "incorrect API key: send the key the server was started with "
                                   "(--api-key) as 'Authorization: Bearer <key>'."
                                 : "this server needs an API key: send 'Authorization: Bearer "
                                   "<key>'.",
                             {}, "invalid_api_key"));
    return false;
  }
  const State s = state_.load();
  if (s != State::Ready) {
    metrics_->request_rejected(s == State::Loading ? "loading" : "draining");
    send_error(res, s == State::Loading
                        ? ApiError(503, "the model is still loading; retry in a moment.", {},
                                   "model_loading")
                        : ApiError(503, "the server is shutting down and takes no new requests.",
                                   {}, "draining"));
    return false;
  }
  return true;
}

std::string Server::next_id(Endpoint ep) {
  return fmt::format("{}-{}{:x}", ep == Endpoint::Chat ? "chatcmpl" : "cmpl", id_prefix_, ++ids_);
}

// Answers one generation request: parse, submit, then either wait for the whole text or stream
// chunks as the scheduler produces them.
void Server::generate(const httplib::Request& req, httplib::Response& res, Endpoint ep) {
  if (!admit(req, res)) return;
  ApiRequest ar;
  try {
    const json body = json::parse(req.body);
    ar = ep == Endpoint::Chat ? parse_chat_request(body, *session_)
                              : parse_completion_request(body, *session_);
  } catch (const json::parse_error& e) {
    metrics_->request_rejected("malformed");
    return send_error(
        res, ApiError(400, fmt::format("the request body is not valid JSON: {}", e.what())));
  } catch (const ApiError& e) {
    metrics_->request_rejected("invalid");
    return send_error(res, e);
  } catch (const std::exception& e) {  // the tokenizer's or the template's own errors
    metrics_->request_rejected("invalid");
    return send_error(res, ApiError(400, e.what()));
  }
  const bool stream = ar.stream, include_usage = ar.include_usage;
  Submitted sub = sched_->submit(std::move(ar.spec));
  if (sub.outcome != Admission::Queued) return send_error(res, refusal(sub));
  auto builder = std::make_shared<ResponseBuilder>(ep, next_id(ep), o_.model_name, *session_);
  auto request = sub.request;

  if (!stream) {
    ++active_;
    for (;;) {
      const auto e = request->next(std::chrono::seconds(1));
      if (!e) continue;
      if (e->kind == Event::Kind::Text) {
        builder->add(*e);
        continue;
      }
      if (e->finish == Finish::Stop || e->finish == Finish::Length)
        res.set_content(dump(builder->response(*e)), "application/json");
      else if (e->finish == Finish::Cancelled)
        send_error(res, ApiError(503, "the request was cancelled: the server is shutting down.", {},
                                 "cancelled"));
      else
        send_error(res, ApiError(500, "generation failed: " + e->error, {}, "engine_error"));
      break;
    }
    --active_;
    return;
  }

  // Streaming: chunks leave as the events arrive; a write that fails (the client went away)
  // cancels the request, which frees its place in the batch at the next step.
  struct Stream {
    std::shared_ptr<Request> request;
    std::shared_ptr<ResponseBuilder> builder;
    bool chat = false, include_usage = false, started = false, finished = false;
  };
  auto st = std::make_shared<Stream>();
  st->request = request;
  st->builder = builder;
  st->chat = ep == Endpoint::Chat;
  st->include_usage = include_usage;
  ++active_;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [st](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& s) {
          if (sink.write(s.data(), s.size())) return true;
          st->request->cancel();
          return false;
        };
        if (!st->started) {
          st->started = true;
          if (st->chat && !write(sse(st->builder->role_chunk()))) return false;
        }
        const auto e = st->request->next(std::chrono::milliseconds(500));
        if (!e) return true;  // called again
        if (e->kind == Event::Kind::Text) {
          if (e->text.empty() && e->logprobs.empty()) return true;  // a held-back piece
          return write(sse(st->builder->chunk(*e)));
        }
        std::string tail;
        if (e->finish == Finish::Stop || e->finish == Finish::Length) {
          tail = sse(st->builder->final_chunk(*e));
          if (st->include_usage) tail += sse(st->builder->usage_chunk(*e));
        } else {
          const int status = e->finish == Finish::Cancelled ? 503 : 500;
          tail =
              sse(error_body(status, e->finish == Finish::Cancelled
                                         ? "the request was cancelled: the server is shutting down."
                                         : "generation failed: " + e->error));
        }
        tail += "data: [DONE]\n\n";
        st->finished = true;
        if (!write(tail)) return false;
        sink.done();
        return true;
      },
      [this, st](bool) {
        if (!st->finished) st->request->cancel();
        --active_;
      });
}

void Server::routes() {
  http_.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generate(req, res, Endpoint::Completions);
  });
  http_.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    generate(req, res, Endpoint::Chat);
  });
  http_.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!admit(req, res)) return;
    const nlohmann::ordered_json model = {{"id", o_.model_name},
                                          {"object", "model"},
                                          {"created", 0},
                                          {"owned_by", "sparseflow"},
                                          {"max_model_len", sched_->options().max_context}};
    res.set_content(dump({{"object", "list"}, {"data", {model}}}), "application/json");
  });
  http_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const State s = state_.load();
    res.status = s == State::Ready ? 200 : 503;
    const char* name = s == State::Ready ? "ok" : s == State::Loading ? "loading" : "draining";
    res.set_content(dump({{"status", name}}), "application/json");
  });
  http_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    const Gauges g = sched_ && state_.load() != State::Loading ? sched_->stats().gauges : Gauges{};
    res.set_content(metrics_->render(g), "text/plain; version=0.0.4");
  });
  // Errors the library answers itself (no route, a body over the limit) in OpenAI's shape too.
  http_.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string msg;
        if (res.status == 404)
          msg = fmt::format(
              "no route {} {}: this server answers POST /v1/completions, POST "
              "/v1/chat/completions, GET /v1/models, GET /health and GET /metrics.",
              req.method, req.path);
        else if (res.status == 413)
          msg = fmt::format("the request body is over this server's limit of {} bytes.",
                            o_.max_body_bytes);
        else
          msg = fmt::format("HTTP {} for {} {}.", res.status, req.method, req.path);
        if (res.status == 413) metrics_->request_rejected("too_large");
        res.set_content(dump(error_body(res.status, msg)), "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }));
  http_.set_exception_handler(
      [this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        send_error(res, ApiError(500, "internal error: " + what + ". Please report this."));
      });
}

void Server::run() {
  install_signals();
  routes();
  // Streams hold a connection thread each for their whole length: enough threads for a full
  // batch and queue, plus some for health checks, metrics and refusals.
  const size_t threads = size_t(o_.scheduler.max_batch + o_.scheduler.max_queue + 8);
  http_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  http_.set_payload_max_length(o_.max_body_bytes);
  id_prefix_ = fmt::format("{:x}", std::chrono::duration_cast<std::chrono::seconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
  int port = o_.port;
  if (port == 0) {
    port = http_.bind_to_any_port(o_.host);
  } else if (!http_.bind_to_port(o_.host, port)) {
    port = -1;
  }
  if (port < 0)
    fail(Status::Io,
         "cannot listen on {}:{}: {}. Is another server using that port? Pick another with "
         "--port (0: any free one).",
         o_.host, o_.port, std::strerror(errno));
  fmt::print(stderr, "sparseflow serve: listening on http://{}:{}\n", o_.host, port);
  std::fflush(stderr);
  std::thread listener([this] { http_.listen_after_bind(); });
  auto stop_listening = [&] {
    http_.stop();
    listener.join();
  };

  try {
    session_ = session::Session::open(o_.model_path, o_.session);
    sched_ = std::make_unique<Scheduler>(*session_, o_.scheduler, metrics_);
  } catch (...) {
    stop_listening();
    throw;
  }
  const auto& so = sched_->options();
  state_ = State::Ready;
  fmt::print(stderr,
             "sparseflow serve: ready: model {} ({}), max batch {}, max context {}, KV budget {} "
             "tokens, queue {}\n",
             o_.model_name, session_->device(), so.max_batch, so.max_context, so.kv_budget,
             so.max_queue);
  std::fflush(stderr);

  while (!wait_signal(-1)) {
  }
  state_ = State::Draining;
  fmt::print(stderr,
             "sparseflow serve: draining: no new requests; in-flight ones have {:.0f} s to finish "
             "(a second signal cancels them now)\n",
             o_.drain_seconds);
  std::fflush(stderr);
  std::atomic<bool> drained{false};
  std::thread hurry([&] {
    while (!drained)
      if (wait_signal(100)) sched_->drain(Clock::now());
  });
  sched_->drain(Clock::now() + std::chrono::milliseconds(int64_t(o_.drain_seconds * 1000)));
  // Every request has its last event; let the connection threads write it before closing.
  const auto until = Clock::now() + std::chrono::seconds(5);
  while (active_ > 0 && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  drained = true;
  hurry.join();
  stop_listening();
  const auto st = sched_->stats();
  sched_.reset();
  fmt::print(stderr, "sparseflow serve: stopped after {} requests\n", st.finished);
}

}  // namespace

void serve(const ServeOptions& options) {
  Server(options).run();
}

}  // namespace sf::serve
