// sparseflow generate: text from a model (CPU, CUDA, or offloaded under --gpu-memory), through the
// session (session/session.hpp) that the C ABI and Python use too. The prompt's forward pass
// (prefill) runs once; then one token at a time with the KV cache, each printed (flushed) as it is
// chosen.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <optional>

#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "cli/offload_flags.hpp"
#include "core/error.hpp"
#include "offload/offloaded_opt.hpp"
#include "offload/planner.hpp"
#include "session/session.hpp"

namespace sf::cli {

namespace {

struct GenerateOptions {
  std::string model, prompt, ids, device = "cpu", system;
  bool chat = false;
  int64_t max_new_tokens = 32;
  bool greedy = false, json = false;
  std::optional<float> temperature, top_p;
  std::optional<int64_t> top_k;
  uint64_t seed = 0;
  int threads = 0;
  std::shared_ptr<OffloadFlags> offload = std::make_shared<OffloadFlags>();
};

void run_generate(const GenerateOptions& o) {
  const auto off_opt = offload_options(*o.offload);
  if (o.device != "cuda") require_cpu_device(o.device);  // --device cuda: the GPU backend
  set_cpu_threads(o.threads);
  if (o.prompt.empty() == o.ids.empty())
    fail(Status::InvalidArgument, "give exactly one of --prompt TEXT or --ids 2,17,...");
  const bool sampling = o.temperature || o.top_k || o.top_p;
  if (o.greedy && sampling)
    fail(Status::InvalidArgument,
         "--greedy cannot be combined with --temperature/--top-k/--top-p; pick one mode.");

  session::SessionOptions so;
  so.device = o.device;
  so.threads = o.threads;
  so.label = "generate";
  // Only with --device cuda does the session run offloaded; otherwise --plan still prints the plan
  // and handle_plan_or_require_cuda (below) says what --gpu-memory needs.
  if (o.device == "cuda") so.offload = off_opt;
  const auto s = session::Session::open(o.model, so);
  const auto& cfg = s->model().config();

  // --prompt gets BOS (</s>, id 2 for OPT) prepended as HF's OPT tokenizer does; --ids are used as
  // given.
  if ((o.chat || !o.system.empty()) && o.prompt.empty())
    fail(Status::InvalidArgument,
         "--chat and --system need --prompt (the user's message), not --ids");
  if (!o.system.empty() && !o.chat) fail(Status::InvalidArgument, "--system goes with --chat");
  std::vector<chat::ChatMessage> messages;
  if (!o.system.empty()) messages.push_back({"system", o.system});
  messages.push_back({"user", o.prompt});
  const std::vector<int32_t> prompt_ids = !o.prompt.empty() && o.chat ? s->chat_ids(messages)
                                          : o.prompt.empty()          ? parse_id_list(o.ids)
                                                                      : s->tokenize(o.prompt);
  const int64_t max_new = s->room_for(prompt_ids.size(), o.max_new_tokens);
  if (handle_plan_or_require_cuda(off_opt, *o.offload, o.device, s->model(),
                                  int64_t(prompt_ids.size()) + max_new))
    return;
  if (max_new < o.max_new_tokens)
    fmt::print(stderr, "note: --max-new-tokens {} lowered to {} (max_position_embeddings {})\n",
               o.max_new_tokens, max_new, cfg.max_position_embeddings);

  session::GenerateParams params;
  params.max_new_tokens = max_new;
  params.sampling.greedy = !sampling;
  params.sampling.temperature = o.temperature.value_or(1.0f);
  params.sampling.top_k = o.top_k.value_or(0);
  params.sampling.top_p = o.top_p.value_or(1.0f);
  params.sampling.seed = o.seed;

  if (s->offloaded()) {  // neuron-level offloading under --gpu-memory: the plan, then the run
    s->start(int64_t(prompt_ids.size()) + max_new);
    if (const auto* plan = s->plan()) fmt::print(stderr, "{}", plan->table());
    if (const auto* ls = s->layer_streaming()) fmt::print(stderr, "{}\n", ls->summary());
  }
  const bool text = s->has_tokenizer();
  if (!o.json && text && !o.chat) {
    std::fputs(o.prompt.empty() ? s->detokenize(prompt_ids).c_str() : o.prompt.c_str(), stdout);
    std::fflush(stdout);
  }
  size_t streamed = 0;  // bytes of the generation's text already printed
  auto on_token = [&](int32_t id, std::string_view piece) {
    if (o.json) return true;
    if (text)
      std::fwrite(piece.data(), 1, piece.size(), stdout);
    else
      fmt::print("{} ", id);
    streamed += piece.size();
    std::fflush(stdout);
    return true;
  };
  const auto g = s->generate_ids(prompt_ids, params, on_token);

  if (o.json) {
    const nlohmann::ordered_json out = {{"prompt_ids", g.prompt_ids},
                                        {"generated_ids", g.ids},
                                        {"text", text ? s->detokenize(g.ids) : std::string()},
                                        {"prefill_ms", g.prefill_ms},
                                        {"decode_tokens_per_s", g.decode_tokens_per_s()}};
    fmt::print("{}\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  } else {
    fmt::print("{}\n", g.text.substr(streamed));  // the tail of a character cut at the end
  }
  std::fflush(stdout);  // the text's last line before the stats on stderr, on a shared terminal
  fmt::print(
      stderr,
      "prefill: {} tokens in {:.1f} ms; decode: {} tokens at {:.2f} tokens/s ({} threads, {})\n",
      prompt_ids.size(), g.prefill_ms, g.decode_steps, g.decode_tokens_per_s(), cpu_threads(),
      s->model().is_sparse() ? "2:4 weights" : "dense weights");
  if (const auto st = s->offload_stats(); st && off_opt.stats)
    fmt::print(stderr, "offload stats: {}\n", st->to_json().dump());
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Generate text with a model on the CPU or the GPU (greedy or sampled)");
  cmd->add_option("--model,-m", o->model,
                  "a .sf file, a GGUF file or a Hugging Face checkpoint directory")
      ->required();
  auto* p = cmd->add_option(
      "--prompt,-p", o->prompt,
      "prompt text (tokenized as HF's tokenizer does, BOS included where it adds one)");
  cmd->add_flag("--chat", o->chat,
                "the prompt is a user message, rendered with the model's chat template (as HF's "
                "apply_chat_template); only the answer is printed");
  cmd->add_option("--system", o->system, "--chat: a system message before the user's");
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
