// sparseflow profile: measure a model's FFN activation statistics over calibration text (firing
// rate per neuron, per-token sparsity, hot fraction, consecutive-token overlap), print them, and
// store the rates in the .sf file (atomically) for the planner and `convert --neuron-major`.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "backend/backends.hpp"
#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/output_path.hpp"
#include "model/weights.hpp"
#include "offload/profile.hpp"

namespace sf::cli {

namespace {

struct ProfileArgs {
  std::string model, calibration, device = "auto";
  int64_t tokens = 2048, window = 0;
  bool no_write = false, json = false, force = false;
  std::string output;  // empty: the model's own file, rewritten in place
  int threads = 0;
};

void run_profile(const ProfileArgs& a) {
  namespace fs = std::filesystem;
  set_cpu_threads(a.threads);
  const bool is_sf = fs::is_regular_file(a.model);
  if (!is_sf && !a.no_write)
    fail(Status::InvalidArgument,
         "--model '{}' is not a .sf file: the profile is stored in .sf files. Convert it with "
         "`sparseflow convert`, or add --no-write to only print the statistics",
         a.model);
  model::OpenOptions oo;
  if (!a.output.empty())
    check_output({a.output, "--output"}, {{a.model, "--model"}, {a.calibration, "--calibration"}},
                 a.force);
  const auto m = model::Model::open(a.model, oo);
  const std::string text = read_text_file(a.calibration, "--calibration file");
  auto ids = model_tokenizer(*m).encode_with_bos(text, int32_t(m->config().bos_token_id));
  if (a.tokens > 0 && int64_t(ids.size()) > a.tokens) ids.resize(size_t(a.tokens));
  if (ids.size() < 16)
    fail(Status::InvalidArgument,
         "--calibration '{}' gives {} tokens; profiling needs text (hundreds of tokens or "
         "more)",
         a.calibration, ids.size());
  const bool gpu = resolve_gpu_device("profile", a.device);
  const auto t0 = std::chrono::steady_clock::now();
  offload::ProfileResult r;
  if (gpu) {  // the engine's prefill collects every layer's pre-activations, measured on the host
    offload::PredictorFitOptions po;
    po.window = a.window;
    po.attention_inputs = false;  // only z is counted
    r = offload::profile_collected(
        backend::require_cuda("profile --device cuda").collect_activations(*m, ids, po, 0));
  } else {
    offload::ProfileOptions po;
    po.window = a.window;
    r = offload::profile_activations(*m, ids, po);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!a.no_write)
    offload::write_profile(a.model, r, fs::path(a.calibration).filename().string(), a.output);
  const std::string& written = a.output.empty() ? a.model : a.output;
  if (a.json) {
    nlohmann::ordered_json j = {{"model", a.model},
                                {"tokens", r.tokens},
                                {"sparsity", r.sparsity},
                                {"sparsity_min", r.sparsity_min},
                                {"sparsity_max", r.sparsity_max},
                                {"hot_share", r.hot_share},
                                {"hot_fraction", r.hot_fraction},
                                {"jaccard", r.jaccard},
                                {"seconds", secs},
                                {"device", gpu ? "cuda" : "cpu"},
                                {"written", !a.no_write}};
    auto layers = nlohmann::ordered_json::array();
    for (const auto& l : r.layers)
      layers.push_back(
          {{"sparsity", l.sparsity}, {"hot_fraction", l.hot_fraction}, {"jaccard", l.jaccard}});
    j["layers"] = layers;
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("{}", offload::profile_table(r));
  fmt::print(
      "{:.1f} s ({:.0f} tokens/s on {}){}\n", secs, double(r.tokens) / secs,
      gpu ? std::string("the GPU") : fmt::format("{} CPU threads", cpu_threads()),
      a.no_write ? "" : fmt::format("; wrote profile.layers.N.firing_rate into {}", written));
}

}  // namespace

void add_profile_command(CLI::App& app) {
  auto a = std::make_shared<ProfileArgs>();
  auto* c = app.add_subcommand("profile",
                               "Measure FFN activation sparsity and per-neuron firing rates over "
                               "calibration text; store the rates in the .sf file");
  c->add_option("--model,-m", a->model,
                "the .sf file (rewritten in place, atomically: a complete new file replaces it, "
                "unless --output)")
      ->required();
  c->add_option("--output,-o", a->output,
                "write the model with its profile here instead of in place");
  c->add_flag("--force", a->force, "replace an existing --output");
  c->add_option("--calibration", a->calibration, "a UTF-8 text file")->required();
  c->add_option("--tokens", a->tokens, "use at most this many calibration tokens")
      ->capture_default_str();
  c->add_option("--window", a->window, "tokens per forward pass (0: max_position_embeddings)")
      ->capture_default_str();
  c->add_option("--device", a->device,
                "where the model runs: cpu (the CPU backend), cuda (the GPU engine's prefill), "
                "or auto (cuda when a GPU is present)")
      ->capture_default_str();
  c->add_flag("--no-write", a->no_write, "print the statistics only");
  c->add_flag("--json", a->json, "print JSON");
  c->add_option("--threads", a->threads, "CPU threads (0: OpenMP's default)")
      ->capture_default_str();
  c->callback([a] { run_profile(*a); });
}

}  // namespace sf::cli
