// `sparseflow-audit ARGS` runs `sparseflow audit ARGS`: cmake --install puts sparseflow-convert,
// sparseflow-benchmark and sparseflow-audit beside the binary as symlinks to it (the seed's
// names), and the binary picks the subcommand from the name it was started under.
#pragma once
#include <string>

namespace sf::cli {

// The subcommand that the program name selects: "audit" for ".../sparseflow-audit", "" otherwise.
std::string subcommand_from_argv0(const char* argv0);

// When argv[0] selects a subcommand, rewrites argc/argv to "sparseflow SUBCOMMAND ARGS..." (the
// new array lives in static storage for the life of the process); otherwise leaves them alone.
void dispatch_argv0(int& argc, char**& argv);

}  // namespace sf::cli
