#include "serve/metrics.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace sf::serve {

namespace {

constexpr auto kRateWindow = std::chrono::seconds(10);

void counter_family(std::string& out, std::string_view name, std::string_view help,
                    std::string_view label,
                    const std::map<std::string, uint64_t, std::less<>>& values) {
  out += fmt::format("# HELP {} {}\n# TYPE {} counter\n", name, help, name);
  for (const auto& [k, v] : values) out += fmt::format("{}{{{}=\"{}\"}} {}\n", name, label, k, v);
}

void counter(std::string& out, std::string_view name, std::string_view help, uint64_t v) {
  out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, v);
}

void gauge(std::string& out, std::string_view name, std::string_view help, double v) {
  out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help, name, name, v);
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  std::sort(bounds_.begin(), bounds_.end());
}

void Histogram::observe(double v) {
  const size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, std::string_view name, std::string_view help) const {
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cum);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, count_, name,
                     sum_, name, count_);
}

// Bounds in seconds: a CPU decode step of a small model takes 10-50 ms, a GPU one a few ms, and a
// first token waits for the prompt's prefill and any queue.
Metrics::Metrics()
    : ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}),
      latency_({0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
      batch_({1, 2, 4, 8, 16, 32, 64, 128, 256, 512}) {}

void Metrics::request_received(std::string_view endpoint) {
  const std::lock_guard lock(mu_);
  ++received_[std::string(endpoint)];
}

void Metrics::request_rejected(std::string_view reason) {
  const std::lock_guard lock(mu_);
  ++rejected_[std::string(reason)];
}

void Metrics::request_finished(std::string_view reason, double seconds) {
  const std::lock_guard lock(mu_);
  ++finished_[std::string(reason)];
  latency_.observe(seconds);
}

void Metrics::prompt_tokens(int64_t n) {
  const std::lock_guard lock(mu_);
  prompt_tokens_ += uint64_t(n);
}

void Metrics::first_token(double s) {
  const std::lock_guard lock(mu_);
  ttft_.observe(s);
}

void Metrics::next_token(double s) {
  const std::lock_guard lock(mu_);
  itl_.observe(s);
}

void Metrics::step(int64_t rows, int64_t new_tokens) {
  const std::lock_guard lock(mu_);
  ++steps_;
  batch_.observe(double(rows));
  generated_tokens_ += uint64_t(new_tokens);
  const auto now = Clock::now();
  recent_.emplace_back(now, new_tokens);
  while (!recent_.empty() && now - recent_.front().first > kRateWindow) recent_.pop_front();
}

double Metrics::tokens_per_second_locked(Clock::time_point now) const {
  while (!recent_.empty() && now - recent_.front().first > kRateWindow) recent_.pop_front();
  if (recent_.empty()) return 0.0;
  int64_t tokens = 0;
  for (const auto& [t, n] : recent_) tokens += n;
  // Over the whole window once it is full; over the time since the oldest step kept before that,
  // so that a burst that just started is not averaged with 10 s of nothing.
  const double span = std::chrono::duration<double>(now - recent_.front().first).count();
  const double window = std::chrono::duration<double>(kRateWindow).count();
  return double(tokens) / std::max(std::min(span, window), 1e-3);
}

double Metrics::tokens_per_second() const {
  const std::lock_guard lock(mu_);
  return tokens_per_second_locked(Clock::now());
}

std::string Metrics::render(const Gauges& g) const {
  const std::lock_guard lock(mu_);
  std::string out;
  counter_family(out, "sparseflow_requests_received_total", "Requests received, by endpoint.",
                 "endpoint", received_);
  counter_family(out, "sparseflow_requests_rejected_total",
                 "Requests answered with an error before generating, by reason.", "reason",
                 rejected_);
  counter_family(out, "sparseflow_requests_finished_total",
                 "Generation requests finished, by finish reason.", "reason", finished_);
  counter(out, "sparseflow_prompt_tokens_total", "Prompt tokens of admitted requests.",
          prompt_tokens_);
  counter(out, "sparseflow_generation_tokens_total", "Tokens generated.", generated_tokens_);
  counter(out, "sparseflow_engine_steps_total", "Batched forward passes run.", steps_);
  gauge(out, "sparseflow_generation_tokens_per_second",
        "Tokens generated per second over the last 10 seconds.",
        tokens_per_second_locked(Clock::now()));
  gauge(out, "sparseflow_queue_depth", "Requests waiting for a place in the batch.",
        double(g.queued));
  gauge(out, "sparseflow_queue_capacity", "Requests that may wait before 429.",
        double(g.max_queue));
  gauge(out, "sparseflow_running_sequences", "Sequences in the running batch.", double(g.running));
  gauge(out, "sparseflow_max_batch", "Sequences the batch may hold.", double(g.max_batch));
  gauge(out, "sparseflow_kv_cache_tokens_reserved",
        "KV tokens admitted requests may reach (prompt + max tokens).",
        double(g.kv_tokens_reserved));
  gauge(out, "sparseflow_kv_cache_tokens_held", "Tokens whose keys and values are stored now.",
        double(g.kv_tokens_held));
  gauge(out, "sparseflow_kv_cache_tokens_budget", "KV tokens admission may reserve in all.",
        double(g.kv_tokens_budget));
  gauge(out, "sparseflow_kv_cache_usage_ratio", "Reserved KV tokens over the budget.",
        g.kv_tokens_budget ? double(g.kv_tokens_reserved) / double(g.kv_tokens_budget) : 0.0);
  gauge(out, "sparseflow_kv_cache_bytes", "Memory the KV caches take now.", double(g.kv_bytes));
  gauge(out, "sparseflow_draining", "1 while the server drains for shutdown.", g.draining ? 1 : 0);
  ttft_.render(out, "sparseflow_time_to_first_token_seconds",
               "From a request's arrival to its first generated token.");
  itl_.render(out, "sparseflow_inter_token_latency_seconds",
              "Between consecutive generated tokens of a request.");
  latency_.render(out, "sparseflow_request_duration_seconds",
                  "From a request's arrival to its end.");
  batch_.render(out, "sparseflow_batch_rows", "Token rows per batched forward pass.");
  return out;
}

}  // namespace sf::serve
