// Reading `sparseflow bench-serve --json` files for the audit's serving mode: the request shape,
// the latency limit and, per offered rate, the throughput and goodput a server reached (the format
// is in docs/SERVING.md, "bench-serve JSON").
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "audit/audit.hpp"

namespace sf::audit {

// One offered rate of a bench-serve run.
struct ServePoint {
  std::string rate;  // as offered: "4", "inf"
  int64_t requests = 0, succeeded = 0, errors = 0, good = 0;
  double duration_s = 0, request_throughput = 0, output_tokens_per_s = 0;
  double goodput = 0;  // requests/s that met the latency limit
  double ttft_p99_ms = 0, itl_p99_ms = 0, e2e_p99_ms = 0;
};

struct ServeMeasurement {
  Provenance prov;            // gpu: bench-serve --gpu (empty when not given)
  std::string served_model;   // the model the requests named (the server's /v1/models)
  int64_t prompt_tokens = 0;  // --prompt-tokens
  int64_t max_tokens = 0;     // --max-tokens
  int64_t concurrency = 0;    // --concurrency; 0: no limit
  bool chat = false;
  std::optional<double> latency_limit_ms;  // absent: measured without --latency-limit-ms
  std::vector<ServePoint> points;
};

// Throws Error(Format) naming the field that is missing or malformed.
ServeMeasurement parse_serve_measurement(const nlohmann::json& doc, const std::string& origin);
// Error(Io) when the file cannot be read, Error(Format) when it is not bench-serve's JSON.
ServeMeasurement load_serve_measurement(const std::filesystem::path& file);

}  // namespace sf::audit
