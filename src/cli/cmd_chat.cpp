// sparseflow chat: a conversation with an instruction model, each turn rendered with the model's
// own chat template (as HF's apply_chat_template) and answered through the session. Turns come
// from --prompt (one turn, then exit) or from stdin, one line per user message (an empty line or
// end of input ends the conversation). The history is kept, so later answers see earlier turns,
// until it no longer fits the context; then the oldest turns are dropped, and a note says so.
#include <fmt/format.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "core/error.hpp"
#include "session/session.hpp"

namespace sf::cli {

namespace {

struct ChatOptions {
  std::string model, prompt, system, device = "cpu";
  int64_t max_new_tokens = 256;
  std::optional<float> temperature, top_p;
  std::optional<int64_t> top_k;
  uint64_t seed = 0;
  int threads = 0;
};

void run_chat(const ChatOptions& o) {
  if (o.device != "cuda") require_cpu_device(o.device);
  set_cpu_threads(o.threads);
  session::SessionOptions so;
  so.device = o.device;
  so.threads = o.threads;
  so.label = "chat";
  const auto s = session::Session::open(o.model, so);
  if (!s->has_chat_template())
    fail(Status::NotFound,
         "'{}' has no chat template: it is probably a base model. Use `sparseflow generate` "
         "with a plain prompt instead.",
         o.model);
  session::GenerateParams params;
  const bool sampling = o.temperature || o.top_k || o.top_p;
  params.sampling.greedy = !sampling;
  params.sampling.temperature = o.temperature.value_or(1.0f);
  params.sampling.top_k = o.top_k.value_or(0);
  params.sampling.top_p = o.top_p.value_or(1.0f);
  params.sampling.seed = o.seed;
  const int64_t context = s->model().config().max_position_embeddings;

  std::vector<chat::ChatMessage> history;
  if (!o.system.empty()) history.push_back({"system", o.system});
  const bool interactive = o.prompt.empty() && isatty(STDIN_FILENO);
  auto turn = [&](const std::string& user) {
    history.push_back({"user", user});
    std::vector<int32_t> ids = s->chat_ids(history);
    // Drop the oldest exchanges (keeping a system message) until the prompt leaves room to answer.
    const size_t first = o.system.empty() ? 0 : 1;
    while (int64_t(ids.size()) + 16 > context && history.size() > first + 1) {
      history.erase(history.begin() + long(first));
      ids = s->chat_ids(history);
      fmt::print(stderr,
                 "note: the conversation no longer fits the context of {} tokens; dropped the "
                 "oldest turn\n",
                 context);
    }
    params.max_new_tokens = s->room_for(ids.size(), o.max_new_tokens);
    auto on_token = [&](int32_t id, std::string_view piece) {
      if (s->model().config().is_eos(id))
        return true;  // the end of the turn, not part of the answer
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    };
    const auto g = s->generate_ids(ids, params, on_token);
    std::vector<int32_t> answer = g.ids;
    if (g.stopped_by == session::StopReason::Eos && !answer.empty()) answer.pop_back();
    history.push_back({"assistant", s->detokenize(answer)});
    fmt::print("\n");
    std::fflush(stdout);
    fmt::print(stderr, "({} prompt tokens, {} new at {:.1f} tokens/s{})\n", ids.size(),
               g.ids.size(), g.decode_tokens_per_s(),
               g.stopped_by == session::StopReason::Eos ? "" : ", cut at --max-new-tokens");
  };
  if (!o.prompt.empty()) {
    turn(o.prompt);
    return;
  }
  std::string line;
  while (true) {
    if (interactive) {
      fmt::print(stderr, "> ");
      std::fflush(stderr);
    }
    if (!std::getline(std::cin, line) || line.empty()) break;
    turn(line);
  }
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto o = std::make_shared<ChatOptions>();
  CLI::App* cmd =
      app.add_subcommand("chat", "Talk to an instruction model through its own chat template");
  cmd->add_option("--model,-m", o->model,
                  "a .sf file, a GGUF file or a Hugging Face checkpoint directory")
      ->required();
  cmd->add_option("--prompt,-p", o->prompt,
                  "one user message: answer it and exit (default: read turns from stdin)");
  cmd->add_option("--system", o->system, "a system message at the start of the conversation");
  cmd->add_option("--max-new-tokens,-n", o->max_new_tokens, "longest answer, in tokens")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature", o->temperature,
                  "sample from softmax(logits / T) (default: greedy)");
  cmd->add_option("--top-k", o->top_k, "sample among the K most likely tokens");
  cmd->add_option("--top-p", o->top_p, "sample among the most likely tokens of total mass P");
  cmd->add_option("--seed", o->seed, "random seed for sampling")->capture_default_str();
  cmd->add_option("--device", o->device, "where to run: cpu or cuda")->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0: OpenMP's default)")
      ->capture_default_str();
  cmd->callback([o] { run_chat(*o); });
}

}  // namespace sf::cli
