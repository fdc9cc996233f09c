// sparseflow serve: an OpenAI-compatible HTTP server with continuous batching (src/serve/). The
// model opens through the same session as generate and chat; requests of any prompt length and
// sampling settings share each decode step (serve/scheduler.hpp).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>

#include "cli/commands.hpp"
#include "cli/model_io.hpp"
#include "core/error.hpp"
#include "serve/http_server.hpp"

namespace sf::cli {

namespace {

struct ServeCliOptions {
  serve::ServeOptions serve;
  std::string device = "cpu";
  int threads = 0;
};

void run_serve(ServeCliOptions& o) {
  if (o.device != "cpu")
    fail(Status::InvalidArgument,
         "serve --device {}: the server runs on the CPU backend for now. Continuous batching "
         "needs one forward pass over many sequences with their own KV caches, which the CUDA "
         "engines do not have yet (they decode one sequence per call). Use --device cpu.",
         o.device);
  set_cpu_threads(o.threads);
  auto& s = o.serve;
  if (s.port < 0 || s.port > 65535)
    fail(Status::InvalidArgument, "--port must be in [0, 65535] (0: any free port), got {}.",
         s.port);
  if (!(s.drain_seconds >= 0))
    fail(Status::InvalidArgument, "--drain-timeout must be >= 0 seconds, got {}.", s.drain_seconds);
  if (!std::filesystem::exists(s.model_path))
    fail(Status::NotFound,
         "--model '{}' does not exist: give a .sf file, a GGUF file or a "
         "Hugging Face checkpoint directory.",
         s.model_path);
  if (s.model_name.empty()) {
    const std::filesystem::path p(s.model_path);
    s.model_name = (p.has_filename() ? p : p.parent_path()).stem().string();
  }
  s.session.device = "cpu";
  s.session.threads = o.threads;
  s.session.label = "serve";
  serve::serve(s);
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeCliOptions>();
  auto& s = o->serve;
  auto& sc = s.scheduler;
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve a model over the OpenAI API (completions, chat, streaming), with continuous "
      "batching");
  cmd->add_option("--model,-m", s.model_path,
                  "a .sf file, a GGUF file or a Hugging Face checkpoint directory")
      ->required();
  cmd->add_option("--device", o->device, "where to run: cpu (the only one for now)")
      ->capture_default_str();
  cmd->add_option("--host", s.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", s.port, "port to listen on (0: any free port, printed at start)")
      ->capture_default_str();
  cmd->add_option("--max-batch", sc.max_batch, "sequences decoding together")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-context", sc.max_context,
                  "tokens per request, prompt + completion (0: the model's maximum)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--kv-budget", sc.kv_budget,
                  "KV-cache tokens all running requests may reserve together (0: max-batch x "
                  "max-context)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-queue", sc.max_queue,
                  "requests that may wait for the batch; more get HTTP 429")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefill-chunk", sc.prefill_chunk,
                  "prompt tokens per step, so long prompts do not stall running streams")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--api-key", s.api_key,
                  "require 'Authorization: Bearer KEY' on /v1/* (also from SPARSEFLOW_API_KEY)")
      ->envname("SPARSEFLOW_API_KEY");
  cmd->add_option("--served-model-name", s.model_name,
                  "the model's name in /v1/models and responses (default: the file's stem)");
  cmd->add_option("--max-body-bytes", s.max_body_bytes, "larger request bodies get HTTP 413")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--drain-timeout", s.drain_seconds,
                  "seconds in-flight requests get to finish after SIGTERM before they are "
                  "cancelled")
      ->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads of the engine (0: OpenMP's default)")
      ->capture_default_str();
  cmd->callback([o] { run_serve(*o); });
}

}  // namespace sf::cli
