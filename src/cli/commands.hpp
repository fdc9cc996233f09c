// The subcommands of `sparseflow`. Each lives in cmd_<name>.cpp and registers itself on the app;
// main.cpp calls every add_*_command once. Adding a subcommand: one line here, one in main.cpp,
// one in CMakeLists.txt.
//
// Conventions for a command's callback: throw sf::Error for anything a user caused (main prints
// "error: <message>" and exits 2); throw CLI::RuntimeError(code) to exit with another status
// after printing your own output (validate uses 1 for "the file is not 2:4").
#pragma once

namespace CLI {
class App;
}

namespace sf::cli {

void add_prune_command(CLI::App& app);
void add_validate_command(CLI::App& app);
void add_benchmark_command(CLI::App& app);
void add_audit_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_chat_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_bench_serve_command(CLI::App& app);  // load-tests an OpenAI-compatible server
void add_perplexity_command(CLI::App& app);
void add_eval_command(CLI::App& app);  // perplexity, KL and top-1 against a reference
void add_tokenize_command(CLI::App& app);
void add_convert_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_synth_command(CLI::App& app);
void add_tune_command(CLI::App& app);
void add_profile_command(CLI::App& app);    // per-neuron firing rates
void add_calibrate_command(CLI::App& app);  // activation predictors
void dispatch_argv0(int& argc,
                    char**& argv);  // argv0.hpp: sparseflow-audit ARGS runs sparseflow audit ARGS

}  // namespace sf::cli
