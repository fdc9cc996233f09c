#include "loadgen/results_json.hpp"

#include <cmath>

namespace sf::loadgen {

using nlohmann::ordered_json;

namespace {

// Microsecond resolution is all a steady clock read over HTTP can claim.
double round_ms(double v) {
  return std::round(v * 1000.0) / 1000.0;
}

}  // namespace

ordered_json percentiles_json(const Percentiles& p) {
  return {{"mean", round_ms(p.mean)},
          {"p50", round_ms(p.p50)},
          {"p90", round_ms(p.p90)},
          {"p99", round_ms(p.p99)}};
}

ordered_json summary_json(const Summary& s) {
  ordered_json j = {{"requests", s.requests},
                    {"succeeded", s.succeeded},
                    {"errors", s.errors},
                    {"duration_s", s.duration_s},
                    {"request_throughput", s.request_throughput},
                    {"output_tokens_per_s", s.output_tokens_per_s},
                    {"prompt_tokens", s.prompt_tokens},
                    {"output_tokens", s.output_tokens},
                    {"tokens_counted_from", s.tokens_from_usage ? "usage" : "chunks"},
                    {"ttft_ms", percentiles_json(s.ttft_ms)},
                    {"itl_ms", percentiles_json(s.itl_ms)},
                    {"e2e_ms", percentiles_json(s.e2e_ms)},
                    {"mean_client_wait_ms", round_ms(s.mean_client_wait_ms)}};
  j["latency_limit_ms"] = s.latency_limit_ms ? ordered_json(*s.latency_limit_ms) : nullptr;
  j["good"] = s.latency_limit_ms ? ordered_json(s.good) : nullptr;
  j["goodput"] = s.goodput ? ordered_json(*s.goodput) : nullptr;
  return j;
}

ordered_json record_json(const RequestRecord& r) {
  ordered_json j = {{"ok", r.ok},
                    {"http_status", r.http_status},
                    {"scheduled_s", r.scheduled_s},
                    {"start_s", r.start_s},
                    {"end_s", r.end_s},
                    {"ttft_ms", round_ms(r.ttft_ms)},
                    {"e2e_ms", round_ms(r.e2e_ms)}};
  j["prompt_tokens"] = r.prompt_tokens >= 0 ? ordered_json(r.prompt_tokens) : nullptr;
  j["completion_tokens"] = r.completion_tokens >= 0 ? ordered_json(r.completion_tokens) : nullptr;
  j["chunks"] = r.chunks;
  ordered_json itl = ordered_json::array();
  for (double v : r.itl_ms) itl.push_back(round_ms(v));
  j["itl_ms"] = std::move(itl);
  if (!r.ok) j["error"] = r.error;
  return j;
}

ordered_json records_json(const std::vector<RequestRecord>& records) {
  ordered_json a = ordered_json::array();
  for (const auto& r : records) a.push_back(record_json(r));
  return a;
}

}  // namespace sf::loadgen
