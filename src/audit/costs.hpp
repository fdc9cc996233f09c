// What a GPU count costs in a year: money, energy and CO2, with the power, price and grid
// assumptions printed beside them and their sources. Shared by the audit from benchmarks
// (audit.hpp) and the audit from measured serving (serving.hpp). Nothing has a default that a
// datasheet does not give: without a price or a grid intensity those figures are "not computed".
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "audit/audit.hpp"

namespace sf::audit {

struct CostInputs {
  std::optional<double> price_per_gpu_hour, power_watts, grid_g_per_kwh;  // the user's flags
};

struct CostModel {
  std::optional<double> watts;  // per GPU: --power-watts, else the datasheet TDP, else unknown
  std::vector<Assumption> assumptions;
  std::vector<std::string> not_computed;
};

// The assumptions for GPUs named `gpu` whose datasheet row is `spec` (nullptr: not in the table).
CostModel cost_model(const CostInputs& in, const std::string& gpu, const GpuSpec* spec);

struct YearlyFigures {
  std::optional<double> cost, kwh, tonnes_co2;
};
// The yearly figures of `gpus` GPUs that the inputs allow.
YearlyFigures yearly_figures(int64_t gpus, const CostInputs& in, const CostModel& m);

}  // namespace sf::audit
