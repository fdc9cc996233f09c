// sparseflow generate: text from a model on the CPU backend. The prompt's forward pass (prefill)
// runs once; then one token at a time with the KV cache, each printed (flushed) as it is chosen.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <optional>

#include "backend/backends.hpp"
#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "cli/offload_flags.hpp"
#include "core/error.hpp"
#include "model/generate.hpp"
#include "model/opt_cuda.hpp"
#include "offload/offloaded_opt.hpp"

namespace sf::cli {

namespace {

struct GenerateOptions {
  std::string model, prompt, ids, device = "cpu";
  int64_t max_new_tokens = 32;
  bool greedy = false, json = false;
  std::optional<float> temperature, top_p;
  std::optional<int64_t> top_k;
  uint64_t seed = 0;
  int threads = 0;
  std::shared_ptr<OffloadFlags> offload = std::make_shared<OffloadFlags>();  // issue 6
};

void run_generate(const GenerateOptions& o) {
  const auto off_opt = offload_options(*o.offload);
  if (o.device != "cuda") require_cpu_device(o.device);  // --device cuda: the GPU backend (below)
  set_cpu_threads(o.threads);
  if (o.prompt.empty() == o.ids.empty())
    fail(Status::InvalidArgument, "give exactly one of --prompt TEXT or --ids 2,17,...");
  const bool sampling = o.temperature || o.top_k || o.top_p;
  if (o.greedy && sampling)
    fail(Status::InvalidArgument,
         "--greedy cannot be combined with --temperature/--top-k/--top-p; pick one mode.");

  auto model = model::Model::open(o.model);
  model::OptCpu opt(*model);
  std::optional<tok::Tokenizer> tok;
  if (!model->vocab_json().empty()) tok.emplace(model_tokenizer(*model));

  // --prompt gets BOS (</s>, id 2 for OPT) prepended as HF's OPT tokenizer does; --ids are used as
  // given.
  std::vector<int32_t> prompt_ids;
  if (!o.prompt.empty()) {
    if (!tok) (void)model_tokenizer(*model);  // throws the "no tokenizer" error
    prompt_ids = tok->encode_with_bos(o.prompt, int32_t(model->config().bos_token_id));
  } else {
    prompt_ids = parse_id_list(o.ids);
  }
  const int64_t room = model->config().max_position_embeddings - int64_t(prompt_ids.size());
  if (room <= 0)
    fail(Status::InvalidArgument,
         "the prompt has {} tokens, the model's max_position_embeddings is {}: shorten it.",
         prompt_ids.size(), model->config().max_position_embeddings);
  if (handle_plan_or_require_cuda(off_opt, *o.offload, o.device, *model,
                                  int64_t(prompt_ids.size()) + std::min(o.max_new_tokens, room)))
    return;
  int64_t max_new = o.max_new_tokens;
  if (max_new > room) {
    fmt::print(stderr, "note: --max-new-tokens {} lowered to {} (max_position_embeddings {})\n",
               max_new, room, model->config().max_position_embeddings);
    max_new = room;
  }

  model::SamplingParams sp;
  sp.greedy = !sampling;
  sp.temperature = o.temperature.value_or(1.0f);
  sp.top_k = o.top_k.value_or(0);
  sp.top_p = o.top_p.value_or(1.0f);
  sp.seed = o.seed;
  model::Sampler sampler(sp);

  Utf8Stream stream;
  if (!o.json && tok) {
    std::fputs(o.prompt.empty() ? tok->decode(prompt_ids).c_str() : o.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  auto on_token = [&](int32_t id) {
    if (o.json) return;
    if (tok)
      std::fputs(stream.push(tok->token_bytes(id)).c_str(), stdout);
    else
      fmt::print("{} ", id);
    std::fflush(stdout);
  };
  model::GenerateResult res;
  std::unique_ptr<offload::OffloadedOpt> offloaded;
  if (off_opt.enabled()) {  // neuron-level offloading under --gpu-memory (issue 6)
    offload::OffloadTuning tuning;
    tuning.context_tokens = int64_t(prompt_ids.size()) + max_new;
    offloaded = backend::require_cuda("generate --gpu-memory")
                    .open_offloaded(*model, off_opt, {}, tuning, {});
    fmt::print(stderr, "{}", offloaded->plan().table());
    res = offloaded->generate(prompt_ids, max_new, sp, on_token);
  } else if (o.device ==
      "cuda") {  // the CUDA backend: same prompt, settings and output; sampling on the GPU
    res = backend::require_cuda("generate --device cuda")
              .open_model(*model, {})
              ->generate(prompt_ids, max_new, sp, on_token);
  } else {
    res = model::generate(opt, prompt_ids, max_new, sampler, on_token);
  }
  const std::string text = tok ? tok->decode(res.ids) : std::string();

  if (o.json) {
    const nlohmann::ordered_json out = {{"prompt_ids", prompt_ids},
                                        {"generated_ids", res.ids},
                                        {"text", text},
                                        {"prefill_ms", res.prefill_ms},
                                        {"decode_tokens_per_s", res.decode_tokens_per_s()}};
    fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  } else {
    fmt::print("{}\n", tok ? stream.finish() : "");
  }
  std::fflush(stdout);  // the text's last line before the stats on stderr, on a shared terminal
  fmt::print(
      stderr,
      "prefill: {} tokens in {:.1f} ms; decode: {} tokens at {:.2f} tokens/s ({} threads, {})\n",
      prompt_ids.size(), res.prefill_ms, res.decode_steps, res.decode_tokens_per_s(), cpu_threads(),
      model->is_sparse() ? "2:4 weights" : "dense weights");
  if (offloaded && off_opt.stats) fmt::print(stderr, "offload stats: {}\n", offloaded->stats().to_json().dump());
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd =
      app.add_subcommand("generate", "Generate text with a model on the CPU (greedy or sampled)");
  cmd->add_option("--model,-m", o->model, "a .sf file or a Hugging Face OPT checkpoint directory")
      ->required();
  auto* p = cmd->add_option("--prompt,-p", o->prompt, "prompt text (BOS is prepended, as HF does)");
  auto* i =
      cmd->add_option("--ids", o->ids, "prompt token ids, comma-separated, used exactly as given");
  p->excludes(i);
  cmd->add_option("--max-new-tokens,-n", o->max_new_tokens,
                  "stop after this many new tokens (or at EOS)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  auto* g = cmd->add_flag("--greedy", o->greedy,
                          "argmax decoding (the default without sampling options)");
  auto* t = cmd->add_option("--temperature", o->temperature, "sample from softmax(logits / T)");
  auto* k = cmd->add_option("--top-k", o->top_k, "sample among the K most likely tokens");
  auto* tp =
      cmd->add_option("--top-p", o->top_p, "sample among the most likely tokens of total mass P");
  g->excludes(t)->excludes(k)->excludes(tp);
  cmd->add_option("--seed", o->seed, "random seed for sampling (same seed, same text)")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "print one JSON object at the end instead of streaming text");
  cmd->add_option("--device", o->device, "where to run: cpu or cuda")->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0: OpenMP's default)")
      ->capture_default_str();
  add_offload_flags(cmd, o->offload);
  cmd->callback([o] { run_generate(*o); });
}

}  // namespace sf::cli
