// What `GET /metrics` reports, in Prometheus' text format (version 0.0.4): counters of requests and
// tokens, histograms of time to first token, inter-token latency, request latency and batch size,
// and the gauges of the moment (queue depth, running sequences, KV use, tokens/s). Every method is
// thread-safe: the scheduler's thread and the server's connection threads record into one object.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sf::serve {

// Cumulative buckets with fixed upper bounds, as Prometheus expects (+Inf added when rendering).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double v);
  void render(std::string& out, std::string_view name, std::string_view help) const;
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last is +Inf
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

// The scheduler's state of the moment, rendered as gauges.
struct Gauges {
  int64_t queued = 0, running = 0, max_batch = 0, max_queue = 0;
  int64_t kv_tokens_reserved = 0;  // what admitted requests may grow to (prompt + max tokens)
  int64_t kv_tokens_held = 0;      // tokens whose keys and values are stored now
  int64_t kv_tokens_budget = 0;
  int64_t kv_bytes = 0;  // memory the KV caches take now
  bool draining = false;
};

class Metrics {
 public:
  Metrics();
  void request_received(std::string_view endpoint);
  void request_rejected(std::string_view reason);  // invalid, too_long, queue_full, ...
  void request_finished(std::string_view reason, double seconds);  // stop, length, cancelled...
  void prompt_tokens(int64_t n);
  void first_token(double seconds_since_arrival);
  void next_token(double seconds_since_previous);
  void step(int64_t rows, int64_t new_tokens);  // one engine pass and the tokens it sampled
  // Generated tokens per second over the last 10 s (or since the first token, when sooner).
  double tokens_per_second() const;
  std::string render(const Gauges& g) const;

 private:
  using Clock = std::chrono::steady_clock;
  double tokens_per_second_locked(Clock::time_point now) const;
  mutable std::mutex mu_;
  std::map<std::string, uint64_t, std::less<>> received_, rejected_, finished_;
  uint64_t prompt_tokens_ = 0, generated_tokens_ = 0, steps_ = 0;
  Histogram ttft_, itl_, latency_, batch_;
  mutable std::deque<std::pair<Clock::time_point, int64_t>> recent_;  // (step time, new tokens)
};

}  // namespace sf::serve
