// sparseflow calibrate: fit per-layer activation predictors (low-rank, on the attention input) over
// calibration text, measure their recall and precision on held-out tokens, and store them in the
// .sf file (atomically). docs/OFFLOAD.md explains the predictor and its cost.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>

#include "backend/backends.hpp"
#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/output_path.hpp"
#include "model/weights.hpp"
#include "offload/predictor_fit.hpp"
#include "offload/profile.hpp"

namespace sf::cli {

namespace {

struct CalibrateArgs {
  std::string model, calibration, layers, device = "auto";
  int64_t tokens = 1024, rank = 128, window = 0;
  double recall = 0.99, margin = 0.0, heldout = 0.2, ridge = 1e-3;
  bool no_write = false, with_profile = false, force = false;
  std::string output;  // empty: the model's own file, rewritten in place
  int threads = 0;
};

// MemAvailable of /proc/meminfo in bytes, or 0 where it cannot be read.
uint64_t available_host_memory() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

// "0-3,7" -> {0, 1, 2, 3, 7}
std::vector<int64_t> parse_layers(const std::string& s) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t comma = std::min(s.find(',', pos), s.size());
    const std::string item = s.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    try {
      const size_t dash = item.find('-');
      const int64_t a = std::stoll(item.substr(0, dash));
      const int64_t b = dash == std::string::npos ? a : std::stoll(item.substr(dash + 1));
      if (a < 0 || b < a) throw std::invalid_argument(item);
      for (int64_t l = a; l <= b; ++l) out.push_back(l);
    } catch (const std::exception&) {
      fail(Status::InvalidArgument, "--layers: \"{}\" is not a layer or range like 0-3", item);
    }
  }
  return out;
}

void run_calibrate(const CalibrateArgs& a) {
  namespace fs = std::filesystem;
  const bool gpu = resolve_gpu_device("calibrate", a.device);
  set_cpu_threads(a.threads);
  if (!fs::is_regular_file(a.model) && !a.no_write)
    fail(Status::InvalidArgument,
         "--model '{}' is not a .sf file: predictors are stored in .sf files. Convert it "
         "first, or add --no-write",
         a.model);
  if (!a.output.empty())
    check_output({a.output, "--output"}, {{a.model, "--model"}, {a.calibration, "--calibration"}},
                 a.force);
  const auto m = model::Model::open(a.model);
  const std::string text = read_text_file(a.calibration, "--calibration file");
  auto ids = model_tokenizer(*m).encode_with_bos(text, int32_t(m->config().bos_token_id));
  if (a.tokens > 0 && int64_t(ids.size()) > a.tokens) ids.resize(size_t(a.tokens));
  if (ids.size() < 32)
    fail(Status::InvalidArgument,
         "--calibration '{}' gives {} tokens; calibrating needs hundreds or more", a.calibration,
         ids.size());
  offload::PredictorFitOptions po;
  po.rank = a.rank;
  po.recall = a.recall;
  po.margin = a.margin;
  po.heldout = a.heldout;
  po.ridge = a.ridge;
  po.window = a.window;
  po.layers = parse_layers(a.layers);
  if (gpu)  // the fits' large fp64 products too
    po.gpu_solver = [](const double* ac, const double* zc, int64_t t1, int64_t d, int64_t ffn) {
      return backend::require_cuda("the predictor fit on the GPU").reduced_rank(ac, zc, t1, d, ffn);
    };
  const auto& c = m->config();
  const int64_t nl = po.layers.empty() ? c.num_hidden_layers : int64_t(po.layers.size());
  const double pairs = double(nl) * double(ids.size()) * double(c.hidden_size + c.ffn_dim) * 4;
  if (const uint64_t avail = available_host_memory(); avail > 0 && pairs > 0.9 * double(avail))
    fail(Status::OutOfMemory,
         "calibrate: the (attention input, pre-activation) pairs of {} tokens x {} layers need "
         "{:.1f} GiB of host memory, and {:.1f} GiB is available.\n---> HINT: lower --tokens, or "
         "calibrate a few layers "
         "at a time with --layers (each run keeps the other layers' predictors).",
         ids.size(), nl, pairs / double(1ull << 30), double(avail) / double(1ull << 30));
  fmt::print(
      stderr,
      "calibrate: {} tokens, {} layers; collecting {:.1f} MiB of (attention input, pre-activation) "
      "pairs on the {}\n",
      ids.size(), nl, pairs / (1 << 20), gpu ? "GPU" : "CPU");
  offload::CollectedActivations col =
      gpu ? backend::require_cuda("calibrate --device cuda").collect_activations(*m, ids, po, 0)
          : offload::collect_activations_cpu(*m, ids, po);
  std::optional<offload::ProfileResult> prof;
  if (a.with_profile) {  // from the same forward passes, before the fit releases them
    if (!po.layers.empty())
      fail(Status::InvalidArgument,
           "calibrate --with-profile measures every layer; drop --layers, or run "
           "`sparseflow profile` separately");
    prof = offload::profile_collected(col);
  }
  const auto r = offload::fit_collected(col, po);
  if (prof) fmt::print("activation profile:\n{}", offload::profile_table(*prof));
  fmt::print("{}", offload::calibration_table(r));
  fmt::print("forward pass {:.1f} s ({}), fits {:.1f} s ({}{} CPU threads)\n", r.forward_seconds,
             gpu ? "GPU" : "CPU", r.fit_seconds, gpu ? "GPU products, " : "", cpu_threads());
  if (!a.no_write) {
    const std::string name = fs::path(a.calibration).filename().string();
    std::vector<offload::NewTensor> add;
    nlohmann::json meta = nlohmann::json::object();
    offload::predictor_entries(r, po, name, add, meta);
    if (prof) offload::profile_entries(*prof, name, add, meta);
    const std::function<bool(const std::string&)> drop_old_profile = offload::is_profile_entry;
    offload::rewrite_sf(a.model, add, meta, prof ? drop_old_profile : nullptr, a.output);
    fmt::print("wrote predictor.layers.N.{{u,v,threshold}} ({:.2f} MiB){} into {}\n",
               double(r.bytes) / (1 << 20), prof ? " and profile.layers.N.firing_rate" : "",
               a.output.empty() ? a.model : a.output);
  }
}

}  // namespace

void add_calibrate_command(CLI::App& app) {
  auto a = std::make_shared<CalibrateArgs>();
  auto* c =
      app.add_subcommand("calibrate",
                         "Fit per-layer FFN activation predictors on calibration text and store "
                         "them in the .sf file");
  c->add_option("--model,-m", a->model,
                "the .sf file (rewritten in place, atomically: a complete new file replaces it, "
                "unless --output)")
      ->required();
  c->add_option("--output,-o", a->output,
                "write the model with its predictors here instead of in place");
  c->add_flag("--force", a->force, "replace an existing --output");
  c->add_option("--calibration", a->calibration, "a UTF-8 text file")->required();
  c->add_option("--tokens", a->tokens, "use at most this many calibration tokens")
      ->capture_default_str();
  c->add_option("--rank", a->rank, "predictor rank R (u [hidden, R], v [R, ffn])")
      ->capture_default_str();
  c->add_option("--recall", a->recall, "target recall on the fit tokens")->capture_default_str();
  c->add_option("--margin", a->margin,
                "extra residual standard deviations of safety (more recall, more bytes)")
      ->capture_default_str();
  c->add_option("--heldout", a->heldout,
                "fraction of tokens (the last) kept to measure recall/precision")
      ->capture_default_str();
  c->add_option("--ridge", a->ridge, "Gram regularisation relative to its mean diagonal")
      ->capture_default_str();
  c->add_option("--layers", a->layers, "only these layers, e.g. 0-7,12 (default: all)");
  c->add_option("--window", a->window, "tokens per forward pass (0: max_position_embeddings)")
      ->capture_default_str();
  c->add_option("--device", a->device,
                "where the forward passes and the fits' large fp64 products run: cpu, cuda, or "
                "auto (cuda when a GPU is present)")
      ->capture_default_str();
  c->add_flag(
      "--with-profile", a->with_profile,
      "also measure the activation profile (per-neuron firing rates, as "
      "`sparseflow profile` does) from the same forward passes and store it with the predictors");
  c->add_flag("--no-write", a->no_write, "print the measurements only");
  c->add_option("--threads", a->threads, "CPU threads (0: OpenMP's default)")
      ->capture_default_str();
  c->callback([a] { run_calibrate(*a); });
}

}  // namespace sf::cli
