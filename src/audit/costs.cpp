#include "audit/costs.hpp"

#include <fmt/format.h>

namespace sf::audit {

CostModel cost_model(const CostInputs& in, const std::string& gpu, const GpuSpec* spec) {
  CostModel m;
  m.watts = in.power_watts;
  if (m.watts) {
    m.assumptions.push_back(
        {"power per GPU", fmt::format("{} W", *m.watts), "user flag --power-watts"});
  } else if (spec) {
    m.watts = spec->tdp_watts;
    m.assumptions.push_back(
        {"power per GPU", fmt::format("{} W", spec->tdp_watts),
         fmt::format("{}: board TDP of the {}, an upper bound on the GPU's draw (host, cooling and "
                     "PUE not included); measure with nvidia-smi and pass --power-watts",
                     spec->source, spec->name)});
  } else {
    m.not_computed.push_back(fmt::format(
        "energy and CO2: no published power figure for \"{}\" in this tool's table; pass "
        "--power-watts W (e.g. the board power that nvidia-smi reports under load)",
        gpu));
  }
  if (in.price_per_gpu_hour)
    m.assumptions.push_back({"price per GPU-hour", fmt::format("{}", *in.price_per_gpu_hour),
                             "user flag --price-per-gpu-hour"});
  else
    m.not_computed.push_back(
        "yearly cost: prices vary by provider and contract, so there is no default; pass "
        "--price-per-gpu-hour P (e.g. your cloud's on-demand rate for this GPU)");
  if (in.grid_g_per_kwh)
    m.assumptions.push_back({"grid carbon intensity",
                             fmt::format("{} gCO2/kWh", *in.grid_g_per_kwh),
                             "user flag --grid-gco2-per-kwh"});
  else if (m.watts)
    m.not_computed.push_back(
        "yearly CO2: grid carbon intensity depends on the region and the hour, so there is no "
        "default; pass --grid-gco2-per-kwh G (your utility's or region's published figure)");
  m.assumptions.push_back({"hours per year", "8760", "24 h x 365 days, GPUs provisioned all year"});
  return m;
}

YearlyFigures yearly_figures(int64_t gpus, const CostInputs& in, const CostModel& m) {
  YearlyFigures y;
  if (in.price_per_gpu_hour) y.cost = yearly_cost(gpus, *in.price_per_gpu_hour);
  if (m.watts) y.kwh = yearly_kwh(gpus, *m.watts);
  if (m.watts && in.grid_g_per_kwh) y.tonnes_co2 = tonnes_co2(*y.kwh, *in.grid_g_per_kwh);
  return y;
}

}  // namespace sf::audit
