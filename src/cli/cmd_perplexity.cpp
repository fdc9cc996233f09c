// sparseflow perplexity: exp(mean negative log-likelihood) of a token sequence, the first token of
// each window being context only; with one window this is exp(HF's loss) on the same ids.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>

#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "cli/offload_flags.hpp"
#include "core/error.hpp"
#include "core/input_file.hpp"
#include "offload/neuron_store.hpp"
#include "offload/offloaded_opt.hpp"
#include "offload/planner.hpp"
#include "offload/predictor_quality.hpp"
#include "session/session.hpp"

namespace sf::cli {

namespace {

struct PerplexityOptions {
  std::string model, text_file, ids, device = "cpu", ffn_neurons = "all";
  int64_t context = 0;
  bool json = false;
  int threads = 0;
  std::shared_ptr<OffloadFlags> offload = std::make_shared<OffloadFlags>();
};

void run_perplexity(const PerplexityOptions& o) {
  if (o.device != "cuda") require_cpu_device(o.device);  // --device cuda: the GPU backend
  set_cpu_threads(o.threads);
  if (o.text_file.empty() == o.ids.empty())
    fail(Status::InvalidArgument, "give exactly one of --text FILE or --ids 2,17,...");
  const auto off_opt = offload_options(*o.offload);
  session::SessionOptions so;
  so.device = o.device;
  so.threads = o.threads;
  so.label = "perplexity";
  // Only with --device cuda does the session run offloaded; otherwise --plan still prints the plan
  // and handle_plan_or_require_cuda (below) says what --gpu-memory needs.
  if (o.device == "cuda") so.offload = off_opt;
  const auto s = session::Session::open(o.model, so);
  const model::Model& model = s->model();

  std::vector<int32_t> ids;
  if (!o.text_file.empty()) {
    const std::string text = read_text_file(o.text_file, "--text file");
    ids = s->tokenize(text);  // like HF's OPT tokenizer(text): BOS first
  } else {
    ids = parse_id_list(o.ids);
  }
  const int64_t context = o.context ? o.context : model.config().max_position_embeddings;
  if (o.ffn_neurons == "predicted") {  // what the predictors cost in output quality
    if (o.device != "cpu" || off_opt.enabled())
      fail(Status::InvalidArgument,
           "--ffn-neurons predicted runs on the CPU (it emulates the offloaded engine's "
           "FFN exactly): drop --device cuda and the offload flags.");
    const auto store = offload::NeuronStore::from_model(model, /*pack_row_major=*/true);
    const auto t0 = std::chrono::steady_clock::now();
    const auto q = offload::measure_predictor_quality(model, store, ids, context);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (o.json) {
      auto j = q.to_json();
      j["context"] = context;
      j["seconds"] = secs;
      fmt::print("{}\n", j.dump());
    } else {
      fmt::print("{}", q.table());
    }
    fmt::print(stderr, "{:.2f} s (two passes), {} threads\n", secs, cpu_threads());
    return;
  }
  if (handle_plan_or_require_cuda(off_opt, *o.offload, o.device, model, context)) return;
  s->start(context);  // weights uploaded (and for offloading, planned) before the clock starts
  if (const auto* plan = s->plan()) fmt::print(stderr, "{}", plan->table());
  if (const auto* ls = s->layer_streaming()) fmt::print(stderr, "{}\n", ls->summary());
  const auto t0 = std::chrono::steady_clock::now();
  const auto r = s->perplexity(ids, context);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (o.json) {
    const nlohmann::ordered_json out = {{"perplexity", r.perplexity()},
                                        {"mean_nll", r.mean_nll()},
                                        {"tokens", ids.size()},
                                        {"predicted", r.predicted},
                                        {"windows", r.windows},
                                        {"context", context},
                                        {"seconds", secs}};
    fmt::print("{}\n", out.dump());
  } else {
    fmt::print(
        "perplexity {:.6g}  (mean NLL {:.6f} nats over {} predicted tokens; {} tokens in {} "
        "window{} of "
        "up to {})\n",
        r.perplexity(), r.mean_nll(), r.predicted, ids.size(), r.windows, r.windows == 1 ? "" : "s",
        context);
  }
  fmt::print(stderr, "{:.2f} s, {:.1f} tokens/s, {} threads\n", secs, double(ids.size()) / secs,
             cpu_threads());
  if (const auto st = s->offload_stats(); st && off_opt.stats)
    fmt::print(stderr, "offload stats: {}\n", st->to_json().dump());
}

}  // namespace

void add_perplexity_command(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  CLI::App* cmd = app.add_subcommand(
      "perplexity",
      "Perplexity of a text or token sequence (the CPU, or a GPU with --device cuda)");
  cmd->add_option("--model,-m", o->model,
                  "a .sf file, a GGUF file, or a Hugging Face checkpoint directory (OPT, Llama, "
                  "Mistral, Qwen2, GPT-2)")
      ->required();
  auto* t = cmd->add_option("--text", o->text_file, "a UTF-8 text file (tokenized with BOS first)");
  auto* i = cmd->add_option("--ids", o->ids, "token ids, comma-separated, used exactly as given");
  t->excludes(i);
  cmd->add_option("--context", o->context,
                  "score non-overlapping windows of N tokens (default: max_position_embeddings)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("--json", o->json, "print one JSON object");
  cmd->add_option("--device", o->device, "where to run: cpu or cuda")->capture_default_str();
  cmd->add_option("--ffn-neurons", o->ffn_neurons,
                  "all, or predicted: also run each FFN over only the neurons the stored "
                  "predictors select (as "
                  "offloaded inference does) and report the perplexity change, greedy agreement, "
                  "logit error "
                  "and recall (CPU)")
      ->check(CLI::IsMember({"all", "predicted"}))
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0: OpenMP's default)")
      ->capture_default_str();
  add_offload_flags(cmd, o->offload);
  cmd->callback([o] { run_perplexity(*o); });
}

}  // namespace sf::cli
