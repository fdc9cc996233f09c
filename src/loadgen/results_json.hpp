// The JSON of bench-serve's results (docs/SERVING.md, "bench-serve JSON"): a run's summary and its
// per-request records. `sparseflow audit --from-serve-*` reads the summaries back.
#pragma once
#include <nlohmann/json.hpp>

#include <vector>

#include "loadgen/latency_stats.hpp"

namespace sf::loadgen {

// The format name and version a results file carries in "format".
inline constexpr const char* kResultsFormat = "sparseflow-bench-serve/1";

nlohmann::ordered_json percentiles_json(const Percentiles& p);
nlohmann::ordered_json summary_json(const Summary& s);
nlohmann::ordered_json record_json(const RequestRecord& r);
nlohmann::ordered_json records_json(const std::vector<RequestRecord>& records);

}  // namespace sf::loadgen
