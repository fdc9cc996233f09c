#include "cli/argv0.hpp"

#include <string_view>
#include <vector>

namespace sf::cli {

std::string subcommand_from_argv0(const char* argv0) {
  if (!argv0) return "";
  std::string_view name(argv0);
  if (auto slash = name.find_last_of('/'); slash != std::string_view::npos)
    name.remove_prefix(slash + 1);
  constexpr std::string_view prefix = "sparseflow-";
  if (name.size() <= prefix.size() || name.substr(0, prefix.size()) != prefix) return "";
  return std::string(name.substr(prefix.size()));
}

void dispatch_argv0(int& argc, char**& argv) {
  if (argc < 1) return;
  static std::string sub;
  static std::vector<char*> args;
  sub = subcommand_from_argv0(argv[0]);
  if (sub.empty()) return;
  args.assign(argv, argv + argc);
  args.insert(args.begin() + 1, sub.data());
  args.push_back(nullptr);  // argv[argc] is NULL, as the C standard promises
  argc += 1;
  argv = args.data();
}

}  // namespace sf::cli
