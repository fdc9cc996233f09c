// Helpers of the scheduler tests: collecting a request's events, opening a model on one CPU
// thread, and the same request served alone (Session::generate_ids) as the reference.
#pragma once
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "serve/scheduler.hpp"
#include "session/session.hpp"

namespace sf::serve::test {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

struct Outcome {
  std::vector<int32_t> tokens;
  std::string text;
  Event done;
  int events = 0;
};

inline Outcome collect(const std::shared_ptr<Request>& r) {
  Outcome o;
  for (;;) {
    auto e = r->next(120s);
    if (!e) {
      ADD_FAILURE() << "request " << r->id() << " sent nothing for 120 s";
      return o;
    }
    ++o.events;
    if (e->kind == Event::Kind::Done) {
      o.done = std::move(*e);
      return o;
    }
    o.tokens.insert(o.tokens.end(), e->tokens.begin(), e->tokens.end());
    o.text += e->text;
  }
}

inline std::unique_ptr<session::Session> open_cpu(const std::string& path) {
  session::SessionOptions o;
  o.device = "cpu";
  // One thread: on a machine whose cores are shared, OpenMP's barriers between the many small
  // parallel regions of a decode step stall on descheduled threads (2 threads ran 10x slower
  // than 1 on a loaded 2-core machine).
  o.threads = 1;
  return session::Session::open(path, o);
}

inline RequestSpec spec_of(std::vector<int32_t> prompt, int64_t max_tokens) {
  RequestSpec s;
  s.prompt = std::move(prompt);
  s.max_tokens = max_tokens;
  return s;
}

// What the request gives served alone, through the session's own generate loop.
inline std::vector<int32_t> alone(session::Session& s, const RequestSpec& r) {
  session::GenerateParams p;
  p.max_new_tokens = *r.max_tokens;
  p.sampling = r.sampling;
  return s.generate_ids(r.prompt, p).ids;
}

}  // namespace sf::serve::test
