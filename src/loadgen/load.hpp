// Runs one load test: each request is sent at its arrival time (arrivals.hpp), or as soon as one of
// the `concurrency` workers is free when all are busy, each worker a thread with its own
// connection. Latencies count from the send, as vLLM's benchmark_serving does; the wait a request
// spent held back by the concurrency limit is in its record (start_s - scheduled_s).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "loadgen/latency_stats.hpp"
#include "loadgen/openai_client.hpp"

namespace sf::loadgen {

struct LoadPlan {
  std::string path;  // "/v1/completions" or "/v1/chat/completions"
  bool chat = false;
  std::vector<nlohmann::json> bodies;  // one per request (request_body)
  std::vector<double> arrivals;        // seconds from the start, ascending, one per request
  int64_t concurrency = 1;             // requests in flight at most
};

// One record per request, in the plan's order. `on_done` (may be empty) is called from the
// workers, under a lock, with the number of requests finished so far. Throws Error only for a
// malformed plan or when a worker's client cannot be made; failed requests are records.
std::vector<RequestRecord> run_load(const ClientOptions& client, const LoadPlan& plan,
                                    const std::function<void(int64_t done)>& on_done = {});

}  // namespace sf::loadgen
