// What one streamed request measured, and the summary of a run: throughput, TTFT / inter-token /
// end-to-end percentiles and goodput under a latency limit. Pure arithmetic over the records, so
// every figure can be checked by hand (tests/loadgen).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sf::loadgen {

// One request as the client saw it. Times are milliseconds; start_s and end_s are seconds from the
// start of the run (the first scheduled arrival).
struct RequestRecord {
  bool ok = false;
  int http_status = 0;     // 0: no HTTP answer (connection refused, timeout)
  std::string error;       // why it failed: the server's error body or the transport error
  double scheduled_s = 0;  // its arrival in the schedule
  double start_s = 0;      // when it was sent: later than scheduled_s when --concurrency held it
  double end_s = 0;        // when its stream ended
  double ttft_ms = 0;      // send to the first chunk carrying text (to the end when none did)
  double e2e_ms = 0;       // send to the end of the stream
  std::vector<double> itl_ms;      // gaps between consecutive chunks carrying text
  int64_t prompt_tokens = -1;      // the server's usage; -1 when it gave none
  int64_t completion_tokens = -1;  // the server's usage; -1 when it gave none
  int64_t chunks = 0;              // stream chunks that carried text
  // The output tokens counted for throughput: the server's usage when it gave one, else the text
  // chunks (one token per chunk, which undercounts when a server merges tokens).
  int64_t tokens_out() const { return completion_tokens >= 0 ? completion_tokens : chunks; }
};

// The p-th percentile (p in [0, 100]) with linear interpolation between the closest ranks
// (numpy's default): p0 is the minimum, p100 the maximum. Throws Error(InvalidArgument) for an
// empty sample or p outside [0, 100].
double percentile(std::vector<double> sample, double p);

// Whether a request met a latency limit of `limit_ms`: it succeeded, its TTFT is <= the limit and
// the p99 of its own inter-token gaps is <= the limit (vacuous for a request of one chunk).
bool meets_limit(const RequestRecord& r, double limit_ms);

struct Percentiles {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0;
};
// Mean, p50, p90, p99 of a sample; all zero for an empty one.
Percentiles percentiles(const std::vector<double>& sample);

struct Summary {
  int64_t requests = 0, succeeded = 0, errors = 0;
  double duration_s = 0;           // from the start of the run to the end of its last request
  double request_throughput = 0;   // succeeded / duration
  double output_tokens_per_s = 0;  // output tokens of the successful requests / duration
  int64_t prompt_tokens = 0, output_tokens = 0;  // totals over the successful requests
  bool tokens_from_usage = true;                 // every successful request had the server's usage
  Percentiles ttft_ms, itl_ms, e2e_ms;  // successful requests; ITL pooled over all their gaps
  double mean_client_wait_ms = 0;       // sent later than scheduled, held back by --concurrency
  std::optional<double> latency_limit_ms;
  int64_t good = 0;               // requests that met the limit
  std::optional<double> goodput;  // good / duration, requests/s; absent without a limit
};

Summary summarize(const std::vector<RequestRecord>& records, std::optional<double> limit_ms);

}  // namespace sf::loadgen
