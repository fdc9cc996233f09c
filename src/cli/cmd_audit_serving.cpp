// sparseflow audit --from-serve-dense F --from-serve-sparse G: the audit from measured serving.
// GPUs = ceil(qps / goodput per GPU), goodput as `sparseflow bench-serve` measured it under a
// latency limit, one server per GPU; cost and CO2 as the benchmark audit computes them. The
// arithmetic and the refusals are in src/audit/serving.cpp.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "audit/serve_measurements.hpp"
#include "audit/serving.hpp"
#include "cli/table.hpp"
#include "report/svg_plot.hpp"

namespace sf::cli {

namespace {

using nlohmann::ordered_json;

std::string whole(double v) {
  return fmt::format("{:.0f}", v);
}

ordered_json side_json(const audit::ServingSide& s) {
  const audit::ServePoint& p = s.point;
  ordered_json j = {{"label", s.label},
                    {"offered_rate", p.rate},
                    {"requests", p.requests},
                    {"good", p.good},
                    {"ttft_p99_ms", p.ttft_p99_ms},
                    {"itl_p99_ms", p.itl_p99_ms},
                    {"output_tokens_per_s", p.output_tokens_per_s},
                    {"goodput_requests_per_s_per_gpu", s.goodput_per_gpu},
                    {"gpus", s.gpus}};
  j["cost_per_year"] = s.cost_per_year ? ordered_json(*s.cost_per_year) : nullptr;
  j["kwh_per_year"] = s.kwh_per_year ? ordered_json(*s.kwh_per_year) : nullptr;
  j["tonnes_co2_per_year"] = s.tonnes_co2_per_year ? ordered_json(*s.tonnes_co2_per_year) : nullptr;
  j["measured_by"] = s.measured_by;
  return j;
}

void print_json(const audit::ServingReport& r) {
  ordered_json j = {{"mode", "serving"},
                    {"model", r.model},
                    {"gpu", r.gpu},
                    {"qps", r.qps},
                    {"prompt_tokens", r.prompt_tokens},
                    {"max_tokens", r.max_tokens},
                    {"latency_limit_ms", r.latency_limit_ms},
                    {"dense", side_json(r.dense)},
                    {"sparse", side_json(r.sparse)}};
  j["assumptions"] = ordered_json::array();
  for (const auto& a : r.assumptions)
    j["assumptions"].push_back({{"what", a.what}, {"value", a.value}, {"source", a.source}});
  j["not_computed"] = r.not_computed;
  fmt::print("{}\n", j.dump(2));
}

void print_text(const audit::ServingReport& r) {
  fmt::print(
      "SparseFlow audit from measured serving: {} at {} requests/s (about {} prompt tokens, up "
      "to {} out), latency limit {} ms, on {}\n\n",
      r.model, r.qps, r.prompt_tokens, r.max_tokens, r.latency_limit_ms, r.gpu);
  Table t({"", r.dense.label, r.sparse.label});
  auto row = [&](const char* name, auto&& f) { t.add_row({name, f(r.dense), f(r.sparse)}); };
  row("best offered rate (req/s)", [](const audit::ServingSide& s) { return s.point.rate; });
  row("requests within the limit", [](const audit::ServingSide& s) {
    return fmt::format("{} of {}", s.point.good, s.point.requests);
  });
  row("TTFT p99 (ms)",
      [](const audit::ServingSide& s) { return fmt::format("{:.1f}", s.point.ttft_p99_ms); });
  row("inter-token p99 (ms)",
      [](const audit::ServingSide& s) { return fmt::format("{:.1f}", s.point.itl_p99_ms); });
  row("output tokens/s per GPU",
      [](const audit::ServingSide& s) { return format_number(s.point.output_tokens_per_s); });
  row("goodput req/s per GPU",
      [](const audit::ServingSide& s) { return format_number(s.goodput_per_gpu); });
  row("GPUs needed", [](const audit::ServingSide& s) { return fmt::format("{}", s.gpus); });
  if (r.dense.cost_per_year)
    row("cost per year", [](const audit::ServingSide& s) { return whole(*s.cost_per_year); });
  if (r.dense.kwh_per_year)
    row("energy per year (kWh)",
        [](const audit::ServingSide& s) { return whole(*s.kwh_per_year); });
  if (r.dense.tonnes_co2_per_year)
    row("CO2 per year (t)",
        [](const audit::ServingSide& s) { return fmt::format("{:.1f}", *s.tonnes_co2_per_year); });
  fmt::print("{}\n", t.str());
  fmt::print("Assumptions (value; source):\n");
  for (const auto& a : r.assumptions)
    fmt::print("  - {}: {}\n      source: {}\n", a.what, a.value, a.source);
  fmt::print("Measurements used:\n");
  for (const auto* s : {&r.dense, &r.sparse}) fmt::print("  - {}: {}\n", s->label, s->measured_by);
  if (!r.not_computed.empty()) {
    fmt::print("Not computed:\n");
    for (const auto& n : r.not_computed) fmt::print("  - {}\n", n);
  }
}

}  // namespace

void run_serving_audit_command(const audit::ServingRequest& req, const std::string& model,
                               const std::string& dense_file, const std::string& sparse_file,
                               bool json, const std::string& plot) {
  const audit::ServeMeasurement dense = audit::load_serve_measurement(dense_file);
  const audit::ServeMeasurement sparse = audit::load_serve_measurement(sparse_file);
  const audit::ServingReport r = audit::run_serving_audit(req, model, dense, sparse);
  if (json)
    print_json(r);
  else
    print_text(r);
  if (!plot.empty()) {
    report::BarChart c;
    c.title = fmt::format("GPUs to serve {} req/s of {} on {} within {} ms", r.qps, r.model, r.gpu,
                          r.latency_limit_ms);
    c.y_label = "GPUs";
    c.bars = {{r.dense.label, double(r.dense.gpus)}, {r.sparse.label, double(r.sparse.gpus)}};
    report::write_svg(report::render_bar_chart(c), plot);
  }
}

}  // namespace sf::cli
