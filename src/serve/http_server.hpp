// `sparseflow serve`'s HTTP side: the OpenAI-compatible endpoints over the scheduler, on
// cpp-httplib (Debian's libcpp-httplib-dev; docs/SERVING.md says why that library).
//
//   POST /v1/completions, POST /v1/chat/completions   (stream: true -> server-sent events)
//   GET  /v1/models, GET /health, GET /metrics         (Prometheus text)
//
// Life of the process: it listens at once and answers 503 ("loading") while the model opens,
// then serves; SIGTERM or SIGINT stops admitting (503 "draining"), lets in-flight requests finish
// until the drain deadline, cancels the rest, and serve() returns (a second signal cancels at
// once). A streaming client that goes away has its request cancelled at its next token.
#pragma once
#include <cstddef>
#include <string>

#include "serve/scheduler.hpp"
#include "session/session.hpp"

namespace sf::serve {

struct ServeOptions {
  std::string model_path;
  std::string model_name;  // what /v1/models lists and responses name
  std::string host = "127.0.0.1";
  int port = 8080;      // 0: any free port (the line "listening on http://HOST:PORT" says which)
  std::string api_key;  // when set, /v1/* needs "Authorization: Bearer <key>"
  session::SessionOptions session;
  SchedulerOptions scheduler;
  size_t max_body_bytes = size_t(4) << 20;  // larger bodies get 413
  double drain_seconds = 30.0;
};

// Runs the server until a signal has drained it. Throws sf::Error when the address cannot be
// bound or the model cannot be opened or served.
void serve(const ServeOptions& options);

}  // namespace sf::serve
