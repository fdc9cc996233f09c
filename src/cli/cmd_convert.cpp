// sparseflow convert: a Hugging Face checkpoint directory or a GGUF file -> one .sf file, dense or
// 2:4 (magnitude, Wanda or SparseGPT pruning). The output appears only when complete (written
// atomically).
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>

#include "backend/backends.hpp"
#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "cli/table.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/output_path.hpp"
#include "core/progress.hpp"
#include "model/convert.hpp"
#include "model/cpu_engine.hpp"
#include "model/sensitivity.hpp"
#include "model/sparsegpt_model.hpp"
#include "model/weights.hpp"
#include "tokenizer/bpe.hpp"

namespace sf::cli {

namespace {

struct ConvertArgs {
  std::string input, output, sparsity = "none", method = "magnitude", calibration, dtype = "fp16";
  std::string config;  // a bare .pt's config.json when it is not beside the file
  int64_t calibration_tokens = 4096;
  int64_t calibration_window = 0;
  std::string device = "auto";
  double dampening = 0.01;  // SparseGPT
  bool dampening_given = false;
  std::string max_ppl_increase;  // a mixed plan's budget, 5% or 0.05
  bool json = false, force = false;
  bool neuron_major = false, keep_order = false;  // neuron bundles
};

// "5%" or "0.05" -> 0.05.
double parse_increase(const std::string& s) {
  const bool percent = !s.empty() && s.back() == '%';
  const std::string num = percent ? s.substr(0, s.size() - 1) : s;
  size_t used = 0;
  double v = -1;
  try {
    v = std::stod(num, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (num.empty() || used != num.size() || !(v >= 0) || !std::isfinite(v))
    fail(Status::InvalidArgument,
         "--max-ppl-increase '{}': expected a perplexity increase >= 0, as a percentage (5%) or "
         "a fraction (0.05)",
         s);
  return percent ? v / 100.0 : v;
}

std::string mib(uint64_t b) {
  return fmt::format("{:.2f} MiB", double(b) / (1 << 20));
}

// A model without a tokenizer converts, but its .sf file then runs from token ids only; say so now
// rather than at generate time, with the files that were looked for.
void warn_if_no_tokenizer(const model::Model& src, const std::string& input,
                          const std::string& output) {
  namespace fs = std::filesystem;
  if (!src.tokenizer_json().empty() || !src.tokenizer_model().empty() ||
      (!src.vocab_json().empty() && !src.merges_txt().empty()))
    return;
  std::string looked;
  if (src.source_format() == "hf") {
    // A bare torch.save() file reads its tokenizer from the folder it sits in.
    const fs::path dir = fs::is_directory(input) ? fs::path(input) : fs::path(input).parent_path();
    std::vector<std::string> found;
    for (const char* f : {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer.model"})
      if (fs::exists(dir / f)) found.push_back(f);
    looked = fmt::format("looked for {}, {}, or {} and {}; found {}",
                         (dir / "tokenizer.json").string(), (dir / "tokenizer.model").string(),
                         (dir / "vocab.json").string(), (dir / "merges.txt").string(),
                         found.empty() ? "none" : fmt::format("only {}", fmt::join(found, ", ")));
  } else {
    looked = fmt::format("looked for tokenizer metadata in {}", input);
  }
  fmt::print(
      stderr,
      "convert: warning: the input has no tokenizer ({}), so {} will have none. generate --prompt "
      "and perplexity --text need one; --ids still works. To include it, put the checkpoint's "
      "tokenizer.json (or tokenizer.model, or vocab.json and merges.txt) in its directory and "
      "re-run convert.\n",
      looked, output);
}

// One row per decoder layer, one column per linear (named by its last part: q_proj, ...,
// down_proj).
void print_layer_table(const model::ConvertReport& rep, const arch::ModelDesc& c, bool output) {
  fmt::print("{}", output
                       ? "\nrelative output error ||(W - W_2:4) X|| / ||W X|| on the calibration "
                         "tokens, per layer:\n"
                       : "\nrelative pruning error ||W - W_2:4|| / ||W|| per layer:\n");
  const auto linears = c.layer_linears();
  std::vector<std::string> head = {"layer"};
  for (const auto& l : linears) head.push_back(l.substr(l.rfind('.') + 1));
  if (!output) head.push_back(fmt::format("all {}", linears.size()));
  Table t(head);
  for (size_t i = 0; i < rep.layer_relative_error.size(); ++i) {
    std::vector<std::string> row = {std::to_string(i)};
    for (const auto& l : linears) {
      const std::string name = c.layer_prefix(int64_t(i)) + l + ".weight";
      std::string cell = "-";
      for (const auto& li : rep.linears)
        if (li.name == name) cell = format_number(output ? li.output_error : li.relative_error);
      row.push_back(cell);
    }
    if (!output) row.push_back(format_number(rep.layer_relative_error[i]));
    t.add_row(row);
  }
  fmt::print("{}", t.str());
}

// The mixed plan: each linear's perplexity cost measured alone on the calibration text, then the
// fewest kept dense that bring the whole within budget (model/sensitivity.hpp). Prints the plan.
std::set<std::string> plan_keep_dense(const model::Model& src, const model::ConvertOptions& co,
                                      std::span<const int32_t> ids, double max_increase) {
  std::vector<std::string> names;
  for (const auto& [name, w] : co.pruned) names.push_back(name);
  fmt::print(stderr,
             "convert: measuring the perplexity cost of each of {} linears alone over {} "
             "calibration tokens\n",
             names.size(), ids.size());
  const double dense_ppl = model::perplexity_with(src, co.pruned, {}, ids, 0);
  std::vector<model::LinearSensitivity> sens;
  {
    Progress bar("sensitivity", double(names.size()), "linears");
    sens = model::linear_sensitivity(
        src, co.pruned, names, ids, 0, dense_ppl,
        [&](size_t done, size_t, const std::string& name) { bar.update(double(done), name); });
    bar.finish();
  }
  const auto p = model::plan_mixed_sparsity(src, co.pruned, sens, ids, 0, max_increase);
  auto pct = [&](double ppl) { return 100 * (ppl / dense_ppl - 1); };
  fmt::print(
      "mixed plan: perplexity within {:.2f}% of dense ({:.4f}) on the calibration text ({} "
      "tokens)\n",
      100 * max_increase, dense_ppl, ids.size());
  for (const auto& [k, ppl] : p.probes)
    fmt::print("  {:>3} of {} linears kept dense: perplexity {:.4f} ({:+.2f}%)\n", k, names.size(),
               ppl, pct(ppl));
  fmt::print("  plan: {} of {} linears kept dense, perplexity {:.4f} ({:+.2f}%)\n",
             p.keep_dense.size(), names.size(), p.perplexity, pct(p.perplexity));
  fmt::print(
      "  linear weights {} as planned, {} dense ({:.3f}): a decode step bound by memory reads "
      "them at most {:.2f}x faster than dense\n",
      mib(p.plan_bytes), mib(p.dense_bytes), double(p.plan_bytes) / double(p.dense_bytes),
      double(p.dense_bytes) / double(p.plan_bytes));
  if (!p.keep_dense.empty()) {
    Table t({"kept dense", "perplexity pruned alone", "increase", "MiB saved if pruned"});
    for (const auto& name : p.keep_dense)
      for (const auto& s : sens)
        if (s.name == name)
          t.add_row({name, format_number(s.perplexity), fmt::format("{:+.2f}%", 100 * s.increase),
                     fmt::format("{:.3f}", double(s.bytes_saved) / (1 << 20))});
    fmt::print("{}", t.str());
  }
  return {p.keep_dense.begin(), p.keep_dense.end()};
}

void run_convert(const ConvertArgs& a) {
  namespace fs = std::filesystem;
  const auto dtype = dtype_from_cli(a.dtype);
  if (!dtype || (*dtype != DType::F16 && *dtype != DType::BF16 && *dtype != DType::F32))
    fail(Status::InvalidArgument, "--dtype {}: expected fp16, bf16 or fp32", a.dtype);
  if (a.sparsity != "none" && a.sparsity != "2:4")
    fail(Status::InvalidArgument, "--sparsity {}: expected none or 2:4", a.sparsity);
  if (a.method != "magnitude" && a.method != "wanda" && a.method != "sparsegpt")
    fail(Status::InvalidArgument, "--method {}: expected magnitude, wanda or sparsegpt", a.method);
  const bool wanda = a.sparsity == "2:4" && a.method == "wanda";
  const bool sparsegpt = a.sparsity == "2:4" && a.method == "sparsegpt";
  if (a.method != "magnitude" && a.sparsity != "2:4")
    fail(Status::InvalidArgument, "--method {} prunes; add --sparsity 2:4", a.method);
  if (wanda && a.calibration.empty())
    fail(Status::InvalidArgument,
         "--method wanda needs --calibration TEXT_FILE: Wanda weighs each weight by "
         "the activation norms of its input channel, measured by running the dense model over that "
         "text");
  if (sparsegpt && a.calibration.empty())
    fail(Status::InvalidArgument,
         "--method sparsegpt needs --calibration TEXT_FILE: SparseGPT chooses and updates weights "
         "from the input Hessian of every linear, measured by running the model over that text");
  const bool plan = !a.max_ppl_increase.empty();
  const double max_increase = plan ? parse_increase(a.max_ppl_increase) : 0.0;
  if (plan && a.sparsity != "2:4")
    fail(Status::InvalidArgument,
         "--max-ppl-increase plans which linears to keep dense in a 2:4 model; add --sparsity 2:4");
  if (plan && a.calibration.empty())
    fail(Status::InvalidArgument,
         "--max-ppl-increase needs --calibration TEXT_FILE: the plan's perplexities are measured "
         "on it (evaluate the result on other text afterwards)");
  if (plan && a.neuron_major)
    fail(Status::InvalidArgument, "--max-ppl-increase cannot be combined with --neuron-major");
  if (!wanda && !sparsegpt && !plan && !a.calibration.empty())
    fail(Status::InvalidArgument,
         "--calibration is used only by --method wanda or sparsegpt and by --max-ppl-increase; "
         "drop it or add one of them");
  if (a.dampening_given && !sparsegpt)
    fail(Status::InvalidArgument,
         "--dampening is used only by --method sparsegpt; drop it or add --method sparsegpt");
  if (!(a.dampening >= 0) || !std::isfinite(a.dampening))
    fail(Status::InvalidArgument,
         "--dampening {}: expected a fraction >= 0 of the Hessian's mean diagonal (0.01 is usual)",
         a.dampening);
  if (fs::is_directory(a.output))
    fail(Status::InvalidArgument,
         "--output '{}' is a directory; give the path of the .sf file to write", a.output);
  check_output({a.output, "--output"},
               {{a.input, "--input"}, {a.calibration, "--calibration"}, {a.config, "--config"}},
               a.force);

  const auto t0 = std::chrono::steady_clock::now();
  model::OpenOptions oo;
  oo.sparsity = "none";
  oo.config_path = a.config;
  const auto src = model::Model::open(a.input, oo);
  warn_if_no_tokenizer(*src, a.input, a.output);

  model::ConvertOptions co;
  co.sparsity = a.sparsity;
  co.method = a.method;
  co.dtype = *dtype;
  co.neuron_major = a.neuron_major;
  co.hotness_order = !a.keep_order;
  co.extra_metadata["source.path"] = fs::absolute(a.input).string();
  co.extra_metadata["source.format"] = src->source_format();
  std::vector<int32_t> calibration_ids;
  if (wanda || sparsegpt || plan) {
    const std::string text = read_text_file(a.calibration, "calibration file");
    const auto tok = model_tokenizer(*src);
    auto ids = tok.encode_with_bos(text, int32_t(src->config().bos_token_id));
    if (int64_t(ids.size()) > a.calibration_tokens) ids.resize(size_t(a.calibration_tokens));
    if (ids.size() < 2)
      fail(Status::InvalidArgument,
           "calibration file '{}' gives {} tokens; {} needs text (hundreds of tokens "
           "or more)",
           a.calibration, ids.size(),
           wanda       ? "Wanda"
           : sparsegpt ? "SparseGPT"
                       : "a perplexity budget");
    calibration_ids = ids;
    co.extra_metadata["sparsity.calibration_file"] = fs::path(a.calibration).filename().string();
    co.extra_metadata["sparsity.calibration_tokens"] = ids.size();
    if (wanda) {
      fmt::print(stderr, "convert: measuring activation norms over {} calibration tokens\n",
                 ids.size());
      co.act_norms = model::collect_activation_norms(*src, ids);
    } else if (sparsegpt) {
      fmt::print(stderr,
                 "convert: SparseGPT, layer by layer over {} calibration tokens (dampening {})\n",
                 ids.size(), a.dampening);
      model::SparseGptModelOptions so;
      so.solver.dampening = a.dampening;
      so.dtype = *dtype;
      so.window = a.calibration_window;
      const bool gpu = resolve_gpu_device("convert --method sparsegpt", a.device);
      const auto sgpt_t0 = std::chrono::steady_clock::now();
      Progress layers("sparsegpt", double(src->config().num_hidden_layers), "layers");
      const model::LayerProgress on_layer = [&](int64_t done, int64_t, double) {
        layers.update(double(done));
      };
      co.pruned = gpu ? backend::require_cuda("convert --method sparsegpt --device cuda")
                            .sparsegpt_prune_model(*src, ids, so, on_layer, 0)
                      : model::sparsegpt_prune_model(*src, ids, so, on_layer);
      layers.finish();
      const double sgpt_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - sgpt_t0).count();
      fmt::print(stderr, "convert: SparseGPT took {:.1f} s on the {}\n", sgpt_s,
                 gpu ? "GPU" : "CPU");
      co.extra_metadata["sparsity.dampening"] = a.dampening;
      co.extra_metadata["sparsity.device"] = gpu ? "cuda" : "cpu";
      co.extra_metadata["sparsity.seconds"] = sgpt_s;
      if (a.calibration_window > 0)
        co.extra_metadata["sparsity.calibration_window"] = a.calibration_window;
    }
  }
  if (plan) {
    co.pruned = model::prune_linears(*src, co);
    co.keep_dense = plan_keep_dense(*src, co, calibration_ids, max_increase);
    co.extra_metadata["sparsity.dense_linears"] =
        std::vector<std::string>(co.keep_dense.begin(), co.keep_dense.end());
    co.extra_metadata["sparsity.max_ppl_increase"] = max_increase;
  }

  std::optional<Progress> bar;  // sized on the first call, when the total is known
  const auto rep = model::convert_to_sf(
      *src, a.output, co,
      [&](size_t, size_t, const std::string& name, uint64_t bytes, uint64_t total) {
        if (!bar) bar.emplace("convert", double(total), "MiB", double(1 << 20));
        bar->update(double(bytes), name);
      });
  if (bar) bar->finish();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (a.json) {
    nlohmann::ordered_json j = {{"output", a.output},
                                {"sparsity", a.sparsity},
                                {"method", a.sparsity == "2:4" ? a.method : "none"},
                                {"dtype", a.dtype},
                                {"parameters", rep.parameters},
                                {"file_bytes", rep.file_bytes},
                                {"dense_weight_bytes", rep.dense_bytes},
                                {"weight_bytes", rep.weight_bytes},
                                {"seconds", secs}};
    auto layers = nlohmann::ordered_json::array();
    for (size_t i = 0; i < rep.layer_relative_error.size(); ++i) {
      nlohmann::ordered_json l = {{"layer", i}, {"relative_error", rep.layer_relative_error[i]}};
      for (const auto& li : rep.linears)
        if (li.layer == int64_t(i)) {
          l["linears"][li.name] = li.relative_error;
          if (li.output_error >= 0) l["output_error"][li.name] = li.output_error;
        }
      layers.push_back(l);
    }
    j["layers"] = layers;
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("wrote {} ({}) in {:.1f} s\n", a.output, mib(rep.file_bytes), secs);
  fmt::print("  parameters     {}\n", rep.parameters);
  fmt::print("  weights        {} as written, {} dense {} ({:.3f} of dense)\n",
             mib(rep.weight_bytes), mib(rep.dense_bytes), a.dtype,
             rep.dense_bytes ? double(rep.weight_bytes) / double(rep.dense_bytes) : 1.0);
  fmt::print("  sparsity       {}{}\n", a.sparsity,
             a.sparsity == "2:4" ? " (" + a.method + ")" : "");
  if (!rep.layer_relative_error.empty()) {
    print_layer_table(rep, src->config(), false);
    if (sparsegpt) print_layer_table(rep, src->config(), true);
  }
}

}  // namespace

void add_convert_command(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  auto* c = app.add_subcommand(
      "convert",
      "Convert a Hugging Face checkpoint directory or a GGUF file into a .sf model file, "
      "optionally pruned to 2:4");
  c->add_option(
       "--input,-i", a->input,
       "HF checkpoint directory (config.json, *.safetensors or pytorch_model*.bin, tokenizer.json "
       "or vocab.json + merges.txt), a GGUF file (llama, qwen2; dequantized to --dtype), or a "
       "torch.save() state dict (model.pt) with config.json beside it")
      ->required();
  c->add_option("--config", a->config,
                "the HF config.json to use (default: the one in or beside --input)");
  c->add_option("--output,-o", a->output, "the .sf file to write (it appears only when complete)")
      ->required();
  c->add_flag("--force", a->force,
              "replace --output if it exists (the old file stays until the new one is complete)");
  c->add_option("--sparsity", a->sparsity,
                "none or 2:4 (prunes every decoder linear: attention q/k/v/o and the MLP)")
      ->capture_default_str();
  c->add_option("--method", a->method,
                "2:4 pruning: magnitude (largest |w|), wanda (largest |w| x input norm) or "
                "sparsegpt (OBS selection and update from each linear's input Hessian, layer by "
                "layer)")
      ->capture_default_str();
  c->add_option("--calibration", a->calibration,
                "text file run through the model for wanda's activation norms or sparsegpt's "
                "Hessians (keep it apart from the text you evaluate on)");
  c->add_option("--dampening", a->dampening,
                "sparsegpt: add this fraction of the Hessian's mean diagonal to its diagonal "
                "before inverting it")
      ->capture_default_str()
      ->each([a](const std::string&) { a->dampening_given = true; });
  c->add_option("--max-ppl-increase", a->max_ppl_increase,
                "with --sparsity 2:4: keep dense the fewest linears needed for the perplexity on "
                "--calibration to stay within this increase over dense (5% or 0.05), measuring "
                "each linear's cost alone first; prints the plan");
  c->add_option("--calibration-tokens", a->calibration_tokens,
                "at most this many calibration tokens")
      ->capture_default_str();
  c->add_option("--calibration-window", a->calibration_window,
                "sparsegpt: tokens per calibration sample, run as independent sequences (0: the "
                "model's context)")
      ->capture_default_str();
  c->add_option("--device", a->device,
                "sparsegpt: where the calibration passes and the solver run: cpu, cuda, or auto "
                "(cuda when a GPU is present)")
      ->capture_default_str();
  c->add_option("--dtype", a->dtype, "element type of the weights: fp16, bf16 or fp32")
      ->capture_default_str();
  c->add_flag("--json", a->json, "print the summary as JSON");
  c->add_flag("--neuron-major", a->neuron_major,
              "store each FFN layer as neuron bundles (fc1 row, fc2 column, bias) for offloading; "
              "ordered by "
              "hotness when the input .sf has an activation profile (`sparseflow profile`)");
  c->add_flag("--keep-neuron-order", a->keep_order,
              "--neuron-major: keep the input's neuron order");
  c->callback([a] { run_convert(*a); });
}

}  // namespace sf::cli
