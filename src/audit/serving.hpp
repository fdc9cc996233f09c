// The audit's serving mode: GPUs needed to serve Q requests/s dense vs 2:4 from bench-serve
// measurements of one server per GPU, GPUs = ceil(Q / goodput per GPU), where goodput counts only
// the requests that met the latency limit. Arithmetic and refusals only, no I/O (tests/audit).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "audit/audit.hpp"
#include "audit/serve_measurements.hpp"

namespace sf::audit {

struct ServingRequest {
  double qps = 0;
  std::optional<double> tokens_in, tokens_out;  // must equal the measurements' shape when given
  std::optional<double> latency_limit_ms;       // must equal the measurements' limit when given
  std::optional<std::string> gpu;               // must occur in the measurements' GPU name
  std::optional<double> price_per_gpu_hour, power_watts, grid_g_per_kwh;
};

struct ServingSide {
  std::string label;  // "dense", "2:4"
  ServePoint point;   // the measured rate with the highest goodput
  double goodput_per_gpu = 0;
  int64_t gpus = 0;
  std::optional<double> cost_per_year, kwh_per_year, tonnes_co2_per_year;
  std::string measured_by;  // provenance line of the file
};

struct ServingReport {
  std::string model, gpu;
  double qps = 0;
  int64_t prompt_tokens = 0, max_tokens = 0;
  double latency_limit_ms = 0;
  ServingSide dense, sparse;
  std::vector<Assumption> assumptions;
  std::vector<std::string> not_computed;
};

// The point of `m` with the highest goodput (the first of equals). Throws Error(InvalidArgument)
// when `m` has no latency limit or no request of any point met it.
const ServePoint& best_point(const ServeMeasurement& m);

// Throws Error(InvalidArgument) with what differs and what to do when the measurements do not
// answer the request: a prompt or max-token shape or a latency limit other than the one asked (or
// than each other's), completions vs chat, no GPU recorded or two different GPUs, a GPU that
// does not match --gpu, or nothing that met the limit.
ServingReport run_serving_audit(const ServingRequest& req, const std::string& model,
                                const ServeMeasurement& dense, const ServeMeasurement& sparse);

}  // namespace sf::audit
