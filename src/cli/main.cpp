// sparseflow: one binary, one subcommand per job (see commands.hpp).
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <new>

#include "cli/commands.hpp"
#include "core/error.hpp"
#include "core/progress.hpp"
#include "core/temp_files.hpp"

int main(int argc, char** argv) {
  // An interrupted command (SIGINT, SIGTERM, SIGHUP) removes its temporaries before it dies.
  sf::install_signal_cleanup();
  CLI::App app{
      "SparseFlow: LLM inference with 2:4 weight sparsity and activation-sparse offloading",
      "sparseflow"};
  app.set_version_flag("--version", "sparseflow " SPARSEFLOW_VERSION_STRING);
  app.require_subcommand(1);

  sf::cli::add_prune_command(app);
  sf::cli::add_validate_command(app);
  sf::cli::add_benchmark_command(app);
  sf::cli::add_audit_command(app);
  sf::cli::add_generate_command(app);
  sf::cli::add_chat_command(app);
  sf::cli::add_serve_command(app);
  sf::cli::add_bench_serve_command(app);
  sf::cli::add_perplexity_command(app);
  sf::cli::add_eval_command(app);
  sf::cli::add_tokenize_command(app);
  sf::cli::add_convert_command(app);
  sf::cli::add_inspect_command(app);
  sf::cli::add_synth_command(app);
  sf::cli::add_tune_command(app);
  sf::cli::add_profile_command(app);
  sf::cli::add_calibrate_command(app);
  // Every command takes --quiet: no progress bars (they are drawn only on a terminal anyway).
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    sub->add_flag_callback(
        "--quiet", [] { sf::Progress::set_quiet(true); }, "no progress bars on stderr");
  sf::cli::dispatch_argv0(argc, argv);  // the seed's names: sparseflow-audit == sparseflow audit

  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {  // a command's chosen exit status, output already printed
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {  // bad command line (or --help / --version, which exit 0)
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const sf::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "error: out of memory. Try a smaller input or free some memory.\n");
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: internal error: {}. Please report this.\n", e.what());
    return 2;
  }
  return 0;
}
