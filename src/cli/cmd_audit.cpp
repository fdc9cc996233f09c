// sparseflow audit: GPUs needed to serve Q requests/s dense vs 2:4, their yearly cost, energy and
// CO2, with every assumption and its source printed. Throughput comes only from measurements
// (--from-benchmark files, else the shipped table data/measured/); when none covers the model it
// says which measurements to make and exits 2. The arithmetic is in src/audit/audit.cpp. With
// --from-serve-dense and --from-serve-sparse it audits from measured serving instead
// (cmd_audit_serving.cpp).
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>

#include "audit/audit.hpp"
#include "audit/measurements.hpp"
#include "audit/serving.hpp"
#include "cli/commands.hpp"
#include "cli/table.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "report/svg_plot.hpp"

namespace sf::cli {

// cmd_audit_serving.cpp
void run_serving_audit_command(const audit::ServingRequest& req, const std::string& model,
                               const std::string& dense_file, const std::string& sparse_file,
                               bool json, const std::string& plot);

namespace {

namespace fs = std::filesystem;
using audit::ModelShape;

struct AuditOptions {
  std::string model;
  double qps = 0;
  std::optional<double> tokens_in, tokens_out, price, watts, grid;
  std::optional<std::string> gpu;
  std::optional<int64_t> batch;
  std::vector<std::string> from_benchmark;
  std::string from_serve_dense, from_serve_sparse;  // bench-serve --json files
  std::optional<double> latency_limit_ms;
  bool no_shipped = false;
  bool json = false;
  std::string plot;
};

std::string known_model_names() {
  std::string s;
  for (const auto& m : audit::known_models()) s += (s.empty() ? "" : ", ") + m.name;
  return s;
}

// A name from the table of published shapes, or a Hugging Face config.json / checkpoint folder.
ModelShape resolve_model(const std::string& arg) {
  if (const ModelShape* m = audit::find_model(arg)) return *m;
  fs::path p(arg);
  std::error_code ec;
  if (fs::is_directory(p, ec)) p /= "config.json";
  if (!fs::exists(p, ec) || p.extension() != ".json")
    fail(Status::NotFound,
         "unknown model \"{}\": expected one of {} or a Hugging Face checkpoint folder / "
         "config.json "
         "(for a .sf file, pass the architecture it was converted from, e.g. --model opt-6.7b)",
         arg, known_model_names());
  nlohmann::json cfg =
      nlohmann::json::parse(read_text_file(p.string(), "config file"), nullptr, false);
  if (cfg.is_discarded() || !cfg.is_object())
    fail(Status::Format, "\"{}\" is not a JSON object; expected a Hugging Face config.json",
         p.string());
  // value() throws a json exception on a non-string; a config may hold anything.
  auto text = [&](const char* key) {
    const auto it = cfg.find(key);
    return it != cfg.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  const std::string type = text("model_type");
  if (type != "opt" && type != "llama")
    fail(Status::UnsupportedShape,
         "\"{}\": model_type \"{}\" is not one the audit knows; expected \"opt\" or \"llama\"",
         p.string(), type);
  auto get = [&](const char* key) -> int64_t {
    if (!cfg.contains(key) || !cfg[key].is_number_integer())
      fail(Status::Format, "\"{}\": expected an integer \"{}\" in the config, found none",
           p.string(), key);
    return cfg[key].get<int64_t>();
  };
  ModelShape m;
  m.family = type;
  m.hidden = get("hidden_size");
  m.layers = get("num_hidden_layers");
  m.ffn = get(type == "opt" ? "ffn_dim" : "intermediate_size");
  m.vocab = get("vocab_size");
  const std::string id = text("_name_or_path");
  m.name = audit::normalize_model_name(
      !id.empty() ? id : fs::absolute(p).parent_path().filename().string());
  m.source = "config file " + p.string();
  return m;
}

std::string money(double v) {
  return fmt::format("{:.0f}", v);
}

nlohmann::ordered_json side_json(const audit::Side& s) {
  nlohmann::ordered_json j = {{"label", s.label},
                              {"batch", s.batch},
                              {"prefill_tokens_per_s", s.prefill_tps},
                              {"decode_tokens_per_s", s.decode_tps},
                              {"requests_per_s_per_gpu", s.rps_per_gpu},
                              {"gpus", s.gpus}};
  j["cost_per_year"] = s.cost_per_year ? nlohmann::ordered_json(*s.cost_per_year) : nullptr;
  j["kwh_per_year"] = s.kwh_per_year ? nlohmann::ordered_json(*s.kwh_per_year) : nullptr;
  j["tonnes_co2_per_year"] =
      s.tonnes_co2_per_year ? nlohmann::ordered_json(*s.tonnes_co2_per_year) : nullptr;
  j["measured_by"] = s.measured_by;
  return j;
}

void print_json(const audit::Report& r) {
  nlohmann::ordered_json j = {{"model", r.model},
                              {"gpu", r.gpu},
                              {"qps", r.qps},
                              {"tokens_in", r.tokens_in},
                              {"tokens_out", r.tokens_out},
                              {"linear_layer_bound", r.linear_layer_bound},
                              {"dense", side_json(r.dense)},
                              {"sparse", side_json(r.sparse)}};
  j["assumptions"] = nlohmann::ordered_json::array();
  for (const auto& a : r.assumptions)
    j["assumptions"].push_back({{"what", a.what}, {"value", a.value}, {"source", a.source}});
  j["not_computed"] = r.not_computed;
  fmt::print("{}\n", j.dump(2));
}

void print_text(const audit::Report& r) {
  fmt::print("SparseFlow audit: {} at {} requests/s ({} tokens in, {} out) on {}\n", r.model, r.qps,
             r.tokens_in, r.tokens_out, r.gpu);
  if (r.linear_layer_bound)
    fmt::print(
        "BOUND, not a measurement of the model: throughput from GEMM timings of the linear layers "
        "alone,\n"
        "so these GPU counts are the least that could serve the load; the real counts are "
        "higher.\n");
  fmt::print("\n");
  Table t({"", r.dense.label, r.sparse.label});
  t.add_row({"serving batch", fmt::format("{}", r.dense.batch), fmt::format("{}", r.sparse.batch)});
  t.add_row({"prefill tokens/s per GPU", format_number(r.dense.prefill_tps),
             format_number(r.sparse.prefill_tps)});
  t.add_row({"decode tokens/s per GPU", format_number(r.dense.decode_tps),
             format_number(r.sparse.decode_tps)});
  t.add_row({"requests/s per GPU", format_number(r.dense.rps_per_gpu),
             format_number(r.sparse.rps_per_gpu)});
  t.add_row({r.linear_layer_bound ? "GPUs needed (at least)" : "GPUs needed",
             fmt::format("{}", r.dense.gpus), fmt::format("{}", r.sparse.gpus)});
  if (r.dense.cost_per_year)
    t.add_row({"cost per year", money(*r.dense.cost_per_year), money(*r.sparse.cost_per_year)});
  if (r.dense.kwh_per_year)
    t.add_row(
        {"energy per year (kWh)", money(*r.dense.kwh_per_year), money(*r.sparse.kwh_per_year)});
  if (r.dense.tonnes_co2_per_year)
    t.add_row({"CO2 per year (t)", fmt::format("{:.1f}", *r.dense.tonnes_co2_per_year),
               fmt::format("{:.1f}", *r.sparse.tonnes_co2_per_year)});
  fmt::print("{}\n", t.str());
  fmt::print("Assumptions (value; source):\n");
  for (const auto& a : r.assumptions)
    fmt::print("  - {}: {}\n      source: {}\n", a.what, a.value, a.source);
  fmt::print("Measurements used:\n");
  for (const auto& s : {r.dense, r.sparse})
    for (const auto& m : s.measured_by) fmt::print("  - {}: {}\n", s.label, m);
  if (!r.not_computed.empty()) {
    fmt::print("Not computed:\n");
    for (const auto& n : r.not_computed) fmt::print("  - {}\n", n);
  }
}

// The serving mode needs no model shape: a name from the table is normalised, any other is a label.
void run_serving_mode(const AuditOptions& o) {
  audit::ServingRequest req;
  req.qps = o.qps;
  req.tokens_in = o.tokens_in;
  req.tokens_out = o.tokens_out;
  req.latency_limit_ms = o.latency_limit_ms;
  req.gpu = o.gpu;
  req.price_per_gpu_hour = o.price;
  req.power_watts = o.watts;
  req.grid_g_per_kwh = o.grid;
  const ModelShape* known = audit::find_model(o.model);
  run_serving_audit_command(req, known ? known->name : o.model, o.from_serve_dense,
                            o.from_serve_sparse, o.json, o.plot);
}

void run_audit_command(const AuditOptions& o) {
  if (!o.from_serve_dense.empty()) return run_serving_mode(o);
  const ModelShape model = resolve_model(o.model);
  audit::Measurements meas;
  for (const auto& f : o.from_benchmark)
    audit::load_measurement_file(f, /*require_provenance=*/false, meas);
  std::string searched = o.from_benchmark.empty() ? "" : "the --from-benchmark files";
  if (o.from_benchmark.empty() && !o.no_shipped) {
    const fs::path dir = audit::shipped_measurement_dir();
    if (dir.empty()) {
      searched = "no shipped table (set SPARSEFLOW_DATA_DIR to the folder holding measured/)";
    } else {
      const int files = audit::load_measurement_dir(dir, meas);
      searched = fmt::format("the shipped table {} ({} files)", dir.string(), files);
    }
  }
  audit::Request req;
  req.qps = o.qps;
  req.tokens_in = o.tokens_in;
  req.tokens_out = o.tokens_out;
  req.gpu = o.gpu;
  req.batch = o.batch;
  req.price_per_gpu_hour = o.price;
  req.power_watts = o.watts;
  req.grid_g_per_kwh = o.grid;
  audit::Report r;
  try {
    r = audit::run_audit(req, model, meas);
  } catch (const Error& e) {
    if (e.status() != Status::NotFound || searched.empty()) throw;
    throw Error(e.status(), fmt::format("{}\n  Searched: {}.", e.what(), searched));
  }
  if (o.json)
    print_json(r);
  else
    print_text(r);
  if (!o.plot.empty()) {
    report::BarChart c;
    c.title = fmt::format("GPUs to serve {} req/s of {} on {}{}", r.qps, r.model, r.gpu,
                          r.linear_layer_bound ? " (lower bound)" : "");
    c.y_label = "GPUs";
    c.bars = {{r.dense.label, double(r.dense.gpus)}, {r.sparse.label, double(r.sparse.gpus)}};
    report::write_svg(report::render_bar_chart(c), o.plot);
  }
}

}  // namespace

void add_audit_command(CLI::App& app) {
  auto o = std::make_shared<AuditOptions>();
  CLI::App* cmd = app.add_subcommand("audit",
                                     "GPUs, yearly cost and CO2 to serve a load dense vs 2:4, from "
                                     "measured throughput only; every "
                                     "assumption is printed with its source (docs/DEPLOYMENT.md)");
  cmd->add_option("--model", o->model,
                  "model name (" + known_model_names() + ") or a Hugging Face config.json / folder")
      ->required();
  cmd->add_option("--qps", o->qps, "requests per second to serve")
      ->required()
      ->check(CLI::PositiveNumber);
  cmd->add_option(
         "--tokens-in", o->tokens_in,
         "prompt tokens per request (default 128; serving mode: the measured --prompt-tokens)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option(
         "--tokens-out", o->tokens_out,
         "generated tokens per request (default 256; serving mode: the measured --max-tokens)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--gpu", o->gpu,
                  "use measurements from the GPU whose name contains this (e.g. H100)");
  auto* batch =
      cmd->add_option("--batch", o->batch,
                      "serving batch (default: the best measured one that fits in memory)")
          ->check(CLI::PositiveNumber);
  cmd->add_option("--price-per-gpu-hour", o->price, "price of one GPU-hour (no default)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--power-watts", o->watts,
                  "power per GPU in W (default: the GPU's datasheet TDP)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--grid-gco2-per-kwh", o->grid, "grid carbon intensity in gCO2/kWh (no default)")
      ->check(CLI::NonNegativeNumber);
  auto* from_benchmark =
      cmd->add_option(
             "--from-benchmark", o->from_benchmark,
             "a `sparseflow benchmark --json` file (repeatable); replaces the shipped table")
          ->check(CLI::ExistingFile);
  auto* no_shipped =
      cmd->add_flag("--no-shipped", o->no_shipped, "do not read the shipped table data/measured/");
  // The serving mode: goodput measured by `sparseflow bench-serve`, one server per GPU.
  auto* dense = cmd->add_option("--from-serve-dense", o->from_serve_dense,
                                "serving mode: a `sparseflow bench-serve --json` file of the dense "
                                "model's server (with --from-serve-sparse)")
                    ->check(CLI::ExistingFile);
  auto* sparse = cmd->add_option("--from-serve-sparse", o->from_serve_sparse,
                                 "serving mode: the same measurement of the 2:4 model's server")
                     ->check(CLI::ExistingFile);
  dense->needs(sparse);
  sparse->needs(dense);
  for (auto* other : {from_benchmark, no_shipped, batch}) dense->excludes(other);
  cmd->add_option("--latency-limit-ms", o->latency_limit_ms,
                  "serving mode: the latency limit the goodput was measured under (TTFT and each "
                  "request's p99 inter-token gap); must equal the measurements'")
      ->needs(dense)
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--json", o->json, "print the result as JSON on stdout");
  cmd->add_option("--plot", o->plot, "also write a bar chart of the GPU counts to this .svg file");
  cmd->callback([o] { run_audit_command(*o); });
}

}  // namespace sf::cli
