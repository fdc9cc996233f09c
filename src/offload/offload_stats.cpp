// OffloadStats' JSON form (every build: the CLI prints it).
#include "offload/offloaded_opt.hpp"

namespace sf::offload {

nlohmann::ordered_json OffloadStats::to_json() const {
  const double t = tokens ? double(tokens) : 1.0;
  const double ts = timed_steps > 0 ? timed_steps : 1.0;
  // Without --stats nothing is checked or timed: those fields are null, not a perfect-looking default.
  const auto checked = [&](double v) { return exact_rows > 0 ? nlohmann::json(v) : nlohmann::json(nullptr); };
  const auto timed = [&](double v) { return timed_steps > 0 ? nlohmann::json(v / ts) : nlohmann::json(nullptr); };
  return {{"tokens", tokens},
          {"active_per_token", active / t},
          {"hit_rate", hit_rate()},
          {"fetched_per_token", fetched / t},
          {"overflow_per_token", overflow / t},
          {"cpu_neurons_per_token", cpu_neurons / t},
          {"pcie_bytes_per_token", bytes_per_token()},
          {"recall", checked(recall())},
          {"precision", checked(precision())},
          {"recall_checked_rows", exact_rows},
          {"layers_ms_per_token", timed(step_ms)},
          {"transfer_ms_per_token", timed(transfer_ms)},
          {"wait_ms_per_token", timed(wait_ms)},
          {"compute_ms_per_token", timed(step_ms - wait_ms)}};
}

}  // namespace sf::offload
