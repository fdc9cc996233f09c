// sparseflow eval: what a model loses on a text, against a reference model when one is given:
// perplexity over fixed non-overlapping windows, and per position the KL divergence
// KL(ref || model) of the next-token distributions and whether the most likely tokens agree.
// The report names the model (with its sparsity and calibration from the .sf metadata), the
// reference, the text, its tokens and the window, so that a number never loses what it measured.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <optional>
#include <regex>
#include <span>

#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "cli/table.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "core/output_path.hpp"
#include "core/progress.hpp"
#include "model/eval.hpp"
#include "model/sensitivity.hpp"
#include "session/session.hpp"

namespace sf::cli {

namespace {

namespace fs = std::filesystem;

// Windows longer than this hold [window, vocab] logits of two models in memory (0.4 GB each for a
// 49k vocabulary): enough context for a small model's perplexity without that cost growing.
constexpr int64_t kDefaultWindow = 2048;

struct EvalOptions {
  std::string model, text_file, reference, json, only;
  int64_t context = 0, max_tokens = 0;
  int threads = 0;
  bool force = false, per_layer = false;
};

// --per-layer: the perplexity of the reference with each of the model's 2:4 linears swapped in
// alone, in the order the layers run them.
nlohmann::ordered_json per_linear(const model::Model& dense, const model::Model& pruned_model,
                                  const std::optional<std::regex>& only,
                                  std::span<const int32_t> ids, int64_t context, double dense_ppl,
                                  std::FILE* human) {
  const auto pruned = model::decompressed_linears(pruned_model);
  const arch::ModelDesc& c = dense.config();
  std::vector<std::string> names;
  for (const auto& e : arch::expected_tensors(c, !c.tie_word_embeddings))
    if (e.prunable && pruned.count(e.name) && (!only || std::regex_search(e.name, *only)))
      names.push_back(e.name);
  if (names.empty())
    fail(Status::NotFound,
         "--per-layer: the model has no 2:4 linear{} to measure; give the pruned model as --model "
         "and its dense source as --reference",
         only ? " matching --only" : "");
  std::vector<model::LinearSensitivity> sens;
  {
    Progress bar("per-layer", double(names.size()), "linears");
    sens = model::linear_sensitivity(
        dense, pruned, names, ids, context, dense_ppl,
        [&](size_t done, size_t, const std::string& name) { bar.update(double(done), name); });
    bar.finish();
  }
  fmt::print(human, "\nperplexity with one linear pruned alone (reference {:.4f}):\n", dense_ppl);
  Table t({"linear", "perplexity", "increase", "MiB saved"});
  auto rows = nlohmann::ordered_json::array();
  for (const auto& s : sens) {
    t.add_row({s.name, format_number(s.perplexity), fmt::format("{:+.3f}%", 100 * s.increase),
               fmt::format("{:.3f}", double(s.bytes_saved) / (1 << 20))});
    rows.push_back({{"name", s.name},
                    {"layer", s.layer},
                    {"perplexity", s.perplexity},
                    {"increase", s.increase},
                    {"bytes_saved", s.bytes_saved}});
  }
  fmt::print(human, "{}", t.str());
  return rows;
}

std::string meta_string(const nlohmann::json& meta, const char* key) {
  const auto it = meta.find(key);
  if (it == meta.end()) return "";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

// What the .sf metadata says about how the weights were made.
nlohmann::ordered_json sparsity_of(const model::Model& m) {
  const auto& meta = m.metadata();
  std::string pattern = meta_string(meta, "sparsity.pattern");
  if (pattern.empty()) pattern = m.is_sparse() ? "2:4" : "none";
  nlohmann::ordered_json j = {{"pattern", pattern}};
  if (pattern == "none") return j;
  j["method"] = meta_string(meta, "sparsity.method");
  for (const char* k :
       {"sparsity.calibration_file", "sparsity.calibration_tokens", "sparsity.dampening"})
    if (meta.contains(k)) j[std::string(k).substr(9)] = meta[k];
  return j;
}

std::string describe(const nlohmann::ordered_json& s) {
  if (s["pattern"] == "none") return "dense";
  std::string d = fmt::format("{} {}", s["pattern"].get<std::string>(), s.value("method", ""));
  if (s.contains("calibration_file"))
    d += fmt::format(", calibrated on {} ({} tokens)", s["calibration_file"].get<std::string>(),
                     s.value("calibration_tokens", nlohmann::json()).dump());
  return d;
}

void run_eval(const EvalOptions& o) {
  set_cpu_threads(o.threads);
  if (o.per_layer && o.reference.empty())
    fail(Status::InvalidArgument,
         "--per-layer swaps the model's 2:4 linears one at a time into the dense model: give the "
         "dense one as --reference");
  if (!o.only.empty() && !o.per_layer)
    fail(Status::InvalidArgument, "--only selects linears for --per-layer; add --per-layer");
  std::optional<std::regex> only;
  if (!o.only.empty()) {
    try {
      only.emplace(o.only, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      fail(Status::InvalidArgument, "--only '{}' is not a valid regular expression ({})", o.only,
           e.what());
    }
  }
  if (!o.json.empty() && o.json != "-") {
    std::vector<NamedPath> inputs = {{o.model, "--model"}, {o.text_file, "--text"}};
    if (!o.reference.empty()) inputs.push_back({o.reference, "--reference"});
    check_output({o.json, "--json"}, inputs, o.force);
  }
  session::SessionOptions so;
  so.device = "cpu";
  so.threads = o.threads;
  so.label = "eval";
  const auto s = session::Session::open(o.model, so);
  std::unique_ptr<session::Session> ref;
  if (!o.reference.empty()) ref = session::Session::open(o.reference, so);

  const std::string text = read_text_file(o.text_file, "--text file");
  std::vector<int32_t> ids = s->tokenize(text);
  if (ref) {
    if (ref->model().config().vocab_size != s->model().config().vocab_size)
      fail(Status::InvalidArgument,
           "--reference '{}' has a vocabulary of {} tokens, --model '{}' one of {}: KL divergence "
           "compares distributions over the same tokens. Compare models converted from the same "
           "checkpoint",
           o.reference, ref->model().config().vocab_size, o.model, s->model().config().vocab_size);
    if (ref->tokenize(text) != ids)
      fail(Status::InvalidArgument,
           "--reference '{}' tokenizes the text differently from --model '{}'; compare models "
           "that share a tokenizer (converted from the same checkpoint)",
           o.reference, o.model);
  }
  const int64_t all_tokens = int64_t(ids.size());
  if (o.max_tokens > 0 && int64_t(ids.size()) > o.max_tokens) ids.resize(size_t(o.max_tokens));
  int64_t max_pos = s->model().config().max_position_embeddings;
  if (ref) max_pos = std::min(max_pos, ref->model().config().max_position_embeddings);
  const int64_t context = o.context ? o.context : std::min(kDefaultWindow, max_pos);
  if (context < 2 || context > max_pos)
    fail(Status::InvalidArgument, "--context {}: expected 2 to {} (max_position_embeddings{})",
         context, max_pos, ref ? " of the smaller model" : "");
  if (ids.size() < 2)
    fail(Status::InvalidArgument,
         "--text '{}' gives {} token(s); eval needs at least 2 (the first is context only)",
         o.text_file, ids.size());

  const auto model_sparsity = sparsity_of(s->model());
  const std::string text_name = fs::path(o.text_file).filename().string();
  if (model_sparsity.contains("calibration_file") &&
      model_sparsity["calibration_file"] == text_name)
    fmt::print(stderr,
               "eval: warning: {} was calibrated on a file named {}, the text evaluated here; "
               "evaluate on text the pruning never saw\n",
               o.model, text_name);

  const int64_t V = s->model().config().vocab_size;
  model::EvalAccumulator acc;
  int64_t windows = 0;
  double model_s = 0, ref_s = 0;
  Progress bar("eval", double(ids.size()), "tokens");
  using Clock = std::chrono::steady_clock;
  for (size_t start = 0; start < ids.size(); start += size_t(context)) {
    const size_t len = std::min(ids.size() - start, size_t(context));
    if (len < 2) break;  // a trailing single token predicts nothing
    const std::span<const int32_t> window(ids.data() + start, len);
    auto t0 = Clock::now();
    const std::vector<float> logits = s->logits(window);
    model_s += std::chrono::duration<double>(Clock::now() - t0).count();
    if (ref) {
      t0 = Clock::now();
      const std::vector<float> ref_logits = ref->logits(window);
      ref_s += std::chrono::duration<double>(Clock::now() - t0).count();
      acc.add_window(ref_logits, logits, window, V);
    } else {
      acc.add_window(logits, logits, window, V);
    }
    ++windows;
    bar.update(double(start + len));
  }
  bar.finish();

  nlohmann::ordered_json j = {{"model", o.model},
                              {"model_sparsity", model_sparsity},
                              {"reference", ref ? nlohmann::ordered_json(o.reference) : nullptr},
                              {"reference_sparsity", ref ? sparsity_of(ref->model()) : nullptr},
                              {"text", o.text_file},
                              {"text_tokens", all_tokens},
                              {"tokens", ids.size()},
                              {"context", context},
                              {"windows", windows},
                              {"predicted", acc.positions()},
                              {"perplexity", acc.perplexity_model()}};
  if (ref) {
    const auto stats = acc.to_json();
    for (const auto& [k, v] : stats.items())
      if (k != "positions" && k != "perplexity") j[k] = v;
  }
  j["model_seconds"] = model_s;
  if (ref) j["reference_seconds"] = ref_s;
  j["threads"] = cpu_threads();

  std::FILE* human = o.json == "-" ? stderr : stdout;
  fmt::print(human, "model      {} ({})\n", o.model, describe(model_sparsity));
  if (ref)
    fmt::print(human, "reference  {} ({})\n", o.reference, describe(sparsity_of(ref->model())));
  fmt::print(human, "text       {}: {} tokens{}, {} window{} of up to {}, {} predicted\n",
             o.text_file, ids.size(),
             int64_t(ids.size()) < all_tokens ? fmt::format(" (first of {})", all_tokens) : "",
             windows, windows == 1 ? "" : "s", context, acc.positions());
  if (ref) {
    fmt::print(human, "perplexity {:.4f}  (reference {:.4f}, ratio {:.4f})\n",
               acc.perplexity_model(), acc.perplexity_ref(), acc.perplexity_ratio());
    fmt::print(
        human,
        "KL(ref || model)  mean {:.5f} +- {:.5f} nats, median {:.5f}, p99 {:.5f}, max {:.5f}\n",
        acc.mean_kl(), acc.kl_std_error(), acc.kl_quantile(0.5), acc.kl_quantile(0.99),
        acc.max_kl());
    fmt::print(human, "top-1 agreement   {:.2f}% of {} positions\n", 100.0 * acc.top1_agreement(),
               acc.positions());
  } else {
    fmt::print(human, "perplexity {:.4f}\n", acc.perplexity_model());
  }
  fmt::print(stderr, "{:.2f} s model{}, {} threads\n", model_s,
             ref ? fmt::format(", {:.2f} s reference", ref_s) : "", cpu_threads());
  if (o.per_layer)
    j["per_linear"] =
        per_linear(ref->model(), s->model(), only, ids, context, acc.perplexity_ref(), human);
  if (o.json == "-") {
    fmt::print("{}\n", j.dump(2));
  } else if (!o.json.empty()) {
    const std::string out = j.dump(2) + "\n";
    AtomicFile f(o.json, o.force);
    f.write(out.data(), out.size());
    f.commit();
    fmt::print(human, "wrote {}\n", o.json);
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Accuracy of a model on a text: perplexity, and KL divergence and top-1 agreement "
      "against a reference model (CPU)");
  cmd->footer(
      "The text is tokenized with BOS first and scored in non-overlapping windows, each from an "
      "empty cache; a window's first token is context only. With --reference, both models run "
      "every window and each position compares their next-token distributions: KL(ref || model) "
      "in nats, and whether their most likely tokens agree. Keep the text apart from the "
      "calibration text the model was pruned with.");
  cmd->add_option("--model,-m", o->model, "the model to evaluate (.sf, GGUF or HF directory)")
      ->required();
  cmd->add_option("--text", o->text_file, "a UTF-8 text file to evaluate on")->required();
  cmd->add_option("--reference", o->reference,
                  "the model to compare with, e.g. the dense .sf the pruned one came from");
  cmd->add_option("--context", o->context,
                  fmt::format("window length in tokens (default: {}, or max_position_embeddings "
                              "when smaller)",
                              kDefaultWindow))
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-tokens", o->max_tokens, "score only the text's first N tokens (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--json", o->json, "also write the results as JSON to FILE ('-' for stdout)");
  cmd->add_flag("--force", o->force, "replace an existing --json file");
  cmd->add_flag("--per-layer", o->per_layer,
                "also measure each 2:4 linear of --model alone: the perplexity of --reference with "
                "only that linear pruned (one pass of the text per linear)");
  cmd->add_option("--only", o->only,
                  "--per-layer: only the linears whose name matches this regular expression");
  cmd->add_option("--threads", o->threads, "CPU threads (0: OpenMP's default)")
      ->capture_default_str();
  cmd->callback([o] { run_eval(*o); });
}

}  // namespace sf::cli
