// OffloadStats' JSON form (every build: the CLI prints it).
#include "offload/offloaded_opt.hpp"

namespace sf::offload {

nlohmann::ordered_json OffloadStats::to_json() const {
  const double t = tokens ? double(tokens) : 1.0;
  const double ts = timed_steps > 0 ? timed_steps : 1.0;
  return {{"tokens", tokens},
          {"active_per_token", active / t},
          {"hit_rate", hit_rate()},
          {"fetched_per_token", fetched / t},
          {"overflow_per_token", overflow / t},
          {"cpu_neurons_per_token", cpu_neurons / t},
          {"pcie_bytes_per_token", bytes_per_token()},
          {"recall", recall()},
          {"precision", precision()},
          {"recall_checked_rows", exact_rows},
          {"layers_ms_per_token", step_ms / ts},
          {"transfer_ms_per_token", transfer_ms / ts},
          {"wait_ms_per_token", wait_ms / ts},
          {"compute_ms_per_token", (step_ms - wait_ms) / ts}};
}

}  // namespace sf::offload
