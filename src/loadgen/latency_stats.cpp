#include "loadgen/latency_stats.hpp"

#include <algorithm>
#include <cmath>

#include "core/error.hpp"

namespace sf::loadgen {

double percentile(std::vector<double> sample, double p) {
  if (sample.empty()) fail(Status::InvalidArgument, "a percentile of an empty sample");
  if (!(p >= 0 && p <= 100))
    fail(Status::InvalidArgument, "a percentile must be in [0, 100], got {}", p);
  std::sort(sample.begin(), sample.end());
  const double rank = p / 100.0 * double(sample.size() - 1);
  const size_t lo = size_t(std::floor(rank)), hi = size_t(std::ceil(rank));
  return sample[lo] + (sample[hi] - sample[lo]) * (rank - double(lo));
}

bool meets_limit(const RequestRecord& r, double limit_ms) {
  if (!r.ok || !(r.ttft_ms <= limit_ms)) return false;
  return r.itl_ms.empty() || percentile(r.itl_ms, 99) <= limit_ms;
}

Percentiles percentiles(const std::vector<double>& sample) {
  Percentiles p;
  if (sample.empty()) return p;
  double sum = 0;
  for (double v : sample) sum += v;
  p.mean = sum / double(sample.size());
  p.p50 = percentile(sample, 50);
  p.p90 = percentile(sample, 90);
  p.p99 = percentile(sample, 99);
  return p;
}

Summary summarize(const std::vector<RequestRecord>& records, std::optional<double> limit_ms) {
  Summary s;
  s.requests = int64_t(records.size());
  s.latency_limit_ms = limit_ms;
  std::vector<double> ttft, itl, e2e;
  double wait = 0;
  for (const auto& r : records) {
    s.duration_s = std::max(s.duration_s, r.end_s);
    wait += std::max(0.0, r.start_s - r.scheduled_s) * 1000.0;
    if (!r.ok) {
      ++s.errors;
      continue;
    }
    ++s.succeeded;
    if (r.completion_tokens < 0) s.tokens_from_usage = false;
    s.output_tokens += r.tokens_out();
    s.prompt_tokens += std::max<int64_t>(0, r.prompt_tokens);
    ttft.push_back(r.ttft_ms);
    e2e.push_back(r.e2e_ms);
    itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
    if (limit_ms && meets_limit(r, *limit_ms)) ++s.good;
  }
  if (!records.empty()) s.mean_client_wait_ms = wait / double(records.size());
  s.ttft_ms = percentiles(ttft);
  s.itl_ms = percentiles(itl);
  s.e2e_ms = percentiles(e2e);
  if (s.duration_s > 0) {
    s.request_throughput = double(s.succeeded) / s.duration_s;
    s.output_tokens_per_s = double(s.output_tokens) / s.duration_s;
    if (limit_ms) s.goodput = double(s.good) / s.duration_s;
  } else if (limit_ms) {
    s.goodput = 0.0;
  }
  return s;
}

}  // namespace sf::loadgen
